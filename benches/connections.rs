//! Idle connections at scale (issue 26, "Connections"): resident memory per idle
//! connection, connect rate, and the latency of a QoS 1 publish to one of the idle
//! connections, Switchboard beside Mosquitto, driven by the same client (not a test).
//!
//! `cargo bench --bench connections`. For each N (`CONN_BENCH_N`, default
//! `5000,10000,19000`) and each server (`CONN_BENCH`, any of `mqtt,mosquitto,stomp`,
//! default all three), `CONN_BENCH_REPEAT` times (default 3), alternating which side
//! goes first: a fresh server process, warmed up with 500 connections that idle and
//! close (so the code and allocator pages any first connection faults in are in the
//! baseline, as on a server that has had clients before); N connections opened 64 at a
//! time (by two client tasks) from 32 source addresses (127.0.0.2–33) with raw sockets
//! (MQTT 3.1.1, clean session, keep-alive 0; STOMP 1.2 with heart-beats 10000,10000,
//! which the client keeps sending); the server's RSS delta over N after a 5 s settle,
//! and beside it the delta of its anonymous RSS (`RssAnon`: without the code pages the
//! first connections fault in). For MQTT, 1,000 of those connections then subscribe
//! (QoS 1, a topic each), idle again past `mqtt.park_idle_after`, and a publisher sends
//! each one QoS 1 message, one every 2 ms: the delivery latency is measured at the
//! subscriber (its connection revived from idle for it). Last, the connect rate: bursts
//! of N connects, each timed until its last CONNACK / CONNECTED, closed between bursts
//! (untimed, until the server's descriptors are back down), until at least 3 s of
//! connecting were timed, with the server's CPU time per connect over those bursts
//! (`/proc/PID/stat`).
//!
//! Mosquitto is started by the bench on a port of its own (`persistence false`,
//! `max_connections -1`; the shared peer on 18830 is left alone). The machines these
//! run on allow 20,000 open files per process, so 19,000 is the largest N.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses the client connects from (each has its own ephemeral ports, and
/// sockets in TIME_WAIT from earlier runs hold some).
const SOURCES: u32 = 32;
/// Connects in flight at once: under Mosquitto's listen backlog (100), so neither side
/// drops SYNs and waits a retransmit.
const IN_FLIGHT: usize = 64;
/// Tasks the connects are spread over, each with its share of [`IN_FLIGHT`]: one task
/// driving all 64 ran on one of the client's two worker threads and set the rate for
/// both servers alike (2026-12-06: two lifted both by about a tenth).
const GENERATORS: usize = 2;
const SETTLE: Duration = Duration::from_secs(5);
/// Subscribers in the latency check, and messages (one each).
const LATENCY_SUBS: usize = 1000;

static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Mqtt,
    Stomp,
}

/// A server under test, killed when dropped.
struct Server {
    proto: Proto,
    addr: SocketAddr,
    pid: u32,
    /// The process's guard ([`common::Router`] or [`Mosquitto`]), held to be dropped.
    _process: Box<dyn std::any::Any>,
}

/// A Mosquitto started by the bench, killed and its directory removed when dropped.
struct Mosquitto(Child, std::path::PathBuf);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

const ROUTER_SETTINGS: &str = "mqtt:\n  max_connections: 20000\nstomp:\n  max_connections: 20000\nconnections:\n  max_per_ip: 0\n  connect_rate: 0\n";

