//! One shared queue's link to JetStream ([`SharedLog`] for the core; see
//! `core/shared.rs` and docs/cluster.md).
//!
//! - The queue's messages live in stream `<prefix>SBQ_<name>` (work-queue retention:
//!   a message is gone once acknowledged), subject `<root>.q.<name>`, with the queue's
//!   limits (`max_length`, `max_bytes`: a full queue refuses new publishes, as
//!   `reject-publish` does).
//! - Every router pulls from the one durable consumer `work` on it, as much as its
//!   local consumers have credit for ([`Queue::wanted`]): consumers on every router
//!   compete for each message, and JetStream gives each to one of them.
//! - A durable subscription (the queue bound to topic patterns) also pulls from its
//!   durable consumer `SBD_<name>` on the topic stream, filtered on its patterns' subjects.
//! - A fetched message is held under a token until the core settles it: acknowledged
//!   (`+ACK`), or given back (`-NAK`: JetStream delivers it again, here or elsewhere,
//!   counting the delivery). While held, it is kept alive with a progress ack
//!   (`+WPI`) every [`PROGRESS_EVERY`], so the short [`ACK_WAIT`] only runs out when
//!   the router holding it is gone: its messages go to the others within about
//!   `ACK_WAIT` of its death.
//!
//! [`Queue::wanted`]: crate::core::Queue::wanted

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::names;
use super::outbox::Outbox;
use super::shared::Context;
use crate::core::pattern::Pattern;
use crate::core::persist;
use crate::core::queue::QueueOptions;
use crate::core::shared::{Feed, SharedLog};
use crate::ratelog::Cause;
use crate::store::StoreWait;

/// How long JetStream waits for an acknowledgement before delivering a message again.
pub const ACK_WAIT: Duration = Duration::from_secs(5);
/// How often a held message's deadline is pushed back.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(1500);
/// How long a progress ack may take to reach the consumer's leader, for
/// [`Link::overdue`].
const ACK_MARGIN: Duration = Duration::from_secs(1);
/// How long a subscription's confirmation waits for its consumer to be in force.
const SETTLE_WAIT: Duration = Duration::from_secs(5);
/// The most messages fetched in one pull.
const BATCH_MAX: usize = 64;
/// How long a client's confirmation of its settlements (a STOMP RECEIPT for an ACK)
/// waits for them to reach the NATS server: while NATS is away it is refused after this
/// rather than held without end.
const SENT_WAIT: Duration = Duration::from_secs(10);
/// How long one pull waits for messages before it is made again. Short: a pull left
/// open by a router that died may still be handed messages, which then wait out
/// [`ACK_WAIT`] before going elsewhere.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// The consumer every router pulls a queue's own messages from.
const WORK_CONSUMER: &str = "work";
/// Deliveries JetStream may have outstanding on one consumer, over all routers.
const MAX_ACK_PENDING: i64 = 100_000;

static PULL_FAILED: Cause = Cause::new("cluster.pull_failed");
static UNREADABLE: Cause = Cause::new("cluster.unreadable_message");

/// What to tell JetStream about a held message.
#[derive(Debug)]
enum Settle {
    Ack(Subject),
    Nak(Subject),
    Term(Subject),
    /// Answer once the settlements before it reached the NATS server (a flush).
    Sent(tokio::sync::oneshot::Sender<Result<(), crate::store::StoreError>>),
}

/// What a shared queue is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A queue of its own: stream `SBQ_<name>` (and, when bound, a topic consumer).
    Queue,
    /// An MQTT `$share` group: only its topic consumer, which every router with members
    /// pulls from, so members on different routers share one group. A router whose
    /// last member left stops pulling but does not delete it (members elsewhere still
    /// use it); JetStream deletes it after [`GROUP_IDLE`] without any pull.
    Group,
}

/// How long a `$share` group's consumer outlives its last pull.
pub const GROUP_IDLE: Duration = Duration::from_secs(600);

/// See the module docs.
#[derive(Debug)]
pub struct QueueLink {
    inner: Arc<Link>,
}

