//! What of MQTT outlives a restart, besides the messages themselves (those live in the
//! session's durable core queue `$mqtt.s.<client id>`, which the core restores with its
//! bindings): each persistent session's subscriptions and expiry, and the retained
//! messages. Both are kept in the durable store under this listener's own namespaces
//! (`META_MQTT_SESSION`, `META_MQTT_RETAINED`).
//!
//! Clustered, the retained messages are the cluster's, not the store's: the core says
//! so ([`Core::shared_metadata`](crate::core::Core::shared_metadata) has the
//! namespace), every write goes there, and [`restore`] starts the mirror's watch
//! instead of reading the store.
//!
//! Not kept: the packet ids of inbound QoS 2 messages between PUBREC and PUBREL. After
//! a restart a PUBREL for an unknown id is completed anyway (as MQTT 5 §4.3.3 allows),
//! so the message is not lost; a client that resends the PUBLISH itself may cause one
//! duplicate.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::codec::{Props, Publish, SubOpts, Will};
use super::state::{MqttState, SessionData, SessionEntry, Sub};
use crate::core::shared::SharedMeta;
use crate::core::{Message, Pattern, persist};
use crate::store::StoreWait;
use crate::translate::mqtt_names::{is_share_queue, session_queue};

/// The store namespace of persistent MQTT sessions, keyed by client id.
const META_MQTT_SESSION: &str = "mqtt-session";
/// The store namespace of MQTT retained messages (encoded as the core stores a
/// message), keyed by topic (internal spelling). Public: the cluster keeps this
/// namespace for every router.
pub const META_MQTT_RETAINED: &str = "mqtt-retained";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredSub {
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    pattern: String,
    shared_queue: Option<String>,
    subscription_id: Option<u32>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredSession {
    /// The user the session (and so its client id) belongs to; absent in sessions
    /// stored before owners were kept.
    #[serde(default)]
    owner: Option<String>,
    /// Session expiry interval, seconds (`u32::MAX`: never).
    expiry: u32,
    /// When an offline session expires (ms since the epoch); `None` while connected or
    /// when it never expires.
    expires_at_ms: Option<u64>,
    subs: Vec<StoredSub>,
    /// The will still to publish: the connected client's (it goes out if its router
    /// dies), or a delayed one pending (`due_at_ms` set). Clustered, another router
    /// publishes it when the one serving the session died (see [`super::orphans`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    will: Option<StoredWill>,
}

/// A will as the session's record keeps it (MQTT 5 properties included).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredWill {
    topic: String,
    /// Base64.
    payload: String,
    qos: u8,
    retain: bool,
    /// Will delay interval, seconds.
    delay: u32,
    /// The user it is published as (the connection's login).
    user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_expiry: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    user_properties: Vec<(String, String)>,
    #[serde(default)]
    utf8: bool,
    /// When a delayed will is due (ms since the epoch); `None` while the client is
    /// connected (it is due its delay after the connection ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due_at_ms: Option<u64>,
}

/// A will to keep in a session's record.
#[derive(Debug, Clone, Copy)]
pub struct WillRecord<'a> {
    pub will: &'a Will,
    /// The user it is published as.
    pub user: &'a str,
    /// When it is due (a delayed will pending), `None` while the client is connected.
    pub due: Option<SystemTime>,
}

/// A will read back from a record.
#[derive(Debug, Clone)]
pub struct DecodedWill {
    pub will: Will,
    pub user: String,
    /// How long until it is due (`None`: its client was connected, so its delay).
    pub left: Option<Duration>,
}

impl StoredWill {
    fn new(w: WillRecord<'_>) -> Self {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let p = &w.will.publish;
        Self {
            topic: p.topic.clone(),
            payload: b64.encode(&p.payload),
            qos: p.qos,
            retain: p.retain,
            delay: w.will.delay,
            user: w.user.to_owned(),
            content_type: p.props.content_type.clone(),
            correlation_data: p.props.correlation_data.as_ref().map(|d| b64.encode(d)),
            response_topic: p.props.response_topic.clone(),
            message_expiry: p.props.expiry,
            user_properties: p.props.user.clone(),
            utf8: p.props.utf8,
            due_at_ms: w.due.map(millis),
        }
    }

