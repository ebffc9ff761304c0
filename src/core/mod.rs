//! The broker core: queues, topics, subscriptions and delivery.
//!
//! The core knows no protocol (a test in `tests/layering.rs` enforces that it imports
//! nothing from the edges). Edges hand it canonical [`Message`]s addressed to internal
//! [`Destination`]s and take [`Delivery`]s out of [`Consumer`]s.
//!
//! A topic subscription is a private queue bound to one or more patterns: a publish to a
//! topic puts a reference to the same message into every matching subscription queue.
//! So everything a queue offers (credit, acks, redelivery, limits, TTL, dead-lettering)
//! also holds for subscriptions, and a durable subscription is simply a named queue that
//! stays bound while its subscriber is away.

pub mod budget;
pub mod consumer;
pub mod destination;
mod durable;
pub mod flow;
pub mod message;
pub mod pattern;
pub mod persist;
pub mod queue;
pub mod trie;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use budget::{ByteBudget, Held};
pub use consumer::{Closed, ConsumeOptions, Consumer};
pub use destination::{Destination, NameError, validate_name};
pub use durable::Confirmation;
pub use message::{Delivery, Headers, Loss, Message, MessageId, Origin};
pub use pattern::{Capture, Pattern};
pub use queue::{AckMode, DeadReason, ExpiredAction, Overflow, Queue, QueueOptions, QueueStats};

use crate::ratelog::Cause;
use crate::store::StoreWait;
use queue::{DeadLetter, Entry, OfferError};
use trie::SubjectTrie;

/// Prefix of the private queues behind non-durable subscriptions. Edges must not let
/// clients name queues with it.
pub const PRIVATE_PREFIX: &str = "$sb.";

/// Per-message drops, counted and logged at most once a second each (see
/// [`crate::ratelog`]).
static SUBSCRIPTION_OVERFLOW: Cause = Cause::new("subscription.overflow");
static DEAD_LETTER_CHAIN: Cause = Cause::new("dead_letter.chain_too_long");
static DROPPED_NO_DEAD_LETTER: Cause = Cause::new("dead_letter.none");
static DEAD_LETTER_REFUSED: Cause = Cause::new("dead_letter.refused");

/// Limits dead-letter chains (a dead-letter queue that overflows into another).
const MAX_DEAD_LETTER_HOPS: u8 = 3;

/// Why a publish failed. Each edge turns this into its protocol's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("{0} is full")]
    Full(Destination),
    #[error("message of {size} bytes exceeds the {max}-byte limit of {destination}")]
    TooLarge {
        destination: Destination,
        size: usize,
        max: usize,
    },
    #[error("{0} does not exist")]
    NotFound(Destination),
    #[error("{0} was deleted")]
    Closed(Destination),
    #[error("invalid destination name: {0}")]
    InvalidName(#[from] NameError),
    /// The message could not be made durable (disk full, read-only data directory).
    #[error("{0}")]
    Store(String),
}

/// Why a core operation other than publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    #[error("queue `{0}` does not exist")]
    NoSuchQueue(String),
    #[error("queue `{0}` was deleted")]
    Closed(String),
}

/// Core settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Options of queues created on demand.
    pub default_queue: QueueOptions,
    /// Options of the private queues behind non-durable subscriptions.
    pub default_subscription: QueueOptions,
    /// Options by exact queue name, applied when the queue is created.
    pub queues: HashMap<String, QueueOptions>,
    /// Create a queue on first publish or consume (as Artemis and RabbitMQ's STOMP do).
    pub auto_create_queues: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            default_queue: QueueOptions::default(),
            // A slow subscriber must not hold back the publisher and so every other
            // subscriber: its buffer drops its oldest message (dead-lettered when a
            // dead-letter destination is set, else counted and logged).
            default_subscription: QueueOptions {
                max_length: 10_000,
                overflow: Overflow::DropHead,
                durable: false,
                auto_delete: true,
                ..QueueOptions::default()
            },
            queues: HashMap::new(),
            auto_create_queues: true,
        }
    }
}

/// Pointer identity for queues stored in the trie.
#[derive(Debug, Clone)]
struct QueueRef(Arc<Queue>);

impl PartialEq for QueueRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug, Default)]
struct Topics {
    trie: SubjectTrie<QueueRef>,
    bindings: HashMap<Arc<str>, Vec<Pattern>>,
}

