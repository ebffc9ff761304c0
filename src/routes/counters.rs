//! What each route did with the messages that reached it: how many it took (its source
//! matched and its filter accepted them) and how many it could not route (a target or a
//! header template did not render, a body did not convert: the publish was refused).
//! `GET /metrics` shows them per route with `?per_object=1`, summed otherwise.
//!
//! A route's counters live as long as its name: a reload hands them from the old table to
//! the new one ([`RouteTable::adopt_counters`]), so a route edited in place keeps
//! counting, and publishes still running on the old table count into the same place.
//! The counts of routes a reload removed go into a retired total ([`Retired`]), so the
//! sums never go backwards.
//!
//! Every routed publish bumps them, from every worker thread: they are [`Sharded`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::RouteTable;
use crate::counter::Sharded;

const MATCHED: usize = 0;
const FAILED: usize = 1;

/// One route's counters. See the module docs.
#[derive(Debug, Default)]
pub struct RouteCounters(Sharded<2>);

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

    /// Messages the route took.
    pub fn matches(&self) -> u64 {
        self.0.get(MATCHED)
    }

    /// Messages the route took and could not route.
    pub fn failures(&self) -> u64 {
        self.0.get(FAILED)
    }
}

/// The counts of routes that reloads removed: (matches, failures).
#[derive(Debug, Default)]
pub struct Retired([AtomicU64; 2]);

impl Retired {
    pub fn add(&self, matches: u64, failures: u64) {
        self.0[MATCHED].fetch_add(matches, Ordering::Relaxed);
        self.0[FAILED].fetch_add(failures, Ordering::Relaxed);
    }

    pub fn get(&self) -> (u64, u64) {
        let n = |i: usize| self.0[i].load(Ordering::Relaxed);
        (n(MATCHED), n(FAILED))
    }
}

impl RouteTable {
    /// Takes over the counters of `old`'s routes that have a namesake here; returns the
    /// counts of those that have none (removed by this table).
    pub fn adopt_counters(&mut self, old: &RouteTable) -> (u64, u64) {
        let mut gone = (0, 0);
        for o in &old.routes {
            match self.routes.iter_mut().find(|r| r.name == o.name) {
                Some(r) => r.counters = std::sync::Arc::clone(&o.counters),
                None => {
                    gone.0 += o.counters.matches();
                    gone.1 += o.counters.failures();
                }
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use crate::core::{Destination, Message};
    use crate::routes::explain;
    use crate::routes::reload::LiveRoutes;
    use crate::routes::{CompileContext, RoutingError};

    fn sources(text: &str) -> Vec<(String, String)> {
        vec![("r.yaml".into(), text.into())]
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

    #[test]
    fn counts_follow_route_names_across_reloads_and_removed_routes_stay_in_the_sums() {
        let live = LiveRoutes::clustered(CompileContext::default(), 1, Some(sources(V1))).unwrap();
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
        assert_eq!(live.retired_counts(), (1, 0));
        publish(&live, "a").unwrap();
        // No header `k`: the route takes the message and cannot render its target.
        assert!(publish(&live, "c").is_err());
        assert_eq!(
            (counts(&live, "keep"), counts(&live, "new")),
            ((3, 0), (1, 1))
        );
    }
}