    fn decode(self, now: SystemTime) -> Option<DecodedWill> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(&self.payload).ok()?;
        let correlation_data = match self.correlation_data {
            Some(d) => Some(b64.decode(d).ok()?.into()),
            None => None,
        };
        Some(DecodedWill {
            will: Will {
                publish: Publish {
                    dup: false,
                    retain: self.retain,
                    qos: self.qos,
                    topic: self.topic,
                    packet_id: None,
                    payload: payload.into(),
                    props: Props {
                        content_type: self.content_type,
                        correlation_data,
                        response_topic: self.response_topic,
                        expiry: self.message_expiry,
                        user: self.user_properties,
                        utf8: self.utf8,
                        ..Default::default()
                    },
                },
                delay: self.delay,
            },
            user: self.user,
            left: self
                .due_at_ms
                .map(|at| Duration::from_millis(at.saturating_sub(millis(now)))),
        })
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When a session with `expiry` that went offline at `offline_since` expires (`None`:
/// online, or never).
pub fn deadline(expiry: u32, offline_since: Option<SystemTime>) -> Option<SystemTime> {
    offline_since
        .filter(|_| expiry != u32::MAX)
        .map(|t| t + Duration::from_secs(u64::from(expiry)))
}

/// A session as stored: what [`save_session`] writes and [`decode_session`] reads.
/// `expires_at`: see [`deadline`].
pub fn encode_session(
    owner: &str,
    data: &SessionData,
    expiry: u32,
    expires_at: Option<SystemTime>,
    will: Option<WillRecord<'_>>,
) -> Result<Vec<u8>, serde_json::Error> {
    let stored = StoredSession {
        owner: Some(owner.to_owned()),
        expiry,
        expires_at_ms: expires_at.map(millis),
        will: will.map(StoredWill::new),
        subs: data
            .subs
            .iter()
            .map(|(filter, s)| StoredSub {
                filter: filter.clone(),
                qos: s.opts.qos,
                no_local: s.opts.no_local,
                retain_as_published: s.opts.retain_as_published,
                retain_handling: s.opts.retain_handling,
                pattern: s.pattern.as_str().to_owned(),
                shared_queue: s.shared_queue.clone(),
                subscription_id: s.subscription_id,
            })
            .collect(),
    };
    serde_json::to_vec(&stored)
}

/// A stored session, read back.
#[derive(Debug)]
pub struct Decoded {
    pub owner: Option<String>,
    /// Session expiry interval, seconds.
    pub expiry: u32,
    /// How long it has left before it expires offline (`None`: online, or never).
    pub left: Option<Duration>,
    pub subs: std::collections::BTreeMap<String, Sub>,
    /// The will still to publish (an unreadable one is left out).
    pub will: Option<DecodedWill>,
}

/// Reads what [`encode_session`] wrote; subscriptions whose pattern no longer parses
/// are left out.
pub fn decode_session(bytes: &[u8], now: SystemTime) -> Result<Decoded, serde_json::Error> {
    let stored: StoredSession = serde_json::from_slice(bytes)?;
    let left = stored
        .expires_at_ms
        .map(|at| Duration::from_millis(at.saturating_sub(millis(now))));
    let subs = stored
        .subs
        .into_iter()
        .filter_map(|s| {
            let pattern = Pattern::parse(&s.pattern).ok()?;
            Some((
                s.filter,
                Sub {
                    opts: SubOpts {
                        qos: s.qos,
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        retain_handling: s.retain_handling,
                    },
                    pattern,
                    shared_queue: s.shared_queue,
                    subscription_id: s.subscription_id,
                },
            ))
        })
        .collect();
    Ok(Decoded {
        owner: stored.owner,
        expiry: stored.expiry,
        left,
        subs,
        will: stored.will.and_then(|w| w.decode(now)),
    })
}

/// Records a persistent session's owner, subscriptions, expiry and will still to
/// publish. `offline_since` is set when the client just left (the expiry clock runs
/// from then). Clustered, the
/// record is the session's claim (see [`super::roaming`]), written over `claim`, the
/// revision this router's entry holds (none: the session is not this router's). Never
/// takes the sessions lock: callers may hold it.
#[allow(clippy::too_many_arguments)] // each is one field of the record, named at the call
pub fn save_session(
    state: &MqttState,
    client_id: &str,
    owner: &str,
    data: &SessionData,
    expiry: u32,
    offline_since: Option<SystemTime>,
    will: Option<WillRecord<'_>>,
    claim: Option<&Arc<AtomicU64>>,
) -> Option<StoreWait> {
    let bytes = match encode_session(owner, data, expiry, deadline(expiry, offline_since), will) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(client_id, error = %e, "session not stored");
            return None;
        }
    };
    if let Some(claims) = state.router.core().claims() {
        return Some(super::roaming::save(claims, client_id, bytes, claim?));
    }
    let store = state.router.core().store()?;
    Some(store.put(META_MQTT_SESSION, client_id, bytes))
}

