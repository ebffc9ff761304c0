//! The crash test of the durability issue, clustered (issue 22, "Proof"): three routers
//! over the 3-node NATS JetStream rig and RabbitMQ, under mixed persistent STOMP, MQTT and
//! AMQP load, killed with SIGKILL at random; nothing confirmed is lost, order holds as
//! docs/cluster.md documents it, duplicates are counted. The routers, the clients and the
//! kills are run by tests/py/cluster_crash.py; this test prepares the settings and the
//! route table, and cleans up the run's JetStream state ([`Buckets`]).

mod common;

use std::process::Command;

use common::cluster::{Buckets, URLS, run_prefix, settings_with};
use common::{BIN, peer_lock, python};

/// The AMQP link every router runs (as in tests/amqp.rs: quick reconnects).
fn link(p: &str) -> String {
    format!(
        r#"links:
  rabbit:
    amqp:
      uri: "amqp://127.0.0.1:5672/%2f"
      username: guest
      password_file: amqp.pw
      dead_letter: "{p}.dead"
      reconnect_initial: 100ms
      reconnect_max: 1s
"#
    )
}

/// RabbitMQ's `P.ain` into the shared queue `cc.a`; STOMP sends to `cc.o` out to
/// RabbitMQ's `P.aout` (pika declares both queues).
fn routes(p: &str) -> String {
    format!(
        r#"routes:
  - name: amqp-in
    from: {{amqp: {{link: rabbit, queue: {p}.ain}}}}
    to: [{{stomp: /queue/cc.a}}]
  - name: amqp-out
    from: {{stomp: /queue/cc.o}}
    to: [{{amqp: {{link: rabbit, routing_key: {p}.aout}}}}]
"#
    )
}

/// The last `n` lines of each router's log (the driver writes `DIR/x/x.log`).
fn log_tails(dir: &std::path::Path, n: usize) -> String {
    ["a", "b", "c"]
        .iter()
        .map(|r| {
            let log =
                std::fs::read_to_string(dir.join(r).join(format!("{r}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            format!(
                "\n===== router {r} log (last {n} lines) =====\n{}",
                lines[lines.len().saturating_sub(n)..].join("\n")
            )
        })
        .collect()
}

/// 20 `kill -9` of a random router (started again at once under a new node name, ready
/// by its ready file) while STOMP, MQTT 5 persistent sessions and AMQP (RabbitMQ through
/// every router's link, both ways) publish persistently: every confirmed message
/// (RECEIPT, PUBACK, RabbitMQ confirm) is received at least once; on each consumer
/// connection, unflagged messages of one producer come in publish order; STOMP and MQTT
/// redeliveries are flagged; sessions are present on every resumption.
#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs NATS, RabbitMQ and Python: run scripts/test"
)]
fn twenty_kill_9_of_random_routers_under_mixed_load_lose_no_confirmed_message() {
    let _nats = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let _rabbit = peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    let prefix = run_prefix("cx");
    let _buckets = Buckets(prefix.clone());
    let amqp = prefix.trim_end_matches('_').to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("amqp.pw"), "guest\n").unwrap();
    let config = settings_with(dir.path(), &prefix, &link(&amqp));
    let table = dir.path().join("table");
    std::fs::create_dir(&table).unwrap();
    std::fs::write(table.join("crash.yaml"), routes(&amqp)).unwrap();
    let pushed = Command::new(BIN)
        .args(["routes", "push"])
        .arg(&table)
        .args(["--cluster", URLS, "--config", &config])
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "routes push: {}{}",
        String::from_utf8_lossy(&pushed.stdout),
        String::from_utf8_lossy(&pushed.stderr)
    );

    let began = std::time::Instant::now();
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/cluster_crash.py"
        ))
        .args(["--bin", BIN, "--dir"])
        .arg(dir.path())
        .args([
            "--config",
            &config,
            "--cluster",
            URLS,
            "--amqp-prefix",
            &amqp,
        ])
        .args(["--kills", "20"])
        // A failure prints its seed: SWITCHBOARD_CRASH_SEED replays the same kills.
        .args(
            std::env::var("SWITCHBOARD_CRASH_SEED")
                .map(|s| vec!["--seed".to_string(), s])
                .unwrap_or_default(),
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "clustered crash test failed\nstdout:\n{stdout}\nstderr:\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        log_tails(dir.path(), 100)
    );
    println!("{stdout}driver ran {:.1} s", began.elapsed().as_secs_f64());
}
