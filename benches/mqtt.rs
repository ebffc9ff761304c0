//! MQTT throughput, latency and memory, Switchboard side by side with Mosquitto and with
//! nats-server's MQTT (JetStream on), driven by the same load generator in the same run
//! (not a test).
//!
//! Run with `scripts/bench mqtt`. The peers are this run's own: a Mosquitto and a single
//! nats-server with MQTT on free loopback ports (benches/common/peers.rs; `MOSQUITTO` or
//! `NATS_MQTT` = `HOST:PORT` to use another, `off` for none). Every side sends QoS 1
//! deliveries with the same in-flight window of 100 (Switchboard `mqtt.max_inflight`,
//! Mosquitto `max_inflight_messages`, nats-server `mqtt.max_ack_pending`), and QoS 1
//! publishers keep 100 unacknowledged. Switchboard and Mosquitto keep messages in memory
//! only; nats-server stores every QoS 1 publish in its JetStream stream (its only way:
//! file store, default sync).
//!
//! Scenarios: QoS 0 and QoS 1 1→1, QoS 0 fan-out 1→100 (closed loop), 1→1 QoS 1 at fixed
//! rates of 5,000 and 50,000/s for latency, resident memory per idle connection at 10,000
//! connections (fresh servers every sample), and bytes per message to a 5.0 subscriber
//! with outbound topic aliases (nats-server speaks MQTT 3.1.1 only: not compared there).
//! Every row follows benches/common/method.rs: warm-up, samples of `SB_BENCH_SECS`
//! rotating which side goes first, `SB_BENCH_REPEATS` of them, median and spread.
//! `SB_BENCH_LAT_DUMP=DIR` also writes every message's latency, in arrival order, to a
//! file per sample (see [`dump_latencies`]).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use rmqtt_codec::types::QoS;
use rmqtt_codec::v3::Packet;

use common::mqtt_client::{connect, now_ns, publish, subscribe};

use common::method::{self, Run, Side, Sizing, Window};
use common::pacer::{self, Pacer};
use common::peers::{self, MQTT_WINDOW};

/// One sample: `subs` subscribers of one topic, a publisher sending `n` messages of
/// `size` bytes (at `rate` per second when given); the window runs from the first publish
/// to the last delivery, watching the CPU time of `pids`.
#[allow(clippy::too_many_arguments)]
async fn scenario(
    addr: SocketAddr,
    pids: &[u32],
    qos: QoS,
    subs: usize,
    size: usize,
    n: usize,
    rate: Option<u64>,
    tag: &str,
) -> Run {
    let topic = format!("bench/{tag}");
    let mut consumers = Vec::new();
    for i in 0..subs {
        let mut c = connect(addr, &format!("sub-{tag}-{i}")).await;
        subscribe(&mut c, &topic, qos).await;
        consumers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            let mut got = 0;
            let mut last = None;
            while got < n {
                // A message is timed as it is decoded; its PUBACK is only queued, and what
                // is queued is written once nothing more has arrived: so the latency of
                // the messages of one read does not include the acknowledgements of those
                // decoded before them (a system call each, and the first wakes the server).
                let buffered = c.next().now_or_never();
                let next = match buffered {
                    Some(next) => Ok(next),
                    None => {
                        if c.flush().await.is_err() {
                            println!("  subscriber stopped after {got} of {n}: write failed");
                            break;
                        }
                        // QoS 0 may be dropped on the way (a slow consumer): a subscriber
                        // that hears nothing for 10 s reports what it got rather than
                        // waiting for the rest.
                        tokio::time::timeout(Duration::from_secs(10), c.next()).await
                    }
                };
                match next {
                    Ok(Some(Ok((Packet::Publish(p), _)))) => {
                        got += 1;
                        last = Some(Instant::now());
                        if p.payload.len() >= 8 {
                            let t = u64::from_be_bytes(p.payload[..8].try_into().unwrap_or([0; 8]));
                            lat.push(now_ns().saturating_sub(t));
                        }
                        if let Some(pid) = p.packet_id {
                            c.feed(Packet::PublishAck { packet_id: pid }).await.unwrap();
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    other => {
                        println!("  subscriber stopped after {got} of {n}: {other:?}");
                        break;
                    }
                }
            }
            let _ = c.flush().await;
            (last, lat, got)
        }));
    }
    let body = Bytes::from(vec![b'x'; size.max(8)]);
    let (window, acks) = match common::mqtt_client::bench_header() {
        None => publish_v3(addr, pids, &topic, qos, n, rate, &body, tag).await,
        Some(h) => publish_v5(addr, pids, &topic, qos, n, rate, &body, tag, h).await,
    };
    let mut lat = Vec::new();
    let mut end = window.started();
    let mut got = 0;
    for c in consumers {
        let (t, l, g) = c.await.unwrap();
        end = t.map_or(end, |t| end.max(t));
        lat.extend(l);
        got += g as u64;
    }
    acks.abort();
    dump_latencies(tag, &lat);
    window.close_at(end, got, lat).expecting((n * subs) as u64)
}

