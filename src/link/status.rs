//! What operators see of a link: its state, counters and last error, in logs and on
//! `GET /links` of the admin API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::translate::traffic::{self, Protocol};

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
    /// Not connecting: another router of the cluster holds the link's lease (see
    /// `held_by` in the status) and runs it.
    Standby,
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
    /// The router holding the link's lease, when it is another one (`standby`).
    held_by: Option<String>,
}

/// Shared, queryable status of one link.
#[derive(Debug)]
pub struct LinkStatus {
    pub name: String,
    pub kind: &'static str,
    /// Where it connects (no credentials).
    pub peer: String,
    pub counters: LinkCounters,
    /// The protocol its traffic counts under (`None` for a kind that is no protocol:
    /// tests' fake links).
    protocol: Option<Protocol>,
    inner: Mutex<StateInner>,
}

pub(super) fn now_ms() -> u64 {
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
            protocol: Protocol::ALL.into_iter().find(|p| p.name() == kind),
            inner: Mutex::new(StateInner {
                state: LinkState::Connecting,
                since_unix_ms: now_ms(),
                last_error: None,
                topology_errors: BTreeMap::new(),
                held_by: None,
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
        if state != LinkState::Standby {
            i.held_by = None;
        }
        if i.state != state {
            i.state = state;
            i.since_unix_ms = now_ms();
        }
    }

    /// Standby: router `holder` runs the link (`None`: nobody known to, yet).
    pub fn set_standby(&self, holder: Option<String>) {
        self.set_state(LinkState::Standby);
        self.lock().held_by = holder;
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

    /// A message with `payload` bytes taken from the peer and accepted by the core:
    /// counted as the link's and as its protocol's traffic.
    pub fn received(&self, payload: usize) {
        Self::bump(&self.counters.received);
        if let Some(p) = self.protocol {
            traffic::received(p, 1, payload as u64);
        }
    }

    /// A reply with `payload` bytes routed back to its requester (received traffic).
    pub fn replied(&self, payload: usize) {
        Self::bump(&self.counters.replies);
        if let Some(p) = self.protocol {
            traffic::received(p, 1, payload as u64);
        }
    }

    /// A message with `payload` bytes delivered to the peer (confirmed, where the peer
    /// confirms).
    pub fn published(&self, payload: usize) {
        Self::bump(&self.counters.published);
        if let Some(p) = self.protocol {
            traffic::delivered(p, 1, payload as u64);
        }
    }

    /// Takes back [`published`](Self::published): confirmed, then returned.
    pub fn unpublished(&self, payload: usize) {
        Self::unbump(&self.counters.published);
        if let Some(p) = self.protocol {
            traffic::undelivered(p, 1, payload as u64);
        }
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
            "held_by": i.held_by,
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
