//! What the core keeps in the store besides messages: each durable queue's options and
//! topic bindings (so a durable subscription keeps collecting after a restart even
//! before its subscriber returns), and the start-up recovery that puts it all back.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::destination::Destination;
use super::persist;
use super::queue::{ExpiredAction, Overflow, QueueOptions};
use super::{Core, PublishError};
use crate::store::{Store, StoreError, StoreWait};

/// The store namespace of durable queue metadata (options and bindings), keyed by queue
/// name.
pub(crate) const META_QUEUE: &str = "queue";

/// The stored form of a durable queue: its options and bindings, as JSON (small,
/// rarely written, and readable when inspecting a data directory).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct QueueMeta {
    max_length: usize,
    max_bytes: usize,
    overflow: Overflow,
    ttl_ms: Option<u64>,
    expired: ExpiredAction,
    dead_letter: Option<String>,
    max_deliveries: Option<u32>,
    #[serde(default)]
    bindings: Vec<String>,
}

impl QueueMeta {
    fn new(o: &QueueOptions, bindings: Vec<String>) -> Self {
        Self {
            max_length: o.max_length,
            max_bytes: o.max_bytes,
            overflow: o.overflow,
            ttl_ms: o.ttl.map(|t| t.as_millis() as u64),
            expired: o.expired,
            dead_letter: o.dead_letter.as_ref().map(ToString::to_string),
            max_deliveries: o.max_deliveries,
            bindings,
        }
    }

    fn options(&self) -> QueueOptions {
        QueueOptions {
            max_length: self.max_length,
            max_bytes: self.max_bytes,
            overflow: self.overflow,
            ttl: self.ttl_ms.map(Duration::from_millis),
            expired: self.expired,
            dead_letter: self
                .dead_letter
                .as_deref()
                .and_then(|d| Destination::parse(d).ok()),
            max_deliveries: self.max_deliveries,
            durable: true,
            auto_delete: false,
        }
    }
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        PublishError::Store(e.to_string())
    }
}

impl Core {
    /// A core backed by `store`, with what it holds put back: durable queues with their
    /// options (configured options win) and bindings, then their messages in their
    /// original order, those handed out before flagged redelivered. The metadata of
    /// other namespaces waits for its owners ([`Core::take_recovered`]).
    pub fn with_store(
        config: super::CoreConfig,
        store: Arc<dyn Store>,
    ) -> Result<Self, StoreError> {
        Self::with_parts(config, Some(store), None)
    }

