//! Big fan-out (issue 26): one publisher, 10,000 subscribers on one topic. Rows: MQTT
//! QoS 0 and QoS 1 against Mosquitto, STOMP topic against RabbitMQ's STOMP plugin.
//!
//! Like for like: every side gets the same load generator (this process, one tokio
//! runtime), the same subscribers (MQTT 3.1.1 clean sessions or STOMP 1.2 `ack:auto`,
//! each its own TCP connection from one of several 127.0.0.x addresses so the runs do
//! not exhaust ephemeral ports), the same messages (100 B) and the same publisher (QoS 0:
//! every message sent at once; QoS 1: a window of 20, Mosquitto's default in-flight
//! limit, given to the router too). Mosquitto is started by this bench on a free port
//! with `persistence false` and no connection limit, the router with `--data-dir off`,
//! both with this process's file limit. A round measures deliveries per second from the
//! first publish to the last delivery counted, and router CPU per delivery; a warm-up
//! round first, then `FANOUT_ROUNDS` (default 3) rounds alternating which side goes
//! first; median and spread (min–max) printed.
//!
//! `FANOUT_SUBS` (default 10,000), `FANOUT_MESSAGES` (default 20 per round),
//! `FANOUT_ROWS` (`mqtt0,mqtt1,stomp`), `MOSQUITTO_BIN` (default `mosquitto` on `PATH`),
//! `RABBITMQ_STOMP` (default 127.0.0.1:61623; a closed port skips the STOMP peer).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rmqtt_codec::types::{Protocol, Publish, QoS};
use rmqtt_codec::v3::{Codec, Connect, ConnectAckReason, Packet};
use switchboard::listener::stomp::codec::{Incoming, Outgoing, StompCodec};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame, Version};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_util::codec::Framed;

const BODY: usize = 100;
const COMMAND: &str = "cargo bench --bench fanout";
const NOTE: &str = "1 publisher, 10,000 subscribers (FANOUT_SUBS), same load generator, QoS 1 window 20 on both sides";
/// QoS 1 publisher window: Mosquitto's default `max_inflight_messages`.
const WINDOW: usize = 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Source addresses rotate over 127.0.0.2–127.0.0.250 so that 10,000 connections per side
/// and round never run out of ephemeral ports (closed ones linger in TIME_WAIT).
struct Sources(u32);

impl Sources {
    fn next(&mut self) -> IpAddr {
        self.0 = self.0 % 249 + 1;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + self.0 as u8))
    }
}

async fn tcp_from(src: IpAddr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::new(src, 0)).expect("bind");
    let s = s.connect(to).await.expect("connect");
    s.set_nodelay(true).ok();
    s
}

/// Counts deliveries; wakes the waiter when `want` are in.
struct Tally {
    n: AtomicU64,
    want: AtomicU64,
    done: Notify,
}

impl Tally {
    fn add(&self) {
        let n = self.n.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.want.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }
}

// ---------------------------------------------------------------- MQTT

async fn mqtt_connect(src: IpAddr, addr: SocketAddr, id: String) -> Framed<TcpStream, Codec> {
    let mut c = Framed::new(tcp_from(src, addr).await, Codec::new(1024 * 1024));
    let connect = Connect {
        protocol: Protocol::default(),
        clean_session: true,
        keep_alive: 0,
        client_id: id.into(),
        ..Connect::default()
    };
    c.send(Packet::Connect(Box::new(connect))).await.unwrap();
    match c.next().await {
        Some(Ok((Packet::ConnectAck(a), _)))
            if a.return_code == ConnectAckReason::ConnectionAccepted => {}
        other => panic!("no CONNACK: {other:?}"),
    }
    c
}

/// Connects and subscribes `n` MQTT subscribers to `topic`; each counts its deliveries
/// into `tally` (acknowledging QoS 1 ones) until the bench ends.
async fn mqtt_subscribers(
    addr: SocketAddr,
    n: usize,
    topic: &str,
    qos: QoS,
    tally: Arc<Tally>,
    src: &mut Sources,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(n);
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    for chunk in 0..n.div_ceil(500) {
        let mut batch = Vec::new();
        for i in chunk * 500..n.min((chunk + 1) * 500) {
            let (topic, tally, ready, src) = (
                topic.to_owned(),
                Arc::clone(&tally),
                Arc::clone(&ready),
                src.next(),
            );
            batch.push(tokio::spawn(async move {
                let mut c = mqtt_connect(src, addr, format!("fan-{i}")).await;
                c.send(Packet::Subscribe {
                    packet_id: NonZeroU16::MIN,
                    topic_filters: vec![(topic.into(), qos)],
                })
                .await
                .unwrap();
                loop {
                    match c.next().await {
                        Some(Ok((Packet::SubscribeAck { .. }, _))) => break,
                        Some(Ok(_)) => {}
                        other => panic!("no SUBACK: {other:?}"),
                    }
                }
                ready.add_permits(1);
                while let Some(Ok((p, _))) = c.next().await {
                    if let Packet::Publish(p) = p {
                        if let Some(id) = p.packet_id {
                            let _ = c.send(Packet::PublishAck { packet_id: id }).await;
                        }
                        tally.add();
                    }
                }
            }));
        }
        tasks.extend(batch);
        // Connect in waves of 500 (a listen backlog, not the broker, should not decide):
        // every subscriber so far has its SUBACK (permits come back when dropped).
        drop(
            ready
                .acquire_many(n.min((chunk + 1) * 500) as u32)
                .await
                .unwrap(),
        );
    }
    tasks
}

