//! External links: connections the router makes to other brokers (AMQP) and servers
//! (XMPP). Each link runs under its own supervisor task that reconnects with backoff;
//! messages for a link wait in its core queue (`$sb.link.NAME`, bounded) meanwhile.
//!
//! [`LinkStatus`] is what operators see: logs, and `GET /links` on the admin API.

pub mod amqp;
pub mod xmpp;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Connection state of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Connecting,
    Connected,
    /// Connected, but the peer refuses publishes for now (RabbitMQ `connection.blocked`).
    Blocked,
    /// Waiting before the next connection attempt.
    Retrying,
    Stopped,
}

/// Counters of a link; all only ever increase.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Messages taken from the peer and accepted by the core.
    pub received: AtomicU64,
    /// Deliveries the peer marked as redelivered (possible duplicates), whatever then
    /// became of them.
    pub redelivered: AtomicU64,
    /// Messages refused on the way in (untranslatable, or no route accepted them).
    pub rejected: AtomicU64,
    /// Messages published to the peer and confirmed.
    pub published: AtomicU64,
    /// Publishes the peer returned as unroutable or nacked (each attempt counts).
    pub publish_failures: AtomicU64,
    /// Messages sent again after a connection loss left them unconfirmed (the peer
    /// may already have had them: possible duplicates).
    pub republished: AtomicU64,
    /// Messages given up on and sent to the link's dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Replies routed back to requesters.
    pub replies: AtomicU64,
    /// Successful connections after the first.
    pub reconnects: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
struct StateInner {
    state: LinkState,
    since_unix_ms: u64,
    last_error: Option<String>,
    /// Declaration problems by route name.
    topology_errors: BTreeMap<String, String>,
}

