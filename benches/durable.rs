//! Durable throughput and recovery (not a test).
//!
//! 1. Persistent, confirmed publishing with fsync `always`, 1 KiB bodies: Switchboard
//!    side by side with RabbitMQ, driven by the same load generator in the same run.
//!    The generator speaks STOMP to both: `SEND` with `persistent:true` and a `receipt`
//!    to a `/queue/…` destination. RabbitMQ's STOMP plugin declares such a queue durable,
//!    publishes persistent messages and sends a SEND's RECEIPT once the message is
//!    confirmed (publisher confirms), i.e. written to disk; Switchboard sends it once the
//!    message is in its journal and fsynced. Each publisher keeps a window of receipts
//!    outstanding; nobody consumes, so every message goes to disk.
//! 2. Recovery: a journal of 1,000,000 stored 1 KiB messages, and the time from starting
//!    the daemon on it to its listeners being ready (every message back in its queue).
//!
//! Run with `scripts/bench durable` (starts RabbitMQ when it is not answering);
//! `ONLY_RECOVERY=1` skips the throughput part.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::stomp_client::{Conn, connect};
use futures::{SinkExt, StreamExt};
use switchboard::core::persist;
use switchboard::core::{Destination, Message};
use switchboard::listener::stomp::codec::{Incoming, Outgoing};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};
use switchboard::store::{FileJournal, FsyncPolicy, Store};

/// One publisher: `n` persistent SENDs with receipts, `window` outstanding at a time.
async fn publisher(mut c: Conn, dest: String, body: Bytes, n: usize, window: usize) {
    let frame = |i: usize| {
        Outgoing::Frame(
            Frame::new(Cmd::Send)
                .with_header("destination", dest.as_str())
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
    SinkExt::<Outgoing>::flush(&mut c).await.unwrap();
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

async fn run(
    addr: SocketAddr,
    login: Option<(&str, &str)>,
    publishers: usize,
    window: usize,
    total: usize,
    tag: &str,
) -> f64 {
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut conns = Vec::new();
    for _ in 0..publishers {
        conns.push(connect(addr, login).await);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let dest = format!("/queue/durable-bench.{tag}.{i}");
        tasks.push(tokio::spawn(publisher(
            c,
            dest,
            body.clone(),
            total / publishers,
            window,
        )));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (total / publishers * publishers) as f64 / start.elapsed().as_secs_f64()
}

fn rabbit_purge(tag: &str, publishers: usize) {
    for i in 0..publishers {
        let _ = Command::new("scripts/peers/rabbitmq-ctl.sh")
            .args(["ctl", "delete_queue", &format!("durable-bench.{tag}.{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
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
    let ready = dir.join("ready.json");
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--routes"])
        .arg(dir.join("routes"))
        .arg("--data-dir")
        .arg(&data)
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
        .stderr(std::fs::File::create(dir.join("recovery.log")).unwrap())
        .spawn()
        .unwrap();
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.elapsed() < Duration::from_secs(120), "not ready");
    }
    let took = t.elapsed();
    common::row(
        "durable",
        &format!("recovery of {count} stored messages, start to ready"),
        "s",
        common::Fig::value(took.as_secs_f64()),
        None,
        Some(child.id()),
    );
    println!(
        "recovery of {count} stored messages: start to ready in {:.2} s (goal < 5 s); RSS {} MiB",
        took.as_secs_f64(),
        common::rss_kb(child.id()) / 1024
    );
    let _ = child.kill();
    let _ = child.wait();
    // What the daemon said about its recovery (how long the journal replay took).
    if let Ok(log) = std::fs::read_to_string(dir.join("recovery.log")) {
        for line in log
            .lines()
            .filter(|l| l.contains("recovered") || l.contains("restored") || l.contains("PHASE"))
        {
            println!("  {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let rabbit: SocketAddr = std::env::var("RABBITMQ_STOMP")
        .unwrap_or_else(|_| "127.0.0.1:61623".into())
        .parse()
        .unwrap();
    let rabbit_up = std::net::TcpStream::connect_timeout(&rabbit, Duration::from_secs(1)).is_ok();
    let (router, addr) = common::start_router("stomp", "");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "Durable benchmark (1 KiB, persistent, confirmed, fsync always): Switchboard {addr} vs RabbitMQ STOMP {rabbit}{}",
        if rabbit_up {
            ""
        } else {
            " (NOT RUNNING: ratios omitted)"
        }
    );
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "publishers × window", "sb msg/s", "rmq msg/s", "ratio"
    );
    let cases: &[(usize, usize, usize)] = if std::env::var_os("ONLY_RECOVERY").is_some() {
        &[]
    } else {
        &[
            (1, 1, 300),
            (8, 1, 2_000),
            (8, 64, 40_000),
            (32, 64, 60_000),
        ]
    };
    for (k, (publishers, window, total)) in cases.iter().enumerate() {
        let tag = format!("{k}x{}", std::process::id());
        let sb = rt.block_on(run(addr, None, *publishers, *window, *total, &tag));
        let name = format!("{publishers} × {window} ({total} msgs)");
        if rabbit_up {
            let rq = rt.block_on(run(
                rabbit,
                Some(("guest", "guest")),
                *publishers,
                *window,
                *total,
                &tag,
            ));
            rabbit_purge(&tag, *publishers);
            println!("{name:<28} {sb:>12.0} {rq:>12.0} {:>7.2}×", sb / rq);
            common::row(
                "durable",
                &format!("persistent 1 KiB, {publishers} publishers × {window} in flight"),
                "msg/s",
                common::Fig::value(sb),
                Some(("RabbitMQ STOMP", common::Fig::value(rq))),
                Some(router.0.id()),
            );
        } else {
            println!("{name:<28} {sb:>12.0}");
        }
    }
    recovery(1_000_000);
}
