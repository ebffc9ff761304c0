//! Fan-out: the one path by which messages enter queues. Every way in (publish, batch
//! publish, the never-waiting publish, an edge's replay into one queue, a dead letter)
//! resolves its destination to [`Targets`] and hands them its messages here, so the
//! counting (`unrouted`, deliveries), the store encoding, TTL deadlines, backpressure
//! and what a refusing queue costs are decided in one place.
//!
//! What differs between the callers is who sends ([`Sender`]): a publisher that will be
//! confirmed waits for room and fails when its message cannot be made durable; one that
//! is never confirmed does neither; a dead letter is never counted as unrouted and a
//! subscription refusing it only logs. And what it goes to ([`Targets`]): a named
//! queue's refusal is the sender's error, a topic subscription's refusal is that
//! subscriber's loss.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::FutureExt;
use tokio::time::Instant;

use super::dead_letter::{DEAD_LETTER_REFUSED, DeadLetter, DeadReason};
use super::destination::Destination;
use super::message::Message;
use super::queue::{Entry, OfferError, Overflow, Queue};
use super::{Core, PublishError};
use crate::ratelog::Cause;
use crate::store::StoreWait;

/// A subscriber's buffer refused a message, counted and logged at most once a second
/// (see [`crate::ratelog`]).
static SUBSCRIPTION_OVERFLOW: Cause = Cause::new("subscription.overflow");

/// Who sends a fan-out's messages; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sender {
    /// A publisher confirmed once its messages are in their queues and durable: it waits
    /// while a `block` queue is full, and a store that cannot take writes fails it.
    Confirmed,
    /// A publisher nobody confirms ([`Core::try_publish`], [`Core::enqueue`]): a full
    /// queue refuses at once, and a store that cannot take writes refuses in the
    /// queue it was to be stored for.
    Unconfirmed,
    /// A dead letter after `hops` hops (the displaced messages of the queues it enters
    /// carry the same count). Never waits, never counted as unrouted; a subscription
    /// refusing it loses it with a log line.
    DeadLetter { hops: u8 },
    /// Another router's topic publish, for this router's local subscriptions
    /// ([`Core::deliver_remote`]): never waits, never counted as unrouted, and not shared
    /// with the cluster again.
    Remote,
}

impl Sender {
    fn waits(self) -> bool {
        self == Self::Confirmed
    }

    /// A dead letter to a topic nobody subscribes to is not a publish that went nowhere.
    fn counts_unrouted(self) -> bool {
        !matches!(self, Self::DeadLetter { .. } | Self::Remote)
    }

    /// Whether a topic publish from this sender goes to the other routers too.
    fn shares(self) -> bool {
        self != Self::Remote
    }

    fn hops(self) -> u8 {
        match self {
            Self::DeadLetter { hops } => hops,
            Self::Confirmed | Self::Unconfirmed | Self::Remote => 0,
        }
    }
}

/// The queues a fan-out goes to.
#[derive(Debug)]
pub(super) enum Targets {
    /// One named queue: its refusal is the sender's error.
    Queue(Arc<Queue>),
    /// The subscriptions of a topic (possibly none): one refusing is its own loss.
    Subscriptions(Arc<[Arc<Queue>]>),
    /// A queue another router of the cluster holds (a reply address): handed to it.
    Forward(Arc<str>),
}

impl Targets {
    fn queues(&self) -> &[Arc<Queue>] {
        match self {
            Self::Queue(q) => std::slice::from_ref(q),
            Self::Subscriptions(subs) => subs,
            Self::Forward(_) => &[],
        }
    }
}

/// What a fan-out reached.
#[derive(Debug, Default)]
pub(super) struct Reached {
    /// Messages admitted, summed over the queues (for one message: the queues that took it).
    pub deliveries: usize,
    /// Store writes to await before confirming the sender.
    pub waits: Vec<StoreWait>,
}

impl Core {
    /// The queues a publish to `destination` goes to now: the named queue (created on
    /// demand when auto-create is on), or the subscriptions of the topic.
    pub(super) fn targets(&self, destination: &Destination) -> Result<Targets, PublishError> {
        Ok(match destination {
            Destination::Queue(name)
                if self.queue(name).is_none()
                    && self.inner.shared.as_ref().is_some_and(|s| s.forwards(name)) =>
            {
                Targets::Forward(Arc::clone(name))
            }
            Destination::Queue(name) => Targets::Queue(self.queue_for_publish(name)?),
            Destination::Topic(name) => Targets::Subscriptions(self.match_topic(name)),
        })
    }

