//! The XMPP link against a real Prosody (scripts/setup prosody starts one: component
//! `bridge.localhost` on 127.0.0.1:5347, secret `bridgesecret`), with slixmpp as the IM
//! user and stomp.py on the router's side (tests/py/xmpp_scenarios.py).
//!
//! Prosody lets one connection serve a component domain, so these tests hold an
//! exclusive lock and run one at a time.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, http_json, python, wait_until};

const CTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/prosody-ctl.sh");

/// Always exclusive: Prosody lets one connection serve a component domain.
fn prosody() -> common::PeerLock {
    common::peer_lock("prosody", true, "127.0.0.1:5347", "scripts/setup prosody")
}

fn prefix(name: &str) -> String {
    common::unique_prefix(name)
}

/// Stops and starts Prosody; returns once the router's link has noticed and reconnected.
fn restart_prosody(d: &Daemon) {
    assert!(Command::new(CTL).arg("stop").status().unwrap().success());
    wait_until(Duration::from_secs(15), "link lost", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] != "connected").then_some(())
    });
    assert!(Command::new(CTL).arg("start").status().unwrap().success());
    wait_until(Duration::from_secs(30), "link back", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected" && v[0]["counters"]["reconnects"].as_u64() >= Some(1))
            .then_some(())
    });
}

/// A fresh Prosody account; returns (jid, password).
fn user(p: &str) -> (String, String) {
    let jid = format!("{}@localhost", p.to_lowercase());
    let ok = Command::new(CTL)
        .args(["adduser", &jid, "pw"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "prosody-ctl.sh adduser {jid}");
    (jid, "pw".into())
}

fn router(p: &str, routes: &str) -> Daemon {
    router_with(p, routes, "")
}

/// As [`router`], with extra lines for the link's settings (indented 6 spaces).
fn router_with(p: &str, routes: &str, link_extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("secret"), "bridgesecret\n").unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        format!("links:\n  im:\n    xmpp:\n      server: \"127.0.0.1:5347\"\n      domain: bridge.localhost\n      secret_file: secret\n      reconnect_initial: 100ms\n      reconnect_max: 1s\n{}", link_extra.replace("PFX", p)),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("routes/xmpp.yaml"),
        routes.replace("PFX", p),
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    wait_until(Duration::from_secs(20), "XMPP link connected", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    d
}

fn scenario(d: &Daemon, p: &str, jid: &(String, String), name: &str) {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/xmpp_scenarios.py"
        ))
        .args(["--port", &d.addr("stomp").port().to_string()])
        .args(["--admin-port", &d.addr("admin").port().to_string()])
        .args(["--prefix", p, "--jid", &jid.0, "--password", &jid.1])
        .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
        .args(["--timeout", "15", name])
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

const ROUTES: &str = r#"
routes:
  - name: PFX-orders
    from: {xmpp: {link: im, jid: "orders@bridge.localhost"}}
    to: [{stomp: /queue/PFX.orders}]
  - name: PFX-notify
    from: {stomp: /queue/PFX.notify}
    to: [{xmpp: {link: im, to: "{header:user}", from: "alerts@bridge.localhost", type: headline}}]
"#;

#[test]
fn chat_to_a_queue_and_the_reply_back_with_receipts_errors_and_disco() {
    let _l = prosody();
    let p = prefix("chat");
    let u = user(&p);
    let d = router(&p, ROUTES);
    scenario(&d, &p, &u, "chat_roundtrip");
}

/// Request/reply from a chat to an MQTT 5 responder (response topic + correlation data)
/// and back into the chat's thread.
#[test]
fn a_chat_request_is_answered_by_an_mqtt5_responder_in_the_same_thread() {
    let _l = prosody();
    let p = prefix("rpm");
    let u = user(&p);
    let d = router(
        &p,
        r#"
routes:
  - name: PFX-ask
    from: {xmpp: {link: im, jid: "ask@bridge.localhost"}}
    to: [{mqtt: "PFX/ask"}]
"#,
    );
    scenario(&d, &p, &u, "rpc_mqtt5");
}

