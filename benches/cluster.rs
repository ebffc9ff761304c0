//! Clustered throughput (issue 21), not a test: persistent 1 KiB messages through 1 and
//! 3 routers over the 3-node NATS JetStream rig (`scripts/peers/nats-ctl.sh`), side by
//! side with nats-server's own MQTT on the same JetStream cluster and with one router on
//! its local journal, all driven by the same load generators (`benches/common/`).
//!
//! Loads (each a number of publisher → subscriber pairs, every pair on a topic or queue
//! of its own, 1 KiB bodies, every publisher keeping a window of unconfirmed messages):
//!
//! - **MQTT QoS 1**: a 3.1.1 publisher waits for PUBACKs, a QoS 1 subscriber PUBACKs
//!   each delivery. Clean sessions, as `scripts/bench mqtt` runs them: nats-server still
//!   stores every QoS 1 publish in its `$MQTT_msgs` stream (R3 on the rig) before its
//!   PUBACK (one synchronous JetStream request per publish) and feeds the subscriber
//!   from a JetStream consumer; clustered routers confirm once `<prefix>SB_TOPICS` stored
//!   the publish. On its local journal a router stores QoS 1 publishes only for a
//!   persistent session (a clean session's queue is not durable), so there the
//!   subscribers ask for one: every side has stored a message before confirming it.
//! - **STOMP persistent queue**: `SEND`s with `persistent:true` and a receipt to a
//!   `/queue/…` (clustered: the stream `<prefix>SBQ_…`); the consumer subscribes
//!   `ack:client-individual` with `prefetch-count:100` (`CLUSTER_BENCH_PREFETCH`) and
//!   ACKs each MESSAGE. nats-server
//!   has no STOMP: these rows are compared with its MQTT QoS 1 figure for the same load.
//!
//! Spread over 3 routers (or 3 NATS nodes), pair `i` publishes on endpoint `i % 3` and
//! subscribes on endpoint `(i + 1) % 3`: every message crosses to another router.
//!
//! Method (docs/benchmarks.md): every repeat starts each setup afresh (three routers
//! joined under a cluster prefix of their own, or one router on a fresh journal) and
//! warms it up: every topic and queue is published to and consumed for 1.5 s
//! (streams, consumers and subscriptions created) before anything is measured. Each
//! measured run connects its clients, publishes for `CLUSTER_BENCH_WARMUP` (1 s), then
//! counts deliveries for `CLUSTER_BENCH_SECS` (3 s); the publishers then stop, their
//! outstanding confirmations are awaited and every confirmed message must arrive: each
//! publish carries a sequence number, and a confirmed one never delivered is reported
//! (LOST, with the sequence numbers) beside the run's figure. Every cell runs
//! `CLUSTER_BENCH_REPEATS` (3) times, the order of setups and cells reversed on every
//! other repeat; the tables show the median, the spread (lowest–highest) and the
//! latency of the median run, and ratios against nats-server's MQTT for the same load
//! and node count. `CLUSTER_BENCH='TEXT[|TEXT…]'` runs only the cells whose name
//! contains one of the texts (`CLUSTER_BENCH='nats-server|MQTT, 3 routers'`);
//! `CLUSTER_BENCH_SETTLE=MS` pauses between the last subscription and the first publish.
//!
//! The rig is shared with the cluster tests: the bench holds their lock on it shared
//! (a test that stops NATS nodes holds it exclusively) and waits for all nodes. Each
//! clustered setup's streams and KV buckets are deleted when it stops.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use rmqtt_codec::types::QoS;
use rmqtt_codec::v3::Packet;
use switchboard::listener::stomp::codec::{Incoming, Outgoing};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};

const NATS: [&str; 3] = [
    "nats://127.0.0.1:4222",
    "nats://127.0.0.1:4223",
    "nats://127.0.0.1:4224",
];
const NATS_MQTT: [&str; 3] = ["127.0.0.1:18831", "127.0.0.1:18832", "127.0.0.1:18833"];
const BODY: usize = 1024;
/// No confirmation or delivery for this long: the run failed.
const STALL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Proto {
    /// MQTT 3.1.1, QoS 1.
    Mqtt,
    /// STOMP 1.2, persistent SENDs to a queue.
    Stomp,
}

/// Counters shared by one run's clients.
#[derive(Default)]
struct Run {
    delivered: AtomicU64,
    confirmed: AtomicU64,
    /// Subscribers record latencies while set (the measured window).
    measuring: AtomicBool,
    /// Publishers stop sending new messages.
    stop: AtomicBool,
    /// Subscribers leave.
    finish: AtomicBool,
}

/// What one subscriber received.
#[derive(Default)]
struct Received {
    /// Latencies (µs) in the measured window.
    lat: Vec<u64>,
    /// Deliveries per publisher sequence number.
    seen: Vec<u8>,
}

