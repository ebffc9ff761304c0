//! Admission at accept time, per listener: the listener's connection limit, a limit on
//! connections open from one peer address, and a connect-rate limit per peer address
//! (a token bucket). One hostile host must not hold every slot of a listener nor make
//! the router spend its time accepting and refusing.
//!
//! A connection admitted holds a [`ConnSlot`] for its whole life (parked MQTT
//! connections too): 8 bytes, an `Arc` of its peer's entry, given back when dropped.
//! Refusals are counted per cause (shown by the admin API's `GET /limits`) and logged at
//! most once per second per cause, with the count since the last line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Per-peer limits, the same for every listener (`connections:` in the settings file).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerLimits {
    /// Connections open at once from one peer address, per listener; 0: no limit.
    pub max_per_ip: u32,
    /// New connections per second from one peer address, per listener; 0: no limit.
    pub connect_rate: f64,
    /// How many connections a peer may open at once before the rate applies.
    pub connect_burst: f64,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_per_ip: 1000,
            connect_rate: 100.0,
            connect_burst: 200.0,
        }
    }
}

/// Why a connection was refused at accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's own `max_connections`.
    Listener,
    /// `connections.max_per_ip` for this peer address.
    PerIp,
    /// `connections.connect_rate` for this peer address.
    Rate,
    /// The process is out of file descriptors (see [`crate::fd_limit`]): accepted with
    /// the reserve descriptor only to be told so.
    Files,
}

impl Refusal {
    /// The reason given to the client and in the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Listener => "connection limit reached",
            Refusal::PerIp => "too many connections from this address",
            Refusal::Rate => "connection rate exceeded",
            Refusal::Files => "server full: out of file descriptors",
        }
    }
}

/// The key peers are counted under: an IPv4 address (IPv4-mapped IPv6 included), or the
/// /64 prefix of an IPv6 address (one host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    V4(u32),
    V6(u64),
}

impl PeerKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => PeerKey::V4(a.into()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(v4.into()),
                None if a.is_loopback() => PeerKey::V4(u32::from(std::net::Ipv4Addr::LOCALHOST)),
                None => PeerKey::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// One peer address's open connections and token bucket.
#[derive(Debug)]
struct PeerEntry {
    /// The listener's connection-limit semaphore (one permit per open connection).
    listener: Arc<Semaphore>,
    open: AtomicU32,
    /// Guarded by the gate's map lock (only touched while admitting).
    bucket: Mutex<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Held by an admitted connection for its whole life: gives back its listener permit and
/// its place in the peer's count when dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<PeerEntry>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.listener.add_permits(1);
    }
}

/// Logs one cause at most once per second, with how many happened since the last line.
#[derive(Debug, Default)]
pub struct LogEvery {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    /// Counts one event; returns the count to log when a line is due.
    pub fn hit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += 1;
        let now = Instant::now();
        if s.0
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            let n = s.1;
            *s = (Some(now), 0);
            Some(n)
        } else {
            None
        }
    }
}

/// A listener's admission gate.
#[derive(Debug)]
pub struct Gate {
    pub listener: String,
    limits: PeerLimits,
    max_connections: usize,
    total: Arc<Semaphore>,
    peers: Mutex<HashMap<PeerKey, Arc<PeerEntry>>>,
    admitted: AtomicU64,
    refused: [AtomicU64; 4],
    logs: [LogEvery; 4],
    /// WebSocket upgrades refused for their `Origin` (see [`super::origin`]).
    origin_refused: AtomicU64,
    origin_log: LogEvery,
    /// Refusals being said (a protocol-level answer, then a short drain): bounded, so
    /// a flood is closed without an answer rather than holding sockets.
    refusing: Arc<Semaphore>,
}

/// Most refusals answered at once per listener; beyond, connections are just closed.
const MAX_REFUSING: usize = 64;

/// How many admissions between sweeps of idle peer entries.
const SWEEP_EVERY: u64 = 1024;