#[derive(Debug)]
struct Link {
    name: String,
    kind: Kind,
    cx: Arc<Context>,
    stream: String,
    subject: String,
    /// The durable subscription's consumer name on the topic stream.
    topic_consumer: String,
    options: QueueOptions,
    outbox: Outbox,
    ready: watch::Sender<bool>,
    /// Held messages: token → the reply subject acks go to.
    held: Mutex<HashMap<u64, Subject>>,
    next_token: AtomicU64,
    settle: mpsc::UnboundedSender<Settle>,
    settle_rx: Mutex<Option<mpsc::UnboundedReceiver<Settle>>>,
    /// The topic subjects of the queue's bindings, with the number of the change that
    /// set them.
    filters: watch::Sender<(u64, Vec<String>)>,
    /// The last change of `filters` the topic consumer was made with.
    applied: watch::Sender<u64>,
    closed: CancellationToken,
    /// Set once the first opening of the stream finished (made, or given up because
    /// the queue was deleted): a deletion waits for it, or it could delete the stream
    /// before an opening still under way made it again.
    open_done: watch::Sender<bool>,
    /// When the last round of progress acks went out on a connected client, in
    /// milliseconds since `epoch`: see [`Link::overdue`].
    round_done: AtomicU64,
    epoch: std::time::Instant,
}

impl QueueLink {
    pub(super) fn new(cx: Arc<Context>, name: &str, options: &QueueOptions, kind: Kind) -> Self {
        let (ready, ready_rx) = watch::channel(false);
        let (settle, settle_rx) = mpsc::unbounded_channel();
        let escaped = names::escape_name(name);
        let outbox = Outbox::spawn(&cx.runtime, cx.js.clone(), ready_rx);
        Self {
            inner: Arc::new(Link {
                name: name.to_owned(),
                kind,
                stream: format!("{}SBQ_{escaped}", cx.prefix),
                subject: names::queue_subject(&cx.root, name),
                topic_consumer: format!("SBD_{escaped}"),
                options: options.clone(),
                outbox,
                ready,
                held: Mutex::default(),
                next_token: AtomicU64::new(1),
                settle,
                settle_rx: Mutex::new(Some(settle_rx)),
                filters: watch::channel((0, Vec::new())).0,
                applied: watch::channel(0).0,
                closed: CancellationToken::new(),
                open_done: watch::channel(false).0,
                round_done: AtomicU64::new(0),
                epoch: std::time::Instant::now(),
                cx,
            }),
        }
    }
}

impl Link {
    /// Notes that every held message's deadline in JetStream was just pushed back.
    fn round_done(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.round_done.store(ms, Ordering::Relaxed);
    }

    /// Whether JetStream may have given a held message to another router: the last
    /// round of progress acks is older than [`ACK_WAIT`] less [`ACK_MARGIN`] (this
    /// router stalled, or its connection to NATS did), so a held message's deadline may
    /// have passed. Rounds come every [`PROGRESS_EVERY`]; a message fetched since the
    /// last one has a later deadline than those it covered.
    fn overdue(&self, now: std::time::Instant) -> bool {
        let since = now.saturating_duration_since(self.epoch);
        let last = Duration::from_millis(self.round_done.load(Ordering::Relaxed));
        since.saturating_sub(last) > ACK_WAIT - ACK_MARGIN
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Subject>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, token: u64, how: fn(Subject) -> Settle) {
        if let Some(reply) = self.held().remove(&token) {
            let _ = self.settle.send(how(reply));
        }
    }

