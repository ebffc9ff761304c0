//! The cluster as the core's [`Shared`]: which queues live in JetStream, and topics
//! across routers (docs/cluster.md).
//!
//! - A queue is shared when it is durable, not auto-deleted and not one of the
//!   router's own (`$…`: private subscription queues, link queues); its link is a
//!   [`QueueLink`]. MQTT `$share` groups are shared too, as a topic consumer only
//!   ([`Kind::Group`]), and so is a persistent MQTT session's queue (`$mqtt.s.…`), so
//!   the session can resume on another router.
//! - The MQTT sessions' records are [`ClaimBucket`]'s (`<prefix>SB_SESSIONS`).
//! - A topic publish goes once to subject `<root>.t.<levels>`: the topic stream
//!   `<prefix>SB_TOPICS` (interest retention: kept only while a durable subscription's
//!   consumer still wants it) captures it for the durable subscriptions, and the
//!   routers whose local subscriptions match receive it as plain NATS subscribers. A
//!   persistent one is confirmed once the topic stream stored it.
//! - A router subscribes only to the subjects of the patterns its local subscriptions
//!   are bound to ([`Shared::interest`], counted per subject), skips its own publishes
//!   (header `Sb-Node`) and a message it received twice through overlapping
//!   subscriptions (by `Nats-Msg-Id`), and hands the rest to
//!   [`Core::deliver_remote`].
//! - A reply address (a STOMP temporary queue) stays on its router; the others reach
//!   it through [`super::reply`].
//! - The links' records ([`Shared::link_records`]: which AMQP topology was declared)
//!   are a [`ClaimBucket`] too (`<prefix>SB_LINKS`).
//! - The MQTT listener's retained messages are kept in the bucket
//!   `<prefix>SB_RETAINED` ([`Shared::metadata`], [`MetaBucket`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::claims::ClaimBucket;
use super::names;
use super::outbox::Outbox;
use super::queue_link::{Kind, QueueLink};
use super::replicated::MetaBucket;
use crate::config::ClusterSettings;
use crate::core::pattern::Pattern;
use crate::core::queue::QueueOptions;
use crate::core::shared::claims::Claims;
use crate::core::shared::{Shared, SharedLog, SharedMeta};
use crate::core::{Core, Message, persist};
use crate::link::xmpp::META_XMPP_PUSH;
use crate::listener::mqtt::persist::META_MQTT_RETAINED;
use crate::ratelog::Cause;
use crate::store::StoreWait;
use crate::translate::mqtt_names::SESSION_QUEUE_PREFIX;

/// The header naming the router a topic publish came from.
const NODE_HEADER: &str = "Sb-Node";
/// The topic stream keeps at most this many messages for durable subscriptions whose
/// subscribers are away (the oldest goes first).
const TOPICS_MAX_MESSAGES: i64 = 1_000_000;
/// Message ids remembered to drop a topic publish received twice.
const SEEN_MAX: usize = 65_536;

static REMOTE_UNREADABLE: Cause = Cause::new("cluster.remote_unreadable");

/// What the cluster's queue links and topic publishing share.
#[derive(Debug)]
pub(super) struct Context {
    pub js: jetstream::Context,
    pub runtime: tokio::runtime::Handle,
    /// The settings' prefix, before stream names.
    pub prefix: String,
    /// The first token of every subject: `<prefix>sb`.
    pub root: String,
    pub replicas: usize,
    /// The topic stream, where durable subscriptions have their consumers.
    pub topics: jetstream::stream::Stream,
    node: String,
    /// Unique per process start, before the counter of message ids.
    epoch: u64,
    next: AtomicU64,
}