/// With `SB_BENCH_LAT_DUMP=DIR`, writes each message's latency in nanoseconds, in the
/// order received, one per line, to `DIR/<tag>.lat`: to see whether a row's slowest
/// messages come alone or in runs (a stall of the machine delays every message due
/// during it, on whichever server is measured).
fn dump_latencies(tag: &str, lat: &[u64]) {
    let Some(dir) = std::env::var_os("SB_BENCH_LAT_DUMP") else {
        return;
    };
    let text: String = lat.iter().map(|l| format!("{l}\n")).collect();
    let path = std::path::Path::new(&dir).join(format!("{tag}.lat"));
    if let Err(e) = std::fs::write(&path, text) {
        println!("  cannot write {}: {e}", path.display());
    }
}

/// The 3.1.1 publisher of a scenario; returns the timed window (opened at its first
/// publish) and its task reading acknowledgements (aborted once the subscribers are done).
#[allow(clippy::too_many_arguments)]
async fn publish_v3(
    addr: SocketAddr,
    pids: &[u32],
    topic: &str,
    qos: QoS,
    n: usize,
    rate: Option<u64>,
    body: &Bytes,
    tag: &str,
) -> (Window, tokio::task::JoinHandle<()>) {
    let p = connect(addr, &format!("pub-{tag}")).await;
    let (mut sink, mut stream) = p.split();
    // QoS 1: a window of unacknowledged publishes, as a real client keeps.
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(MQTT_WINDOW));
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
    let timed = Window::open(pids);
    // At a fixed rate, each message when it is due (benches/common/pacer.rs).
    let pacer = rate.map(|r| Pacer::new(r, timed.started()));
    for i in 0..n {
        let caught_up = pacer::wait(pacer.as_ref(), i).await;
        let pid = if qos == QoS::AtMostOnce {
            0
        } else {
            window.acquire().await.unwrap().forget();
            (i % 65_000 + 1) as u16
        };
        sink.feed(publish(topic, qos, pid, body)).await.unwrap();
        if i % 64 == 63 || caught_up {
            sink.flush().await.unwrap();
        }
    }
    sink.flush().await.unwrap();
    (timed, acks)
}

/// [`publish_v3`] as an MQTT 5 client whose every PUBLISH carries the user property
/// `header` (`SB_BENCH_HEADER`).
#[allow(clippy::too_many_arguments)]
async fn publish_v5(
    addr: SocketAddr,
    pids: &[u32],
    topic: &str,
    qos: QoS,
    n: usize,
    rate: Option<u64>,
    body: &Bytes,
    tag: &str,
    header: (&str, &str),
) -> (Window, tokio::task::JoinHandle<()>) {
    use common::mqtt_client::v5;
    let p = v5::connect(addr, &format!("pub-{tag}")).await;
    let (mut sink, mut stream) = p.split();
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(MQTT_WINDOW));
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
    let timed = Window::open(pids);
    // At a fixed rate, each message when it is due (benches/common/pacer.rs).
    let pacer = rate.map(|r| Pacer::new(r, timed.started()));
    for i in 0..n {
        let caught_up = pacer::wait(pacer.as_ref(), i).await;
        let pid = if qos == QoS::AtMostOnce {
            0
        } else {
            window.acquire().await.unwrap().forget();
            (i % 65_000 + 1) as u16
        };
        sink.feed(v5::publish(topic, qos, pid, body, header))
            .await
            .unwrap();
        if i % 64 == 63 || caught_up {
            sink.flush().await.unwrap();
        }
    }
    sink.flush().await.unwrap();
    (timed, acks)
}

