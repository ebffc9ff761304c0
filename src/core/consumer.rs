//! A consumer attached to one queue (a named queue, or the private queue behind a topic
//! subscription). Dropping it detaches it: whatever it held unacknowledged goes back to
//! the queue, marked redelivered, and an auto-delete queue goes away with its last
//! consumer.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Core;
use super::budget::ByteBudget;
use super::dead_letter::{DeadLetter, DeadReason};
use super::message::Delivery;
use super::queue::{AckMode, Queue, Take};

/// Options for attaching a consumer.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Most messages assigned to this consumer and not yet acknowledged (for
    /// [`AckMode::Auto`]: not yet taken). Fair dispatch and memory bounds both rest on it.
    pub prefetch: usize,
    pub ack: AckMode,
    /// Share one wake-up among several consumers (a session with many subscriptions
    /// waits on one [`Notify`] and then drains each consumer with `try_recv_many`).
    pub notify: Option<Arc<Notify>>,
    /// Caps the bytes assigned to this consumer and not yet settled, shared with the
    /// other consumers of the same budget (one STOMP connection's subscriptions).
    pub budget: Option<Arc<ByteBudget>>,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            prefetch: 256,
            ack: AckMode::Manual,
            notify: None,
            budget: None,
        }
    }
}

impl ConsumeOptions {
    pub fn auto_ack(prefetch: usize) -> Self {
        Self {
            prefetch,
            ack: AckMode::Auto,
            notify: None,
            budget: None,
        }
    }

    pub fn manual(prefetch: usize) -> Self {
        Self {
            prefetch,
            ack: AckMode::Manual,
            notify: None,
            budget: None,
        }
    }

    pub fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn with_notify(mut self, notify: Arc<Notify>) -> Self {
        self.notify = Some(notify);
        self
    }
}

/// The queue this consumer was attached to was deleted (or the core shut down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queue was deleted")]
pub struct Closed;

/// A consumer handle. See the module docs.
#[derive(Debug)]
pub struct Consumer {
    pub(crate) core: Core,
    pub(crate) queue: Arc<Queue>,
    pub(crate) id: u64,
    pub(crate) notify: Arc<Notify>,
}

impl Consumer {
    pub fn queue_name(&self) -> &str {
        self.queue.name()
    }

    /// Releases the room its queue kept from the last burst of deliveries, where it
    /// is empty (see `Queue::release_idle`): for a session going idle.
    pub fn release_idle_memory(&self) {
        self.queue.release_idle(self.id);
    }

    /// The [`Notify`] woken when deliveries are assigned to this consumer.
    pub fn notifier(&self) -> &Arc<Notify> {
        &self.notify
    }

    /// Takes up to `max` deliveries without waiting.
    pub fn try_recv_many(&self, max: usize, out: &mut Vec<Delivery>) -> Result<usize, Closed> {
        let mut dead = Vec::new();
        let r = self
            .queue
            .take(self.id, max, Instant::now(), out, &mut dead);
        self.core.forward_dead(&self.queue, dead);
        match r {
            Take::Got(n) => Ok(n),
            Take::Empty => Ok(0),
            Take::Closed => Err(Closed),
        }
    }

    /// Waits for at least one delivery and takes up to `max`.
    pub async fn recv_many(&self, max: usize, out: &mut Vec<Delivery>) -> Result<usize, Closed> {
        let mut yielded = false;
        loop {
            match self.try_recv_many(max, out)? {
                // Give a busy publisher one scheduling round to fill the batch before
                // parking: a wake-up per message costs far more than a yield.
                0 if !yielded => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                0 => self.notify.notified().await,
                n => return Ok(n),
            }
        }
    }

    /// Waits for the next delivery; `None` once the queue is gone.
    pub async fn recv(&self) -> Option<Delivery> {
        let mut out = Vec::with_capacity(1);
        self.recv_many(1, &mut out).await.ok()?;
        out.pop()
    }

