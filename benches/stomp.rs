//! STOMP throughput and latency, Switchboard side by side with RabbitMQ's STOMP plugin,
//! driven by the same load generator in the same run (not a test).
//!
//! Run with `scripts/bench stomp` (starts RabbitMQ when it is not answering), or
//! `cargo bench --bench stomp` with RabbitMQ's STOMP on 127.0.0.1:61623 (guest/guest).
//! Scenarios: queue 1→1 and topic 1→10, 100-byte and 4 KiB bodies, closed loop (the
//! publisher sends as fast as the broker accepts; TCP backpressure applies), and the
//! same at fixed rates for latency. Nothing may be lost on either side: the router's
//! topic subscriptions are set to `overflow: block` (their default, `drop-head`, drops
//! for a slow subscriber where RabbitMQ slows the publisher). Each message carries its send time, and subscribers
//! measure end-to-end latency. Every row follows benches/common/method.rs (warm-up,
//! rotating order, repeats, median and spread, CPU of each broker); the RabbitMQ queues
//! a sample declared are deleted after it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::stomp_client::{connect, now_ns, receipt};
use futures::{SinkExt, StreamExt};
use switchboard::listener::stomp::codec::{Incoming, Outgoing};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};

use common::method::{self, Run, Side, Sizing, Window};
use common::pacer::{self, Pacer};

#[allow(clippy::too_many_arguments)]
async fn scenario(
    addr: SocketAddr,
    pids: &[u32],
    login: Option<(&str, &str)>,
    topic: bool,
    subs: usize,
    size: usize,
    n: usize,
    rate: Option<u64>,
    tag: &str,
) -> Run {
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
            let mut last = None;
            while got < n {
                match tokio::time::timeout(Duration::from_secs(30), c.next()).await {
                    Ok(Some(Ok(Incoming::Frame(f)))) if f.command == Cmd::Message => {
                        got += 1;
                        last = Some(Instant::now());
                        if let Some(t) = f.header("t").and_then(|t| t.parse::<u64>().ok()) {
                            lat.push(now_ns().saturating_sub(t));
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    other => {
                        println!("  subscriber stopped after {got} of {n}: {other:?}");
                        break;
                    }
                }
            }
            (last, lat, got as u64)
        }));
    }
    let mut p = connect(addr, login).await;
    let body = Bytes::from(vec![b'x'; size]);
    let header = bench_header();
    let window = Window::open(pids);
    let start = window.started();
    // Open loop at a fixed rate, each message when it is due (benches/common/pacer.rs).
    let pacer = rate.map(|r| Pacer::new(r, start));
    for i in 0..n {
        let caught_up = pacer::wait(pacer.as_ref(), i).await;
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
        if i % 64 == 63 || caught_up {
            SinkExt::<Outgoing>::flush(&mut p).await.unwrap();
        }
    }
    SinkExt::<Outgoing>::flush(&mut p).await.unwrap();
    receipt(&mut p, "end").await;
    let mut lat = Vec::new();
    let mut end = start;
    let mut got = 0;
    for c in consumers {
        let (t, l, g) = c.await.unwrap();
        end = t.map_or(end, |t| end.max(t));
        lat.extend(l);
        got += g;
    }
    window.close_at(end, got, lat).expecting((n * subs) as u64)
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
    let plan = method::plan();
    let rabbit: SocketAddr = std::env::var("RABBITMQ_STOMP")
        .unwrap_or_else(|_| "127.0.0.1:61623".into())
        .parse()
        .unwrap();
    let rabbit_up =
        plan.peers && std::net::TcpStream::connect_timeout(&rabbit, Duration::from_secs(1)).is_ok();
    let rabbit_pids: Vec<u32> = common::peers::rabbitmq_pid().into_iter().collect();
    // Topic subscriptions wait for their subscriber as RabbitMQ's do (its credit flow
    // slows the publisher; nothing is dropped): the router's default for them is
    // `drop-head`, which lost messages on the closed-loop topic rows once publishing
    // outran ten subscribers (2026-12-05). Same guarantee on both sides.
    let (router, addr) = common::start_router(
        "stomp",
        "queues:\n  subscription_defaults:\n    overflow: block\n",
    );
    let router_pids = vec![router.0.id()];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "STOMP benchmark ({plan:?}): Switchboard {addr} vs RabbitMQ STOMP {rabbit}{}",
        if rabbit_up { "" } else { " (not compared)" }
    );
    type Case = (&'static str, bool, usize, usize, Sizing);
    let closed = |warm: usize, max: usize| Sizing::Closed { warm, max };
    let cases: &[Case] = &[
        ("queue 1→1, 100 B", false, 1, 100, closed(10_000, 3_000_000)),
        ("queue 1→1, 4 KiB", false, 1, 4096, closed(5_000, 1_000_000)),
        ("topic 1→10, 100 B", true, 10, 100, closed(2_000, 1_000_000)),
        ("topic 1→10, 4 KiB", true, 10, 4096, closed(1_000, 300_000)),
        (
            "queue 1→1 @5k/s",
            false,
            1,
            100,
            Sizing::Fixed { rate: 5_000 },
        ),
        (
            "topic 1→10 @2k/s",
            true,
            10,
            100,
            Sizing::Fixed { rate: 2_000 },
        ),
    ];
    // `STOMP_BENCH` runs only the scenarios whose name contains it (`STOMP_BENCH=", 100 B"`).
    let only = std::env::var("STOMP_BENCH").ok();
    for (i, (name, topic, subs, size, sizing)) in cases.iter().enumerate() {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let rate = match sizing {
            Sizing::Fixed { rate } => Some(*rate),
            _ => None,
        };
        let rt = &rt;
        let side = |name: &str, addr: SocketAddr, pids: Vec<u32>, login| {
            let mut k = 0;
            Side::new(name, move |n| {
                k += 1;
                let tag = format!("{i}-{}-{k}", std::process::id());
                let run = rt.block_on(scenario(
                    addr, &pids, login, *topic, *subs, *size, n, rate, &tag,
                ));
                if login.is_some() && !*topic {
                    rt.block_on(common::peers::rabbitmq_delete_queues(&[format!(
                        "bench.{tag}"
                    )]));
                }
                run
            })
        };
        let mut sides = vec![side("Switchboard", addr, router_pids.clone(), None)];
        if rabbit_up {
            sides.push(side(
                "RabbitMQ STOMP",
                rabbit,
                rabbit_pids.clone(),
                Some(("guest", "guest")),
            ));
        }
        let stats = method::compare(&plan, *sizing, &mut sides);
        drop(sides);
        common::record_stats(
            "STOMP",
            name,
            &format!("STOMP_BENCH=\"{name}\" scripts/bench stomp"),
            "Switchboard with its journal on (these messages are not persistent); RabbitMQ /queue/ = durable queue, /topic/ = amq.topic",
            &stats,
            common::rss_mib(router.0.id()),
        );
    }
    println!(
        "switchboard RSS after the run: {} MiB",
        common::rss_kb(router.0.id()) / 1024
    );
}
