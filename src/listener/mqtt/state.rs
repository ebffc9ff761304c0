//! What outlives one MQTT connection: sessions by client id (subscriptions, QoS 2
//! state, the connection currently holding the session) and retained messages.
//!
//! A session's messages live in the core, in the queue `$mqtt.s.<client id>`: it is bound
//! to the session's (non-shared) topic filters, durable for a persistent session and
//! auto-deleted for a clean one. So while a persistent client is offline its messages
//! wait in a bounded queue, and unacknowledged QoS 1/2 messages return to it marked
//! redelivered (sent again with DUP).
//!
//! Retained messages are kept here, one per topic, and stored in the durable store
//! (`super::persist`). Clustered (docs/cluster.md), the cluster keeps them for every
//! router instead ([`crate::core::shared::SharedMeta`]): the map here is then a mirror
//! of the cluster's, changed at once by this router's retained publishes (which the
//! cluster stores before a QoS 1/2 publisher is acknowledged) and by the cluster's
//! watch for everyone's ([`MqttState::apply_retained`]). The limits are checked
//! against the mirror, so they hold cluster-wide, up to retained publishes made at
//! the same moment on several routers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::SubOpts;
use crate::auth::Auth;
use crate::core::shared::SharedMeta;
use crate::core::{Consumer, Message, Pattern};
use crate::router::Router;
use crate::translate::mqtt_names::is_share_queue;

/// MQTT listener settings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Largest packet accepted from clients, bytes.
    pub max_packet_size: u32,
    /// QoS 1/2 messages in flight to one client (capped by its Receive Maximum).
    pub max_inflight: u16,
    /// Messages kept for one session (offline or slow); beyond it the oldest is dropped.
    pub max_queued: usize,
    /// Most retained messages kept.
    pub max_retained: usize,
    /// Most bytes of retained messages kept, all topics together (0: no limit).
    pub max_retained_bytes: u64,
    /// Most topic filters one session subscribes to (each costs the router a binding,
    /// and clustered a NATS subscription and bytes of the session's record).
    pub max_subscriptions: usize,
    pub max_connections: usize,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: std::time::Duration,
    /// Topic aliases a 5.0 client may use towards us.
    pub topic_alias_max: u16,
    /// Longest keep-alive accepted, seconds (0: whatever the client asks, even none).
    /// The default, 65535 as in Mosquitto, still gives a 5.0 client asking for none a
    /// Server Keep Alive, so no 5.0 connection is kept forever without a sign of life.
    pub max_keep_alive: u16,
    /// How long a plain TCP connection may be idle before it waits in the shared poller
    /// instead of a task of its own (`None`: never).
    pub park_idle_after: Option<std::time::Duration>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            max_inflight: 64,
            max_queued: 10_000,
            max_retained: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
            max_subscriptions: 1024,
            max_connections: 10_000,
            connect_timeout: std::time::Duration::from_secs(10),
            topic_alias_max: 16,
            max_keep_alive: u16::MAX,
            park_idle_after: Some(std::time::Duration::from_secs(2)),
        }
    }
}

/// One subscription of a session.
#[derive(Debug, Clone)]
pub struct Sub {
    pub opts: SubOpts,
    /// The filter in internal spelling.
    pub pattern: Pattern,
    /// `$share/GROUP/…` group, or the queue of a `$queue/NAME` subscription.
    pub shared_queue: Option<String>,
    pub subscription_id: Option<u32>,
}

/// Session state kept across connections.
#[derive(Debug, Default)]
pub struct SessionData {
    /// By filter as the client wrote it.
    pub subs: BTreeMap<String, Sub>,
    /// Made when first needed and dropped when empty again ([`SessionData::tidy`]): most
    /// sessions never have a QoS 2 exchange or a delivery waiting for its
    /// acknowledgement while idle, and every idle connection would carry 96 bytes more.
    flows: Option<Box<Flows>>,
}

/// What a session has in flight that outlives a connection: QoS 2 exchanges, retired
/// consumers, the packet ids of unacknowledged deliveries.
#[derive(Debug, Default)]
pub struct Flows {
    /// Inbound QoS 2 packet ids received (PUBREC sent) and not yet released.
    pub incoming_qos2: BTreeSet<u16>,
    /// Outbound QoS 2 packet ids released (PUBREL sent) and not yet completed.
    pub pending_rel: BTreeSet<u16>,
    /// Consumers of ended connections still holding QoS 2 deliveries of shared queues
    /// whose PUBREL is in `pending_rel` (see [`Retired`]).
    pub retired: Vec<Retired>,
    /// Packet ids of QoS 1/2 messages sent and not yet acknowledged, by message id: a
    /// message sent again after a reconnect keeps its packet id (MQTT 3.1.1 §4.4,
    /// 5.0 §4.4), so a client that had it already recognises the duplicate.
    /// A BTreeMap, not a HashMap: empty, it costs no hasher state in every session.
    pub sent_pids: BTreeMap<crate::core::MessageId, u16>,
}

