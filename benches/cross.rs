//! Cross-protocol throughput and latency, Switchboard side by side with RabbitMQ doing the
//! same translation with its own STOMP and MQTT plugins, same load generator, same run
//! (not a test). `scripts/bench cross`.
//!
//! - STOMP → MQTT: a STOMP publisher SENDs to `/topic/bench.x`, an MQTT 3.1.1 subscriber
//!   (QoS 0) of `bench/x` receives. RabbitMQ maps both onto `amq.topic`, key `bench.x`.
//! - MQTT → AMQP: an MQTT publisher publishes QoS 0 to `bench/y`; an AMQP consumer
//!   (lapin, no-ack) reads a queue. Switchboard: a route from `bench/y` to its AMQP link,
//!   which publishes (with confirms) to that queue on RabbitMQ. RabbitMQ: its MQTT plugin
//!   publishes to `amq.topic`, where the queue is bound with `bench.y`. QoS 0 so that both
//!   sides give the publisher the same guarantee, none: at QoS 1 Switchboard PUBACKs once
//!   the message is queued for its link while RabbitMQ's plugin PUBACKs on its own
//!   confirm, and the row measured that difference.
//!
//! Both brokers keep messages in memory (Switchboard `--data-dir off`, non-durable
//! RabbitMQ queues). Figures: messages over the time from the first publish to the last
//! delivery; latency percentiles of the publish-to-delivery time carried in each payload;
//! every row follows benches/common/method.rs (warm-up, rotating order, repeats, median
//! and spread, CPU of the router and of RabbitMQ's VM).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::stomp_client;
use futures::{SinkExt, StreamExt};
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use rmqtt_codec::types::QoS;
use rmqtt_codec::v3::Packet;
use switchboard::listener::stomp::codec::Outgoing;
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const SIZE: usize = 100;

use common::method::{self, Run, Side, Sizing, Window};

fn payload() -> Bytes {
    let mut b = common::mqtt_client::now_ns().to_be_bytes().to_vec();
    b.resize(SIZE, b'x');
    b.into()
}

fn sent_at(body: &[u8]) -> u64 {
    body.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

async fn stomp_to_mqtt(
    stomp: SocketAddr,
    mqtt: SocketAddr,
    login: Option<(&str, &str)>,
    pids: &[u32],
    n: usize,
    tag: &str,
) -> Run {
    let mut sub = common::mqtt_client::connect(mqtt, &format!("x-sub-{tag}")).await;
    common::mqtt_client::subscribe(&mut sub, "bench/x", QoS::AtMostOnce).await;
    let recv = tokio::spawn(async move { receive_mqtt(sub, n).await });
    let mut publ = stomp_client::connect(stomp, login).await;
    let window = Window::open(pids);
    for _ in 0..n {
        let f = Frame::new(Cmd::Send)
            .with_header("destination", "/topic/bench.x")
            .with_body(payload());
        publ.feed(Outgoing::Frame(f)).await.expect("SEND");
    }
    SinkExt::<Outgoing>::flush(&mut publ).await.expect("flush");
    let (end, lat) = recv.await.expect("subscriber");
    let got = lat.len() as u64;
    window
        .close_at(end.unwrap_or_else(Instant::now), got, lat)
        .expecting(n as u64)
}

/// Reads up to `n` QoS 0 deliveries; stops after 10 s without one (QoS 0 may be dropped).
async fn receive_mqtt(mut sub: common::mqtt_client::Conn, n: usize) -> (Option<Instant>, Vec<u64>) {
    let mut lat = Vec::with_capacity(n);
    let mut last = None;
    while lat.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(Ok((Packet::Publish(p), _)))) => {
                last = Some(Instant::now());
                lat.push(common::mqtt_client::now_ns().saturating_sub(sent_at(&p.payload)));
            }
            Ok(Some(Ok(_))) => {}
            other => {
                println!("  MQTT subscriber stopped after {}: {other:?}", lat.len());
                break;
            }
        }
    }
    (last, lat)
}

