//! Rate limits on routes (`rate_limit:`): a token bucket per publisher, or one for the
//! whole route, in front of what the route takes. The reference is the "Rate limits"
//! section of `docs/routes.md`.
//!
//! A bucket holds up to `burst` tokens and gains `rate` a second; each message the route
//! takes spends one. With none left, `over: drop` drops the message (the route counts
//! it), and `over: hold` spends the token anyway, leaving the bucket in debt, and says how
//! long the publisher must wait for it ([`Admit::After`]): the router sleeps that long
//! before it delivers, and since every edge awaits its publish before it reads the next
//! one, the publisher is held back by its own protocol's flow control. Reserving in debt
//! keeps publishers sharing a bucket in the order they came, and nothing is lost.
//!
//! Publishers are told apart by the message's origin: protocol and peer (an MQTT client
//! id, a STOMP login, an XMPP sender JID, an AMQP link). Their buckets are bounded in
//! number, because client ids cost a hostile client nothing: a bucket that has filled up
//! again holds no state (a new bucket starts full), so such buckets are swept away, and
//! past [`MAX_PUBLISHERS`] buckets the newcomers share one overflow bucket until a sweep
//! makes room. The limiter lives as long as its route's name and settings: a reload hands
//! it on ([`RouteTable::adopt_state`](super::RouteTable::adopt_state)), so editing a file
//! does not refill anyone's bucket.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::Origin;

/// Whose messages share a bucket (`per:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// One bucket per publisher (protocol and peer).
    #[default]
    Publisher,
    /// One bucket for everything the route takes.
    Route,
}

/// What a message over the limit does (`over:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Over {
    /// The publisher waits for the token: its publish is answered later.
    #[default]
    Hold,
    /// The route drops the message (counted).
    Drop,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Publisher => "publisher",
            Per::Route => "route",
        }
    }
}

impl Over {
    pub fn as_str(self) -> &'static str {
        match self {
            Over::Hold => "hold",
            Over::Drop => "drop",
        }
    }
}

/// A route's limit as compiled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens gained per second.
    pub rate: f64,
    /// Most tokens a bucket holds.
    pub burst: f64,
    pub per: Per,
    pub over: Over,
}

/// Most publishers with a bucket of their own, per route.
pub const MAX_PUBLISHERS: usize = 10_000;

/// Full buckets are swept at most this often while the map is at its bound...
const SWEEP_AT_BOUND: Duration = Duration::from_secs(1);
/// ...and at least this often otherwise, so publishers that left release their buckets.
const SWEEP_IDLE: Duration = Duration::from_secs(60);

/// What the limiter says about one message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    /// Under the limit.
    Now,
    /// Over it, `over: hold`: deliver after this wait.
    After(Duration),
    /// Over it, `over: drop`.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: &Limit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            at: now,
        }
    }

    fn tokens_at(&self, limit: &Limit, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + dt * limit.rate).min(limit.burst)
    }

    fn take(&mut self, limit: &Limit, now: Instant) -> Admit {
        self.tokens = self.tokens_at(limit, now);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admit::Now;
        }
        match limit.over {
            Over::Drop => Admit::Drop,
            Over::Hold => {
                self.tokens -= 1.0;
                Admit::After(Duration::from_secs_f64(-self.tokens / limit.rate))
            }
        }
    }
}

/// A route's buckets. See the module docs.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Limit,
    state: Mutex<State>,
    /// Keys publishers by a keyed hash of (protocol, peer): 8 bytes a bucket whatever the
    /// length of a client id, and not predictable, so no client can pick an id that
    /// shares another's bucket.
    keys: std::hash::RandomState,
}

#[derive(Debug)]
struct State {
    /// `per: route`'s bucket, or the overflow bucket of `per: publisher`.
    shared: Bucket,
    publishers: HashMap<u64, Bucket>,
    swept: Instant,
}

