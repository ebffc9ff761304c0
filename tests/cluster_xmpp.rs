//! Cluster mode, the XMPP link (issue 22, "Proof"): a server takes one component
//! connection per domain, so of three routers on the NATS rig exactly one holds the
//! link's lease (`GET /cluster` shows it) and runs the link; the others are on standby
//! (`GET /links`). The holder is killed (-9) while a slixmpp user chats through the
//! link, is pushed alerts and sits in a room with the router
//! (tests/py/cluster_xmpp.py): another router takes the lease and connects, rejoins the
//! room, knows the presence subscriptions, and every chat sent after the move arrives;
//! what the moment of death costs is measured and printed.
//!
//! Runs under Prosody's exclusive lock (one component connection for the domain at a
//! time, as in tests/xmpp.rs) and a `cluster.prefix` no other run uses.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::{Buckets, URLS, WAIT, router_on, run_prefix, run_scenario};
use common::xmpp_server::PROSODY;
use common::{Daemon, http_json, peer_lock, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The routes, pushed to the cluster: chats to echo@ land in a shared queue, alerts@
/// pushes a topic to its subscribers, presence events go to a topic, the room and a
/// topic exchange messages, and a queue feeds headlines to the user.
const ROUTES: &str = r#"
routes:
  - name: PFX-chats
    from: {xmpp: {link: im, jid: "echo@bridge.localhost"}}
    to: [{stomp: /queue/PFX.chats}]
  - name: PFX-alerts
    from: {xmpp: {link: im, jid: "alerts@bridge.localhost"}}
    to: [{topic: PFX.alerts}]
  - name: PFX-presence
    from: {xmpp: {link: im, presence: "*@localhost"}}
    to: [{topic: "PFX.presence.{1}"}]
  - name: PFX-room-in
    from: {xmpp: {link: im, jid: "ops-bot@bridge.localhost"}}
    to: [{topic: PFX.room}]
  - name: PFX-room-out
    from: {topic: PFX.say}
    to: [{xmpp: {link: im, to: "PFX@conference.localhost", from: "ops-bot@bridge.localhost", type: groupchat}}]
  - name: PFX-notify
    from: {stomp: /queue/PFX.notify}
    to: [{xmpp: {link: im, to: "{header:user}", from: "notify@bridge.localhost", type: chat}}]
"#;

/// The link's settings (the same on every router).
fn link_settings(p: &str) -> String {
    format!(
        "{}      secret: bridgesecret\n      reconnect_initial: 100ms\n      reconnect_max: 1s\n      rooms:\n        - {{room: \"{p}@conference.localhost\", nick: switchboard, jid: ops-bot@bridge.localhost}}\n",
        PROSODY.link()
    )
}

/// `switchboard routes push` of `ROUTES` for run `p`.
fn push_routes(dir: &Path, p: &str, settings: &str) {
    let routes = dir.join("routes");
    std::fs::create_dir_all(&routes).unwrap();
    std::fs::write(routes.join("xmpp.yaml"), ROUTES.replace("PFX", p)).unwrap();
    let config = dir.join("switchboard.yaml");
    std::fs::write(
        &config,
        format!("cluster:\n  prefix: {p}_\n  replicas: 3\n{settings}"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["routes", "push"])
        .arg(&routes)
        .args(["--cluster", URLS, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "routes push: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lease's holder as router `d` sees it in `GET /cluster`.
fn holder(d: &Daemon) -> Option<String> {
    let (_, v) = http_json(d.addr("admin"), "GET", "/cluster");
    v["leases"]
        .as_array()?
        .iter()
        .find(|l| l["lease"] == "xmpp:bridge.localhost")
        .and_then(|l| l["holder"].as_str())
        .map(str::to_owned)
}

fn link_state(d: &Daemon) -> (String, Option<String>) {
    let (_, v) = http_json(d.addr("admin"), "GET", "/links");
    (
        v[0]["state"].as_str().unwrap_or_default().to_owned(),
        v[0]["held_by"].as_str().map(str::to_owned),
    )
}

#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs the NATS rig, Prosody and Python: run scripts/test"
)]
fn the_xmpp_link_moves_to_another_router_when_its_holder_dies() {
    let _prosody = PROSODY.lock();
    let _nats = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("xl");
    let p = prefix.trim_end_matches('_').to_owned();
    let _buckets = Buckets(prefix.clone());
    let user = PROSODY.user(&p);
    let settings = link_settings(&p);
    let work = tempfile::tempdir().unwrap();
    push_routes(work.path(), &p, &settings);
    let routers: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|n| router_on(URLS, n, &prefix, &settings))
        .collect();

    // Exactly one router runs the link; the others say who does.
    let held = wait_until(WAIT, "one router holding the XMPP link", || {
        let h = holder(&routers[0])?;
        let i = (b'a'..=b'c').position(|n| h == char::from(n).to_string())?;
        (link_state(&routers[i]).0 == "connected").then_some(i)
    });
    let node = char::from(b'a' + held as u8).to_string();
    for (i, d) in routers.iter().enumerate() {
        if i != held {
            wait_until(WAIT, "the others on standby", || {
                (link_state(d) == ("standby".into(), Some(node.clone()))).then_some(())
            });
            assert_eq!(holder(d).as_deref(), Some(node.as_str()));
        }
    }

    let ports = |l: &str| {
        routers
            .iter()
            .map(|d| d.addr(l).port().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let args: Vec<String> = [
        "--prefix",
        &p,
        "--jid",
        &user.0,
        "--password",
        &user.1,
        "--c2s-port",
        &PROSODY.c2s.to_string(),
        "--stomp-ports",
        &ports("stomp"),
        "--admin-ports",
        &ports("admin"),
        "--holder",
        &held.to_string(),
        "--holder-pid",
        &routers[held].child.id().to_string(),
        "--timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run_scenario("cluster_xmpp.py", &args, "failover", &routers);

    // A new holder among the survivors, which the third one names.
    let survivors: Vec<&Daemon> = routers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != held)
        .map(|(_, d)| d)
        .collect();
    let new = holder(survivors[0]).expect("a new holder");
    assert_ne!(new, node, "the dead router cannot hold the lease");
    for d in &survivors {
        let (state, by) = link_state(d);
        assert!(
            (state == "connected" && by.is_none())
                || (state == "standby" && by == Some(new.clone())),
            "{state} {by:?}"
        );
    }
}

/// A holder that cannot reach the XMPP server steps aside: router A (configured with an
/// address where no server listens) takes the lease first, fails to connect three
/// times, and leaves it to B, which connects; A is then on standby naming B.
#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs the NATS rig, Prosody and Python: run scripts/test"
)]
fn a_holder_that_cannot_reach_the_server_steps_aside_for_another_router() {
    let _prosody = PROSODY.lock();
    let _nats = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("xs");
    let p = prefix.trim_end_matches('_').to_owned();
    let _buckets = Buckets(prefix.clone());
    let settings = link_settings(&p);
    let work = tempfile::tempdir().unwrap();
    push_routes(work.path(), &p, &settings);
    // A port nothing listens on: bound, then closed.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = settings.replace(&PROSODY.component_addr(), &nowhere.to_string());
    let a = router_on(URLS, "a", &prefix, &unreachable);
    // A holds the lease only while it fails its three attempts (under a second): its
    // log says it took it, which a poll of `GET /cluster` could miss on a loaded machine.
    let deadline = std::time::Instant::now() + WAIT;
    while !a
        .log()
        .contains("cluster: lease taken; this router holds it")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "A never took the lease: {}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let b = router_on(URLS, "b", &prefix, &settings);
    wait_until(WAIT, "B connected, holding the lease", || {
        (holder(&b).as_deref() == Some("b") && link_state(&b).0 == "connected").then_some(())
    });
    wait_until(WAIT, "A on standby naming B", || {
        (link_state(&a) == ("standby".into(), Some("b".into()))).then_some(())
    });
    assert!(
        a.log().contains(
            "link cannot connect from this router; letting another router of the cluster try"
        ),
        "{}",
        a.log()
    );
}

/// A bot link (`xmpp_client`) in a cluster: a server keeps one session per account and
/// resource, so one router at a time logs in, the holder of the lease
/// `xmpp_client:JID`; the other is on standby. When the holder dies (-9), the other
/// takes the lease, logs in, and the bot chats both ways through it.
#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs the NATS rig, Prosody and Python: run scripts/test"
)]
fn a_bot_link_is_run_by_one_router_and_moves_when_it_dies() {
    let _prosody = PROSODY.lock();
    let _nats = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("xb");
    let p = prefix.trim_end_matches('_').to_lowercase();
    let _buckets = Buckets(prefix.clone());
    let user = PROSODY.user(&p);
    let (bot, _) = PROSODY.user(&format!("{p}-bot"));
    let cert = format!(
        "{}/certs/localhost.crt",
        std::env::var("PROSODY_DIR").unwrap_or_else(|_| "/tmp/prosody-test".into())
    );
    let settings = format!(
        "links:\n  bot:\n    xmpp_client:\n      jid: {bot}\n      password: pw\n      server: \"127.0.0.1:{}\"\n      ca_file: {cert}\n      reconnect_initial: 100ms\n      reconnect_max: 1s\n",
        PROSODY.c2s
    );
    let routes = format!(
        "routes:\n  - name: {p}-in\n    from: {{xmpp: {{link: bot, jid: \"{bot}\"}}}}\n    to: [{{stomp: /queue/{p}.inbox}}]\n  - name: {p}-say\n    from: {{stomp: /queue/{p}.say}}\n    to: [{{xmpp: {{link: bot, to: \"{{header:user}}\", type: chat}}}}]\n"
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("routes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bot.yaml"), routes).unwrap();
    let config = work.path().join("switchboard.yaml");
    std::fs::write(
        &config,
        format!("cluster:\n  prefix: {prefix}\n  replicas: 3\n{settings}"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["routes", "push"])
        .arg(&dir)
        .args(["--cluster", URLS, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut routers: Vec<Daemon> = ["a", "b"]
        .iter()
        .map(|n| router_on(URLS, n, &prefix, &settings))
        .collect();
    let lease = format!("xmpp_client:{bot}");
    let holder_of = |d: &Daemon| {
        let (_, v) = http_json(d.addr("admin"), "GET", "/cluster");
        v["leases"]
            .as_array()?
            .iter()
            .find(|l| l["lease"] == lease.as_str())
            .and_then(|l| l["holder"].as_str())
            .map(str::to_owned)
    };
    let held = wait_until(WAIT, "one router running the bot", || {
        let h = holder_of(&routers[0])?;
        let i = ["a", "b"].iter().position(|n| *n == h)?;
        (link_state(&routers[i]).0 == "connected").then_some(i)
    });
    let other = 1 - held;
    let node = ["a", "b"][held].to_owned();
    wait_until(WAIT, "the other on standby", || {
        (link_state(&routers[other]) == ("standby".into(), Some(node.clone()))).then_some(())
    });
    routers[held].child.kill().unwrap();
    routers[held].child.wait().unwrap();
    let survivor = &routers[other];
    wait_until(Duration::from_secs(30), "the survivor logged in", || {
        (holder_of(survivor).as_deref() == Some(["a", "b"][other])
            && link_state(survivor).0 == "connected")
            .then_some(())
    });
    let args: Vec<String> = [
        "--port",
        &survivor.addr("stomp").port().to_string(),
        "--admin-port",
        &survivor.addr("admin").port().to_string(),
        "--prefix",
        &p,
        "--jid",
        &user.0,
        "--password",
        &user.1,
        "--bot",
        &bot,
        "--timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run_scenario("xmpp_client_scenarios.py", &args, "chat", &routers);
}
