//! The daemon as a user runs it: real binary, real sockets, signals.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, http, http_json, wait_until, write_atomic};

const ROUTE_A: &str = "routes:\n  - name: a\n    from: { queue: in }\n    to: [ { queue: out } ]\n";

#[test]
fn runs_reloads_on_edit_and_sighup_and_stops_cleanly_on_sigterm() {
    let d = Daemon::start(&[("a.yaml", ROUTE_A)], &[]);
    let admin = d.addr("admin");
    assert_ne!(admin.port(), 0, "port 0 resolved to a real port");
    assert_eq!(http(admin, "GET", "/health"), (200, "ok".into()));

    let (status, v) = http_json(admin, "GET", "/routes");
    assert_eq!(status, 200);
    assert_eq!(v["status"]["version"], 1);
    assert_eq!(v["status"]["routes"], 1);
    assert_eq!(v["routes"][0]["name"], "a");

    // An editor-style save of a new file is picked up without a restart.
    write_atomic(
        &d.routes_dir().join("b.yaml"),
        "routes:\n  - name: b\n    from: { topic: \"x.*\" }\n    to: [ { queue: \"x-{1}\" } ]\n",
    );
    let v = wait_until(Duration::from_secs(10), "reload after edit", || {
        let (_, v) = http_json(admin, "GET", "/routes");
        (v["status"]["version"] == 2).then_some(v)
    });
    assert_eq!(v["status"]["routes"], 2);
    assert_eq!(v["status"]["trigger"], "file change");

    // A broken edit leaves the table in force and reports why.
    write_atomic(
        &d.routes_dir().join("b.yaml"),
        "routes:\n  - name: b\n    form: {}\n",
    );
    let v = wait_until(Duration::from_secs(10), "failed reload", || {
        let (_, v) = http_json(admin, "GET", "/routes");
        (v["status"]["ok"] == false).then_some(v)
    });
    assert_eq!(v["status"]["version"], 2);
    let err = v["status"]["errors"][0].as_str().unwrap();
    assert!(err.ends_with("b.yaml:3:5: unknown field `form`, expected one of name, description, from, when, to, transform, passthrough, loss, declare, invalid, rate_limit"), "{err}");
    assert_eq!(
        v["routes"].as_array().unwrap().len(),
        2,
        "old table still in force"
    );

    // Fix it behind the watcher's back, then SIGHUP.
    std::fs::remove_file(d.routes_dir().join("b.yaml")).unwrap();
    d.signal("HUP");
    wait_until(Duration::from_secs(10), "SIGHUP reload", || {
        let (_, v) = http_json(admin, "GET", "/routes");
        (v["status"]["ok"] == true && v["status"]["routes"] == 1).then_some(())
    });
    let (code, v) = http_json(admin, "POST", "/routes/reload");
    assert_eq!(code, 200);
    assert_eq!(v["ok"], true);

    let (status, log) = d.stop();
    assert!(status.success(), "exit 0 on SIGTERM, got {status}\n{log}");
    for line in [
        "listening listener=admin",
        "signal received signal=\"SIGTERM\"",
        "stopped",
    ] {
        assert!(log.contains(line), "log lacks `{line}`:\n{log}");
    }
}

#[test]
fn json_logs_on_request() {
    let d = Daemon::start(&[], &["--log-format", "json"]);
    let (status, log) = d.stop();
    assert!(status.success());
    let first = log.lines().next().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(
        v["level"].is_string() && v["fields"]["message"].is_string(),
        "{first}"
    );
}

#[test]
fn refuses_to_start_on_broken_routes_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("routes/x.yaml"),
        "routes:\n  - name: x\n    from: { queue: \"a b\" }\n    to: [ { topic: \"t.{1}\" } ]\n",
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .env("SWITCHBOARD_DATA_DIR", "off")
        .args(["run", "--listen", "admin=127.0.0.1:0", "--routes"])
        .arg(dir.path().join("routes"))
        .args(common::OTHER_LISTENERS_OFF)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("x.yaml:3:11: route `x`: invalid queue name `a b`"),
        "{err}"
    );
    assert!(err.contains("x.yaml:4:11: route `x`: template `t.{1}` uses {1} but the source pattern has 0 wildcards"), "{err}");
}

