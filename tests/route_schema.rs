//! Schema checks in routes (`when.schema`, `invalid.dead_letter`) with real clients:
//! paho publishes readings, stomp.py reads where they went (tests/py/guard_scenarios.py);
//! an edited schema file is in force after the watcher's reload; `check` locates broken
//! schema references.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Daemon, http_json, python_scenario, wait_until, write_atomic};

const ROUTES: &str = r#"
routes:
  - name: readings
    from: { mqtt: "t/sensors/+" }
    when: { schema: schemas/reading.json }
    invalid: { dead_letter: { queue: t.invalid } }
    to: [ { queue: t.readings } ]
  - name: strict
    from: { stomp: /queue/t.strict }
    when: { schema: schemas/reading.json }
    to: [ { stomp: /queue/t.checked } ]
"#;

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["device", "t"],
  "properties": { "device": { "type": "string" }, "t": { "type": "number" } }
}"#;

fn scenario(d: &Daemon, name: &str) {
    let mqtt = d.addr("mqtt").port().to_string();
    python_scenario(
        d,
        "guard_scenarios.py",
        "stomp",
        name,
        &["--mqtt-port", &mqtt, "--timeout", "20"],
    );
}

/// A route's counters in `GET /routes`.
fn counter(d: &Daemon, route: &str, name: &str) -> u64 {
    let (_, v) = http_json(d.addr("admin"), "GET", "/routes");
    v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == route)
        .unwrap_or_else(|| panic!("no route {route}: {v}"))[name]
        .as_u64()
        .unwrap()
}

#[test]
fn invalid_messages_are_dead_lettered_and_an_edited_schema_applies_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes");
    std::fs::create_dir_all(routes.join("schemas")).unwrap();
    std::fs::write(routes.join("schemas/reading.json"), SCHEMA).unwrap();
    std::fs::write(routes.join("readings.yaml"), ROUTES).unwrap();
    let d = Daemon::start_in(dir, &[]);

    scenario(&d, "schema_routes");
    assert_eq!(counter(&d, "readings", "schema_invalid"), 3);
    assert_eq!(
        counter(&d, "readings", "matches"),
        5,
        "dead letters are taken"
    );
    assert_eq!(counter(&d, "strict", "schema_invalid"), 1);
    assert_eq!(counter(&d, "strict", "matches"), 1);
    let (_, m) = common::http(d.addr("admin"), "GET", "/metrics?per_object=1");
    assert!(
        m.lines()
            .any(|l| l == "switchboard_route_schema_invalid_total{route=\"readings\"} 3"),
        "{m}"
    );

    // The schema file alone changes (no route file does), in a folder of the routes
    // directory: the watcher's reload recompiles the table.
    write_atomic(
        &d.routes_dir().join("schemas/reading.json"),
        &SCHEMA.replace(r#"["device", "t"]"#, r#"["device", "t", "unit"]"#),
    );
    wait_until(Duration::from_secs(10), "the reload", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/routes");
        (v["status"]["version"] == 2).then_some(())
    });
    scenario(&d, "schema_edited");
    assert_eq!(counter(&d, "readings", "schema_invalid"), 4, "counts kept");
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
fn check_locates_broken_schema_references() {
    let (code, out) = check(&[
        (
            "10-s.yaml",
            "routes:
  - name: missing
    from: { queue: a }
    when: { schema: nope.json }
    to: [ { queue: b } ]
  - name: broken
    from: { queue: c }
    when:
      schema: bad.json
    to: [ { queue: d } ]
  - name: outside
    from: { queue: e }
    when: { schema: ../elsewhere.json }
    to: [ { queue: f } ]
  - name: remote
    from: { queue: g }
    when: { schema: remote.json }
    to: [ { queue: h } ]
  - name: stray
    from: { queue: i }
    invalid: { dead_letter: { queue: j } }
    to: [ { queue: k } ]
",
        ),
        ("bad.json", r#"{"type": 5}"#),
        ("remote.json", r#"{"$ref": "https://example.org/s.json"}"#),
    ]);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "DIR/10-s.yaml:4:21: route `missing`: schema `nope.json`: cannot read: No such file or directory",
        "DIR/10-s.yaml:9:15: route `broken`: schema `bad.json` does not compile: ",
        "DIR/10-s.yaml:13:21: route `outside`: schema `../elsewhere.json`: give a path inside the routes directory",
        "DIR/10-s.yaml:17:21: route `remote`: schema `remote.json` does not compile: ",
        "DIR/10-s.yaml:21:14: route `stray`: `invalid` needs `when.schema`",
        "5 errors",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
    assert!(out.contains("nothing is fetched"), "{out}");

    let (code, out) = check(&[
        (
            "10-s.yaml",
            "routes:\n  - name: ok\n    from: { queue: a }\n    when: { schema: good.json }\n    to: [ { queue: b } ]\n",
        ),
        ("good.json", r#"{"type": "object"}"#),
    ]);
    assert_eq!(code, 0, "{out}");
}
