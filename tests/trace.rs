//! W3C trace context across protocols (docs/operations.md, "Tracing"), with real clients:
//! paho (MQTT 5), pika through a real RabbitMQ on 127.0.0.1:5672 and the router's AMQP
//! link, stomp.py (tests/py/trace_scenarios.py). Each scenario prints the trace ids and
//! the parent ids its receivers saw; the router's log must have a line about each
//! message with that trace id, inside the router's span whose id is that parent id.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, http_json, python, wait_until};

fn rabbit() -> common::PeerLock {
    common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    )
}

const ROUTES: &str = r#"
routes:
  - name: P-traced
    from: {mqtt: P/traced}
    to: [{amqp: {link: rabbit, routing_key: P.traced}}, {stomp: /queue/P.copy}]
    declare:
      queues: [{name: P.traced, durable: false, arguments: {x-expires: 600000}}]
  - name: P-s2m
    from: {stomp: /queue/P.s2m}
    to: [{mqtt: P/s2m}]
  - name: P-lost
    from: {stomp: /queue/P.lost}
    to: [{amqp: {link: rabbit, routing_key: P.nowhere}}]
  - name: P-a2s
    from: {amqp: {link: rabbit, queue: P.a2s}}
    to: [{stomp: /queue/P.a2s_out}]
    declare:
      queues: [{name: P.a2s, durable: false, arguments: {x-expires: 600000}}]
"#;

/// The router with an AMQP link `rabbit` and [`ROUTES`] (`P` replaced by the prefix).
fn router(p: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("amqp.pw"), "guest\n").unwrap();
    let config = format!(
        r#"
links:
  rabbit:
    amqp:
      uri: "amqp://127.0.0.1:5672/%2f"
      username: guest
      password_file: amqp.pw
      dead_letter: "{p}.dead"
      publish_attempts: 1
      reconnect_initial: 100ms
      reconnect_max: 1s
"#
    );
    std::fs::write(dir.path().join("switchboard.yaml"), config).unwrap();
    std::fs::write(dir.path().join("routes/trace.yaml"), ROUTES.replace('P', p)).unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    wait_until(Duration::from_secs(20), "AMQP link connected", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    d
}

/// Runs a scenario; returns the `(trace id, parent id)` pairs it printed.
fn scenario(d: &Daemon, p: &str, name: &str) -> Vec<(String, String)> {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/trace_scenarios.py"
        ))
        .args(["--port", &d.addr("stomp").port().to_string()])
        .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
        .args(["--prefix", p, "--timeout", "20", name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario {name} failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let traces: Vec<_> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("trace "))
        .filter_map(|l| l.split_once(' '))
        .map(|(t, s)| (t.to_owned(), s.to_owned()))
        .collect();
    assert!(!traces.is_empty(), "{stdout}");
    traces
}

/// The router's log has the traced line of each message: its trace id and, as the span's
/// id, the parent id the receiver saw.
fn assert_logged(d: &Daemon, traces: &[(String, String)], line: &str) {
    for (trace, span) in traces {
        let want = format!("trace_id={trace} span_id={span}");
        let found = wait_until(Duration::from_secs(5), "the traced log line", || {
            d.log()
                .lines()
                .find(|l| l.contains(&want) && l.contains(line))
                .map(str::to_owned)
        });
        eprintln!("{found}");
    }
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn one_trace_from_an_mqtt5_publisher_to_a_pika_consumer_and_in_the_routers_log() {
    let _l = rabbit();
    let p = common::unique_prefix("tr");
    let d = router(&p);
    let traces = scenario(&d, &p, "mqtt5_to_amqp");
    assert_logged(&d, &traces, "routed, trace continued");
    assert!(
        d.log().contains("an invalid traceparent was removed"),
        "{}",
        d.log()
    );
    let traces = scenario(&d, &p, "stomp_to_mqtt5");
    assert_logged(&d, &traces, "routed, trace continued");
    let traces = scenario(&d, &p, "amqp_to_stomp");
    assert_logged(&d, &traces, "routed, trace continued");
    // An outbound link's warning about a message names its trace.
    let traces = scenario(&d, &p, "stomp_to_nowhere");
    for (trace, _) in &traces {
        let want = format!("trace_id={trace}");
        wait_until(Duration::from_secs(5), "the link's given-up line", || {
            d.log()
                .lines()
                .find(|l| l.contains("AMQP publish given up") && l.contains(&want))
                .map(str::to_owned)
        });
    }
}