/// Publishes `m` messages to `topic` at `qos` (QoS 1: a window of [`WINDOW`] unacked).
async fn mqtt_publish(addr: SocketAddr, topic: &str, qos: QoS, m: usize, src: IpAddr) {
    let mut c = mqtt_connect(src, addr, format!("fan-pub-{}", std::process::id())).await;
    let body = Bytes::from(vec![b'x'; BODY]);
    let mut unacked = 0usize;
    for i in 0..m {
        let pid = (i % 60_000 + 1) as u16;
        let p = Packet::Publish(Box::new(Publish {
            dup: false,
            retain: false,
            qos,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| NonZeroU16::new(pid).unwrap()),
            payload: body.clone(),
            properties: None,
        }));
        c.feed(p).await.unwrap();
        if qos != QoS::AtMostOnce {
            unacked += 1;
            if unacked == WINDOW {
                c.flush().await.unwrap();
                while unacked == WINDOW {
                    if let Some(Ok((Packet::PublishAck { .. }, _))) = c.next().await {
                        unacked -= 1;
                    }
                }
            }
        }
    }
    c.flush().await.unwrap();
    while unacked > 0 {
        if let Some(Ok((Packet::PublishAck { .. }, _))) = c.next().await {
            unacked -= 1;
        }
    }
    // Keep the publisher open until its messages are out (a QoS 0 DISCONNECT right
    // after may drop what the broker still has in its socket buffer).
    tokio::time::sleep(Duration::from_millis(50)).await;
}

// ---------------------------------------------------------------- STOMP

async fn stomp_connect(
    src: IpAddr,
    addr: SocketAddr,
    login: bool,
) -> Framed<TcpStream, StompCodec> {
    let mut c = Framed::new(tcp_from(src, addr).await, StompCodec::default());
    let mut f = Frame::new(Cmd::Connect)
        .with_header("accept-version", "1.2")
        .with_header("host", "/")
        .with_header("heart-beat", "0,0");
    if login {
        f = f
            .with_header("login", "guest")
            .with_header("passcode", "guest");
    }
    c.send(Outgoing::Frame(f)).await.unwrap();
    loop {
        match c.next().await {
            Some(Ok(Incoming::Frame(f))) if f.command == Cmd::Connected => break,
            Some(Ok(Incoming::HeartBeat)) => {}
            other => panic!("no CONNECTED: {other:?}"),
        }
    }
    c.codec_mut().set_version(Version::V1_2);
    c
}

async fn stomp_receipt(c: &mut Framed<TcpStream, StompCodec>, id: &str) {
    loop {
        match c.next().await {
            Some(Ok(Incoming::Frame(f)))
                if f.command == Cmd::Receipt && f.header("receipt-id") == Some(id) =>
            {
                return;
            }
            Some(Ok(Incoming::Frame(f))) if f.command == Cmd::Error => {
                panic!("ERROR: {:?} {:?}", f.headers, f.body)
            }
            Some(Ok(_)) => {}
            other => panic!("no RECEIPT: {other:?}"),
        }
    }
}

async fn stomp_subscribers(
    addr: SocketAddr,
    n: usize,
    dest: &str,
    login: bool,
    tally: Arc<Tally>,
    src: &mut Sources,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(n);
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    for chunk in 0..n.div_ceil(500) {
        let upto = n.min((chunk + 1) * 500);
        for _ in chunk * 500..upto {
            let (dest, tally, ready, src) = (
                dest.to_owned(),
                Arc::clone(&tally),
                Arc::clone(&ready),
                src.next(),
            );
            tasks.push(tokio::spawn(async move {
                let mut c = stomp_connect(src, addr, login).await;
                let f = Frame::new(Cmd::Subscribe)
                    .with_header("destination", dest)
                    .with_header("id", "1")
                    .with_header("ack", "auto")
                    .with_header("receipt", "s");
                c.send(Outgoing::Frame(f)).await.unwrap();
                stomp_receipt(&mut c, "s").await;
                ready.add_permits(1);
                while let Some(Ok(i)) = c.next().await {
                    if matches!(i, Incoming::Frame(ref f) if f.command == Cmd::Message) {
                        tally.add();
                    }
                }
            }));
        }
        drop(ready.acquire_many(upto as u32).await.unwrap());
    }
    tasks
}

