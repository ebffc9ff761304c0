//! How a connection ends: the DISCONNECT said (5.0), the session kept or dropped, the
//! will published (at once or after its delay), an offline session expired.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::SinkExt;
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::reason_code;
use super::transport::Transport;
use crate::auth::Principal;
use crate::core::{Destination, Origin};
use crate::listener::mqtt::codec::{Out, Publish, Version};
use crate::listener::mqtt::convert::{publish_destination, publish_to_message};
use crate::listener::mqtt::persist;
use crate::listener::mqtt::state::MqttState;
use crate::translate::mqtt_names::session_queue;
use crate::translate::traffic::{self, Protocol};

/// Why the connection ends.
#[derive(Debug)]
pub(super) struct End {
    /// DISCONNECT reason code sent to a 5.0 client (None: send nothing).
    pub(super) code: Option<u8>,
    pub(super) reason: String,
    /// Publish the will.
    pub(super) will: bool,
}

/// An end told to a 5.0 client as `code`, with the will published.
pub(super) fn end(code: u8, reason: impl Into<String>) -> End {
    End {
        code: Some(code),
        reason: reason.into(),
        will: true,
    }
}

impl<T: Transport> Connection<T> {
    /// Closes the connection and settles what outlives it: the session kept (stored
    /// with its expiry) or dropped, the will, the offline session's expiry.
    pub(super) async fn finish(mut self, ended: End) {
        tracing::info!(client_id = %self.client_id, reason = %ended.reason, "disconnected");
        if let (Some(code), Version::V5) = (ended.code, self.version) {
            let _ = self
                .t
                .send(Out::Disconnect {
                    code,
                    reason: Some(ended.reason.clone()),
                })
                .await;
        }
        let _ = self.t.close().await;
        // Give the core back what the client did not acknowledge.
        self.consumers.clear();
        let taken_over = ended.code == Some(reason_code::SESSION_TAKEN_OVER);
        // MQTT 5 §3.1.2.8: a new connection to the session before the will delay has
        // passed means no will; with no delay the will goes out at once.
        let will = match self.will.take() {
            Some(w) if ended.will && !(taken_over && w.delay > 0) => Some(w),
            _ => None,
        };
        let state = Arc::clone(&self.state);
        let client_id = self.client_id.clone();
        let queue = session_queue(&self.client_id);
        let expiry = self.session_expiry;
        let pending = CancellationToken::new();
        {
            let mut sessions = state.sessions();
            if let Some(entry) = sessions.get_mut(&client_id)
                && entry.holder.as_ref().is_some_and(|h| h.conn == self.conn)
            {
                entry.holder = None;
                if expiry == 0 {
                    let claim = entry.claimed();
                    if let Some(e) = sessions.remove(&client_id) {
                        state.release_session(
                            &e.data.lock().unwrap_or_else(PoisonError::into_inner),
                        );
                    }
                    // A session that was persistent and now ends with expiry 0 goes too.
                    state.router.core().delete_queue(&queue);
                    persist::forget_session(&state, &client_id, claim);
                } else {
                    entry.pending = Some(pending.clone());
                    let d = entry.data.lock().unwrap_or_else(PoisonError::into_inner);
                    let _ = persist::save_session(
                        &state,
                        &client_id,
                        self.principal.name(),
                        &d,
                        expiry,
                        Some(std::time::SystemTime::now()),
                        entry.claim.as_ref(),
                    );
                }
            }
        }
        self.handoff.set_gone(&state);
        if let Some(w) = will {
            let delay = Duration::from_secs(u64::from(w.delay.min(expiry)));
            let st = Arc::clone(&state);
            let p = pending.clone();
            let principal = self.principal.clone();
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::select! {
                        _ = p.cancelled() => {
                            tracing::debug!("delayed will cancelled: the client came back");
                            return;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                publish_will(&st, &principal, w.publish).await;
            });
        }
        if expiry != 0 && expiry != u32::MAX {
            spawn_expiry(
                state,
                client_id,
                queue,
                pending,
                Duration::from_secs(u64::from(expiry)),
            );
        }
    }
}

/// Ends an offline session after `after` unless a client takes it first (`pending`
/// cancelled).
pub(in crate::listener::mqtt) fn spawn_expiry(
    state: Arc<MqttState>,
    client_id: Arc<str>,
    queue: String,
    pending: CancellationToken,
    after: Duration,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = pending.cancelled() => {}
            _ = tokio::time::sleep(after) => {
                let mut sessions = state.sessions();
                if sessions.get(&*client_id).is_some_and(|e| e.holder.is_none()) {
                    let gone = sessions.remove(&*client_id);
                    drop(sessions);
                    let claim = gone.as_ref().and_then(|e| e.claimed());
                    if let Some(e) = gone {
                        state.release_session(&e.data.lock().unwrap_or_else(PoisonError::into_inner));
                    }
                    state.router.core().delete_queue(&queue);
                    persist::forget_session(&state, &client_id, claim);
                    tracing::info!(client_id = &*client_id, "session expired");
                }
            }
        }
    });
}

async fn publish_will(state: &Arc<MqttState>, principal: &Principal, w: Publish) {
    let dest = publish_destination(&w.topic);
    if !principal.can_publish(&dest) {
        return;
    }
    let m = publish_to_message(&w, Origin::new("mqtt", principal.name()));
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
