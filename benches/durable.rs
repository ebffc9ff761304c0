//! Durable throughput and recovery (not a test).
//!
//! 1. Persistent, confirmed publishing with fsync `always`, 1 KiB bodies: Switchboard
//!    side by side with RabbitMQ, driven by the same load generator in the same run.
//!    The generator speaks STOMP to both: `SEND` with `persistent:true` and a `receipt`
//!    to a `/queue/…` destination. RabbitMQ's STOMP plugin declares such a queue durable,
//!    publishes persistent messages and sends a SEND's RECEIPT once the message is
//!    confirmed (publisher confirms), i.e. written to disk; Switchboard sends it once the
//!    message is in its journal and fsynced. Each publisher keeps a window of receipts
//!    outstanding; nobody consumes, so every message goes to disk. Before the timed
//!    window each publisher sends one such message to its queue (both brokers create
//!    the queue then, not in the window); every Switchboard sample runs on a freshly
//!    started router (empty journal), and RabbitMQ's queues are deleted after every
//!    sample. Method: benches/common/method.rs (warm-up, alternating order, repeats,
//!    median and spread, CPU of the router and of RabbitMQ's VM).
//! 2. Recovery: a journal of 1,000,000 stored 1 KiB messages, and the time from starting
//!    the daemon on it to its listeners being ready (every message back in its queue),
//!    `SB_BENCH_REPEATS` starts on the same journal.
//!
//! Run with `scripts/bench durable` (starts RabbitMQ when it is not answering);
//! `ONLY_RECOVERY=1` skips the throughput part, `DURABLE_BENCH=TEXT` runs only the
//! throughput rows whose name contains TEXT.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::method::{self, Run, Side, Sizing, Window};
use common::stomp_client::{Conn, connect};
use futures::{SinkExt, StreamExt};
use switchboard::core::persist;
use switchboard::core::{Destination, Message};
use switchboard::listener::stomp::codec::{Incoming, Outgoing};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};
use switchboard::store::{FileJournal, FsyncPolicy, Store};