async fn mqtt_to_amqp(mqtt: SocketAddr, queue: &str, pids: &[u32], n: usize, tag: &str) -> Run {
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .expect("AMQP connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let recv = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(n);
        let mut last = None;
        while lat.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    last = Some(Instant::now());
                    lat.push(common::mqtt_client::now_ns().saturating_sub(sent_at(&d.data)))
                }
                other => {
                    println!("  AMQP consumer stopped after {}: {other:?}", lat.len());
                    break;
                }
            }
        }
        (last, lat)
    });
    let mut publ = common::mqtt_client::connect(mqtt, &format!("x-pub-{tag}")).await;
    let window = Window::open(pids);
    for i in 0..n {
        let body = payload();
        publ.feed(common::mqtt_client::publish(
            "bench/y",
            QoS::AtMostOnce,
            0,
            &body,
        ))
        .await
        .expect("PUBLISH");
        if i % 64 == 63 {
            publ.flush().await.expect("flush");
        }
    }
    publ.flush().await.expect("flush");
    let (end, lat) = recv.await.expect("consumer");
    drop(conn);
    let got = lat.len() as u64;
    window
        .close_at(end.unwrap_or_else(Instant::now), got, lat)
        .expecting(n as u64)
}
/// Declares the non-durable queue `name` on RabbitMQ, bound to `amq.topic` with `key`
/// when given.
async fn declare(name: &str, key: Option<&str>) {
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .expect("AMQP connect (scripts/setup rabbitmq)");
    let ch = conn.create_channel().await.expect("channel");
    let _ = ch.queue_delete(name.into(), Default::default()).await;
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            auto_delete: false,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    if let Some(k) = key {
        ch.queue_bind(
            name.into(),
            "amq.topic".into(),
            k.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
}

fn main() {
    let plan = method::plan();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let routes = "routes:\n  - name: bench-mqtt-to-amqp\n    from: { mqtt: \"bench/y\" }\n    to: [ { amqp: { link: rabbit, routing_key: sb-bench-cross } } ]\n";
    // A session queue of 1,000,000: with the default 10,000 the router drops the oldest
    // QoS 0 message when the subscriber lags behind a closed-loop publisher, where
    // RabbitMQ holds the publisher back and drops nothing.
    let settings = format!(
        "mqtt:\n  max_queued: 1000000\nlinks:\n  rabbit:\n    amqp:\n      uri: \"{AMQP}\"\n"
    );
    rt.block_on(declare("sb-bench-cross", None));
    rt.block_on(declare("rmq-bench-cross", Some("bench.y")));
    let (router, addrs) =
        common::start_listeners(&["stomp", "mqtt", "admin"], &settings, routes, false);
    let (sb_stomp, sb_mqtt) = (addrs[0], addrs[1]);
    common::wait_link_connected(addrs[2]);
    let rmq_stomp: SocketAddr = "127.0.0.1:61623".parse().unwrap();
    let rmq_mqtt: SocketAddr = "127.0.0.1:1893".parse().unwrap();
    let rabbit = common::peers::rabbitmq_pid();
    // The router's path involves RabbitMQ too (the link publishes there): both CPUs count.
    let sb_pids: Vec<u32> = std::iter::once(router.0.id()).chain(rabbit).collect();
    let rmq_pids: Vec<u32> = rabbit.into_iter().collect();
    println!(
        "Cross-protocol benchmark ({plan:?}): {SIZE} B messages, Switchboard vs RabbitMQ (same translation through its plugins)"
    );
    let only = std::env::var("CROSS_BENCH").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let sizing = Sizing::Closed {
        warm: 10_000,
        max: 3_000_000,
    };
    let rt = &rt;
    let name = "STOMP → MQTT, 100 B";
    if wanted(name) {
        let mut k = 0;
        let mut sides = vec![Side::new("Switchboard", |n| {
            k += 1;
            rt.block_on(stomp_to_mqtt(
                sb_stomp,
                sb_mqtt,
                None,
                &sb_pids[..1],
                n,
                &format!("sb{k}"),
            ))
        })];
        let mut j = 0;
        if plan.peers {
            sides.push(Side::new("RabbitMQ plugins", |n| {
                j += 1;
                rt.block_on(stomp_to_mqtt(
                    rmq_stomp,
                    rmq_mqtt,
                    Some(("guest", "guest")),
                    &rmq_pids,
                    n,
                    &format!("rmq{j}"),
                ))
            }));
        }
        let stats = method::compare(&plan, sizing, &mut sides);
        drop(sides);
        common::record_stats(
            "cross-protocol",
            name,
            &format!("CROSS_BENCH=\"{name}\" scripts/bench cross"),
            "QoS 0 subscriber; both in memory; router mqtt.max_queued 1,000,000 (its default 10,000 drops the oldest when the subscriber lags; RabbitMQ holds the publisher back instead)",
            &stats,
            common::rss_mib(router.0.id()),
        );
    }
    let name = "MQTT QoS 0 → AMQP, 100 B";
    if wanted(name) {
        let mut k = 0;
        let mut sides = vec![Side::new("Switchboard", |n| {
            k += 1;
            rt.block_on(mqtt_to_amqp(
                sb_mqtt,
                "sb-bench-cross",
                &sb_pids,
                n,
                &format!("sb{k}"),
            ))
        })];
        let mut j = 0;
        if plan.peers {
            sides.push(Side::new("RabbitMQ plugins", |n| {
                j += 1;
                rt.block_on(mqtt_to_amqp(
                    rmq_mqtt,
                    "rmq-bench-cross",
                    &rmq_pids,
                    n,
                    &format!("rmq{j}"),
                ))
            }));
        }
        let stats = method::compare(&plan, sizing, &mut sides);
        drop(sides);
        common::record_stats(
            "cross-protocol",
            name,
            &format!("CROSS_BENCH=\"{name}\" scripts/bench cross"),
            "same guarantee: QoS 0, no publisher acknowledgement on either side (Switchboard's link still publishes with confirms); the router's path runs through RabbitMQ too, so its per CPU-s ratio counts the router and RabbitMQ",
            &stats,
            common::rss_mib(router.0.id()),
        );
    }
    rt.block_on(common::peers::rabbitmq_delete_queues(&[
        "sb-bench-cross".into(),
        "rmq-bench-cross".into(),
    ]));
    println!(
        "router RSS after the run: {} MiB",
        common::rss_kb(router.0.id()) / 1024
    );
}