    fn stream_config(&self) -> jetstream::stream::Config {
        let limit = |v: usize| {
            i64::try_from(v)
                .ok()
                .filter(|v| *v < i64::MAX)
                .unwrap_or(-1)
        };
        jetstream::stream::Config {
            name: self.stream.clone(),
            description: Some(format!("Switchboard queue {}", self.name)),
            subjects: vec![self.subject.clone()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: self.cx.replicas,
            // `max_length` only: JetStream reserves a stream's `max_bytes` on every
            // replica up front, so the 256 MiB default per queue would exhaust a
            // server's storage after a few dozen queues. The bytes are bounded by the
            // count and NATS's `max_payload`, and the servers' storage limits.
            max_messages: limit(self.options.max_length),
            discard: DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        }
    }

    /// Makes (or finds) the stream and its `work` consumer, retrying until it can or
    /// the queue is deleted.
    async fn open(&self) -> Option<PullConsumer> {
        let mut pause = Duration::from_millis(200);
        loop {
            let r = async {
                let stream = self
                    .cx
                    .js
                    .get_or_create_stream(self.stream_config())
                    .await
                    .map_err(|e| e.to_string())?;
                stream
                    .get_or_create_consumer(WORK_CONSUMER, consumer_config(WORK_CONSUMER, vec![]))
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::warn!(queue = %self.name, stream = %self.stream, error = %e, "cluster: cannot open the queue's stream; retrying");
                }
            }
            tokio::select! {
                () = self.closed.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Pulls from `consumer` into the queue while it exists, as much as its local
    /// consumers want.
    async fn pump(&self, consumer: &PullConsumer, feed: &Feed) {
        loop {
            let Some(q) = feed.queue() else { return };
            let want = q.wanted();
            if want == 0 {
                let wants = q.wants().notified();
                tokio::select! {
                    () = wants => continue,
                    () = self.closed.cancelled() => return,
                }
            }
            drop(q);
            let batch = consumer
                .batch()
                .max_messages(want.min(BATCH_MAX))
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    crate::rate_warn!(PULL_FAILED, queue = %self.name, error = %e, "cluster: pull failed; retrying");
                    tokio::select! {
                        () = self.closed.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    m = batch.next() => m,
                    () = self.closed.cancelled() => return,
                };
                match next {
                    Some(Ok(m)) => self.arrived(feed, m),
                    Some(Err(e)) => {
                        // A consumer just created, or whose leader moved, answers
                        // `503` for a moment: pull again shortly, not in a tight loop.
                        crate::rate_warn!(PULL_FAILED, queue = %self.name, error = %e, "cluster: pull failed; retrying");
                        tokio::select! {
                            () = self.closed.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_millis(200)) => break,
                        }
                    }
                    None => break,
                }
            }
        }
    }

    /// A fetched message: held under a new token and put into the queue.
    fn arrived(&self, feed: &Feed, m: jetstream::Message) {
        let delivered = m.info().map_or(1, |i| i.delivered.max(1));
        let Some(reply) = m.message.reply.clone() else {
            return;
        };
        match persist::decode_queued(&m.message.payload) {
            Ok((destination, message)) => {
                let token = self.next_token.fetch_add(1, Ordering::Relaxed);
                self.held().insert(token, reply);
                let previous = u32::try_from(delivered - 1).unwrap_or(u32::MAX);
                if !feed.arrive(destination, message, token, previous) {
                    self.settle(token, Settle::Nak);
                }
            }
            Err(e) => {
                crate::rate_warn!(UNREADABLE, queue = %self.name, error = %e, "cluster: unreadable message in the queue's stream; terminated");
                let _ = self.settle.send(Settle::Term(reply));
            }
        }
    }

    /// Pulls the durable subscription's topic messages while it has bindings.
    async fn pump_topics(&self, feed: &Feed) {
        let mut filters = self.filters.subscribe();
        loop {
            let (change, subjects) = filters.borrow_and_update().clone();
            if subjects.is_empty() {
                self.applied.send_replace(change);
                tokio::select! {
                    r = filters.changed() => if r.is_err() { return } else { continue },
                    () = self.closed.cancelled() => return,
                }
            }
            let mut config = consumer_config(&self.topic_consumer, subjects);
            if self.kind == Kind::Group {
                config.inactive_threshold = GROUP_IDLE;
            }
            let consumer = match self.cx.topics.create_consumer(config).await {
                Ok(c) => {
                    self.applied.send_replace(change);
                    c
                }
                Err(e) => {
                    tracing::warn!(queue = %self.name, error = %e, "cluster: cannot open the subscription's consumer; retrying");
                    tokio::select! {
                        () = self.closed.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            tokio::select! {
                () = self.pump(&consumer, feed) => return,
                r = filters.changed() => if r.is_err() { return },
            }
        }
    }

    /// Sends acks and naks as the core settles, and progress acks for what is held.
    async fn settle_loop(&self, mut rx: mpsc::UnboundedReceiver<Settle>) {
        let client = self.cx.js.client();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                s = rx.recv() => {
                    let Some(s) = s else { return };
                    let (reply, body): (Subject, &'static [u8]) = match s {
                        Settle::Ack(r) => (r, b"+ACK"),
                        Settle::Nak(r) => (r, b"-NAK"),
                        Settle::Term(r) => (r, b"+TERM"),
                        Settle::Sent(answer) => {
                            // The server answers a flush after everything published
                            // before it: from then on it routes those acks to the
                            // consumer's leader whatever becomes of this router. Awaited
                            // aside, so a slow answer never delays the progress acks.
                            let client = client.clone();
                            self.cx.runtime.spawn(async move {
                                let flushed = match tokio::time::timeout(SENT_WAIT, client.flush()).await {
                                    Ok(Ok(())) => Ok(()),
                                    Ok(Err(e)) => Err(format!("acknowledgements not sent to the cluster: {e}")),
                                    Err(_) => Err(format!(
                                        "acknowledgements not sent to the cluster within {} s",
                                        SENT_WAIT.as_secs()
                                    )),
                                }
                                .map_err(crate::store::StoreError::Unavailable);
                                let _ = answer.send(flushed);
                            });
                            continue;
                        }
                    };
                    let _ = client.publish(reply, Bytes::from_static(body)).await;
                }
                _ = tick.tick() => {
                    let held: Vec<Subject> = self.held().values().cloned().collect();
                    for reply in held {
                        let _ = client.publish(reply, Bytes::from_static(b"+WPI")).await;
                    }
                    // Disconnected, the acks wait in the client: the deadlines are not
                    // pushed back until it is connected again.
                    if client.connection_state() == async_nats::connection::State::Connected {
                        self.round_done();
                    }
                }
            }
        }
    }

    /// The queue was deleted: give back what is held, delete the stream and the
    /// subscription's consumer.
    async fn delete(&self) {
        let mut done = self.open_done.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), done.wait_for(|d| *d)).await;
        let held: Vec<Subject> = self.held().drain().map(|(_, r)| r).collect();
        let client = self.cx.js.client();
        for reply in held {
            let _ = client.publish(reply, Bytes::from_static(b"-NAK")).await;
        }
        if self.kind == Kind::Group {
            // Members on other routers may still use it; JetStream deletes it once idle.
            return;
        }
        if let Err(e) = self.cx.js.delete_stream(&self.stream).await {
            tracing::warn!(queue = %self.name, stream = %self.stream, error = %e, "cluster: queue's stream not deleted");
        }
        let _ = self.cx.topics.delete_consumer(&self.topic_consumer).await;
        tracing::info!(queue = %self.name, stream = %self.stream, "cluster: shared queue deleted");
    }
}

