//! PubSub (XEP-0060) through both kinds of XMPP link against Prosody's and ejabberd's
//! `mod_pubsub` (the service `pubsub.localhost` of scripts/peers/prosody.cfg.lua and
//! ejabberd.yml; `prosody-ctl.sh pubsub` and `ejabberd-ctl.sh pubsub` add it to a server
//! started without it) and PEP, with slixmpp's xep_0060 plugin as the PubSub users,
//! paho-mqtt and stomp.py on the router's side (tests/py/pubsub_scenarios.py). Each test
//! runs on both servers (`prosody::NAME`, `ejabberd::NAME`).
//!
//! The link connects through a [`Forwarder`], so a test can cut its connection without
//! touching anyone else's.

mod common;

use std::process::Command;
use std::time::Duration;

use common::forwarder::Forwarder;
use common::xmpp_server::Server;
use common::{Daemon, http_json, python, unique_prefix, wait_until, write_atomic};

on_both_servers!(
    needs "Python";
    component_a_node_fed_from_mqtt_and_a_node_read_into_stomp_following_reloads,
    bot_a_node_fed_from_mqtt_and_a_node_read_into_stomp_following_reloads,
    component_items_published_while_away_are_delivered_once_in_order,
    bot_items_published_while_away_are_delivered_once_in_order,
    component_items_published_while_the_router_was_stopped_are_delivered_once_in_order,
    bot_items_published_while_the_router_was_stopped_are_delivered_once_in_order,
    retractions_reach_the_routes_asking_for_them,
    bot_reads_a_users_pep_node,
);

/// The router with the link `im` connecting through `fwd`: the component
/// `bridge.localhost`, or (`bot`) the account `bot` (by default [`BOT`], an admin of
/// Prosody's PubSub service).
fn router_via(s: &Server, fwd: &Forwarder, p: &str, routes: &str, bot: Option<&str>) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let server = format!("127.0.0.1:{}", fwd.port());
    let link = match bot {
        Some(jid) => format!(
            "links:\n  im:\n    xmpp_client:\n      jid: {jid}\n      password: pw\n      server: \"{server}\"\n      ca_file: {}\n",
            s.cert()
        ),
        None => format!(
            "links:\n  im:\n    xmpp:\n      server: \"{server}\"\n      domain: bridge.localhost\n      secret: bridgesecret\n"
        ),
    };
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        format!("{link}      reconnect_initial: 100ms\n      reconnect_max: 1s\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("routes/pubsub.yaml"),
        routes
            .replace("PFX", p)
            .replace("BOT", bot.unwrap_or(""))
            .replace("MISSING", missing_service(s)),
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

/// A forwarder to the server's port for the link (`bot`: c2s, else the component port).
fn forwarder(s: &Server, bot: bool) -> Forwarder {
    let port = if bot { s.c2s } else { s.component };
    Forwarder::start(0, String::leak(format!("127.0.0.1:{port}")))
}

fn router(s: &Server, fwd: &Forwarder, p: &str, routes: &str, bot: bool) -> Daemon {
    router_via(s, fwd, p, routes, bot.then_some(BOT))
}

const BOT: &str = "pubsub-bot@localhost";

/// The PubSub service on the test server, and the accounts its admins use.
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

/// Runs a scenario of tests/py/pubsub_scenarios.py (`extra`: its further arguments).
fn scenario_with(
    s: &Server,
    d: &Daemon,
    p: &str,
    jid: &(String, String),
    name: &str,
    extra: &[&str],
) -> String {
    let mqtt = d.addr("mqtt").port().to_string();
    let c2s = s.c2s.to_string();
    let mut args = vec!["--mqtt-port", &mqtt, "--prefix", p, "--jid", &jid.0];
    args.extend(["--password", &jid.1, "--c2s-port", &c2s, "--timeout", "15"]);
    args.extend(extra);
    common::python_scenario(d, "pubsub_scenarios.py", "stomp", name, &args)
}

fn scenario(s: &Server, d: &Daemon, p: &str, jid: &(String, String), name: &str) -> String {
    scenario_with(s, d, p, jid, name, &[])
}

/// The link's counter `name` (GET /links).
fn counter(d: &Daemon, name: &str) -> u64 {
    let (_, v) = http_json(d.addr("admin"), "GET", "/links");
    v[0]["counters"][name].as_u64().unwrap_or(0)
}

/// Where the route `PFX-missing` publishes: a node that does not exist on Prosody's
/// service; on ejabberd, which creates it, a service that does not exist.
fn missing_service(s: &Server) -> &'static str {
    if s.name == "prosody" {
        "pubsub.localhost"
    } else {
        "nowhere.localhost"
    }
}

