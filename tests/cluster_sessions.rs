//! Cluster mode, MQTT persistent sessions (issue 22, "Proof"): three routers A, B and C
//! over the 3-node NATS JetStream rig (scripts/peers/nats-ctl.sh), paho-mqtt clients
//! (tests/py/cluster_mqtt_sessions.py, which checks message ids end to end):
//!
//! - a QoS 1 subscriber's persistent session on B, a publisher on A; B is killed (-9)
//!   mid-stream; the subscriber reconnects to C with the same client id and clean
//!   start 0: session present, every confirmed message arrives, what comes twice is
//!   flagged DUP, the first redelivery within 10 s of the kill;
//! - the same with QoS 2 (publisher and subscription): what paho held between PUBREC
//!   and PUBREL when B died comes again on C;
//! - QoS 2 deliveries whose PUBREL a raw-socket subscriber leaves unanswered when B is
//!   killed come again on C, flagged DUP (settled at PUBCOMP, not PUBREC); resumed and
//!   taken over on B, the PUBRELs come again and the messages do not; moved to C with
//!   B alive, B gives them back and C sends them (DUP);
//! - wills of clients on B, B killed: a will without delay and one with a 2 s delay
//!   arrive on A exactly once within a bound; none for clients back on C before their
//!   delay passed, none after a clean DISCONNECT;
//! - a session with expiry 3 s on B, B killed: its stream is deleted once the expiry
//!   ran, and a clean start 0 on C finds no session;
//! - two clients racing for one client id on A and C: exactly one keeps it, the other
//!   is disconnected with reason 0x8E (session taken over); a takeover from A to C keeps
//!   the session's subscription.
//!
//! Each test runs under a `cluster.prefix` no other run uses; [`Buckets`] deletes its
//! streams and buckets when it ends.

mod common;

use common::cluster::{Buckets, URLS, run_prefix, run_scenario, three_routers};
use common::{Daemon, peer_lock};

/// Runs `tests/py/cluster_mqtt_sessions.py SCENARIO` against routers A, B, C and
/// asserts it passed; on failure the message carries every router's log.
fn scenario(routers: &[Daemon], name: &str, extra: &[&str]) -> String {
    let [a, b, c] = routers else {
        panic!("three routers")
    };
    let port = |d: &Daemon| d.addr("mqtt").port().to_string();
    let mut args: Vec<String> = [
        "--port",
        &port(a),
        "--mqtt-b",
        &port(b),
        "--mqtt-c",
        &port(c),
        "--timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    run_scenario("cluster_mqtt_sessions.py", &args, name, routers)
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_persistent_session_resumes_on_another_router_after_its_router_is_killed() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("ms");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    let b = routers[1].child.id().to_string();
    scenario(&routers, "resume", &["--kill-pid", &b, "--count", "300"]);
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_qos2_persistent_session_resumes_on_another_router_after_its_router_is_killed() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("m2");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    let b = routers[1].child.id().to_string();
    scenario(
        &routers,
        "resume",
        &["--kill-pid", &b, "--count", "300", "--qos", "2"],
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn the_wills_of_a_killed_routers_clients_are_published_once_by_another() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("mw");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    let b = routers[1].child.id().to_string();
    scenario(
        &routers,
        "wills",
        &["--kill-pid", &b, "--logs", &logs(&routers)],
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_killed_routers_offline_session_expires_in_the_cluster() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("me");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    let b = routers[1].child.id().to_string();
    let client_id = format!("exp-{}", prefix.to_lowercase());
    scenario(
        &routers,
        "expiry",
        &[
            "--kill-pid",
            &b,
            "--logs",
            &logs(&routers),
            "--client-id",
            &client_id,
        ],
    );
    // The session's queue had a stream in JetStream (B opened it); it is gone now.
    let queue = format!("$mqtt.s.{client_id}");
    let log_b = routers[1].log();
    let stream = log_b
        .lines()
        .find(|l| l.contains("shared queue open") && l.contains(&queue))
        .and_then(|l| l.split("stream=").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("B did not open {queue} in the cluster:\n{log_b}"));
    assert!(
        !stream_exists(&stream),
        "stream {stream} of the expired session is still in JetStream"
    );
}

/// The routers' log files, comma-separated (the scenarios read them for events).
fn logs(routers: &[Daemon]) -> String {
    routers
        .iter()
        .map(|d| d.dir.path().join("daemon.log").display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether JetStream has the stream `name` now.
fn stream_exists(name: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(URLS.split(',').collect::<Vec<_>>())
            .await
            .expect("NATS");
        let js = async_nats::jetstream::new(client);
        js.get_stream(name).await.is_ok()
    })
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn two_clients_racing_for_one_client_id_on_two_routers_leave_exactly_one() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("mr");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    scenario(&routers, "race", &["--rounds", "5"]);
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_qos2_message_awaiting_pubcomp_when_its_router_is_killed_comes_again_on_another() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("mk");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    let b = routers[1].child.id().to_string();
    scenario(
        &routers,
        "pubrel-kill",
        &["--kill-pid", &b, "--count", "10"],
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn pubrels_resent_on_the_same_router_bring_no_duplicate_and_a_move_gives_their_messages_back() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = run_prefix("mp");
    let _buckets = Buckets(prefix.clone());
    let routers = three_routers(&prefix, "");
    scenario(&routers, "pubrel-resume", &["--count", "6"]);
}