impl Flows {
    fn is_empty(&self) -> bool {
        self.incoming_qos2.is_empty()
            && self.pending_rel.is_empty()
            && self.retired.is_empty()
            && self.sent_pids.is_empty()
    }
}

/// What a session without [`Flows`] reads.
static NO_FLOWS: Flows = Flows {
    incoming_qos2: BTreeSet::new(),
    pending_rel: BTreeSet::new(),
    retired: Vec::new(),
    sent_pids: BTreeMap::new(),
};

/// A consumer of a connection that ended with QoS 2 deliveries of a shared queue
/// released (PUBREL sent) and not completed (no PUBCOMP): it holds them, unacknowledged,
/// for the session, which sends their PUBRELs again when it resumes on this router.
/// Their PUBCOMP acknowledges them; the session leaving this router or ending drops it,
/// which gives them back to the cluster (delivered again, DUP, wherever the session
/// resumes). See `session::release`.
#[derive(Debug)]
pub struct Retired {
    pub consumer: Consumer,
    /// Packet id → delivery tag.
    pub tags: BTreeMap<u16, u64>,
}

impl SessionData {
    /// A session's state with these subscriptions and nothing in flight.
    pub fn with_subs(subs: BTreeMap<String, Sub>) -> Self {
        Self { subs, flows: None }
    }

    /// What the session has in flight (empty when it never had anything).
    pub fn flows(&self) -> &Flows {
        self.flows.as_deref().unwrap_or(&NO_FLOWS)
    }

    /// What the session has in flight, to change.
    pub fn flows_mut(&mut self) -> &mut Flows {
        self.flows.get_or_insert_with(Default::default)
    }

    /// Drops what it has in flight once all of it is empty (a parked connection's
    /// session keeps only what it needs).
    pub fn tidy(&mut self) {
        if self.flows.as_deref().is_some_and(Flows::is_empty) {
            self.flows = None;
        }
    }

    /// Takes over the retired consumers of a connection that ended: what was completed
    /// meanwhile (its packet id no longer in `pending_rel`) is acknowledged now.
    pub fn adopt(&mut self, retired: Vec<Retired>) {
        for mut r in retired {
            r.tags.retain(|pid, tag| {
                let pending = self.flows().pending_rel.contains(pid);
                if !pending {
                    r.consumer.ack(*tag);
                }
                pending
            });
            if !r.tags.is_empty() {
                self.flows_mut().retired.push(r);
            }
        }
    }

    /// The PUBCOMP of `pid` for a delivery a retired consumer holds: acknowledges it;
    /// a consumer left holding nothing is returned, to be dropped outside the lock.
    pub fn complete_retired(&mut self, pid: u16) -> Option<Retired> {
        let i = self
            .flows()
            .retired
            .iter()
            .position(|r| r.tags.contains_key(&pid))?;
        let retired = &mut self.flows_mut().retired;
        let r = &mut retired[i];
        if let Some(tag) = r.tags.remove(&pid) {
            r.consumer.ack(tag);
        }
        r.tags.is_empty().then(|| retired.swap_remove(i))
    }
}

/// The retained set is at `max_retained` messages or `max_retained_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedFull {
    Count,
    Bytes,
}

/// Bytes a retained message counts for: its [`Message::byte_size`] and its topic.
pub fn retained_size(topic: &str, m: &Message) -> usize {
    m.byte_size() + topic.len()
}

/// The connection currently holding a session.
///
/// It is told to leave (session takeover, shutdown) through the notifier its consumers
/// already wake it with, after `handoff.leave` is set: one wake-up source, so an idle
/// connection waits on one future instead of three, and the two cost one small
/// allocation instead of two cancellation tokens.
#[derive(Debug, Clone)]
/// A holder is told apart from a later one by its `handoff` (the same allocation).
pub struct Holder {
    /// The connection's notifier (deliveries wake it too).
    pub notify: Arc<Notify>,
    pub handoff: Arc<Handoff>,
}

impl Holder {
    /// Makes the holder leave; [`MqttState::wait_gone`] tells when it has. A holder
    /// told to leave already keeps the first reason (a connection taken over and then
    /// closed by an operator still ends as taken over).
    pub fn kick(&self, why: Leave) {
        self.handoff.tell(why);
        self.notify.notify_one();
    }
}