#[derive(Debug, Default)]
struct MatchCache {
    generation: u64,
    map: HashMap<Box<str>, Arc<[Arc<Queue>]>>,
}

const MATCH_CACHE_MAX: usize = 16_384;

#[derive(Debug)]
struct Inner {
    config: CoreConfig,
    queues: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    topics: RwLock<Topics>,
    generation: AtomicU64,
    cache: Mutex<MatchCache>,
    next_id: AtomicU64,
    unrouted: AtomicU64,
    store: Option<Arc<dyn crate::store::Store>>,
    /// Metadata the store recovered for the edges (by namespace), taken once by each.
    flow: flow::Flow,
    /// Bytes the edges hold outside the queues (counted by the memory watermark).
    held: Held,
    recovered_meta:
        Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<u8>>>>,
}

/// Handle to the broker core; cheap to clone.
#[derive(Debug, Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

/// Counters for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CoreStats {
    pub queues: Vec<QueueStats>,
    pub bindings: usize,
    /// Topic publishes that matched no subscription.
    pub unrouted: u64,
    /// Why publishers are blocked (a watermark), when they are.
    pub publishers_blocked: Option<String>,
}

impl Default for Core {
    fn default() -> Self {
        Self::new(CoreConfig::default())
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Core {
    /// A core with the queues named in `config` already declared (so they exist even
    /// when auto-creation is off).
    pub fn new(config: CoreConfig) -> Self {
        Self::build(config, None)
    }

    fn build(config: CoreConfig, store: Option<Arc<dyn crate::store::Store>>) -> Self {
        let named: Vec<(String, QueueOptions)> = config
            .queues
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let core = Self {
            inner: Arc::new(Inner {
                config,
                queues: RwLock::new(HashMap::new()),
                topics: RwLock::new(Topics::default()),
                generation: AtomicU64::new(0),
                cache: Mutex::new(MatchCache::default()),
                next_id: AtomicU64::new(1),
                unrouted: AtomicU64::new(0),
                store,
                flow: flow::Flow::default(),
                held: Held::default(),
                recovered_meta: Mutex::default(),
            }),
        };
        for (name, options) in named {
            if let Err(e) = core.declare_queue(&name, Some(options)) {
                tracing::warn!(queue = %name, error = %e, "configured queue not declared");
            }
        }
        core
    }

    pub fn config(&self) -> &CoreConfig {
        &self.inner.config
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    // ---- queues -------------------------------------------------------------------

    /// The queue called `name`, if it exists.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        read(&self.inner.queues).get(name).cloned()
    }

    /// Declares a queue (idempotent: an existing queue is returned as it is). `options`
    /// default to the configured options for that name, else the default queue options.
    pub fn declare_queue(
        &self,
        name: &str,
        options: Option<QueueOptions>,
    ) -> Result<Arc<Queue>, CoreError> {
        if let Some(q) = self.queue(name) {
            return Ok(q);
        }
        validate_name(name)?;
        let mut queues = write(&self.inner.queues);
        if let Some(q) = queues.get(name) {
            return Ok(Arc::clone(q));
        }
        let options = options.unwrap_or_else(|| {
            self.inner
                .config
                .queues
                .get(name)
                .cloned()
                .unwrap_or_else(|| self.inner.config.default_queue.clone())
        });
        let name: Arc<str> = name.into();
        let q = Arc::new(Queue::new(
            Arc::clone(&name),
            options,
            self.inner.store.clone(),
        ));
        queues.insert(name, Arc::clone(&q));
        drop(queues);
        self.save_queue_meta(&q);
        Ok(q)
    }

    /// Deletes a queue: its messages are discarded, its consumers see [`Closed`], its
    /// topic bindings are removed. Returns how many ready messages it held.
    pub fn delete_queue(&self, name: &str) -> Option<usize> {
        let q = write(&self.inner.queues).remove(name)?;
        self.unbind_all(&q);
        if let Some(s) = q.store() {
            s.delete(durable::META_QUEUE, name);
        }
        Some(q.close())
    }

    /// Deletes `queue` if the registry still holds this very queue (an auto-delete queue
    /// may have been replaced by a new one of the same name meanwhile).
    pub(crate) fn delete_queue_if_same(&self, queue: &Arc<Queue>) {
        let removed = {
            let mut queues = write(&self.inner.queues);
            match queues.get(queue.name()) {
                Some(q) if Arc::ptr_eq(q, queue) && q.consumer_count() == 0 => {
                    queues.remove(queue.name())
                }
                _ => None,
            }
        };
        if let Some(q) = removed {
            self.unbind_all(&q);
            q.close();
        }
    }

    fn queue_for_publish(&self, name: &str) -> Result<Arc<Queue>, PublishError> {
        if let Some(q) = self.queue(name) {
            return Ok(q);
        }
        if !self.inner.config.auto_create_queues {
            return Err(PublishError::NotFound(Destination::queue(name)));
        }
        self.declare_queue(name, None).map_err(|e| match e {
            CoreError::InvalidName(n) => PublishError::InvalidName(n),
            _ => PublishError::NotFound(Destination::queue(name)),
        })
    }

    /// Attaches a consumer to a queue (created on demand when auto-create is on).
    pub fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer, CoreError> {
        let q = match self.queue(queue) {
            Some(q) => q,
            None if self.inner.config.auto_create_queues => self.declare_queue(queue, None)?,
            None => return Err(CoreError::NoSuchQueue(queue.to_owned())),
        };
        self.attach(q, options)
    }

    fn attach(&self, q: Arc<Queue>, options: ConsumeOptions) -> Result<Consumer, CoreError> {
        let id = self.next_id();
        let notify = options.notify.unwrap_or_else(|| Arc::new(Notify::new()));
        let mut dead = Vec::new();
        q.attach(
            id,
            options.prefetch,
            options.ack,
            Arc::clone(&notify),
            options.budget,
            Instant::now(),
            &mut dead,
        )
        .map_err(|_| CoreError::Closed(q.name().to_owned()))?;
        self.forward_dead(&q, dead);
        Ok(Consumer {
            core: self.clone(),
            queue: q,
            id,
            notify,
        })
    }

    // ---- topics -------------------------------------------------------------------

    /// Binds a queue to a topic pattern: every publish to a matching topic is copied into it.
    pub fn bind(&self, queue: &str, pattern: &str) -> Result<(), CoreError> {
        let pattern = Pattern::parse(pattern)?;
        let q = self
            .queue(queue)
            .ok_or_else(|| CoreError::NoSuchQueue(queue.to_owned()))?;
        let mut topics = write(&self.inner.topics);
        let bound = topics.bindings.entry(Arc::clone(q.name_arc())).or_default();
        if bound.contains(&pattern) {
            return Ok(());
        }
        bound.push(pattern.clone());
        topics.trie.insert(&pattern, QueueRef(Arc::clone(&q)));
        self.inner.generation.fetch_add(1, Ordering::Release);
        drop(topics);
        self.save_queue_meta(&q);
        Ok(())
    }

    /// Removes one binding. False when it did not exist.
    pub fn unbind(&self, queue: &str, pattern: &str) -> Result<bool, CoreError> {
        let pattern = Pattern::parse(pattern)?;
        let Some(q) = self.queue(queue) else {
            return Ok(false);
        };
        let mut topics = write(&self.inner.topics);
        let removed = topics.trie.remove(&pattern, &QueueRef(Arc::clone(&q)));
        if let Some(b) = topics.bindings.get_mut(queue) {
            b.retain(|p| *p != pattern);
            if b.is_empty() {
                topics.bindings.remove(queue);
            }
        }
        self.inner.generation.fetch_add(1, Ordering::Release);
        drop(topics);
        self.save_queue_meta(&q);
        Ok(removed)
    }

    /// The patterns a queue is bound to.
    pub fn bindings(&self, queue: &str) -> Vec<String> {
        read(&self.inner.topics)
            .bindings
            .get(queue)
            .map(|v| v.iter().map(|p| p.as_str().to_owned()).collect())
            .unwrap_or_default()
    }

    fn unbind_all(&self, q: &Arc<Queue>) {
        let mut topics = write(&self.inner.topics);
        if let Some(patterns) = topics.bindings.remove(q.name()) {
            for p in patterns {
                topics.trie.remove(&p, &QueueRef(Arc::clone(q)));
            }
            self.inner.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// A non-durable subscription: a private, auto-deleted queue bound to `patterns`.
    /// It holds messages only while the returned consumer lives.
    pub fn subscribe(
        &self,
        patterns: &[&str],
        options: ConsumeOptions,
    ) -> Result<Consumer, CoreError> {
        let parsed: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<_, _>>()?;
        let name = format!("{PRIVATE_PREFIX}sub.{}", self.next_id());
        let q = self.declare_queue(&name, Some(self.inner.config.default_subscription.clone()))?;
        let consumer = self.attach(q, options)?;
        for p in &parsed {
            self.bind(&name, p.as_str())?;
        }
        Ok(consumer)
    }

    /// A durable subscription: the queue `name` bound to `patterns` (its bindings are
    /// replaced by exactly these). It keeps collecting messages (up to its limits) while
    /// no consumer is attached; [`Core::delete_queue`] ends it.
    pub fn subscribe_durable(
        &self,
        name: &str,
        patterns: &[&str],
        options: ConsumeOptions,
    ) -> Result<Consumer, CoreError> {
        let parsed: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<_, _>>()?;
        let opts = self
            .inner
            .config
            .queues
            .get(name)
            .cloned()
            .unwrap_or_else(|| QueueOptions {
                durable: true,
                auto_delete: false,
                ..self.inner.config.default_subscription.clone()
            });
        let q = self.declare_queue(name, Some(opts))?;
        for old in self.bindings(name) {
            if !parsed.iter().any(|p| p.as_str() == old) {
                self.unbind(name, &old)?;
            }
        }
        for p in &parsed {
            self.bind(name, p.as_str())?;
        }
        self.attach(q, options)
    }

    /// The queues bound to patterns matching `topic`, deduplicated, cached until the
    /// bindings change.
    fn match_topic(&self, topic: &str) -> Arc<[Arc<Queue>]> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        {
            let cache = self
                .inner
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if cache.generation == generation
                && let Some(hit) = cache.map.get(topic)
            {
                return Arc::clone(hit);
            }
        }
        let (generation, found) = {
            let topics = read(&self.inner.topics);
            // Read the generation under the lock so the cached entry is tagged with the
            // bindings it was computed from.
            let generation = self.inner.generation.load(Ordering::Acquire);
            let mut out = Vec::new();
            topics.trie.matches(topic, &mut out);
            (generation, out)
        };
        let mut queues: Vec<Arc<Queue>> = Vec::with_capacity(found.len());
        for QueueRef(q) in found {
            if !queues.iter().any(|x| Arc::ptr_eq(x, &q)) {
                queues.push(q);
            }
        }
        let result: Arc<[Arc<Queue>]> = queues.into();
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.generation != generation || cache.map.len() >= MATCH_CACHE_MAX {
            cache.map.clear();
            cache.generation = generation;
        }
        cache.map.insert(topic.into(), Arc::clone(&result));
        result
    }

    /// How many subscriptions a publish to `topic` would reach now.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.match_topic(topic).len()
    }

    // ---- publishing ---------------------------------------------------------------

    /// Publishes one message. Waits while a `block` destination is full (backpressure).
    /// Returns how many queues received it (0 for a topic nobody subscribes to).
    pub async fn publish(
        &self,
        destination: &Destination,
        message: Message,
    ) -> Result<usize, PublishError> {
        self.publish_arc(destination, Arc::new(message)).await
    }

    /// Publishes one message to several destinations (a destination list).
    pub async fn publish_all(
        &self,
        destinations: &[Destination],
        message: Message,
    ) -> Result<usize, PublishError> {
        let message = Arc::new(message);
        let mut n = 0;
        for d in destinations {
            n += self.publish_arc(d, Arc::clone(&message)).await?;
        }
        Ok(n)
    }

    /// [`Core::publish`] for an already shared message.
    pub async fn publish_arc(
        &self,
        destination: &Destination,
        message: Arc<Message>,
    ) -> Result<usize, PublishError> {
        let (n, confirmation) = self.publish_unconfirmed(destination, message).await?;
        confirmation.wait().await?;
        Ok(n)
    }

    /// Publishes and returns at once with what must still become durable before the
    /// publisher may be confirmed (see [`Confirmation`]). The message is already in
    /// its queues (and may be delivered) when this returns.
    pub async fn publish_unconfirmed(
        &self,
        destination: &Destination,
        message: Arc<Message>,
    ) -> Result<(usize, Confirmation), PublishError> {
        match destination {
            Destination::Queue(name) => {
                let q = self.queue_for_publish(name)?;
                let persist = self.persist_bytes(&q, destination, &message)?;
                let wait = self.offer(&q, destination, message, persist, true).await?;
                Ok((1, Confirmation::new(wait.into_iter().collect())))
            }
            Destination::Topic(name) => {
                let subs = self.match_topic(name);
                if subs.is_empty() {
                    self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
                    return Ok((0, Confirmation::default()));
                }
                // Computed once for the whole fan-out.
                let now = Instant::now();
                let size = message.byte_size();
                let mut persist: Option<bytes::Bytes> = None;
                let mut waits = Vec::new();
                let mut n = 0;
                for q in subs.iter() {
                    let deadline = q.deadline_for(&message, now);
                    let mut entry =
                        Entry::sized(Arc::clone(&message), destination.clone(), deadline, size);
                    if q.store().is_some() && message.persistent {
                        if persist.is_none() {
                            persist = self.persist_bytes(q, destination, &message)?;
                        }
                        entry = entry.persisted(persist.clone());
                    }
                    match self.offer_entry(q, destination, entry, now, true).await {
                        Ok(w) => {
                            n += 1;
                            waits.extend(w);
                        }
                        // A subscription that went away meanwhile just misses it.
                        Err(PublishError::Closed(_)) => {}
                        // One subscriber's full buffer must not fail the publish for
                        // everyone: it is that subscriber's loss, dead-lettered or counted.
                        Err(e) => self.subscriber_overflow(q, destination, &message, &e),
                    }
                }
                Ok((n, Confirmation::new(waits)))
            }
        }
    }

    /// Publishes several messages to one destination, in order, taking each queue's lock
    /// once per batch instead of once per message (the fast path for a session that
    /// decoded many frames from one read, and for fan-out). Same semantics as calling
    /// [`Core::publish`] for each message. Returns the number of deliveries made.
    pub async fn publish_batch(
        &self,
        destination: &Destination,
        messages: Vec<Message>,
    ) -> Result<usize, PublishError> {
        let messages: Vec<Arc<Message>> = messages.into_iter().map(Arc::new).collect();
        let queues: Arc<[Arc<Queue>]> = match destination {
            Destination::Queue(name) => vec![self.queue_for_publish(name)?].into(),
            Destination::Topic(name) => {
                let subs = self.match_topic(name);
                if subs.is_empty() {
                    self.inner
                        .unrouted
                        .fetch_add(messages.len() as u64, Ordering::Relaxed);
                    return Ok(0);
                }
                subs
            }
        };
        let now = Instant::now();
        let mut reached = 0;
        let mut waits = Vec::new();
        // Encoded once, shared by every durable subscription that stores it.
        let mut persist: Vec<Option<bytes::Bytes>> = Vec::new();
        for q in queues.iter() {
            if q.store().is_some() && persist.is_empty() {
                persist = messages
                    .iter()
                    .map(|m| self.persist_bytes(q, destination, m))
                    .collect::<Result<_, _>>()?;
            }
            let mut entries: std::collections::VecDeque<Entry> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let e = Entry::new(Arc::clone(m), destination.clone(), q.deadline_for(m, now));
                    match q.store() {
                        Some(_) => e.persisted(persist.get(i).cloned().flatten()),
                        None => e,
                    }
                })
                .collect();
            let mut dead = Vec::new();
            reached += q.offer_batch(&mut entries, now, &mut dead, &mut waits);
            self.forward_dead(q, dead);
            // What did not fit goes the one-by-one way (waiting, refusing or dropping as
            // the queue's policy says).
            for e in entries {
                let m = Arc::clone(e.message());
                match self
                    .offer_entry(q, destination, e, Instant::now(), true)
                    .await
                {
                    Ok(w) => {
                        reached += 1;
                        waits.extend(w);
                    }
                    Err(PublishError::Closed(_))
                        if matches!(destination, Destination::Topic(_)) => {}
                    Err(err) if matches!(destination, Destination::Topic(_)) => {
                        self.subscriber_overflow(q, destination, &m, &err)
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        durable::confirm(waits).await?;
        Ok(reached)
    }

    /// Puts a message into one named queue, labelled with `destination` (what its consumer
    /// sees as where it was published), without routing and without waiting: an edge
    /// replaying something to one subscriber (an MQTT retained message) uses it.
    pub fn enqueue(
        &self,
        queue: &str,
        destination: &Destination,
        message: Arc<Message>,
    ) -> Result<(), PublishError> {
        let q = self
            .queue(queue)
            .ok_or_else(|| PublishError::NotFound(Destination::queue(queue)))?;
        self.offer_now(&q, destination, message, 0)
    }

    /// Publishes without ever waiting: a full `block` destination fails with
    /// [`PublishError::Full`].
    pub fn try_publish(
        &self,
        destination: &Destination,
        message: Message,
    ) -> Result<usize, PublishError> {
        let message = Arc::new(message);
        match destination {
            Destination::Queue(name) => {
                let q = self.queue_for_publish(name)?;
                self.offer_now(&q, destination, message, 0)?;
                Ok(1)
            }
            Destination::Topic(name) => {
                let subs = self.match_topic(name);
                if subs.is_empty() {
                    self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
                }
                let mut n = 0;
                for q in subs.iter() {
                    match self.offer_now(q, destination, Arc::clone(&message), 0) {
                        Ok(()) => n += 1,
                        Err(PublishError::Closed(_)) => {}
                        Err(e) => self.subscriber_overflow(q, destination, &message, &e),
                    }
                }
                Ok(n)
            }
        }
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

    fn offer_now(
        &self,
        q: &Arc<Queue>,
        dest: &Destination,
        message: Arc<Message>,
        hops: u8,
    ) -> Result<(), PublishError> {
        let now = Instant::now();
        let deadline = q.deadline_for(&message, now);
        let persist = self.persist_bytes(q, dest, &message)?;
        let mut dead = Vec::new();
        let entry = Entry::new(message, dest.clone(), deadline).persisted(persist);
        let r = q.offer(entry, now, &mut dead);
        self.forward_dead_hops(q, dead, hops);
        // Nobody to confirm: the store write completes on its own, ordered before any
        // later removal of this message.
        r.map(|_| ()).map_err(|e| self.offer_error(q, dest, e))
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

    async fn offer(
        &self,
        q: &Arc<Queue>,
        dest: &Destination,
        message: Arc<Message>,
        persist: Option<bytes::Bytes>,
        wait: bool,
    ) -> Result<Option<StoreWait>, PublishError> {
        let now = Instant::now();
        let deadline = q.deadline_for(&message, now);
        self.offer_entry(
            q,
            dest,
            Entry::new(message, dest.clone(), deadline).persisted(persist),
            now,
            wait,
        )
        .await
    }

    async fn offer_entry(
        &self,
        q: &Arc<Queue>,
        dest: &Destination,
        entry: Entry,
        now: Instant,
        wait: bool,
    ) -> Result<Option<StoreWait>, PublishError> {
        let mut dead = Vec::new();
        // Fast path: room available, no waiter registration.
        let mut entry = match q.offer(entry, now, &mut dead) {
            Ok(w) => {
                self.forward_dead(q, dead);
                return Ok(w);
            }
            Err(OfferError::Full(e)) if wait && q.options().overflow == Overflow::Block => e,
            Err(e) => {
                self.forward_dead(q, dead);
                return Err(self.offer_error(q, dest, e));
            }
        };
        self.forward_dead(q, dead);
        loop {
            // Register interest in room *before* retrying, so a consumer freeing space
            // between our failed offer and our wait cannot be missed.
            let notified = q.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut dead = Vec::new();
            let r = q.offer(entry, Instant::now(), &mut dead);
            self.forward_dead(q, dead);
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

    // ---- dead letters and expiry ----------------------------------------------------

    pub(crate) fn forward_dead(&self, from: &Queue, dead: Vec<DeadLetter>) {
        self.forward_dead_hops(from, dead, 0);
    }

    fn forward_dead_hops(&self, from: &Queue, dead: Vec<DeadLetter>, hops: u8) {
        for d in dead {
            let stored = d.stored;
            self.forward_one_dead(from, d, hops);
            // Only now, after the copy (if any) went to its destination's store: a crash
            // in between leaves the message in both places, never in neither.
            if let Some(seq) = stored {
                from.forget(seq);
            }
        }
    }

    fn forward_one_dead(&self, from: &Queue, d: DeadLetter, hops: u8) {
        let target = from
            .options()
            .dead_letter
            .as_ref()
            .filter(|t| !matches!(t, Destination::Queue(n) if **n == *from.name()));
        if target.is_some() && hops >= MAX_DEAD_LETTER_HOPS {
            from.counters.dropped.fetch_add(1, Ordering::Relaxed);
            crate::rate_warn!(DEAD_LETTER_CHAIN, queue = from.name(), message_id = %d.message.id, reason = d.reason.as_str(), hops, "message dropped: dead-letter chain too long");
            return;
        }
        let Some(target) = target else {
            from.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if d.reason == DeadReason::Expired {
                tracing::debug!(queue = from.name(), message_id = %d.message.id, "expired message dropped");
            } else {
                crate::rate_warn!(DROPPED_NO_DEAD_LETTER, queue = from.name(), message_id = %d.message.id, reason = d.reason.as_str(), "message dropped: the queue has no dead-letter destination");
            }
            return;
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
        let result = match target {
            Destination::Queue(name) => self
                .queue_for_publish(name)
                .and_then(|q| self.offer_now(&q, target, Arc::new(m), hops + 1)),
            Destination::Topic(name) => {
                // Each hop counts, so a dead-letter topic that feeds a subscription
                // dead-lettering into it again cannot recurse without end.
                let m = Arc::new(m);
                for q in self.match_topic(name).iter() {
                    if let Err(e) = self.offer_now(q, target, Arc::clone(&m), hops + 1) {
                        crate::rate_warn!(DEAD_LETTER_REFUSED, queue = q.name(), error = %e, "dead letter not delivered to a subscription of the dead-letter topic");
                    }
                }
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                from.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                from.counters.dropped.fetch_add(1, Ordering::Relaxed);
                crate::rate_warn!(DEAD_LETTER_REFUSED, queue = from.name(), dead_letter = %target, error = %e, message_id = %d.message.id, "dead-letter destination refused message; dropped");
            }
        }
    }

    /// Removes expired messages from every queue now (also done lazily at dispatch).
    pub fn sweep_expired(&self) {
        let queues: Vec<Arc<Queue>> = read(&self.inner.queues).values().cloned().collect();
        let now = Instant::now();
        for q in queues {
            let mut dead = Vec::new();
            q.expire(now, &mut dead);
            self.forward_dead(&q, dead);
        }
    }

    /// Runs [`Core::sweep_expired`] every `every` until `cancel` fires.
    pub fn spawn_sweeper(
        &self,
        every: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let core = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => core.sweep_expired(),
                }
            }
        })
    }

    // ---- introspection -------------------------------------------------------------

    pub fn stats(&self) -> CoreStats {
        let mut queues: Vec<QueueStats> = read(&self.inner.queues)
            .values()
            .map(|q| q.stats())
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        CoreStats {
            queues,
            bindings: read(&self.inner.topics).trie.len(),
            unrouted: self.inner.unrouted.load(Ordering::Relaxed),
            publishers_blocked: self.inner.flow.blocked(),
        }
    }

    /// The publish gate the watermarks close and open.
    pub fn flow(&self) -> &flow::Flow {
        &self.inner.flow
    }

    /// Bytes held by messages in every queue: ready, and assigned to consumers but not
    /// yet settled.
    pub fn queued_bytes(&self) -> u64 {
        let (ready, unacked) = self.queue_bytes();
        ready + unacked
    }

    /// (ready, unacknowledged) bytes summed over every queue.
    pub fn queue_bytes(&self) -> (u64, u64) {
        let queues: Vec<Arc<Queue>> = read(&self.inner.queues).values().cloned().collect();
        queues.iter().fold((0, 0), |(r, u), q| {
            let (qr, qu) = q.bytes();
            (r + qr as u64, u + qu as u64)
        })
    }

    /// Bytes the edges hold outside the queues, which they report here.
    pub fn held(&self) -> &Held {
        &self.inner.held
    }

    /// Everything the memory watermark counts: [`Core::queued_bytes`] and [`Core::held`].
    pub fn memory_bytes(&self) -> u64 {
        self.queued_bytes() + self.inner.held.total()
    }

    pub fn queue_names(&self) -> Vec<String> {
        let mut v: Vec<String> = read(&self.inner.queues)
            .keys()
            .map(|k| k.to_string())
            .collect();
        v.sort();
        v
    }
}
