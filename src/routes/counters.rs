//! What each route did with the messages that reached it: how many it took (its source
//! matched and its filter accepted them), how many it could not route (a target or a
//! header template did not render, a body did not convert: the publish was refused), how
//! many its schema found invalid (dead-lettered, or not taken), and what its rate limit
//! did (messages held back, messages dropped). `GET /metrics` shows them per route with
//! `?per_object=1`, summed otherwise.
//!
//! A route's counters live as long as its name: a reload hands them from the old table to
//! the new one ([`RouteTable::adopt_state`]), so a route edited in place keeps
//! counting, and publishes still running on the old table count into the same place.
//! The counts of routes a reload removed go into a retired total ([`Retired`]), so the
//! sums never go backwards.
//!
//! Every routed publish bumps them, from every worker thread: they are [`Sharded`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::RouteTable;
use crate::counter::Sharded;

const MATCHED: usize = 0;
const FAILED: usize = 1;
const INVALID: usize = 2;
const HELD: usize = 3;
const RATE_DROPPED: usize = 4;
const KINDS: usize = 5;

/// One route's counters. See the module docs.
#[derive(Debug, Default)]
pub struct RouteCounters(Sharded<KINDS>);

/// A route's counts at one moment (or their sum over several routes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages the route took.
    pub matched: u64,
    /// Messages it took and could not route.
    pub failed: u64,
    /// Messages its schema found invalid.
    pub invalid: u64,
    /// Messages its rate limit held back (`over: hold`).
    pub held: u64,
    /// Messages its rate limit dropped (`over: drop`).
    pub rate_dropped: u64,
}

impl Counts {
    fn as_array(self) -> [u64; KINDS] {
        let mut a = [0; KINDS];
        a[MATCHED] = self.matched;
        a[FAILED] = self.failed;
        a[INVALID] = self.invalid;
        a[HELD] = self.held;
        a[RATE_DROPPED] = self.rate_dropped;
        a
    }

    fn from_fn(f: impl Fn(usize) -> u64) -> Self {
        Self {
            matched: f(MATCHED),
            failed: f(FAILED),
            invalid: f(INVALID),
            held: f(HELD),
            rate_dropped: f(RATE_DROPPED),
        }
    }
}

impl std::ops::Add for Counts {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        let (a, b) = (self.as_array(), o.as_array());
        Self::from_fn(|i| a[i] + b[i])
    }
}

impl RouteCounters {
    /// The route took a message.
    #[inline]
    pub fn matched(&self) {
        self.0.add(MATCHED, 1);
    }

    /// The route could not route a message it took.
    pub fn failed(&self) {
        self.0.add(FAILED, 1);
    }

    /// The route's schema found a message invalid.
    pub fn invalid(&self) {
        self.0.add(INVALID, 1);
    }

    /// The route's rate limit held a message back.
    pub fn held(&self) {
        self.0.add(HELD, 1);
    }

    /// The route's rate limit dropped a message.
    pub fn rate_dropped(&self) {
        self.0.add(RATE_DROPPED, 1);
    }

    /// Messages the route took.
    pub fn matches(&self) -> u64 {
        self.0.get(MATCHED)
    }

    /// Messages the route took and could not route.
    pub fn failures(&self) -> u64 {
        self.0.get(FAILED)
    }

    /// Every count.
    pub fn counts(&self) -> Counts {
        Counts::from_fn(|i| self.0.get(i))
    }
}

/// The counts of routes that reloads removed.
#[derive(Debug, Default)]
pub struct Retired([AtomicU64; KINDS]);

