//! Shared by the protocol benchmarks: run the router binary with one listener, read
//! process memory.
#![allow(dead_code)]

pub mod mqtt_client;
pub mod stomp_client;
pub mod xmpp_client;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The router process; killed when dropped.
pub struct Router(pub Child);

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// CPU time a process's threads have used, in nanoseconds (the first field of each
/// `/proc/PID/task/TID/schedstat`; threads that ended are not counted). Less sensitive
/// than throughput to what else the machine runs: what a hot path costs shows in it.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// With `SB_BENCH_CPU` set, prints the router's CPU time per message of a scenario
/// (`before` from [`cpu_ns`] when it started).
pub fn print_cpu(name: &str, pid: u32, before: u64, messages: usize) {
    if std::env::var_os("SB_BENCH_CPU").is_some() {
        let ns = cpu_ns(pid).saturating_sub(before) as f64 / messages as f64;
        println!("cpu {name:<22} {ns:>8.1} ns/msg");
    }
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

/// One figure of a benchmark row: a value in `unit`, and latency percentiles when the
/// scenario measures them.
#[derive(Clone, Copy)]
pub struct Fig {
    pub value: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

impl Fig {
    pub fn rate(value: f64, p50_us: f64, p99_us: f64) -> Fig {
        Fig {
            value,
            p50_us: Some(p50_us),
            p99_us: Some(p99_us),
        }
    }

    pub fn value(value: f64) -> Fig {
        Fig {
            value,
            p50_us: None,
            p99_us: None,
        }
    }
}

/// Records one row for the suite's table (`scripts/bench suite`): a JSON line appended to
/// the file named by `SB_BENCH_ROWS`; nothing when it is not set. `unit` is `msg/s`
/// (more is better) or a size or time (less is better); `router_pid` gives the router's
/// RSS at that moment.
pub fn row(
    group: &str,
    scenario: &str,
    unit: &str,
    sb: Fig,
    peer: Option<(&str, Fig)>,
    router_pid: Option<u32>,
) {
    let Some(path) = std::env::var_os("SB_BENCH_ROWS") else {
        return;
    };
    let fig =
        |f: Fig| serde_json::json!({"value": f.value, "p50_us": f.p50_us, "p99_us": f.p99_us});
    let line = serde_json::json!({
        "group": group,
        "scenario": scenario,
        "unit": unit,
        "switchboard": fig(sb),
        "peer": peer.map(|(name, f)| serde_json::json!({"name": name, "figure": fig(f)})),
        "router_rss_mib": router_pid.map(|p| rss_kb(p) as f64 / 1024.0),
    });
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("SB_BENCH_ROWS file");
    writeln!(f, "{line}").expect("write row");
}
