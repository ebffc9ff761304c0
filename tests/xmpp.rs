//! The XMPP link against real XMPP servers — Prosody and ejabberd, each test on both
//! (`prosody::NAME` and `ejabberd::NAME`) — with slixmpp as the IM user and stomp.py on
//! the router's side (tests/py/xmpp_scenarios.py). `scripts/setup prosody ejabberd`
//! starts both: they serve the same names (domain `localhost`, component
//! `bridge.localhost` with secret `bridgesecret`, MUC `conference.localhost`) on their own
//! ports, so a test differs only in where it connects.
//!
//! A component domain is served by one router at a time (Prosody refuses a second
//! connection; ejabberd would share the traffic between them), so the tests of one server
//! hold its exclusive lock and run one at a time.

mod common;

use std::process::Command;
use std::time::Duration;

use common::xmpp_server::Server;
use common::{Daemon, http_json, python, wait_until};

on_both_servers!(
    needs "Python";
    chat_to_a_queue_and_the_reply_back_with_receipts_errors_and_disco,
    a_chat_request_is_answered_by_an_mqtt5_responder_in_the_same_thread,
    receipted_chats_survive_kill_9,
    a_queue_routed_to_xmpp_reaches_the_user_and_survives_a_server_restart,
    presence_becomes_events_and_drives_push_to_subscribed_users,
    subscribing_while_online_gives_no_offline_event,
    a_resource_leaving_is_not_offline_while_another_is_online,
    a_room_and_a_topic_exchange_messages_both_ways_without_echo_and_after_a_restart,
    a_chat_request_is_answered_by_an_amqp_worker_in_the_same_thread,
    subscriptions_from_other_domains_are_refused_when_a_policy_is_set,
    a_refused_handshake_is_reported_with_its_condition,
    a_second_connection_for_the_domain,
    a_full_destination_is_refused_with_resource_constraint_without_stalling_the_link,
    an_oversized_stanza_is_stopped_by_the_server_and_the_link_carries_on,
);

fn prefix(name: &str) -> String {
    common::unique_prefix(name)
}

fn router(s: &Server, p: &str, routes: &str) -> Daemon {
    router_with(s, p, routes, "")
}

/// As [`router`], with extra lines for the link's settings (indented 6 spaces).
fn router_with(s: &Server, p: &str, routes: &str, link_extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("secret"), "bridgesecret\n").unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        format!(
            "{}      secret_file: secret\n      reconnect_initial: 100ms\n      reconnect_max: 1s\n{}",
            s.link(),
            link_extra.replace("PFX", p)
        ),
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