/// A durable pull consumer: explicit acks, [`ACK_WAIT`], no delivery limit (the core
/// counts deliveries and dead-letters). A queue's `work` consumer takes everything in
/// the stream; a subscription's only what is published from its creation on.
fn consumer_config(name: &str, filter_subjects: Vec<String>) -> pull::Config {
    let deliver_policy = if filter_subjects.is_empty() {
        DeliverPolicy::All
    } else {
        DeliverPolicy::New
    };
    pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        deliver_policy,
        filter_subjects,
        ..Default::default()
    }
}

impl SharedLog for QueueLink {
    fn start(&self, feed: Feed) {
        let link = Arc::clone(&self.inner);
        let rx = link
            .settle_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(rx) = rx else { return };
        self.inner.cx.runtime.spawn(async move {
            if link.kind == Kind::Group {
                tokio::select! {
                    () = link.settle_loop(rx) => {}
                    () = link.pump_topics(&feed) => {}
                    () = link.closed.cancelled() => {}
                }
                return;
            }
            let began = std::time::Instant::now();
            let work = link.open().await;
            link.open_done.send_replace(true);
            let Some(work) = work else {
                return;
            };
            link.round_done();
            link.ready.send_replace(true);
            let took_ms = began.elapsed().as_millis();
            tracing::debug!(queue = %link.name, stream = %link.stream, took_ms, "cluster: shared queue open");
            tokio::select! {
                () = link.settle_loop(rx) => {}
                () = async { tokio::join!(link.pump(&work, &feed), link.pump_topics(&feed)); } => {}
                () = link.closed.cancelled() => {}
            }
        });
    }