const MQTT_TO_NODE: &str = r#"
routes:
  - name: PFX-temp
    from: {mqtt: "PFX/temp/+"}
    to: [{xmpp: {link: im, pubsub: {service: pubsub.localhost, node: "PFX-temp", create: true, item_id: "{1}"}}}]
  - name: PFX-missing
    from: {mqtt: "PFX/missing"}
    to: [{xmpp: {link: im, pubsub: {service: MISSING, node: "PFX-missing"}}}]
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
fn both_ways_following_reloads(s: &Server, bot: bool) {
    let _l = s.lock();
    pubsub_ready(s);
    let p = unique_prefix("ps").to_lowercase();
    let u = s.user(&p);
    let fwd = forwarder(s, bot);
    let d = router(s, &fwd, &p, MQTT_TO_NODE, bot);
    scenario(s, &d, &p, &u, "mqtt_to_node");
    assert!(d.log().contains("PubSub node created"), "{}", d.log());

    // A node that does not exist, and no `create`: the service refuses the item, which
    // goes to the link's dead-letter queue. (ejabberd creates a missing node on a
    // publish from whoever may create nodes: there, a service that does not exist.)
    let condition = if s.name == "prosody" {
        "item-not-found"
    } else {
        "forbidden"
    };
    scenario_with(s, &d, &p, &u, "mqtt_missing", &[condition]);

    // A route for a node that does not exist yet: refused, asked again until the node
    // is there.
    let routes = d.routes_dir().join("pubsub.yaml");
    write_atomic(
        &routes,
        &format!("{MQTT_TO_NODE}{NODE_TO_STOMP}")
            .replace("PFX", &p)
            .replace("MISSING", missing_service(s)),
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

    write_atomic(
        &routes,
        &MQTT_TO_NODE
            .replace("PFX", &p)
            .replace("MISSING", missing_service(s)),
    );
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

fn component_a_node_fed_from_mqtt_and_a_node_read_into_stomp_following_reloads(s: &Server) {
    both_ways_following_reloads(s, false);
}

fn bot_a_node_fed_from_mqtt_and_a_node_read_into_stomp_following_reloads(s: &Server) {
    both_ways_following_reloads(s, true);
}

const AWAY: &str = r#"
routes:
  - name: PFX-away
    from: {xmpp: {link: im, pubsub: {service: pubsub.localhost, node: "PFX-away", catch_up: 1}}}
    to: [{stomp: /queue/PFX.away}]
"#;

/// A node with two items when the router starts: the route's `catch_up: 1` delivers the
/// last. Then the link's connection is cut and kept away (for a bot, its session closed
/// on the server too, so that it cannot be resumed: a resumed stream would have the
/// notifications anyway), three items are published, the link comes back: each missed
/// item is delivered once, in order, before a live one.
fn items_published_while_away(s: &Server, bot: bool) {
    let _l = s.lock();
    pubsub_ready(s);
    let p = unique_prefix("away").to_lowercase();
    let u = s.user(&p);
    let fwd = forwarder(s, bot);
    let d = router(s, &fwd, &p, "routes: []\n", bot);
    scenario(s, &d, &p, &u, "away_before");
    write_atomic(
        &d.routes_dir().join("pubsub.yaml"),
        &AWAY.replace("PFX", &p),
    );
    wait_until(
        Duration::from_secs(15),
        "the first subscription's fetch",
        || {
            d.log()
                .contains("first subscription to PubSub node")
                .then_some(())
        },
    );
    wait_until(Duration::from_secs(15), "old-2 caught up", || {
        (counter(&d, "received") == 1).then_some(())
    });
    fwd.refuse(true);
    fwd.cut();
    wait_until(Duration::from_secs(15), "link lost", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] != "connected").then_some(())
    });
    if bot {
        s.close_session(BOT);
    }
    scenario(s, &d, &p, &u, "away_publish");
    fwd.refuse(false);
    wait_until(Duration::from_secs(30), "missed items delivered", || {
        (counter(&d, "received") == 4).then_some(())
    });
    assert!(counter(&d, "reconnects") >= 1);
    assert!(
        d.log().contains(
            "delivering items of a PubSub node published while the link was not subscribed"
        ),
        "{}",
        d.log()
    );
    scenario(s, &d, &p, &u, "away_check");
    assert_eq!(counter(&d, "received"), 5, "{}", d.log());
}