fn scenario(s: &Server, d: &Daemon, p: &str, jid: &(String, String), name: &str) {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/xmpp_scenarios.py"
        ))
        .args(["--port", &d.addr("stomp").port().to_string()])
        .args(["--admin-port", &d.addr("admin").port().to_string()])
        .args(["--prefix", p, "--jid", &jid.0, "--password", &jid.1])
        .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
        .args(["--c2s-port", &s.c2s.to_string()])
        .args(["--timeout", "15", name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario {name} on {} failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        s.name,
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

fn chat_to_a_queue_and_the_reply_back_with_receipts_errors_and_disco(s: &Server) {
    let _l = s.lock();
    let p = prefix("chat");
    let u = s.user(&p);
    let d = router(s, &p, ROUTES);
    scenario(s, &d, &p, &u, "chat_roundtrip");
}

/// Request/reply from a chat to an MQTT 5 responder (response topic + correlation data)
/// and back into the chat's thread.
fn a_chat_request_is_answered_by_an_mqtt5_responder_in_the_same_thread(s: &Server) {
    let _l = s.lock();
    let p = prefix("rpm");
    let u = s.user(&p);
    let d = router(
        s,
        &p,
        r#"
routes:
  - name: PFX-ask
    from: {xmpp: {link: im, jid: "ask@bridge.localhost"}}
    to: [{mqtt: "PFX/ask"}]
"#,
    );
    scenario(s, &d, &p, &u, "rpc_mqtt5");
}

/// A chat's receipt is sent only once the message is in the journal: kill -9 the router
/// after the receipts, restart it, and every receipted chat is delivered.
fn receipted_chats_survive_kill_9(s: &Server) {
    let _l = s.lock();
    let p = prefix("dur");
    let u = s.user(&p);
    let d = router(s, &p, ROUTES);
    scenario(s, &d, &p, &u, "durable_before");
    let cfg = d.dir.path().join("switchboard.yaml").display().to_string();
    let d = d.kill_and_restart(&["--config", &cfg]);
    wait_until(Duration::from_secs(20), "XMPP link connected again", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    scenario(s, &d, &p, &u, "durable_after");
}

fn a_queue_routed_to_xmpp_reaches_the_user_and_survives_a_server_restart(s: &Server) {
    let _l = s.lock();
    let p = prefix("ntf");
    let u = s.user(&p);
    let d = router(s, &p, ROUTES);
    scenario(s, &d, &p, &u, "notify");
    // Restart the server: the link notices, retries, reconnects, and works again.
    s.restart(&d);
    scenario(s, &d, &p, &u, "notify");
    assert!(
        d.log().contains("XMPP link lost; reconnecting"),
        "{}",
        d.log()
    );
}

fn presence_becomes_events_and_drives_push_to_subscribed_users(s: &Server) {
    let _l = s.lock();
    let p = prefix("prs");
    let u = s.user(&p);
    let d = router(s, &p, PRESENCE_ROUTES);
    scenario(s, &d, &p, &u, "presence_and_push");
}

/// The routes of the presence scenarios: alerts@ pushes a topic, presence events go to
/// `PFX.presence.USER`.
const PRESENCE_ROUTES: &str = r#"
routes:
  - name: PFX-alerts
    from: {xmpp: {link: im, jid: "alerts@bridge.localhost"}}
    to: [{topic: PFX.alerts}]
  - name: PFX-presence
    from: {xmpp: {link: im, presence: "*@localhost"}}
    to: [{topic: "PFX.presence.{1}"}]
"#;

/// Subscribing while online: the server's presences around the subscription handshake
/// (Prosody sends an unavailable presence from the user's bare JID) are no "offline"
/// event; the user's events are online, away, offline.
fn subscribing_while_online_gives_no_offline_event(s: &Server) {
    let _l = s.lock();
    let p = prefix("prsol");
    let u = s.user(&p);
    let d = router(s, &p, PRESENCE_ROUTES);
    scenario(s, &d, &p, &u, "presence_online_without_a_stray_offline");
}

/// Two resources: one leaving is not "offline" (and the push goes on), the last is.
fn a_resource_leaving_is_not_offline_while_another_is_online(s: &Server) {
    let _l = s.lock();
    let p = prefix("prs2");
    let u = s.user(&p);
    let d = router(s, &p, PRESENCE_ROUTES);
    scenario(s, &d, &p, &u, "presence_two_resources");
}

fn a_room_and_a_topic_exchange_messages_both_ways_without_echo_and_after_a_restart(s: &Server) {
    let _l = s.lock();
    let p = prefix("muc");
    let u = s.user(&p);
    let d = router_with(
        s,
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
    scenario(s, &d, &p, &u, "room");
    s.restart(&d);
    // The router rejoined on its own: the room works again.
    scenario(s, &d, &p, &u, "room");
}

fn a_chat_request_is_answered_by_an_amqp_worker_in_the_same_thread(s: &Server) {
    let _l = s.lock();
    // RabbitMQ too: share the AMQP tests' lock, so no RabbitMQ restart overlaps.
    let _r = common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    let p = prefix("rpc");
    let u = s.user(&p);
    let d = router_with(
        s,
        &p,
        r#"
routes:
  - name: PFX-rpc
    from: {xmpp: {link: im, jid: "rpc@bridge.localhost"}}
    to: [{amqp: {link: rabbit, routing_key: PFX.work}}]
"#,
        "  rabbit:\n    amqp:\n      uri: \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n",
    );
    scenario(s, &d, &p, &u, "rpc_amqp");
}

fn subscriptions_from_other_domains_are_refused_when_a_policy_is_set(s: &Server) {
    let _l = s.lock();
    let p = prefix("pol");
    let u = s.user(&p);
    let d = router_with(
        s,
        &p,
        "routes:\n  - name: PFX-a\n    from: {xmpp: {link: im, jid: \"alerts@bridge.localhost\"}}\n    to: [{topic: PFX.alerts}]\n",
        "      subscriptions_from: [example.org]\n",
    );
    scenario(s, &d, &p, &u, "subscription_refused");
}

/// A second router (a bare link, no routes) for `bridge.localhost` with `extra` settings.
fn second_router(s: &Server, extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        format!(
            "{}      reconnect_initial: 100ms\n      reconnect_max: 500ms\n{extra}",
            s.link()
        ),
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    Daemon::start_in(dir, &["--config", &cfg])
}

/// Waits until the router's link reports an error containing `what`; returns `/links`.
fn link_error(d: &Daemon, what: &str) -> serde_json::Value {
    wait_until(Duration::from_secs(15), what, || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        v[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(what))
            .then_some(v)
    })
}

fn a_refused_handshake_is_reported_with_its_condition(s: &Server) {
    let _l = s.lock();
    let wrong = second_router(s, "      secret: not-the-secret\n");
    let v = link_error(&wrong, "not-authorized");
    assert_eq!(v[0]["state"], "retrying", "{v}");
}

/// Prosody refuses a second connection for a component domain with a <conflict/>
/// stream error, which the link reports as such; ejabberd accepts it (and shares the
/// domain's stanzas among the connections). Either way the first link is unharmed.
fn a_second_connection_for_the_domain(s: &Server) {
    let _l = s.lock();
    let p = prefix("err");
    let first = router(s, &p, ROUTES);
    let second = second_router(s, "      secret: bridgesecret\n");
    if s.name == "prosody" {
        let v = link_error(&second, "conflict");
        assert_eq!(v[0]["state"], "retrying", "{v}");
    } else {
        wait_until(Duration::from_secs(15), "second link connected", || {
            let (_, v) = http_json(second.addr("admin"), "GET", "/links");
            (v[0]["state"] == "connected").then_some(())
        });
    }
    let (_, v) = http_json(first.addr("admin"), "GET", "/links");
    assert_eq!(v[0]["state"], "connected", "{v}");
}

fn a_full_destination_is_refused_with_resource_constraint_without_stalling_the_link(s: &Server) {
    let _l = s.lock();
    let p = prefix("full");
    let u = s.user(&p);
    let d = router_with(
        s,
        &p,
        ROUTES,
        "queues:\n  named:\n    PFX.orders: {max_length: 1, overflow: block}\n",
    );
    scenario(s, &d, &p, &u, "full_destination");
}

fn an_oversized_stanza_is_stopped_by_the_server_and_the_link_carries_on(s: &Server) {
    let _l = s.lock();
    let p = prefix("big");
    let u = s.user(&p);
    let d = router(s, &p, ROUTES);
    scenario(s, &d, &p, &u, "oversize");
    assert!(!d.log().contains("XMPP link lost"), "{}", d.log());
}
