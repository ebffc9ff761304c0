//! `switchboard check`: every error, with file, line, column and route, exact texts.

mod common;

use std::process::Command;

fn check(files: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = Command::new(common::BIN)
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&format!("{}/", dir.path().display()), "");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn valid_tables_print_a_summary() {
    let (code, out) = check(&[
        (
            "a.yaml",
            "routes:\n  - name: r1\n    from: { queue: a }\n    to: [ { queue: b } ]\n",
        ),
        ("empty.yaml", ""),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 1 route in 2 files under "), "{out}");
}

#[test]
fn the_shipped_examples_are_valid() {
    let out = Command::new(common::BIN)
        .args(["check", concat!(env!("CARGO_MANIFEST_DIR"), "/routes")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn every_error_is_reported_with_its_position() {
    let (code, out) = check(&[
        (
            "a.yaml",
            "routes:
  - name: dup
    from: { mqtt: \"sensors/+/temp\" }
    to:
      - queue: \"out.{2}\"
      - amqp: { link: rabbit, exchange: x }
  - name: dup
    from: { topic: \"a..b.*\" }
    to:
      - topic: \"x.{1}\"
",
        ),
        (
            "b.yaml",
            "routes:
  - name: loop-a
    from: { queue: x }
    to: [ { queue: y } ]
  - name: loop-b
    from: { queue: y }
    to: [ { queue: x } ]
  - name: bad
    from: { mqtt: \"a/#/b\" }
    to: [ { queue: \"has space\" }, { stomp: \"/exchange/e\" } ]
",
        ),
        (
            "c.yaml",
            "routes:\n  - name: typo\n    from: { queu: x }\n    to: []\n",
        ),
        ("d.yaml", "routes:\n  - name: r\n    colour: red\n"),
        (
            "e.yaml",
            "routes:\n  - name: t\n    from: { topic: a }\n    to: [ { queue: \"q.{1\" } ]\n    transform: { body: yaml }\n",
        ),
        (
            "f.yaml",
            "routes:\n  - name: l\n    from: { topic: a }\n    to: [ { queue: b } ]\n    loss: sometimes\n",
        ),
    ]);
    assert_eq!(code, 1);
    let expected = "\
c.yaml:3:13: unknown variant `queu`, expected one of queue, topic, stomp, mqtt, amqp, xmpp
d.yaml:3:5: unknown field `colour`, expected one of name, description, from, when, to, transform, passthrough, loss, declare, invalid, rate_limit
e.yaml:5:24: unknown variant `yaml`, expected one of text, json, xml
f.yaml:5:11: unknown variant `sometimes`, expected one of drop, encode, reject
a.yaml:5:9: route `dup`: template `out.{2}` uses {2} but the source pattern has 1 wildcard
a.yaml:6:9: route `dup`: unknown link `rabbit` (no links are configured)
a.yaml:7:11: route `dup`: duplicate route name (first defined at a.yaml:2)
b.yaml:9:11: route `bad`: `#` must be the last level on its own in `a/#/b`
b.yaml:10:11: route `bad`: invalid queue name `has space`: destination name contains a control or whitespace character
b.yaml:10:35: route `bad`: STOMP target `/exchange/e` must start with /queue/ or /topic/
b.yaml:2:5: route `loop-a`: routing loop: loop-a → loop-b → loop-a
11 errors
";
    assert_eq!(out, expected);
}

#[test]
fn loops_through_wildcards_and_mqtt_targets_are_found() {
    let (code, out) = check(&[(
        "l.yaml",
        "routes:
  - name: up
    from: { mqtt: \"in/#\" }
    to: [ { topic: \"mid.{1}\" } ]
  - name: down
    from: { topic: \"mid.#\" }
    to: [ { mqtt: \"in/{1}\" } ]
",
    )]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "l.yaml:2:5: route `up`: routing loop: up → down → up\n1 error\n"
    );
}

#[test]
fn a_missing_directory_is_an_error() {
    let out = Command::new(common::BIN)
        .args(["check", "/nonexistent/routes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("/nonexistent/routes:0:0: cannot read routes directory:"),
        "{text}"
    );
}

#[test]
fn target_names_cannot_hold_wildcards() {
    let (code, out) = check(&[(
        "w.yaml",
        "routes:
  - name: w
    from: { topic: \"in.*\" }
    to: [ { queue: \"a.*\" }, { mqtt: \"a/+\" }, { stomp: \"/queue/x.#\" }, { queue: \"ok.{1}.{header:h}\" } ]
",
    )]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "w.yaml:4:11: route `w`: invalid queue name `a.*`: wildcard `*` is only allowed in subscription patterns
w.yaml:4:29: route `w`: an MQTT topic name must not contain `+`, `#` or NUL: `a/+`
w.yaml:4:46: route `w`: invalid queue name `x.#`: wildcard `#` is only allowed in subscription patterns
3 errors
"
    );
}

/// Route `a` sends a publish to `in` to `n` topics, each of which a route sends to `n`
/// queues: `n * n` deliveries (plus one per topic) from one publish.
fn fan_table(n: usize) -> String {
    let mut t = String::from("routes:\n  - name: a\n    from: { queue: in }\n    to:\n");
    for i in 0..n {
        t += &format!("      - topic: mid.{i}\n");
    }
    for i in 0..n {
        t += &format!("  - name: b{i}\n    from: {{ topic: mid.{i} }}\n    to:\n");
        for j in 0..n {
            t += &format!("      - queue: out.{i}.{j}\n");
        }
    }
    t
}

#[test]
fn a_table_over_the_worst_case_fanout_is_refused() {
    // 40 × 40 = 1600 deliveries from one publish, over the default of 1000.
    let (code, out) = check(&[("fan.yaml", &fan_table(40))]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(
            "fan.yaml:2:5: route `a`: worst-case fan-out: one publish to queue in can become up to 1641 deliveries, over routes.max_fanout (1000)"
        ),
        "{out}"
    );
    // 20 × 20 fits.
    let (code, out) = check(&[("fan.yaml", &fan_table(20))]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn many_routes_on_distinct_sources_do_not_add_up() {
    // 1500 routes, each from its own queue to 3 queues: any publish makes 4 legs.
    let mut t = String::from("routes:\n");
    for i in 0..1500 {
        t += &format!(
            "  - name: r{i}\n    from: {{ queue: in.{i} }}\n    to: [ {{ queue: a.{i} }}, {{ queue: b.{i} }}, {{ topic: c.{i} }} ]\n"
        );
    }
    let (code, out) = check(&[("many.yaml", &t)]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn the_fanout_limit_is_a_daemon_setting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fan.yaml"), fan_table(40)).unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("switchboard.yaml");
    std::fs::write(&cfg, "routes:\n  max_fanout: 2000\n").unwrap();
    let out = Command::new(common::BIN)
        .arg("check")
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
