//! How every comparison row of the suite is measured (issue 26, "Like for like first"):
//! a warm-up run per side, then `SB_BENCH_REPEATS` (3) samples per side sized to last
//! `SB_BENCH_SECS` (5 s), the side going first rotating from one repeat to the next; the
//! row reports each side's median, its spread (lowest–highest), latency percentiles and
//! the CPU its server process used in the timed window (`/proc/PID/stat`).
//!
//! On a shared 2-core machine throughput moves with whatever else runs; messages per
//! CPU-second of the server under test moves far less, so every row carries it beside
//! the throughput.

use std::time::{Duration, Instant};

/// How long and how often: `SB_BENCH_SECS` (seconds per sample, default 5),
/// `SB_BENCH_REPEATS` (samples per side, default 3), `SB_BENCH_PEERS=off` (only the
/// Switchboard side of every row: what `scripts/bench compare` runs).
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub secs: f64,
    pub repeats: usize,
    pub peers: bool,
}

pub fn plan() -> Plan {
    let num = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(d)
    };
    Plan {
        secs: num("SB_BENCH_SECS", 5.0).max(0.2),
        repeats: (num("SB_BENCH_REPEATS", 3.0) as usize).max(1),
        peers: std::env::var("SB_BENCH_PEERS").ok().as_deref() != Some("off"),
    }
}

/// CPU seconds (user + system) a process has used: `/proc/PID/stat`, which also counts
/// its threads that have ended. `None` when there is no such process.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name: utime and stime are the 12th and 13th fields.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / tick)
}

/// The timed part of one sample: opened when the first message is sent, closed when the
/// last one arrived; reads the CPU time of `pids` (the servers of the side) at both ends.
pub struct Window {
    at: Instant,
    pids: Vec<u32>,
    cpu: Vec<Option<f64>>,
}

impl Window {
    pub fn open(pids: &[u32]) -> Window {
        Window {
            cpu: pids.iter().map(|p| cpu_seconds(*p)).collect(),
            pids: pids.to_vec(),
            at: Instant::now(),
        }
    }

    pub fn started(&self) -> Instant {
        self.at
    }

    /// Closes the window at `end` (when the last message arrived): `msgs` delivered,
    /// `lat_ns` their publish-to-delivery latencies (empty when not measured).
    pub fn close_at(self, end: Instant, msgs: u64, lat_ns: Vec<u64>) -> Run {
        let cpu = self
            .pids
            .iter()
            .zip(&self.cpu)
            .map(|(p, before)| Some(cpu_seconds(*p)? - (*before)?))
            .collect();
        Run {
            msgs,
            lost: 0,
            secs: (end - self.at).as_secs_f64().max(1e-6),
            lat: Latency::of(lat_ns),
            cpu,
        }
    }

    pub fn close(self, msgs: u64, lat_ns: Vec<u64>) -> Run {
        self.close_at(Instant::now(), msgs, lat_ns)
    }
}

/// Publish-to-delivery latency percentiles of one sample, µs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Latency {
    pub fn of(mut ns: Vec<u64>) -> Option<Latency> {
        if ns.is_empty() {
            return None;
        }
        ns.sort_unstable();
        let pct = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64 / 1e3;
        Some(Latency {
            p50: pct(0.5),
            p99: pct(0.99),
            p999: pct(0.999),
        })
    }
}

/// One sample of one side.
#[derive(Clone, Debug)]
pub struct Run {
    /// Messages delivered (for a fan-out: deliveries).
    pub msgs: u64,
    /// Messages sent and never delivered (a QoS 0 path may drop; reported, not hidden).
    pub lost: u64,
    pub secs: f64,
    pub lat: Option<Latency>,
    /// CPU seconds of each process the window watched, in the order given.
    pub cpu: Vec<Option<f64>>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.msgs as f64 / self.secs
    }

    /// The sample with `expected` messages asked for: what did not arrive is lost.
    pub fn expecting(mut self, expected: u64) -> Run {
        self.lost = expected.saturating_sub(self.msgs);
        self
    }
}

/// A side of a row: its name and what runs one sample of `count` messages.
pub struct Side<'a> {
    pub name: String,
    pub run: Box<dyn FnMut(usize) -> Run + 'a>,
}

