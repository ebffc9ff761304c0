//! Shared by the protocol benchmarks: run the router binary with one listener, read
//! process memory.
#![allow(dead_code)]

pub mod method;
pub mod mqtt_client;
pub mod pacer;
pub mod peers;
pub mod prosody_log;
pub mod stomp_client;
pub mod xmpp_client;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The router process; killed when dropped, and its journal (the second field, when it
/// has one) deleted: a durable row's samples leave hundreds of MiB each.
pub struct Router(pub Child, Option<std::path::PathBuf>);

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(data) = &self.1 {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

/// Starts the release router with only `listener` open (on a free loopback port) and the
/// given settings; returns it and the listener's address.
pub fn start_router(listener: &str, settings: &str) -> (Router, SocketAddr) {
    start_router_with_routes(listener, settings, "")
}

/// As [`start_router`], with one route file (empty: none).
pub fn start_router_with_routes(
    listener: &str,
    settings: &str,
    routes: &str,
) -> (Router, SocketAddr) {
    start(listener, settings, routes, true)
}

/// As [`start_router`], without a data directory (`--data-dir off`): the like-for-like
/// setting against a broker that does not persist (Mosquitto's `persistence false`).
pub fn start_router_memory_only(listener: &str, settings: &str) -> (Router, SocketAddr) {
    start(listener, settings, "", false)
}

fn start(listener: &str, settings: &str, routes: &str, durable: bool) -> (Router, SocketAddr) {
    let (r, addrs) = start_listeners(&[listener], settings, routes, durable);
    (r, addrs[0])
}

/// The release router with the named listeners on loopback port 0 (the others off), the
/// given settings and one route file; returns the listeners' addresses in that order.
pub fn start_listeners(
    listeners: &[&str],
    settings: &str,
    routes: &str,
    durable: bool,
) -> (Router, Vec<SocketAddr>) {
    start_named(&listeners.join("-"), listeners, settings, routes, durable)
}

/// As [`start_listeners`], in a directory of its own named `name` (several routers side
/// by side: the cluster benchmark); the router's log goes to `router.log` there.
pub fn start_named(
    name: &str,
    listeners: &[&str],
    settings: &str,
    routes: &str,
    durable: bool,
) -> (Router, Vec<SocketAddr>) {
    let dir = bench_dir(name);
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let _ = std::fs::create_dir_all(dir.join("routes"));
    if !routes.is_empty() {
        std::fs::write(dir.join("routes/bench.yaml"), routes).expect("write routes");
    }
    let cfg = dir.join("sb.yaml");
    std::fs::write(&cfg, settings).expect("write settings");
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let mut cmd = Command::new(router_binary());
    cmd.arg("run");
    for name in ["admin", "stomp", "stomp-ws", "mqtt", "mqtt-ws"] {
        let value = if listeners.contains(&name) {
            "127.0.0.1:0"
        } else {
            "off"
        };
        cmd.args(["--listen", &format!("{name}={value}")]);
    }
    let router = Router(
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--routes")
            .arg(dir.join("routes"))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--data-dir")
            .arg(if durable {
                dir.join("data")
            } else {
                "off".into()
            })
            .env("SWITCHBOARD_LOG", "warn")
            .stderr(
                std::fs::File::create(dir.join("router.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start switchboard"),
        durable.then(|| dir.join("data")),
    );
    // Generous: a clustered router starts only once NATS answered its first requests.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(t) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&t).expect("ready file");
            let addrs = listeners
                .iter()
                .map(|l| {
                    v["listeners"][*l]
                        .as_str()
                        .expect("listener")
                        .parse()
                        .expect("address")
                })
                .collect();
            return (router, addrs);
        }
        assert!(Instant::now() < deadline, "switchboard did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The directory [`start_named`] gives the router called `name` (settings, journal, log).
pub fn bench_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sb-bench-{name}-{}", std::process::id()))
}

/// The router binary the benchmarks start: `SB_BENCH_ROUTER` when set (another build, to
/// compare two versions with the same load generator, as docs/benchmarks.md's "Cost of
/// the metrics" did), else the one this build made.
pub fn router_binary() -> std::path::PathBuf {
    std::env::var_os("SB_BENCH_ROUTER")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_switchboard").into())
}

/// Resident memory of a process, KiB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of a process, MiB (for a row's router).
pub fn rss_mib(pid: u32) -> Option<f64> {
    Some(rss_kb(pid) as f64 / 1024.0)
}

/// Records one row for the suite's table (`scripts/bench suite`): a JSON line appended to
/// the file named by `SB_BENCH_ROWS`; nothing when it is not set. `sides` are Switchboard
/// first, then its peers ([`method::Stats::json`], or [`value_side`] for a size or a
/// time); `unit` is `msg/s` (more is better) or a size or time (less is better);
/// `command` reproduces the row; `note` says what is compared (same window, same
/// guarantee, ceiling rather than peer); `router_rss_mib`: the router's resident memory
/// after the row ([`rss_mib`]).
pub fn record(
    group: &str,
    scenario: &str,
    unit: &str,
    command: &str,
    note: &str,
    sides: Vec<serde_json::Value>,
    router_rss_mib: Option<f64>,
) {
    let Some(path) = std::env::var_os("SB_BENCH_ROWS") else {
        return;
    };
    let line = serde_json::json!({
        "group": group,
        "scenario": scenario,
        "unit": unit,
        "command": command,
        "note": note,
        "sides": sides,
        "router_rss_mib": router_rss_mib,
    });
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("SB_BENCH_ROWS file");
    writeln!(f, "{line}").expect("write row");
}

/// [`record`] for a row of [`method::Stats`].
pub fn record_stats(
    group: &str,
    scenario: &str,
    command: &str,
    note: &str,
    stats: &[method::Stats],
    router_rss_mib: Option<f64>,
) {
    method::print(scenario, "msg/s", stats);
    record(
        group,
        scenario,
        "msg/s",
        command,
        note,
        stats.iter().map(method::Stats::json).collect(),
        router_rss_mib,
    );
}

/// A side of a size or time row: median and spread of its samples.
pub fn value_side(name: &str, samples: &[f64]) -> serde_json::Value {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    serde_json::json!({
        "name": name,
        "value": median,
        "lo": v.first(),
        "hi": v.last(),
        "runs": v.len(),
    })
}

/// A plain HTTP GET on the router's admin listener; the whole response, or empty.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
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

/// Waits until the router's links say `connected` (`GET /links` on `admin`).
pub fn wait_link_connected(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(admin, "/links").contains("\"connected\"") {
        assert!(
            Instant::now() < deadline,
            "the router's link did not connect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
