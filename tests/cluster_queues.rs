//! Cluster mode, shared queues and topics (issue 21, "Proof"): three routers A, B and C
//! over the 3-node NATS JetStream rig (scripts/peers/nats-ctl.sh), real STOMP and MQTT
//! clients (tests/py/cluster_shared.py, which checks message ids end to end):
//!
//! - competing consumers on B and C share a queue A publishes to: each message once;
//! - B dies (kill -9) holding unacknowledged messages: C gets them, flagged, within 10 s;
//! - MQTT QoS 1 from A reaches subscribers on every router once, in order;
//! - a durable STOMP subscription made on B outlives B and is resumed on A;
//! - NATS nodes die under a persistent stream: one down, publishing goes on; two down,
//!   publishes are refused; one back, they are confirmed again; nothing confirmed is lost;
//! - MQTT retained messages are the cluster's (issue 22; paho steps in
//!   tests/py/cluster_retained.py): set on A, read on C, still read on B, C and a new
//!   router after A's death; cleared on B, gone on C; the byte limit holds cluster-wide.
//!
//! Each test runs under a `cluster.prefix` no other run uses; [`Buckets`] deletes its
//! streams and buckets when it ends. The NATS outage test holds the rig alone (the
//! others share it) and always brings the nodes it stopped back ([`NatsNodes`]).

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::{Buckets, URLS, router_on, run_prefix, run_scenario, three_routers};
use common::{Daemon, http_json, password_hash, peer_lock, python, python_scenario, wait_until};

const NATS_CTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/nats-ctl.sh");

/// Runs `tests/py/cluster_shared.py SCENARIO` against routers A, B, C (in that order)
/// and asserts it passed; returns what it printed. On failure, the message carries every
/// router's log.
fn scenario(routers: &[Daemon], prefix: &str, name: &str, extra: &[&str]) -> String {
    let [a, b, c] = routers else {
        panic!("three routers")
    };
    let port = |d: &Daemon, l: &str| d.addr(l).port().to_string();
    let mut args: Vec<String> = [
        "--port",
        &port(a, "stomp"),
        "--b-stomp",
        &port(b, "stomp"),
        "--c-stomp",
        &port(c, "stomp"),
        "--mqtt-a",
        &port(a, "mqtt"),
        "--mqtt-b",
        &port(b, "mqtt"),
        "--mqtt-c",
        &port(c, "mqtt"),
        "--prefix",
        prefix,
        "--timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    run_scenario("cluster_shared.py", &args, name, routers)
}

fn pid(d: &Daemon) -> String {
    d.child.id().to_string()
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn competing_consumers_on_two_routers_get_each_message_once() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qc");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    scenario(&routers, &prefix, "compete", &["--count", "300"]);
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_killed_router_s_unacked_messages_are_redelivered_elsewhere_within_10_s() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qr");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    scenario(
        &routers,
        &prefix,
        "redeliver",
        &["--kill-pid", &pid(&routers[1])],
    );
}

/// A subscription confirmed (MQTT SUBACK, STOMP RECEIPT) is in force on every router:
/// a publish made on another router right after it reaches it (no probe).
#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_confirmed_subscription_is_in_force_on_every_router() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qf");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    scenario(&routers, &prefix, "in_force", &[]);
}

/// Issue 22: an MQTT `$share` group with members on A and C shares one group.
#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_shared_subscription_group_spans_routers() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qs");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    scenario(&routers, &prefix, "share", &["--count", "200"]);
}

/// Issue 22: a STOMP request/reply whose requester (its temporary queue) is on A and
/// whose responder is on C.
#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_reply_to_a_temporary_queue_crosses_routers() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qy");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    scenario(&routers, &prefix, "reply", &["--count", "50"]);
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn mqtt_qos1_publishes_reach_subscribers_on_every_router_once() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qm");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    scenario(&routers, &prefix, "mqtt_topic", &["--count", "200"]);
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_durable_subscription_outlives_its_router_and_resumes_on_another() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qd");
    let _buckets = Buckets(prefix.clone());
    // A configured user: the durable subscription is the user's, resumed under the same login.
    let users = format!(
        "auth:\n  users:\n    alice:\n      password_hash: \"{}\"\n",
        password_hash("pw")
    );
    let routers = three_routers(&prefix, &users);
    scenario(
        &routers,
        &prefix,
        "durable",
        &[
            "--kill-pid",
            &pid(&routers[1]),
            "--user",
            "alice",
            "--password",
            "pw",
        ],
    );
}

/// Starts every rig node that is down when dropped, then waits until all three run and
/// agree on a JetStream meta leader: the outage test leaves the rig as it found it, even
/// when it fails half-way.
struct NatsNodes;

impl Drop for NatsNodes {
    fn drop(&mut self) {
        let out = nats_ctl("start");
        eprintln!("nats-ctl start: {out}");
        wait_until(
            Duration::from_secs(60),
            "3 NATS nodes up with one meta leader",
            || {
                let status = nats_ctl("status");
                let leaders: Vec<&str> = status
                    .lines()
                    .filter(|l| l.contains(" up "))
                    .filter_map(|l| l.split("meta leader: ").nth(1))
                    .map(str::trim)
                    .collect();
                (leaders.len() == 3
                    && leaders[0] != "none"
                    && leaders.iter().all(|l| *l == leaders[0]))
                .then_some(())
            },
        );
    }
}

/// `mqtt.max_retained_bytes` of the retained test's routers: a few messages fill it.
const MAX_RETAINED_BYTES: u64 = 4096;