fn index(r: Refusal) -> usize {
    match r {
        Refusal::Listener => 0,
        Refusal::PerIp => 1,
        Refusal::Rate => 2,
        Refusal::Files => 3,
    }
}

impl Gate {
    pub fn new(listener: &str, max_connections: usize, limits: PeerLimits) -> Arc<Self> {
        Arc::new(Self {
            listener: listener.to_owned(),
            limits,
            max_connections,
            total: Arc::new(Semaphore::new(max_connections)),
            peers: Mutex::new(HashMap::new()),
            admitted: AtomicU64::new(0),
            refused: Default::default(),
            logs: Default::default(),
            origin_refused: AtomicU64::new(0),
            origin_log: LogEvery::default(),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        })
    }

    /// Admits a connection from `ip`, or says why not (counted and logged).
    pub fn admit(&self, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let r = self.try_admit(ip);
        if let Err(why) = r {
            self.refused[index(why)].fetch_add(1, Ordering::Relaxed);
            if let Some(count) = self.logs[index(why)].hit() {
                tracing::warn!(
                    listener = %self.listener,
                    peer = %ip,
                    count,
                    reason = why.reason(),
                    "connections refused (count: since the last such line)"
                );
            }
        }
        r
    }

    fn try_admit(&self, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.admitted.load(Ordering::Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(&mut peers, now);
        }
        let entry = peers.entry(PeerKey::of(ip)).or_insert_with(|| {
            Arc::new(PeerEntry {
                listener: Arc::clone(&self.total),
                open: AtomicU32::new(0),
                bucket: Mutex::new(Bucket {
                    tokens: self.limits.connect_burst,
                    at: now,
                }),
            })
        });
        if self.limits.connect_rate > 0.0 {
            let mut b = entry.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let elapsed = now.duration_since(b.at).as_secs_f64();
            b.tokens =
                (b.tokens + elapsed * self.limits.connect_rate).min(self.limits.connect_burst);
            b.at = now;
            if b.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            b.tokens -= 1.0;
        }
        if self.limits.max_per_ip > 0
            && entry.open.load(Ordering::Relaxed) >= self.limits.max_per_ip
        {
            return Err(Refusal::PerIp);
        }
        match Arc::clone(&self.total).try_acquire_owned() {
            Ok(p) => p.forget(),
            Err(_) => return Err(Refusal::Listener),
        }
        entry.open.fetch_add(1, Ordering::Relaxed);
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(ConnSlot(Arc::clone(entry)))
    }

    /// Drops the entries of peers with nothing open and a full bucket: the map holds
    /// only peers that are connected or connected lately.
    fn sweep(&self, peers: &mut HashMap<PeerKey, Arc<PeerEntry>>, now: Instant) {
        let refill = if self.limits.connect_rate > 0.0 {
            Duration::from_secs_f64(self.limits.connect_burst / self.limits.connect_rate)
        } else {
            Duration::ZERO
        };
        peers.retain(|_, e| {
            // Only the map holds it: no connection can, and none can take it meanwhile
            // (new ones are admitted under the map lock).
            if Arc::strong_count(e) > 1 {
                return true;
            }
            let b = e.bucket.lock().unwrap_or_else(|e| e.into_inner());
            now.duration_since(b.at) < refill
        });
    }