    fn publish(&self, encoded: Bytes, persistent: bool) -> StoreWait {
        if self.inner.kind == Kind::Group {
            // Nothing names a group's queue but its topic bindings.
            return StoreWait::Done(Err(crate::store::StoreError::Unavailable(format!(
                "{} is a shared subscription group: publish to its topics",
                self.inner.name
            ))));
        }
        self.inner.outbox.send(
            self.inner.subject.clone(),
            encoded,
            HeaderMap::new(),
            self.inner.cx.next_id(),
            persistent,
        )
    }

    fn ack(&self, token: u64) {
        self.inner.settle(token, Settle::Ack);
    }

    fn release(&self, token: u64) {
        self.inner.settle(token, Settle::Nak);
    }

    fn overdue(&self, now: std::time::Instant) -> bool {
        self.inner.overdue(now)
    }

    fn settlements_sent(&self) -> StoreWait {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.inner.settle.send(Settle::Sent(tx)) {
            Ok(()) => StoreWait::Pending(rx),
            // The queue is closed: what it held was given back already.
            Err(_) => StoreWait::Done(Ok(())),
        }
    }

    fn bind(&self, patterns: &[Pattern]) {
        let mut subjects: Vec<String> = patterns
            .iter()
            .flat_map(|p| names::pattern_subjects(&self.inner.cx.root, p))
            .collect();
        subjects.sort();
        subjects.dedup();
        self.inner.filters.send_modify(|(change, now)| {
            *change += 1;
            *now = subjects;
        });
    }

    /// Also waits for a queue's stream and `work` consumer to be open on this router
    /// (a `$share` group has none): until then this router pulls nothing, so a consumer
    /// confirmed earlier would see every message go to consumers on other routers.
    fn settled(&self) -> StoreWait {
        let want = self.inner.filters.borrow().0;
        let needs_open = self.inner.kind == Kind::Queue;
        if (!needs_open || *self.inner.ready.borrow()) && *self.inner.applied.borrow() >= want {
            return StoreWait::Done(Ok(()));
        }
        let mut applied = self.inner.applied.subscribe();
        let mut ready = self.inner.ready.subscribe();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let name = self.inner.name.clone();
        self.inner.cx.runtime.spawn(async move {
            let waited = tokio::time::timeout(SETTLE_WAIT, async {
                if needs_open {
                    ready.wait_for(|r| *r).await?;
                }
                applied.wait_for(|a| *a >= want).await.map(drop)
            })
            .await;
            if !matches!(waited, Ok(Ok(()))) {
                tracing::warn!(queue = %name, "cluster: queue or subscription not in force in the cluster in time; confirming the subscription anyway");
            }
            let _ = tx.send(Ok(()));
        });
        StoreWait::Pending(rx)
    }

    fn detach(&self) {
        self.inner.closed.cancel();
        let held: Vec<Subject> = self.inner.held().drain().map(|(_, r)| r).collect();
        let client = self.inner.cx.js.client();
        self.inner.cx.runtime.spawn(async move {
            for reply in held {
                let _ = client.publish(reply, Bytes::from_static(b"-NAK")).await;
            }
        });
    }

    fn close(&self) {
        self.inner.closed.cancel();
        let link = Arc::clone(&self.inner);
        self.inner
            .cx
            .runtime
            .spawn(async move { link.delete().await });
    }
}