async fn stomp_publish(addr: SocketAddr, dest: &str, m: usize, login: bool, src: IpAddr) {
    let mut c = stomp_connect(src, addr, login).await;
    let body = Bytes::from(vec![b'x'; BODY]);
    for _ in 0..m {
        let f = Frame::new(Cmd::Send)
            .with_header("destination", dest)
            .with_body(body.clone());
        c.feed(Outgoing::Frame(f)).await.unwrap();
    }
    let f = Frame::new(Cmd::Send)
        .with_header("destination", "/queue/fanout-end")
        .with_header("receipt", "end");
    c.send(Outgoing::Frame(f)).await.unwrap();
    stomp_receipt(&mut c, "end").await;
}

// ---------------------------------------------------------------- sides and rounds

#[derive(Clone, Copy, PartialEq)]
enum Row {
    Mqtt(QoS),
    Stomp,
}

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::Mqtt(QoS::AtMostOnce) => "MQTT QoS 0 fan-out",
            Row::Mqtt(_) => "MQTT QoS 1 fan-out",
            Row::Stomp => "STOMP topic fan-out",
        }
    }
}

/// How long a round's subscribers stay connected and idle after the fan-out before the
/// router's RSS is read again (past `mqtt.park_idle_after`, 2 s).
const IDLE_AFTER: Duration = Duration::from_secs(3);

/// One measured round on one side: (deliveries/s, router CPU ns per delivery when the
/// broker is the router).
async fn round(
    row: Row,
    addr: SocketAddr,
    peer: bool,
    subs: usize,
    m: usize,
    cpu_pid: Option<u32>,
    src: &mut Sources,
) -> (f64, Option<f64>) {
    let tally = Arc::new(Tally {
        n: AtomicU64::new(0),
        want: AtomicU64::new((subs * m) as u64),
        done: Notify::new(),
    });
    let round_id = src.next().to_string().replace('.', "_");
    let tasks = match row {
        Row::Mqtt(qos) => {
            let topic = format!("fan/{round_id}");
            mqtt_subscribers(addr, subs, &topic, qos, Arc::clone(&tally), src).await
        }
        Row::Stomp => {
            let dest = format!("/topic/fan.{round_id}");
            stomp_subscribers(addr, subs, &dest, peer, Arc::clone(&tally), src).await
        }
    };
    let cpu0 = cpu_pid.and_then(common::method::cpu_seconds);
    let start = Instant::now();
    let done = tally.done.notified();
    let pub_src = src.next();
    match row {
        Row::Mqtt(qos) => mqtt_publish(addr, &format!("fan/{round_id}"), qos, m, pub_src).await,
        Row::Stomp => {
            stomp_publish(addr, &format!("/topic/fan.{round_id}"), m, peer, pub_src).await
        }
    }
    if tokio::time::timeout(Duration::from_secs(120), done)
        .await
        .is_err()
    {
        panic!(
            "{}: {} of {} deliveries after 120 s",
            row.name(),
            tally.n.load(Ordering::Relaxed),
            subs * m
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_pid
        .zip(cpu0)
        .and_then(|(p, c0)| Some((common::method::cpu_seconds(p)? - c0) * 1e9 / (subs * m) as f64));
    if let Some(pid) = cpu_pid {
        // What the router keeps once the burst is over and its subscribers, still
        // connected, have gone idle (past `mqtt.park_idle_after`).
        let at_end = common::rss_kb(pid) as f64 / 1024.0;
        tokio::time::sleep(IDLE_AFTER).await;
        let idle = common::rss_kb(pid) as f64 / 1024.0;
        println!(
            "  {} round: router RSS {at_end:.0} MiB at the last delivery, {idle:.0} MiB {} s later with the subscribers connected",
            row.name(),
            IDLE_AFTER.as_secs()
        );
    }
    for t in tasks {
        t.abort();
    }
    ((subs * m) as f64 / secs, cpu)
}

/// Mosquitto on a free port, no persistence, no connection limit; killed when dropped.
struct Mosquitto(Child, SocketAddr);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mosquitto() -> Option<Mosquitto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = std::env::temp_dir().join(format!("sb-fanout-mosquitto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_inflight_messages {WINDOW}\nmax_queued_messages 1000\nlog_type error\n"
        ),
    )
    .ok()?;
    let bin = std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "mosquitto".into());
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Mosquitto(child, addr))
}

