//! The runnable examples of `examples/` run here, exactly as their README tells a user
//! to run them (with this build's binary).

mod common;

use std::process::Command;

/// Runs `examples/NAME/run.sh ARGS…`; asserts it succeeded and printed `expect`;
/// returns its standard output.
fn run_example(name: &str, args: &[&str], expect: &str) -> String {
    let script = format!("{}/examples/{name}/run.sh", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&script)
        .args(args)
        .env("SWITCHBOARD_BIN", common::BIN)
        .env("SWITCHBOARD_PYTHON", common::python())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.contains(expect),
        "{name}: expected `{expect}`\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Shared: never while an AMQP test restarts RabbitMQ.
fn rabbit() -> common::PeerLock {
    common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    )
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn live_route_edit_loses_nothing() {
    run_example("live-edit", &[], "none lost, none duplicated");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Python, Node, Chromium: run scripts/test")]
fn web_dashboard_shows_mqtt_telemetry_in_a_browser() {
    let stdout = run_example("dashboard", &["--check"], "\"ok\":true");
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    let sensors: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sensor"].as_str().unwrap())
        .collect();
    for s in ["kitchen", "hall", "garage"] {
        assert!(sensors.contains(&s), "{v}");
    }
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn iot_devices_feed_an_amqp_exchange_with_wills() {
    let _l = rabbit();
    run_example("iot", &["--check"], "all telemetry and d2's will arrived");
}

#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs Prosody, RabbitMQ, Python: run scripts/test"
)]
fn chat_ops_an_xmpp_user_asks_an_amqp_worker() {
    // Prosody lets one connection serve the component domain: exclusive with the XMPP
    // tests.
    let _p = common::peer_lock("prosody", true, "127.0.0.1:5347", "scripts/setup prosody");
    let _r = rabbit();
    run_example(
        "chatops",
        &["--check"],
        "every question answered in its own thread",
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn reshape_mqtt_sensor_json_into_amqp_jobs_with_jq() {
    let _l = rabbit();
    run_example(
        "reshape",
        &["--check"],
        "every reading arrived as the job the worker expects",
    );
}
