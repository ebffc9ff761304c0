//! Clustered: the sessions of a dead router. Its records (see [`super::roaming`]) still
//! say what it would have done: publish the will of a client connected to it (or a
//! delayed will pending), end an offline session at its expiry. Every router sweeps
//! the records every [`SWEEP`]; one whose writer is no longer among the routers alive
//! ([`Claims::live_nodes`]) is an orphan, which the router claims by compare-and-set
//! over the revision it saw: of all the routers sweeping, exactly one wins, and the
//! session becomes an offline session of that router ([`super::offline`] publishes the
//! will after its delay and ends the session at its expiry; a client resuming it
//! anywhere cancels both, as it would on the router it left).
//!
//! Timing (docs/cluster.md, "Sessions of a dead router"): a router is seen dead once
//! its membership key expired, 4 to 6 s after its death (the key lives 6 s and is
//! refreshed every 2 s), plus up to one sweep. The will delay and the expiry then
//! count from that moment: the dead router's clients cannot tell when it died.
//!
//! A router that restarted under the same name finds records naming itself that it
//! no longer holds: those are orphans too, once two sweeps in a row found them so (a
//! claim this router is writing right now is held a moment later).
//!
//! A router that does not see itself alive (cut from the cluster) judges no one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::offline::{self, DelayedWill, Record};
use super::persist::{self, WillRecord};
use super::state::{MqttState, SessionData, SessionEntry};
use crate::core::shared::claims::{ClaimError, Claims};

/// How often every router looks for orphaned records.
pub const SWEEP: Duration = Duration::from_secs(1);

/// How long a query of the routers alive may take.
const LIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the sweep (see the module docs). Called once, with the MQTT state.
pub fn start(state: &Arc<MqttState>, claims: &Arc<dyn Claims>) {
    let mut changes = claims.watch();
    let claims = Arc::clone(claims);
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        // Each record's writer and revision, as the watch says.
        let mut records: HashMap<String, (String, u64)> = HashMap::new();
        let mut suspects = HashSet::new();
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(c) = change else { return };
                    match c.node.filter(|n| !n.is_empty()) {
                        Some(node) => records.insert(c.key, (node, c.revision)),
                        None => records.remove(&c.key),
                    };
                }
                _ = tick.tick() => {
                    let Some(state) = state.upgrade() else { return };
                    let orphans = find(&state, &claims, &records, &mut suspects).await;
                    for (client_id, node, revision) in orphans {
                        adopt(&state, &claims, &client_id, &node, revision).await;
                    }
                }
            }
        }
    });
}

/// The orphaned records among `records`: (client id, writer, revision).
async fn find(
    state: &MqttState,
    claims: &Arc<dyn Claims>,
    records: &HashMap<String, (String, u64)>,
    suspects: &mut HashSet<(String, u64)>,
) -> Vec<(String, String, u64)> {
    if records.is_empty() {
        return Vec::new();
    }
    let live: HashSet<String> = match tokio::time::timeout(LIVE_TIMEOUT, claims.live_nodes()).await
    {
        Ok(Ok(l)) => l.into_iter().collect(),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cluster: routers alive unknown; no sweep");
            return Vec::new();
        }
        Err(_) => return Vec::new(),
    };
    let me = claims.node();
    if !live.contains(me) {
        return Vec::new();
    }
    let mut orphans = Vec::new();
    let mut next = HashSet::new();
    let sessions = state.sessions();
    for (key, (node, revision)) in records {
        if node == me {
            let held = sessions
                .get(key.as_str())
                .is_some_and(|e| e.claimed().is_some_and(|c| c >= *revision));
            if held {
                continue;
            }
            let suspect = (key.clone(), *revision);
            if suspects.contains(&suspect) {
                orphans.push((key.clone(), node.clone(), *revision));
            } else {
                next.insert(suspect);
            }
        } else if !live.contains(node) {
            orphans.push((key.clone(), node.clone(), *revision));
        }
    }
    *suspects = next;
    orphans
}

/// Claims the orphaned record of `client_id` (at `revision`, written by the dead
/// router `dead`) and runs its session here as an offline one.
async fn adopt(
    state: &Arc<MqttState>,
    claims: &Arc<dyn Claims>,
    client_id: &str,
    dead: &str,
    revision: u64,
) {
    let record = match claims.read(client_id).await {
        Ok(Some(r)) if r.revision == revision && !r.node.is_empty() => r,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(client_id, error = %e, "cluster: orphaned session not read");
            return;
        }
    };
    if state
        .sessions()
        .get(client_id)
        .is_some_and(|e| e.holder.is_some())
    {
        return;
    }
    let now = SystemTime::now();
    let stored = match persist::decode_session(&record.value, now) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client_id, error = %e, "cluster: orphaned session record unreadable; removed");
            let _ = claims.remove(client_id, revision).await;
            return;
        }
    };
    let owner = stored.owner.clone().unwrap_or_default();
    let expiry = stored.expiry;
    // An offline session keeps its deadline; a connected one went offline now.
    let expires_at = match stored.left {
        Some(left) => Some(now + left),
        None => persist::deadline(expiry, Some(now)),
    };
    let will = stored.will.map(|w| {
        let after = w
            .left
            .unwrap_or_else(|| Duration::from_secs(u64::from(w.will.delay.min(expiry))));
        (w, after)
    });
    let data = SessionData::with_subs(stored.subs);
    let bytes = persist::encode_session(
        &owner,
        &data,
        expiry,
        expires_at,
        will.as_ref().map(|(w, after)| WillRecord {
            will: &w.will,
            user: &w.user,
            due: Some(now + *after),
        }),
    );
    let Ok(bytes) = bytes else { return };
    let claimed = match claims.write(client_id, bytes.into(), revision).await {
        Ok(r) => r,
        Err(ClaimError::Changed) => return,
        Err(e) => {
            tracing::debug!(client_id, error = %e, "cluster: orphaned session not claimed");
            return;
        }
    };
    super::roaming::join_groups(state, &data.subs);
    let pending = CancellationToken::new();
    let client_id: Arc<str> = client_id.into();
    let old = state.sessions().insert(
        Arc::clone(&client_id),
        Box::new(SessionEntry {
            owner: (!owner.is_empty()).then(|| owner.as_str().into()),
            data: Arc::new(Mutex::new(data)),
            holder: None,
            pending: Some(pending.clone()),
            claim: Some(Arc::new(AtomicU64::new(claimed))),
            adopted: true,
        }),
    );
    if let Some(old) = old {
        if let Some(p) = &old.pending {
            p.cancel();
        }
        state.release_session(&old.data.lock().unwrap_or_else(PoisonError::into_inner));
    }
    let expire_after = expires_at.map(|at| at.duration_since(now).unwrap_or_default());
    tracing::info!(
        client_id = &*client_id,
        dead,
        will = will.is_some(),
        expires_in_s = expire_after.map(|d| d.as_secs()),
        "cluster: session of a dead router taken over"
    );
    let will = will.map(|(w, after)| {
        let delayed = DelayedWill {
            publish: w.will.publish,
            user: w.user,
            after,
        };
        let record = Record {
            owner,
            expiry,
            expires_at,
        };
        (delayed, record)
    });
    offline::spawn(
        Arc::clone(state),
        client_id,
        pending,
        will,
        expire_after,
        expiry > 0,
    );
}