fn median_spread(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn main() {
    let subs = env_usize("FANOUT_SUBS", 10_000);
    let m = env_usize("FANOUT_MESSAGES", 20);
    let rounds = env_usize("FANOUT_ROUNDS", 3);
    let rows: Vec<Row> = std::env::var("FANOUT_ROWS")
        .unwrap_or_else(|_| "mqtt0,mqtt1,stomp".into())
        .split(',')
        .filter_map(|r| match r.trim() {
            "mqtt0" => Some(Row::Mqtt(QoS::AtMostOnce)),
            "mqtt1" => Some(Row::Mqtt(QoS::AtLeastOnce)),
            "stomp" => Some(Row::Stomp),
            _ => None,
        })
        .collect();
    let settings = format!(
        "mqtt:\n  max_connections: 20000\n  max_inflight: {WINDOW}\n  max_queued: 1000\nstomp:\n  max_connections: 20000\nconnections:\n  max_per_ip: 0\n  connect_rate: 0\n"
    );
    let (router, addrs) = common::start_listeners(&["mqtt", "stomp"], &settings, "", false);
    let router_pid = router.0.id();
    let mosquitto = start_mosquitto();
    let rabbit: SocketAddr = std::env::var("RABBITMQ_STOMP")
        .unwrap_or_else(|_| "127.0.0.1:61623".into())
        .parse()
        .unwrap();
    let rabbit_up = std::net::TcpStream::connect_timeout(&rabbit, Duration::from_secs(1)).is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "fan-out: 1 publisher → {subs} subscribers, {m} messages of {BODY} B per round, {rounds} rounds after a warm-up, sides alternating"
    );
    println!(
        "{:<22} {:>14} {:>22} {:>12} {:>14} {:>22} {:>8}",
        "row", "sb deliv/s", "(min–max)", "sb cpu ns", "peer deliv/s", "(min–max)", "ratio"
    );
    let mut src = Sources(0);
    rt.block_on(async {
        for row in rows {
            let (sb_addr, peer_addr, peer_name) = match row {
                Row::Mqtt(_) => (addrs[0], mosquitto.as_ref().map(|m| m.1), "mosquitto"),
                Row::Stomp => (addrs[1], rabbit_up.then_some(rabbit), "rabbitmq"),
            };
            // Warm-up: one small round on each side.
            round(row, sb_addr, false, subs.min(1000), 2, None, &mut src).await;
            if let Some(p) = peer_addr {
                round(row, p, true, subs.min(1000), 2, None, &mut src).await;
            }
            let (mut sb, mut peer, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..rounds {
                let peer_first = r % 2 == 1;
                if peer_first && let Some(p) = peer_addr {
                    peer.push(round(row, p, true, subs, m, None, &mut src).await.0);
                }
                let (v, c) = round(row, sb_addr, false, subs, m, Some(router_pid), &mut src).await;
                sb.push(v);
                cpu.extend(c);
                if !peer_first && let Some(p) = peer_addr {
                    peer.push(round(row, p, true, subs, m, None, &mut src).await.0);
                }
            }
            let (s, s_lo, s_hi) = median_spread(&mut sb);
            let (c, _, _) = median_spread(&mut cpu);
            let rss = common::rss_kb(router_pid) as f64 / 1024.0;
            if peer.is_empty() {
                println!(
                    "{:<22} {s:>14.0} {:>22} {c:>12.0} {:>14} {:>22} {:>8}   router RSS {rss:.0} MiB",
                    row.name(),
                    format!("({s_lo:.0}–{s_hi:.0})"),
                    format!("{peer_name} not running"),
                    "",
                    "",
                );
                common::record(
                    "fanout",
                    row.name(),
                    "msg/s",
                    COMMAND,
                    NOTE,
                    vec![common::value_side("switchboard", &sb)],
                    common::rss_mib(router_pid),
                );
            } else {
                let (p, p_lo, p_hi) = median_spread(&mut peer);
                println!(
                    "{:<22} {s:>14.0} {:>22} {c:>12.0} {p:>14.0} {:>22} {:>8.2}   router RSS {rss:.0} MiB ({peer_name})",
                    row.name(),
                    format!("({s_lo:.0}–{s_hi:.0})"),
                    format!("({p_lo:.0}–{p_hi:.0})"),
                    s / p,
                );
                common::record(
                    "fanout",
                    row.name(),
                    "msg/s",
                    COMMAND,
                    NOTE,
                    vec![
                        common::value_side("switchboard", &sb),
                        common::value_side(peer_name, &peer),
                    ],
                    common::rss_mib(router_pid),
                );
            }
        }
    });
    drop(router);
}
