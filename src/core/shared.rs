//! The seam to a cluster: queues and topics that several routers share.
//!
//! Clustered (docs/cluster.md), a durable queue does not live in one router's memory
//! and journal but in a replicated log outside the process (a JetStream stream), and a
//! topic publish reaches the subscribers of every router. The core knows neither NATS
//! nor the other routers: it is given a [`Shared`] at construction and asks it, queue
//! by queue, whether the queue is shared ([`Shared::open_queue`]).
//!
//! A shared queue keeps the core's queue object (consumers, credit, acknowledgements,
//! dead-lettering and TTL work as for a local one) but its `ready` list is no longer
//! where publishes land:
//!
//! - **Publishing** hands the encoded message to [`SharedLog::publish`]; the publisher
//!   is confirmed when that resolves (persistent messages: once stored at the cluster's
//!   replication). Nothing enters the local `ready` list.
//! - **Consuming**: while the queue has local consumers with credit, the log fetches
//!   messages from the cluster and puts them into `ready` with [`Queue::arrive`],
//!   each under a token of its own choosing (increasing), as many as
//!   [`Queue::wanted`] says, woken by [`Queue::wants`]. The cluster picks which router
//!   gets a message: consumers on every router compete for it.
//! - **Settling**: a message that leaves for good (acknowledged, expired,
//!   dead-lettered) is [`SharedLog::ack`]ed; one a consumer gave back (NACK with
//!   requeue, a consumer that went away), or one fetched while no local consumer is
//!   left to take it, is [`SharedLog::release`]d to the cluster, which delivers it
//!   again, on this router or another, flagged redelivered.
//!
//! A shared queue bound to topic patterns (a durable subscription) is fed by the
//! cluster too: a topic publish is handed to [`Shared::publish_topic`] once, and the
//! cluster puts it into every shared queue whose bindings match, wherever their
//! consumers are. So the core does not put topic publishes into shared queues itself
//! (they are not in the topic trie), and tells their log when their bindings change
//! ([`SharedLog::bind`]).
//!
//! Local (non-shared) subscriptions receive the topic publishes of other routers
//! through [`Core::deliver_remote`](super::Core::deliver_remote); the cluster learns
//! which patterns this router needs from [`Shared::interest`].
//!
//! Metadata a layer keeps by namespace (the store's `put`/`delete`) may be kept by the
//! cluster instead, for every router: [`Shared::metadata`] says which namespaces are,
//! and the owner then holds a mirror of the namespace kept current by
//! [`SharedMeta::watch`] (MQTT retained messages are the first).

use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::Core;
use super::broker::Inner;
use super::destination::Destination;
use super::message::Message;
use super::pattern::Pattern;
use super::queue::{Queue, QueueOptions};
use crate::store::StoreWait;

/// The cluster as the core sees it. See the module docs.
pub trait Shared: Send + Sync + std::fmt::Debug {
    /// The shared log of queue `name`, declared with `options`, if the queue lives in
    /// the cluster; `None` keeps it local. Asked once, when the queue is created.
    fn open_queue(&self, name: &str, options: &QueueOptions) -> Option<Arc<dyn SharedLog>>;

    /// A publish to `topic` (as `encoded`: [`super::persist::encode_queued`] with the
    /// topic as destination) for every other router's subscribers and every shared
    /// subscription. Resolves when the cluster stored it, for a persistent message;
    /// at once otherwise.
    fn publish_topic(&self, topic: &str, message: &Message, encoded: Bytes) -> StoreWait;

    /// A local, non-shared queue was bound to `pattern` (`bound`) or unbound from it:
    /// one call per binding, so the cluster counts them per pattern.
    fn interest(&self, pattern: &Pattern, bound: bool);

    /// A local (non-shared) queue `name` was created (`exists`) or deleted. Some are
    /// addresses other routers' clients may send to (a STOMP temporary queue named in
    /// a `reply-to`): the cluster routes those publishes here (see [`Shared::forwards`]).
    fn local_queue(&self, _name: &str, _exists: bool) {}

    /// Whether a publish to queue `name`, which does not exist on this router, goes to
    /// the router that holds it (a reply address) instead of creating it here.
    fn forwards(&self, _name: &str) -> bool {
        false
    }