/// One publisher: `n` persistent SENDs with receipts, `window` outstanding at a time.
async fn publisher(c: &mut Conn, dest: &str, body: &Bytes, n: usize, window: usize) {
    let frame = |i: usize| {
        Outgoing::Frame(
            Frame::new(Cmd::Send)
                .with_header("destination", dest)
                .with_header("persistent", "true")
                .with_header("receipt", i.to_string())
                .with_body(body.clone()),
        )
    };
    let mut sent = 0;
    while sent < n.min(window) {
        c.feed(frame(sent)).await.unwrap();
        sent += 1;
    }
    SinkExt::<Outgoing>::flush(c).await.unwrap();
    let mut done = 0;
    while done < n {
        match tokio::time::timeout(Duration::from_secs(60), c.next()).await {
            Ok(Some(Ok(Incoming::Frame(f)))) if f.command == Cmd::Receipt => {
                done += 1;
                if sent < n {
                    c.send(frame(sent)).await.unwrap();
                    sent += 1;
                }
            }
            Ok(Some(Ok(Incoming::Frame(f)))) if f.command == Cmd::Error => {
                panic!("ERROR: {:?} {:?}", f.headers, f.body)
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("publisher stopped after {done}: {other:?}"),
        }
    }
}

/// One sample: `publishers` connections sending `total` messages between them (each to a
/// queue of its own, created before the window by one message of the same kind).
async fn run(
    addr: SocketAddr,
    pids: &[u32],
    login: Option<(&str, &str)>,
    publishers: usize,
    window: usize,
    total: usize,
    tag: &str,
) -> Run {
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut conns = Vec::new();
    for i in 0..publishers {
        let mut c = connect(addr, login).await;
        publisher(&mut c, &dest(tag, i), &body, 1, 1).await;
        conns.push(c);
    }
    let per = total.div_ceil(publishers).max(1);
    let timed = Window::open(pids);
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let (d, body) = (dest(tag, i), body.clone());
        tasks.push(tokio::spawn(async move {
            publisher(&mut c, &d, &body, per, window).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    timed.close((per * publishers) as u64, Vec::new())
}

fn dest(tag: &str, i: usize) -> String {
    format!("/queue/durable-bench.{tag}.{i}")
}

async fn rabbit_delete(tag: &str, publishers: usize) {
    let names: Vec<String> = (0..publishers)
        .map(|i| format!("durable-bench.{tag}.{i}"))
        .collect();
    common::peers::rabbitmq_delete_queues(&names).await;
}

fn recovery(count: usize) {
    let dir = std::env::temp_dir().join(format!("sb-bench-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let t = Instant::now();
    {
        let store =
            FileJournal::open(&data, FsyncPolicy::Interval(Duration::from_secs(1))).unwrap();
        let queue = store.queue("recovery");
        let dest = Destination::queue("recovery");
        for i in 0..count as u64 {
            let mut m = Message::new(vec![b'r'; 1024]);
            m.persistent = true;
            let _ = queue.append(i, persist::encode_queued(&dest, &m).into());
        }
        store.close();
    }
    let size: u64 = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "journal of {count} messages written in {:.1} s ({} MiB)",
        t.elapsed().as_secs_f64(),
        size / (1024 * 1024)
    );
    let plan = common::method::plan();
    let mut took = Vec::new();
    let mut rss_mib = 0;
    for k in 0..plan.repeats {
        let (t, rss) = start_on(&dir, &data, k);
        println!(
            "recovery of {count} stored messages: start to ready in {t:.2} s (goal < 5 s); RSS {rss} MiB"
        );
        took.push(t);
        rss_mib = rss;
    }
    common::record(
        "durable",
        &format!("recovery of {count} stored messages, start to ready"),
        "s",
        "ONLY_RECOVERY=1 scripts/bench durable",
        "starts of the daemon on the same journal of 1 KiB messages",
        vec![common::value_side("Switchboard", &took)],
        Some(rss_mib as f64),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts the daemon on the journal in `data`: seconds to ready and its RSS then (MiB).
fn start_on(dir: &std::path::Path, data: &std::path::Path, k: usize) -> (f64, u64) {
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let t = Instant::now();
    let mut child = Command::new(common::router_binary())
        .args(["run", "--routes"])
        .arg(dir.join("routes"))
        .arg("--data-dir")
        .arg(data)
        .arg("--ready-file")
        .arg(&ready)
        .args([
            "--listen",
            "admin=127.0.0.1:0",
            "--listen",
            "stomp=127.0.0.1:0",
        ])
        .args([
            "--listen",
            "stomp-ws=off",
            "--listen",
            "mqtt=off",
            "--listen",
            "mqtt-ws=off",
        ])
        .env("SWITCHBOARD_LOG", "info")
        .stderr(std::fs::File::create(dir.join(format!("recovery-{k}.log"))).unwrap())
        .spawn()
        .unwrap();
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.elapsed() < Duration::from_secs(120), "not ready");
    }
    let took = t.elapsed().as_secs_f64();
    let rss = common::rss_kb(child.id()) / 1024;
    let _ = child.kill();
    let _ = child.wait();
    // What the daemon said about its recovery (how long the journal replay took).
    if let Ok(log) = std::fs::read_to_string(dir.join(format!("recovery-{k}.log"))) {
        for line in log
            .lines()
            .filter(|l| l.contains("recovered") || l.contains("restored") || l.contains("PHASE"))
        {
            println!("  {line}");
        }
    }
    (took, rss)
}

fn main() {
    let plan = common::method::plan();
    let rabbit: SocketAddr = std::env::var("RABBITMQ_STOMP")
        .unwrap_or_else(|_| "127.0.0.1:61623".into())
        .parse()
        .unwrap();
    let rabbit_up =
        plan.peers && std::net::TcpStream::connect_timeout(&rabbit, Duration::from_secs(1)).is_ok();
    let rabbit_pids: Vec<u32> = common::peers::rabbitmq_pid().into_iter().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "Durable benchmark (1 KiB, persistent, confirmed, fsync always; {plan:?}): Switchboard vs RabbitMQ STOMP {rabbit}{}",
        if rabbit_up { "" } else { " (not compared)" }
    );
    // (publishers, window, warm-up messages, at most)
    let cases: &[(usize, usize, usize, usize)] = if std::env::var_os("ONLY_RECOVERY").is_some() {
        &[]
    } else {
        &[
            (1, 1, 300, 100_000),
            (8, 1, 2_000, 300_000),
            (8, 64, 20_000, 1_000_000),
            (32, 64, 30_000, 1_000_000),
        ]
    };
    let only = std::env::var("DURABLE_BENCH").ok();
    let rt = &rt;
    for (k, &(publishers, window, warm, max)) in cases.iter().enumerate() {
        let name = format!("persistent 1 KiB, {publishers} publishers × {window} in flight");
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let mut rss = None;
        let mut j = 0;
        let mut sides = vec![Side::new("Switchboard", |n| {
            j += 1;
            // A fresh router (empty journal) every sample.
            let (router, addr) = common::start_router("stomp", "");
            let tag = format!("{k}x{}s{j}", std::process::id());
            let run = rt.block_on(run(
                addr,
                &[router.0.id()],
                None,
                publishers,
                window,
                n,
                &tag,
            ));
            rss = common::rss_mib(router.0.id());
            run
        })];
        let mut i = 0;
        if rabbit_up {
            sides.push(Side::new("RabbitMQ STOMP", |n| {
                i += 1;
                let tag = format!("{k}x{}r{i}", std::process::id());
                let run = rt.block_on(run(
                    rabbit,
                    &rabbit_pids,
                    Some(("guest", "guest")),
                    publishers,
                    window,
                    n,
                    &tag,
                ));
                rt.block_on(rabbit_delete(&tag, publishers));
                run
            }));
        }
        let stats = method::compare(&plan, Sizing::Closed { warm, max }, &mut sides);
        drop(sides);
        common::record_stats(
            "durable",
            &name,
            &format!(
                "DURABLE_BENCH=\"{publishers} publishers × {window} in flight\" scripts/bench durable"
            ),
            "RECEIPT once on disk on both (Switchboard fsync always, RabbitMQ publisher confirms); queues created before the window; a fresh router every sample, RabbitMQ's queues deleted after every sample",
            &stats,
            rss,
        );
    }
    recovery(1_000_000);
}