    /// Puts `messages`, in order, into every queue of `to`, labelled `destination` (what
    /// their consumers see as where they were published). Queue by queue: all the
    /// messages under one lock as far as they fit, the rest one by one as the queue's
    /// overflow policy and `sender` say.
    pub(super) async fn fan_out(
        &self,
        to: &Targets,
        destination: &Destination,
        messages: &[Arc<Message>],
        sender: Sender,
    ) -> Result<Reached, PublishError> {
        let queues = to.queues();
        let mut reached = Reached::default();
        if let (Targets::Forward(name), Some(shared)) = (to, &self.inner.shared) {
            for m in messages {
                let encoded = super::persist::encode_queued(destination, m);
                reached.waits.push(shared.forward(name, encoded.into()));
                reached.deliveries += 1;
            }
            return Ok(reached);
        }
        if let (Targets::Subscriptions(_), Destination::Topic(topic), Some(shared)) =
            (to, destination, &self.inner.shared)
            && sender.shares()
        {
            // Clustered: the other routers' subscribers and the shared (durable)
            // subscriptions get it through the cluster, once.
            // Counted as reached: other routers may have subscribers, and this one
            // cannot know (an MQTT 5 publisher must not be told "no subscribers").
            for m in messages {
                let encoded = super::persist::encode_queued(destination, m);
                reached
                    .waits
                    .push(shared.publish_topic(topic, m, encoded.into()));
                reached.deliveries += 1;
            }
        }
        if queues.is_empty() {
            // Clustered, a topic nobody here subscribes to may have subscribers elsewhere.
            if sender.counts_unrouted() && self.inner.shared.is_none() {
                self.inner
                    .unrouted
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
            }
            return Ok(reached);
        }
        // Computed once for the whole fan-out.
        let now = Instant::now();
        let single_size = match messages {
            [m] => m.byte_size(),
            _ => 0,
        };
        // Encoded at the first durable queue, shared by every other one.
        let mut persist: Option<Vec<Option<Bytes>>> = None;
        for q in queues {
            let durable = q.store().is_some() || q.is_shared();
            if durable
                && persist.is_none()
                && (q.is_shared() || messages.iter().any(|m| m.persistent))
            {
                match messages
                    .iter()
                    .map(|m| self.persist_bytes(q, destination, m))
                    .collect()
                {
                    Ok(p) => persist = Some(p),
                    Err(e) if sender == Sender::Confirmed => return Err(e),
                    // Not kept: the next durable queue asks the store again.
                    Err(e) => {
                        for m in messages {
                            self.refused(to, q, destination, m, e.clone(), sender)?;
                        }
                        continue;
                    }
                }
            }
            let stored = |i: usize| {
                persist
                    .as_ref()
                    .filter(|_| durable)
                    .and_then(|p| p[i].clone())
            };
            if let [m] = messages {
                let deadline = q.deadline_for(m, now);
                let entry = Entry::sized(Arc::clone(m), destination.clone(), deadline, single_size)
                    .persisted(stored(0));
                match self.offer_entry(q, destination, entry, now, sender).await {
                    Ok(w) => {
                        reached.deliveries += 1;
                        reached.waits.extend(w);
                    }
                    Err(e) => self.refused(to, q, destination, m, e, sender)?,
                }
                continue;
            }
            let mut entries: VecDeque<Entry> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    Entry::new(Arc::clone(m), destination.clone(), q.deadline_for(m, now))
                        .persisted(stored(i))
                })
                .collect();
            let mut dead = Vec::new();
            reached.deliveries += q.offer_batch(&mut entries, now, &mut dead, &mut reached.waits);
            self.forward_dead_hops(q, dead, sender.hops());
            // What did not fit goes the one-by-one way (waiting, refusing or dropping as
            // the queue's policy says).
            for e in entries {
                let m = Arc::clone(e.message());
                match self
                    .offer_entry(q, destination, e, Instant::now(), sender)
                    .await
                {
                    Ok(w) => {
                        reached.deliveries += 1;
                        reached.waits.extend(w);
                    }
                    Err(e) => self.refused(to, q, destination, &m, e, sender)?,
                }
            }
        }
        Ok(reached)
    }

    /// [`Core::fan_out`] for a sender that never waits, from code that cannot await.
    pub(super) fn fan_out_now(
        &self,
        to: &Targets,
        destination: &Destination,
        messages: &[Arc<Message>],
        sender: Sender,
    ) -> Result<Reached, PublishError> {
        debug_assert!(!sender.waits());
        // Without waiting for room a fan-out never yields: its first poll finishes it.
        match self
            .fan_out(to, destination, messages, sender)
            .now_or_never()
        {
            Some(result) => result,
            None => unreachable!("a fan-out that does not wait for room yielded"),
        }
    }

    /// What one queue refusing `message` means for the fan-out: the sender's error for a
    /// named queue; for a topic subscription, that subscriber's loss.
    fn refused(
        &self,
        to: &Targets,
        q: &Arc<Queue>,
        destination: &Destination,
        message: &Arc<Message>,
        e: PublishError,
        sender: Sender,
    ) -> Result<(), PublishError> {
        match (to, sender, e) {
            (Targets::Queue(_), _, e) => return Err(e),
            (_, Sender::DeadLetter { .. }, e) => {
                crate::rate_warn!(DEAD_LETTER_REFUSED, queue = q.name(), error = %e, "dead letter not delivered to a subscription of the dead-letter topic");
            }
            // A subscription that went away meanwhile just misses it.
            (_, _, PublishError::Closed(_)) => {}
            // One subscriber's full buffer must not fail the publish for everyone: it is
            // that subscriber's loss, dead-lettered or counted.
            (_, _, e) => self.subscriber_overflow(q, destination, message, &e),
        }
        Ok(())
    }

    fn subscriber_overflow(
        &self,
        q: &Arc<Queue>,
        topic: &Destination,
        message: &Arc<Message>,
        e: &PublishError,
    ) {
        crate::rate_warn!(SUBSCRIPTION_OVERFLOW, queue = q.name(), error = %e, message_id = %message.id, "subscription buffer full, message not delivered to it");
        self.forward_dead(
            q,
            vec![DeadLetter {
                message: Arc::clone(message),
                destination: topic.clone(),
                reason: DeadReason::Overflow,
                deliveries: 0,
                stored: None,
            }],
        );
    }

    fn offer_error(&self, q: &Queue, dest: &Destination, e: OfferError) -> PublishError {
        match e {
            OfferError::Full(_) => PublishError::Full(dest.clone()),
            OfferError::TooLarge(size) => PublishError::TooLarge {
                destination: dest.clone(),
                size,
                max: q.options().max_bytes,
            },
            OfferError::Closed => PublishError::Closed(dest.clone()),
        }
    }

    /// Offers one entry to one queue. A full `block` queue makes a sender that waits
    /// wait for room; anything else refuses at once.
    async fn offer_entry(
        &self,
        q: &Arc<Queue>,
        dest: &Destination,
        entry: Entry,
        now: Instant,
        sender: Sender,
    ) -> Result<Option<StoreWait>, PublishError> {
        let hops = sender.hops();
        let mut dead = Vec::new();
        // Fast path: room available, no waiter registration.
        let mut entry = match q.offer(entry, now, &mut dead) {
            Ok(w) => {
                self.forward_dead_hops(q, dead, hops);
                return Ok(w);
            }
            Err(OfferError::Full(e))
                if sender.waits() && q.options().overflow == Overflow::Block =>
            {
                e
            }
            Err(e) => {
                self.forward_dead_hops(q, dead, hops);
                return Err(self.offer_error(q, dest, e));
            }
        };
        self.forward_dead_hops(q, dead, hops);
        loop {
            // Register interest in room *before* retrying, so a consumer freeing space
            // between our failed offer and our wait cannot be missed.
            let notified = q.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut dead = Vec::new();
            let r = q.offer(entry, Instant::now(), &mut dead);
            self.forward_dead_hops(q, dead, hops);
            match r {
                Ok(w) => return Ok(w),
                Err(OfferError::Full(e)) => {
                    entry = e;
                    notified.await;
                }
                Err(e) => return Err(self.offer_error(q, dest, e)),
            }
        }
    }
}
