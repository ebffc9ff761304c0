//! A point-to-point queue: FIFO, each message to exactly one consumer, fair dispatch
//! across consumers by per-consumer credit (prefetch), acknowledgements, redelivery,
//! dead-lettering, TTL and bounded size.
//!
//! ### Invariants
//! - `ready` is ordered by publish sequence. Requeued messages go back to their original
//!   position, so a queue never reorders what its consumers have not acknowledged.
//! - A message is in exactly one place: `ready`, a consumer's `pending` (assigned but
//!   not yet handed over) or a consumer's `unacked` (handed over, awaiting ack).
//! - A consumer never holds more than its prefetch in `pending` + `unacked`.
//! - `ready` never exceeds the queue's limits through publishing; only requeues (which
//!   return messages that were already counted) may temporarily exceed them. The byte
//!   limit counts what consumers hold (`pending` + `unacked`) as well, so a consumer
//!   that never acknowledges cannot make a queue hold more than its `max_bytes`.
//! - A consumer with a [`ByteBudget`] is assigned a message only while the budget has
//!   room for it; what it holds is reserved in the budget until settled.
//!
//! The queue is synchronous and short-locked (a `std::sync::Mutex`, never held across an
//! `.await`); waiting for space or for messages is done by the async callers in
//! [`super::Core`] and [`super::Consumer`] with [`tokio::sync::Notify`].
//! It is where the durable store hooks in: every transition happens in one place here,
//! so a persistent message on a durable queue is appended to the store as it is
//! admitted (under the lock, so its append is ordered before any removal), marked when
//! delivered, and removed when it leaves for good (ack, dead-letter, drop, delete).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::budget::ByteBudget;
use super::destination::Destination;
use super::message::{Delivery, Message};
use super::persist::Restored;
use crate::store::{QueueLog, Store, StoreWait};

/// What a full queue does with the next publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// The publisher waits until there is room (backpressure up to the edge, which stops
    /// reading its socket or withholds credit).
    #[default]
    Block,
    /// The publisher gets an error at once (STOMP ERROR, MQTT 5 quota-exceeded, AMQP nack).
    RejectPublish,
    /// The oldest ready message is removed (to the dead-letter destination when one is
    /// set) to make room.
    DropHead,
}

/// What happens to a message whose TTL has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiredAction {
    /// To the dead-letter destination if the queue has one, else dropped (and counted).
    #[default]
    DeadLetter,
    /// Dropped (and counted).
    Drop,
}

/// How a consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Handing a message to the consumer acknowledges it (at most once past this point).
    Auto,
    /// The consumer acks or nacks each delivery by tag.
    Manual,
}

/// Limits and policies of one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueOptions {
    /// Most ready messages held.
    pub max_length: usize,
    /// Most bytes held: ready messages and those assigned to consumers and not yet
    /// acknowledged (approximate, see [`Message::byte_size`]).
    pub max_bytes: usize,
    pub overflow: Overflow,
    /// Time-to-live applied to every message on enqueue (the shorter of this and the
    /// message's own expiry wins).
    pub ttl: Option<Duration>,
    pub expired: ExpiredAction,
    /// Where rejected, expired, over-delivered and overflowed messages go.
    pub dead_letter: Option<Destination>,
    /// After this many deliveries without an ack, a message is dead-lettered instead of
    /// being requeued again.
    pub max_deliveries: Option<u32>,
    /// Survives restarts (with the durability feature) and consumer absence.
    pub durable: bool,
    /// Deleted when its last consumer goes (non-durable subscriptions, temp queues).
    pub auto_delete: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_length: 100_000,
            max_bytes: 256 * 1024 * 1024,
            overflow: Overflow::Block,
            ttl: None,
            expired: ExpiredAction::DeadLetter,
            dead_letter: None,
            max_deliveries: None,
            durable: true,
            auto_delete: false,
        }
    }
}

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

