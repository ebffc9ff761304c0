//! jq in routes (`transform.jq`, `when.jq`) with real clients: paho → the router →
//! RabbitMQ → pika, stomp.py filters and splits (tests/py/jq_scenarios.py); `check`
//! locating a jq syntax error; `explain` showing the transformed messages.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Daemon, http_json, python, wait_until};

fn scenario(d: &Daemon, p: &str, name: &str) {
    let mut cmd = Command::new(python());
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/jq_scenarios.py"
    ))
    .args(["--port", &d.addr("stomp").port().to_string()])
    .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
    .args(["--prefix", p, "--timeout", "20", name]);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario {name} failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

/// The route that reshapes sensor JSON into a worker's job (also in docs/routes.md).
const SENSOR_ROUTE: &str = r#"
routes:
  - name: sensor-jobs
    from: { mqtt: "P/sensors/+/reading" }
    transform:
      jq: |
        {body: {task: "record-temperature",
                device: .source.captures[0],
                celsius: ((.body.temp_f - 32) * 5 / 9 | round),
                measured_at: .body.ts},
         headers: {"job-kind": "temperature"}}
      jq_output: message
    to:
      - amqp: { link: rabbit, routing_key: "P.work" }
    declare:
      queues: [ { name: "P.work", durable: false, auto_delete: true } ]
"#;

#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
#[test]
fn jq_reshapes_mqtt_sensor_json_for_an_amqp_worker() {
    let _rabbit = common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    let p = common::unique_prefix("jq");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("amqp.pw"), "guest\n").unwrap();
    let config = format!(
        "links:\n  rabbit:\n    amqp:\n      uri: \"amqp://127.0.0.1:5672/%2f\"\n      username: guest\n      password_file: amqp.pw\n      dead_letter: \"{p}.dead\"\n"
    );
    std::fs::write(dir.path().join("switchboard.yaml"), config).unwrap();
    std::fs::write(
        dir.path().join("routes/jq.yaml"),
        SENSOR_ROUTE.replace('P', &p),
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    wait_until(Duration::from_secs(20), "AMQP link connected", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    scenario(&d, &p, "mqtt_to_amqp");
}

#[test]
fn jq_filter_diverts_hot_readings_sent_with_stomp() {
    let d = Daemon::start(
        &[(
            "jq.yaml",
            r#"
routes:
  - name: hot
    from: { stomp: /queue/t.temps }
    when: { jq: '.body.t > 30' }
    to: [ { stomp: /queue/t.alarms } ]
"#,
        )],
        &[],
    );
    scenario(&d, "t", "stomp_filter");
    // The non-JSON body was counted and logged, not lost.
    assert!(
        d.log().contains("`when.jq` failed on a message"),
        "{}",
        d.log()
    );
}

#[test]
fn jq_splits_a_batch_into_three_messages() {
    let d = Daemon::start(
        &[(
            "jq.yaml",
            r#"
routes:
  - name: split
    from: { stomp: /queue/t.batches }
    transform:
      jq: '.body as $b | $b.items | to_entries[] | {batch: $b.batch, n: .key, sku: .value.sku}'
      jq_max_outputs: 3
    to: [ { stomp: /queue/t.items } ]
"#,
        )],
        &[],
    );
    scenario(&d, "t", "split");
    let (_, m) = common::http(d.addr("admin"), "GET", "/metrics?per_object=1");
    assert!(
        m.lines().any(|l| l.contains("route_errors")
            && l.contains("route=\"split\"")
            && l.ends_with(" 1")),
        "the refused batch is counted on the route:\n{m}"
    );
}

fn check(files: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = Command::new(BIN)
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        text.replace(&dir.path().display().to_string(), "DIR"),
    )
}

#[test]
fn check_locates_a_jq_syntax_error() {
    let (code, out) = check(&[(
        "10-jq.yaml",
        "routes:\n  - name: ok\n    from: { queue: a }\n    to: [ { queue: b } ]\n  - name: bad\n    from: { queue: c }\n    when:\n      jq: '.body.t >'\n    transform:\n      jq: |\n        {a: .body.a,\n         b: (.body.b | }\n    to: [ { queue: d } ]\n",
    )]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DIR/10-jq.yaml:8:11: route `bad`: jq program, line 1 column 10: expected term, found end of program"),
        "{out}"
    );
    assert!(
        out.contains(
            "DIR/10-jq.yaml:11:9: route `bad`: jq program, line 2 column 16: expected closing parenthesis"
        ),
        "{out}"
    );
    assert!(out.contains("2 errors"), "{out}");
    let (code, out) = check(&[(
        "10-jq.yaml",
        "routes:\n  - name: r\n    from: { queue: a }\n    transform: { jq: 'nosuch(1)', jq_max_outputs: 0 }\n    to: [ { queue: b } ]\n",
    )]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`jq_max_outputs` must be between 1 and 1000, not 0"),
        "{out}"
    );
}

#[test]
fn explain_shows_the_messages_a_jq_transform_makes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jq.yaml"),
        r#"
routes:
  - name: split
    from: { mqtt: "batches/+" }
    transform:
      jq: '.source.captures[0] as $site | .body[] | {site: $site, v: .}'
    to: [ { queue: "items" } ]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["explain", "--routes"])
        .arg(dir.path())
        .args(["--body", "[1,2]", "mqtt", "batches/north"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("jq: 2 messages"), "{text}");
    assert!(
        text.contains(r#"[1] body: {"site":"north","v":1}   (application/json, 22 bytes)"#),
        "{text}"
    );
    assert!(
        text.contains(r#"[2] body: {"site":"north","v":2}"#),
        "{text}"
    );
    assert!(text.contains("delivered to 2 destinations"), "{text}");
}
