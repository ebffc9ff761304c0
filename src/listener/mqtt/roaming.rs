//! Sessions that move between routers, when the core is one router of a cluster (the
//! core's [`Claims`]; alone, none of this runs and sessions live in the store).
//!
//! A session's record (its owner, subscriptions and expiry, as [`super::persist`]
//! encodes them) is a claim keyed by client id, written by the router serving it:
//!
//! - **CONNECT** ([`claim`]) reads the record and writes it back as this router's,
//!   naming the revision it read: a compare-and-set, so of two routers claiming one
//!   client id at once one is refused, reads again and claims after the other. A
//!   record another router wrote (or one this router no longer knows) is the session
//!   to resume: its subscriptions replace what this router remembered. A record of
//!   another user refuses the connection, as on one router.
//! - **Every router follows the records** ([`start`]): when one of its sessions is
//!   claimed by another router (a later revision), the connection holding it is told
//!   it was taken over (MQTT 5: DISCONNECT 0x8E) and the session is forgotten here —
//!   not ended: its queue lives on in the cluster, where the new router consumes it.
//! - **Changes** of subscriptions and the session's end ([`save`], [`forget`]) are
//!   written against the revision this router claimed; refused, they are dropped (the
//!   session moved meanwhile, and its new router is the one that writes).
//!
//! No lease: a router that died holds nothing, the next claim replaces its record.
//! What a dead router can no longer do (publish its clients' wills, end their sessions
//! at their expiry) is in its records — the will of a connected client, a delayed will
//! pending, the expiry deadline — and another router takes those records over
//! ([`super::orphans`]), then does it ([`super::offline`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::persist;
use super::state::{Leave, MqttState, SessionData, Sub};
use crate::core::Core;
use crate::core::shared::claims::{ClaimError, Claims};
use crate::store::{StoreError, StoreWait};
use crate::translate::mqtt_names::{is_share_queue, session_queue};

/// Claims tried before a connection is refused: each refusal means another router
/// claimed in between, so more than a few means a client id fought over in a loop.
const ATTEMPTS: usize = 5;

/// Why a claim was refused.
#[derive(Debug)]
pub enum Refused {
    /// The session belongs to another user.
    Owner(String),
    /// The cluster cannot be asked now.
    Unavailable(String),
}

/// A claimed client id.
#[derive(Debug)]
pub struct Claimed {
    /// The revision this router's claim has.
    pub revision: u64,
    /// The session's subscriptions as the cluster had them, when this router did not
    /// serve it last: what to restore here (empty for a clean start or an expired
    /// session).
    pub restored: Option<BTreeMap<String, Sub>>,
    /// A persistent session was there to resume.
    pub existed: bool,
    /// A persistent session's queue may be in the cluster but must not be resumed (a
    /// clean start, or it expired while its router was gone): delete it.
    pub discard_queue: bool,
    /// The will of the session's previous connection, due already: its router died
    /// with the will due (no delay, or a delay already passed) before any router
    /// took the record over. The claim replaced the record, so publishing it falls to
    /// this router.
    pub due_will: Option<persist::DecodedWill>,
}

