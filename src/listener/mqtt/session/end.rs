//! How a connection ends: the DISCONNECT said (5.0), the session kept or dropped, the
//! will published (at once or after its delay), an offline session expired.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use std::time::SystemTime;

use futures::SinkExt;
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::reason_code;
use super::transport::Transport;
use crate::listener::mqtt::codec::{Out, Version};
use crate::listener::mqtt::convert::publish_destination;
use crate::listener::mqtt::state::MqttState;
use crate::listener::mqtt::{offline, persist};
use crate::translate::mqtt_names::session_queue;

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
        // Give the core back what the client did not acknowledge; QoS 2 deliveries of
        // shared queues awaiting PUBCOMP stay held for the session (see `release`).
        let mut retired = self.retire_consumers(|_| true);
        let taken_over = ended.code == Some(reason_code::SESSION_TAKEN_OVER);
        // MQTT 5 §3.1.2.8: a new connection to the session before the will delay has
        // passed means no will; with no delay the will goes out at once.
        let will = match self.will.take() {
            Some(w) if ended.will && !(taken_over && w.delay > 0) => Some(w),
            _ => None,
        };
        let will = will.filter(|w| {
            let allowed = self
                .principal
                .can_publish(&publish_destination(&w.publish.topic));
            if !allowed {
                tracing::warn!(topic = %w.publish.topic, "will not published: its topic is no longer allowed");
            }
            allowed
        });
        let state = Arc::clone(&self.state);
        let client_id = self.client_id.clone();
        let queue = session_queue(&self.client_id);
        let expiry = self.session_expiry;
        let pending = CancellationToken::new();
        let now = SystemTime::now();
        let user = self.principal.name().to_owned();
        // A will with a delay waits (in the session's record too, clustered: if this
        // router dies meanwhile, another publishes it); one without goes out now.
        let delay =
            Duration::from_secs(u64::from(will.as_ref().map_or(0, |w| w.delay.min(expiry))));
        let (delayed, at_once) = match will {
            Some(w) if !delay.is_zero() => (Some(w), None),
            w => (None, w),
        };
        let record = offline::Record {
            owner: user.clone(),
            expiry,
            expires_at: persist::deadline(expiry, Some(now)),
        };
        {
            let mut sessions = state.sessions();
            if let Some(entry) = sessions.get_mut(&client_id)
                && entry
                    .holder
                    .as_ref()
                    .is_some_and(|h| Arc::ptr_eq(&h.handoff, &self.handoff))
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
                        Some(now),
                        delayed.as_deref().map(|w| persist::WillRecord {
                            will: w,
                            user: &user,
                            due: Some(now + delay),
                        }),
                        entry.claim.as_ref(),
                    );
                }
            }
        }
        {
            // Whichever connection holds the session next on this router sends their
            // PUBRELs again, so it keeps what awaits their PUBCOMP; a session gone from
            // here (ended, started clean, claimed by another router) gives it back.
            let sessions = state.sessions();
            if let Some(entry) = sessions.get(&client_id)
                && Arc::ptr_eq(&entry.data, &self.data)
            {
                self.data().adopt(std::mem::take(&mut retired));
            }
        }
        drop(retired);
        self.handoff.set_gone(&state);
        if let Some(w) = at_once {
            let st = Arc::clone(&state);
            let user = user.clone();
            tokio::spawn(async move { offline::publish_will(&st, &user, w.publish).await });
        }
        let expire_after =
            (expiry != 0 && expiry != u32::MAX).then(|| Duration::from_secs(u64::from(expiry)));
        let will = delayed.map(|w| {
            let d = offline::DelayedWill {
                publish: w.publish,
                user,
                after: delay,
            };
            (d, record)
        });
        if will.is_some() || expire_after.is_some() {
            offline::spawn(state, client_id, pending, will, expire_after, true);
        }
    }
}

/// Ends an offline session after `after` unless a client takes it first (`pending`
/// cancelled).
pub(in crate::listener::mqtt) fn spawn_expiry(
    state: Arc<MqttState>,
    client_id: Arc<str>,
    pending: CancellationToken,
    after: Duration,
) {
    offline::spawn(state, client_id, pending, None, Some(after), true);
}
