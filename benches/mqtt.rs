//! MQTT throughput, latency and memory, Switchboard side by side with Mosquitto, driven by
//! the same load generator in the same run (not a test).
//!
//! Run with `scripts/bench mqtt` (starts Mosquitto on 127.0.0.1:18830 when it is not
//! answering). The load generator is a minimal MQTT 3.1.1 client over `rmqtt-codec`.
//! Scenarios: QoS 0 and QoS 1 1→1, QoS 0 fan-out 1→100 (closed loop), 1→1 at a fixed
//! rate for latency, resident memory per idle connection at 10,000 connections, and bytes
//! per message to a 5.0 subscriber with outbound topic aliases (`MQTT_BENCH=aliases`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rmqtt_codec::types::QoS;
use rmqtt_codec::v3::Packet;

use common::mqtt_client::{connect, now_ns, publish, subscribe};

struct Outcome {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn scenario(
    addr: SocketAddr,
    qos: QoS,
    subs: usize,
    size: usize,
    n: usize,
    rate: Option<u64>,
    tag: &str,
) -> Outcome {
    let topic = format!("bench/{tag}");
    let mut consumers = Vec::new();
    for i in 0..subs {
        let mut c = connect(addr, &format!("sub-{tag}-{i}")).await;
        subscribe(&mut c, &topic, qos).await;
        consumers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            let mut got = 0;
            while got < n {
                match tokio::time::timeout(Duration::from_secs(30), c.next()).await {
                    Ok(Some(Ok((Packet::Publish(p), _)))) => {
                        got += 1;
                        if p.payload.len() >= 8 {
                            let t = u64::from_be_bytes(p.payload[..8].try_into().unwrap_or([0; 8]));
                            lat.push(now_ns().saturating_sub(t));
                        }
                        if let Some(pid) = p.packet_id {
                            c.send(Packet::PublishAck { packet_id: pid }).await.unwrap();
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    other => panic!("subscriber stopped after {got}: {other:?}"),
                }
            }
            let _ = c.flush().await;
            (Instant::now(), lat)
        }));
    }
    let body = Bytes::from(vec![b'x'; size.max(8)]);
    let (start, acks) = match common::mqtt_client::bench_header() {
        None => publish_v3(addr, &topic, qos, n, rate, &body, tag).await,
        Some(h) => publish_v5(addr, &topic, qos, n, rate, &body, tag, h).await,
    };
    let mut lat = Vec::new();
    let mut end = start;
    for c in consumers {
        let (t, l) = c.await.unwrap();
        end = end.max(t);
        lat.extend(l);
    }
    acks.abort();
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Outcome {
        rate: (n * subs) as f64 / (end - start).as_secs_f64(),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

/// The 3.1.1 publisher of a scenario; returns when it started, and its task reading
/// acknowledgements (aborted once the subscribers are done).
async fn publish_v3(
    addr: SocketAddr,
    topic: &str,
    qos: QoS,
    n: usize,
    rate: Option<u64>,
    body: &Bytes,
    tag: &str,
) -> (Instant, tokio::task::JoinHandle<()>) {
    let p = connect(addr, &format!("pub-{tag}")).await;
    let (mut sink, mut stream) = p.split();
    // QoS 1: a window of 100 unacknowledged publishes, as a real client keeps.
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let acks = {
        let window = window.clone();
        tokio::spawn(async move {
            while let Some(Ok((pk, _))) = stream.next().await {
                if let Packet::PublishAck { .. } = pk {
                    window.add_permits(1);
                }
            }
        })
    };
    let pace = rate.map(|r| Duration::from_secs_f64(10.0 / r as f64));
    let start = Instant::now();
    for i in 0..n {
        if let Some(p) = pace
            && i % 10 == 0
        {
            tokio::time::sleep_until((start + p * (i as u32 / 10)).into()).await;
        }
        let pid = if qos == QoS::AtMostOnce {
            0
        } else {
            window.acquire().await.unwrap().forget();
            (i % 65_000 + 1) as u16
        };
        sink.feed(publish(topic, qos, pid, body)).await.unwrap();
        if i % 64 == 63 || pace.is_some() {
            sink.flush().await.unwrap();
        }
    }
    sink.flush().await.unwrap();
    (start, acks)
}

/// [`publish_v3`] as an MQTT 5 client whose every PUBLISH carries the user property
/// `header` (`SB_BENCH_HEADER`).
#[allow(clippy::too_many_arguments)]
async fn publish_v5(
    addr: SocketAddr,
    topic: &str,
    qos: QoS,
    n: usize,
    rate: Option<u64>,
    body: &Bytes,
    tag: &str,
    header: (&str, &str),
) -> (Instant, tokio::task::JoinHandle<()>) {
    use common::mqtt_client::v5;
    let p = v5::connect(addr, &format!("pub-{tag}")).await;
    let (mut sink, mut stream) = p.split();
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let acks = {
        let window = window.clone();
        tokio::spawn(async move {
            while let Some(Ok((pk, _))) = stream.next().await {
                if let rmqtt_codec::v5::Packet::PublishAck(_) = pk {
                    window.add_permits(1);
                }
            }
        })
    };
    let pace = rate.map(|r| Duration::from_secs_f64(10.0 / r as f64));
    let start = Instant::now();
    for i in 0..n {
        if let Some(p) = pace
            && i % 10 == 0
        {
            tokio::time::sleep_until((start + p * (i as u32 / 10)).into()).await;
        }
        let pid = if qos == QoS::AtMostOnce {
            0
        } else {
            window.acquire().await.unwrap().forget();
            (i % 65_000 + 1) as u16
        };
        sink.feed(v5::publish(topic, qos, pid, body, header))
            .await
            .unwrap();
        if i % 64 == 63 || pace.is_some() {
            sink.flush().await.unwrap();
        }
    }
    sink.flush().await.unwrap();
    (start, acks)
}

/// KiB of resident memory per idle connection, over `n` connections.
async fn idle_memory(addr: SocketAddr, pid: u32, n: usize) -> f64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = common::rss_kb(pid);
    let mut conns = Vec::with_capacity(n);
    for chunk in 0..n / 500 {
        let mut batch = Vec::new();
        for i in 0..500 {
            let id = format!("idle-{pid}-{chunk}-{i}");
            batch.push(tokio::spawn(async move { connect(addr, &id).await }));
        }
        for b in batch {
            conns.push(b.await.unwrap());
        }
    }
    // Idle past `mqtt.park_idle_after` (2 s): Switchboard's connections wait in its
    // idle-connection poller by then; Mosquitto's figure does not change with time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = common::rss_kb(pid);
    drop(conns);
    (after.saturating_sub(before)) as f64 / n as f64
}

/// Bytes on the wire per delivered message for a 5.0 subscriber announcing Topic Alias
/// Maximum `alias_max` (0: none), 16-byte payloads on ten long topics in turn (sensor
/// traffic). Counts the PUBLISH packets' bytes as read from the socket.
async fn bytes_per_message(addr: SocketAddr, alias_max: u16, n: usize, tag: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sub = tokio::net::TcpStream::connect(addr).await.unwrap();
    let id = format!("alias-sub-{tag}-{alias_max}");
    // CONNECT 5.0, clean start, keep-alive 0, properties: Topic Alias Maximum.
    let mut body = b"\x00\x04MQTT\x05\x02\x00\x00\x03\x22".to_vec();
    body.extend_from_slice(&alias_max.to_be_bytes());
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut connect_packet = vec![0x10, body.len() as u8];
    connect_packet.extend_from_slice(&body);
    let filter = format!("bench/{tag}/#");
    let mut subscribe = vec![0x82, (2 + 1 + 2 + filter.len() + 1) as u8, 0, 1, 0];
    subscribe.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    subscribe.extend_from_slice(filter.as_bytes());
    subscribe.push(0);
    sub.write_all(&connect_packet).await.unwrap();
    sub.write_all(&subscribe).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    // Packets from `buf`: (type, total size); None while incomplete.
    let next = |buf: &[u8]| -> Option<(u8, usize)> {
        let (mut len, mut i) = (0usize, 1);
        loop {
            let b = *buf.get(i)?;
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        (buf.len() >= i + len).then_some((buf[0] >> 4, i + len))
    };
    // CONNACK and SUBACK.
    let mut acks = 0;
    while acks < 2 {
        let k = sub.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..k]);
        while let Some((_, size)) = next(&buf) {
            buf.drain(..size);
            acks += 1;
        }
    }
    let mut publisher = connect(addr, &format!("alias-pub-{tag}-{alias_max}")).await;
    let topics: Vec<String> = (0..10)
        .map(|i| format!("bench/{tag}/site-eu-west/building-07/floor-03/sensor-{i:02}/temperature"))
        .collect();
    let payload = Bytes::from_static(&[7u8; 16]);
    let reader = tokio::spawn(async move {
        let (mut got, mut bytes) = (0, 0usize);
        while got < n {
            let k = sub.read(&mut chunk).await.unwrap();
            assert!(k > 0, "subscriber closed");
            buf.extend_from_slice(&chunk[..k]);
            while let Some((kind, size)) = next(&buf) {
                if kind == 3 {
                    got += 1;
                    bytes += size;
                }
                buf.drain(..size);
            }
        }
        bytes
    });
    for i in 0..n {
        publisher
            .feed(publish(
                &topics[i % topics.len()],
                QoS::AtMostOnce,
                0,
                &payload,
            ))
            .await
            .unwrap();
        if i % 256 == 255 {
            publisher.flush().await.unwrap();
        }
    }
    publisher.flush().await.unwrap();
    reader.await.unwrap() as f64 / n as f64
}

