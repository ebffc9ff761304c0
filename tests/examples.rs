//! The runnable examples of `examples/` run here, exactly as their README tells a user
//! to run them (with this build's binary).

mod common;

use std::process::Command;

#[test]
fn live_route_edit_loses_nothing() {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/live-edit/run.sh"
    ))
    .env("SWITCHBOARD_BIN", common::BIN)
    .env("SWITCHBOARD_PYTHON", common::python())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("none lost, none duplicated"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn web_dashboard_shows_mqtt_telemetry_in_a_browser() {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/dashboard/run.sh"
    ))
    .arg("--check")
    .env("SWITCHBOARD_BIN", common::BIN)
    .env("SWITCHBOARD_PYTHON", common::python())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"ok\":true"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
fn iot_devices_feed_an_amqp_exchange_with_wills() {
    // Shared: never while an AMQP test restarts RabbitMQ.
    let _l = common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/iot/run.sh"))
        .arg("--check")
        .env("SWITCHBOARD_BIN", common::BIN)
        .env("SWITCHBOARD_PYTHON", common::python())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all telemetry and d2's will arrived"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chat_ops_an_xmpp_user_asks_an_amqp_worker() {
    // Prosody lets one connection serve the component domain: exclusive with the XMPP
    // tests; RabbitMQ shared (never during an AMQP test's RabbitMQ restart).
    let _p = common::peer_lock("prosody", true, "127.0.0.1:5347", "scripts/setup prosody");
    let _r = common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/chatops/run.sh"
    ))
    .arg("--check")
    .env("SWITCHBOARD_BIN", common::BIN)
    .env("SWITCHBOARD_PYTHON", common::python())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("every question answered in its own thread"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
