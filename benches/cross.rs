//! Cross-protocol throughput and latency, Switchboard side by side with RabbitMQ doing the
//! same translation with its own STOMP and MQTT plugins, same load generator, same run
//! (not a test). `scripts/bench cross`.
//!
//! - STOMP → MQTT: a STOMP publisher SENDs to `/topic/bench.x`, an MQTT 3.1.1 subscriber
//!   (QoS 0) of `bench/x` receives. RabbitMQ maps both onto `amq.topic`, key `bench.x`.
//! - MQTT → AMQP: an MQTT publisher (QoS 1, 100 in flight) publishes to `bench/y`; an AMQP
//!   consumer (lapin, no-ack) reads a queue. Switchboard: a route from `bench/y` to its
//!   AMQP link, which publishes (with confirms) to that queue on RabbitMQ. RabbitMQ: its
//!   MQTT plugin publishes to `amq.topic`, where the queue is bound with `bench.y`.
//!
//! Both brokers keep messages in memory (Switchboard `--data-dir off`, non-durable
//! RabbitMQ queues). Figures: messages over the time from the first publish to the last
//! delivery; p50/p99 of the publish-to-delivery latency carried in each payload.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
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
const N: usize = 50_000;
const SIZE: usize = 100;

struct Outcome {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn outcome(start: Instant, end: Instant, mut lat: Vec<u64>) -> Outcome {
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    Outcome {
        rate: lat.len() as f64 / (end - start).as_secs_f64(),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

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
) -> Outcome {
    let mut sub =
        common::mqtt_client::connect(mqtt, &format!("x-sub-{}", std::process::id())).await;
    common::mqtt_client::subscribe(&mut sub, "bench/x", QoS::AtMostOnce).await;
    let recv = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(N);
        while lat.len() < N {
            match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
                Ok(Some(Ok((Packet::Publish(p), _)))) => {
                    lat.push(common::mqtt_client::now_ns().saturating_sub(sent_at(&p.payload)));
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("MQTT subscriber: {other:?} after {}", lat.len()),
            }
        }
        (Instant::now(), lat)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut publ = stomp_client::connect(stomp, login).await;
    let start = Instant::now();
    for _ in 0..N {
        let f = Frame::new(Cmd::Send)
            .with_header("destination", "/topic/bench.x")
            .with_body(payload());
        publ.feed(Outgoing::Frame(f)).await.expect("SEND");
    }
    SinkExt::<Outgoing>::flush(&mut publ).await.expect("flush");
    let (end, lat) = recv.await.expect("subscriber");
    outcome(start, end, lat)
}

async fn mqtt_to_amqp(mqtt: SocketAddr, queue: &str) -> Outcome {
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
        let mut lat = Vec::with_capacity(N);
        while lat.len() < N {
            match tokio::time::timeout(Duration::from_secs(30), consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    lat.push(common::mqtt_client::now_ns().saturating_sub(sent_at(&d.data)))
                }
                other => panic!("AMQP consumer: {other:?} after {}", lat.len()),
            }
        }
        (Instant::now(), lat)
    });
    let publ = common::mqtt_client::connect(mqtt, &format!("x-pub-{}", std::process::id())).await;
    let (mut tx, mut rx) = publ.split();
    let window = Arc::new(tokio::sync::Semaphore::new(100));
    let w2 = Arc::clone(&window);
    let acks = tokio::spawn(async move {
        let mut n = 0;
        while n < N {
            match rx.next().await {
                Some(Ok((Packet::PublishAck { .. }, _))) => {
                    n += 1;
                    w2.add_permits(1);
                }
                Some(Ok(_)) => {}
                other => panic!("MQTT publisher: {other:?}"),
            }
        }
    });
    let start = Instant::now();
    for i in 0..N {
        window.acquire().await.expect("window").forget();
        let pid = (i % 60_000) as u16 + 1;
        let body = payload();
        tx.send(common::mqtt_client::publish(
            "bench/y",
            QoS::AtLeastOnce,
            pid,
            &body,
        ))
        .await
        .expect("PUBLISH");
    }
    acks.await.expect("acks");
    let (end, lat) = recv.await.expect("consumer");
    drop(conn);
    outcome(start, end, lat)
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let routes = "routes:\n  - name: bench-mqtt-to-amqp\n    from: { mqtt: \"bench/y\" }\n    to: [ { amqp: { link: rabbit, routing_key: sb-bench-cross } } ]\n";
    let settings = format!("links:\n  rabbit:\n    amqp:\n      uri: \"{AMQP}\"\n");
    let (router, addrs) = common::start_listeners(&["stomp", "mqtt"], &settings, routes, false);
    let (sb_stomp, sb_mqtt) = (addrs[0], addrs[1]);
    let rmq_stomp: SocketAddr = "127.0.0.1:61623".parse().unwrap();
    let rmq_mqtt: SocketAddr = "127.0.0.1:1893".parse().unwrap();
    rt.block_on(declare("sb-bench-cross", None));
    rt.block_on(declare("rmq-bench-cross", Some("bench.y")));
    // The link connects in the background.
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "Cross-protocol benchmark: {N} messages of {SIZE} B, Switchboard vs RabbitMQ (same translation through its plugins)"
    );
    println!(
        "{:<24} {:>12} {:>9} {:>9}   {:>12} {:>9} {:>9}   {:>7}",
        "scenario", "sb msg/s", "p50 µs", "p99 µs", "rmq msg/s", "p50 µs", "p99 µs", "ratio"
    );
    let pid = router.0.id();
    let line = |name: &str, sb: Outcome, rmq: Outcome| {
        common::row(
            "cross-protocol",
            name,
            "msg/s",
            common::Fig::rate(sb.rate, sb.p50_us, sb.p99_us),
            Some((
                "RabbitMQ plugins",
                common::Fig::rate(rmq.rate, rmq.p50_us, rmq.p99_us),
            )),
            Some(pid),
        );
        println!(
            "{name:<24} {:>12.0} {:>9.0} {:>9.0}   {:>12.0} {:>9.0} {:>9.0}   {:>6.2}×",
            sb.rate,
            sb.p50_us,
            sb.p99_us,
            rmq.rate,
            rmq.p50_us,
            rmq.p99_us,
            sb.rate / rmq.rate
        );
    };
    let sb = rt.block_on(stomp_to_mqtt(sb_stomp, sb_mqtt, None));
    let rmq = rt.block_on(stomp_to_mqtt(rmq_stomp, rmq_mqtt, Some(("guest", "guest"))));
    line("STOMP → MQTT, 100 B", sb, rmq);
    let sb = rt.block_on(mqtt_to_amqp(sb_mqtt, "sb-bench-cross"));
    let rmq = rt.block_on(mqtt_to_amqp(rmq_mqtt, "rmq-bench-cross"));
    line("MQTT → AMQP, 100 B", sb, rmq);
    println!(
        "router RSS after the run: {} MiB",
        common::rss_kb(router.0.id()) / 1024
    );
}
