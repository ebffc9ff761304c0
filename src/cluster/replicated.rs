//! Metadata the cluster keeps for every router ([`SharedMeta`]), one KV bucket per
//! namespace (MQTT retained messages: `<prefix>SB_RETAINED`, docs/cluster.md).
//!
//! - **Writing**: [`SharedMeta::put`] and [`SharedMeta::delete`] hand the write to one
//!   task that sends them in order (a router's writes reach the bucket in the order it
//!   made them, retries aside) as JetStream publishes on the key's subject; each is
//!   confirmed once the bucket stored it, sent again under the same `Nats-Msg-Id` while
//!   NATS does not answer (as queue publishes are: [`super::outbox::confirm`]).
//! - **Mirroring**: one task per bucket watches every key (the current values first,
//!   then each change) and calls the owner's [`MetaApply`] with what
//!   [`Ledger`] says to apply: the owner applied its own writes already, so their echo
//!   is skipped, and once a key's writes have settled it gets the value of the highest
//!   revision known. So every mirror ends on the bucket's value, whatever the
//!   interleaving of writes on several routers.
//! - A lost watch is made again from the revision after the last one seen.
//!
//! Keys are escaped into KV keys ([`names::kv_key`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage as Publish;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::mirror_ledger::{Ledger, Settled, Value};
use super::names;
use super::shared::Context;
use crate::core::shared::{MetaApply, SharedMeta};
use crate::ratelog::Cause;
use crate::store::{StoreError, StoreWait};

/// Pause before watching again after the watch failed (the connection is down, the
/// bucket's leader is being elected): the client reconnects meanwhile.
const REWATCH: Duration = Duration::from_secs(1);
/// Room left in a message for the headers of a write (`Nats-Msg-Id`, `KV-Operation`):
/// a value may be at most the server's largest message less this.
const HEADER_ROOM: usize = 256;

static KEY_UNREADABLE: Cause = Cause::new("cluster.meta_key_unreadable");

/// One namespace's bucket; see the module docs.
pub(super) struct MetaBucket {
    bucket: String,
    max_value: usize,
    writes: mpsc::UnboundedSender<Write>,
    events: mpsc::UnboundedSender<Event>,
    /// Taken by [`SharedMeta::watch`]: until then, what the writes report waits here.
    mirror: Mutex<Option<(kv::Store, mpsc::UnboundedReceiver<Event>)>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for MetaBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaBucket")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// A write for the writing task: `value` `None` deletes.
struct Write {
    key: String,
    value: Option<Bytes>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// What the mirroring task learns besides the watch, by (escaped) key.
enum Event {
    /// A write of this router was handed to the writing task.
    Begin(String),
    /// It was stored under a revision with its value (`None`: a delete), or failed.
    End(String, Option<(u64, Value)>),
    /// The key as read back after a failed write: `Err` when it could not be read.
    Current(String, Result<Option<(u64, Value)>, ()>),
}

impl MetaBucket {
    /// The namespace kept in `kv`; starts its writing task.
    pub fn new(cx: &Arc<Context>, kv: kv::Store, max_payload: usize) -> Arc<Self> {
        let (writes, writes_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let subject_prefix = kv.put_prefix.clone().unwrap_or_else(|| kv.prefix.clone());
        cx.runtime.spawn(write(
            writes_rx,
            Arc::clone(cx),
            subject_prefix,
            events.clone(),
        ));
        Arc::new(Self {
            bucket: kv.name.clone(),
            max_value: max_payload.saturating_sub(HEADER_ROOM),
            writes,
            events,
            mirror: Mutex::new(Some((kv, events_rx))),
            runtime: cx.runtime.clone(),
        })
    }

    fn write(&self, key: &str, value: Option<Bytes>) -> StoreWait {
        let Some(k) = names::kv_key(key) else {
            return refused(format!(
                "key too long for the bucket {} (escaped, at most {} bytes)",
                self.bucket,
                names::MAX_KV_KEY
            ));
        };
        if let Some(v) = &value
            && v.len() > self.max_value
        {
            return refused(format!(
                "{} bytes, over the largest value of the bucket {} ({} bytes: the NATS server's max_payload)",
                v.len(),
                self.bucket,
                self.max_value
            ));
        }
        let (done, rx) = oneshot::channel();
        // Before the write can be echoed by the watch: announced first.
        let _ = self.events.send(Event::Begin(k.clone()));
        let write = Write {
            key: k.clone(),
            value,
            done,
        };
        if self.writes.send(write).is_err() {
            let _ = self.events.send(Event::End(k, None));
            return refused("the writing task has stopped".into());
        }
        StoreWait::Pending(rx)
    }
}

fn refused(why: String) -> StoreWait {
    StoreWait::Done(Err(StoreError::Unavailable(format!("cluster: {why}"))))
}

impl SharedMeta for MetaBucket {
    fn put(&self, key: &str, value: Bytes) -> StoreWait {
        self.write(key, Some(value))
    }

    fn delete(&self, key: &str) -> StoreWait {
        self.write(key, None)
    }