impl Context {
    /// A `Nats-Msg-Id` no other publish in the cluster has.
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:x}-{n}", self.node, self.epoch)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct SharedCluster {
    cx: Arc<Context>,
    topics_out: Outbox,
    interest: mpsc::UnboundedSender<Interest>,
    interest_rx: Mutex<Option<mpsc::UnboundedReceiver<Interest>>>,
    /// Local reply addresses created and deleted, for [`super::reply::serve`].
    replies: mpsc::UnboundedSender<(String, bool)>,
    replies_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, bool)>>>,
    core: OnceLock<Core>,
    /// The MQTT listener's retained messages.
    retained: Arc<MetaBucket>,
    /// The MQTT sessions' records (`<prefix>SB_SESSIONS`).
    claims: Arc<ClaimBucket>,
    /// The XMPP link's presence subscriptions (`<prefix>SB_XMPP_PUSH`).
    xmpp_push: Arc<MetaBucket>,
    /// The leases (`<prefix>SB_LEASES`).
    leases: async_nats::jetstream::kv::Store,
    /// The links' records (`<prefix>SB_LINKS`): AMQP topology markers.
    link_records: Arc<ClaimBucket>,
}

impl SharedCluster {
    /// Opens (or creates) the topic stream. Called once the router joined.
    pub async fn open(
        settings: &ClusterSettings,
        client: &async_nats::Client,
        replicas: usize,
    ) -> Result<Arc<Self>, String> {
        let js = jetstream::ContextBuilder::new()
            .timeout(std::time::Duration::from_secs(3))
            .ack_timeout(std::time::Duration::from_secs(3))
            .build(client.clone());
        let root = format!("{}sb", settings.prefix);
        let topics_name = format!("{}SB_TOPICS", settings.prefix);
        let topics = super::connection::patiently(|| async {
            js.get_or_create_stream(jetstream::stream::Config {
                name: topics_name.clone(),
                description: Some(
                    "Switchboard topic publishes, kept for durable subscriptions".into(),
                ),
                subjects: vec![format!("{root}.t.>")],
                retention: RetentionPolicy::Interest,
                storage: StorageType::File,
                num_replicas: replicas,
                // A count, not bytes: JetStream reserves `max_bytes` up front.
                max_messages: TOPICS_MAX_MESSAGES,
                discard: DiscardPolicy::Old,
                duplicate_window: std::time::Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot open or create the stream {topics_name}: {e}"))
        })
        .await?;
        let sessions = super::connection::meta_bucket(
            &js,
            settings,
            client,
            super::connection::SESSIONS_BUCKET,
            "Switchboard MQTT sessions: one key per client id, written by the router serving it",
        )
        .await?;
        let links = super::connection::meta_bucket(
            &js,
            settings,
            client,
            super::connection::LINKS_BUCKET,
            "Switchboard links: one key per link and purpose (the AMQP topology a router declared)",
        )
        .await?;
        // The routers alive, for the claims (the router itself opened it to join).
        let nodes = super::connection::nodes_bucket(&js, settings, client).await?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let runtime = tokio::runtime::Handle::current();
        let claims_runtime = runtime.clone();
        let cx = Arc::new(Context {
            js: js.clone(),
            runtime: runtime.clone(),
            prefix: settings.prefix.clone(),
            root,
            replicas,
            topics,
            node: settings.node.clone(),
            epoch,
            next: AtomicU64::new(1),
        });
        let retained_kv = super::connection::meta_bucket(
            &js,
            settings,
            client,
            super::connection::RETAINED_BUCKET,
            "Switchboard MQTT retained messages: one key per topic",
        )
        .await?;
        let retained = MetaBucket::new(&cx, retained_kv, client.server_info().max_payload);
        let xmpp_push_kv = super::connection::meta_bucket(
            &js,
            settings,
            client,
            super::connection::XMPP_PUSH_BUCKET,
            "Switchboard XMPP presence subscriptions: one key per user and JID of ours",
        )
        .await?;
        let xmpp_push = MetaBucket::new(&cx, xmpp_push_kv, client.server_info().max_payload);
        let leases = super::connection::leases_bucket(&js, settings, client).await?;
        let topics_out = Outbox::spawn(&runtime, js, watch::channel(true).1);
        let (interest, interest_rx) = mpsc::unbounded_channel();
        let (replies, replies_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            cx,
            topics_out,
            interest,
            interest_rx: Mutex::new(Some(interest_rx)),
            replies,
            replies_rx: Mutex::new(Some(replies_rx)),
            core: OnceLock::new(),
            retained,
            claims: ClaimBucket::new(
                sessions,
                nodes.clone(),
                settings.node.clone(),
                claims_runtime.clone(),
            ),
            link_records: ClaimBucket::new(links, nodes, settings.node.clone(), claims_runtime),
            xmpp_push,
            leases,
        }))
    }