/// Claims `client_id` for `owner` (see the module docs).
pub async fn claim(
    state: &MqttState,
    claims: &Arc<dyn Claims>,
    client_id: &str,
    owner: &str,
    clean_start: bool,
    expiry: u32,
    will: Option<persist::WillRecord<'_>>,
) -> Result<Claimed, Refused> {
    let unavailable = |e: ClaimError| Refused::Unavailable(e.to_string());
    for _ in 0..ATTEMPTS {
        let record = claims.read(client_id).await.map_err(unavailable)?;
        let revision = record.as_ref().map_or(0, |r| r.revision);
        let mine = record.as_ref().is_some_and(|r| r.node == claims.node());
        let stored = match record.as_ref().filter(|r| !r.node.is_empty()) {
            Some(r) => match persist::decode_session(&r.value, SystemTime::now()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(client_id, error = %e, "cluster: unreadable session record; replaced");
                    None
                }
            },
            None => None,
        };
        let previous_will = stored
            .as_ref()
            .filter(|_| !mine)
            .and_then(|s| s.will.clone());
        if let Some(o) = stored.as_ref().and_then(|s| s.owner.as_deref())
            && o != owner
        {
            return Err(Refused::Owner(o.to_owned()));
        }
        // This router's own state is the session's while the record is one it wrote:
        // the revision it claimed or a later one. Its saves (`write_over`) advance
        // `claim` only once the write has returned, so a connection claiming in between
        // reads a newer record of this router than `claim` says; taking it for another
        // router's replaced the session's state with the record's (PUBRELs owed and the
        // QoS 2 deliveries held for them lost, the messages sent again as new). Any
        // other writer in between would have failed that save's conditional write.
        let local = {
            let sessions = state.sessions();
            sessions.get(client_id).and_then(|e| {
                let claimed = e.claim.as_ref()?.load(Ordering::Acquire);
                (mine && claimed != 0 && claimed <= revision && !e.adopted).then(|| {
                    e.data
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .subs
                        .clone()
                })
            })
        };
        let expired = stored
            .as_ref()
            .is_some_and(|s| s.left.is_some_and(|l| l.is_zero()));
        let persistent = stored.as_ref().is_some_and(|s| s.expiry > 0) && !expired;
        let (subs, restored) = match (clean_start || expired, local) {
            (true, _) => (BTreeMap::new(), Some(BTreeMap::new())),
            (false, Some(subs)) => (subs, None),
            (false, None) => {
                let subs = stored.map(|s| s.subs).unwrap_or_default();
                (subs.clone(), Some(subs))
            }
        };
        let data = SessionData::with_subs(subs);
        let value = persist::encode_session(owner, &data, expiry, None, will)
            .map_err(|e| Refused::Unavailable(e.to_string()))?;
        match claims.write(client_id, value.into(), revision).await {
            Ok(revision) => {
                let writer = record.as_ref().map_or("", |r| r.node.as_str());
                return Ok(Claimed {
                    revision,
                    restored,
                    existed: persistent && !clean_start,
                    discard_queue: (clean_start || expired)
                        && stored_had_queue(record.is_some(), expired, persistent),
                    due_will: due_will(claims, writer, previous_will).await,
                });
            }
            Err(ClaimError::Changed) => {
                tracing::debug!(
                    client_id,
                    "cluster: session claimed elsewhere meanwhile; reading it again"
                );
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
    Err(Refused::Unavailable(format!(
        "client id {client_id} claimed by other routers {ATTEMPTS} times in a row"
    )))
}

/// The will a claim took from another router's record, if it is due and no one else
/// will publish it: a delayed will whose time has come (its router, alive, finds the
/// record claimed and leaves it), or the will of a client connected to a router that
/// is dead (alive, that router publishes it when the connection is taken over).
async fn due_will(
    claims: &Arc<dyn Claims>,
    writer: &str,
    will: Option<persist::DecodedWill>,
) -> Option<persist::DecodedWill> {
    let w = will?;
    match w.left {
        Some(left) => left.is_zero().then_some(w),
        None if w.will.delay == 0 => {
            let live = claims.live_nodes().await.ok()?;
            (!live.iter().any(|n| n == writer)).then_some(w)
        }
        None => None,
    }
}

/// Whether a record points at a session queue that may be in the cluster.
fn stored_had_queue(record: bool, expired: bool, persistent: bool) -> bool {
    record && (expired || persistent)
}

/// Makes the bindings of a session queue restored here exactly the session's
/// (non-shared) subscriptions: this router may still know it bound otherwise.
pub fn rebind(core: &Core, queue: &str, data: &SessionData) {
    let want: BTreeSet<String> = data
        .subs
        .values()
        .filter(|s| s.shared_queue.is_none())
        .map(|s| s.pattern.as_str().to_owned())
        .collect();
    for p in core.bindings(queue) {
        if !want.contains(&p) {
            let _ = core.unbind(queue, &p);
        }
    }
    for p in &want {
        if let Err(e) = core.bind(queue, p) {
            tracing::warn!(queue, pattern = %p, error = %e, "cluster: session subscription not restored");
        }
    }
}

/// Joins the `$share` groups of restored subscriptions.
pub fn join_groups(state: &MqttState, subs: &BTreeMap<String, Sub>) {
    for s in subs.values() {
        if let Some(q) = &s.shared_queue
            && is_share_queue(q)
        {
            state.share_join(q);
        }
    }
}

/// Writes a session's record (encoded) over the revision this router claimed (`claim`,
/// advanced when written).
pub fn save(
    claims: Arc<dyn Claims>,
    client_id: &str,
    bytes: Vec<u8>,
    claim: &Arc<AtomicU64>,
) -> StoreWait {
    if claim.load(Ordering::Acquire) == 0 {
        return StoreWait::Done(Ok(()));
    }
    let claim = Arc::clone(claim);
    let (tx, rx) = oneshot::channel();
    let client_id = client_id.to_owned();
    tokio::spawn(async move {
        let r = match write_over(&claims, &client_id, bytes, &claim).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::debug!(
                    client_id,
                    "cluster: session record not written: another router claimed it"
                );
                Ok(())
            }
            Err(ClaimError::Unavailable(e)) => Err(StoreError::Unavailable(e)),
            Err(ClaimError::Changed) => Ok(()),
        };
        let _ = tx.send(r);
    });
    StoreWait::Pending(rx)
}