    /// Acknowledges one delivery. False when the tag is unknown (already acked, or
    /// never handed out).
    pub fn ack(&self, tag: u64) -> bool {
        self.settle(|q, now, dead| q.ack(self.id, tag, false, now, dead))
    }

    /// Acknowledges several deliveries at once (one lock, one refill); returns how many
    /// tags were known.
    pub fn ack_many(&self, tags: &[u64]) -> usize {
        if tags.is_empty() {
            return 0;
        }
        let mut n = 0;
        self.settle(|q, now, dead| {
            n = q.ack_many(self.id, tags, now, dead);
            n > 0
        });
        n
    }

    /// Acknowledges every delivery up to and including `tag`.
    pub fn ack_through(&self, tag: u64) -> bool {
        self.settle(|q, now, dead| q.ack(self.id, tag, true, now, dead))
    }

    /// Negatively acknowledges one delivery (see [`Queue`] for `requeue`).
    pub fn nack(&self, tag: u64, requeue: bool) -> bool {
        let reason = (!requeue).then_some(DeadReason::Rejected);
        self.settle(|q, now, dead| q.nack(self.id, tag, false, reason, now, dead))
    }

    /// Dead-letters one delivery with `reason` (dropped and counted when the queue has
    /// no dead-letter destination).
    pub fn dead_letter(&self, tag: u64, reason: DeadReason) -> bool {
        self.settle(|q, now, dead| q.nack(self.id, tag, false, Some(reason), now, dead))
    }

    /// Negatively acknowledges every delivery up to and including `tag`.
    pub fn nack_through(&self, tag: u64, requeue: bool) -> bool {
        let reason = (!requeue).then_some(DeadReason::Rejected);
        self.settle(|q, now, dead| q.nack(self.id, tag, true, reason, now, dead))
    }

    /// Assigns to this consumer what its credit and budget allow now: call it when room
    /// appeared in a budget shared with consumers of other queues
    /// ([`ByteBudget::take_starved`]).
    pub fn refill(&self) {
        self.settle(|q, now, dead| {
            q.refill(now, dead);
            true
        });
    }

    /// Stops taking deliveries but keeps holding `keep` (unacknowledged tags) until
    /// they are settled through this handle or it is dropped: the rest goes back to the
    /// queue as when a consumer is dropped. For a delivery whose outcome the client
    /// still has to tell (an MQTT QoS 2 message awaiting PUBCOMP) after the connection
    /// that took it ended. Returns how many of `keep` it holds.
    pub fn retire(&self, keep: &[u64]) -> usize {
        let mut held = 0;
        self.settle(|q, now, dead| {
            held = q.retire(self.id, keep, now, dead);
            true
        });
        held
    }

    /// Changes the credit window.
    pub fn set_prefetch(&self, prefetch: usize) {
        self.settle(|q, now, dead| {
            q.set_prefetch(self.id, prefetch, now, dead);
            true
        });
    }

    fn settle(&self, f: impl FnOnce(&Queue, Instant, &mut Vec<DeadLetter>) -> bool) -> bool {
        let mut dead = Vec::new();
        let r = f(&self.queue, Instant::now(), &mut dead);
        self.core.forward_dead(&self.queue, dead);
        r
    }

    /// Its queue keeps persistent messages in the store, so settling a delivery may
    /// write there (see [`Core::settlements_durable`]).
    pub fn is_durable(&self) -> bool {
        self.queue.store().is_some()
    }

    /// Its queue lives in the cluster, so a settlement is sent there (see
    /// [`Core::settlements_sent`]).
    pub fn is_shared(&self) -> bool {
        self.queue.is_shared()
    }

    /// Acknowledges mode of the consumer's queue slot is fixed at attach time; this tells
    /// whether deliveries need settling.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let mut dead = Vec::new();
        let left = self.queue.detach(self.id, Instant::now(), &mut dead);
        self.core.forward_dead(&self.queue, dead);
        if left == 0 && self.queue.options().auto_delete {
            self.core.delete_queue_if_same(&self.queue);
        }
    }
}

impl AckMode {
    pub fn is_manual(self) -> bool {
        self == AckMode::Manual
    }
}