impl<'a> Side<'a> {
    pub fn new(name: impl Into<String>, run: impl FnMut(usize) -> Run + 'a) -> Side<'a> {
        Side {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// How many messages a sample sends.
#[derive(Clone, Copy, Debug)]
pub enum Sizing {
    /// Closed loop: warm up with `warm` messages (more, until a warm-up sample lasts a
    /// second), then send what that rate moves in `SB_BENCH_SECS`, at most `max`; each
    /// later sample resized by how long the one before lasted.
    Closed { warm: usize, max: usize },
    /// Fixed rate (messages published per second): 1 s of warm-up, then `SB_BENCH_SECS`.
    Fixed { rate: u64 },
    /// A set number of messages per sample (`count`) after a warm-up of `warm`.
    Count { warm: usize, count: usize },
}

/// What a side did over the repeats.
#[derive(Clone, Debug)]
pub struct Stats {
    pub name: String,
    pub runs: Vec<Run>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Stats {
    pub fn rate(&self) -> f64 {
        median(self.runs.iter().map(Run::rate).collect()).unwrap_or(0.0)
    }

    pub fn spread(&self) -> (f64, f64) {
        let r: Vec<f64> = self.runs.iter().map(Run::rate).collect();
        (
            r.iter().copied().fold(f64::INFINITY, f64::min),
            r.iter().copied().fold(0.0, f64::max),
        )
    }

    /// Median over the samples of each percentile.
    pub fn latency(&self) -> Option<Latency> {
        let l: Vec<Latency> = self.runs.iter().filter_map(|r| r.lat).collect();
        Some(Latency {
            p50: median(l.iter().map(|l| l.p50).collect())?,
            p99: median(l.iter().map(|l| l.p99).collect())?,
            p999: median(l.iter().map(|l| l.p999).collect())?,
        })
    }

    /// CPU seconds of the `i`th watched process per sample (median), or `None`.
    pub fn cpu(&self, i: usize) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter_map(|r| r.cpu.get(i).copied().flatten())
                .collect(),
        )
    }

    /// Messages per CPU-second of the side's server (the first watched process), median.
    pub fn per_cpu_second(&self) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter_map(|r| Some(r.msgs as f64 / r.cpu.first().copied().flatten()?.max(0.01)))
                .collect(),
        )
    }

    /// Messages per CPU-second of all the watched processes together (the router and the
    /// peer it works through, for a path that runs through both), median.
    pub fn per_cpu_second_all(&self) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter_map(|r| {
                    let all: Option<f64> = r.cpu.iter().copied().sum();
                    Some(r.msgs as f64 / all?.max(0.01))
                })
                .collect(),
        )
    }

    /// Cores the side's server kept busy in the window (CPU seconds ÷ seconds), median.
    pub fn cpu_share(&self) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter_map(|r| Some(r.cpu.first().copied().flatten()? / r.secs))
                .collect(),
        )
    }

    pub fn secs(&self) -> f64 {
        median(self.runs.iter().map(|r| r.secs).collect()).unwrap_or(0.0)
    }

    /// The side as the suite's JSON row records it.
    pub fn json(&self) -> serde_json::Value {
        let (lo, hi) = self.spread();
        let lat = self.latency();
        serde_json::json!({
            "name": self.name,
            "value": self.rate(),
            "lo": lo,
            "hi": hi,
            "runs": self.runs.len(),
            "secs": self.secs(),
            "p50_us": lat.map(|l| l.p50),
            "p99_us": lat.map(|l| l.p99),
            "p999_us": lat.map(|l| l.p999),
            "per_cpu_s": self.per_cpu_second(),
            "per_cpu_s_all": self.per_cpu_second_all(),
            "cpu_share": self.cpu_share(),
            "lost": self.runs.iter().map(|r| r.lost).sum::<u64>(),
            "cpu_s": (0..self.runs.first().map_or(0, |r| r.cpu.len()))
                .map(|i| self.cpu(i))
                .collect::<Vec<_>>(),
        })
    }
}

