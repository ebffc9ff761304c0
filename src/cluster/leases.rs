//! The core's [`Lease`]s over a KV bucket (`<prefix>SB_LEASES`, in memory, `max_age`
//! [`LEASE_TTL`]): one key per lease ([`names::kv_key`] of its name), holding the
//! holder's node name. See docs/cluster.md, "Leases".
//!
//! - **Taking**: a router that does not hold the lease tries to create the key every
//!   [`POLL`]; JetStream creates it only when it is absent (never written, deleted by
//!   a clean stop, or dropped by `max_age` after its holder stopped renewing), so one
//!   router wins. A key holding this router's own name (written before a restart, or
//!   before it stepped down while NATS was away) is taken back at once.
//! - **Keeping**: the holder rewrites the key every [`RENEW`], naming the revision it
//!   wrote last (compare-and-set): a refusal means the key expired and another router
//!   took it, so the lease is lost.
//! - **Stepping down**: a holder whose last successful renewal was sent more than
//!   [`STEP_DOWN`] ago gives the lease up on its own, before the key can expire
//!   ([`LEASE_TTL`] after the server stored that renewal, which was after it was
//!   sent): so the next holder cannot start before this one stopped, with no clock
//!   compared across machines.
//!
//! A holder that dies is replaced once its key expired: after at most [`LEASE_TTL`],
//! plus up to [`POLL`] for a router to notice, plus however long the new holder needs
//! to connect.

use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::names;
use crate::core::shared::lease::{Holder, Lease, LeaseAsk};

/// How long a lease outlives its holder's last renewal (the bucket's `max_age`).
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the holder renews the lease.
const RENEW: Duration = Duration::from_secs(1);
/// How long after its last successful renewal a holder steps down (well before the
/// key can expire).
const STEP_DOWN: Duration = Duration::from_secs(3);
/// How often a router not holding a lease tries to take it.
pub const POLL: Duration = Duration::from_millis(500);
/// How long one request to the bucket may take.
const ASK: Duration = Duration::from_secs(1);

/// Starts contending for lease `name` as `node`, for as long as the returned lease is
/// not released or dropped.
pub fn contend(kv: kv::Store, node: String, name: &str, runtime: &tokio::runtime::Handle) -> Lease {
    let (tx, rx) = watch::channel(Holder::Unknown);
    let (asks, asked) = mpsc::unbounded_channel();
    let keeper = Keeper {
        kv,
        node,
        name: name.to_owned(),
        key: names::kv_key(name),
        holder: tx,
    };
    runtime.spawn(keeper.run(asked));
    Lease::kept(name, rx, asks)
}

/// One lease's task (see the module docs).
struct Keeper {
    kv: kv::Store,
    node: String,
    name: String,
    /// The key; `None` when the name is too long for one (never taken, logged).
    key: Option<String>,
    holder: watch::Sender<Holder>,
}

/// The held lease: the revision last written, and when that write was sent.
type Held = (u64, Instant);

impl Keeper {
    async fn run(self, mut asked: mpsc::UnboundedReceiver<LeaseAsk>) {
        let Some(key) = self.key.clone() else {
            tracing::error!(lease = %self.name, "cluster: lease name too long for a key; never taken");
            while asked.recv().await.is_some() {}
            return;
        };
        let mut held: Option<Held> = None;
        let mut next = Instant::now();
        loop {
            tokio::select! {
                ask = asked.recv() => match ask {
                    Some(LeaseAsk::StepAside(pause)) => {
                        tracing::info!(lease = %self.name, pause_ms = pause.as_millis() as u64, "cluster: stepping aside: another router may take the lease");
                        self.give_up(&key, held.take()).await;
                        next = Instant::now() + pause;
                        continue;
                    }
                    Some(LeaseAsk::Release(done)) => {
                        self.give_up(&key, held).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.give_up(&key, held).await;
                        return;
                    }
                },
                () = tokio::time::sleep_until(next) => {}
            }
            held = match held {
                Some(h) => self.renew(&key, h).await,
                None => self.take(&key).await,
            };
            next = Instant::now() + if held.is_some() { RENEW } else { POLL };
        }
    }