/// Forgets a session that ended for good. `claim`: the revision its entry claimed
/// (clustered, the record is removed only while it is still that one).
pub fn forget_session(state: &MqttState, client_id: &str, claim: Option<u64>) {
    if let Some(claims) = state.router.core().claims() {
        super::roaming::forget(claims, client_id, claim);
        return;
    }
    if let Some(store) = state.router.core().store() {
        store.delete(META_MQTT_SESSION, client_id);
    }
}

/// The cluster's retained messages, when the router is clustered.
pub fn retained_replica(core: &crate::core::Core) -> Option<Arc<dyn SharedMeta>> {
    core.shared_metadata(META_MQTT_RETAINED)
}

/// Records (or, for an empty payload, forgets) a topic's retained message: in the
/// cluster when clustered (a clearing is awaited too there: another router's
/// subscriber must not get it once its publisher was acknowledged).
pub fn save_retained(state: &MqttState, topic: &str, m: &Message) -> Option<StoreWait> {
    if let Some(replica) = state.retained_replica() {
        return Some(if m.body.is_empty() {
            replica.delete(topic)
        } else {
            replica.put(topic, persist::encode(m).into())
        });
    }
    let store = state.router.core().store()?;
    if m.body.is_empty() {
        store.delete(META_MQTT_RETAINED, topic);
        return None;
    }
    Some(store.put(META_MQTT_RETAINED, topic, persist::encode(m)))
}

/// Puts back the stored sessions (with their expiry timers) and retained messages.
/// Called once, when the MQTT state is created. Clustered, the retained messages come
/// from the cluster instead: the result resolves once its current ones are mirrored
/// (wait for it before serving).
pub fn restore(state: &Arc<MqttState>) -> Option<StoreWait> {
    let core = state.router.core().clone();
    let now = SystemTime::now();
    let mirrored = match state.retained_replica() {
        Some(replica) => {
            let local = core.take_recovered(META_MQTT_RETAINED);
            if !local.is_empty() {
                tracing::info!(
                    count = local.len(),
                    "retained messages stored by this router alone are not restored: the cluster's are in force"
                );
            }
            let weak = Arc::downgrade(state);
            Some(replica.watch(Box::new(move |topic, value| {
                if let Some(state) = weak.upgrade() {
                    state.apply_retained(topic, value);
                }
            })))
        }
        None => {
            restore_retained(state, &core, now);
            None
        }
    };
    restore_sessions(state, &core, now);
    mirrored
}

/// The retained messages of the store, within the limits.
fn restore_retained(state: &MqttState, core: &crate::core::Core, now: SystemTime) {
    let mut retained = 0usize;
    let mut over = 0usize;
    for (topic, bytes) in core.take_recovered(META_MQTT_RETAINED) {
        match persist::decode(&bytes) {
            Ok(m) if m.expiry.is_none_or(|e| e > now) => {
                // The limits hold after a restart too (they may have been lowered):
                // what does not fit is forgotten, as a refused publish would have been.
                if state.restore_retained(topic.clone(), m) {
                    retained += 1;
                } else {
                    forget_retained(state, &topic);
                    over += 1;
                }
            }
            Ok(_) => forget_retained(state, &topic),
            Err(e) => {
                tracing::warn!(topic, error = %e, "stored retained message unreadable; dropped")
            }
        }
    }
    if over > 0 {
        tracing::warn!(
            dropped = over,
            kept = retained,
            max_retained = state.settings.max_retained,
            max_retained_bytes = state.settings.max_retained_bytes,
            "retained messages over the byte limit not restored (mqtt.max_retained / mqtt.max_retained_bytes)"
        );
    }
    if retained > 0 {
        tracing::info!(retained, "MQTT retained messages restored");
    }
}