impl Retired {
    pub fn add(&self, c: Counts) {
        for (slot, n) in self.0.iter().zip(c.as_array()) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> Counts {
        Counts::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

impl RouteTable {
    /// Takes over the counters of `old`'s routes that have a namesake here, and their
    /// rate limiters when the limit is the same (a changed limit starts with full
    /// buckets); returns the counts of the routes that have none (removed by this
    /// table).
    pub fn adopt_state(&mut self, old: &RouteTable) -> Counts {
        let mut gone = Counts::default();
        for o in &old.routes {
            match self.routes.iter_mut().find(|r| r.name == o.name) {
                Some(r) => {
                    r.counters = Arc::clone(&o.counters);
                    if let (Some(new), Some(old)) = (&mut r.rate, &o.rate)
                        && new.limit() == old.limit()
                    {
                        *new = Arc::clone(old);
                    }
                }
                None => gone = gone + o.counters.counts(),
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use crate::core::{Destination, Message};
    use crate::routes::explain;
    use crate::routes::rate::RateLimiter;
    use crate::routes::received::{Received, SchemaDirs};
    use crate::routes::reload::LiveRoutes;
    use crate::routes::{CompileContext, RoutingError};

    fn sources(text: &str) -> Received {
        Received {
            files: vec![("r.yaml".into(), text.into())],
            ..Received::default()
        }
    }

    fn clustered(text: &str) -> LiveRoutes {
        LiveRoutes::clustered(
            CompileContext::default(),
            1,
            Some(sources(text)),
            SchemaDirs::temporary(),
        )
        .unwrap()
    }

    const V1: &str = "routes:
  - {name: keep, from: {queue: a}, to: [{queue: b}]}
  - {name: gone, from: {queue: c}, to: [{queue: d}]}
";
    const V2: &str = "routes:
  - {name: keep, from: {queue: a}, to: [{queue: e}]}
  - {name: new, from: {queue: c}, to: [{queue: \"x.{header:k}\"}]}
";

    fn publish(live: &LiveRoutes, dest: &str) -> Result<(), RoutingError> {
        let table = live.table().load_full();
        table
            .resolve(Destination::queue(dest), Message::new("m"))
            .map(drop)
    }

    fn counts(live: &LiveRoutes, name: &str) -> (u64, u64) {
        let table = live.table().load_full();
        let r = table.routes.iter().find(|r| r.name == name).unwrap();
        (r.counters.matches(), r.counters.failures())
    }

    fn limiter(live: &LiveRoutes, name: &str) -> std::sync::Arc<RateLimiter> {
        let table = live.table().load_full();
        let r = table.routes.iter().find(|r| r.name == name).unwrap();
        std::sync::Arc::clone(r.rate.as_ref().unwrap())
    }

    #[test]
    fn counts_follow_route_names_across_reloads_and_removed_routes_stay_in_the_sums() {
        let live = clustered(V1);
        publish(&live, "a").unwrap();
        publish(&live, "a").unwrap();
        publish(&live, "c").unwrap();
        publish(&live, "nowhere").unwrap();
        // `explain` walks the same code and counts nothing.
        let query = explain::parse_query(&["internal".into(), "queue:a".into()]).unwrap();
        let table = live.table().load_full();
        assert!(explain::explain(&table, &query, Message::new("m")).contains("keep"));
        assert_eq!(
            (counts(&live, "keep"), counts(&live, "gone")),
            ((2, 0), (1, 0))
        );

        live.install("test", 2, Ok(sources(V2))).unwrap();
        // `keep` was edited, not renamed: it goes on counting; `gone`'s count retired.
        assert_eq!(counts(&live, "keep"), (2, 0));
        assert_eq!(counts(&live, "new"), (0, 0));
        let retired = live.retired_counts();
        assert_eq!((retired.matched, retired.failed), (1, 0));
        publish(&live, "a").unwrap();
        // No header `k`: the route takes the message and cannot render its target.
        assert!(publish(&live, "c").is_err());
        assert_eq!(
            (counts(&live, "keep"), counts(&live, "new")),
            ((3, 0), (1, 1))
        );
    }

    #[test]
    fn rate_limiters_survive_reloads_unless_their_limit_changes() {
        let v1 =
            "routes:\n  - {name: r, from: {queue: a}, to: [{queue: b}], rate_limit: {rate: 1}}\n";
        let v2 =
            "routes:\n  - {name: r, from: {queue: a}, to: [{queue: c}], rate_limit: {rate: 1}}\n";
        let v3 =
            "routes:\n  - {name: r, from: {queue: a}, to: [{queue: c}], rate_limit: {rate: 2}}\n";
        let live = clustered(v1);
        let first = limiter(&live, "r");
        live.install("test", 2, Ok(sources(v2))).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &limiter(&live, "r")));
        live.install("test", 3, Ok(sources(v3))).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &limiter(&live, "r")));
        assert_eq!(limiter(&live, "r").limit().rate, 2.0);
    }
}
