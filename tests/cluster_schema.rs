//! Schema checks on clustered routers (the 3-node NATS rig): `switchboard routes push`
//! carries the schema files the routes read (a `$ref`'d one too) with the route files;
//! on two routers paho publishes readings and stomp.py finds the valid ones routed and
//! the invalid ones dead-lettered with `x-schema-error` (tests/py/guard_scenarios.py,
//! as tests/route_schema.rs on one router); an admin `PUT` of a route file keeps the
//! table's schema files; a push that changes only a schema file puts the new rule in
//! force on both.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::{Buckets, URLS, WAIT, router_on, run_prefix, settings};
use common::{BIN, Daemon, peer_lock, python_scenario, wait_until};

const TOKEN: &str = "tok-cluster-schema-41c7";

/// The same routes for each scenario prefix (one per router, so the two runs share no
/// queue or client id).
fn routes(prefixes: &[&str]) -> String {
    let mut out = String::from("routes:\n");
    for p in prefixes {
        out.push_str(&format!(
            "  - name: readings-{p}
    from: {{ mqtt: \"{p}/sensors/+\" }}
    when: {{ schema: schemas/reading.json }}
    invalid: {{ dead_letter: {{ queue: {p}.invalid }} }}
    to: [ {{ queue: {p}.readings }} ]
  - name: strict-{p}
    from: {{ stomp: /queue/{p}.strict }}
    when: {{ schema: schemas/reading.json }}
    to: [ {{ stomp: /queue/{p}.checked }} ]
"
        ));
    }
    out
}

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["device", "t"],
  "properties": { "device": { "$ref": "defs/device.json" }, "t": { "type": "number" } }
}"#;

const DEVICE: &str = r#"{ "type": "string", "pattern": "^k[0-9]+$" }"#;

/// One admin request with the token; (status, JSON body).
fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// `switchboard routes push DIR`; the version it pushed.
fn push(dir: &Path, config: &str) -> u64 {
    let out = Command::new(BIN)
        .args(["routes", "push"])
        .arg(dir)
        .args(["--cluster", URLS, "--config", config])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "push: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim()
        .rsplit_once("pushed as version ")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {text:?}"))
}

/// Waits until `d` runs `version` and its table compiled there.
fn wait_in_force(d: &Daemon, version: u64) {
    wait_until(WAIT, &format!("version {version} in force"), || {
        let (_, v) = call(d.addr("admin"), "GET", "/routes", "");
        let s = &v["status"];
        assert!(s["ok"] != false, "a table failed to compile: {v}");
        (s["version"] == version && s["ok"] == true).then_some(())
    });
}

fn counter(d: &Daemon, route: &str, name: &str) -> u64 {
    let (_, v) = call(d.addr("admin"), "GET", "/routes", "");
    v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == route)
        .unwrap_or_else(|| panic!("no route {route}: {v}"))[name]
        .as_u64()
        .unwrap()
}

fn scenario(d: &Daemon, name: &str, prefix: &str) {
    let mqtt = d.addr("mqtt").port().to_string();
    python_scenario(
        d,
        "guard_scenarios.py",
        "stomp",
        name,
        &["--mqtt-port", &mqtt, "--prefix", prefix, "--timeout", "20"],
    );
}

/// The revision folders under a router's `cluster-schemas/`.
fn schema_folders(d: &Daemon) -> Vec<String> {
    let root = d
        .routes_dir()
        .parent()
        .unwrap()
        .join("data/cluster-schemas");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn pushed_schema_files_check_messages_on_every_router() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("sch");
    let _buckets = Buckets(prefix.clone());
    let auth = format!(
        "auth:\n  admin_tokens: [\"{}\"]\n",
        switchboard::admin::token_digest(TOKEN)
    );
    let a = router_on(URLS, "sa", &prefix, &auth);
    let b = router_on(URLS, "sb", &prefix, &auth);

    let work = tempfile::tempdir().unwrap();
    let config = settings(work.path(), &prefix);
    let dir = work.path().join("routes");
    std::fs::create_dir_all(dir.join("schemas/defs")).unwrap();
    std::fs::write(dir.join("10-readings.yaml"), routes(&["ta", "tb"])).unwrap();
    std::fs::write(dir.join("schemas/reading.json"), SCHEMA).unwrap();
    std::fs::write(dir.join("schemas/defs/device.json"), DEVICE).unwrap();
    let v1 = push(&dir, &config);
    wait_in_force(&a, v1);
    wait_in_force(&b, v1);
    // Each router wrote the table's schema files into its data directory.
    let a_data = a.routes_dir().parent().unwrap().join("data");
    assert_eq!(
        std::fs::read_to_string(
            a_data.join(format!("cluster-schemas/rev-{v1}/schemas/defs/device.json"))
        )
        .unwrap(),
        DEVICE
    );

    // Valid readings routed, invalid ones dead-lettered with why, on both routers.
    scenario(&a, "schema_routes", "ta");
    scenario(&b, "schema_routes", "tb");
    assert_eq!(counter(&a, "readings-ta", "schema_invalid"), 3);
    assert_eq!(counter(&b, "readings-tb", "schema_invalid"), 3);
    assert_eq!(counter(&a, "readings-tb", "schema_invalid"), 0);

    // An admin PUT of a route file: checked against the table's schema files (a route
    // naming one compiles, one naming a file the table lacks does not) and stored with
    // them, so the table still compiles on B.
    let extra = "routes:\n  - name: extra\n    from: { queue: x.in }\n    when: { schema: schemas/reading.json }\n    to: [ { queue: x.out } ]\n";
    let (status, v) = call(a.addr("admin"), "PUT", "/routes/files/30-extra.yaml", extra);
    assert_eq!(status, 200, "{v}");
    let v2 = v["version"].as_u64().unwrap();
    wait_in_force(&b, v2);
    let missing = extra.replace("schemas/reading.json", "schemas/nope.json");
    let (status, v) = call(
        b.addr("admin"),
        "PUT",
        "/routes/files/30-extra.yaml",
        &missing,
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"]
            .to_string()
            .contains("30-extra.yaml:4:21: route `extra`: schema `schemas/nope.json`: cannot read"),
        "{v}"
    );
    assert_eq!(
        schema_folders(&a),
        [format!("rev-{v2}")],
        "older folders removed"
    );

    // Only the schema file changes (a unit is now required): pushed, in force on both.
    std::fs::write(
        dir.join("schemas/reading.json"),
        SCHEMA.replace(r#"["device", "t"]"#, r#"["device", "t", "unit"]"#),
    )
    .unwrap();
    let v3 = push(&dir, &config);
    assert!(v3 > v2);
    wait_in_force(&a, v3);
    wait_in_force(&b, v3);
    scenario(&a, "schema_edited", "ta");
    scenario(&b, "schema_edited", "tb");
    assert_eq!(
        counter(&a, "readings-ta", "schema_invalid"),
        4,
        "counts kept"
    );
    assert_eq!(
        counter(&b, "readings-tb", "schema_invalid"),
        4,
        "counts kept"
    );
    assert_eq!(schema_folders(&b), [format!("rev-{v3}")]);
}
