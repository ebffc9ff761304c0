//! Queue counters summed over every queue, for `GET /metrics`, kept from going down.
//!
//! Each queue counts what it published, delivered, acknowledged… for as long as it
//! lives, and many queues do not live long: a STOMP topic subscription's `$sb.sub.N`,
//! a temporary queue, a clean MQTT session's queue. Summing the live queues alone would
//! make a total fall whenever one of them goes, and Prometheus reads a counter that falls
//! as a restart from zero, so `rate()` would report the whole total again as new
//! traffic. [`QueueTotals`] remembers each queue's counts from the previous scrape and,
//! once the queue is gone (or replaced by a new one of the same name, whose counts start
//! again), keeps them in a retired sum. What a queue counted after the last scrape
//! before it went is missed: the totals can fall behind, never go back.

use std::collections::HashMap;

use crate::core::QueueStats;

/// The counters of one queue, or their sum over many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub expired: u64,
    pub dropped: u64,
}

impl Counts {
    pub fn of(q: &QueueStats) -> Self {
        Self {
            published: q.published,
            delivered: q.delivered,
            acked: q.acked,
            redelivered: q.redelivered,
            dead_lettered: q.dead_lettered,
            expired: q.expired,
            dropped: q.dropped,
        }
    }

    /// published, delivered, acked, redelivered, dead_lettered, expired, dropped.
    pub fn fields(&self) -> [u64; 7] {
        [
            self.published,
            self.delivered,
            self.acked,
            self.redelivered,
            self.dead_lettered,
            self.expired,
            self.dropped,
        ]
    }

    fn add(&mut self, o: &Counts) {
        self.published += o.published;
        self.delivered += o.delivered;
        self.acked += o.acked;
        self.redelivered += o.redelivered;
        self.dead_lettered += o.dead_lettered;
        self.expired += o.expired;
        self.dropped += o.dropped;
    }

    /// Every counter at least as high as in `earlier`: the same queue, counted on.
    fn follows(&self, earlier: &Counts) -> bool {
        self.fields()
            .iter()
            .zip(earlier.fields())
            .all(|(now, then)| *now >= then)
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct QueueTotals {
    /// Each live queue's counts at the previous scrape.
    seen: HashMap<String, Counts>,
    /// The last counts of queues gone since.
    retired: Counts,
}

impl QueueTotals {
    /// The totals over `queues` (every live queue) and every queue gone since an earlier
    /// scrape saw it.
    pub fn update(&mut self, queues: &[QueueStats]) -> Counts {
        let mut now = HashMap::with_capacity(queues.len());
        let mut total = Counts::default();
        for q in queues {
            let c = Counts::of(q);
            if let Some(before) = self.seen.remove(&q.name)
                && !c.follows(&before)
            {
                // A new queue under an old name: the old one's counts are history.
                self.retired.add(&before);
            }
            total.add(&c);
            now.insert(q.name.clone(), c);
        }
        for gone in self.seen.values() {
            self.retired.add(gone);
        }
        self.seen = now;
        total.add(&self.retired);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, published: u64, delivered: u64) -> QueueStats {
        QueueStats {
            name: name.into(),
            ready: 0,
            ready_bytes: 0,
            unacked: 0,
            unacked_bytes: 0,
            consumers: 0,
            published,
            delivered,
            acked: 0,
            redelivered: 0,
            dead_lettered: 0,
            expired: 0,
            dropped: 0,
        }
    }

    #[test]
    fn totals_never_fall_when_queues_go_or_come_back_anew() {
        let mut t = QueueTotals::default();
        let c = t.update(&[q("orders", 5, 3), q("$sb.sub.1", 10, 10)]);
        assert_eq!((c.published, c.delivered), (15, 13));
        // The subscription's queue is gone; orders counted on.
        let c = t.update(&[q("orders", 6, 3)]);
        assert_eq!((c.published, c.delivered), (16, 13));
        // A new `$sb.sub.1` starts from zero: the old one's counts stay.
        let c = t.update(&[q("orders", 6, 3), q("$sb.sub.1", 1, 0)]);
        assert_eq!((c.published, c.delivered), (17, 13));
        let c = t.update(&[q("orders", 6, 4), q("$sb.sub.1", 2, 2)]);
        assert_eq!((c.published, c.delivered), (18, 16));
        // Replaced between two scrapes: its counts went down.
        let c = t.update(&[q("orders", 6, 4), q("$sb.sub.1", 1, 0)]);
        assert_eq!((c.published, c.delivered), (19, 16));
        let c = t.update(&[]);
        assert_eq!((c.published, c.delivered), (19, 16));
    }
}
