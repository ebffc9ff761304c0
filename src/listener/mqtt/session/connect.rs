//! CONNECT: client id, login, keep-alive, taking the session over and resuming it;
//! answered with CONNACK.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::alias::{Aliases, OutAliases};
use super::connection::{Accepted, Connection, Source};
use super::reason_code;
use super::stamp::Stamp;
use super::transport::Transport;
use crate::auth::AuthError;
use crate::core::{ConsumeOptions, Consumer, CoreError, QueueOptions};
use crate::listener::confirm::Confirmations;
use crate::listener::connections;
use crate::listener::limit::ConnSlot;
use crate::listener::mqtt::codec::{CodecError, Connect, In, Out, Version};
use crate::listener::mqtt::convert::publish_destination;
use crate::listener::mqtt::persist;
use crate::listener::mqtt::roaming::{self, Refused};
use crate::listener::mqtt::state::{Handoff, Holder, Leave, MqttState, SessionData};
use crate::translate::mqtt_names::session_queue;

/// Options of a session's queue: bounded by `mqtt.max_queued`, oldest dropped first;
/// durable for a persistent session, deleted with the last consumer for a clean one.
pub(in crate::listener::mqtt) fn session_queue_options(
    state: &MqttState,
    persistent: bool,
) -> QueueOptions {
    QueueOptions {
        max_length: state.settings.max_queued,
        overflow: crate::core::Overflow::DropHead,
        durable: persistent,
        auto_delete: !persistent,
        ..state.router.core().config().default_subscription.clone()
    }
}

/// Waits for the first packet, which must be CONNECT; refuses anything else.
pub(super) async fn read_connect<T: Transport>(
    mut t: T,
    state: &Arc<MqttState>,
    cancel: &CancellationToken,
) -> Option<(T, Connect)> {
    let first = tokio::select! {
        _ = cancel.cancelled() => return None,
        r = tokio::time::timeout(state.settings.connect_timeout, t.next()) => r,
    };
    let connect = match first {
        Ok(Some(Ok(In::Connect(c)))) => *c,
        Ok(Some(Ok(other))) => {
            tracing::warn!(packet = ?std::mem::discriminant(&other), "first packet is not CONNECT; closing");
            return None;
        }
        Ok(Some(Err(e))) => {
            tracing::warn!(error = %e, "bad CONNECT; closing");
            // An unknown protocol level: CONNACK "unacceptable protocol level" in the
            // 3.1.1 format, the one every client version understands (3.1.1 §3.2.2.3).
            if let CodecError::Protocol(_) = e {
                let _ = t
                    .send(Out::Raw(bytes::Bytes::from_static(&[
                        0x20, 0x02, 0x00, 0x01,
                    ])))
                    .await;
            }
            // The version is known by now, so the refusal can be said in it.
            if let CodecError::ClientId = e {
                let _ = t
                    .send(Out::ConnAck {
                        session_present: false,
                        code: e.reason_code(),
                        assigned_client_id: None,
                        server_keep_alive: None,
                        receive_max: 0,
                        max_packet_size: None,
                        session_expiry: None,
                        reason: Some(e.to_string()),
                    })
                    .await;
            }
            return None;
        }
        Ok(None) | Err(_) => return None,
    };
    Some((t, connect))
}

