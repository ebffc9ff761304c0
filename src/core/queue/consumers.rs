//! The way out of a queue: consumers attach with a credit window, take what was
//! assigned to them, and acknowledge or reject it; what a consumer leaves unsettled goes
//! back in its original place, or to the dead-letter destination after too many
//! deliveries.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::unacked::Unacked;
use super::{AckMode, DeadLetter, DeadReason, Entry, OfferError, Queue, State};
use crate::core::budget::ByteBudget;
use crate::core::message::Delivery;

/// Result of a consumer's attempt to take deliveries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    Got(usize),
    Empty,
    Closed,
}

#[derive(Debug)]
pub(super) struct ConsumerSlot {
    pub(super) id: u64,
    pub(super) prefetch: usize,
    pub(super) ack: AckMode,
    pub(super) pending: VecDeque<Entry>,
    pub(super) unacked: Unacked,
    pub(super) next_tag: u64,
    pub(super) notify: Arc<Notify>,
    /// Bytes in `pending` + `unacked`.
    pub(super) held_bytes: usize,
    pub(super) budget: Option<Arc<ByteBudget>>,
}

impl ConsumerSlot {
    pub(super) fn credit(&self) -> usize {
        self.prefetch
            .saturating_sub(self.pending.len() + self.unacked.len())
    }

    /// Whether a message of `size` bytes may be assigned now (reserving it in the
    /// budget when so).
    pub(super) fn reserve(&self, size: usize) -> bool {
        self.credit() > 0 && self.budget.as_ref().is_none_or(|b| b.try_reserve(size))
    }
}

impl Queue {
    /// Attaches a consumer; returns its id.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attach(
        &self,
        id: u64,
        prefetch: usize,
        ack: AckMode,
        notify: Arc<Notify>,
        budget: Option<Arc<ByteBudget>>,
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(), OfferError> {
        let mut st = self.lock();
        if st.deleted {
            return Err(OfferError::Closed);
        }
        st.consumers.push(ConsumerSlot {
            id,
            prefetch: prefetch.max(1),
            ack,
            pending: VecDeque::new(),
            unacked: Unacked::default(),
            next_tag: 1,
            notify,
            held_bytes: 0,
            budget,
        });
        self.dispatch(&mut st, now, dead);
        Ok(())
    }

    /// Detaches a consumer: everything assigned to it goes back to the queue in its
    /// original order; what it had received unacknowledged is marked redelivered.
    /// Returns the number of consumers left.
    pub(crate) fn detach(&self, id: u64, now: Instant, dead: &mut Vec<DeadLetter>) -> usize {
        let mut st = self.lock();
        let Some(pos) = st.consumers.iter().position(|c| c.id == id) else {
            return st.consumers.len();
        };
        let slot = st.consumers.remove(pos);
        let dead_before = dead.len();
        if st.rr >= st.consumers.len() {
            st.rr = 0;
        }
        st.held_bytes -= slot.held_bytes;
        if let Some(b) = &slot.budget {
            b.release(slot.held_bytes);
        }
        let mut back: Vec<Entry> = slot.pending.into_iter().collect();
        for e in slot.unacked.into_entries() {
            self.redeliver(e, &mut back, dead);
        }
        self.requeue_locked(&mut st, back);
        self.dispatch(&mut st, now, dead);
        if dead_before < dead.len() {
            Self::room_freed(&mut st, &self.space);
        }
        st.consumers.len()
    }