    /// Counts a connection refused for want of file descriptors (logged by the accept
    /// loop, once per episode).
    pub fn out_of_files(&self) {
        self.refused[index(Refusal::Files)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a WebSocket upgrade refused for its origin; logs it at most once per
    /// second (a page can retry in a loop).
    pub fn origin_refused(&self, peer: std::net::SocketAddr, origin: &str) {
        self.origin_refused.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.origin_log.hit() {
            tracing::warn!(
                listener = %self.listener,
                %peer,
                origin,
                count,
                "WebSocket upgrade refused: origin not allowed (see ws_allowed_origins; count: since the last such line)"
            );
        }
    }

    /// A permit to answer a refused connection, if not too many are being answered.
    pub fn refusing(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.refusing).try_acquire_owned().ok()
    }

    /// Counters for the admin API.
    pub fn to_json(&self) -> serde_json::Value {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let connected = peers
            .values()
            .filter(|e| e.open.load(Ordering::Relaxed) > 0)
            .count();
        let refused = |r: Refusal| self.refused[index(r)].load(Ordering::Relaxed);
        serde_json::json!({
            "open": self.max_connections - self.total.available_permits(),
            "max_connections": self.max_connections,
            "peers_connected": connected,
            "admitted": self.admitted.load(Ordering::Relaxed),
            "refused": {
                "listener_limit": refused(Refusal::Listener),
                "per_ip": refused(Refusal::PerIp),
                "rate": refused(Refusal::Rate),
                "out_of_files": refused(Refusal::Files),
                "origin": self.origin_refused.load(Ordering::Relaxed),
            },
            "max_per_ip": self.limits.max_per_ip,
            "connect_rate": self.limits.connect_rate,
            "connect_burst": self.limits.connect_burst,
        })
    }
}

/// Every listener's gate, for the admin API.
#[derive(Debug, Default)]
pub struct Gates(Mutex<Vec<Arc<Gate>>>);

impl Gates {
    pub fn add(&self, g: Arc<Gate>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(g);
    }

    pub fn to_json(&self) -> serde_json::Value {
        let gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let map: serde_json::Map<String, serde_json::Value> = gates
            .iter()
            .map(|g| (g.listener.clone(), g.to_json()))
            .collect();
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_and_release() {
        let g = Gate::new(
            "t",
            10,
            PeerLimits {
                max_per_ip: 2,
                connect_rate: 0.0,
                connect_burst: 0.0,
            },
        );
        let a = g.admit(ip("10.0.0.1")).unwrap();
        let _b = g.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.1")).unwrap_err(), Refusal::PerIp);
        let _c = g.admit(ip("10.0.0.2")).unwrap();
        drop(a);
        let _d = g.admit(ip("::ffff:10.0.0.1")).unwrap();
        assert_eq!(g.to_json()["refused"]["per_ip"], 1);
        assert_eq!(g.to_json()["open"], 3);
    }

    #[test]
    fn listener_limit_counts_every_peer() {
        let g = Gate::new("t", 2, PeerLimits::default());
        let _a = g.admit(ip("10.0.0.1")).unwrap();
        let b = g.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.3")).unwrap_err(), Refusal::Listener);
        drop(b);
        assert!(g.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn rate_bucket_refuses_a_burst_and_ipv6_counts_by_prefix() {
        let g = Gate::new(
            "t",
            100,
            PeerLimits {
                max_per_ip: 0,
                connect_rate: 0.001,
                connect_burst: 3.0,
            },
        );
        let slots: Vec<_> = (0..3)
            .map(|i| g.admit(ip(&format!("2001:db8::{i}"))).unwrap())
            .collect();
        assert_eq!(g.admit(ip("2001:db8::99")).unwrap_err(), Refusal::Rate);
        assert!(g.admit(ip("2001:db9::1")).is_ok(), "another /64");
        drop(slots);
    }

    #[test]
    fn sweep_forgets_idle_peers() {
        let g = Gate::new(
            "t",
            100_000,
            PeerLimits {
                max_per_ip: 0,
                connect_rate: 0.0,
                connect_burst: 0.0,
            },
        );
        for i in 0..(SWEEP_EVERY as u32 * 2) {
            drop(g.admit(IpAddr::V4(i.into())).unwrap());
        }
        assert!(g.peers.lock().unwrap().len() < SWEEP_EVERY as usize + 2);
    }

    #[test]
    fn log_every_counts_between_lines() {
        let l = LogEvery::default();
        assert_eq!(l.hit(), Some(1));
        assert_eq!(l.hit(), None);
        assert_eq!(l.hit(), None);
    }
}