    /// Hands a publish to queue `name` (encoded as for [`SharedLog::publish`]) to the
    /// router that holds it; resolves once that router put it in the queue, or fails
    /// when no router holds it.
    fn forward(&self, name: &str, _encoded: Bytes) -> StoreWait {
        StoreWait::Done(Err(crate::store::StoreError::Unavailable(format!(
            "no router holds queue {name}"
        ))))
    }

    /// Resolves once every local binding made before it is in force in the cluster:
    /// the router's subscriptions reached its NATS server, so a publish on another
    /// router made after this resolved reaches the local subscribers.
    fn interest_settled(&self) -> StoreWait {
        StoreWait::Done(Ok(()))
    }

    /// The namespace `ns` of metadata, when the cluster keeps it for every router
    /// ([`SharedMeta`]); `None` (the default) leaves it in this router's store.
    fn metadata(&self, ns: &'static str) -> Option<Arc<dyn SharedMeta>> {
        let _ = ns;
        None
    }

    /// Starts contending for the lease `name` (see [`lease`]), if the cluster keeps
    /// leases; `None` (the default): this router holds it alone.
    fn lease(&self, _name: &str) -> Option<lease::Lease> {
        None
    }

    /// The records one router at a time owns (MQTT sessions), if the cluster keeps
    /// them: see [`claims`].
    fn claims(&self) -> Option<Arc<dyn claims::Claims>> {
        None
    }

    /// Records the links keep for every router, one key per link and purpose,
    /// compare-and-set as [`claims`] are (an AMQP link's marker of the topology it
    /// declared, so one router declares it per change, not every router): `None`
    /// (the default) when the router runs alone.
    fn link_records(&self) -> Option<Arc<dyn claims::Claims>> {
        None
    }
}

/// One shared queue's link to the cluster, owned by its [`Queue`].
pub trait SharedLog: Send + Sync + std::fmt::Debug {
    /// Starts feeding the queue through `feed` (once, right after it was created).
    fn start(&self, feed: Feed);

    /// Publishes an encoded message ([`super::persist::encode_queued`]) into the
    /// shared queue. Resolves once the cluster stored it (a persistent message) or at
    /// once (a non-persistent one), or with the cluster's refusal (full, unavailable).
    fn publish(&self, encoded: Bytes, persistent: bool) -> StoreWait;

    /// The message under `token` left for good: the cluster forgets it.
    fn ack(&self, token: u64);

    /// The message under `token` goes back to the cluster, to be delivered again.
    fn release(&self, token: u64);

    /// Whether what this router holds may have been handed to another router meanwhile
    /// (at `now`, its hold on fetched messages may have lapsed in the cluster): a message
    /// delivered now is then flagged redelivered, as the cluster's other copy may have
    /// reached a consumer first.
    fn overdue(&self, _now: std::time::Instant) -> bool {
        false
    }

    /// Resolves once every [`ack`](Self::ack) and [`release`](Self::release) made
    /// before it has left this router for the cluster, so this router dying after it
    /// cannot undo them: what a client's confirmation of its settlements (a STOMP
    /// RECEIPT for an ACK) waits for.
    fn settlements_sent(&self) -> StoreWait {
        StoreWait::Done(Ok(()))
    }

    /// The queue's topic bindings are now `patterns` (possibly none).
    fn bind(&self, patterns: &[Pattern]);

    /// The queue is no longer served by this router (the cluster keeps it): stop
    /// feeding it and release what was fetched, without deleting anything.
    fn detach(&self);

    /// Resolves once this router pulls from the queue in the cluster and the bindings
    /// given to [`SharedLog::bind`] before it are in force there (the subscription's
    /// consumer filters on them), so a message sent after it, to the queue or to a
    /// bound topic, can reach this router's consumers.
    fn settled(&self) -> StoreWait {
        StoreWait::Done(Ok(()))
    }

    /// The queue was deleted (by a user: an admin `DELETE`, an ended durable
    /// subscription): stop feeding it, release what was fetched, and delete it in the
    /// cluster with its messages, for every router.
    fn close(&self);
}

/// How a shared log feeds its queue: weak handles on the queue and the core, so a
/// deleted queue (or a core shut down) ends the feeding instead of being kept alive
/// by it.
#[derive(Debug, Clone)]
pub struct Feed {
    core: Weak<Inner>,
    queue: Weak<Queue>,
}