/// The persistent sessions of the store, with their expiry timers.
fn restore_sessions(state: &Arc<MqttState>, core: &crate::core::Core, now: SystemTime) {
    let mut sessions = 0usize;
    for (client_id, bytes) in core.take_recovered(META_MQTT_SESSION) {
        let stored = match decode_session(&bytes, now) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client_id, error = %e, "stored MQTT session unreadable; dropped");
                continue;
            }
        };
        let queue = session_queue(&client_id);
        let left = stored.left;
        if left.is_some_and(|l| l.is_zero()) || core.queue(&queue).is_none() {
            core.delete_queue(&queue);
            forget_session(state, &client_id, None);
            tracing::info!(
                client_id,
                "stored session expired while the router was down"
            );
            continue;
        }
        let data = SessionData::with_subs(stored.subs);
        for s in data.subs.values() {
            if let Some(q) = &s.shared_queue
                && is_share_queue(q)
            {
                state.share_join(q);
            }
        }
        let pending = tokio_util::sync::CancellationToken::new();
        let client_id: Arc<str> = client_id.into();
        state.sessions().insert(
            Arc::clone(&client_id),
            Box::new(SessionEntry {
                owner: stored.owner.map(Arc::from),
                data: Arc::new(Mutex::new(data)),
                holder: None,
                pending: Some(pending.clone()),
                claim: None,
                adopted: false,
            }),
        );
        if let Some(left) = left {
            super::session::spawn_expiry(Arc::clone(state), client_id, pending, left);
        }
        sessions += 1;
    }
    if sessions > 0 {
        tracing::info!(sessions, "MQTT sessions restored");
    }
}

fn forget_retained(state: &MqttState, topic: &str) {
    if let Some(store) = state.router.core().store() {
        store.delete(META_MQTT_RETAINED, topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_will_round_trips_through_the_record_with_its_properties_and_due_time() {
        let will = Will {
            publish: Publish {
                dup: false,
                retain: true,
                qos: 1,
                topic: "a/will".into(),
                packet_id: None,
                payload: bytes::Bytes::from_static(b"\x00gone\xff"),
                props: Props {
                    content_type: Some("text/plain".into()),
                    correlation_data: Some(bytes::Bytes::from_static(b"\x01\x02")),
                    response_topic: Some("r/t".into()),
                    expiry: Some(60),
                    user: vec![("from".into(), "b".into())],
                    utf8: false,
                    ..Default::default()
                },
            },
            delay: 30,
        };
        let now = SystemTime::now();
        let rec = WillRecord {
            will: &will,
            user: "alice",
            due: Some(now + Duration::from_secs(10)),
        };
        let data = SessionData::default();
        let bytes = encode_session("alice", &data, 300, None, Some(rec)).unwrap();
        let w = decode_session(&bytes, now)
            .unwrap()
            .will
            .expect("will kept");
        assert_eq!(w.will, will);
        assert_eq!(w.user, "alice");
        let left = w.left.expect("due time kept");
        assert!(left <= Duration::from_secs(10) && left >= Duration::from_secs(9));
        // Without a will (a clean DISCONNECT) none comes back; nor from a record written
        // before wills were kept.
        let bytes = encode_session("alice", &data, 300, None, None).unwrap();
        assert!(decode_session(&bytes, now).unwrap().will.is_none());
        let old = br#"{"owner":"alice","expiry":300,"expires_at_ms":null,"subs":[]}"#;
        assert!(decode_session(old, now).unwrap().will.is_none());
    }
}