fn start(which: &str) -> Server {
    match which {
        "mqtt" | "stomp" => {
            let (router, addr) = common::start_router_memory_only(which, ROUTER_SETTINGS);
            let pid = router.0.id();
            Server {
                proto: if which == "mqtt" {
                    Proto::Mqtt
                } else {
                    Proto::Stomp
                },
                addr,
                pid,
                _process: Box::new(router),
            }
        }
        "mosquitto" => start_mosquitto(),
        other => panic!("unknown server {other} (mqtt, mosquitto, stomp)"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_mosquitto() -> Server {
    let dir = std::env::temp_dir().join(format!("sb-bench-mosquitto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    // `user root`: as root it would otherwise switch to the `mosquitto` user.
    std::fs::write(
        &conf,
        format!(
            "user root\nper_listener_settings false\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nmax_connections -1\nlistener {port} 127.0.0.1\n"
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join("mosquitto.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .expect("start mosquitto (is it installed? scripts/setup mosquitto)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    Server {
        proto: Proto::Mqtt,
        addr,
        pid,
        _process: Box::new(Mosquitto(child, dir)),
    }
}

fn mqtt_connect(id: &str) -> Vec<u8> {
    // Protocol name, level 4 (3.1.1), flags: clean session, keep-alive 0.
    let mut body = b"\x00\x04MQTT\x04\x02\x00\x00".to_vec();
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    packet(0x10, &body)
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        p.push(b);
        if len == 0 {
            break;
        }
    }
    p.extend_from_slice(body);
    p
}

/// Reads one MQTT packet: (first byte, body).
async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let first = s.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = s.read_u8().await?;
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((first, body))
}

const STOMP_CONNECT: &[u8] = b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:10000,10000\n\n\0";

async fn open_one(addr: SocketAddr, proto: Proto, i: usize) -> TcpStream {
    let source = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) as u32 % SOURCES;
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + source);
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_reuseaddr(true).unwrap();
    sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))
        .expect("bind a source address");
    let mut s = sock.connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    match proto {
        Proto::Mqtt => {
            let id = format!("idle-{}-{i}", std::process::id());
            s.write_all(&mqtt_connect(&id)).await.unwrap();
            let (first, body) = read_packet(&mut s).await.expect("CONNACK");
            assert_eq!((first, &body[..]), (0x20, &[0, 0][..]), "CONNACK accepted");
        }
        Proto::Stomp => {
            s.write_all(STOMP_CONNECT).await.unwrap();
            let mut got = Vec::new();
            while !got.contains(&0) {
                let mut b = [0u8; 512];
                let n = s.read(&mut b).await.unwrap();
                assert!(n > 0, "closed before CONNECTED");
                got.extend_from_slice(&b[..n]);
            }
            assert!(got.starts_with(b"CONNECTED"), "CONNECTED");
        }
    }
    s
}

/// Opens `n` connections; returns them and the connect rate (connections/s).
async fn open_all(server: &Server, n: usize) -> (Vec<TcpStream>, f64) {
    open_numbered(server, 0, n).await
}

/// Opens connections `first..first + n` (MQTT client ids of their own); returns them
/// and the connect rate (connections/s).
async fn open_numbered(server: &Server, first: usize, n: usize) -> (Vec<TcpStream>, f64) {
    let (addr, proto) = (server.addr, server.proto);
    let start = Instant::now();
    let tasks: Vec<_> = (0..GENERATORS)
        .map(|g| {
            tokio::spawn(async move {
                futures::stream::iter((first + g..first + n).step_by(GENERATORS))
                    .map(|i| open_one(addr, proto, i))
                    .buffer_unordered(IN_FLIGHT / GENERATORS)
                    .collect::<Vec<TcpStream>>()
                    .await
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(n);
    for t in tasks {
        conns.extend(t.await.expect("a connecting task"));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (conns, rate)
}

/// STOMP connections keep their heart-beats going (a newline every 5 s; what the
/// server sends is read and dropped), each in a task of the client's.
fn keep_stomp_alive(conns: Vec<TcpStream>) -> Vec<tokio::task::JoinHandle<()>> {
    conns
        .into_iter()
        .map(|s| {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let reader = async move {
                    let mut b = [0u8; 64];
                    while matches!(r.read(&mut b).await, Ok(n) if n > 0) {}
                };
                let writer = async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        if w.write_all(b"\n").await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! { _ = reader => {}, _ = writer => {} }
            })
        })
        .collect()
}

/// Anonymous resident memory of a process, KiB (`RssAnon`: the heap and stacks, not
/// the code pages the first connections fault in, which are file-backed and shared).
fn rss_anon_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Subscribes `LATENCY_SUBS` of the idle connections (QoS 1, a topic each), lets them
/// go idle again, then publishes one QoS 1 message to each, 2 ms apart: delivery
/// latencies (µs), sorted.
async fn publish_to_idle(server: &Server, conns: &mut Vec<TcpStream>) -> Vec<f64> {
    let tag = std::process::id();
    let mut waiting = Vec::new();
    for i in 0..LATENCY_SUBS.min(conns.len()) {
        let mut s = conns.pop().unwrap();
        let topic = format!("idle/{tag}/{i}");
        let mut body = vec![0, 1];
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.push(1);
        s.write_all(&packet(0x82, &body)).await.unwrap();
        let (first, _) = read_packet(&mut s).await.expect("SUBACK");
        assert_eq!(first, 0x90, "SUBACK");
        waiting.push(tokio::spawn(async move {
            let (first, body) = read_packet(&mut s).await.expect("PUBLISH");
            let at = now_ns();
            assert_eq!(first & 0xf6, 0x32, "a QoS 1 PUBLISH");
            let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
            let pid = [body[2 + tlen], body[3 + tlen]];
            let sent = u64::from_be_bytes(body[4 + tlen..12 + tlen].try_into().unwrap());
            s.write_all(&[0x40, 2, pid[0], pid[1]]).await.unwrap();
            (at.saturating_sub(sent) as f64 / 1000.0, s)
        }));
    }
    // Idle past `mqtt.park_idle_after` (2 s) again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut publisher = open_one(server.addr, Proto::Mqtt, usize::MAX).await;
    let (mut pr, mut pw) = publisher.split();
    let acks = async {
        let mut b = [0u8; 4096];
        let mut got = 0;
        while got < 4 * waiting.len() {
            match pr.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    };
    let sends = async {
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        for i in 0..waiting.len() {
            tick.tick().await;
            let topic = format!("idle/{tag}/{i}");
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(topic.as_bytes());
            body.extend_from_slice(&((i % 65535) as u16 + 1).to_be_bytes());
            body.extend_from_slice(&now_ns().to_be_bytes());
            pw.write_all(&packet(0x32, &body)).await.unwrap();
        }
    };
    tokio::join!(acks, sends);
    let mut lat = Vec::new();
    for w in waiting {
        let (l, s) = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a delivery to an idle subscriber within 10 s")
            .unwrap();
        lat.push(l);
        conns.push(s);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

struct Run {
    kib_per_conn: f64,
    anon_kib_per_conn: f64,
    connect_rate: f64,
    /// The server's CPU time (user + system) per connect over the timed bursts after
    /// the first, µs: on a shared 2-core machine the rate also depends on what the
    /// load generator gets of the cores, this does not.
    cpu_us_per_connect: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Waits (up to 10 s) until the server has closed what the client closed: its open
/// descriptors are back to `baseline`.
async fn closed_down_to(server: &Server, baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(server.pid) > baseline + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long the connect rate is measured for, at least (see [`connect_rate`]).
const RATE_FOR: Duration = Duration::from_secs(3);

/// The connect rate over at least [`RATE_FOR`] of connecting: one burst of `n` takes
/// 0.2–0.8 s, too short a sample on a shared machine. Bursts of `n` (new client ids),
/// each timed until its last CONNACK / CONNECTED, closed between bursts and the server
/// given the time to close them (untimed); `first` is the first burst's time (the
/// memory sample's connections). Returns the rate and the server's CPU µs per connect
/// over the bursts after the first (the closes between them not counted).
async fn connect_rate(server: &Server, n: usize, first: f64) -> (f64, f64) {
    let mut spent = n as f64 / first;
    let mut total = n;
    let baseline = open_fds(server.pid);
    let mut burst = 1;
    let mut cpu = 0.0;
    while spent < RATE_FOR.as_secs_f64() {
        let cpu_before = common::method::cpu_seconds(server.pid).unwrap_or(0.0);
        let start = Instant::now();
        let (conns, _) = open_numbered(server, burst * n, n).await;
        spent += start.elapsed().as_secs_f64();
        cpu += common::method::cpu_seconds(server.pid).unwrap_or(0.0) - cpu_before;
        total += n;
        burst += 1;
        drop(conns);
        closed_down_to(server, baseline).await;
    }
    let timed = (burst - 1) * n;
    (total as f64 / spent, cpu * 1e6 / timed.max(1) as f64)
}

/// Connections of the warm-up (see [`warm_up`]).
const WARM_UP: usize = 500;

/// Opens [`WARM_UP`] connections, lets them idle past `mqtt.park_idle_after` and closes
/// them, so that what the measured connections add is theirs: the code pages and
/// allocator pages any first connection faults in, and which a server that has served
/// clients before already holds, are in the baseline on both sides.
async fn warm_up(server: &Server) {
    let (mut conns, _) = open_all(server, WARM_UP).await;
    let mut keepers = Vec::new();
    if server.proto == Proto::Stomp {
        keepers = keep_stomp_alive(std::mem::take(&mut conns));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for k in keepers {
        k.abort();
    }
    drop(conns);
    tokio::time::sleep(Duration::from_millis(1000)).await;
}

async fn run(which: &str, n: usize) -> Run {
    let server = start(which);
    tokio::time::sleep(Duration::from_millis(300)).await;
    warm_up(&server).await;
    let before = common::rss_kb(server.pid);
    let baseline_fds = open_fds(server.pid);
    let anon_before = rss_anon_kb(server.pid);
    let (mut conns, first_rate) = open_all(&server, n).await;
    let mut keepers = Vec::new();
    if server.proto == Proto::Stomp {
        keepers = keep_stomp_alive(std::mem::take(&mut conns));
    }
    tokio::time::sleep(SETTLE).await;
    let after = common::rss_kb(server.pid);
    let kib_per_conn = after.saturating_sub(before) as f64 / n as f64;
    let anon_kib_per_conn = rss_anon_kb(server.pid).saturating_sub(anon_before) as f64 / n as f64;
    let (mut p50_us, mut p99_us) = (None, None);
    if server.proto == Proto::Mqtt {
        let lat = publish_to_idle(&server, &mut conns).await;
        p50_us = Some(pct(&lat, 0.5));
        p99_us = Some(pct(&lat, 0.99));
    }
    for k in keepers {
        k.abort();
    }
    drop(conns);
    closed_down_to(&server, baseline_fds).await;
    let (connect_rate, cpu_us_per_connect) = connect_rate(&server, n, first_rate).await;
    drop(server);
    Run {
        kib_per_conn,
        anon_kib_per_conn,
        connect_rate,
        cpu_us_per_connect,
        p50_us,
        p99_us,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    format!("{lo:.2}–{hi:.2}")
}

fn main() {
    let ns: Vec<usize> = std::env::var("CONN_BENCH_N")
        .unwrap_or_else(|_| "5000,10000,19000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("CONN_BENCH_N: numbers"))
        .collect();
    let servers: Vec<String> = std::env::var("CONN_BENCH")
        .unwrap_or_else(|_| "mqtt,mosquitto,stomp".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let repeat: usize = std::env::var("CONN_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for &n in &ns {
        let mut results: Vec<(String, Vec<Run>)> =
            servers.iter().map(|s| (s.clone(), Vec::new())).collect();
        for r in 0..repeat {
            // Alternate which side goes first.
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if r % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let run = rt.block_on(run(&servers[i], n));
                println!(
                    "  {n} {:<9} run {r}: {:.2} KiB/conn ({:.2} anonymous), {:.0} connects/s ({:.1} server CPU µs each){}",
                    servers[i],
                    run.kib_per_conn,
                    run.anon_kib_per_conn,
                    run.connect_rate,
                    run.cpu_us_per_connect,
                    match (run.p50_us, run.p99_us) {
                        (Some(a), Some(b)) =>
                            format!(", QoS 1 to an idle one p50 {a:.0} µs p99 {b:.0} µs"),
                        _ => String::new(),
                    }
                );
                results[i].1.push(run);
            }
        }
        let mut kib = std::collections::HashMap::new();
        let mut anon = std::collections::HashMap::new();
        let mut rates = std::collections::HashMap::new();
        let mut cpus = std::collections::HashMap::new();
        for (name, runs) in &mut results {
            let mut k: Vec<f64> = runs.iter().map(|r| r.kib_per_conn).collect();
            let mut a: Vec<f64> = runs.iter().map(|r| r.anon_kib_per_conn).collect();
            let mut c: Vec<f64> = runs.iter().map(|r| r.connect_rate).collect();
            let mut p99: Vec<f64> = runs.iter().filter_map(|r| r.p99_us).collect();
            let km = median(&mut k);
            kib.insert(name.clone(), km);
            let cm = median(&mut c);
            rates.insert(name.clone(), cm);
            let mut u: Vec<f64> = runs.iter().map(|r| r.cpu_us_per_connect).collect();
            let um = median(&mut u);
            cpus.insert(name.clone(), um);
            let am = median(&mut a);
            anon.insert(name.clone(), am);
            println!(
                "{n} idle {}: {km:.2} KiB/conn ({}; anonymous {am:.2}, {}), {cm:.0} connects/s ({}), {um:.1} server CPU µs per connect ({}){}",
                name,
                spread(&k),
                spread(&a),
                spread(&c)
                    .split('–')
                    .map(|x| format!("{:.0}", x.parse::<f64>().unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join("–"),
                spread(&u),
                if p99.is_empty() {
                    String::new()
                } else {
                    format!(", QoS 1 to an idle one p99 {:.0} µs", median(&mut p99))
                }
            );
        }
        if let (Some(sb), Some(mq)) = (kib.get("mqtt"), kib.get("mosquitto")) {
            println!(
                "{n} idle MQTT: switchboard / mosquitto = {:.2}× memory per connection ({:.2}× anonymous), {:.2}× connects/s, {:.2}× server CPU per connect (less is better)",
                sb / mq,
                anon["mqtt"] / anon["mosquitto"].max(0.001),
                rates["mqtt"] / rates["mosquitto"].max(0.001),
                cpus["mqtt"] / cpus["mosquitto"].max(0.001)
            );
            common::record(
                "Connections",
                &format!("RSS per idle MQTT connection, {n} connections"),
                "KiB",
                "cargo bench --bench connections",
                "idle MQTT 3.1.1, keep-alive 0, RSS delta after a 5 s settle",
                vec![
                    common::value_side("switchboard", &[*sb]),
                    common::value_side("mosquitto", &[*mq]),
                ],
                None,
            );
        }
    }
}