/// `n` idle connections (in batches of 500), client ids tagged `tag`.
async fn open_idle(addr: SocketAddr, tag: &str, n: usize) -> Vec<common::mqtt_client::Conn> {
    let mut conns = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(500) {
        let mut batch = Vec::new();
        for i in 0..500.min(n - chunk * 500) {
            let id = format!("idle-{tag}-{chunk}-{i}");
            batch.push(tokio::spawn(async move { connect(addr, &id).await }));
        }
        for b in batch {
            conns.push(b.await.unwrap());
        }
    }
    conns
}

/// KiB of resident memory per idle connection, over `n` connections. After a warm-up
/// (as `benches/connections.rs`): 500 connections opened, idle past
/// `mqtt.park_idle_after` and closed before the baseline, so that the code and
/// allocator pages any first connection faults in are not counted per connection, on
/// either side.
async fn idle_memory(addr: SocketAddr, pid: u32, n: usize) -> f64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let warm = open_idle(addr, &format!("{pid}-warm"), 500).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = common::rss_kb(pid);
    let conns = open_idle(addr, &pid.to_string(), n).await;
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

/// The router's MQTT settings on every row: memory only (`--data-dir off`, like the
/// Mosquitto it is compared with), the same QoS 1 window as the peers.
fn router_settings() -> String {
    format!(
        "mqtt:\n  max_connections: 20000\n  max_inflight: {MQTT_WINDOW}\n  max_queued: 100000\nconnections:\n  max_per_ip: 0\n  connect_rate: 0\n"
    )
}

const WINDOWS: &str = "QoS 1 in-flight window 100 on every side (Switchboard mqtt.max_inflight, Mosquitto max_inflight_messages, nats-server mqtt.max_ack_pending; publishers keep 100 unacknowledged); Switchboard and Mosquitto in memory, nats-server stores QoS 1 in JetStream (file, default sync)";