    /// Keeps consumer `id` attached holding only the deliveries `keep` (tags it has
    /// unacknowledged), until they are settled or it detaches: everything else it was
    /// assigned or had goes back as [`Queue::detach`] gives it back, and it is assigned
    /// nothing more (credit 0). Returns how many of `keep` it still holds.
    pub(crate) fn retire(
        &self,
        id: u64,
        keep: &[u64],
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) -> usize {
        let mut st = self.lock();
        let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) else {
            return 0;
        };
        slot.prefetch = 0;
        let pending = std::mem::take(&mut slot.pending);
        let gone = slot.unacked.keep_only(keep);
        let held = slot.unacked.len();
        let released: usize = pending.iter().map(|e| e.size).sum::<usize>()
            + gone.iter().map(|e| e.size).sum::<usize>();
        release_slot(slot, released);
        st.held_bytes -= released;
        let dead_before = dead.len();
        let mut back: Vec<Entry> = pending.into_iter().collect();
        for e in gone {
            self.redeliver(e, &mut back, dead);
        }
        self.requeue_locked(&mut st, back);
        self.dispatch(&mut st, now, dead);
        if released > 0 || dead_before < dead.len() {
            Self::room_freed(&mut st, &self.space);
        }
        held
    }

    /// Wakes publishers waiting for room after bytes held by consumers were released.
    fn room_freed(st: &mut State, space: &Notify) {
        if st.publisher_waiting {
            st.publisher_waiting = false;
            space.notify_waiters();
        }
    }

    /// Lets the consumers of this queue take what their credit and budgets allow now
    /// (after room appeared in a budget shared with other queues).
    pub(crate) fn refill(&self, now: Instant, dead: &mut Vec<DeadLetter>) {
        let mut st = self.lock();
        self.dispatch(&mut st, now, dead);
    }

    /// An entry a consumer had unacknowledged goes to `back` to be delivered again, or,
    /// once it has been delivered `max_deliveries` times, to `dead`.
    fn redeliver(&self, e: Entry, back: &mut Vec<Entry>, dead: &mut Vec<DeadLetter>) {
        if self
            .options
            .max_deliveries
            .is_some_and(|max| e.deliveries >= max)
        {
            dead.push(e.into_dead(DeadReason::MaxDeliveries));
        } else {
            self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            back.push(e);
        }
    }

    /// Puts entries back into `ready` at their sequence positions.
    pub(super) fn requeue_locked(&self, st: &mut State, mut back: Vec<Entry>) {
        if back.is_empty() {
            return;
        }
        if let Some(shared) = self.shared() {
            // Given back to the cluster, which delivers it again (here or elsewhere).
            for e in back {
                shared.release(e.seq);
            }
            return;
        }
        back.sort_by_key(|e| e.seq);
        // Common case: everything returned is older than everything ready.
        let all_older = match (back.last(), st.ready.front()) {
            (Some(b), Some(r)) => b.seq < r.seq,
            _ => true,
        };
        for e in back.into_iter().rev() {
            st.ready_bytes += e.size;
            if all_older {
                st.ready.push_front(e);
            } else {
                let pos = st.ready.partition_point(|r| r.seq < e.seq);
                st.ready.insert(pos, e);
            }
        }
    }

    /// Hands up to `max` assigned messages to consumer `id`.
    pub(crate) fn take(
        &self,
        id: u64,
        max: usize,
        now: Instant,
        out: &mut Vec<Delivery>,
        dead: &mut Vec<DeadLetter>,
    ) -> Take {
        let mut st = self.lock();
        let deleted = st.deleted;
        let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) else {
            return Take::Closed;
        };
        let mut got = 0;
        let mut expired = Vec::new();
        // A shared queue's hold may have lapsed: what it hands out now may be another
        // router's delivery too.
        let overdue = self.shared().is_some_and(|s| s.overdue(now.into_std()));
        // Bytes that leave the consumer's hands now (expired, or handed over in auto mode).
        let mut released = 0;
        while got < max {
            let Some(mut e) = slot.pending.pop_front() else {
                break;
            };
            if e.expired(now) {
                released += e.size;
                expired.push(e);
                continue;
            }
            e.deliveries += 1;
            if e.stored {
                match slot.ack {
                    AckMode::Auto => self.forget(e.seq),
                    AckMode::Manual => {
                        if let Some(log) = self.log() {
                            log.delivered(e.seq, e.deliveries);
                        }
                    }
                }
            }
            let tag = slot.next_tag;
            slot.next_tag += 1;
            got += 1;
            match slot.ack {
                // Acknowledged by handing it over: move, don't share.
                AckMode::Auto => {
                    released += e.size;
                    out.push(Delivery {
                        message: e.message,
                        destination: e.destination,
                        tag,
                        redelivered: e.redelivered || overdue,
                        delivery_count: e.deliveries,
                    })
                }
                AckMode::Manual => {
                    out.push(Delivery {
                        message: Arc::clone(&e.message),
                        destination: e.destination.clone(),
                        tag,
                        redelivered: e.redelivered || overdue,
                        delivery_count: e.deliveries,
                    });
                    e.redelivered = true;
                    slot.unacked.insert(tag, e);
                }
            }
        }
        let auto = slot.ack == AckMode::Auto;
        release_slot(slot, released);
        st.held_bytes -= released;
        if released > 0 {
            Self::room_freed(&mut st, &self.space);
        }
        for e in expired {
            self.expire_one(e, dead);
        }
        self.counters
            .delivered
            .fetch_add(got as u64, Ordering::Relaxed);
        if auto {
            self.counters.acked.fetch_add(got as u64, Ordering::Relaxed);
        }
        // Taking frees credit in auto mode; refill the consumer.
        self.dispatch(&mut st, now, dead);
        match got {
            0 if deleted => Take::Closed,
            0 => Take::Empty,
            n => Take::Got(n),
        }
    }

    /// Acknowledges one delivery (or, with `cumulative`, every delivery up to and
    /// including `tag`, as STOMP `client` mode and AMQP `multiple` do).
    pub(crate) fn ack(
        &self,
        id: u64,
        tag: u64,
        cumulative: bool,
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) -> bool {
        if !cumulative {
            return self.ack_many(id, &[tag], now, dead) > 0;
        }
        let mut st = self.lock();
        let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) else {
            return false;
        };
        let acked = slot.unacked.remove_through(tag);
        let mut released = 0;
        for e in &acked {
            released += e.size;
            self.forget_entry(e);
        }
        release_slot(slot, released);
        st.held_bytes -= released;
        self.acked_locked(&mut st, acked.len(), now, dead) > 0
    }

    /// Acknowledges several deliveries under one lock, then refills once (a session
    /// settling a batch of at-most-once deliveries). Returns how many were known.
    pub(crate) fn ack_many(
        &self,
        id: u64,
        tags: &[u64],
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) -> usize {
        let mut st = self.lock();
        let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) else {
            return 0;
        };
        let mut n = 0;
        let mut released = 0;
        for tag in tags {
            if let Some(e) = slot.unacked.remove(*tag) {
                n += 1;
                released += e.size;
                self.forget_entry(&e);
            }
        }
        release_slot(slot, released);
        st.held_bytes -= released;
        self.acked_locked(&mut st, n, now, dead)
    }

    /// After `n` deliveries were acknowledged: counts them and refills the consumers.
    fn acked_locked(
        &self,
        st: &mut State,
        n: usize,
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) -> usize {
        self.counters.acked.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            Self::room_freed(st, &self.space);
            self.dispatch(st, now, dead);
        }
        n
    }

    /// Negatively acknowledges: `None` puts the message back in its place (or
    /// dead-letters it after `max_deliveries`); `Some(reason)` dead-letters it with that
    /// reason (or drops and counts it when the queue has no dead-letter destination).
    pub(crate) fn nack(
        &self,
        id: u64,
        tag: u64,
        cumulative: bool,
        requeue: Option<DeadReason>,
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) -> bool {
        let mut st = self.lock();
        let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) else {
            return false;
        };
        let taken: Vec<Entry> = if cumulative {
            slot.unacked.remove_through(tag)
        } else {
            slot.unacked.remove(tag).into_iter().collect()
        };
        if taken.is_empty() {
            return false;
        }
        let released = taken.iter().map(|e| e.size).sum();
        release_slot(slot, released);
        st.held_bytes -= released;
        Self::room_freed(&mut st, &self.space);
        let mut back = Vec::new();
        for e in taken {
            match requeue {
                Some(reason) => dead.push(e.into_dead(reason)),
                None => self.redeliver(e, &mut back, dead),
            }
        }
        self.requeue_locked(&mut st, back);
        self.dispatch(&mut st, now, dead);
        true
    }

    /// Changes a consumer's prefetch (credit window).
    pub(crate) fn set_prefetch(
        &self,
        id: u64,
        prefetch: usize,
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) {
        let mut st = self.lock();
        if let Some(slot) = st.consumers.iter_mut().find(|c| c.id == id) {
            slot.prefetch = prefetch.max(1);
        }
        self.dispatch(&mut st, now, dead);
    }
}

/// Releases `size` bytes a consumer held (from its slot and its budget); the caller
/// lowers the queue's `held_bytes`.
pub(super) fn release_slot(slot: &mut ConsumerSlot, size: usize) {
    if size == 0 {
        return;
    }
    slot.held_bytes -= size;
    if let Some(b) = &slot.budget {
        b.release(size);
    }
}