/// Bytes of retained messages the router holds (`GET /memory`, `held.retained`).
fn retained_bytes(d: &Daemon) -> u64 {
    let (status, v) = http_json(d.addr("admin"), "GET", "/memory");
    assert_eq!(status, 200, "{v}");
    v["held"]["retained"].as_u64().unwrap()
}

/// Waits until `d` holds as many bytes of retained messages as `like` (and not 0): the
/// change `like` made has reached `d`'s mirror. Returns the count.
fn converged(d: &Daemon, like: &Daemon, what: &str) -> u64 {
    wait_until(Duration::from_secs(20), what, || {
        let want = retained_bytes(like);
        (want > 0 && retained_bytes(d) == want).then_some(want)
    })
}

/// A retained QoS 1 publish on `d` (an empty payload clears), answered with reason code
/// `code` (success when `None`).
fn set_retained(d: &Daemon, topic: &str, payload: &str, code: Option<u8>) {
    let code = code.map(|c| format!("{c:#x}"));
    let mut extra = vec![topic, payload];
    if let Some(c) = &code {
        extra.extend(["--code", c]);
    }
    python_scenario(d, "cluster_retained.py", "mqtt", "set", &extra);
}

/// A new subscriber to `r/#` on `d` gets exactly `expected` (topic, payload) as retained
/// messages, each flagged retained.
fn read_retained(d: &Daemon, expected: &[(&str, &str)]) {
    let expected: Vec<String> = expected.iter().map(|(t, p)| format!("{t}={p}")).collect();
    let mut extra = vec!["r/#", "--marker", "r/live"];
    for e in &expected {
        extra.extend(["--expect", e.as_str()]);
    }
    python_scenario(d, "cluster_retained.py", "mqtt", "read", &extra);
}

/// Retained messages live in `<prefix>SB_RETAINED`, mirrored by every router; the
/// mirrors are compared through `GET /memory`.
#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn retained_messages_are_the_clusters_and_outlive_the_router_that_set_them() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qt");
    let _buckets = Buckets(prefix.clone());
    let extra = format!("mqtt:\n  max_retained_bytes: {MAX_RETAINED_BYTES}\n");
    let mut routers = three_routers(&prefix, &extra);
    let c = routers.pop().unwrap();
    let b = routers.pop().unwrap();
    let mut a = routers.pop().unwrap();

    // Set on A (PUBACK received), read on C.
    let x = "x".repeat(100);
    set_retained(&a, "r/x", &x, None);
    converged(&c, &a, "A's retained message mirrored on C");
    read_retained(&c, &[("r/x", &x)]);
    assert_eq!(retained_bytes(&b), retained_bytes(&a));

    // The byte limit, cluster-wide: A fills it, C is refused more.
    let fill = "f".repeat(3000);
    set_retained(&a, "r/fill", &fill, None);
    let full = converged(&c, &a, "A's second retained message mirrored on C");
    assert!(full + 1000 > MAX_RETAINED_BYTES, "{full} bytes retained");
    set_retained(&c, "r/z", &"z".repeat(1000), Some(0x97));
    assert_eq!(
        retained_bytes(&c),
        full,
        "a refused message is not retained"
    );
    read_retained(&c, &[("r/x", &x), ("r/fill", &fill)]);
    // Replacing a topic with less is taken (the refusal was the byte limit's).
    set_retained(&c, "r/fill", "f", None);
    let after = converged(&a, &c, "C's replacement mirrored on A");
    assert!(after < full, "{after} < {full}");
    read_retained(&a, &[("r/x", &x), ("r/fill", "f")]);

    // A dies: what it set stays, for every router, even one started afterwards.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    read_retained(&b, &[("r/x", &x), ("r/fill", "f")]);
    read_retained(&c, &[("r/x", &x), ("r/fill", "f")]);
    let d = router_on(URLS, "d", &prefix, &extra);
    assert_eq!(
        retained_bytes(&d),
        after,
        "a router started later mirrors the retained messages before serving:\n{}",
        d.log()
    );
    read_retained(&d, &[("r/x", &x), ("r/fill", "f")]);

    // Cleared on B, then a marker set: C has the marker, so the clear before it too.
    set_retained(&b, "r/x", "", None);
    set_retained(&b, "r/m", "marker", None);
    converged(&c, &b, "B's clear and marker mirrored on C");
    read_retained(&c, &[("r/fill", "f"), ("r/m", "marker")]);
    read_retained(&d, &[("r/fill", "f"), ("r/m", "marker")]);

    let (_, v) = http_json(b.addr("admin"), "GET", "/cluster");
    assert_eq!(
        v["buckets"]["retained"],
        format!("{prefix}SB_RETAINED"),
        "{v}"
    );
}

fn nats_ctl(cmd: &str) -> String {
    let out = Command::new(NATS_CTL)
        .arg(cmd)
        .env("SWITCHBOARD_PYTHON", python())
        .output()
        .expect("run nats-ctl.sh");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn losing_nats_nodes_never_loses_a_confirmed_message() {
    let _lock = peer_lock("nats", true, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("qn");
    // Dropped in reverse: the routers first, then the nodes restarted, then the streams
    // deleted (which needs the nodes back).
    let _buckets = Buckets(prefix.clone());
    let _nodes = NatsNodes;
    let routers = three_routers(&prefix, "");
    scenario(&routers, &prefix, "nats_outage", &["--nats-ctl", NATS_CTL]);
}