/// A message inside a queue.
#[derive(Debug)]
pub(crate) struct Entry {
    seq: u64,
    message: Arc<Message>,
    destination: Destination,
    deadline: Option<Instant>,
    redelivered: bool,
    deliveries: u32,
    size: usize,
    /// The encoded message, to append to the store when admitted (then dropped).
    persist: Option<Bytes>,
    /// In the store under (queue, seq).
    stored: bool,
}

impl Entry {
    pub(crate) fn new(
        message: Arc<Message>,
        destination: Destination,
        deadline: Option<Instant>,
    ) -> Self {
        let size = message.byte_size();
        Self::sized(message, destination, deadline, size)
    }

    /// As [`Entry::new`] with the size already known (fan-out computes it once).
    pub(crate) fn sized(
        message: Arc<Message>,
        destination: Destination,
        deadline: Option<Instant>,
        size: usize,
    ) -> Self {
        Self {
            seq: 0,
            message,
            destination,
            deadline,
            redelivered: false,
            deliveries: 0,
            size,
            persist: None,
            stored: false,
        }
    }

    /// To be written to the store (as `bytes`) when a durable queue admits it.
    pub(crate) fn persisted(mut self, bytes: Option<Bytes>) -> Self {
        self.persist = bytes;
        self
    }

    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    pub(crate) fn message(&self) -> &Arc<Message> {
        &self.message
    }

    fn into_dead(self, reason: DeadReason) -> DeadLetter {
        DeadLetter {
            message: self.message,
            destination: self.destination,
            reason,
            deliveries: self.deliveries,
            stored: self.stored.then_some(self.seq),
        }
    }
}

/// Why an offer was refused.
#[derive(Debug)]
pub(crate) enum OfferError {
    /// Full and the policy is block or reject: the entry comes back to the caller.
    Full(Entry),
    /// The message alone is larger than the queue's byte limit.
    TooLarge(usize),
    /// The queue was deleted.
    Closed,
}

/// Result of a consumer's attempt to take deliveries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    Got(usize),
    Empty,
    Closed,
}

#[derive(Debug)]
struct ConsumerSlot {
    id: u64,
    prefetch: usize,
    ack: AckMode,
    pending: VecDeque<Entry>,
    unacked: BTreeMap<u64, Entry>,
    next_tag: u64,
    notify: Arc<Notify>,
    /// Bytes in `pending` + `unacked`.
    held_bytes: usize,
    budget: Option<Arc<ByteBudget>>,
}

impl ConsumerSlot {
    fn credit(&self) -> usize {
        self.prefetch
            .saturating_sub(self.pending.len() + self.unacked.len())
    }

    /// Whether a message of `size` bytes may be assigned now (reserving it in the
    /// budget when so).
    fn reserve(&self, size: usize) -> bool {
        self.credit() > 0 && self.budget.as_ref().is_none_or(|b| b.try_reserve(size))
    }
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Entry>,
    ready_bytes: usize,
    /// Bytes assigned to consumers and not yet settled (every slot's `held_bytes`).
    held_bytes: usize,
    consumers: Vec<ConsumerSlot>,
    rr: usize,
    next_seq: u64,
    deleted: bool,
    /// A publisher was refused for lack of room and may be waiting on `space`.
    publisher_waiting: bool,
}

/// Counters, readable without the lock.
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub redelivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub expired: AtomicU64,
    pub dropped: AtomicU64,
}

/// A snapshot of a queue's state for the admin API and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStats {
    pub name: String,
    pub ready: usize,
    pub ready_bytes: usize,
    pub unacked: usize,
    /// Bytes of the `unacked` messages (assigned to consumers, not yet settled).
    pub unacked_bytes: usize,
    pub consumers: usize,
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub expired: u64,
    pub dropped: u64,
}

/// A queue. Created and owned by [`super::Core`].
#[derive(Debug)]
pub struct Queue {
    name: Arc<str>,
    options: QueueOptions,
    state: Mutex<State>,
    /// Woken when room appears for blocked publishers.
    pub(crate) space: Notify,
    pub(crate) counters: QueueCounters,
    /// The store of a durable queue when the core has one, and this queue's log in it,
    /// where its persistent messages go.
    store: Option<(Arc<dyn Store>, Box<dyn QueueLog>)>,
}

