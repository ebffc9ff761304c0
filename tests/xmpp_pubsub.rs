//! PubSub (XEP-0060) through the XMPP component link against Prosody's `mod_pubsub`
//! (the service `pubsub.localhost` of scripts/peers/prosody.cfg.lua; `prosody-ctl.sh
//! pubsub` adds it to a server started without it), with slixmpp's xep_0060 plugin as
//! the PubSub users, paho-mqtt and stomp.py on the router's side
//! (tests/py/pubsub_scenarios.py).

mod common;

use std::process::Command;
use std::time::Duration;

use common::xmpp_server::{PROSODY, Server};
use common::{Daemon, http_json, python, unique_prefix, wait_until, write_atomic};

/// The link `im`: the component `bridge.localhost`, or (`bot`) the account
/// `pubsub-bot@localhost`, an admin of the PubSub service.
fn router(s: &Server, p: &str, routes: &str, bot: bool) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let link = if bot {
        let certs = std::env::var("PROSODY_DIR").unwrap_or_else(|_| "/tmp/prosody-test".into());
        format!(
            "links:\n  im:\n    xmpp_client:\n      jid: {BOT}\n      password: pw\n      server: \"127.0.0.1:{}\"\n      ca_file: {certs}/certs/localhost.crt\n",
            s.c2s
        )
    } else {
        format!("{}      secret: bridgesecret\n", s.link())
    };
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        format!("{link}      reconnect_initial: 100ms\n      reconnect_max: 1s\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("routes/pubsub.yaml"),
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

const BOT: &str = "pubsub-bot@localhost";

/// The PubSub service on the test Prosody, and the accounts its admins use.
fn pubsub_ready(s: &Server) {
    let ok = Command::new(s.ctl)
        .arg("pubsub")
        .status()
        .unwrap()
        .success();
    assert!(ok, "{} pubsub", s.ctl);
    for admin in ["pubsub-admin@localhost", BOT] {
        // The account exists after the first run: adduser then fails, which is fine.
        let _ = Command::new(s.ctl).args(["adduser", admin, "pw"]).output();
    }
}

fn scenario(s: &Server, d: &Daemon, p: &str, jid: &(String, String), name: &str) -> String {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/pubsub_scenarios.py"
        ))
        .args(["--port", &d.addr("stomp").port().to_string()])
        .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
        .args(["--prefix", p, "--jid", &jid.0, "--password", &jid.1])
        .args(["--c2s-port", &s.c2s.to_string()])
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
    stdout.into_owned()
}

const MQTT_TO_NODE: &str = r#"
routes:
  - name: PFX-temp
    from: {mqtt: "PFX/temp/+"}
    to: [{xmpp: {link: im, pubsub: {service: pubsub.localhost, node: "PFX-temp", create: true, item_id: "{1}"}}}]
  - name: PFX-missing
    from: {mqtt: "PFX/missing"}
    to: [{xmpp: {link: im, pubsub: {service: pubsub.localhost, node: "PFX-missing"}}}]
"#;

const NODE_TO_STOMP: &str = r#"
  - name: PFX-cmd
    from: {xmpp: {link: im, pubsub: {service: pubsub.localhost, node: "PFX-cmd"}}}
    to: [{stomp: /queue/PFX.cmd}]
"#;

/// MQTT → a node the route creates → a slixmpp subscriber (and the service's stored
/// items); then a route added by a live reload for a node that does not exist yet (the
/// subscription is refused, and asked for again until a user created the node) → items
/// the user publishes reach a STOMP consumer, with the item id as a header; then the
/// route removed → the link unsubscribes.
fn both_ways_following_reloads(bot: bool) {
    let s = &PROSODY;
    let _l = s.lock();
    pubsub_ready(s);
    let p = unique_prefix("ps");
    let u = s.user(&p);
    let d = router(s, &p, MQTT_TO_NODE, bot);
    scenario(s, &d, &p, &u, "mqtt_to_node");
    assert!(d.log().contains("PubSub node created"), "{}", d.log());

    // A node that does not exist, and no `create`: the service refuses the item, which
    // goes to the link's dead-letter queue.
    scenario(s, &d, &p, &u, "mqtt_missing");

    // A route for a node that does not exist yet: refused, asked again until the node
    // is there.
    let routes = d.routes_dir().join("pubsub.yaml");
    write_atomic(
        &routes,
        &format!("{MQTT_TO_NODE}{NODE_TO_STOMP}").replace("PFX", &p),
    );
    wait_until(Duration::from_secs(10), "refused after the reload", || {
        d.log()
            .contains("cannot subscribe to PubSub node")
            .then_some(())
    });
    scenario(s, &d, &p, &u, "create_node");
    wait_until(
        Duration::from_secs(15),
        "subscribed once the node exists",
        || d.log().contains("subscribed to PubSub node").then_some(()),
    );
    let subscriber = if bot { BOT } else { "bridge.localhost" };
    let subs = scenario(s, &d, &p, &u, "bridge_subscribed");
    assert!(
        subs.contains(&format!("subscribed:{subscriber}\n")),
        "{subs}"
    );
    scenario(s, &d, &p, &u, "node_to_stomp");

    write_atomic(&routes, &MQTT_TO_NODE.replace("PFX", &p));
    wait_until(
        Duration::from_secs(10),
        "unsubscribed after the reload",
        || {
            scenario(s, &d, &p, &u, "bridge_subscribed")
                .contains("subscribed:\n")
                .then_some(())
        },
    );
    assert!(
        d.log()
            .contains("no route reads this PubSub node any more: unsubscribing"),
        "{}",
        d.log()
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Prosody, Python: run scripts/test")]
fn component_a_node_fed_from_mqtt_and_a_node_read_into_stomp_following_reloads() {
    both_ways_following_reloads(false);
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Prosody, Python: run scripts/test")]
fn bot_a_node_fed_from_mqtt_and_a_node_read_into_stomp_following_reloads() {
    both_ways_following_reloads(true);
}