fn main() {
    let mosq: SocketAddr = std::env::var("MOSQUITTO")
        .unwrap_or_else(|_| "127.0.0.1:18830".into())
        .parse()
        .unwrap();
    let mosq_pid: Option<u32> = std::fs::read_to_string("/tmp/mosquitto-test/mosquitto.pid")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let mosq_up = std::net::TcpStream::connect_timeout(&mosq, Duration::from_secs(1)).is_ok();
    // Memory only, like the Mosquitto it is compared with (`persistence false`).
    let (router, addr) = common::start_router_memory_only(
        "mqtt",
        "mqtt:\n  max_connections: 20000\n  max_inflight: 100\n  max_queued: 100000\nconnections:\n  max_per_ip: 0\n  connect_rate: 0\n",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "MQTT benchmark: Switchboard {addr} vs Mosquitto {mosq}{}",
        if mosq_up {
            ""
        } else {
            " (NOT RUNNING: ratios omitted)"
        }
    );
    // `MQTT_BENCH=memory` runs only the memory figure; any other value runs only the
    // scenarios whose name contains it (`MQTT_BENCH="QoS 1"`).
    let only = std::env::var("MQTT_BENCH").ok();
    let memory = only.as_deref().is_none_or(|o| o == "memory");
    // Memory first, while both servers are fresh (freed message buffers would hide it).
    let n = 10_000;
    let sb_kb = if memory {
        rt.block_on(idle_memory(addr, router.0.id(), n))
    } else {
        0.0
    };
    match (mosq_up && memory, mosq_pid) {
        _ if !memory => {}
        (true, Some(pid)) => {
            let mq_kb = rt.block_on(idle_memory(mosq, pid, n));
            println!(
                "RSS per idle connection ({n} connections): switchboard {sb_kb:.1} KiB, mosquitto {mq_kb:.1} KiB, ratio {:.2}×",
                sb_kb / mq_kb.max(0.01)
            );
            common::row(
                "MQTT",
                "RSS per idle connection, 10,000 connections",
                "KiB",
                common::Fig::value(sb_kb),
                Some(("Mosquitto", common::Fig::value(mq_kb))),
                None,
            );
        }
        _ => println!("RSS per idle connection ({n} connections): switchboard {sb_kb:.1} KiB"),
    }
    // `MQTT_BENCH=memory` stops here (a quick check while working on memory).
    if only.as_deref() == Some("memory") {
        return;
    }
    // Outbound topic aliases: bytes per message to a 5.0 subscriber that accepts them,
    // against one that does not, and against Mosquitto given the same subscriber.
    if only.as_deref().is_none_or(|o| o == "aliases") {
        let n = 20_000;
        let tag = format!("a{}", std::process::id());
        let plain = rt.block_on(bytes_per_message(addr, 0, n, &tag));
        let aliased = rt.block_on(bytes_per_message(addr, 64, n, &tag));
        let mq = mosq_up.then(|| rt.block_on(bytes_per_message(mosq, 64, n, &tag)));
        println!(
            "bytes per message, 16 B payload, 60 B topics: switchboard {aliased:.1} with topic aliases, {plain:.1} without ({:.0}% saved){}",
            100.0 * (1.0 - aliased / plain),
            mq.map_or(String::new(), |m| format!(
                ", mosquitto {m:.1} (it sends no aliases)"
            ))
        );
        common::row(
            "MQTT",
            "5.0 subscriber with Topic Alias Maximum 64: bytes per 16 B message",
            "B",
            common::Fig::value(aliased),
            mq.map(|m| ("Mosquitto", common::Fig::value(m))),
            None,
        );
        if only.is_some() {
            return;
        }
    }
    println!(
        "{:<24} {:>12} {:>9} {:>9}   {:>12} {:>9} {:>9}   {:>7}",
        "scenario", "sb msg/s", "p50 µs", "p99 µs", "mosq msg/s", "p50 µs", "p99 µs", "ratio"
    );
    type Case = (&'static str, QoS, usize, usize, usize, Option<u64>);
    let cases: &[Case] = &[
        ("QoS 0 1→1, 100 B", QoS::AtMostOnce, 1, 100, 200_000, None),
        ("QoS 1 1→1, 100 B", QoS::AtLeastOnce, 1, 100, 100_000, None),
        ("QoS 0 1→100, 100 B", QoS::AtMostOnce, 100, 100, 5_000, None),
        (
            "QoS 1 1→1 @5k/s",
            QoS::AtLeastOnce,
            1,
            100,
            20_000,
            Some(5_000),
        ),
    ];
    for (i, (name, qos, subs, size, n, rate)) in cases.iter().enumerate() {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let tag = format!("{i}-{}", std::process::id());
        let cpu = common::cpu_ns(router.0.id());
        let sb = rt.block_on(scenario(addr, *qos, *subs, *size, *n, *rate, &tag));
        common::print_cpu(name, router.0.id(), cpu, n * subs);
        let line = format!("{:>12.0} {:>9.0} {:>9.0}", sb.rate, sb.p50_us, sb.p99_us);
        if mosq_up {
            let mq = rt.block_on(scenario(mosq, *qos, *subs, *size, *n, *rate, &tag));
            println!(
                "{name:<24} {line}   {:>12.0} {:>9.0} {:>9.0}   {:>6.2}×",
                mq.rate,
                mq.p50_us,
                mq.p99_us,
                sb.rate / mq.rate
            );
            common::row(
                "MQTT",
                name,
                "msg/s",
                common::Fig::rate(sb.rate, sb.p50_us, sb.p99_us),
                Some((
                    "Mosquitto",
                    common::Fig::rate(mq.rate, mq.p50_us, mq.p99_us),
                )),
                Some(router.0.id()),
            );
        } else {
            println!("{name:<24} {line}");
        }
    }
}