/// Shared, queryable status of one link.
#[derive(Debug)]
pub struct LinkStatus {
    pub name: String,
    pub kind: &'static str,
    /// Where it connects (no credentials).
    pub peer: String,
    pub counters: LinkCounters,
    inner: Mutex<StateInner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LinkStatus {
    pub fn new(name: &str, kind: &'static str, peer: String) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            peer,
            counters: LinkCounters::default(),
            inner: Mutex::new(StateInner {
                state: LinkState::Connecting,
                since_unix_ms: now_ms(),
                last_error: None,
                topology_errors: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn state(&self) -> LinkState {
        self.lock().state
    }

    pub fn set_state(&self, state: LinkState) {
        let mut i = self.lock();
        if i.state != state {
            i.state = state;
            i.since_unix_ms = now_ms();
        }
    }

    pub fn set_error(&self, error: impl Into<String>) {
        self.lock().last_error = Some(error.into());
    }

    pub fn set_topology(&self, errors: BTreeMap<String, String>) {
        self.lock().topology_errors = errors;
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back one count that turned out wrong (a publish confirmed, then returned).
    pub fn unbump(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// The status as JSON, for the admin API.
    pub fn to_json(&self) -> serde_json::Value {
        let i = self.lock().clone();
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "name": self.name,
            "kind": self.kind,
            "peer": self.peer,
            "state": i.state,
            "since_unix_ms": i.since_unix_ms,
            "last_error": i.last_error,
            "topology_errors": i.topology_errors,
            "counters": {
                "received": n(&c.received),
                "redelivered": n(&c.redelivered),
                "rejected": n(&c.rejected),
                "published": n(&c.published),
                "publish_failures": n(&c.publish_failures),
                "republished": n(&c.republished),
                "dead_lettered": n(&c.dead_lettered),
                "replies": n(&c.replies),
                "reconnects": n(&c.reconnects),
            }
        })
    }
}

/// Every link's status, by name.
#[derive(Debug, Default, Clone)]
pub struct Links(Arc<Mutex<BTreeMap<String, Arc<LinkStatus>>>>);

impl Links {
    pub fn insert(&self, s: Arc<LinkStatus>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(s.name.clone(), s);
    }

    pub fn to_json(&self) -> serde_json::Value {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::Value::Array(map.values().map(|s| s.to_json()).collect())
    }
}

/// The internal queue a link consumes its outbound messages from.
pub fn link_queue(link: &str) -> String {
    format!("{}{link}", crate::router::LINK_QUEUE_PREFIX)
}

/// Declares a link's two core queues: its outbound buffer (bounded; publishers wait,
/// not lose, when it is full) and its dead-letter queue (up front, so giving up on a
/// message never depends on queue auto-creation).
pub fn declare_link_queues(
    core: &crate::core::Core,
    link: &str,
    max_pending: usize,
    dead_letter: &str,
) {
    let options = crate::core::QueueOptions {
        max_length: max_pending,
        overflow: crate::core::Overflow::Block,
        ..crate::core::QueueOptions::default()
    };
    if let Err(e) = core.declare_queue(&link_queue(link), Some(options)) {
        tracing::error!(link, error = %e, "cannot declare the link queue");
    }
    if let Err(e) = core.declare_queue(dead_letter, None) {
        tracing::error!(link, error = %e, "cannot declare the dead-letter queue");
    }
}

/// Between connection attempts: marks the link `retrying`, waits the next backoff
/// delay. `false` when shutdown came first.
pub async fn retry_pause(
    status: &LinkStatus,
    backoff: &mut Backoff,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    status.set_state(LinkState::Retrying);
    let delay = backoff.next_delay();
    tracing::info!(
        kind = status.kind,
        in_ms = delay.as_millis() as u64,
        "link retrying"
    );
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Settings every link kind shares, checked alike; problems go to `errors` as
/// `HERE.KEY: …`.
pub(crate) struct SettingsCheck<'a> {
    pub here: String,
    pub errors: &'a mut Vec<String>,
}

impl SettingsCheck<'_> {
    /// A duration setting (`200ms`, `30s`, `5m`), or its default.
    pub fn duration(
        &mut self,
        key: &str,
        text: Option<String>,
        default: std::time::Duration,
    ) -> std::time::Duration {
        match text {
            None => default,
            Some(t) => crate::duration::parse_duration(&t).unwrap_or_else(|e| {
                self.errors.push(format!("{}.{key}: {e}", self.here));
                default
            }),
        }
    }

    /// A count that must be at least 1, or its default.
    pub fn count(&mut self, key: &str, v: Option<usize>, default: usize) -> usize {
        let v = v.unwrap_or(default);
        if v == 0 {
            self.errors
                .push(format!("{}.{key}: must be at least 1", self.here));
        }
        v.max(1)
    }

    /// The dead-letter queue's name: given, or `dead.LINK`.
    pub fn dead_letter(&mut self, link: &str, given: Option<String>) -> String {
        let name = given.unwrap_or_else(|| format!("dead.{link}"));
        if let Err(e) = crate::core::validate_name(&name) {
            self.errors
                .push(format!("{}.dead_letter: `{name}`: {e}", self.here));
        }
        name
    }

    /// A secret given inline, by environment variable, or by file (relative to the
    /// settings file): at most one of them, else `conflict` is reported. `keys` names
    /// the env and file keys.
    pub fn secret(
        &mut self,
        keys: [&str; 2],
        given: (Option<String>, Option<String>, Option<String>),
        base: &std::path::Path,
        lookup_env: &dyn Fn(&str) -> Option<String>,
        conflict: &str,
    ) -> Option<String> {
        let here = self.here.clone();
        match given {
            (None, None, None) => None,
            (Some(s), None, None) => Some(s),
            (None, Some(var), None) => lookup_env(&var).or_else(|| {
                self.errors.push(format!(
                    "{here}.{}: environment variable `{var}` is not set",
                    keys[0]
                ));
                None
            }),
            (None, None, Some(f)) => match std::fs::read_to_string(base.join(&f)) {
                Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_owned()),
                Err(e) => {
                    self.errors
                        .push(format!("{here}.{}: cannot read `{f}`: {e}", keys[1]));
                    None
                }
            },
            _ => {
                self.errors.push(format!("{here}: {conflict}"));
                None
            }
        }
    }
}

/// Capped exponential backoff with jitter: each delay is random between half and all of
/// `min(cap, initial·2^n)`, so many routers restarting together do not stampede, and no
/// delay is ever zero.
#[derive(Debug)]
pub struct Backoff {
    initial: std::time::Duration,
    cap: std::time::Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: std::time::Duration, cap: std::time::Duration) -> Self {
        Self {
            initial,
            cap,
            attempt: 0,
            seed: now_ms() ^ u64::from(std::process::id()).rotate_left(32),
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> std::time::Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac =
            (self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        // Half fixed, half jitter: never zero, never above the ceiling.
        ceiling.mul_f64(0.5 + 0.5 * frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        assert!(d[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