/// Runs a row: a warm-up sample per side (not counted), then `plan.repeats` samples per
/// side, the first side of each repeat rotating (repeat r starts with side r mod n).
pub fn compare(plan: &Plan, sizing: Sizing, sides: &mut [Side]) -> Vec<Stats> {
    let counts: Vec<usize> = sides
        .iter_mut()
        .map(|s| match sizing {
            Sizing::Closed { warm, max } => {
                // Warm-up samples, four times larger each time, until one lasts a second
                // (or half a sample): its rate sizes the measured samples.
                let mut n = warm;
                loop {
                    let w = (s.run)(n);
                    if w.secs >= (plan.secs / 2.0).min(1.0) || n >= max {
                        break ((n as f64 * plan.secs / w.secs) as usize).clamp(warm, max);
                    }
                    n = (n * 4).min(max);
                }
            }
            Sizing::Fixed { rate } => {
                (s.run)(rate as usize);
                (rate as f64 * plan.secs) as usize
            }
            Sizing::Count { warm, count } => {
                (s.run)(warm);
                count
            }
        })
        .collect();
    let mut stats: Vec<Stats> = sides
        .iter()
        .map(|s| Stats {
            name: s.name.clone(),
            runs: Vec::new(),
        })
        .collect();
    let mut counts = counts;
    for i in rotations(plan.repeats, sides.len()) {
        let r = (sides[i].run)(counts[i]);
        // A closed-loop side whose sample missed the length asked (its warm-up ran
        // slower or faster than it settles at) gets the next one resized, at most ×2.
        if let Sizing::Closed { warm, max } = sizing {
            let want = (counts[i] as f64 * plan.secs / r.secs) as usize;
            counts[i] = want.clamp(counts[i] / 2, counts[i] * 2).clamp(warm, max);
        }
        stats[i].runs.push(r);
    }
    stats
}

/// The side indices of `repeats` rounds over `n` sides, round r starting at side r mod n.
pub fn rotations(repeats: usize, n: usize) -> Vec<usize> {
    (0..repeats)
        .flat_map(|r| (0..n).map(move |k| (r + k) % n))
        .collect()
}

/// Prints a row's sides, one line each, with the ratios of Switchboard (the first side)
/// to every other.
pub fn print(scenario: &str, unit: &str, stats: &[Stats]) {
    println!("{scenario}");
    let sb = &stats[0];
    for s in stats {
        let (lo, hi) = s.spread();
        let lat = s.latency().map_or(String::new(), |l| {
            format!("  p50/p99/p99.9 {:.0}/{:.0}/{:.0} µs", l.p50, l.p99, l.p999)
        });
        let several = s.runs.first().is_some_and(|r| r.cpu.len() > 1);
        let cpu = match (s.per_cpu_second(), s.cpu_share(), s.per_cpu_second_all()) {
            (Some(e), Some(c), Some(a)) if several => {
                format!("  {e:.0} per CPU-s ({c:.2} cores), {a:.0} with the peer it runs through")
            }
            (Some(e), Some(c), _) => format!("  {e:.0} per CPU-s ({c:.2} cores)"),
            _ => String::new(),
        };
        let ratio = if std::ptr::eq(s, sb) {
            String::new()
        } else {
            let eff = match (sb.per_cpu_second_all(), s.per_cpu_second()) {
                (Some(a), Some(b)) => format!(", per CPU-s {:.2}×", a / b),
                _ => String::new(),
            };
            format!(
                "  Switchboard ÷ it {:.2}×{eff}",
                sb.rate() / s.rate().max(1e-9)
            )
        };
        let lost: u64 = s.runs.iter().map(|r| r.lost).sum();
        let lost = if lost > 0 {
            format!("  LOST {lost}")
        } else {
            String::new()
        };
        println!(
            "  {:<26} {:>11.0} {unit} ({:.0}–{:.0}, {} × {:.1} s){lat}{cpu}{ratio}{lost}",
            s.name,
            s.rate(),
            lo,
            hi,
            s.runs.len(),
            s.secs()
        );
    }
}

/// Waits until `addr` accepts a TCP connection (a server this bench started).
pub fn wait_port(addr: std::net::SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A loopback port nobody listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
