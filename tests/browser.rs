//! A real browser: @stomp/stompjs in headless Chromium (Debian) over the STOMP WebSocket
//! listener, publishing to and receiving from a queue and a topic, order checked.

mod common;

use std::process::Command;

use common::{Daemon, daemon_with_config};

/// The harness serves its page from another port of 127.0.0.1: a foreign origin to the
/// WebSocket listeners, which refuse those by default (and give browsers no anonymous
/// rights); these tests are about the protocols, so every origin is let in.
fn daemon_for_browsers() -> Daemon {
    daemon_with_config(
        "stomp:\n  ws_allowed_origins: [\"*\"]\n  ws_allow_anonymous_browsers: true\nmqtt:\n  ws_allowed_origins: [\"*\"]\n  ws_allow_anonymous_browsers: true\n",
    )
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Node and Chromium: run scripts/test")]
fn stompjs_in_chromium_over_websocket() {
    let d = daemon_for_browsers();
    let url = format!("ws://{}/ws", d.addr("stomp-ws"));
    let dir = std::env::var("SWITCHBOARD_NODE_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser").into());
    let out = Command::new("node")
        .current_dir(&dir)
        .args(["ws_client.mjs", "stomp", &url, "--count", "50"])
        .output()
        .expect("node (run scripts/setup browser)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed\nstdout: {stdout}\nstderr: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["ok"], true);
    for dest in v["destinations"].as_array().unwrap() {
        assert_eq!(dest["received"], 50, "{dest}");
    }
    assert!(
        d.log().contains("protocol=\"stomp-ws\""),
        "the session ran on the WebSocket listener"
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Node and Chromium: run scripts/test")]
fn mqttjs_in_chromium_over_websocket() {
    let d = daemon_for_browsers();
    let url = format!("ws://{}/mqtt", d.addr("mqtt-ws"));
    let dir = std::env::var("SWITCHBOARD_NODE_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser").into());
    for qos in ["0", "1", "2"] {
        let out = Command::new("node")
            .current_dir(&dir)
            .args(["ws_client.mjs", "mqtt", &url, "--count", "30", "--qos", qos])
            .output()
            .expect("node (run scripts/setup browser)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "browser MQTT test failed at QoS {qos}\nstdout: {stdout}\nstderr: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
        let v: serde_json::Value =
            serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }
    assert!(d.log().contains("protocol=\"mqtt-ws\""));
}
