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