    fn watch(&self, apply: MetaApply) -> StoreWait {
        let Some((kv, events)) = self
            .mirror
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return refused(format!("the bucket {} is watched already", self.bucket));
        };
        let (caught_up, rx) = oneshot::channel();
        let mirror = Mirror {
            kv,
            apply,
            ledger: Ledger::default(),
            events: self.events.clone(),
            caught_up: Some(caught_up),
        };
        self.runtime.spawn(mirror.run(events));
        StoreWait::Pending(rx)
    }
}

/// The writing task: sends in order, confirms each write on its own.
async fn write(
    mut rx: mpsc::UnboundedReceiver<Write>,
    cx: Arc<Context>,
    subject_prefix: String,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some(Write { key, value, done }) = rx.recv().await {
        let mut headers = HeaderMap::new();
        if value.is_none() {
            headers.insert("KV-Operation", "DEL");
        }
        let publish = Publish::build()
            .payload(value.clone().unwrap_or_default())
            .headers(headers)
            .message_id(cx.next_id());
        let subject = format!("{subject_prefix}{key}");
        let first = cx.js.send_publish(subject.clone(), publish.clone()).await;
        let js = cx.js.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let stored = super::outbox::confirm(&js, subject, publish, first).await;
            let _ = events.send(Event::End(
                key,
                stored.as_ref().ok().map(|rev| (*rev, value)),
            ));
            let _ = done.send(stored.map(|_| ()));
        });
    }
}

/// The mirroring task's state; see the module docs.
struct Mirror {
    kv: kv::Store,
    apply: MetaApply,
    ledger: Ledger,
    events: mpsc::UnboundedSender<Event>,
    caught_up: Option<oneshot::Sender<Result<(), StoreError>>>,
}

impl Mirror {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        loop {
            match self.open().await {
                Ok(mut watch) => loop {
                    tokio::select! {
                        biased;
                        Some(ev) = events.recv() => self.event(ev),
                        e = watch.next() => match e {
                            Some(Ok(e)) => self.entry(e),
                            Some(Err(e)) => {
                                tracing::warn!(bucket = %self.kv.name, error = %e, "cluster: bucket watch failed; watching again");
                                break;
                            }
                            None => break,
                        },
                    }
                },
                Err(e) => {
                    tracing::debug!(bucket = %self.kv.name, error = %e, "cluster: cannot watch the bucket yet")
                }
            }
            let pause = tokio::time::sleep(REWATCH);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    Some(ev) = events.recv() => self.event(ev),
                }
            }
        }
    }

    /// Watches from the revision after the last one seen (each key's value, the first
    /// time). Caught up at once when that is everything the bucket holds.
    async fn open(&mut self) -> Result<kv::Watch, String> {
        let status = self.kv.status().await.map_err(|e| e.to_string())?;
        let seen = self.ledger.seen();
        let watch = if seen == 0 {
            // Each key's last value (`watch_all` would bring only new ones).
            self.kv.watch_with_history(">").await
        } else {
            self.kv.watch_all_from_revision(seen + 1).await
        }
        .map_err(|e| e.to_string())?;
        let state = &status.info.state;
        if state.messages == 0 || state.last_sequence <= seen {
            self.signal_caught_up();
        }
        Ok(watch)
    }

    fn signal_caught_up(&mut self) {
        if let Some(tx) = self.caught_up.take() {
            let _ = tx.send(Ok(()));
        }
    }

    fn apply(&self, escaped: &str, value: Value) {
        match names::from_kv_key(escaped) {
            Some(key) => (self.apply)(&key, value),
            None => {
                crate::rate_warn!(KEY_UNREADABLE, bucket = %self.kv.name, key = escaped, "cluster: a key this router does not write; ignored")
            }
        }
    }

    /// A value (or deletion) the watch brought.
    fn entry(&mut self, e: kv::Entry) {
        let value = (e.operation == kv::Operation::Put).then_some(e.value);
        if let Some(value) = self.ledger.entry(&e.key, e.revision, value) {
            self.apply(&e.key, value);
        }
        if e.delta == 0 {
            self.signal_caught_up();
        }
    }

    fn event(&mut self, ev: Event) {
        let (k, settled) = match ev {
            Event::Begin(k) => {
                self.ledger.begin(k);
                return;
            }
            Event::End(k, stored) => {
                let settled = self.ledger.end(&k, stored);
                (k, settled)
            }
            Event::Current(k, read) => {
                let again = read.is_err();
                match self.ledger.read_back(&k, read) {
                    Settled::ReadBack if again => {
                        tracing::debug!(bucket = %self.kv.name, key = %k, "cluster: a failed write's key cannot be read back yet; reading it again");
                        self.read_back(k, REWATCH);
                        return;
                    }
                    settled => (k, settled),
                }
            }
        };
        match settled {
            Settled::Apply(value) => self.apply(&k, value),
            Settled::ReadBack => self.read_back(k, Duration::ZERO),
            Settled::Wait => {}
        }
    }

    /// Reads `k` back after `pause` (a write to it failed: its outcome is unknown),
    /// reported as [`Event::Current`].
    fn read_back(&self, k: String, pause: Duration) {
        let kv = self.kv.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let read = match kv.entry(k.clone()).await {
                Ok(Some(e)) => Ok(Some((
                    e.revision,
                    (e.operation == kv::Operation::Put).then_some(e.value),
                ))),
                Ok(None) => Ok(None),
                Err(_) => Err(()),
            };
            let _ = events.send(Event::Current(k, read));
        });
    }
}
