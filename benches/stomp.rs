//! STOMP throughput and latency, Switchboard side by side with RabbitMQ's STOMP plugin,
//! driven by the same load generator in the same run (not a test).
//!
//! Run with `scripts/bench stomp` (starts RabbitMQ when it is not answering), or
//! `cargo bench --bench stomp` with RabbitMQ's STOMP on 127.0.0.1:61623 (guest/guest).
//! Scenarios: queue 1→1 and topic 1→10, 100-byte and 4 KiB bodies. Each publisher is
//! closed-loop (sends as fast as the broker accepts; TCP backpressure applies), each
//! message carries its send time, and subscribers measure end-to-end latency.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::stomp_client::{connect, now_ns, receipt};
use futures::{SinkExt, StreamExt};
use switchboard::listener::stomp::codec::{Incoming, Outgoing};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};

struct Outcome {
    msgs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

#[allow(clippy::too_many_arguments)]
async fn scenario(
    addr: SocketAddr,
    login: Option<(&str, &str)>,
    topic: bool,
    subs: usize,
    size: usize,
    n: usize,
    rate: Option<u64>,
    tag: &str,
) -> Outcome {
    let dest = if topic {
        format!("/topic/bench.{tag}")
    } else {
        format!("/queue/bench.{tag}")
    };
    let mut consumers = Vec::new();
    for i in 0..subs {
        let mut c = connect(addr, login).await;
        let f = Frame::new(Cmd::Subscribe)
            .with_header("id", format!("s{i}"))
            .with_header("destination", dest.as_str())
            .with_header("ack", "auto")
            .with_header("receipt", "sub");
        c.send(Outgoing::Frame(f)).await.unwrap();
        receipt(&mut c, "sub").await;
        consumers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            let mut got = 0;
            while got < n {
                match tokio::time::timeout(Duration::from_secs(30), c.next()).await {
                    Ok(Some(Ok(Incoming::Frame(f)))) if f.command == Cmd::Message => {
                        got += 1;
                        if let Some(t) = f.header("t").and_then(|t| t.parse::<u64>().ok()) {
                            lat.push(now_ns().saturating_sub(t));
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    other => panic!("subscriber stopped after {got}: {other:?}"),
                }
            }
            (Instant::now(), lat)
        }));
    }
    let mut p = connect(addr, login).await;
    let body = Bytes::from(vec![b'x'; size]);
    let header = bench_header();
    let start = Instant::now();
    // Open loop: batches of 10 on a fixed schedule, for latency at a sustainable rate.
    let pace = rate.map(|r| Duration::from_secs_f64(10.0 / r as f64));
    for i in 0..n {
        if let Some(p) = pace
            && i % 10 == 0
        {
            tokio::time::sleep_until((start + p * (i as u32 / 10)).into()).await;
        }
        let mut f = Frame::new(Cmd::Send)
            .with_header("destination", dest.as_str())
            .with_header("t", now_ns().to_string())
            .with_body(body.clone());
        if let Some((name, value)) = header {
            f = f.with_header(name, value);
        }
        if i + 1 == n {
            f = f.with_header("receipt", "end");
        }
        p.feed(Outgoing::Frame(f)).await.unwrap();
        if i % 64 == 63 || (pace.is_some() && i % 10 == 9) {
            SinkExt::<Outgoing>::flush(&mut p).await.unwrap();
        }
    }
    SinkExt::<Outgoing>::flush(&mut p).await.unwrap();
    receipt(&mut p, "end").await;
    let mut lat = Vec::new();
    let mut end = start;
    for c in consumers {
        let (t, l) = c.await.unwrap();
        end = end.max(t);
        lat.extend(l);
    }
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Outcome {
        msgs_per_s: (n * subs) as f64 / (end - start).as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// A header every SEND carries, from `SB_BENCH_HEADER`: `traceparent` (a valid W3C one,
/// which the router re-parents) or `plain` (an ordinary header of the same size); `None`
/// when unset (docs/benchmarks.md, "Cost of trace context").
fn bench_header() -> Option<(&'static str, &'static str)> {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    match std::env::var("SB_BENCH_HEADER").ok()?.as_str() {
        "traceparent" => Some(("traceparent", TP)),
        "plain" => Some(("x-not-traced", TP)),
        other => panic!("SB_BENCH_HEADER={other}: traceparent or plain"),
    }
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
        "STOMP benchmark: Switchboard {addr} vs RabbitMQ STOMP {rabbit}{}",
        if rabbit_up {
            ""
        } else {
            " (NOT RUNNING: ratios omitted)"
        }
    );
    println!(
        "{:<22} {:>12} {:>9} {:>9}   {:>12} {:>9} {:>9}   {:>7}",
        "scenario", "sb msg/s", "p50 µs", "p99 µs", "rmq msg/s", "p50 µs", "p99 µs", "ratio"
    );
    type Case = (&'static str, bool, usize, usize, usize, Option<u64>);
    let cases: &[Case] = &[
        ("queue 1→1, 100 B", false, 1, 100, 100_000, None),
        ("queue 1→1, 4 KiB", false, 1, 4096, 30_000, None),
        ("topic 1→10, 100 B", true, 10, 100, 20_000, None),
        ("topic 1→10, 4 KiB", true, 10, 4096, 5_000, None),
        ("queue 1→1 @5k/s", false, 1, 100, 20_000, Some(5_000)),
        ("topic 1→10 @2k/s", true, 10, 100, 8_000, Some(2_000)),
    ];
    // `STOMP_BENCH` runs only the scenarios whose name contains it (`STOMP_BENCH=", 100 B"`).
    let only = std::env::var("STOMP_BENCH").ok();
    for (i, (name, topic, subs, size, n, rate)) in cases.iter().enumerate() {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let tag = format!("{i}{}", std::process::id());
        let cpu = common::cpu_ns(router.0.id());
        let sb = rt.block_on(scenario(addr, None, *topic, *subs, *size, *n, *rate, &tag));
        common::print_cpu(name, router.0.id(), cpu, n * subs);
        let line_sb = format!(
            "{:>12.0} {:>9.0} {:>9.0}",
            sb.msgs_per_s, sb.p50_us, sb.p99_us
        );
        if rabbit_up {
            let rq = rt.block_on(scenario(
                rabbit,
                Some(("guest", "guest")),
                *topic,
                *subs,
                *size,
                *n,
                *rate,
                &tag,
            ));
            println!(
                "{:<22} {line_sb}   {:>12.0} {:>9.0} {:>9.0}   {:>6.2}×",
                name,
                rq.msgs_per_s,
                rq.p50_us,
                rq.p99_us,
                sb.msgs_per_s / rq.msgs_per_s
            );
            common::row(
                "STOMP",
                name,
                "msg/s",
                common::Fig::rate(sb.msgs_per_s, sb.p50_us, sb.p99_us),
                Some((
                    "RabbitMQ STOMP",
                    common::Fig::rate(rq.msgs_per_s, rq.p50_us, rq.p99_us),
                )),
                Some(router.0.id()),
            );
        } else {
            println!("{name:<22} {line_sb}");
        }
    }
    println!(
        "switchboard RSS after the run: {} MiB",
        common::rss_kb(router.0.id()) / 1024
    );
}
