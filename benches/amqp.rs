//! AMQP link benchmark (not a test): RabbitMQ → Switchboard → RabbitMQ bridged throughput
//! against RabbitMQ alone (publish → consume), the same lapin publisher and consumer on
//! both paths, one run; prints both figures and their ratio. Needs RabbitMQ on
//! 127.0.0.1:5672 (`scripts/bench amqp` starts it).
//!
//! - direct: publisher → RabbitMQ queue D → consumer;
//! - bridged: publisher → queue A → Switchboard (consume, route, confirmed publish) →
//!   queue B → consumer.
//!
//! Publisher and consumer have a connection each; the consumer has a prefetch of 1000
//! and acks every 100 (`multiple`). The figure is messages over the time from the first
//! publish to the last message consumed.
//!
//! `AMQP_BENCH_COUNT` (default 50000) and `AMQP_BENCH_SIZE` (bytes, default 256).

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn connect() -> Connection {
    Connection::connect(URI, ConnectionProperties::default())
        .await
        .expect("AMQP connect (scripts/setup rabbitmq)")
}

/// Declares (durable, expiring after 10 idle minutes) and empties a queue.
async fn declare(name: &str) {
    let c = connect().await;
    let ch = c.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declare");
    ch.queue_purge(name.into(), QueuePurgeOptions::default())
        .await
        .expect("purge");
}

/// Publishes `count` transient messages to `src` and consumes them from `dst`; seconds
/// from the first publish to the last message consumed.
async fn run(src: &str, dst: &str, count: usize, size: usize) -> f64 {
    let cc = connect().await;
    let ch = cc.create_channel().await.expect("channel");
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            dst.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let done = tokio::spawn(async move {
        let mut got = 0;
        while got < count {
            let d = match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
                Ok(Some(Ok(d))) => d,
                other => panic!("consumer: {other:?} after {got}"),
            };
            got += 1;
            if got % 100 == 0 || got == count {
                d.acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .expect("ack");
            }
        }
        Instant::now()
    });
    let pc = connect().await;
    let pch = pc.create_channel().await.expect("channel");
    let body = vec![b'x'; size];
    let props = BasicProperties::default()
        .with_delivery_mode(1)
        .with_content_type("application/octet-stream".into());
    let start = Instant::now();
    for _ in 0..count {
        pch.basic_publish(
            "".into(),
            src.into(),
            BasicPublishOptions::default(),
            &body,
            props.clone(),
        )
        .await
        .expect("publish");
    }
    let end = done.await.expect("consumer");
    let _ = pc.close(200, "done".into()).await;
    let _ = cc.close(200, "done".into()).await;
    (end - start).as_secs_f64()
}

fn main() {
    let count: usize = std::env::var("AMQP_BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let size: usize = std::env::var("AMQP_BENCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let prefix = format!("bench{}", std::process::id());
    let settings =
        "links:\n  rabbit:\n    amqp:\n      uri: \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n";
    let routes = format!(
        "routes:\n  - name: bridge\n    from: {{amqp: {{link: rabbit, queue: {prefix}.a}}}}\n    to: [{{amqp: {{link: rabbit, routing_key: {prefix}.b}}}}]\n    declare:\n      queues:\n        - {{name: {prefix}.a, durable: true, arguments: {{x-expires: 600000}}}}\n        - {{name: {prefix}.b, durable: true, arguments: {{x-expires: 600000}}}}\n"
    );
    let (router, admin) = common::start_router_with_routes("admin", settings, &routes);
    // Wait for the link (and its declarations).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http_get(admin, "/links").contains("\"connected\"") {
            break;
        }
        assert!(Instant::now() < deadline, "AMQP link did not connect");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{size}-byte messages:");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rates = std::collections::BTreeMap::new();
    rt.block_on(declare(&format!("{prefix}.direct")));
    for (path, src, dst) in [("direct", "direct", "direct"), ("bridged", "a", "b")] {
        let (src, dst) = (format!("{prefix}.{src}"), format!("{prefix}.{dst}"));
        let secs = rt.block_on(run(&src, &dst, count, size));
        println!(
            "{path:<8} {count:>7} messages in {secs:>7.2} s: {:>7.0} msgs/s",
            count as f64 / secs
        );
        rates.insert(path, count as f64 / secs);
    }
    if let (Some(d), Some(b)) = (rates.get("direct"), rates.get("bridged")) {
        common::row(
            "AMQP",
            &format!("bridged queue → queue, {size} B"),
            "msg/s",
            common::Fig::value(*b),
            Some(("RabbitMQ direct", common::Fig::value(*d))),
            Some(router.0.id()),
        );
        println!(
            "bridged / direct = {:.2}x (goal >= 0.8x); router RSS {} KiB, CPU {:.2} s for {count} messages",
            b / d,
            common::rss_kb(router.0.id()),
            cpu_seconds(router.0.id())
        );
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// User + system CPU time of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}