    /// A core with an optional store (see [`Core::with_store`]) and, clustered, the
    /// cluster its durable queues and topics are shared through (see [`super::shared`]).
    pub fn with_parts(
        config: super::CoreConfig,
        store: Option<Arc<dyn Store>>,
        shared: Option<Arc<dyn super::Shared>>,
    ) -> Result<Self, StoreError> {
        let Some(store) = store else {
            return Ok(Self::build(config, None, shared));
        };
        let mut decoded = persist::Recovering::default();
        let recovered = store.recover(&mut |queue, batch| decoded.add(queue, batch))?;
        let core = Self::build(config, Some(store), shared);
        let mut meta = recovered.meta;
        let metas = meta.remove(META_QUEUE);
        for (name, bytes) in metas.iter().flatten() {
            let meta: QueueMeta = match serde_json::from_slice(bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(queue = %name, error = %e, "stored queue metadata unreadable; queue recreated with default options");
                    continue;
                }
            };
            let options = core
                .inner
                .config
                .queues
                .get(name)
                .cloned()
                .unwrap_or_else(|| meta.options());
            if let Err(e) = core.declare_queue(name, Some(options)) {
                tracing::warn!(queue = %name, error = %e, "stored queue not restored");
                continue;
            }
            for b in &meta.bindings {
                if let Err(e) = core.bind(name, b) {
                    tracing::warn!(queue = %name, binding = %b, error = %e, "stored binding not restored");
                }
            }
        }
        let now = Instant::now();
        let mut restored = 0usize;
        for r in decoded.finish() {
            let q = match core.declare_queue(&r.name, None) {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(queue = %r.name, error = %e, messages = r.messages.len(), "stored messages of an invalid queue name not restored");
                    continue;
                }
            };
            restored += r.messages.len();
            q.restore(r.messages, now);
            for seq in r.unreadable {
                q.forget(seq);
            }
        }
        if restored > 0 {
            tracing::info!(
                messages = restored,
                "stored messages restored to their queues"
            );
        }
        *core
            .inner
            .recovered_meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = meta;
        Ok(core)
    }

    /// What the store recovered under an edge's namespace (key → value); empty the
    /// second time.
    pub fn take_recovered(&self, ns: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        self.inner
            .recovered_meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(ns)
            .unwrap_or_default()
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.inner.store.as_ref()
    }

    /// What confirming earlier settlements (acks, nacks, dead-letterings) waits for:
    /// every store write they made (removals, dead-letter copies) durable. Those writes
    /// are not awaited one by one; this is one [`Store::barrier`] behind them, sharing
    /// the group commit of whatever else is being written. Ready at once without a store.
    pub fn settlements_durable(&self) -> Confirmation {
        match self.store() {
            Some(s) => Confirmation::new(vec![s.barrier()]),
            None => Confirmation::default(),
        }
    }

    /// Records a durable queue's options and current bindings.
    pub(crate) fn save_queue_meta(&self, q: &super::Queue) {
        let Some(store) = q.store() else { return };
        let meta = QueueMeta::new(q.options(), self.bindings(q.name()));
        match serde_json::to_vec(&meta) {
            Ok(v) => {
                // Ordered before any message append that follows; nobody waits on it.
                let _ = store.put(META_QUEUE, q.name(), v);
            }
            Err(e) => tracing::warn!(queue = q.name(), error = %e, "queue metadata not stored"),
        }
    }

    /// The encoded message to store with it, when `q` keeps persistent messages and
    /// this one is persistent. Refuses at once when the store cannot take writes.
    pub(crate) fn persist_bytes(
        &self,
        q: &super::Queue,
        destination: &Destination,
        m: &super::Message,
    ) -> Result<Option<bytes::Bytes>, PublishError> {
        match q.store() {
            Some(store) if m.persistent => {
                store.check()?;
                Ok(Some(persist::encode_queued(destination, m).into()))
            }
            // A shared queue takes every message through the cluster.
            _ if q.is_shared() => Ok(Some(persist::encode_queued(destination, m).into())),
            _ => Ok(None),
        }
    }
}

/// Awaits the store writes of one publish: its confirmation point.
pub(crate) async fn confirm(waits: Vec<StoreWait>) -> Result<(), PublishError> {
    for w in waits {
        w.wait().await?;
    }
    Ok(())
}

/// What a publish still owes its publisher: the store writes that must be durable
/// before it is confirmed. An edge that pipelines (a STOMP client with many SENDs in
/// flight) keeps reading while earlier ones become durable, so its messages share
/// fsyncs instead of waiting for one each; it confirms them in order as they resolve.
#[derive(Debug, Default)]
pub struct Confirmation(Vec<StoreWait>);

impl Confirmation {
    pub(crate) fn new(waits: Vec<StoreWait>) -> Self {
        Self(waits)
    }

    /// Nothing to wait for (nothing stored, or the store answered at once).
    pub fn is_ready(&self) -> bool {
        self.0.iter().all(StoreWait::is_done_ok)
    }

    pub fn extend(&mut self, other: Confirmation) {
        self.0.extend(other.0);
    }

    /// Adds one more store write to wait for (an MQTT retained copy).
    pub fn push(&mut self, wait: StoreWait) {
        self.0.push(wait);
    }

    /// Resolves once every write is durable; the first failure otherwise.
    pub async fn wait(self) -> Result<(), PublishError> {
        confirm(self.0).await
    }
}