/// Why the connection holding a session must leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// A new connection with the same client id took the session.
    TakenOver = 1,
    /// The listeners are shutting down.
    Shutdown = 2,
    /// An operator closed the connection (admin API, `DELETE /connections/{id}`).
    Administrative = 3,
}

/// Between the connection holding a session and whoever makes it leave.
///
/// One byte: every connection holds one, parked ones too. Whoever waits for the
/// holder to be gone waits on the daemon's one [`MqttState::wait_gone`] notifier, not
/// on a notifier of each connection's own (a takeover is rare; 32 bytes a connection
/// are not).
#[derive(Debug, Default)]
pub struct Handoff {
    /// A [`Leave`] once the holder must leave (0 before), and [`GONE`] once it has left
    /// and saved the session.
    flags: AtomicU8,
}

impl Handoff {
    /// Records why the holder must leave, unless it was told already (the first
    /// reason stays) or has left.
    fn tell(&self, why: Leave) {
        let _ = self
            .flags
            .fetch_update(Ordering::Release, Ordering::Relaxed, |f| {
                (f & !GONE == 0).then_some(f | why as u8)
            });
    }
}

/// An operator's close (`DELETE /connections/{id}`) tells the holder as a takeover
/// does, with its own reason; the registration wakes it.
impl crate::listener::connections::Told for Handoff {
    fn closed_by_operator(&self) {
        self.tell(Leave::Administrative);
    }
}

/// [`Handoff`]: the holder has left.
const GONE: u8 = 0x80;

impl Handoff {
    /// Whether, and why, the holder must leave.
    pub fn leave(&self) -> Option<Leave> {
        match self.flags.load(Ordering::Acquire) & !GONE {
            1 => Some(Leave::TakenOver),
            2 => Some(Leave::Shutdown),
            3 => Some(Leave::Administrative),
            _ => None,
        }
    }

    fn is_gone(&self) -> bool {
        self.flags.load(Ordering::Acquire) & GONE != 0
    }

    /// The holder has left and saved the session: wakes whoever waits for that.
    pub fn set_gone(&self, state: &MqttState) {
        self.flags.fetch_or(GONE, Ordering::Release);
        state.holder_gone.notify_waiters();
    }
}

#[derive(Debug, Default)]
pub struct SessionEntry {
    /// The user whose session this is (a login, or `anonymous`): the client id is theirs
    /// while the session lives, and stored with it. `None` only for a session stored
    /// before owners were kept; the first user to connect with its client id adopts it.
    pub owner: Option<Arc<str>>,
    pub data: Arc<Mutex<SessionData>>,
    pub holder: Option<Holder>,
    /// Pending delayed will or session expiry; cancelled when a client takes the session.
    pub pending: Option<CancellationToken>,
    /// Clustered: the revision of this router's claim on the client id (see
    /// [`super::roaming`]), advanced by each write of the session's record.
    pub claim: Option<Arc<AtomicU64>>,
    /// Clustered: taken over from a dead router ([`super::orphans`]) and not opened
    /// here since: its queue and subscriptions are the cluster's only, so a client
    /// resuming it here restores them as from another router.
    pub adopted: bool,
}

impl SessionEntry {
    /// The revision this router claimed, if it did.
    pub fn claimed(&self) -> Option<u64> {
        self.claim.as_ref().map(|c| c.load(Ordering::Acquire))
    }
}

/// Shared by every MQTT connection of the daemon.
#[derive(Debug)]
pub struct MqttState {
    pub router: Router,
    pub auth: Arc<Auth>,
    pub settings: MqttSettings,
    /// Entries boxed: the table keeps spare slots (a third to a half of them, growing by
    /// doubling), and a spare slot of a pointer costs 8 bytes where one of an entry
    /// cost 64; one per session, idle connections included.
    pub sessions: Mutex<HashMap<Arc<str>, Box<SessionEntry>>>,
    pub retained: Mutex<BTreeMap<String, Arc<Message>>>,
    /// Bytes of the retained messages ([`retained_size`]); changed under the `retained`
    /// lock, mirrored in the core's [`crate::core::Held::retained`] for the watermark.
    retained_bytes: AtomicU64,
    /// Clustered: the cluster's retained messages, which `retained` mirrors.
    retained_replica: Option<Arc<dyn SharedMeta>>,
    /// Sessions holding each `$share` group queue; the queue goes with the last one
    /// (MQTT 5 §4.8.2: a shared subscription lives while a session holds it).
    pub shared_members: Mutex<HashMap<String, usize>>,
    /// Where idle TCP connections wait (started by the first TCP listener).
    pub parker: super::session::park::ParkerCell,
    /// Woken whenever a session's holder has left (see [`Handoff`]).
    holder_gone: Notify,
}

