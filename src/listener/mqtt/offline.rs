//! A session no client holds: its delayed will, published once the delay has passed,
//! and its end at its expiry. Both run on the router holding the session's record:
//! the one its client left, or, clustered, the one that took a dead router's record
//! over ([`super::orphans`]). A client taking the session back cancels both
//! (`pending`, the entry's token).
//!
//! Clustered, the record decides, not this router's memory: the will goes out only
//! once the record was rewritten without it over the revision this router holds, and
//! the session ends only once its record was removed at that revision. A client that
//! resumed the session on another router meanwhile moved the revision, so neither
//! happens (MQTT 5 §3.1.2.8: a connection before the delay has passed means no will);
//! and of two routers, only the one holding the revision acts, so each happens once.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::Publish;
use super::persist;
use super::state::MqttState;
use crate::core::shared::claims::ClaimError;
use crate::core::{Destination, Origin};
use crate::listener::mqtt::convert::{publish_destination, publish_to_message};
use crate::translate::mqtt_names::session_queue;
use crate::translate::traffic::{self, Protocol};

/// A will waiting for its delay.
#[derive(Debug)]
pub struct DelayedWill {
    pub publish: Publish,
    /// The user it is published as.
    pub user: String,
    /// From when the task starts.
    pub after: Duration,
}

/// What the record says besides the will, to write it again without the will.
#[derive(Debug, Clone)]
pub struct Record {
    pub owner: String,
    /// Session expiry interval, seconds.
    pub expiry: u32,
    /// When the offline session expires (`None`: never).
    pub expires_at: Option<SystemTime>,
}

/// Runs the offline session of `client_id`: `will` after its delay, then its end after
/// `expire_after` (`None`: never), both from now, unless `pending` is cancelled first.
/// `durable_queue`: its queue may be in the cluster though this router never opened it.
pub fn spawn(
    state: Arc<MqttState>,
    client_id: Arc<str>,
    pending: CancellationToken,
    will: Option<(DelayedWill, Record)>,
    expire_after: Option<Duration>,
    durable_queue: bool,
) {
    let start = Instant::now();
    tokio::spawn(async move {
        if let Some((w, record)) = will {
            tokio::select! {
                _ = pending.cancelled() => {
                    tracing::debug!(client_id = &*client_id, "delayed will cancelled: the client came back");
                    return;
                }
                _ = tokio::time::sleep_until(start + w.after) => {}
            }
            if !settle_will(&state, &client_id, &record).await {
                return;
            }
            publish_will(&state, &w.user, w.publish).await;
        }
        let Some(after) = expire_after else { return };
        tokio::select! {
            _ = pending.cancelled() => {}
            _ = tokio::time::sleep_until(start + after) => {
                expire(&state, &client_id, durable_queue).await;
            }
        }
    });
}

/// Clustered: rewrites the record without its will over the revision this router
/// holds; `false` when the session moved meanwhile (no will then). Alone: `true`.
async fn settle_will(state: &MqttState, client_id: &str, record: &Record) -> bool {
    let Some(claims) = state.router.core().claims() else {
        return true;
    };
    let (claim, bytes) = {
        let sessions = state.sessions();
        let Some(e) = sessions.get(client_id).filter(|e| e.holder.is_none()) else {
            return false;
        };
        let Some(claim) = e.claim.clone() else {
            return true;
        };
        let d = e.data.lock().unwrap_or_else(PoisonError::into_inner);
        match persist::encode_session(&record.owner, &d, record.expiry, record.expires_at, None) {
            Ok(b) => (claim, b),
            Err(_) => return true,
        }
    };
    match super::roaming::write_over(&claims, client_id, bytes, &claim).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(
                client_id,
                "delayed will not published: the session was resumed on another router"
            );
            false
        }
        Err(e) => {
            // Whether the client came back elsewhere cannot be told: a will published
            // twice is better than one lost.
            tracing::warn!(client_id, error = %e, "cluster: delayed will published without checking the session's record");
            true
        }
    }
}

/// Ends the offline session of `client_id` if no client took it: clustered, only once
/// its record was removed at the revision this router holds.
async fn expire(state: &MqttState, client_id: &str, durable_queue: bool) {
    let claim = {
        let sessions = state.sessions();
        match sessions.get(client_id) {
            Some(e) if e.holder.is_none() => e.claimed(),
            _ => {
                tracing::debug!(client_id, "session expiry due, but a client holds it");
                return;
            }
        }
    };
    tracing::debug!(client_id, claim, "session expiry due");
    if let (Some(claims), Some(revision)) = (state.router.core().claims(), claim) {
        match claims.remove(client_id, revision).await {
            Ok(()) => {}
            Err(ClaimError::Changed) => {
                tracing::debug!(
                    client_id,
                    "session not expired: it was resumed on another router"
                );
                return;
            }
            // Its queue goes anyway: the record left behind says the session expired,
            // which the next claim (or this router's sweep) settles.
            Err(e) => {
                tracing::warn!(client_id, error = %e, "cluster: expired session's record not removed")
            }
        }
    }
    let gone = {
        let mut sessions = state.sessions();
        match sessions.get(client_id) {
            Some(e) if e.holder.is_none() && e.claimed() == claim => sessions.remove(client_id),
            // A client took the session here meanwhile.
            Some(_) => return,
            // Clustered, this router may have seen its own removal of the record first
            // (a removal names no router): the session is forgotten here already.
            None => None,
        }
    };
    if let Some(e) = gone {
        state.release_session(&e.data.lock().unwrap_or_else(PoisonError::into_inner));
    }
    let queue = session_queue(client_id);
    let core = state.router.core();
    if durable_queue && core.queue(&queue).is_none() {
        // Never opened here (the session was another router's): open it to delete it.
        let _ = core.declare_queue(
            &queue,
            Some(super::session::session_queue_options(state, true)),
        );
    }
    core.delete_queue(&queue);
    if claim.is_none() {
        persist::forget_session(state, client_id, None);
    }
    tracing::info!(client_id, "session expired");
}

/// Publishes a will as `user` (its topic was allowed at CONNECT; the caller checked
/// again when it could).
pub async fn publish_will(state: &Arc<MqttState>, user: &str, w: Publish) {
    let dest = publish_destination(&w.topic);
    let m = publish_to_message(&w, Origin::new("mqtt", user));
    let retained = w.retain.then(|| Arc::new(m.clone()));
    let bytes = m.body.len() as u64;
    match state.router.publish(dest.clone(), m).await {
        Ok(n) => {
            traffic::received(Protocol::Mqtt, 1, bytes);
            tracing::info!(topic = %w.topic, subscribers = n, "will published");
            if let (Some(m), Destination::Topic(t)) = (retained, &dest) {
                let _ = state.retain(t, m);
            }
        }
        Err(e) => tracing::warn!(topic = %w.topic, error = %e, "will could not be published"),
    }
}