    fn tell(&self, h: Holder) {
        self.holder.send_if_modified(|now| {
            let changed = *now != h;
            *now = h;
            changed
        });
    }

    /// Tries to take the lease; learns who holds it otherwise.
    async fn take(&self, key: &str) -> Option<Held> {
        let sent = Instant::now();
        let created =
            tokio::time::timeout(ASK, self.kv.create(key, self.node.clone().into())).await;
        match created {
            Ok(Ok(revision)) => return Some(self.taken(revision, sent)),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Ok(Err(e)) => {
                tracing::debug!(lease = %self.name, error = %e, "cluster: cannot ask for a lease");
                self.tell(Holder::Unknown);
                return None;
            }
            Err(_) => {
                self.tell(Holder::Unknown);
                return None;
            }
        }
        let entry = match tokio::time::timeout(ASK, self.kv.entry(key)).await {
            Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => e,
            // Gone meanwhile: the next poll takes it.
            _ => {
                self.tell(Holder::Unknown);
                return None;
            }
        };
        let who = String::from_utf8_lossy(&entry.value).into_owned();
        if who != self.node {
            self.tell(Holder::Other(who));
            return None;
        }
        // Ours from before (a restart, or a step-down while NATS was away): take it
        // back, unless another router's write came first.
        let sent = Instant::now();
        match tokio::time::timeout(
            ASK,
            self.kv
                .update(key, self.node.clone().into(), entry.revision),
        )
        .await
        {
            Ok(Ok(revision)) => Some(self.taken(revision, sent)),
            _ => None,
        }
    }

    fn taken(&self, revision: u64, sent: Instant) -> Held {
        tracing::info!(lease = %self.name, "cluster: lease taken; this router holds it");
        self.tell(Holder::Us);
        (revision, sent)
    }

    /// Renews the held lease; steps down when that cannot be done in time.
    async fn renew(&self, key: &str, (revision, renewed): Held) -> Option<Held> {
        let sent = Instant::now();
        let update = self.kv.update(key, self.node.clone().into(), revision);
        match tokio::time::timeout_at(renewed + STEP_DOWN, update).await {
            Ok(Ok(revision)) => Some((revision, sent)),
            Ok(Err(e)) if super::claims::is_wrong_revision(&e) => {
                tracing::warn!(lease = %self.name, "cluster: lease lost: it expired and another router took it");
                self.tell(Holder::Unknown);
                None
            }
            Ok(Err(e)) if renewed.elapsed() < STEP_DOWN => {
                tracing::debug!(lease = %self.name, error = %e, "cluster: cannot renew a lease yet");
                Some((revision, renewed))
            }
            _ => {
                tracing::warn!(
                    lease = %self.name,
                    after_ms = renewed.elapsed().as_millis() as u64,
                    "cluster: cannot renew a lease; stepping down before it expires"
                );
                self.tell(Holder::Unknown);
                None
            }
        }
    }

    /// Deletes the key if held, so the next router takes it at once.
    async fn give_up(&self, key: &str, held: Option<Held>) {
        self.tell(Holder::Unknown);
        let Some((revision, _)) = held else {
            return;
        };
        match tokio::time::timeout(ASK, self.kv.delete_expect_revision(key, Some(revision))).await {
            Ok(Ok(())) => tracing::info!(lease = %self.name, "cluster: lease released"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.name, error = %e, "cluster: cannot release a lease; it expires on its own");
            }
            Err(_) => {
                tracing::warn!(lease = %self.name, "cluster: releasing a lease timed out; it expires on its own");
            }
        }
    }
}

/// Every lease's holder now, for `GET /cluster`: (lease name, holder node).
pub async fn holders(kv: &kv::Store) -> Result<Vec<(String, String)>, String> {
    use futures::StreamExt;
    let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if let Ok(Some(v)) = kv.get(&key).await {
            let name = names::from_kv_key(&key).unwrap_or(key);
            out.push((name, String::from_utf8_lossy(&v).into_owned()));
        }
    }
    out.sort();
    Ok(out)
}
