//! The AMQP link run by every router of a cluster (issue 22): three routers on the NATS
//! rig (scripts/peers/nats-ctl.sh), each with the link `rabbit` to the one RabbitMQ on
//! 127.0.0.1:5672, routes pushed to the cluster (`switchboard routes push`). pika is the
//! independent AMQP peer, stomp.py the router side (tests/py/cluster_amqp.py).
//!
//! - The links' topology is declared once per change (a marker in the cluster's
//!   `SB_LINKS` bucket), not by every router: counted in the routers' logs.
//! - RabbitMQ restarted mid-stream, then a router killed (-9) mid-stream: 0 confirmed
//!   messages lost either way, duplicates counted, and more than one router's link
//!   carried messages.
//!
//! Names in RabbitMQ and the cluster carry a prefix unique to the run. The RabbitMQ lock
//! is tests/amqp.rs's: shared, or exclusive for the test that restarts RabbitMQ.

mod common;

use std::path::Path;
use std::process::Command;

use common::cluster::{Buckets, URLS, WAIT, run_prefix, run_scenario, settings_with};
use common::{Daemon, http_json, peer_lock, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const CTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/rabbitmq-ctl.sh");

/// The link every router runs.
const LINK: &str = "links:
  rabbit:
    amqp:
      uri: \"amqp://guest:guest@127.0.0.1:5672/%2f\"
      reconnect_initial: 100ms
      reconnect_max: 1s
";

fn locks(rabbit_exclusive: bool) -> (common::PeerLock, common::PeerLock) {
    let nats = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let rabbit = peer_lock(
        "rabbitmq",
        rabbit_exclusive,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    (nats, rabbit)
}

/// Routers A, B, C with the link, each connected to RabbitMQ.
fn routers(prefix: &str) -> Vec<Daemon> {
    let routers = common::cluster::three_routers(prefix, LINK);
    for d in &routers {
        wait_until(WAIT, "AMQP link connected", || {
            let (_, v) = http_json(d.addr("admin"), "GET", "/links");
            (v[0]["state"] == "connected").then_some(())
        });
    }
    routers
}

/// Pushes `routes` (`P` replaced by `p`) to the cluster and waits until every router
/// runs it.
fn push(work: &Path, prefix: &str, p: &str, routes: &str, routers: &[Daemon]) {
    let n = std::fs::read_dir(work).unwrap().count();
    let top = work.join(format!("push{n}"));
    let dir = top.join("routes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("amqp.yaml"), routes.replace('P', p)).unwrap();
    let config = settings_with(&top, prefix, LINK);
    let out = Command::new(BIN)
        .args(["routes", "push"])
        .arg(&dir)
        .args(["--cluster", URLS, "--config", &config])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "push: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: u64 = text.trim().rsplit(' ').next().unwrap().parse().unwrap();
    for d in routers {
        wait_until(WAIT, "the pushed table", || {
            let (_, v) = http_json(d.addr("admin"), "GET", "/routes");
            (v["status"]["version"].as_u64() == Some(version)).then_some(())
        });
    }
}

/// How many times `line` is in the logs of `routers`.
fn count(routers: &[Daemon], line: &str) -> usize {
    routers.iter().map(|d| d.log().matches(line).count()).sum()
}

const DECLARED: &str = "AMQP topology declared";
const IN_PLACE: &str = "AMQP topology is in place";

/// Waits until every router has settled the topology `rounds` times (declared it or
/// found it in place), then says how many declarations there were in all.
fn declarations_after(routers: &[Daemon], rounds: usize) -> usize {
    wait_until(WAIT, "each router settled the topology", || {
        (count(routers, DECLARED) + count(routers, IN_PLACE) >= rounds * routers.len())
            .then_some(())
    });
    count(routers, DECLARED)
}

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new(CTL).arg("ctl").args(args).output().unwrap();
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn queue_exists(name: &str) -> bool {
    rabbitmqctl(&["list_queues", "-q", "name"])
        .lines()
        .any(|l| l.trim() == name)
}

const TOPOLOGY: &str = r#"
routes:
  - name: P-in
    from: {amqp: {link: rabbit, queue: P.in}}
    to: [{queue: P.in_out}]
    declare:
      exchanges:
        - {name: P.x, type: topic, durable: false, auto_delete: true}
      queues:
        - {name: P.in, durable: false, arguments: {x-expires: 600000}}
      bindings:
        - {exchange: P.x, queue: P.in, routing_key: "k.#"}
  - name: P-plain
    from: {queue: P.a}
    to: [{queue: P.b}]
"#;

#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs NATS, RabbitMQ and Python: run scripts/test"
)]
fn topology_is_declared_once_per_change_not_once_per_router() {
    let _locks = locks(false);
    let prefix = run_prefix("at");
    let _buckets = Buckets(prefix.clone());
    let p = common::unique_prefix("at");
    let work = tempfile::tempdir().unwrap();
    let routers = routers(&prefix);

    // Three routers see the first table: one declares, two find it in place.
    push(work.path(), &prefix, &p, TOPOLOGY, &routers);
    assert_eq!(declarations_after(&routers, 1), 1, "first table");
    assert!(queue_exists(&format!("{p}.in")));

    // A table that changes the topology (one queue more): declared once again.
    let more = TOPOLOGY.replace(
        "arguments: {x-expires: 600000}}\n",
        "arguments: {x-expires: 600000}}\n        - {name: P.in2, durable: false, arguments: {x-expires: 600000}}\n",
    );
    push(work.path(), &prefix, &p, &more, &routers);
    assert_eq!(declarations_after(&routers, 2), 2, "a changed topology");
    assert!(queue_exists(&format!("{p}.in2")));

    // A table that changes nothing for the link: nothing declared.
    let other = more.replace("to: [{queue: P.b}]", "to: [{queue: P.c}]");
    push(work.path(), &prefix, &p, &other, &routers);
    assert_eq!(declarations_after(&routers, 3), 2, "an unchanged topology");

    // RabbitMQ lost a queue: the next check finds it missing; one router declares again.
    rabbitmqctl(&["delete_queue", &format!("{p}.in2")]);
    let again = other.replace("to: [{queue: P.c}]", "to: [{queue: P.d}]");
    push(work.path(), &prefix, &p, &again, &routers);
    assert_eq!(declarations_after(&routers, 4), 3, "a lost queue");
    assert!(queue_exists(&format!("{p}.in2")));
    assert!(count(&routers, "missing in RabbitMQ; declaring it again") >= 1);
    for d in &routers {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        assert_eq!(v[0]["state"], "connected", "{v}");
    }
    rabbitmqctl(&["delete_queue", &format!("{p}.in")]);
    rabbitmqctl(&["delete_queue", &format!("{p}.in2")]);
}

const FLOW: &str = r#"
routes:
  - name: P-fi
    from: {amqp: {link: rabbit, queue: P.fi}}
    to: [{stomp: /queue/P.fi_out}]
    declare:
      exchanges:
        # Transient: a restarted RabbitMQ has lost it, so the topology is declared again.
        - {name: P.fx, type: fanout, durable: false}
      queues:
        - {name: P.fi, durable: true, arguments: {x-expires: 600000}}
        - {name: P.fo, durable: true, arguments: {x-expires: 600000}}
      bindings:
        - {exchange: P.fx, queue: P.fo}
  - name: P-fo
    from: {stomp: /queue/P.fo_in}
    to: [{amqp: {link: rabbit, routing_key: P.fo}}]
  - name: P-fm
    from: {mqtt: P/fo}
    to: [{amqp: {link: rabbit, routing_key: P.fo}}]
"#;

fn flow_args(routers: &[Daemon], p: &str) -> Vec<String> {
    let ports = |l: &str| {
        routers
            .iter()
            .map(|d| d.addr(l).port().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        "--port".into(),
        routers[0].addr("stomp").port().to_string(),
        "--timeout".into(),
        "30".into(),
        "--stomp".into(),
        ports("stomp"),
        "--mqtt".into(),
        ports("mqtt"),
        "--admin".into(),
        ports("admin"),
        "--prefix".into(),
        p.into(),
        "--ctl".into(),
        CTL.into(),
    ]
}

/// Issue 22's proof: the AMQP link on all three routers, RabbitMQ restarted mid-stream
/// (pika publishing with confirms into a queue every router's link consumes; STOMP
/// sends on every router routed out through the link), then router B killed (-9)
/// mid-stream: every confirmed message arrives both ways, and the messages B's link had
/// taken and not had confirmed are published by A's or C's.
#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs NATS, RabbitMQ and Python: run scripts/test"
)]
fn amqp_link_on_every_router_loses_nothing_confirmed() {
    let _locks = locks(true);
    let prefix = run_prefix("ar");
    let _buckets = Buckets(prefix.clone());
    let p = common::unique_prefix("ar");
    let work = tempfile::tempdir().unwrap();
    let routers = routers(&prefix);
    push(work.path(), &prefix, &p, FLOW, &routers);
    assert_eq!(declarations_after(&routers, 1), 1);
    let mut args = flow_args(&routers, &p);
    run_scenario("cluster_amqp.py", &args, "restart", &routers);
    // The restart lost the transient exchange: one router found it missing and declared
    // the topology again, the others found it in place.
    assert_eq!(declarations_after(&routers, 2), 2, "after the restart");
    assert!(count(&routers, "missing in RabbitMQ; declaring it again") >= 1);
    args.extend(["--kill-pid".into(), routers[1].child.id().to_string()]);
    run_scenario("cluster_amqp.py", &args, "kill", &routers);
    let _ = Command::new(CTL)
        .args(["ctl", "delete_queue", &format!("{p}.fi")])
        .output();
    let _ = Command::new(CTL)
        .args(["ctl", "delete_queue", &format!("{p}.fo")])
        .output();
}