impl Queue {
    pub(crate) fn new(
        name: Arc<str>,
        options: QueueOptions,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let store = store.filter(|_| options.durable).map(|s| {
            let log = s.queue(&name);
            (s, log)
        });
        Self {
            name,
            options,
            state: Mutex::new(State::default()),
            space: Notify::new(),
            counters: QueueCounters::default(),
            store,
        }
    }

    /// The store persistent messages of this queue go to (durable queues only).
    pub(crate) fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref().map(|(s, _)| s)
    }

    /// This queue's log in the store (durable queues only).
    fn log(&self) -> Option<&dyn QueueLog> {
        self.store.as_ref().map(|(_, log)| &**log)
    }

    /// Removes a message that left for good from the store.
    pub(crate) fn forget(&self, seq: u64) {
        if let Some(log) = self.log() {
            log.remove(seq);
        }
    }

    fn forget_entry(&self, e: &Entry) {
        if e.stored {
            self.forget(e.seq);
        }
    }

    /// Puts recovered messages back, in sequence order, before anything new arrives.
    /// Messages that may have been handed out before the restart (see
    /// [`Restored::redelivered`]) come back flagged redelivered.
    pub(crate) fn restore(&self, stored: Vec<Restored>, now: Instant) {
        let mut st = self.lock();
        for m in stored {
            let message = Arc::new(m.message);
            let deadline = self.deadline_for(&message, now);
            let mut e = Entry::new(message, m.destination, deadline);
            e.seq = m.seq;
            e.stored = self.store.is_some();
            e.deliveries = m.deliveries;
            e.redelivered = m.redelivered;
            st.next_seq = st.next_seq.max(m.seq + 1);
            st.ready_bytes += e.size;
            st.ready.push_back(e);
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that is worse than stopping: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The deadline for a message enqueued now: the shorter of its own expiry and the
    /// queue's TTL.
    pub(crate) fn deadline_for(&self, message: &Message, now: Instant) -> Option<Instant> {
        let own = message.expiry.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            now + left
        });
        let queue = self.options.ttl.map(|t| now + t);
        match (own, queue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Adds a message at the tail, applying the overflow policy, then dispatches.
    /// Returns the store write to await before confirming the publisher, if any.
    pub(crate) fn offer(
        &self,
        entry: Entry,
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Option<StoreWait>, OfferError> {
        if entry.size > self.options.max_bytes {
            return Err(OfferError::TooLarge(entry.size));
        }
        let mut st = self.lock();
        if st.deleted {
            return Err(OfferError::Closed);
        }
        let wait = self.admit(&mut st, entry, now, dead)?;
        self.dispatch(&mut st, now, dead);
        Ok(wait)
    }

    /// Adds messages from the front of `entries` under one lock, then dispatches once.
    /// Stops at the first one that does not fit (it stays at the front of `entries`);
    /// returns how many were taken. The caller handles the rest one by one, with the
    /// overflow policy's waiting or refusing.
    pub(crate) fn offer_batch(
        &self,
        entries: &mut VecDeque<Entry>,
        now: Instant,
        dead: &mut Vec<DeadLetter>,
        waits: &mut Vec<StoreWait>,
    ) -> usize {
        let mut st = self.lock();
        if st.deleted {
            return 0;
        }
        let mut n = 0;
        while let Some(e) = entries.pop_front() {
            if e.size > self.options.max_bytes {
                entries.push_front(e);
                break;
            }
            match self.admit(&mut st, e, now, dead) {
                Ok(w) => {
                    n += 1;
                    waits.extend(w);
                }
                Err(OfferError::Full(e)) => {
                    entries.push_front(e);
                    break;
                }
                Err(_) => break,
            }
        }
        self.dispatch(&mut st, now, dead);
        n
    }

    /// Appends one entry to `ready` under the lock, applying the overflow policy.
    fn admit(
        &self,
        st: &mut State,
        mut entry: Entry,
        now: Instant,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Option<StoreWait>, OfferError> {
        let fits = |st: &State, size: usize| {
            st.ready.len() < self.options.max_length
                && st.ready_bytes + st.held_bytes + size <= self.options.max_bytes
        };
        if !fits(st, entry.size) {
            // Expired messages make room before anything else is refused or dropped.
            self.expire_locked(st, now, dead);
        }
        if !fits(st, entry.size) {
            match self.options.overflow {
                Overflow::Block | Overflow::RejectPublish => {
                    st.publisher_waiting = true;
                    return Err(OfferError::Full(entry));
                }
                Overflow::DropHead => {
                    while !fits(st, entry.size) {
                        let Some(old) = st.ready.pop_front() else {
                            break;
                        };
                        st.ready_bytes -= old.size;
                        dead.push(old.into_dead(DeadReason::Overflow));
                    }
                }
            }
        }
        entry.seq = st.next_seq;
        st.next_seq += 1;
        let wait = match (entry.persist.take(), self.log()) {
            (Some(bytes), Some(log)) => {
                entry.stored = true;
                Some(log.append(entry.seq, bytes))
            }
            _ => None,
        };
        st.ready_bytes += entry.size;
        st.ready.push_back(entry);
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        Ok(wait)
    }

    /// Assigns ready messages to consumers with credit, round-robin, one at a time.
    fn dispatch(&self, st: &mut State, now: Instant, dead: &mut Vec<DeadLetter>) {
        let n = st.consumers.len();
        if n == 0 {
            return;
        }
        let mut freed = false;
        while let Some(front) = st.ready.front() {
            if front.expired(now) {
                if let Some(e) = st.ready.pop_front() {
                    st.ready_bytes -= e.size;
                    self.expire_one(e, dead);
                    freed = true;
                }
                continue;
            }
            let start = st.rr;
            let size = front.size;
            let Some(i) = (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| st.consumers[i].reserve(size))
            else {
                break;
            };
            let Some(entry) = st.ready.pop_front() else {
                break;
            };
            st.ready_bytes -= entry.size;
            st.held_bytes += entry.size;
            // A ready slot (max_length) is free now; the bytes are still held.
            freed = true;
            let slot = &mut st.consumers[i];
            slot.held_bytes += entry.size;
            let was_empty = slot.pending.is_empty();
            slot.pending.push_back(entry);
            if was_empty {
                slot.notify.notify_one();
            }
            st.rr = (i + 1) % n;
        }
        if freed && st.publisher_waiting {
            st.publisher_waiting = false;
            self.space.notify_waiters();
        }
    }

    fn expire_one(&self, entry: Entry, dead: &mut Vec<DeadLetter>) {
        self.counters.expired.fetch_add(1, Ordering::Relaxed);
        match self.options.expired {
            ExpiredAction::DeadLetter => dead.push(entry.into_dead(DeadReason::Expired)),
            ExpiredAction::Drop => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.forget_entry(&entry);
            }
        }
    }

    fn expire_locked(&self, st: &mut State, now: Instant, dead: &mut Vec<DeadLetter>) {
        let mut freed = false;
        if st.ready.iter().any(|e| e.expired(now)) {
            let ready = std::mem::take(&mut st.ready);
            for e in ready {
                if e.expired(now) {
                    st.ready_bytes -= e.size;
                    self.expire_one(e, dead);
                    freed = true;
                } else {
                    st.ready.push_back(e);
                }
            }
        }
        for i in 0..st.consumers.len() {
            if st.consumers[i].pending.iter().any(|e| e.expired(now)) {
                let pending = std::mem::take(&mut st.consumers[i].pending);
                for e in pending {
                    if e.expired(now) {
                        release_slot(&mut st.consumers[i], e.size);
                        st.held_bytes -= e.size;
                        freed = true;
                        self.expire_one(e, dead);
                    } else {
                        st.consumers[i].pending.push_back(e);
                    }
                }
            }
        }
        if freed && st.publisher_waiting {
            st.publisher_waiting = false;
            self.space.notify_waiters();
        }
    }

    /// Removes every expired message that is not yet handed to a consumer.
    pub(crate) fn expire(&self, now: Instant, dead: &mut Vec<DeadLetter>) {
        let mut st = self.lock();
        self.expire_locked(&mut st, now, dead);
        self.dispatch(&mut st, now, dead);
    }

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
            unacked: BTreeMap::new(),
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
        for (_, e) in slot.unacked {
            if self.over_delivered(&e) {
                dead.push(e.into_dead(DeadReason::MaxDeliveries));
            } else {
                self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                back.push(e);
            }
        }
        self.requeue_locked(&mut st, back);
        self.dispatch(&mut st, now, dead);
        if dead_before < dead.len() {
            Self::room_freed(&mut st, &self.space);
        }
        st.consumers.len()
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

    fn over_delivered(&self, e: &Entry) -> bool {
        self.options
            .max_deliveries
            .is_some_and(|max| e.deliveries >= max)
    }

    /// Puts entries back into `ready` at their sequence positions.
    fn requeue_locked(&self, st: &mut State, mut back: Vec<Entry>) {
        if back.is_empty() {
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
                    AckMode::Auto => {
                        if let Some(log) = self.log() {
                            log.remove(e.seq);
                        }
                    }
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
                        redelivered: e.redelivered,
                        delivery_count: e.deliveries,
                    })
                }
                AckMode::Manual => {
                    out.push(Delivery {
                        message: Arc::clone(&e.message),
                        destination: e.destination.clone(),
                        tag,
                        redelivered: e.redelivered,
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
        let keep = slot.unacked.split_off(&(tag + 1));
        let acked = std::mem::replace(&mut slot.unacked, keep);
        let mut released = 0;
        for e in acked.values() {
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
            if let Some(e) = slot.unacked.remove(tag) {
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
            let keep = slot.unacked.split_off(&(tag + 1));
            std::mem::replace(&mut slot.unacked, keep)
                .into_values()
                .collect()
        } else {
            slot.unacked.remove(&tag).into_iter().collect()
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
            if let Some(reason) = requeue {
                dead.push(e.into_dead(reason));
            } else if self.over_delivered(&e) {
                dead.push(e.into_dead(DeadReason::MaxDeliveries));
            } else {
                self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                back.push(e);
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

    /// Marks the queue deleted and wakes everyone waiting on it. Returns what it held.
    pub(crate) fn close(&self) -> usize {
        let mut st = self.lock();
        st.deleted = true;
        if let Some(log) = self.log() {
            log.drop_queue();
        }
        let n = st.ready.len();
        st.ready.clear();
        st.ready_bytes = 0;
        for c in &st.consumers {
            c.notify.notify_one();
        }
        drop(st);
        self.space.notify_waiters();
        n
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().deleted
    }

    pub fn consumer_count(&self) -> usize {
        self.lock().consumers.len()
    }

    /// Bytes held by ready messages.
    pub fn ready_bytes(&self) -> usize {
        self.lock().ready_bytes
    }

    /// (ready, assigned-but-unsettled) bytes.
    pub fn bytes(&self) -> (usize, usize) {
        let st = self.lock();
        (st.ready_bytes, st.held_bytes)
    }

    /// Ready (unassigned) message count.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.lock();
        let unacked = st
            .consumers
            .iter()
            .map(|c| c.unacked.len() + c.pending.len())
            .sum();
        let c = &self.counters;
        QueueStats {
            name: self.name.to_string(),
            ready: st.ready.len(),
            ready_bytes: st.ready_bytes,
            unacked,
            unacked_bytes: st.held_bytes,
            consumers: st.consumers.len(),
            published: c.published.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            redelivered: c.redelivered.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Releases `size` bytes a consumer held (from its slot and its budget); the caller
/// lowers the queue's `held_bytes`.
fn release_slot(slot: &mut ConsumerSlot, size: usize) {
    if size == 0 {
        return;
    }
    slot.held_bytes -= size;
    if let Some(b) = &slot.budget {
        b.release(size);
    }
}
