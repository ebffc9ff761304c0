//! [`Core`], the handle to the broker: its queues by name, consumers attached to them,
//! and the figures the admin API and the watermarks read. Publishing, subscriptions,
//! dead-lettering, expiry and the store extend it in their own modules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::budget::Held;
use super::consumer::{ConsumeOptions, Consumer};
use super::destination::{Destination, validate_name};
use super::flow;
use super::queue::{Queue, QueueOptions, QueueStats};
use super::topics::Topics;
use super::{CoreConfig, CoreError, PublishError};

/// What every clone of a [`Core`] shares; the modules extending `Core` reach into it.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) config: CoreConfig,
    queues: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    pub(super) topics: Topics,
    next_id: AtomicU64,
    /// Topic publishes that matched no subscription.
    pub(super) unrouted: AtomicU64,
    pub(super) store: Option<Arc<dyn crate::store::Store>>,
    /// The cluster, when this router is one of several (see [`super::shared`]).
    pub(super) shared: Option<Arc<dyn super::Shared>>,
    /// The publish gate the watermarks close and open.
    flow: flow::Flow,
    /// Bytes the edges hold outside the queues (counted by the memory watermark).
    held: Held,
    /// Metadata the store recovered for the edges (by namespace), taken once by each.
    pub(super) recovered_meta:
        Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<u8>>>>,
    /// The store's metadata namespaces handed out by [`Core::kept_metadata`], one
    /// handle each.
    pub(super) kept_meta: Mutex<HashMap<&'static str, Arc<super::kept_meta::StoreMeta>>>,
}

/// Handle to the broker core; cheap to clone.
#[derive(Debug, Clone)]
pub struct Core {
    pub(super) inner: Arc<Inner>,
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
        Self::build(config, None, None)
    }

    pub(super) fn build(
        config: CoreConfig,
        store: Option<Arc<dyn crate::store::Store>>,
        shared: Option<Arc<dyn super::Shared>>,
    ) -> Self {
        let named: Vec<(String, QueueOptions)> = config
            .queues
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let core = Self {
            inner: Arc::new(Inner {
                config,
                queues: RwLock::new(HashMap::new()),
                topics: Topics::default(),
                next_id: AtomicU64::new(1),
                unrouted: AtomicU64::new(0),
                store,
                shared,
                flow: flow::Flow::default(),
                held: Held::default(),
                recovered_meta: Mutex::default(),
                kept_meta: Mutex::default(),
            }),
        };
        for (name, options) in named {
            if let Err(e) = core.declare_queue(&name, Some(options)) {
                tracing::warn!(queue = %name, error = %e, "configured queue not declared");
            }
        }
        core
    }

    /// Whether this core is one router of a cluster.
    pub fn is_clustered(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// The cluster's claimed records (MQTT sessions), when clustered.
    pub fn claims(&self) -> Option<Arc<dyn super::shared::claims::Claims>> {
        self.inner.shared.as_ref()?.claims()
    }

    /// The lease `name`: contended for across the cluster, or this router's alone.
    pub fn lease(&self, name: &str) -> super::shared::lease::Lease {
        self.inner
            .shared
            .as_ref()
            .and_then(|s| s.lease(name))
            .unwrap_or_else(|| super::shared::lease::Lease::alone(name))
    }

    /// The cluster's records of links ([`super::shared::Shared::link_records`]), when
    /// clustered.
    pub fn link_records(&self) -> Option<Arc<dyn super::shared::claims::Claims>> {
        self.inner.shared.as_ref()?.link_records()
    }

    pub fn config(&self) -> &CoreConfig {
        &self.inner.config
    }

    pub(super) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

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
        let shared = self
            .inner
            .shared
            .as_ref()
            .and_then(|s| s.open_queue(&name, &options));
        let q = Arc::new(Queue::new(
            Arc::clone(&name),
            options,
            self.inner.store.clone(),
            shared,
        ));
        queues.insert(name, Arc::clone(&q));
        drop(queues);
        q.start_shared(super::shared::Feed::new(
            Arc::downgrade(&self.inner),
            Arc::downgrade(&q),
        ));
        if let Some(shared) = &self.inner.shared
            && !q.is_shared()
        {
            shared.local_queue(q.name(), true);
        }
        self.save_queue_meta(&q);
        Ok(q)
    }

    /// Deletes a queue: its messages are discarded, its consumers see
    /// [`Closed`](super::Closed), its topic bindings are removed. Returns how many ready
    /// messages it held.
    pub fn delete_queue(&self, name: &str) -> Option<usize> {
        let q = write(&self.inner.queues).remove(name)?;
        self.unbind_all(&q);
        self.local_queue_gone(&q);
        if let Some(s) = q.store() {
            s.delete(super::durable::META_QUEUE, name);
        }
        Some(q.close())
    }

    /// Forgets a shared queue on this router only, when nobody here consumes it: the
    /// cluster keeps it and its messages (another router serves it now: an MQTT session
    /// that moved). False when it is not here, is local, or has consumers.
    pub fn unload_queue(&self, name: &str) -> bool {
        let removed = {
            let mut queues = write(&self.inner.queues);
            match queues.get(name) {
                Some(q) if q.is_shared() && q.consumer_count() == 0 => queues.remove(name),
                _ => None,
            }
        };
        let Some(q) = removed else { return false };
        self.unbind_all(&q);
        q.unload();
        true
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
            self.local_queue_gone(&q);
            q.close();
        }
    }

    /// Whether a publish to queue `name` can reach it now without creating it: it is
    /// here, or (clustered) another router holds it as a reply address.
    pub fn reaches_queue(&self, name: &str) -> bool {
        self.queue(name).is_some() || self.inner.shared.as_ref().is_some_and(|s| s.forwards(name))
    }

    /// Tells the cluster, if any, that a local queue is gone.
    fn local_queue_gone(&self, q: &Queue) {
        if let Some(shared) = &self.inner.shared
            && !q.is_shared()
        {
            shared.local_queue(q.name(), false);
        }
    }

    pub(super) fn queue_for_publish(&self, name: &str) -> Result<Arc<Queue>, PublishError> {
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

    pub(super) fn attach(
        &self,
        q: Arc<Queue>,
        options: ConsumeOptions,
    ) -> Result<Consumer, CoreError> {
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

    pub fn stats(&self) -> CoreStats {
        let mut queues: Vec<QueueStats> = read(&self.inner.queues)
            .values()
            .map(|q| q.stats())
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        CoreStats {
            queues,
            bindings: self.inner.topics.len(),
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
        self.all_queues().iter().fold((0, 0), |(r, u), q| {
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

    /// Every queue now (a snapshot: the registry is not locked while the caller works
    /// on them).
    pub(super) fn all_queues(&self) -> Vec<Arc<Queue>> {
        read(&self.inner.queues).values().cloned().collect()
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
