//! AMQP link benchmark (not a test): RabbitMQ → Switchboard → RabbitMQ bridged throughput
//! against RabbitMQ alone (publish → consume), the same pika client on both paths, one
//! run; prints both figures and their ratio. Needs RabbitMQ on 127.0.0.1:5672
//! (`scripts/bench amqp` starts it) and the test venv (`scripts/setup python`).
//!
//! `AMQP_BENCH_COUNT` (default 50000) and `AMQP_BENCH_SIZE` (bytes, default 256).

mod common;

use std::time::{Duration, Instant};

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
    let rates = common::python_paths(
        "amqp_bridge.py",
        &[
            "--count".into(),
            count.to_string(),
            "--size".into(),
            size.to_string(),
            "--prefix".into(),
            prefix.clone(),
        ],
    );
    if let (Some(d), Some(b)) = (rates.get("direct"), rates.get("bridged")) {
        common::row(
            "AMQP",
            &format!("bridged queue → queue, {size} B (pika)"),
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
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
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