#[test]
fn a_taken_port_names_the_listener_and_the_override() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(common::BIN)
        .env("SWITCHBOARD_DATA_DIR", "off")
        .args([
            "run",
            "--routes",
            "/nonexistent",
            "--listen",
            &format!("admin={addr}"),
        ])
        .args(common::OTHER_LISTENERS_OFF)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} for `admin`"))
            && err.contains("override with --listen admin=HOST:PORT"),
        "{err}"
    );
}

#[test]
fn bad_command_lines_are_explained() {
    let out = Command::new(common::BIN)
        .env("SWITCHBOARD_DATA_DIR", "off")
        .args(["run", "--listen", "smtp=127.0.0.1:25"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: unknown listener `smtp` (known: admin, stomp, stomp-ws, mqtt, mqtt-ws)"
    );
    let help = Command::new(common::BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in ["run", "check", "passwd"] {
        assert!(text.contains(cmd), "{text}");
    }
}

#[test]
fn reading_the_routes_does_not_trigger_more_reloads() {
    let d = Daemon::start(&[("a.yaml", ROUTE_A)], &[]);
    let admin = d.addr("admin");
    write_atomic(
        &d.routes_dir().join("a.yaml"),
        &format!("# edited\n{ROUTE_A}"),
    );
    let v = wait_until(Duration::from_secs(10), "reload after edit", || {
        let (_, v) = http_json(admin, "GET", "/routes");
        (v["status"]["version"] == 2).then_some(v)
    });
    let attempts = v["status"]["attempts"].as_u64().unwrap();
    // An absence, so only a window can show it: a reload set off by the access events of
    // the reload's own reads would come one debounce (200 ms, built in) after them, and
    // then again after each such reload. Watched for six debounce periods.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, v) = http_json(admin, "GET", "/routes");
    assert_eq!(
        v["status"]["attempts"].as_u64().unwrap(),
        attempts,
        "no reload without a change"
    );
}

#[test]
fn a_burst_of_file_writes_makes_one_reload() {
    let d = Daemon::start(&[("a.yaml", ROUTE_A)], &[]);
    let admin = d.addr("admin");
    // Five new route files written one after the other, as a `cp` of several would.
    let mut written = Vec::new();
    for i in 0..5 {
        let route = format!(
            "routes:\n  - name: r{i}\n    from: {{ queue: in{i} }}\n    to: [ {{ queue: out{i} }} ]\n"
        );
        write_atomic(&d.routes_dir().join(format!("r{i}.yaml")), &route);
        written.push(Instant::now());
    }
    // A gap of a whole debounce (200 ms, built in) between two writes may rightly reload
    // in between; a loaded machine can make one. Any more reloads than those gaps allow
    // would mean each change reloads on its own.
    let gaps = written
        .windows(2)
        .filter(|w| w[1] - w[0] >= Duration::from_millis(200))
        .count() as u64;
    let v = wait_until(Duration::from_secs(10), "all five files in force", || {
        let (_, v) = http_json(admin, "GET", "/routes");
        (v["status"]["routes"] == 6).then_some(v)
    });
    // An absence (no further reload for these writes), so only a window can show it:
    // six debounce periods.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, after) = http_json(admin, "GET", "/routes");
    assert_eq!(
        after["status"]["version"], v["status"]["version"],
        "{after}"
    );
    let reloads = after["status"]["attempts"].as_u64().unwrap() - 1;
    assert!(
        (1..=1 + gaps).contains(&reloads),
        "{reloads} reloads for 5 writes with {gaps} gaps of a debounce: {after}"
    );
}

#[test]
fn named_queues_exist_when_auto_create_is_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let cfg = dir.path().join("sb.yaml");
    std::fs::write(
        &cfg,
        "queues:\n  auto_create: false\n  named:\n    orders: {}\n",
    )
    .unwrap();
    let p = cfg.display().to_string();
    let d = Daemon::start_in(dir, &["--config", &p]);
    let (_, v) = http_json(d.addr("admin"), "GET", "/queues");
    assert_eq!(v["queues"][0]["name"], "orders", "{v}");
}

#[test]
fn the_example_settings_file_is_valid() {
    let out = Command::new(common::BIN)
        .env("SWITCHBOARD_DATA_DIR", "off")
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/switchboard.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