    /// Starts delivering other routers' topic publishes to `core`'s local
    /// subscriptions (the interest declared before this waits for it).
    pub fn deliver_to(&self, core: Core) {
        let rx = self
            .interest_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if self.core.set(core.clone()).is_err() {
            return;
        }
        if let Some(rx) = rx {
            self.cx
                .runtime
                .spawn(follow_interest(Arc::clone(&self.cx), core.clone(), rx));
        }
        let replies = self
            .replies_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rx) = replies {
            self.cx.runtime.spawn(super::reply::serve(
                self.cx.js.client(),
                self.cx.root.clone(),
                core,
                rx,
            ));
        }
    }

    /// The topic stream's name.
    pub fn topics_stream(&self) -> String {
        format!("{}SB_TOPICS", self.cx.prefix)
    }
}

impl Shared for SharedCluster {
    fn open_queue(&self, name: &str, options: &QueueOptions) -> Option<Arc<dyn SharedLog>> {
        if !options.durable || options.auto_delete {
            return None;
        }
        let kind = if crate::translate::mqtt_names::is_share_queue(name) {
            Kind::Group
        } else if name.starts_with('$') && !lives_in_cluster(name) {
            return None;
        } else {
            Kind::Queue
        };
        Some(Arc::new(QueueLink::new(
            Arc::clone(&self.cx),
            name,
            options,
            kind,
        )))
    }

    fn publish_topic(&self, topic: &str, message: &Message, encoded: Bytes) -> StoreWait {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, self.cx.node.as_str());
        self.topics_out.send(
            names::topic_subject(&self.cx.root, topic),
            encoded,
            headers,
            self.cx.next_id(),
            message.persistent,
        )
    }

    fn interest(&self, pattern: &Pattern, bound: bool) {
        let _ = self
            .interest
            .send(Interest::Binding(pattern.clone(), bound));
    }

    fn interest_settled(&self) -> StoreWait {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.interest.send(Interest::Settled(tx)) {
            Ok(()) => StoreWait::Pending(rx),
            Err(_) => StoreWait::Done(Ok(())),
        }
    }

    fn local_queue(&self, name: &str, exists: bool) {
        if super::reply::is_reply_address(name) {
            let _ = self.replies.send((name.to_owned(), exists));
        }
    }

    fn forwards(&self, name: &str) -> bool {
        super::reply::is_reply_address(name)
    }

    fn forward(&self, name: &str, encoded: Bytes) -> StoreWait {
        super::reply::forward(
            &self.cx.runtime,
            self.cx.js.client(),
            &self.cx.root,
            name,
            encoded,
        )
    }

    fn metadata(&self, ns: &'static str) -> Option<Arc<dyn SharedMeta>> {
        let bucket = match ns {
            META_MQTT_RETAINED => &self.retained,
            META_XMPP_PUSH => &self.xmpp_push,
            _ => return None,
        };
        Some(Arc::clone(bucket) as Arc<dyn SharedMeta>)
    }

    fn claims(&self) -> Option<Arc<dyn Claims>> {
        Some(Arc::clone(&self.claims) as Arc<dyn Claims>)
    }

    fn lease(&self, name: &str) -> Option<crate::core::shared::lease::Lease> {
        Some(super::leases::contend(
            self.leases.clone(),
            self.cx.node.clone(),
            name,
            &self.cx.runtime,
        ))
    }

    fn link_records(&self) -> Option<Arc<dyn Claims>> {
        Some(Arc::clone(&self.link_records) as Arc<dyn Claims>)
    }
}