impl Received {
    fn record(&mut self, run: &Run, sent_ns: Option<u64>, seq: Option<u64>) {
        run.delivered.fetch_add(1, Ordering::Relaxed);
        if run.measuring.load(Ordering::Relaxed)
            && let Some(t) = sent_ns
        {
            lat_push(&mut self.lat, t);
        }
        if let Some(seq) = seq.and_then(|q| usize::try_from(q).ok()) {
            if self.seen.len() <= seq {
                self.seen.resize(seq + 1, 0);
            }
            self.seen[seq] = self.seen[seq].saturating_add(1);
        }
    }

    /// Sequence numbers below `confirmed` never received, as ranges; and how many
    /// were received more than once.
    fn check(&self, confirmed: u64) -> (Vec<(u64, u64)>, u64) {
        let mut missing: Vec<(u64, u64)> = Vec::new();
        for q in 0..confirmed {
            if self.seen.get(q as usize).copied().unwrap_or(0) == 0 {
                match missing.last_mut() {
                    Some((_, end)) if *end + 1 == q => *end = q,
                    _ => missing.push((q, q)),
                }
            }
        }
        let dups = self
            .seen
            .iter()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum();
        (missing, dups)
    }
}

fn lat_push(lat: &mut Vec<u64>, sent_ns: u64) {
    lat.push(common::mqtt_client::now_ns().saturating_sub(sent_ns) / 1000);
}

/// A subscriber that has heard nothing this long while the run is not finished fails
/// (longer than the run's own wait for the last messages, so that one ends first).
const SUBSCRIBER_STALL: Duration = Duration::from_secs(60);

/// A QoS 1 PUBLISH whose payload starts with its send time and sequence number.
fn mqtt_publish(topic: &str, pid: u16, seq: u64, body: &[u8]) -> Packet {
    let mut payload = Vec::with_capacity(body.len().max(16));
    payload.extend_from_slice(&common::mqtt_client::now_ns().to_be_bytes());
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend_from_slice(&body[16.min(body.len())..]);
    Packet::Publish(Box::new(rmqtt_codec::types::Publish {
        dup: false,
        retain: false,
        qos: QoS::AtLeastOnce,
        topic: topic.into(),
        packet_id: std::num::NonZeroU16::new(pid),
        payload: payload.into(),
        properties: None,
    }))
}