/// Writes `bytes` as the record of `client_id` over the revision in `claim` (advanced
/// when written): `Ok(false)` when another router claimed it meanwhile.
pub async fn write_over(
    claims: &Arc<dyn Claims>,
    client_id: &str,
    bytes: Vec<u8>,
    claim: &AtomicU64,
) -> Result<bool, ClaimError> {
    let base = claim.load(Ordering::Acquire);
    if base == 0 {
        return Ok(false);
    }
    match claims.write(client_id, bytes.into(), base).await {
        Ok(revision) => {
            let _ = claim.compare_exchange(base, revision, Ordering::AcqRel, Ordering::Acquire);
            tracing::debug!(client_id, revision, "cluster: session record written");
            Ok(true)
        }
        Err(ClaimError::Changed) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the record of a session that ended here for good, if it is still the one
/// this router claimed at `revision`.
pub fn forget(claims: Arc<dyn Claims>, client_id: &str, revision: Option<u64>) {
    let Some(revision) = revision.filter(|r| *r != 0) else {
        return;
    };
    let remove = claims.remove(client_id, revision);
    let client_id = client_id.to_owned();
    tokio::spawn(async move {
        match remove.await {
            Ok(()) | Err(ClaimError::Changed) => {}
            Err(e) => {
                tracing::warn!(client_id, error = %e, "cluster: ended session's record not removed")
            }
        }
    });
}

/// Follows the records: a session of this router claimed by another is taken over
/// here (see the module docs). Called once, when the MQTT state is made.
pub fn start(state: &Arc<MqttState>) {
    let Some(claims) = state.router.core().claims() else {
        return;
    };
    super::orphans::start(state, &claims);
    let mut changes = claims.watch();
    let me = claims.node().to_owned();
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            let Some(state) = state.upgrade() else { return };
            if change.node.as_deref() == Some(me.as_str()) {
                continue;
            }
            taken_elsewhere(&state, &change.key, change.revision);
        }
    });
}

/// Reads the record of a client id just claimed at `revision` once more: a later
/// claim by another router whose change arrived before this router recorded its own
/// claim would otherwise go unnoticed.
pub fn recheck(state: &Arc<MqttState>, client_id: &Arc<str>, revision: u64) {
    let Some(claims) = state.router.core().claims() else {
        return;
    };
    let read = claims.read(client_id);
    let me = claims.node().to_owned();
    let state = Arc::clone(state);
    let client_id = Arc::clone(client_id);
    tokio::spawn(async move {
        if let Ok(Some(r)) = read.await
            && r.revision > revision
            && r.node != me
        {
            taken_elsewhere(&state, &client_id, r.revision);
        }
    });
}

/// Another router wrote (or removed) the record of `client_id` at `revision`.
fn taken_elsewhere(state: &Arc<MqttState>, client_id: &str, revision: u64) {
    let gone = {
        let mut sessions = state.sessions();
        let later = sessions.get(client_id).is_some_and(|e| {
            e.claim.as_ref().is_some_and(|c| {
                let mine = c.load(Ordering::Acquire);
                mine != 0 && mine < revision
            })
        });
        if later {
            sessions.remove(client_id)
        } else {
            None
        }
    };
    let Some(entry) = gone else { return };
    // A delayed will and the expiry belong to the session, which goes on elsewhere.
    if let Some(p) = &entry.pending {
        p.cancel();
    }
    {
        let mut data = entry.data.lock().unwrap_or_else(PoisonError::into_inner);
        state.release_session(&data);
        // QoS 2 deliveries awaiting PUBCOMP go back to the cluster: the new router
        // delivers them again (it does not know their PUBRELs). The connection holding
        // the session, if any, gives back its own when it ends (the session is no
        // longer here for it to hand them to).
        data.flows_mut().retired.clear();
    }
    let queue = session_queue(client_id);
    let client_id: Arc<str> = client_id.into();
    match entry.holder {
        Some(holder) => {
            tracing::info!(
                client_id = &*client_id,
                "session taken over by another router"
            );
            holder.kick(Leave::TakenOver);
            let state = Arc::clone(state);
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), state.wait_gone(&holder.handoff))
                        .await;
                unload(&state, &client_id, &queue);
            });
        }
        None => unload(state, &client_id, &queue),
    }
}

/// Forgets the session queue here (the cluster keeps it) unless a connection to this
/// router claimed the session back meanwhile.
fn unload(state: &MqttState, client_id: &str, queue: &str) {
    if !state.sessions().contains_key(client_id) {
        state.router.core().unload_queue(queue);
    }
}