/// As [`items_published_while_away`], across a restart of the router (SIGTERM, then
/// started again over the same data directory) instead of a cut connection: after the
/// first subscription's catch_up (old-2), two items are published while the router is
/// stopped; once it is back, they are delivered once, in order, before a live one, and
/// nothing delivered (or skipped) before the restart comes again. So what the link
/// delivered from the node was kept in the router's store.
fn items_published_while_stopped(s: &Server, bot: bool) {
    let _l = s.lock();
    pubsub_ready(s);
    let p = unique_prefix("stopped").to_lowercase();
    let u = s.user(&p);
    let fwd = forwarder(s, bot);
    let mut d = router(s, &fwd, &p, "routes: []\n", bot);
    scenario(s, &d, &p, &u, "away_before");
    write_atomic(
        &d.routes_dir().join("pubsub.yaml"),
        &AWAY.replace("PFX", &p),
    );
    wait_until(Duration::from_secs(15), "old-2 caught up", || {
        (counter(&d, "received") == 1).then_some(())
    });
    scenario(s, &d, &p, &u, "restart_drained");
    d.signal("TERM");
    wait_until(Duration::from_secs(20), "the router stopped", || {
        d.child.try_wait().unwrap().map(|_| ())
    });
    let (stomp, mqtt) = (d.addr("stomp").port(), d.addr("mqtt").port());
    let cfg = d.routes_dir().parent().unwrap().join("switchboard.yaml");
    let cfg = cfg.display().to_string();
    d = d.kill_change_restart(
        |_| {
            // The router is down: its ports only fill the scenario's arguments.
            let out = Command::new(python())
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/py/pubsub_scenarios.py"
                ))
                .args([
                    "--port",
                    &stomp.to_string(),
                    "--mqtt-port",
                    &mqtt.to_string(),
                ])
                .args(["--prefix", &p, "--jid", &u.0, "--password", &u.1])
                .args(["--c2s-port", &s.c2s.to_string()])
                .args(["--timeout", "15", "restart_publish"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "restart_publish failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        },
        &["--config", &cfg],
    );
    wait_until(Duration::from_secs(30), "missed items delivered", || {
        (counter(&d, "received") == 2).then_some(())
    });
    assert!(
        d.current_log()
            .contains("restored what this link delivered from the PubSub node"),
        "{}",
        d.log()
    );
    scenario(s, &d, &p, &u, "restart_check");
    assert_eq!(counter(&d, "received"), 3, "{}", d.log());
}

fn component_items_published_while_the_router_was_stopped_are_delivered_once_in_order(s: &Server) {
    items_published_while_stopped(s, false);
}

fn bot_items_published_while_the_router_was_stopped_are_delivered_once_in_order(s: &Server) {
    items_published_while_stopped(s, true);
}

fn component_items_published_while_away_are_delivered_once_in_order(s: &Server) {
    items_published_while_away(s, false);
}

fn bot_items_published_while_away_are_delivered_once_in_order(s: &Server) {
    items_published_while_away(s, true);
}

const RETRACT: &str = r#"
routes:
  - name: PFX-ret
    from: {xmpp: {link: im, pubsub: {service: pubsub.localhost, node: "PFX-cmd", retractions: true}}}
    to: [{stomp: /queue/PFX.ret}]
  - name: PFX-plain
    from: {xmpp: {link: im, pubsub: {service: pubsub.localhost, node: "PFX-cmd"}}}
    to: [{stomp: /queue/PFX.plain}]
"#;

/// A retraction reaches the route asking for them (empty body, the item id) and not
/// the other route of the same node.
fn retractions_reach_the_routes_asking_for_them(s: &Server) {
    let _l = s.lock();
    pubsub_ready(s);
    let p = unique_prefix("ret").to_lowercase();
    let u = s.user(&p);
    let fwd = forwarder(s, false);
    let d = router(s, &fwd, &p, "routes: []\n", false);
    scenario(s, &d, &p, &u, "create_node");
    write_atomic(
        &d.routes_dir().join("pubsub.yaml"),
        &RETRACT.replace("PFX", &p),
    );
    wait_until(Duration::from_secs(15), "subscribed", || {
        d.log().contains("subscribed to PubSub node").then_some(())
    });
    scenario(s, &d, &p, &u, "retract");
}

const PEP: &str = r#"
routes:
  - name: PFX-pep
    from: {xmpp: {link: im, pubsub: {service: "USER", node: "PFX-pep", catch_up: 1}}}
    to: [{stomp: /queue/PFX.pep}]
"#;

/// A user's PEP node read by a bot in their roster (mutual presence subscription, as
/// the default access model `presence` asks): the route exists before the node, so the
/// subscription is refused and asked again; once the user published pep-1 (creating
/// the node), the subscription succeeds and `catch_up: 1` delivers it; pep-2 comes live.
fn bot_reads_a_users_pep_node(s: &Server) {
    let _l = s.lock();
    let p = unique_prefix("pep").to_lowercase();
    let u = s.user(&p);
    let (bot, _) = s.user(&format!("{p}-bot"));
    let fwd = forwarder(s, true);
    let d = router_via(s, &fwd, &p, &PEP.replace("USER", &u.0), Some(&bot));
    let run = |name: &str, extra: &[&str]| {
        scenario_with(s, &d, &p, &u, name, &[&["--bot", &bot][..], extra].concat())
    };
    // Refused while the node does not exist (Prosody: `forbidden`, ejabberd:
    // `item-not-found`), and logged so.
    wait_until(Duration::from_secs(15), "the refusal logged", || {
        d.log()
            .lines()
            .any(|l| l.contains("cannot subscribe to PubSub node") && l.contains(&u.0))
            .then_some(())
    });
    run("pep_roster", &[]);
    run("pep_publish", &["pep-1"]);
    wait_until(Duration::from_secs(30), "pep-1 caught up", || {
        (counter(&d, "received") == 1).then_some(())
    });
    run("pep_publish", &["pep-2"]);
    run("pep_check", &[]);
}
