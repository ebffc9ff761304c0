//! Dead-lettering: a message that leaves a queue without being acknowledged (rejected,
//! expired, delivered too often, pushed out by overflow) goes to the queue's dead-letter
//! destination with `x-death-*` headers saying why, or is dropped and counted when the
//! queue has none. A dead-letter destination may itself dead-letter; the chain is cut
//! after [`MAX_DEAD_LETTER_HOPS`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Core;
use super::destination::Destination;
use super::fanout::Sender;
use super::message::Message;
use super::queue::Queue;
use crate::ratelog::Cause;
use crate::store::StoreWait;

/// Per-message drops, counted and logged at most once a second each (see
/// [`crate::ratelog`]).
static DEAD_LETTER_CHAIN: Cause = Cause::new("dead_letter.chain_too_long");
static DROPPED_NO_DEAD_LETTER: Cause = Cause::new("dead_letter.none");
pub(super) static DEAD_LETTER_REFUSED: Cause = Cause::new("dead_letter.refused");

/// Limits dead-letter chains (a dead-letter queue that overflows into another).
const MAX_DEAD_LETTER_HOPS: u8 = 3;

/// Why a message left a queue without being acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    Expired,
    Rejected,
    MaxDeliveries,
    Overflow,
    /// An edge could not carry it as its route's loss policy asks (`loss: reject`).
    Untranslatable,
    /// The consumer's user may not read it (an edge's per-delivery permission check):
    /// never handed over, and never counted as acknowledged.
    Forbidden,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Rejected => "rejected",
            Self::MaxDeliveries => "max-deliveries",
            Self::Overflow => "overflow",
            Self::Untranslatable => "untranslatable",
            Self::Forbidden => "forbidden",
        }
    }
}

/// A message on its way out of a queue to the dead-letter destination (or the bin).
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub message: Arc<Message>,
    pub destination: Destination,
    pub reason: DeadReason,
    pub deliveries: u32,
    /// Its sequence in the store of the queue it leaves, to remove once it is forwarded.
    pub stored: Option<u64>,
}

impl Core {
    pub(crate) fn forward_dead(&self, from: &Queue, dead: Vec<DeadLetter>) {
        self.forward_dead_hops(from, dead, 0);
    }

    pub(super) fn forward_dead_hops(&self, from: &Queue, dead: Vec<DeadLetter>, hops: u8) {
        for d in dead {
            let stored = d.stored;
            let waits = self.forward_one_dead(from, d, hops);
            let Some(seq) = stored else { continue };
            // A shared queue's message is acknowledged to the cluster only once its
            // copy is confirmed where it went (the cluster does not order one publish
            // before another's acknowledgement as the journal does); given back for
            // another try if the copy was refused.
            if let Some(log) = from.shared_log()
                && !waits.iter().all(StoreWait::is_done_ok)
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                rt.spawn(async move {
                    let mut ok = true;
                    for w in waits {
                        ok &= w.wait().await.is_ok();
                    }
                    if ok { log.ack(seq) } else { log.release(seq) }
                });
                continue;
            }
            // Only now, after the copy (if any) went to its destination's store: a crash
            // in between leaves the message in both places, never in neither.
            from.forget(seq);
        }
    }

    /// Forwards one dead letter; returns the store (or cluster) writes of its copy.
    fn forward_one_dead(&self, from: &Queue, d: DeadLetter, hops: u8) -> Vec<StoreWait> {
        let target = from
            .options()
            .dead_letter
            .as_ref()
            .filter(|t| !matches!(t, Destination::Queue(n) if **n == *from.name()));
        if target.is_some() && hops >= MAX_DEAD_LETTER_HOPS {
            from.counters.dropped.fetch_add(1, Ordering::Relaxed);
            crate::rate_warn!(DEAD_LETTER_CHAIN, queue = from.name(), message_id = %d.message.id, reason = d.reason.as_str(), hops, "message dropped: dead-letter chain too long");
            return Vec::new();
        }
        let Some(target) = target else {
            from.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if d.reason == DeadReason::Expired {
                tracing::debug!(queue = from.name(), message_id = %d.message.id, "expired message dropped");
            } else {
                crate::rate_warn!(DROPPED_NO_DEAD_LETTER, queue = from.name(), message_id = %d.message.id, reason = d.reason.as_str(), "message dropped: the queue has no dead-letter destination");
            }
            return Vec::new();
        };
        let mut m = (*d.message).clone();
        m.headers.set("x-death-reason", d.reason.as_str());
        m.headers.set("x-death-queue", from.name());
        m.headers
            .set("x-death-destination", d.destination.to_string());
        m.headers
            .set("x-death-deliveries", d.deliveries.to_string());
        // A dead letter's own expiry no longer applies: it is kept for inspection.
        m.expiry = None;
        // Each hop counts, so a dead-letter topic that feeds a subscription dead-lettering
        // into it again cannot recurse without end.
        let sender = Sender::DeadLetter { hops: hops + 1 };
        let result = self
            .targets(target)
            .and_then(|to| self.fan_out_now(&to, target, &[Arc::new(m)], sender));
        match result {
            Ok(reached) => {
                from.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                reached.waits
            }
            Err(e) => {
                from.counters.dropped.fetch_add(1, Ordering::Relaxed);
                crate::rate_warn!(DEAD_LETTER_REFUSED, queue = from.name(), dead_letter = %target, error = %e, message_id = %d.message.id, "dead-letter destination refused message; dropped");
                Vec::new()
            }
        }
    }
}