async fn mqtt_subscriber(
    mut c: common::mqtt_client::Conn,
    run: Arc<Run>,
) -> Result<Received, String> {
    let mut got = Received::default();
    let mut idle = Instant::now();
    loop {
        // Acknowledgements go out when nothing else is ready (one write per burst).
        let next = match c.next().now_or_never() {
            Some(item) => Ok(item),
            None => {
                c.flush().await.map_err(|e| format!("{e:?}"))?;
                tokio::time::timeout(Duration::from_millis(100), c.next()).await
            }
        };
        match next {
            Ok(Some(Ok((Packet::Publish(p), _)))) => {
                idle = Instant::now();
                let word = |at: usize| {
                    p.payload
                        .get(at..at + 8)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
                };
                got.record(&run, word(0), word(8));
                if let Some(pid) = p.packet_id {
                    c.feed(Packet::PublishAck { packet_id: pid })
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => return Err(format!("MQTT subscriber: {other:?}")),
            Err(_) => {
                if run.finish.load(Ordering::Relaxed) {
                    let _ = c.send(Packet::Disconnect).await;
                    return Ok(got);
                }
                if idle.elapsed() > SUBSCRIBER_STALL {
                    return Err("MQTT subscriber: nothing for 60 s".into());
                }
            }
        }
    }
}

async fn mqtt_publisher(
    c: common::mqtt_client::Conn,
    topic: String,
    window: usize,
    run: Arc<Run>,
) -> Result<u64, String> {
    let (mut sink, mut stream) = c.split();
    let body = vec![b'x'; BODY];
    let (mut sent, mut acked) = (0u64, 0u64);
    loop {
        let stopping = run.stop.load(Ordering::Relaxed);
        while !stopping && sent - acked < window as u64 {
            let pid = (sent % 65_000 + 1) as u16;
            sink.feed(mqtt_publish(&topic, pid, sent, &body))
                .await
                .map_err(|e| format!("{e:?}"))?;
            sent += 1;
        }
        sink.flush().await.map_err(|e| format!("{e:?}"))?;
        if stopping && sent == acked {
            let _ = sink.send(Packet::Disconnect).await;
            return Ok(acked);
        }
        // One acknowledgement, then every one already read.
        let mut next = Some(
            tokio::time::timeout(STALL, stream.next())
                .await
                .map_err(|_| format!("MQTT publisher: no PUBACK for 30 s ({acked} of {sent})"))?,
        );
        while let Some(p) = next {
            match p {
                Some(Ok((Packet::PublishAck { .. }, _))) => {
                    acked += 1;
                    run.confirmed.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
                other => return Err(format!("MQTT publisher after {acked}: {other:?}")),
            }
            next = stream.next().now_or_never();
        }
    }
}

async fn stomp_subscriber(
    mut c: common::stomp_client::Conn,
    run: Arc<Run>,
) -> Result<Received, String> {
    let mut got = Received::default();
    let mut idle = Instant::now();
    loop {
        let next = match c.next().now_or_never() {
            Some(item) => Ok(item),
            None => {
                SinkExt::<Outgoing>::flush(&mut c)
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                tokio::time::timeout(Duration::from_millis(100), c.next()).await
            }
        };
        match next {
            Ok(Some(Ok(Incoming::Frame(f)))) if f.command == Cmd::Message => {
                idle = Instant::now();
                let num = |h: &str| f.header(h).and_then(|v| v.parse::<u64>().ok());
                got.record(&run, num("t"), num("seq"));
                let id = f.header("ack").ok_or("MESSAGE without an ack header")?;
                c.feed(Outgoing::Frame(Frame::new(Cmd::Ack).with_header("id", id)))
                    .await
                    .map_err(|e| format!("{e:?}"))?;
            }
            Ok(Some(Ok(Incoming::Frame(f)))) if f.command == Cmd::Error => {
                return Err(format!(
                    "STOMP subscriber: ERROR {:?} {:?}",
                    f.headers, f.body
                ));
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => return Err(format!("STOMP subscriber: {other:?}")),
            Err(_) => {
                if run.finish.load(Ordering::Relaxed) {
                    let _ = c.send(Outgoing::Frame(Frame::new(Cmd::Disconnect))).await;
                    return Ok(got);
                }
                if idle.elapsed() > SUBSCRIBER_STALL {
                    return Err("STOMP subscriber: nothing for 60 s".into());
                }
            }
        }
    }
}

async fn stomp_publisher(
    c: common::stomp_client::Conn,
    dest: String,
    window: usize,
    run: Arc<Run>,
) -> Result<u64, String> {
    let (mut sink, mut stream) = c.split();
    let body = Bytes::from(vec![b'x'; BODY]);
    let (mut sent, mut acked) = (0u64, 0u64);
    loop {
        let stopping = run.stop.load(Ordering::Relaxed);
        while !stopping && sent - acked < window as u64 {
            let f = Frame::new(Cmd::Send)
                .with_header("destination", dest.as_str())
                .with_header("persistent", "true")
                .with_header("receipt", sent.to_string())
                .with_header("t", common::stomp_client::now_ns().to_string())
                .with_header("seq", sent.to_string())
                .with_body(body.clone());
            sink.feed(Outgoing::Frame(f))
                .await
                .map_err(|e| format!("{e:?}"))?;
            sent += 1;
        }
        SinkExt::<Outgoing>::flush(&mut sink)
            .await
            .map_err(|e| format!("{e:?}"))?;
        if stopping && sent == acked {
            let _ = sink
                .send(Outgoing::Frame(Frame::new(Cmd::Disconnect)))
                .await;
            return Ok(acked);
        }
        let mut next = Some(
            tokio::time::timeout(STALL, stream.next())
                .await
                .map_err(|_| format!("STOMP publisher: no RECEIPT for 30 s ({acked} of {sent})"))?,
        );
        while let Some(f) = next {
            match f {
                Some(Ok(Incoming::Frame(f))) if f.command == Cmd::Receipt => {
                    acked += 1;
                    run.confirmed.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Incoming::Frame(f))) if f.command == Cmd::Error => {
                    return Err(format!(
                        "STOMP publisher: ERROR {:?} {:?}",
                        f.headers, f.body
                    ));
                }
                Some(Ok(_)) => {}
                other => return Err(format!("STOMP publisher after {acked}: {other:?}")),
            }
            next = stream.next().now_or_never();
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
struct Outcome {
    /// Messages delivered (and acknowledged by their subscriber) per second.
    rate: f64,
    /// Messages confirmed to their publisher per second, same window: above `rate`, the
    /// delivery side is the bottleneck and a backlog builds up.
    confirm_rate: f64,
    p50_us: u64,
    p99_us: u64,
    /// Messages delivered more than once (QoS 1 / STOMP allow it: redeliveries).
    duplicates: u64,
    /// Confirmed messages that never arrived, if any: the run's figure stands (it
    /// measures throughput), the loss is reported beside it.
    lost: Option<String>,
}

/// One run: `pairs` publisher → subscriber pairs spread over `addrs` (see the module
/// docs), each publisher with `window` unconfirmed messages at most.
async fn run_once(spec: RunSpec) -> Result<Outcome, String> {
    let RunSpec {
        proto,
        addrs,
        pairs,
        window,
        tag,
        client_tag,
        persistent: persistent_session,
        warmup,
        measure,
    } = spec;
    let run = Arc::new(Run::default());
    let n = addrs.len();
    let dest = |i: usize| match proto {
        Proto::Mqtt => format!("cbench/{tag}/{i}"),
        Proto::Stomp => format!("/queue/cbench-{tag}-{i}"),
    };
    // Subscribers first, each confirmed subscribed (SUBACK, RECEIPT).
    let mut subs = Vec::new();
    for i in 0..pairs {
        let at = addrs[(i + 1) % n];
        subs.push(match proto {
            Proto::Mqtt => {
                let id = format!("cb-sub-{client_tag}-{i}");
                let mut s =
                    common::mqtt_client::connect_session(at, &id, !persistent_session).await;
                common::mqtt_client::subscribe(&mut s, &dest(i), QoS::AtLeastOnce).await;
                tokio::spawn(mqtt_subscriber(s, run.clone()))
            }
            Proto::Stomp => {
                let mut s = common::stomp_client::connect(at, None).await;
                let f = Frame::new(Cmd::Subscribe)
                    .with_header("id", "0")
                    .with_header("destination", dest(i))
                    .with_header("ack", "client-individual")
                    .with_header("prefetch-count", prefetch())
                    .with_header("receipt", "sub");
                s.send(Outgoing::Frame(f))
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                common::stomp_client::receipt(&mut s, "sub").await;
                tokio::spawn(stomp_subscriber(s, run.clone()))
            }
        });
    }
    // CLUSTER_BENCH_SETTLE (ms): a pause between the last SUBACK / RECEIPT and the
    // first publish (0 by default: a subscription confirmed is a subscription in force).
    if let Some(ms) = std::env::var("CLUSTER_BENCH_SETTLE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut pubs = Vec::new();
    for i in 0..pairs {
        let at = addrs[i % n];
        pubs.push(match proto {
            Proto::Mqtt => {
                let p = common::mqtt_client::connect(at, &format!("cb-pub-{client_tag}-{i}")).await;
                tokio::spawn(mqtt_publisher(p, dest(i), window, run.clone()))
            }
            Proto::Stomp => {
                let p = common::stomp_client::connect(at, None).await;
                tokio::spawn(stomp_publisher(p, dest(i), window, run.clone()))
            }
        });
    }
    tokio::time::sleep(warmup).await;
    let (c0, p0, t0) = (
        run.delivered.load(Ordering::Relaxed),
        run.confirmed.load(Ordering::Relaxed),
        Instant::now(),
    );
    run.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(measure).await;
    run.measuring.store(false, Ordering::Relaxed);
    let (c1, p1, t1) = (
        run.delivered.load(Ordering::Relaxed),
        run.confirmed.load(Ordering::Relaxed),
        Instant::now(),
    );
    run.stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    let mut confirmed_per_pair = Vec::new();
    for p in pubs {
        confirmed_per_pair.push(match p.await {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => {
                failures.push(e);
                0
            }
            Err(e) => {
                failures.push(format!("publisher task: {e}"));
                0
            }
        });
    }
    let confirmed: u64 = confirmed_per_pair.iter().sum();
    // Every confirmed message must arrive: wait while deliveries still come (a message
    // lost is not worth waiting 30 s for, a backlog draining is).
    let (mut last, mut moved) = (run.delivered.load(Ordering::Relaxed), Instant::now());
    while last < confirmed && moved.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = run.delivered.load(Ordering::Relaxed);
        if now != last {
            (last, moved) = (now, Instant::now());
        }
    }
    // Late duplicates (redeliveries) would come within a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.finish.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut duplicates = 0;
    let mut lost = Vec::new();
    for (i, s) in subs.into_iter().enumerate() {
        match s.await {
            Ok(Ok(got)) => {
                let (missing, dups) = got.check(confirmed_per_pair[i]);
                duplicates += dups;
                if !missing.is_empty() {
                    let count: u64 = missing.iter().map(|(a, b)| b - a + 1).sum();
                    let ranges: Vec<String> = missing
                        .iter()
                        .take(4)
                        .map(|(a, b)| {
                            if a == b {
                                format!("{a}")
                            } else {
                                format!("{a}–{b}")
                            }
                        })
                        .collect();
                    lost.push(format!(
                        "pair {i}: {count} of {} confirmed messages LOST (sequence numbers {}{})",
                        confirmed_per_pair[i],
                        ranges.join(", "),
                        if missing.len() > 4 { ", …" } else { "" }
                    ));
                }
                lat.extend(got.lat);
            }
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("subscriber task: {e}")),
        }
    }
    if !failures.is_empty() {
        failures.extend(lost);
        return Err(failures.join("; "));
    }
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(Outcome {
        rate: (c1 - c0) as f64 / (t1 - t0).as_secs_f64(),
        confirm_rate: (p1 - p0) as f64 / (t1 - t0).as_secs_f64(),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        duplicates,
        lost: (!lost.is_empty()).then(|| lost.join("; ")),
    })
}

/// A STOMP subscription's `prefetch-count`: 100, or `CLUSTER_BENCH_PREFETCH`.
fn prefetch() -> String {
    std::env::var("CLUSTER_BENCH_PREFETCH").unwrap_or_else(|_| "100".into())
}

/// One run's parameters (see [`run_once`]).
struct RunSpec {
    proto: Proto,
    addrs: Vec<SocketAddr>,
    pairs: usize,
    window: usize,
    /// Names the run's topics or queues (`cbench/TAG/i`, `/queue/cbench-TAG-i`).
    tag: String,
    /// Names the run's MQTT clients.
    client_tag: String,
    persistent: bool,
    warmup: Duration,
    measure: Duration,
}

impl RunSpec {
    /// Runs on its own task (a panic, such as a refused connection, is a failed run),
    /// within a deadline.
    fn run(self, rt: &tokio::runtime::Runtime) -> Result<Outcome, String> {
        let limit = self.warmup + self.measure + 3 * STALL;
        rt.block_on(async move {
            let job = tokio::spawn(run_once(self));
            match tokio::time::timeout(limit, job).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("panicked: {e}")),
                Err(_) => Err("hung".into()),
            }
        })
    }
}

/// How long a setup's warm-up publishes before its measured runs.
const PRIME: Duration = Duration::from_millis(1500);

/// Settings of every router here: the MQTT and connection settings of `scripts/bench
/// mqtt`, but MQTT session queues of up to 1,000,000 messages (this bench counts every
/// message: a subscriber's backlog must not be dropped), and queues of 64 MiB at most:
/// a shared queue's stream reserves its `max_bytes` of JetStream storage on every
/// replica, and 256 MiB (the default) for each of this bench's queues did not fit the
/// rig's 8 GB per node beside the streams of other runs ("insufficient storage").
const ROUTER_SETTINGS: &str = "mqtt:\n  max_inflight: 100\n  max_queued: 1000000\nconnections:\n  max_per_ip: 0\n  connect_rate: 0\nqueues:\n  defaults:\n    max_bytes: 67108864\n";

/// What serves the load.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Setup {
    /// nats-server's own MQTT on the rig.
    NatsMqtt,
    /// Three routers joined to the rig, creating their streams with these replicas.
    Cluster(u8),
    /// One router on its local journal, with this `durability.fsync`.
    Local(&'static str),
}

/// A setup's processes (killed when dropped) and endpoints.
struct Running {
    /// The cluster prefix of its streams and buckets.
    prefix: Option<String>,
    /// The routers' directories (journals of up to a few GiB): deleted after them.
    dirs: Vec<std::path::PathBuf>,
    _routers: Vec<common::Router>,
    stomp: Vec<SocketAddr>,
    mqtt: Vec<SocketAddr>,
}

fn start(setup: Setup, label: &str) -> Running {
    let mut r = Running {
        prefix: None,
        dirs: Vec::new(),
        _routers: Vec::new(),
        stomp: Vec::new(),
        mqtt: Vec::new(),
    };
    let add = |name: String, settings: String, r: &mut Running| {
        r.dirs.push(common::bench_dir(&name));
        let (router, addrs) = common::start_named(&name, &["stomp", "mqtt"], &settings, "", true);
        r._routers.push(router);
        r.stomp.push(addrs[0]);
        r.mqtt.push(addrs[1]);
    };
    match setup {
        Setup::NatsMqtt => r.mqtt = NATS_MQTT.iter().map(|a| a.parse().unwrap()).collect(),
        Setup::Cluster(replicas) => {
            let prefix = format!("{label}_");
            for (k, node) in ["a", "b", "c"].iter().enumerate() {
                // Router k lists NATS node k first.
                let servers: Vec<&str> = (0..3).map(|j| NATS[(k + j) % 3]).collect();
                let settings = format!(
                    "cluster:\n  servers: [{}]\n  node: {node}\n  prefix: {prefix}\n  replicas: {replicas}\n{ROUTER_SETTINGS}",
                    servers.join(", ")
                );
                add(format!("cluster-{label}-{node}"), settings, &mut r);
            }
            r.prefix = Some(prefix);
        }
        Setup::Local(fsync) => add(
            format!("local-{label}"),
            format!("durability:\n  fsync: {fsync}\n{ROUTER_SETTINGS}"),
            &mut r,
        ),
    }
    r
}

/// Streams (and so KV buckets) whose name starts with `prefix`: listed, then deleted.
async fn clean_up(prefix: &str) {
    let Ok(client) = async_nats::connect(NATS.to_vec()).await else {
        println!("cleanup: NATS not reachable; streams under {prefix} left behind");
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
    names.sort();
    let mut shown = Vec::new();
    for name in names {
        if let Ok(mut s) = js.get_stream(&name).await
            && let Ok(info) = s.info().await
        {
            shown.push(format!(
                "{name} R{} {} left",
                info.config.num_replicas, info.state.messages
            ));
        }
        if let Err(e) = js.delete_stream(&name).await {
            println!("  stream {name}: not deleted: {e}");
        }
    }
    if std::env::var_os("CLUSTER_BENCH_VERBOSE").is_some() {
        println!("  deleted: {}", shown.join(", "));
    }
}

struct Cell {
    name: String,
    setup: Setup,
    proto: Proto,
    /// Routers (or NATS nodes) the load is spread over.
    nodes: usize,
}

impl Cell {
    fn new(setup: Setup, proto: Proto, nodes: usize) -> Cell {
        let s = if nodes > 1 { "s" } else { "" };
        let name = match (setup, proto) {
            (Setup::NatsMqtt, _) => format!("nats-server MQTT, {nodes} node{s}"),
            (Setup::Cluster(r), Proto::Mqtt) => {
                format!("Switchboard MQTT, {nodes} router{s}, R{r}")
            }
            (Setup::Cluster(r), Proto::Stomp) => {
                format!("Switchboard STOMP, {nodes} router{s}, R{r}")
            }
            (Setup::Local(f), Proto::Mqtt) => {
                format!("Switchboard MQTT (persistent session), local journal, fsync {f}")
            }
            (Setup::Local(f), Proto::Stomp) => {
                format!("Switchboard STOMP, local journal, fsync {f}")
            }
        };
        Cell {
            name,
            setup,
            proto,
            nodes,
        }
    }

    /// On its local journal a router stores QoS 1 publishes only for a persistent
    /// session (a clean session's queue is not durable): its subscribers ask for one.
    fn persistent_session(&self) -> bool {
        matches!(self.setup, Setup::Local(_)) && self.proto == Proto::Mqtt
    }
}

fn env_secs(name: &str, default: f64) -> Duration {
    Duration::from_secs_f64(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Waits until every node of the rig answers (clients and MQTT), at most 60 s.
fn wait_for_rig() {
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = |a: &str| {
        std::net::TcpStream::connect_timeout(&a.parse().unwrap(), Duration::from_secs(1)).is_ok()
    };
    while !NATS_MQTT
        .iter()
        .chain(&["127.0.0.1:4222", "127.0.0.1:4223", "127.0.0.1:4224"])
        .all(|a| up(a))
    {
        assert!(
            Instant::now() < deadline,
            "the NATS rig is not whole after 60 s: scripts/peers/nats-ctl.sh status"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The rig's nats-server version and JetStream sync setting (node n1's `/varz`).
fn nats_config() -> String {
    use std::io::{Read, Write};
    let mut text = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:8222") {
        let _ = s.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let _ = s.read_to_string(&mut text);
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let js = &v["jetstream"]["config"];
    let sync = if js["sync_always"].as_bool() == Some(true) {
        "fsync after every write (NATS_SYNC=always)".to_string()
    } else {
        format!(
            "fsync every {} s (the default; NATS_SYNC=always fsyncs every write)",
            js["sync_interval"].as_u64().unwrap_or(0) / 1_000_000_000
        )
    };
    format!(
        "nats-server {}, JetStream {sync}",
        v["version"].as_str().unwrap_or("?")
    )
}

/// Loads: (name, pairs, window).
const LOADS: [(&str, usize, usize); 2] = [
    ("1 pair, 100 in flight", 1, 100),
    ("8 pairs, 100 in flight each", 8, 100),
];

fn main() {
    let warmup = env_secs("CLUSTER_BENCH_WARMUP", 1.0);
    let measure = env_secs("CLUSTER_BENCH_SECS", 3.0);
    let repeats: usize = std::env::var("CLUSTER_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("CLUSTER_BENCH").ok();
    // Any node answering: the rig exists (a test may have stopped the others for a while).
    let nats_up = NATS_MQTT.iter().any(|a| {
        std::net::TcpStream::connect_timeout(&a.parse().unwrap(), Duration::from_secs(1)).is_ok()
    });
    // The rig is shared with the cluster tests: a test that stops or kills NATS nodes
    // holds this lock exclusively (tests/common: peer_lock), the others and this bench
    // share it, so no node goes down while the bench runs.
    let _rig = nats_up.then(|| {
        let f = std::fs::File::create(std::env::temp_dir().join("switchboard-tests-nats.lock"))
            .expect("NATS rig lock file");
        if f.try_lock_shared().is_err() {
            println!("waiting for a test that holds the NATS rig (stopping nodes) to finish…");
            f.lock_shared().expect("NATS rig lock");
        }
        wait_for_rig();
        println!("NATS rig: {}", nats_config());
        f
    });
    let mut setups = vec![Setup::NatsMqtt, Setup::Cluster(3), Setup::Cluster(1)];
    if !nats_up {
        println!(
            "NATS rig not answering on {NATS_MQTT:?}: only the local-journal figures (run scripts/setup nats)"
        );
        setups.clear();
    }
    setups.extend([Setup::Local("always"), Setup::Local("interval 2m")]);
    let mut cells = Vec::new();
    for &setup in &setups {
        let protos: &[Proto] = match setup {
            Setup::NatsMqtt => &[Proto::Mqtt],
            _ => &[Proto::Mqtt, Proto::Stomp],
        };
        let spreads: &[usize] = match setup {
            Setup::Local(_) => &[1],
            _ => &[1, 3],
        };
        for &proto in protos {
            for &nodes in spreads {
                cells.push(Cell::new(setup, proto, nodes));
            }
        }
    }
    cells.retain(|c| {
        only.as_deref()
            .is_none_or(|o| o.split('|').any(|o| c.name.contains(o.trim())))
    });
    setups.retain(|s| cells.iter().any(|c| c.setup == *s));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run_id = format!("cb{}", std::process::id());
    // results[cell][load]: the runs that succeeded.
    let mut results: Vec<Vec<Vec<Outcome>>> = vec![vec![Vec::new(); LOADS.len()]; cells.len()];
    let mut failures: Vec<String> = Vec::new();
    let started = Instant::now();
    println!(
        "Cluster benchmark: 1 KiB, {repeats} repeats of {:.0} s (+{:.0} s warm-up) per cell and load, {} cells × {} loads",
        measure.as_secs_f64(),
        warmup.as_secs_f64(),
        cells.len(),
        LOADS.len()
    );
    for rep in 0..repeats {
        // Alternate which side goes first: every other repeat runs everything backwards.
        let mut order: Vec<Setup> = setups.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        for setup in order {
            // A fresh deployment per setup and repeat; queues and topics named by load,
            // so the 1- and 3-router cells share them.
            let label = format!(
                "{run_id}{}x{rep}",
                match setup {
                    Setup::NatsMqtt => "n".to_string(),
                    Setup::Cluster(r) => format!("r{r}"),
                    Setup::Local(f) => format!("l{}", f.len()),
                }
            );
            let running = match std::panic::catch_unwind(|| start(setup, &label)) {
                Ok(r) => r,
                Err(_) => {
                    println!("  [{rep}] {setup:?}: did not start");
                    failures.push(format!("[{rep}] {setup:?}: did not start"));
                    continue;
                }
            };
            // Warm up: every queue and topic of the loads is created (streams, consumers,
            // subscriptions) and used once before anything is measured.
            let protos: Vec<Proto> = [Proto::Mqtt, Proto::Stomp]
                .into_iter()
                .filter(|p| cells.iter().any(|c| c.setup == setup && c.proto == *p))
                .collect();
            for proto in protos {
                let addrs = match proto {
                    Proto::Mqtt => running.mqtt.clone(),
                    Proto::Stomp => running.stomp.clone(),
                };
                let pairs = LOADS.iter().map(|l| l.1).max().unwrap_or(1);
                let persistent = Cell::new(setup, proto, 1).persistent_session();
                let ids = format!("{label}p{proto:?}");
                let job = RunSpec {
                    proto,
                    addrs,
                    pairs,
                    window: 100,
                    tag: label.clone(),
                    client_tag: ids,
                    persistent,
                    warmup: PRIME,
                    measure: Duration::from_millis(500),
                };
                if let Err(e) = job.run(&rt) {
                    println!("  [{rep}] {setup:?} {proto:?} warm-up FAILED: {e}");
                    failures.push(format!("[{rep}] {setup:?} {proto:?} warm-up: {e}"));
                }
            }
            let mut runs: Vec<(usize, usize)> = (0..cells.len())
                .filter(|&c| cells[c].setup == setup)
                .flat_map(|c| (0..LOADS.len()).map(move |l| (c, l)))
                .collect();
            if rep % 2 == 1 {
                runs.reverse();
            }
            for (c, l) in runs {
                let cell = &cells[c];
                let (load, pairs, window) = LOADS[l];
                let job = RunSpec {
                    proto: cell.proto,
                    addrs: match cell.proto {
                        Proto::Mqtt => running.mqtt[..cell.nodes].to_vec(),
                        Proto::Stomp => running.stomp[..cell.nodes].to_vec(),
                    },
                    pairs,
                    window,
                    tag: label.clone(),
                    client_tag: format!("{label}l{l}n{}", cell.nodes),
                    persistent: cell.persistent_session(),
                    warmup,
                    measure,
                };
                let t = Instant::now();
                match job.run(&rt) {
                    Ok(o) => {
                        println!(
                            "  [{rep}] {:<62} {load:<28} {:>8.0} msg/s (confirmed {:>6.0}/s)  p50 {:>7.1} ms  p99 {:>7.1} ms  ({:.1} s){}",
                            cell.name,
                            o.rate,
                            o.confirm_rate,
                            o.p50_us as f64 / 1000.0,
                            o.p99_us as f64 / 1000.0,
                            t.elapsed().as_secs_f64(),
                            if o.duplicates > 0 {
                                format!("  {} duplicates", o.duplicates)
                            } else {
                                String::new()
                            }
                        );
                        if let Some(lost) = &o.lost {
                            println!("      {lost}");
                            failures.push(format!("[{rep}] {} / {load}: {lost}", cell.name));
                        }
                        results[c][l].push(o);
                    }
                    Err(e) => {
                        println!("  [{rep}] {:<62} {load:<28} FAILED: {e}", cell.name);
                        failures.push(format!("[{rep}] {} / {load}: {e}", cell.name));
                    }
                }
            }
            let (prefix, dirs) = (running.prefix.clone(), running.dirs.clone());
            drop(running);
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            if let Some(p) = prefix {
                rt.block_on(clean_up(&p));
            }
        }
    }
    let took = started.elapsed();
    report(&cells, &results, repeats, took);
    if !failures.is_empty() {
        println!("\nFailed runs:");
        for f in &failures {
            println!("- {f}");
        }
    }
}

/// The tables: per load, every cell's median, spread, the median run's latency and
/// its ratio to nats-server's MQTT through as many nodes; then what replication and
/// leaving the local journal cost.
fn report(cells: &[Cell], results: &[Vec<Vec<Outcome>>], repeats: usize, took: Duration) {
    let med = |c: usize, l: usize| -> Option<f64> {
        let r: Vec<f64> = results[c][l].iter().map(|o| o.rate).collect();
        (!r.is_empty()).then(|| median(&r))
    };
    let find = |setup: Setup, proto: Option<Proto>, nodes: usize| {
        cells.iter().position(|x| {
            x.setup == setup && proto.is_none_or(|p| x.proto == p) && x.nodes == nodes
        })
    };
    println!(
        "\nmsgs/s delivered end to end (every message confirmed to its publisher before, and acknowledged by its subscriber); median of {repeats} runs, spread lowest–highest; all runs took {:.0} s",
        took.as_secs_f64()
    );
    for (l, (load, _, _)) in LOADS.iter().enumerate() {
        println!("\n{load}\n");
        println!(
            "| setup | msgs/s (median) | spread | confirmed msgs/s | p50 / p99 ms | ÷ nats-server MQTT | runs that lost messages |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (c, cell) in cells.iter().enumerate() {
            let runs = &results[c][l];
            let Some(m) = med(c, l) else {
                println!("| {} | failed | — | — | — | — | — |", cell.name);
                continue;
            };
            let lo = runs.iter().map(|o| o.rate).fold(f64::MAX, f64::min);
            let hi = runs.iter().map(|o| o.rate).fold(0.0, f64::max);
            let mid = runs
                .iter()
                .min_by(|a, b| (a.rate - m).abs().total_cmp(&(b.rate - m).abs()))
                .unwrap();
            let base = find(Setup::NatsMqtt, None, cell.nodes).and_then(|b| med(b, l));
            let ratio = match (cell.setup, base) {
                (Setup::NatsMqtt, _) | (_, None) => "—".to_string(),
                (_, Some(b)) => format!("{:.2}×", m / b),
            };
            println!(
                "| {} | {:.0} | {:.0}–{:.0} | {:.0} | {:.1} / {:.1} | {ratio} | {} of {} |",
                cell.name,
                m,
                lo,
                hi,
                median(&runs.iter().map(|o| o.confirm_rate).collect::<Vec<_>>()),
                mid.p50_us as f64 / 1000.0,
                mid.p99_us as f64 / 1000.0,
                runs.iter().filter(|o| o.lost.is_some()).count(),
                runs.len()
            );
        }
        for proto in [Proto::Mqtt, Proto::Stomp] {
            let at = |setup: Setup, nodes: usize| {
                find(setup, Some(proto), nodes).and_then(|c| med(c, l))
            };
            let mut parts = Vec::new();
            for nodes in [1, 3] {
                if let (Some(r3), Some(r1)) =
                    (at(Setup::Cluster(3), nodes), at(Setup::Cluster(1), nodes))
                {
                    parts.push(format!("R3 ÷ R1 through {nodes}: {:.2}×", r3 / r1));
                }
            }
            for fsync in ["always", "interval 2m"] {
                for nodes in [1, 3] {
                    if let (Some(r3), Some(local)) =
                        (at(Setup::Cluster(3), nodes), at(Setup::Local(fsync), 1))
                    {
                        parts.push(format!(
                            "R3 through {nodes} ÷ local journal (fsync {fsync}): {:.2}×",
                            r3 / local
                        ));
                    }
                }
            }
            if !parts.is_empty() {
                println!("\n{proto:?}: {}", parts.join("; "));
            }
        }
    }
}
