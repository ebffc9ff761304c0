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

/// The counters of one queue, or their sum over many: published, delivered, acked,
/// redelivered, dead-lettered, expired, dropped.
pub type Counts = [u64; 7];

pub fn counts(q: &QueueStats) -> Counts {
    [
        q.published,
        q.delivered,
        q.acked,
        q.redelivered,
        q.dead_lettered,
        q.expired,
        q.dropped,
    ]
}

fn add(sum: &mut Counts, c: &Counts) {
    sum.iter_mut().zip(c).for_each(|(s, c)| *s += c);
}

/// Every counter at least as high as in `earlier`: the same queue, counted on.
fn follows(now: &Counts, earlier: &Counts) -> bool {
    now.iter().zip(earlier).all(|(now, then)| now >= then)
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
            let c = counts(q);
            if let Some(before) = self.seen.remove(&q.name)
                && !follows(&c, &before)
            {
                // A new queue under an old name: the old one's counts are history.
                add(&mut self.retired, &before);
            }
            add(&mut total, &c);
            now.insert(q.name.clone(), c);
        }
        for gone in self.seen.values() {
            add(&mut self.retired, gone);
        }
        self.seen = now;
        add(&mut total, &self.retired);
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
            purged: 0,
        }
    }

    #[test]
    fn totals_never_fall_when_queues_go_or_come_back_anew() {
        let mut t = QueueTotals::default();
        let c = t.update(&[q("orders", 5, 3), q("$sb.sub.1", 10, 10)]);
        assert_eq!((c[0], c[1]), (15, 13));
        // The subscription's queue is gone; orders counted on.
        let c = t.update(&[q("orders", 6, 3)]);
        assert_eq!((c[0], c[1]), (16, 13));
        // A new `$sb.sub.1` starts from zero: the old one's counts stay.
        let c = t.update(&[q("orders", 6, 3), q("$sb.sub.1", 1, 0)]);
        assert_eq!((c[0], c[1]), (17, 13));
        let c = t.update(&[q("orders", 6, 4), q("$sb.sub.1", 2, 2)]);
        assert_eq!((c[0], c[1]), (18, 16));
        // Replaced between two scrapes: its counts went down.
        let c = t.update(&[q("orders", 6, 4), q("$sb.sub.1", 1, 0)]);
        assert_eq!((c[0], c[1]), (19, 16));
        let c = t.update(&[]);
        assert_eq!((c[0], c[1]), (19, 16));
    }
}