fn main() {
    let plan = method::plan();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `MQTT_BENCH=memory` runs only the memory figure, `aliases` only the topic-alias one;
    // any other value runs only the scenarios whose name contains it (`MQTT_BENCH="QoS 1"`).
    let only = std::env::var("MQTT_BENCH").ok();
    println!("MQTT benchmark ({plan:?})");
    if only.as_deref().is_none_or(|o| o == "memory") {
        memory_row(&plan, &rt);
    }
    if only.as_deref() == Some("memory") {
        return;
    }
    let (router, addr) = common::start_router_memory_only("mqtt", &router_settings());
    let mosq = peers::mosquitto();
    let nats = peers::nats_mqtt();
    println!(
        "Switchboard {addr}, {}, {}",
        mosq.as_ref()
            .map_or("no Mosquitto".into(), |p| format!("Mosquitto {}", p.addr)),
        nats.as_ref().map_or("no nats-server".into(), |p| format!(
            "nats-server MQTT {}",
            p.addr
        )),
    );
    // Outbound topic aliases: bytes per message to a 5.0 subscriber that accepts them,
    // against one that does not, and against Mosquitto given the same subscriber. A size:
    // one measurement (it does not vary).
    if only.as_deref().is_none_or(|o| o == "aliases") {
        let n = 20_000;
        let tag = format!("a{}", std::process::id());
        let plain = rt.block_on(bytes_per_message(addr, 0, n, &tag));
        let aliased = rt.block_on(bytes_per_message(addr, 64, n, &tag));
        let mq = mosq
            .as_ref()
            .map(|m| rt.block_on(bytes_per_message(m.addr, 64, n, &tag)));
        println!(
            "bytes per message, 16 B payload, 60 B topics: switchboard {aliased:.1} with topic aliases, {plain:.1} without ({:.0}% saved){}",
            100.0 * (1.0 - aliased / plain),
            mq.map_or(String::new(), |m| format!(
                ", mosquitto {m:.1} (it sends no aliases)"
            ))
        );
        let mut sides = vec![common::value_side("Switchboard", &[aliased])];
        if let Some(m) = mq {
            sides.push(common::value_side("Mosquitto", &[m]));
        }
        common::record(
            "MQTT",
            "5.0 subscriber with Topic Alias Maximum 64: bytes per 16 B message",
            "B",
            "MQTT_BENCH=aliases scripts/bench mqtt",
            "a size, measured once; nats-server speaks MQTT 3.1.1 only",
            sides,
            None,
        );
        if only.is_some() {
            return;
        }
    }
    type Case = (&'static str, QoS, usize, usize, Sizing);
    let cases: &[Case] = &[
        (
            "QoS 0 1→1, 100 B",
            QoS::AtMostOnce,
            1,
            100,
            Sizing::Closed {
                warm: 20_000,
                max: 5_000_000,
            },
        ),
        (
            "QoS 1 1→1, 100 B",
            QoS::AtLeastOnce,
            1,
            100,
            Sizing::Closed {
                warm: 10_000,
                max: 2_000_000,
            },
        ),
        (
            "QoS 0 1→100, 100 B",
            QoS::AtMostOnce,
            100,
            100,
            Sizing::Closed {
                warm: 1_000,
                max: 100_000,
            },
        ),
        (
            "QoS 1 1→1 @5k/s",
            QoS::AtLeastOnce,
            1,
            100,
            Sizing::Fixed { rate: 5_000 },
        ),
        (
            "QoS 1 1→1 @50k/s",
            QoS::AtLeastOnce,
            1,
            100,
            Sizing::Fixed { rate: 50_000 },
        ),
    ];
    let router_pid = router.0.id();
    for (i, (name, qos, subs, size, sizing)) in cases.iter().enumerate() {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let rate = match sizing {
            Sizing::Fixed { rate } => Some(*rate),
            _ => None,
        };
        let side = |name: &str, addr: SocketAddr, pids: Vec<u32>| {
            let rt = &rt;
            let mut runs = 0;
            // The side's first word in the tag names its `SB_BENCH_LAT_DUMP` file.
            let who: String = name
                .split(' ')
                .next()
                .unwrap_or("")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            Side::new(name, move |n| {
                runs += 1;
                let tag = format!("{i}-{}-{who}-{runs}", std::process::id());
                rt.block_on(scenario(addr, &pids, *qos, *subs, *size, n, rate, &tag))
            })
        };
        let mut sides = vec![side("Switchboard", addr, vec![router_pid])];
        for p in [&mosq, &nats].into_iter().flatten() {
            sides.push(side(&p.name, p.addr, p.pids()));
        }
        let stats = method::compare(&plan, *sizing, &mut sides);
        drop(sides);
        common::record_stats(
            "MQTT",
            name,
            &format!("MQTT_BENCH=\"{name}\" scripts/bench mqtt"),
            WINDOWS,
            &stats,
            common::rss_mib(router_pid),
        );
    }
}

/// Resident memory per idle connection: every sample on freshly started servers (freed
/// message buffers of earlier rows would hide it), the first side rotating.
fn memory_row(plan: &method::Plan, rt: &tokio::runtime::Runtime) {
    let n = 10_000;
    let names = ["Switchboard", "Mosquitto", "nats-server MQTT"];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for i in method::rotations(plan.repeats, names.len()) {
        let kib = match i {
            0 => {
                let (router, addr) = common::start_router_memory_only("mqtt", &router_settings());
                Some(rt.block_on(idle_memory(addr, router.0.id(), n)))
            }
            _ => {
                let peer = if i == 1 {
                    peers::mosquitto()
                } else {
                    peers::nats_mqtt()
                };
                peer.and_then(|p| Some(rt.block_on(idle_memory(p.addr, p.pid?, n))))
            }
        };
        if let Some(k) = kib {
            samples[i].push(k);
        }
    }
    let sides: Vec<_> = names
        .iter()
        .zip(&samples)
        .filter(|(_, s)| !s.is_empty())
        .map(|(name, s)| common::value_side(name, s))
        .collect();
    println!("RSS per idle connection ({n} connections), KiB per sample:");
    for (name, s) in names.iter().zip(&samples) {
        println!("  {name:<18} {s:.2?}");
    }
    common::record(
        "MQTT",
        "RSS per idle connection, 10,000 connections",
        "KiB",
        "MQTT_BENCH=memory scripts/bench mqtt",
        "each sample on a freshly started server warmed up with 500 connections opened, idled and closed; keep-alive 0, clean session, no subscription, measured 3 s after the last CONNACK",
        sides,
        None,
    );
}