/// Which of the router's own `$` queues live in the cluster (the others stay local:
/// temporary queues, a router's reply queues): those whose messages must outlive the
/// router for another one to carry on — a persistent MQTT session's (the session
/// resumes elsewhere), a link's outbound queue (every router running the link serves
/// it; one holding the XMPP link's lease is the only consumer, whichever router
/// routed the message) and a presence-driven push's (the user is pushed by whichever
/// router holds the XMPP link when they come online).
fn lives_in_cluster(name: &str) -> bool {
    [
        SESSION_QUEUE_PREFIX,
        crate::router::LINK_QUEUE_PREFIX,
        crate::link::xmpp::PUSH_PREFIX,
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// What the interest task is told, in order.
#[derive(Debug)]
enum Interest {
    /// A local binding to a pattern was made (`true`) or removed.
    Binding(Pattern, bool),
    /// Answer once every binding before this is subscribed and the subscriptions have
    /// reached the server.
    Settled(tokio::sync::oneshot::Sender<Result<(), crate::store::StoreError>>),
}

/// Keeps one NATS subscription per subject the local subscriptions need, counted by
/// binding, and delivers what they receive.
async fn follow_interest(cx: Arc<Context>, core: Core, mut rx: mpsc::UnboundedReceiver<Interest>) {
    let client = cx.js.client();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut subs: HashMap<String, (usize, tokio::task::JoinHandle<()>)> = HashMap::new();
    while let Some(event) = rx.recv().await {
        let (pattern, bound) = match event {
            Interest::Binding(p, b) => (p, b),
            Interest::Settled(done) => {
                // A flush round-trips a PING: every SUB sent before it has reached the
                // server. (Its peers learn of it over their routes within moments.)
                let r =
                    tokio::time::timeout(std::time::Duration::from_secs(5), client.flush()).await;
                if !matches!(r, Ok(Ok(()))) {
                    tracing::debug!("cluster: interest not confirmed by the server in time");
                }
                let _ = done.send(Ok(()));
                continue;
            }
        };
        for subject in names::pattern_subjects(&cx.root, &pattern) {
            if bound {
                if let Some((n, _)) = subs.get_mut(&subject) {
                    *n += 1;
                    continue;
                }
                match client.subscribe(subject.clone()).await {
                    Ok(sub) => {
                        let reader = tokio::spawn(read_remote(
                            sub,
                            core.clone(),
                            cx.node.clone(),
                            Arc::clone(&seen),
                        ));
                        subs.insert(subject, (1, reader));
                    }
                    Err(e) => {
                        tracing::warn!(subject = %subject, error = %e, "cluster: cannot subscribe to other routers' publishes")
                    }
                }
            } else if let Some((n, _)) = subs.get_mut(&subject) {
                *n -= 1;
                if *n == 0
                    && let Some((_, reader)) = subs.remove(&subject)
                {
                    // Dropping the subscriber unsubscribes.
                    reader.abort();
                }
            }
        }
    }
}

async fn read_remote(
    mut sub: async_nats::Subscriber,
    core: Core,
    node: String,
    seen: Arc<Mutex<Seen>>,
) {
    while let Some(m) = sub.next().await {
        let headers = m.headers.as_ref();
        if headers
            .and_then(|h| h.get(NODE_HEADER))
            .is_some_and(|n| n.as_str() == node)
        {
            continue;
        }
        if let Some(id) = headers.and_then(|h| h.get("Nats-Msg-Id"))
            && !seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .first_time(id.as_str())
        {
            continue;
        }
        match persist::decode_queued(&m.payload) {
            Ok((destination, message)) => {
                core.deliver_remote(&destination, message);
            }
            Err(e) => {
                crate::rate_warn!(REMOTE_UNREADABLE, subject = %m.subject, error = %e, "cluster: unreadable topic publish from another router; dropped");
            }
        }
    }
}

/// The ids of the last [`SEEN_MAX`] remote publishes.
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= SEEN_MAX
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}