impl MqttState {
    pub fn new(router: Router, auth: Arc<Auth>, settings: MqttSettings) -> Self {
        let retained_replica = super::persist::retained_replica(router.core());
        Self {
            retained_replica,
            router,
            auth,
            settings,
            sessions: Mutex::new(HashMap::new()),
            retained: Mutex::new(BTreeMap::new()),
            retained_bytes: AtomicU64::new(0),
            shared_members: Mutex::new(HashMap::new()),
            holder_gone: Notify::new(),
            parker: Default::default(),
        }
    }

    /// Claims `client_id` for `user` before a connection takes its session: a client id
    /// whose session (live, or persistent and offline) belongs to another user is
    /// refused (`Err` with the owner), so that user never gets, drains or discards it.
    /// Otherwise the session is `user`'s from now on (made if there is none).
    pub fn claim_client_id(&self, client_id: &Arc<str>, user: &Arc<str>) -> Result<(), Arc<str>> {
        let mut sessions = self.sessions();
        let entry = sessions.entry(Arc::clone(client_id)).or_default();
        match &entry.owner {
            Some(o) if o != user => Err(Arc::clone(o)),
            _ => {
                entry.owner = Some(Arc::clone(user));
                Ok(())
            }
        }
    }

    /// Waits until the holder behind `handoff` has left and saved its session.
    pub async fn wait_gone(&self, handoff: &Handoff) {
        loop {
            let woken = self.holder_gone.notified();
            tokio::pin!(woken);
            // Registered before the check: a holder leaving in between still wakes it.
            woken.as_mut().enable();
            if handoff.is_gone() {
                return;
            }
            woken.await;
        }
    }

    /// The idle-connection poller, once a TCP listener started it.
    pub fn parker(&self) -> Option<&super::session::park::Parker> {
        self.parker.get()
    }

    /// Starts the idle-connection poller unless it runs or parking is off.
    pub fn start_parker(&self, tracker: &TaskTracker, cancel: &CancellationToken) {
        if self.settings.park_idle_after.is_none() || self.parker.get().is_some() {
            return;
        }
        match super::session::park::Parker::start(tracker, cancel.clone()) {
            Ok(p) => {
                let _ = self.parker.set(p);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no idle-connection poller: idle MQTT connections keep their tasks")
            }
        }
    }

    /// A session joined a shared group queue.
    pub fn share_join(&self, queue: &str) {
        *self
            .shared_members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(queue.to_owned())
            .or_default() += 1;
    }

