//! An in-memory cluster that records what the core asks of it, and lets a test play the
//! shared log's part: feed messages through the [`Feed`] it was given, resolve publish
//! confirmations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::core::persist;
use crate::core::shared::{Feed, Shared, SharedLog};
use crate::core::{Core, CoreConfig, Destination, Message, Pattern, QueueOptions};
use crate::store::{StoreError, StoreWait};

/// One encoded publish the core handed over: into a shared queue's log (`to` is the
/// queue) or to the cluster's topics (`to` is the topic).
#[derive(Debug, Clone)]
pub(super) struct Published {
    pub to: String,
    pub encoded: Bytes,
    pub persistent: bool,
}

impl Published {
    /// What the core encoded, read back as the cluster's other routers would.
    pub fn decoded(&self) -> (Destination, Message) {
        persist::decode_queued(&self.encoded).expect("the core hands over decodable bytes")
    }

    pub fn body(&self) -> String {
        String::from_utf8(self.decoded().1.body.to_vec()).unwrap()
    }
}

/// Everything the core called, in order, per kind.
#[derive(Debug, Default)]
pub(super) struct Calls {
    /// Queues the core asked about and got a shared log for.
    pub opened: Vec<String>,
    pub started: HashMap<String, Feed>,
    pub publishes: Vec<Published>,
    pub topic_publishes: Vec<Published>,
    /// Confirmations held back (while [`FakeCluster::hold_confirms`]), in publish order.
    pub confirms: Vec<oneshot::Sender<Result<(), StoreError>>>,
    pub acks: Vec<(String, u64)>,
    pub releases: Vec<(String, u64)>,
    pub binds: Vec<(String, Vec<String>)>,
    pub closed: Vec<String>,
    /// Queues [`SharedLog::detach`]ed (unloaded here, kept in the cluster).
    pub detached: Vec<String>,
    pub interest: Vec<(String, bool)>,
    /// What [`SharedLog::overdue`] answers.
    pub overdue: bool,
}

/// The cluster side of the seam, recording. Shares queues as the real one does:
/// durable, not auto-deleted, not private (`$`-named).
#[derive(Debug, Clone, Default)]
pub(super) struct FakeCluster {
    calls: Arc<Mutex<Calls>>,
    /// Publishes resolve only when the test says so ([`FakeCluster::confirm`]).
    hold: Arc<AtomicBool>,
}

impl FakeCluster {
    /// A clustered core over this fake (no store), and the fake.
    pub fn core_with(config: CoreConfig) -> (Core, Self) {
        let cluster = Self::default();
        let core = Core::with_parts(config, None, Some(Arc::new(cluster.clone())))
            .expect("no store to recover");
        (core, cluster)
    }

    pub fn core() -> (Core, Self) {
        Self::core_with(CoreConfig::default())
    }

    pub fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, publishes wait for [`FakeCluster::confirm`].
    pub fn hold_confirms(&self) {
        self.hold.store(true, Ordering::Relaxed);
    }

    /// Resolves the oldest held confirmation with `result`.
    pub fn confirm(&self, result: Result<(), StoreError>) {
        let tx = self.calls().confirms.remove(0);
        tx.send(result).expect("the publisher still waits");
    }

    fn wait(&self, calls: &mut Calls) -> StoreWait {
        if self.hold.load(Ordering::Relaxed) {
            let (tx, rx) = oneshot::channel();
            calls.confirms.push(tx);
            StoreWait::Pending(rx)
        } else {
            StoreWait::Done(Ok(()))
        }
    }

    /// The feed the core gave `queue`'s log when it started it.
    pub fn feed(&self, queue: &str) -> Feed {
        self.calls()
            .started
            .get(queue)
            .cloned()
            .unwrap_or_else(|| panic!("the log of {queue} was never started"))
    }

    /// Plays the log fetching a message for `queue`'s consumers.
    pub fn arrive(&self, queue: &str, message: Message, token: u64, deliveries: u32) -> bool {
        self.feed(queue)
            .arrive(Destination::queue(queue), message, token, deliveries)
    }

    pub fn publishes_to(&self, queue: &str) -> Vec<Published> {
        let calls = self.calls();
        calls
            .publishes
            .iter()
            .filter(|p| p.to == queue)
            .cloned()
            .collect()
    }

    pub fn acks(&self, queue: &str) -> Vec<u64> {
        tokens(&self.calls().acks, queue)
    }

    pub fn releases(&self, queue: &str) -> Vec<u64> {
        tokens(&self.calls().releases, queue)
    }

    pub fn binds(&self, queue: &str) -> Vec<Vec<String>> {
        let calls = self.calls();
        calls
            .binds
            .iter()
            .filter(|(q, _)| q == queue)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

fn tokens(calls: &[(String, u64)], queue: &str) -> Vec<u64> {
    calls
        .iter()
        .filter(|(q, _)| q == queue)
        .map(|(_, t)| *t)
        .collect()
}

impl Shared for FakeCluster {
    fn open_queue(&self, name: &str, options: &QueueOptions) -> Option<Arc<dyn SharedLog>> {
        if !options.durable || options.auto_delete || name.starts_with('$') {
            return None;
        }
        self.calls().opened.push(name.to_owned());
        Some(Arc::new(FakeLog {
            name: name.to_owned(),
            cluster: self.clone(),
        }))
    }

    fn publish_topic(&self, topic: &str, message: &Message, encoded: Bytes) -> StoreWait {
        let mut calls = self.calls();
        calls.topic_publishes.push(Published {
            to: topic.to_owned(),
            encoded,
            persistent: message.persistent,
        });
        self.wait(&mut calls)
    }

    fn interest(&self, pattern: &Pattern, bound: bool) {
        self.calls()
            .interest
            .push((pattern.as_str().to_owned(), bound));
    }
}

/// One shared queue's log: records under the queue's name.
#[derive(Debug)]
struct FakeLog {
    name: String,
    cluster: FakeCluster,
}

impl SharedLog for FakeLog {
    fn start(&self, feed: Feed) {
        let previous = self.cluster.calls().started.insert(self.name.clone(), feed);
        assert!(previous.is_none(), "{} started twice", self.name);
    }

    fn publish(&self, encoded: Bytes, persistent: bool) -> StoreWait {
        let mut calls = self.cluster.calls();
        calls.publishes.push(Published {
            to: self.name.clone(),
            encoded,
            persistent,
        });
        self.cluster.wait(&mut calls)
    }

    fn ack(&self, token: u64) {
        self.cluster.calls().acks.push((self.name.clone(), token));
    }

    fn release(&self, token: u64) {
        self.cluster
            .calls()
            .releases
            .push((self.name.clone(), token));
    }

    fn overdue(&self, _now: std::time::Instant) -> bool {
        self.cluster.calls().overdue
    }

    fn bind(&self, patterns: &[Pattern]) {
        let patterns = patterns.iter().map(|p| p.as_str().to_owned()).collect();
        self.cluster
            .calls()
            .binds
            .push((self.name.clone(), patterns));
    }

    fn detach(&self) {
        self.cluster.calls().detached.push(self.name.clone());
    }

    fn close(&self) {
        self.cluster.calls().closed.push(self.name.clone());
    }
}