impl Core {
    /// Resolves once queue `queue` is served here from the cluster and its bindings made
    /// so far are in force across it (at once on a router running alone): an edge
    /// awaits it before it confirms a subscription (SUBACK, RECEIPT), so a publish its
    /// client makes (or causes) after the confirmation, on any router, reaches the
    /// subscription, and competing consumers on several routers all share from the
    /// first message.
    pub fn bindings_settled(&self, queue: &str) -> StoreWait {
        let Some(shared) = &self.inner.shared else {
            return StoreWait::Done(Ok(()));
        };
        match self.queue(queue).as_deref().and_then(|q| q.shared_log()) {
            Some(log) => log.settled(),
            None => shared.interest_settled(),
        }
    }
}

impl Feed {
    pub(super) fn new(core: Weak<Inner>, queue: Weak<Queue>) -> Self {
        Self { core, queue }
    }

    /// The queue, while it exists and is not deleted.
    pub fn queue(&self) -> Option<Arc<Queue>> {
        self.queue.upgrade().filter(|q| !q.is_closed())
    }

    /// Puts a message fetched from the cluster into the queue's `ready` list for its
    /// consumers: `token` is the log's own (increasing), `deliveries` how often the
    /// cluster delivered it before (anywhere). It is released back when the queue is
    /// deleted; if it expired, it is dead-lettered or dropped as the queue says. False
    /// when the queue no longer exists at all: the caller releases the token.
    pub fn arrive(
        &self,
        destination: Destination,
        message: Message,
        token: u64,
        deliveries: u32,
    ) -> bool {
        let (Some(q), Some(core)) = (self.queue.upgrade(), self.core.upgrade()) else {
            return false;
        };
        let mut dead = Vec::new();
        q.arrive(destination, message, token, deliveries, &mut dead);
        Core { inner: core }.forward_dead(&q, dead);
        true
    }
}

pub mod claims;
pub mod lease;
/// Called with a key of a [`SharedMeta`] namespace and its new value (`None`: the key
/// was deleted). Values are what the owner wrote: the cluster stores them as given.
pub type MetaApply = Box<dyn Fn(&str, Option<Bytes>) + Send + Sync>;

/// One metadata namespace (a store namespace, as [`crate::store::Store::put`] takes)
/// that the cluster keeps for every router instead of this router's store: clustered,
/// its owner (the layer that names the namespace) holds a mirror of it, writes its own
/// changes through [`put`](Self::put) and [`delete`](Self::delete), and is told of
/// every router's changes by [`watch`](Self::watch). The last write the cluster
/// stored wins; two routers writing one key at once end with the same value.
pub trait SharedMeta: Send + Sync + std::fmt::Debug {
    /// Stores `value` under `key` for every router. Resolves once the cluster stored it
    /// (at its replication), or with why it could not (too large, unavailable).
    fn put(&self, key: &str, value: Bytes) -> StoreWait;

    /// Deletes `key` for every router; resolves as [`put`](Self::put).
    fn delete(&self, key: &str) -> StoreWait;

    /// Starts telling `apply` of the namespace's values (called once): first every
    /// value present now, then every change, in the cluster's order, from another task.
    /// A change written through this handle is not echoed back to `apply` (the owner
    /// applied it when it wrote it), except to correct it: once this router's writes
    /// to a key have settled, a value the cluster holds other than the one written
    /// (a later write by another router, a write that failed) is applied.
    /// Resolves once the values present at the call were applied: the owner waits for
    /// that before serving. The watch is kept up (re-made after a lost connection,
    /// from where it stopped) for the life of the process.
    fn watch(&self, apply: MetaApply) -> StoreWait;
}

impl Core {
    /// Resolves once the settlements (acks, releases) made so far on the shared
    /// queues among `queues` have left this router ([`SharedLog::settlements_sent`]);
    /// local queues need nothing here (their settlements are the store's:
    /// [`Core::settlements_durable`]).
    pub fn settlements_sent<'a>(
        &self,
        queues: impl IntoIterator<Item = &'a str>,
    ) -> super::Confirmation {
        let mut c = super::Confirmation::default();
        for q in queues {
            if let Some(log) = self.queue(q).and_then(|q| q.shared_log()) {
                c.push(log.settlements_sent());
            }
        }
        c
    }

    /// The cluster's replicated metadata namespace `ns` ([`SharedMeta`]), when this
    /// router is clustered and the cluster keeps `ns`; `None`: `ns` lives in the store.
    pub fn shared_metadata(&self, ns: &'static str) -> Option<Arc<dyn SharedMeta>> {
        self.inner.shared.as_ref()?.metadata(ns)
    }
}

#[cfg(test)]
mod tests;
