//! The translation matrix (issue 8): every ordered pair of {STOMP, MQTT 3.1.1, MQTT 5,
//! AMQP, XMPP} with text, JSON and binary bodies, headers, content type, correlation id
//! and reply-to, checked against docs/mapping.md; and the per-route loss policies
//! (`drop`, `encode`, `reject`) with their counters (tests/py/matrix.py).
//!
//! Runs on each XMPP server, Prosody and ejabberd (`prosody::…`, `ejabberd::…`); needs
//! RabbitMQ too (scripts/setup rabbitmq prosody ejabberd).

mod common;

use std::process::Command;
use std::time::Duration;

use common::xmpp_server::Server;
use common::{Daemon, http_json, python, wait_until};

on_both_servers!(
    needs "RabbitMQ, Python";
    every_protocol_to_every_protocol_with_loss_policies,
);

/// Three fan-out routes, one per loss policy: whatever reaches `PFX.POLICY.*` goes to
/// the AMQP queue `PFX.out`, to the XMPP user, and to `PFX.seen.POLICY.*`, where the
/// STOMP and MQTT subscribers are. (Not `passthrough`: that delivers the message as
/// received, without the route's loss policy.) AMQP and XMPP sources feed `PFX.drop.*`.
const ROUTES: &str = r#"
routes:
  - name: PFX-from-amqp
    from: {amqp: {link: rabbit, queue: PFX.in}}
    to: [{topic: PFX.drop.amqp}]
    declare:
      queues:
        - {name: PFX.in, durable: false, arguments: {x-expires: 600000}}
        - {name: PFX.out, durable: false, arguments: {x-expires: 600000}}
  - name: PFX-from-xmpp
    from: {xmpp: {link: im, jid: "LOWER-in@bridge.localhost"}}
    to: [{topic: PFX.drop.xmpp}]
  - name: PFX-drop
    from: {topic: "PFX.drop.*"}
    to: [{amqp: {link: rabbit, routing_key: PFX.out}}, {xmpp: {link: im, to: "JID", from: "LOWER-out@bridge.localhost"}}, {topic: "PFX.seen.drop.{1}"}]
  - name: PFX-encode
    from: {topic: "PFX.encode.*"}
    to: [{amqp: {link: rabbit, routing_key: PFX.out}}, {xmpp: {link: im, to: "JID", from: "LOWER-out@bridge.localhost"}}, {topic: "PFX.seen.encode.{1}"}]
    loss: encode
  - name: PFX-reject
    from: {topic: "PFX.reject.*"}
    to: [{amqp: {link: rabbit, routing_key: PFX.out}}, {xmpp: {link: im, to: "JID", from: "LOWER-out@bridge.localhost"}}, {topic: "PFX.seen.reject.{1}"}]
    loss: reject
"#;

fn every_protocol_to_every_protocol_with_loss_policies(s: &Server) {
    let _p = s.lock();
    let _r = common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    let p = common::unique_prefix("mx");
    let lower = p.to_lowercase();
    let (jid, password) = s.user(&p);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("secret"), "bridgesecret\n").unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        format!(
            "{}      secret_file: secret\n      dead_letter: {p}.dead\n  rabbit:\n    amqp:\n      uri: \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n      dead_letter: {p}.dead\n",
            s.link()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("routes/matrix.yaml"),
        ROUTES
            .replace("PFX", &p)
            .replace("LOWER", &lower)
            .replace("JID", &jid),
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    wait_until(Duration::from_secs(20), "both links connected", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        let up = v
            .as_array()?
            .iter()
            .filter(|l| l["state"] == "connected")
            .count();
        (up == 2).then_some(())
    });
    let out = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/matrix.py"))
        .args(["--port", &d.addr("stomp").port().to_string()])
        .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
        .args(["--admin-port", &d.addr("admin").port().to_string()])
        .args(["--prefix", &p, "--jid", &jid, "--password", &password])
        .args(["--c2s-port", &s.c2s.to_string()])
        .args(["--timeout", "20"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "matrix failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}