/// Answers CONNECT: the connection for the session it opens or takes over, or `None`
/// once refused (CONNACK with the reason, then closed).
pub(super) async fn connect_session<T: Transport>(
    mut t: T,
    state: &Arc<MqttState>,
    accepted: Accepted,
    c: Connect,
    loopback: bool,
    permit: Option<ConnSlot>,
) -> Option<Connection<T>> {
    let v5 = c.version == Version::V5;
    let connack = |code: u8, reason: Option<String>| Out::ConnAck {
        session_present: false,
        code,
        assigned_client_id: None,
        server_keep_alive: None,
        receive_max: 0,
        max_packet_size: None,
        session_expiry: None,
        reason,
    };
    // Client id: an empty one is assigned (3.1.1 only with a clean session).
    let mut assigned = None;
    let client_id: Arc<str> = if c.client_id.is_empty() {
        if !v5 && !c.clean_start {
            let _ = t.send(connack(reason_code::CLIENT_ID_INVALID, None)).await;
            tracing::info!("empty client id with a persistent session refused");
            return None;
        }
        // `sb-` and 96 random bits, not a counter: a persistent session outlives the
        // daemon's counters, and an id another client could predict is one it could take.
        let id = match crate::random::hex_token(12) {
            Ok(token) => format!("sb-{token}"),
            Err(e) => {
                tracing::error!(error = %e, "no randomness for an assigned client id");
                let _ = t.send(connack(reason_code::UNSPECIFIED, None)).await;
                return None;
            }
        };
        assigned = Some(id.clone());
        id.into()
    } else {
        c.client_id.as_str().into()
    };
    tracing::Span::current().record("client_id", &*client_id);
    let password = c
        .password
        .as_ref()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let principal = match state
        .auth
        .login(c.username.as_deref(), password.as_deref(), loopback)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(client_id = &*client_id, user = c.username.as_deref().unwrap_or(""), error = %e, "login refused");
            let code = match e {
                AuthError::BadCredentials => reason_code::BAD_CREDENTIALS,
                AuthError::AnonymousRefused => reason_code::NOT_AUTHORIZED,
            };
            let _ = t.send(connack(code, Some(e.to_string()))).await;
            return None;
        }
    };
    tracing::Span::current().record("user", principal.name());
    if let Some(w) = &c.will
        && !principal.can_publish(&publish_destination(&w.publish.topic))
    {
        tracing::warn!(client_id = &*client_id, topic = %w.publish.topic, "will topic not allowed");
        let _ = t
            .send(connack(
                reason_code::NOT_AUTHORIZED,
                Some("not allowed to publish the will topic".into()),
            ))
            .await;
        return None;
    }

    // Keep-alive: a 5.0 client asking for more than `mqtt.max_keep_alive` (or for none)
    // is told the server's value in the CONNACK; a 3.1.1 client cannot be told, so one
    // asking for more is refused, as Mosquitto does. A 3.1.1 client asking for none is
    // refused only under a maximum the operator lowered from the default (65535 s).
    let max_ka = state.settings.max_keep_alive;
    let keep_alive = if max_ka > 0 && (c.keep_alive == 0 || c.keep_alive > max_ka) {
        if !v5 && c.keep_alive == 0 && max_ka == u16::MAX {
            0
        } else if !v5 {
            tracing::info!(
                client_id = &*client_id,
                keep_alive = c.keep_alive,
                max = max_ka,
                "keep-alive above the maximum refused"
            );
            let _ = t.send(connack(reason_code::CLIENT_ID_INVALID, None)).await;
            return None;
        } else {
            max_ka
        }
    } else {
        c.keep_alive
    };
    // ---- Client-id ownership (issue 19) ----
    // A client id whose session belongs to another user is refused before anything of
    // that session is touched: not taken over, not drained, not discarded.
    // Clustered, the cluster's record of the client id says whose it is, and claiming
    // it makes this router the one serving it (see `roaming`).
    let mut claimed = None;
    const FOREIGN: &str = "this client id belongs to another user";
    let refused = if let Some(claims) = state.router.core().claims() {
        match roaming::claim(
            state,
            &claims,
            &client_id,
            &principal.owner_id(),
            c.clean_start,
            c.session_expiry,
            c.will.as_ref().map(|w| persist::WillRecord {
                will: w,
                user: principal.name(),
                due: None,
            }),
        )
        .await
        {
            Ok(mut cl) => {
                if let Some(w) = cl.due_will.take() {
                    tracing::info!(
                        client_id = &*client_id,
                        "will of the session's dead router published"
                    );
                    let st = Arc::clone(state);
                    tokio::spawn(async move {
                        crate::listener::mqtt::offline::publish_will(&st, &w.user, w.will.publish)
                            .await
                    });
                }
                claimed = Some(cl);
                None
            }
            Err(Refused::Owner(owner)) => {
                tracing::warn!(client_id = &*client_id, owner = %owner, "{FOREIGN}: connection refused");
                Some((reason_code::NOT_AUTHORIZED, FOREIGN))
            }
            Err(Refused::Unavailable(e)) => {
                tracing::warn!(client_id = &*client_id, error = %e, "cluster: client id not claimed: connection refused");
                Some((
                    reason_code::SERVER_UNAVAILABLE,
                    "the session cannot be claimed in the cluster now",
                ))
            }
        }
    } else if let Err(owner) = state.claim_client_id(&client_id, &principal.owner_id()) {
        tracing::warn!(
            client_id = &*client_id,
            owner = &*owner,
            "{FOREIGN}: connection refused"
        );
        Some((reason_code::NOT_AUTHORIZED, FOREIGN))
    } else {
        None
    };
    if let Some((code, why)) = refused {
        let _ = t.send(connack(code, Some(why.into()))).await;
        return None;
    }
    // ---- end of client-id ownership ----

    // Take the session over: make any current holder leave and wait until it has.
    // A session served elsewhere until now, restored here from the cluster's record.
    let mut restored_here = false;
    let (data, session_present, wait_gone) = {
        let mut sessions = state.sessions();
        let entry = sessions.entry(client_id.clone()).or_default();
        // Claimed above; set again in case the entry went and came back in between.
        entry.owner.get_or_insert_with(|| principal.owner_id());
        if let Some(cl) = &mut claimed {
            // The cluster's record is the truth: the user it names, the revision this
            // router now holds, and the subscriptions of a session served elsewhere.
            entry.owner = Some(principal.owner_id());
            entry.adopted = false;
            entry
                .claim
                .get_or_insert_with(Default::default)
                .store(cl.revision, std::sync::atomic::Ordering::Release);
            if let Some(subs) = cl.restored.take() {
                let old = std::mem::replace(
                    &mut entry.data,
                    Arc::new(Mutex::new(SessionData::default())),
                );
                state.release_session(&old.lock().unwrap_or_else(PoisonError::into_inner));
                if !c.clean_start {
                    roaming::join_groups(state, &subs);
                    entry
                        .data
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .subs = subs;
                    restored_here = true;
                }
            }
        }
        let wait_gone = entry.holder.take().map(|h| {
            h.kick(Leave::TakenOver);
            h.handoff
        });
        if let Some(p) = entry.pending.take() {
            p.cancel();
        }
        let present = !c.clean_start
            && (claimed.as_ref().is_some_and(|cl| cl.existed)
                || state
                    .router
                    .core()
                    .queue(&session_queue(&client_id))
                    .is_some());
        if c.clean_start {
            let old = std::mem::replace(
                &mut entry.data,
                Arc::new(Mutex::new(SessionData::default())),
            );
            state.release_session(&old.lock().unwrap_or_else(PoisonError::into_inner));
        }
        (Arc::clone(&entry.data), present, wait_gone)
    };
    if let Some(gone) = wait_gone {
        tracing::info!(
            client_id = &*client_id,
            "session taken over from an earlier connection"
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), state.wait_gone(&gone)).await;
    }
    let core = state.router.core().clone();
    let queue = session_queue(&client_id);
    if let Some(cl) = &claimed {
        // A clean start (or a session that expired while its router was gone) discards
        // the queue in the cluster, also when it was never open on this router. The
        // record was written afresh by the claim.
        if cl.discard_queue && core.queue(&queue).is_none() {
            let _ = core.declare_queue(&queue, Some(session_queue_options(state, true)));
        }
        if cl.discard_queue || c.clean_start {
            core.delete_queue(&queue);
        }
    } else if c.clean_start {
        // A clean start discards the previous session's queue (its shared and queue
        // subscriptions were per-session consumers, gone with the old connection).
        core.delete_queue(&queue);
        persist::forget_session(state, &client_id, None);
    }
    let persistent = c.session_expiry > 0;
    if persistent && claimed.is_none() {
        // Online now: the stored session no longer carries an expiry deadline.
        let d = data.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = persist::save_session(
            state,
            &client_id,
            principal.name(),
            &d,
            c.session_expiry,
            None,
            None,
            None,
        );
    }
    // The session queue is attached now when the session outlives this connection, and
    // also when an earlier session is resumed: a client that resumes without a Session
    // Expiry Interval (MQTT 5: 0, the session ends with this connection) still gets what
    // was queued and what its subscriptions bring while it is connected.
    let attach_now = persistent || session_present;
    // A session resumed from the cluster keeps its queue there, whatever this
    // connection's expiry (it ends the session when it goes, deleting it there).
    let opts = session_queue_options(state, persistent || restored_here);
    let receive_max = c.receive_max.clamp(1, state.settings.max_inflight.max(1));
    let notify = Arc::new(Notify::new());
    let attach = |name: &str, opts: Option<QueueOptions>| -> Result<Consumer, CoreError> {
        core.declare_queue(name, opts)?;
        core.consume(
            name,
            ConsumeOptions::manual(usize::from(receive_max)).with_notify(Arc::clone(&notify)),
        )
    };
    // A clean session gets its queue at its first subscription (a publish-only client,
    // the common IoT case, then costs no queue at all); a persistent one needs it now.
    let mut consumers = Vec::new();
    // Clustered, a connection to another router that claimed the client id since this
    // one did may already have taken the session over and deleted its queue here: this
    // connection lost the race, and is taken over below as if that claim came later.
    let mut lost_race = false;
    if attach_now {
        match attach(&queue, Some(opts.clone())) {
            Ok(c) => consumers.push((Source::Session, c)),
            Err(CoreError::Closed(_)) if claimed.is_some() => {
                tracing::info!(
                    client_id = &*client_id,
                    "session queue deleted by a takeover from another router while connecting"
                );
                lost_race = true;
            }
            Err(e) => {
                tracing::error!(client_id = &*client_id, error = %e, "cannot attach the session queue");
                let _ = t
                    .send(connack(reason_code::UNSPECIFIED, Some(e.to_string())))
                    .await;
                return None;
            }
        }
        if restored_here && !lost_race {
            roaming::rebind(
                &core,
                &queue,
                &data.lock().unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
    // Resume shared and queue subscriptions of a persistent session.
    let shared: Vec<String> = data
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .subs
        .values()
        .filter_map(|s| s.shared_queue.clone())
        .collect();
    for q in shared {
        match attach(&q, None) {
            Ok(c) => consumers.push((Source::Shared(q), c)),
            Err(e) => {
                tracing::warn!(client_id = &*client_id, queue = %q, error = %e, "cannot resume a shared subscription")
            }
        }
    }
    let handoff = Arc::new(Handoff::default());
    let holder = Holder {
        notify: Arc::clone(&notify),
        handoff: Arc::clone(&handoff),
    };
    // Listed for the admin API from now on; an operator's close kicks it as a takeover
    // does (an idle connection is parked without a task: this reaches it all the same).
    let conn = connections::register_told(
        accepted.id,
        accepted.listener,
        accepted.peer,
        Arc::clone(&holder.notify),
        Arc::clone(&holder.handoff) as Arc<dyn connections::Told>,
    );
    connections::identify(
        conn.id(),
        principal.user.clone(),
        Some(Arc::clone(&client_id)),
    );
    // Clustered, another router may have claimed the client id since this one did
    // (its change seen before this connection held the session): then this connection
    // is taken over at once, and leaves the session alone.
    let taken = {
        let mut sessions = state.sessions();
        let taken = lost_race
            || claimed.as_ref().is_some_and(|cl| {
                sessions.get(&client_id).and_then(|e| e.claimed()) != Some(cl.revision)
            });
        if !taken {
            sessions.entry(client_id.clone()).or_default().holder = Some(holder.clone());
        }
        taken
    };
    if taken {
        holder.kick(Leave::TakenOver);
    } else if let Some(cl) = &claimed {
        roaming::recheck(state, &client_id, cl.revision);
    }
    let ack = Out::ConnAck {
        session_present,
        code: reason_code::SUCCESS,
        assigned_client_id: assigned.filter(|_| v5),
        // Announced to every 5.0 client (what it must use), not only when lowered.
        server_keep_alive: Some(keep_alive),
        receive_max: state.settings.max_inflight,
        max_packet_size: Some(state.settings.max_packet_size),
        session_expiry: None,
        reason: None,
    };
    if t.send(ack).await.is_err() {
        handoff.set_gone(state);
        return None;
    }
    if let Some(max) = c.max_packet_size {
        t.set_max_outbound(max);
    }
    tracing::debug!(client_id = &*client_id, version = ?c.version, session_present, persistent, "connected");
    let mut s = Connection {
        t,
        state: Arc::clone(state),
        conn,
        version: c.version,
        client_id,
        principal,
        data,
        persistent,
        consumers,
        notify,
        inflight: BTreeMap::new(),
        next_pid: 1,
        client_receive_max: receive_max,
        client_max_packet: c.max_packet_size.and_then(std::num::NonZeroU32::new),
        aliases: OutAliases::new(c.topic_alias_max)
            .filter(|_| v5)
            .map(|outbound| {
                Box::new(Aliases {
                    inbound: BTreeMap::new(),
                    outbound: Some(outbound),
                })
            }),
        keep_alive_ms: u32::from(keep_alive) * 1500,
        last_recv: Stamp::now(),
        last_active: Stamp::now(),
        timer: None,
        handoff,
        permit,
        will: c.will.map(Box::new),
        session_expiry: c.session_expiry,
        confirmations: Confirmations::default(),
        unflushed: 0,
    };
    // Finish QoS 2 deliveries the previous connection left half done.
    let rel: Vec<u16> = s.data().flows().pending_rel.iter().copied().collect();
    for pid in rel {
        if s.t
            .feed(Out::PubRel {
                packet_id: pid,
                code: 0,
            })
            .await
            .is_err()
        {
            return None;
        }
    }
    if s.t.flush().await.is_err() {
        return None;
    }
    Some(s)
}
