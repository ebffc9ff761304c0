//! MQTT session takeover across clustered routers (issue 22), not a test: how long a
//! persistent session's client waits, when it moves to another router, from losing its
//! router to the first message delivered by the new one.
//!
//! Three routers over the 3-node NATS JetStream rig (`scripts/peers/nats-ctl.sh`), one
//! publisher on router A sending a QoS 1 message every 2 ms to one topic, one MQTT
//! 3.1.1 subscriber with a persistent session (clean session 0) on that topic:
//!
//! - **client moves**: the subscriber drops its connection to one router (no
//!   DISCONNECT) and connects at once to another with the same client id; measured from
//!   the drop to the first PUBLISH on the new connection. `TAKEOVER_MOVES` (20) times,
//!   alternating B → C and C → B.
//! - **router killed**: the router serving the subscriber is killed (SIGKILL); the
//!   subscriber connects at once to another router; measured from the kill to the
//!   first PUBLISH there. `TAKEOVER_KILLS` (20) times, each on a router started for it
//!   (a fresh node name: a killed router's name stays taken for 6 s).
//!
//! Reported: p50, p99 (of 20 samples: the highest but none), lowest and highest.
//! The rig is shared with the cluster tests (their lock, held shared); the run's
//! streams and buckets are deleted at the end.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rmqtt_codec::types::QoS;
use rmqtt_codec::v3::Packet;

use common::mqtt_client::{self, Conn};

const NATS: [&str; 3] = [
    "nats://127.0.0.1:4222",
    "nats://127.0.0.1:4223",
    "nats://127.0.0.1:4224",
];
const TOPIC: &str = "takeover/bench";
/// Waiting longer than this for a delivery fails the run.
const LIMIT: Duration = Duration::from_secs(30);

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A router named `node` in the cluster under `prefix`: its process and MQTT address.
fn router(prefix: &str, node: &str) -> (common::Router, SocketAddr) {
    let settings = format!(
        "cluster:\n  servers: [{}]\n  node: {node}\n  prefix: {prefix}\n  replicas: 3\nconnections:\n  max_per_ip: 0\n  connect_rate: 0\n",
        NATS.join(", ")
    );
    let (r, addrs) = common::start_named(
        &format!("takeover-{prefix}{node}"),
        &["mqtt"],
        &settings,
        "",
        true,
    );
    (r, addrs[0])
}

/// Publishes a QoS 1 message to [`TOPIC`] every 2 ms until `stop` (PUBACKs read and
/// dropped).
async fn publisher(addr: SocketAddr, stop: Arc<AtomicBool>) {
    let c = mqtt_client::connect(addr, "takeover-pub").await;
    let (mut tx, mut rx) = c.split();
    tokio::spawn(async move { while rx.next().await.is_some() {} });
    let body = Bytes::from(vec![b'x'; 64]);
    let mut pid: u16 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        pid = pid.checked_add(1).unwrap_or(1);
        if tx
            .send(mqtt_client::publish(TOPIC, QoS::AtLeastOnce, pid, &body))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Waits for the next PUBLISH on `c` (acknowledging it), at most [`LIMIT`].
async fn first_delivery(c: &mut Conn) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, c.next()).await {
            Ok(Some(Ok((Packet::Publish(p), _)))) => {
                if let Some(pid) = p.packet_id {
                    c.send(Packet::PublishAck { packet_id: pid })
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                }
                return Ok(());
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => return Err(format!("connection ended: {other:?}")),
            Err(_) => return Err(format!("nothing delivered within {LIMIT:?}")),
        }
    }
}

/// Reads and acknowledges for `d` (the session settles on its router).
async fn drain(c: &mut Conn, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    while let Ok(Some(Ok((p, _)))) = tokio::time::timeout_at(until, c.next()).await {
        if let Packet::Publish(p) = p
            && let Some(pid) = p.packet_id
        {
            let _ = c.send(Packet::PublishAck { packet_id: pid }).await;
        }
    }
}

fn summary(name: &str, ms: &mut [f64]) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "{name:<16} {:>3} takeovers  p50 {:>7.1} ms  p99 {:>7.1} ms  lowest {:>7.1} ms  highest {:>7.1} ms",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[0],
        ms[ms.len() - 1]
    )
}

async fn clean_up(prefix: &str) {
    let Ok(client) = async_nats::connect(NATS.to_vec()).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let mut names = Vec::new();
    let mut list = js.stream_names();
    while let Some(Ok(name)) = list.next().await {
        if name.starts_with(prefix) || name.starts_with(&format!("KV_{prefix}")) {
            names.push(name);
        }
    }
    for name in names {
        let _ = js.delete_stream(&name).await;
    }
}

fn main() {
    let moves = env_count("TAKEOVER_MOVES", 20);
    let kills = env_count("TAKEOVER_KILLS", 20);
    let lock = std::fs::File::create(std::env::temp_dir().join("switchboard-tests-nats.lock"))
        .expect("NATS rig lock file");
    lock.lock_shared().expect("NATS rig lock");
    let prefix = format!("tk{}_", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_a, a) = router(&prefix, "a");
    let (_b, b) = router(&prefix, "b");
    let (_c, c) = router(&prefix, "c");
    let stop = Arc::new(AtomicBool::new(false));
    let result = rt.block_on(async {
        let id = format!("{prefix}sub");
        let mut sub = mqtt_client::connect_session(b, &id, false).await;
        mqtt_client::subscribe(&mut sub, TOPIC, QoS::AtLeastOnce).await;
        tokio::spawn(publisher(a, Arc::clone(&stop)));
        first_delivery(&mut sub).await?;
        drain(&mut sub, Duration::from_millis(500)).await;

        let mut moved = Vec::new();
        let mut on = [b, c];
        for _ in 0..moves {
            drop(sub);
            let t = Instant::now();
            sub = mqtt_client::connect_session(on[1], &id, false).await;
            first_delivery(&mut sub).await?;
            moved.push(t.elapsed().as_secs_f64() * 1000.0);
            drain(&mut sub, Duration::from_millis(300)).await;
            on.swap(0, 1);
        }
        println!("{}", summary("client moves", &mut moved));

        // The subscriber is on on[0]; each round starts a router, moves the session
        // there, kills it, and takes the session to a router still alive.
        let mut killed = Vec::new();
        let live = on[0];
        for k in 0..kills {
            let (mut victim, addr) = router(&prefix, &format!("k{k}"));
            drop(sub);
            sub = mqtt_client::connect_session(addr, &id, false).await;
            first_delivery(&mut sub).await?;
            drain(&mut sub, Duration::from_millis(500)).await;
            let t = Instant::now();
            let _ = victim.0.kill();
            drop(sub);
            sub = mqtt_client::connect_session(live, &id, false).await;
            first_delivery(&mut sub).await?;
            killed.push(t.elapsed().as_secs_f64() * 1000.0);
            drain(&mut sub, Duration::from_millis(300)).await;
        }
        if !killed.is_empty() {
            println!("{}", summary("router killed", &mut killed));
        }
        stop.store(true, Ordering::Relaxed);
        Ok::<(), String>(())
    });
    rt.block_on(clean_up(&prefix));
    if let Err(e) = result {
        println!("FAILED: {e}");
        std::process::exit(1);
    }
}
