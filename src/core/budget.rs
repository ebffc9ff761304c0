//! Byte accounting beyond the ready messages of queues (issue 19).
//!
//! - [`ByteBudget`]: a cap on the bytes of messages assigned to a set of consumers and
//!   not yet settled (a STOMP connection's subscriptions share one). A queue assigns a
//!   message to a consumer only while its budget has room, so a client that never reads
//!   or never acknowledges holds at most its budget: the rest waits in the queue, where
//!   the queue's own limits (and then its overflow policy) apply. That is withheld
//!   credit, the protocol-level answer.
//! - [`Held`]: bytes that edges keep outside the queues (MQTT retained messages, open
//!   STOMP transactions), reported here so the memory watermark counts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::ratelog::Cause;

/// A shared cap on assigned-but-unsettled bytes. See the module docs.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    held: AtomicUsize,
    /// A queue skipped a consumer of this budget for lack of room: once room appears,
    /// the owner should refill its consumers ([`crate::core::Consumer::refill`]), since
    /// the room may come from another queue than the one holding messages back.
    starved: AtomicBool,
    /// Times a queue withheld a message for lack of room (starts of starvation).
    hits: AtomicU64,
    /// Counts and logs the starts of starvation.
    cause: &'static Cause,
}

impl ByteBudget {
    /// A budget of `limit` bytes; each start of withholding is counted and logged
    /// under `cause`.
    pub fn new(limit: usize, cause: &'static Cause) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: AtomicUsize::new(0),
            starved: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            cause,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Reserves `size` bytes if they fit. A message larger than the whole budget fits
    /// when nothing else is held, so it is delivered rather than stuck.
    pub(crate) fn try_reserve(&self, size: usize) -> bool {
        let mut cur = self.held.load(Ordering::Relaxed);
        loop {
            if cur != 0 && cur.saturating_add(size) > self.limit {
                if !self.starved.swap(true, Ordering::Relaxed) {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    crate::rate_info!(
                        self.cause,
                        held = cur,
                        limit = self.limit,
                        "unacknowledged bytes at the consumer's limit: deliveries withheld until it acknowledges or reads"
                    );
                }
                return false;
            }
            match self.held.compare_exchange_weak(
                cur,
                cur + size,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    pub(crate) fn release(&self, size: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(size))
            });
    }

    /// True (once) when a queue withheld a message since the last call and there is
    /// room again: the owner should refill its consumers.
    pub fn take_starved(&self) -> bool {
        if !self.starved.load(Ordering::Relaxed) || self.held() >= self.limit {
            return false;
        }
        self.starved.swap(false, Ordering::Relaxed)
    }

    /// Whether a queue is withholding messages for lack of room now.
    pub fn is_starved(&self) -> bool {
        self.starved.load(Ordering::Relaxed)
    }

    /// Times messages started being withheld.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// Bytes the edges hold outside the queues, by kind. See the module docs.
#[derive(Debug, Default)]
pub struct Held {
    /// MQTT retained messages.
    pub retained: AtomicU64,
    /// Messages buffered in open STOMP transactions.
    pub transactions: AtomicU64,
}

impl Held {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: usize) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
            Some(h.saturating_sub(n as u64))
        });
    }

    pub fn total(&self) -> u64 {
        self.retained.load(Ordering::Relaxed) + self.transactions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_admits_while_there_is_room_and_one_oversized_message_alone() {
        static C: Cause = Cause::new("test.budget");
        let b = ByteBudget::new(100, &C);
        assert!(b.try_reserve(60));
        assert!(b.try_reserve(40), "up to the limit");
        assert!(!b.try_reserve(1), "over the limit");
        assert!(!b.take_starved(), "no room yet");
        b.release(40);
        assert!(b.take_starved(), "room again: refill");
        assert!(!b.take_starved(), "once");
        b.release(60);
        assert!(b.try_reserve(500), "alone, an oversized message passes");
        assert!(!b.try_reserve(1));
        assert_eq!(b.hits(), 2);
    }
}