/// A chat's receipt is sent only once the message is in the journal: kill -9 the router
/// after the receipts, restart it, and every receipted chat is delivered.
#[test]
fn receipted_chats_survive_kill_9() {
    let _l = prosody();
    let p = prefix("dur");
    let u = user(&p);
    let d = router(&p, ROUTES);
    scenario(&d, &p, &u, "durable_before");
    let cfg = d.dir.path().join("switchboard.yaml").display().to_string();
    let d = d.kill_and_restart(&["--config", &cfg]);
    wait_until(Duration::from_secs(20), "XMPP link connected again", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    scenario(&d, &p, &u, "durable_after");
}

#[test]
fn a_queue_routed_to_xmpp_reaches_the_user_and_survives_a_prosody_restart() {
    let _l = prosody();
    let p = prefix("ntf");
    let u = user(&p);
    let d = router(&p, ROUTES);
    scenario(&d, &p, &u, "notify");
    // Restart Prosody: the link notices, retries, reconnects, and works again.
    restart_prosody(&d);
    scenario(&d, &p, &u, "notify");
    assert!(
        d.log().contains("XMPP link lost; reconnecting"),
        "{}",
        d.log()
    );
}

#[test]
fn presence_becomes_events_and_drives_push_to_subscribed_users() {
    let _l = prosody();
    let p = prefix("prs");
    let u = user(&p);
    let d = router(
        &p,
        r#"
routes:
  - name: PFX-alerts
    from: {xmpp: {link: im, jid: "alerts@bridge.localhost"}}
    to: [{topic: PFX.alerts}]
  - name: PFX-presence
    from: {xmpp: {link: im, presence: "*@localhost"}}
    to: [{topic: "PFX.presence.{1}"}]
"#,
    );
    scenario(&d, &p, &u, "presence_and_push");
}

#[test]
fn a_room_and_a_topic_exchange_messages_both_ways_without_echo_and_after_a_restart() {
    let _l = prosody();
    let p = prefix("muc");
    let u = user(&p);
    let d = router_with(
        &p,
        r#"
routes:
  - name: PFX-room-in
    from: {xmpp: {link: im, jid: "ops-bot@bridge.localhost"}}
    to: [{topic: PFX.room}]
  - name: PFX-room-out
    from: {topic: PFX.say}
    to: [{xmpp: {link: im, to: "PFX@conference.localhost", from: "ops-bot@bridge.localhost", type: groupchat}}]
"#,
        "      rooms:\n        - {room: \"PFX@conference.localhost\", nick: switchboard, jid: ops-bot@bridge.localhost}\n",
    );
    scenario(&d, &p, &u, "room");
    restart_prosody(&d);
    // The router rejoined on its own: the room works again.
    scenario(&d, &p, &u, "room");
}

#[test]
fn a_chat_request_is_answered_by_an_amqp_worker_in_the_same_thread() {
    let _l = prosody();
    // RabbitMQ too: share the AMQP tests' lock, so no RabbitMQ restart overlaps.
    let _r = common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    let p = prefix("rpc");
    let u = user(&p);
    let d = router_with(
        &p,
        r#"
routes:
  - name: PFX-rpc
    from: {xmpp: {link: im, jid: "rpc@bridge.localhost"}}
    to: [{amqp: {link: rabbit, routing_key: PFX.work}}]
"#,
        "  rabbit:\n    amqp:\n      uri: \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n",
    );
    scenario(&d, &p, &u, "rpc_amqp");
}

#[test]
fn subscriptions_from_other_domains_are_refused_when_a_policy_is_set() {
    let _l = prosody();
    let p = prefix("pol");
    let u = user(&p);
    let d = router_with(
        &p,
        "routes:\n  - name: PFX-a\n    from: {xmpp: {link: im, jid: \"alerts@bridge.localhost\"}}\n    to: [{topic: PFX.alerts}]\n",
        "      subscriptions_from: [example.org]\n",
    );
    scenario(&d, &p, &u, "subscription_refused");
}

#[test]
fn a_stream_error_is_reported_with_its_condition() {
    let _l = prosody();
    let p = prefix("err");
    let first = router(&p, ROUTES);
    // A second router for the same component domain: Prosody refuses it with a
    // <conflict/> stream error, which the link reports as such.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        "links:\n  im:\n    xmpp:\n      server: \"127.0.0.1:5347\"\n      domain: bridge.localhost\n      secret: bridgesecret\n      reconnect_initial: 100ms\n      reconnect_max: 500ms\n",
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let second = Daemon::start_in(dir, &["--config", &cfg]);
    let v = wait_until(Duration::from_secs(15), "the conflict reported", || {
        let (_, v) = http_json(second.addr("admin"), "GET", "/links");
        v[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("conflict"))
            .then_some(v)
    });
    assert_eq!(v[0]["state"], "retrying", "{v}");
    // The first one is unharmed.
    let (_, v) = http_json(first.addr("admin"), "GET", "/links");
    assert_eq!(v[0]["state"], "connected", "{v}");
}

#[test]
fn a_full_destination_is_refused_with_resource_constraint_without_stalling_the_link() {
    let _l = prosody();
    let p = prefix("full");
    let u = user(&p);
    let d = router_with(
        &p,
        ROUTES,
        "queues:\n  named:\n    PFX.orders: {max_length: 1, overflow: block}\n",
    );
    scenario(&d, &p, &u, "full_destination");
}

#[test]
fn an_oversized_stanza_is_stopped_by_the_server_and_the_link_carries_on() {
    let _l = prosody();
    let p = prefix("big");
    let u = user(&p);
    let d = router(&p, ROUTES);
    scenario(&d, &p, &u, "oversize");
    assert!(!d.log().contains("XMPP link lost"), "{}", d.log());
}