impl RateLimiter {
    pub fn new(limit: Limit) -> Self {
        let now = Instant::now();
        Self {
            limit,
            state: Mutex::new(State {
                shared: Bucket::full(&limit, now),
                publishers: HashMap::new(),
                swept: now,
            }),
            keys: std::hash::RandomState::new(),
        }
    }

    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// Spends a token for a message from `origin`.
    pub fn admit(&self, origin: &Origin, now: Instant) -> Admit {
        let limit = &self.limit;
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if limit.per == Per::Route {
            return st.shared.take(limit, now);
        }
        let key = self.keys.hash_one((&*origin.protocol, &*origin.peer));
        if let Some(b) = st.publishers.get_mut(&key) {
            return b.take(limit, now);
        }
        let since = now.saturating_duration_since(st.swept);
        let at_bound = st.publishers.len() >= MAX_PUBLISHERS;
        if (at_bound && since >= SWEEP_AT_BOUND) || since >= SWEEP_IDLE {
            st.publishers
                .retain(|_, b| b.tokens_at(limit, now) < limit.burst);
            st.swept = now;
        }
        if st.publishers.len() >= MAX_PUBLISHERS {
            return st.shared.take(limit, now);
        }
        let mut b = Bucket::full(limit, now);
        let admit = b.take(limit, now);
        st.publishers.insert(key, b);
        admit
    }

    /// Publishers with a bucket of their own now.
    pub fn publishers(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .publishers
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: f64, per: Per, over: Over) -> RateLimiter {
        RateLimiter::new(Limit {
            rate,
            burst,
            per,
            over,
        })
    }

    fn from(peer: &str) -> Origin {
        Origin::new("mqtt", peer)
    }

    #[test]
    fn hold_spends_in_debt_and_says_how_long_to_wait() {
        let l = limiter(10.0, 2.0, Per::Publisher, Over::Hold);
        let t0 = Instant::now();
        let a = from("a");
        assert_eq!(l.admit(&a, t0), Admit::Now);
        assert_eq!(l.admit(&a, t0), Admit::Now);
        // Two waiting at once: the second waits behind the first.
        let w = |x| match x {
            Admit::After(d) => d.as_secs_f64(),
            other => panic!("{other:?}"),
        };
        assert!((w(l.admit(&a, t0)) - 0.1).abs() < 1e-9);
        assert!((w(l.admit(&a, t0)) - 0.2).abs() < 1e-9);
        // Another publisher has its own bucket.
        assert_eq!(l.admit(&from("b"), t0), Admit::Now);
        // The same peer name over another protocol is another publisher.
        assert_eq!(l.admit(&Origin::new("stomp", "a"), t0), Admit::Now);
        // Refills at the rate: after 0.3 s the debt of 2 is paid and one token is back.
        assert_eq!(l.admit(&a, t0 + Duration::from_millis(300)), Admit::Now);
    }

    #[test]
    fn drop_spends_nothing_over_the_limit() {
        let l = limiter(1.0, 1.0, Per::Route, Over::Drop);
        let t0 = Instant::now();
        assert_eq!(l.admit(&from("a"), t0), Admit::Now);
        // `per: route`: one bucket whoever publishes.
        assert_eq!(l.admit(&from("b"), t0), Admit::Drop);
        assert_eq!(l.admit(&from("a"), t0), Admit::Drop);
        assert_eq!(l.admit(&from("b"), t0 + Duration::from_secs(1)), Admit::Now);
        assert_eq!(l.publishers(), 0);
    }

    #[test]
    fn publishers_are_bounded_and_idle_buckets_swept() {
        let l = limiter(1.0, 1.0, Per::Publisher, Over::Drop);
        let t0 = Instant::now();
        for i in 0..MAX_PUBLISHERS {
            assert_eq!(l.admit(&from(&i.to_string()), t0), Admit::Now);
        }
        assert_eq!(l.publishers(), MAX_PUBLISHERS);
        // At the bound, newcomers share the overflow bucket: one passes, the next not.
        assert_eq!(l.admit(&from("new-1"), t0), Admit::Now);
        assert_eq!(l.admit(&from("new-2"), t0), Admit::Drop);
        assert_eq!(l.publishers(), MAX_PUBLISHERS);
        // A second later every bucket has filled up again: swept, room for new ones.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.admit(&from("new-3"), t1), Admit::Now);
        assert_eq!(l.publishers(), 1);
    }
}