    /// A session left a shared group queue; the last one deletes it.
    pub fn share_leave(&self, queue: &str) {
        let last = {
            let mut m = self
                .shared_members
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match m.get_mut(queue) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    m.remove(queue);
                    true
                }
                None => false,
            }
        };
        if last {
            self.router.core().delete_queue(queue);
        }
    }

    /// A session ended for good: it leaves the shared groups it held.
    pub fn release_session(&self, data: &SessionData) {
        for sub in data.subs.values() {
            if let Some(q) = &sub.shared_queue
                && is_share_queue(q)
            {
                self.share_leave(q);
            }
        }
    }

    /// Makes every connected session leave (the listeners are shutting down): a
    /// session registered after this sees the listeners' cancellation itself.
    pub fn kick_all(&self) {
        for e in self.sessions().values() {
            if let Some(h) = &e.holder {
                h.kick(Leave::Shutdown);
            }
        }
    }

    /// Kicks every session when `cancel` fires.
    pub fn kick_all_on(self: &Arc<Self>, cancel: CancellationToken) {
        let state = Arc::clone(self);
        tokio::spawn(async move {
            cancel.cancelled().await;
            state.kick_all();
        });
    }

    pub fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Box<SessionEntry>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn retained(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Message>>> {
        self.retained.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores (or, for an empty payload, clears) the retained message of a topic, also
    /// in the durable store (clustered: in the cluster): the returned write is what a
    /// QoS 1/2 publisher's acknowledgement waits for. `Err` when the retained set is
    /// full.
    pub fn retain(
        &self,
        topic: &str,
        m: Arc<Message>,
    ) -> Result<Option<crate::store::StoreWait>, RetainedFull> {
        let mut r = self.retained();
        if m.body.is_empty() {
            if let Some(old) = r.remove(topic) {
                self.retained_bytes_sub(retained_size(topic, &old));
            }
        } else {
            self.fits(&r, topic, &m)?;
            let size = retained_size(topic, &m);
            if let Some(old) = r.insert(topic.to_owned(), Arc::clone(&m)) {
                self.retained_bytes_sub(retained_size(topic, &old));
            }
            self.retained_bytes_add(size);
        }
        Ok(super::persist::save_retained(self, topic, &m))
    }

    /// Whether retaining `m` on `topic` (replacing what the topic retains) keeps the
    /// retained set within `max_retained` and `max_retained_bytes`.
    pub fn retained_fits(&self, topic: &str, m: &Message) -> Result<(), RetainedFull> {
        if m.body.is_empty() {
            return Ok(());
        }
        self.fits(&self.retained(), topic, m)
    }

    fn fits(
        &self,
        r: &BTreeMap<String, Arc<Message>>,
        topic: &str,
        m: &Message,
    ) -> Result<(), RetainedFull> {
        let old = r.get(topic).map(|o| retained_size(topic, o));
        if old.is_none() && r.len() >= self.settings.max_retained {
            return Err(RetainedFull::Count);
        }
        let max = self.settings.max_retained_bytes;
        let after =
            self.retained_bytes() - old.unwrap_or(0) as u64 + retained_size(topic, m) as u64;
        if max > 0 && after > max {
            return Err(RetainedFull::Bytes);
        }
        Ok(())
    }

    /// Puts back a retained message recovered from the store, within the limits;
    /// false (and nothing kept) when it does not fit.
    pub fn restore_retained(&self, topic: String, m: Message) -> bool {
        let mut r = self.retained();
        if self.fits(&r, &topic, &m).is_err() {
            return false;
        }
        let size = retained_size(&topic, &m);
        if let Some(old) = r.insert(topic.clone(), Arc::new(m)) {
            self.retained_bytes_sub(retained_size(&topic, &old));
        }
        self.retained_bytes_add(size);
        true
    }

    /// Clustered: the cluster's retained messages ([`SharedMeta`]), which this router's
    /// mirror.
    pub fn retained_replica(&self) -> Option<&Arc<dyn SharedMeta>> {
        self.retained_replica.as_ref()
    }

    /// Clustered: the cluster's retained message of `topic` changed (another router set
    /// or cleared it, or this is its value at start-up; `None`: cleared). Applied as it
    /// is, without the limits: they were checked where it was set, and a mirror that
    /// refused it would differ from the others'.
    pub fn apply_retained(&self, topic: &str, value: Option<Bytes>) {
        let m = value.and_then(|v| match crate::core::persist::decode(&v) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(topic, error = %e, "cluster's retained message unreadable; not kept");
                None
            }
        });
        let mut r = self.retained();
        match m.filter(|m| !m.body.is_empty()) {
            Some(m) => {
                let size = retained_size(topic, &m);
                if let Some(old) = r.insert(topic.to_owned(), Arc::new(m)) {
                    self.retained_bytes_sub(retained_size(topic, &old));
                }
                self.retained_bytes_add(size);
            }
            None => {
                if let Some(old) = r.remove(topic) {
                    self.retained_bytes_sub(retained_size(topic, &old));
                }
            }
        }
    }

    /// Bytes held by retained messages.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    fn retained_bytes_add(&self, n: usize) {
        self.retained_bytes.fetch_add(n as u64, Ordering::Relaxed);
        crate::core::Held::add(&self.router.core().held().retained, n);
    }

    fn retained_bytes_sub(&self, n: usize) {
        self.retained_bytes.fetch_sub(n as u64, Ordering::Relaxed);
        crate::core::Held::sub(&self.router.core().held().retained, n);
    }

    /// Retained messages whose topic matches `pattern`, expired ones skipped.
    pub fn retained_matching(&self, pattern: &Pattern) -> Vec<(String, Arc<Message>)> {
        let now = std::time::SystemTime::now();
        self.retained()
            .iter()
            .filter(|(t, m)| pattern.matches(t) && m.expiry.is_none_or(|e| e > now))
            .map(|(t, m)| (t.clone(), Arc::clone(m)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::connections::Told;

    /// An operator's close marks the holder as a kick would, and the first reason
    /// stays: a shutdown while closing does not turn it into another.
    #[test]
    fn the_first_reason_to_leave_stays() {
        let handoff = Arc::new(Handoff::default());
        let holder = Holder {
            notify: Arc::new(Notify::new()),
            handoff: Arc::clone(&handoff),
        };
        assert_eq!(handoff.leave(), None);
        handoff.closed_by_operator();
        assert_eq!(handoff.leave(), Some(Leave::Administrative));
        holder.kick(Leave::Shutdown);
        assert_eq!(handoff.leave(), Some(Leave::Administrative));
    }
}
