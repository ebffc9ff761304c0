//! The client connections open now, for the admin API to list and close (`GET
//! /connections`, `DELETE /connections/{id}`): each session registers as it starts (its
//! [`Registration`] removes it when the session ends, however it ends), names its user
//! and client id once it knows them, and is closed through what it registered with.
//!
//! STOMP sessions register at accept with a cancellation token they watch. MQTT
//! sessions register once CONNECT is accepted, with the way their protocol tells a
//! session to leave ([`Told`]: the MQTT session's own takeover mechanism): an idle MQTT
//! connection is parked without a task (see `mqtt::session::park`), so it watches no
//! token, and its registration is the connection id it already carried. An entry here
//! is 128 bytes (plus its share of the map), outside the connection's task.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A session told to leave its protocol's own way (an MQTT session: as a takeover
/// tells it, with the reason "administrative action"), then woken by the notifier it
/// registered with.
pub trait Told: Send + Sync {
    /// Marks the session as closed by an operator; a session told to leave already
    /// keeps its first reason.
    fn closed_by_operator(&self);
}

/// What a principal without a user name is called ([`crate::auth::Principal::name`]).
const ANONYMOUS: &str = "anonymous";

/// One open connection as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OpenConnection {
    /// The process-unique connection id ([`crate::listener::next_connection_id`]).
    pub id: u64,
    /// `stomp` or `mqtt`.
    pub protocol: &'static str,
    /// The listener it came through (`stomp`, `stomp-ws`, `mqtt`, `mqtt-ws`).
    pub listener: &'static str,
    /// The peer's address (`IP:PORT`).
    pub peer: String,
    pub since_unix_ms: u64,
    /// The user it logged in as, once it did (`anonymous` without a login).
    pub user: Option<String>,
    /// Its client id, for a protocol that has one.
    pub client_id: Option<String>,
}

/// How an operator's close reaches the session.
enum Closer {
    /// The session watches the token (STOMP).
    Token(CancellationToken),
    /// The session is told ([`Told`]), then woken: shares what the session already
    /// holds, no allocation of its own.
    Told(Arc<Notify>, Arc<dyn Told>),
}

/// Who a connection logged in as.
enum User {
    NotYet,
    Anonymous,
    /// Shared with the session's principal.
    Named(Arc<str>),
}

/// One per open connection, so kept compact: no `String`s (the user and client id are
/// shared with the session; see `entry_is_small`). Boxed in the map: connection ids
/// only grow, so the map's nodes split on the right and stay about half full, and
/// half-empty slots of pointers waste less than half-empty slots of entries (an idle
/// connection's entry and its share of the map: 250 → 150 bytes).
struct Entry {
    listener: &'static str,
    peer: SocketAddr,
    since_unix_ms: u64,
    user: User,
    client_id: Option<Arc<str>>,
    close: Closer,
    closed_by_operator: bool,
}

impl Entry {
    fn shown(&self, id: u64) -> OpenConnection {
        OpenConnection {
            id,
            protocol: protocol_of(self.listener),
            listener: self.listener,
            peer: self.peer.to_string(),
            since_unix_ms: self.since_unix_ms,
            user: match &self.user {
                User::NotYet => None,
                User::Anonymous => Some(ANONYMOUS.to_owned()),
                User::Named(u) => Some(u.to_string()),
            },
            client_id: self.client_id.as_deref().map(str::to_owned),
        }
    }
}

static OPEN: Mutex<BTreeMap<u64, Box<Entry>>> = Mutex::new(BTreeMap::new());

fn open() -> MutexGuard<'static, BTreeMap<u64, Box<Entry>>> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A registered connection; dropped when its session ends, which unlists it.
#[derive(Debug)]
pub struct Registration(u64);

impl Registration {
    /// The connection id it lists.
    pub fn id(&self) -> u64 {
        self.0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        open().remove(&self.0);
    }
}

/// The listener's protocol.
fn protocol_of(listener: &'static str) -> &'static str {
    listener.strip_suffix("-ws").unwrap_or(listener)
}

fn insert(id: u64, listener: &'static str, peer: SocketAddr, close: Closer) -> Registration {
    let since_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    open().insert(
        id,
        Box::new(Entry {
            listener,
            peer,
            since_unix_ms,
            user: User::NotYet,
            client_id: None,
            close,
            closed_by_operator: false,
        }),
    );
    Registration(id)
}

/// Lists connection `id` (from `listener`); its session watches the returned token (a
/// child of `cancel`, the listener's shutdown), which an operator's [`close`] cancels.
pub fn register(
    id: u64,
    listener: &'static str,
    peer: SocketAddr,
    cancel: &CancellationToken,
) -> (Registration, CancellationToken) {
    let close = cancel.child_token();
    let r = insert(id, listener, peer, Closer::Token(close.clone()));
    (r, close)
}

/// Lists connection `id` (from `listener`), closed by telling `session`, then waking
/// `notify` (an MQTT session's takeover mechanism, which reaches a parked connection
/// too).
pub fn register_told(
    id: u64,
    listener: &'static str,
    peer: SocketAddr,
    notify: Arc<Notify>,
    session: Arc<dyn Told>,
) -> Registration {
    insert(id, listener, peer, Closer::Told(notify, session))
}

/// Names the user (`None`: anonymous, as [`crate::auth::Principal::user`]) and client id of
/// connection `id` once it logged in.
pub fn identify(id: u64, user: Option<Arc<str>>, client_id: Option<Arc<str>>) {
    if let Some(e) = open().get_mut(&id) {
        e.user = user.map_or(User::Anonymous, User::Named);
        e.client_id = client_id;
    }
}

/// Every open connection, by id.
pub fn list() -> Vec<OpenConnection> {
    open().iter().map(|(id, e)| e.shown(*id)).collect()
}

/// Closes connection `id` (its session says why to its client, then ends); `None` when
/// there is no such connection.
pub fn close(id: u64) -> Option<OpenConnection> {
    let mut open = open();
    let e = open.get_mut(&id)?;
    e.closed_by_operator = true;
    match &e.close {
        Closer::Token(t) => t.cancel(),
        Closer::Told(notify, session) => {
            session.closed_by_operator();
            notify.notify_one();
        }
    }
    Some(e.shown(id))
}

/// Whether connection `id` is ending because an operator closed it (not a shutdown).
pub fn closed_by_operator(id: u64) -> bool {
    open().get(&id).is_some_and(|e| e.closed_by_operator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn registered_until_dropped_and_closed_through_the_token() {
        let shutdown = CancellationToken::new();
        let id = crate::listener::next_connection_id();
        let (reg, token) = register(id, "stomp-ws", peer(), &shutdown);
        assert_eq!(list().into_iter().find(|c| c.id == id).unwrap().user, None);
        identify(id, None, None);
        let shown = list().into_iter().find(|c| c.id == id).unwrap();
        assert_eq!(shown.user.as_deref(), Some("anonymous"));
        assert_eq!((shown.protocol, shown.listener), ("stomp", "stomp-ws"));
        assert_eq!(shown.peer, "127.0.0.1:5000");
        assert!(!closed_by_operator(id));
        assert!(close(id).is_some());
        assert!(token.is_cancelled() && closed_by_operator(id));
        assert!(!shutdown.is_cancelled(), "one connection, not the listener");
        drop(reg);
        assert!(close(id).is_none());
        assert!(list().iter().all(|c| c.id != id));
    }

    #[derive(Default)]
    struct Session(AtomicBool);

    impl Told for Session {
        fn closed_by_operator(&self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_told_session_is_told_and_woken() {
        let id = crate::listener::next_connection_id();
        let session = Arc::new(Session::default());
        let notify = Arc::new(Notify::new());
        let reg = register_told(id, "mqtt", peer(), Arc::clone(&notify), session.clone());
        identify(id, Some("bob".into()), Some("sensor-1".into()));
        let shown = list().into_iter().find(|c| c.id == id).unwrap();
        assert_eq!((shown.protocol, shown.listener), ("mqtt", "mqtt"));
        assert_eq!(shown.client_id.as_deref(), Some("sensor-1"));
        assert_eq!(shown.user.as_deref(), Some("bob"));
        assert!(!session.0.load(Ordering::Relaxed));
        assert!(close(id).is_some());
        assert!(session.0.load(Ordering::Relaxed) && closed_by_operator(id));
        // The wake-up is kept for the session's next wait.
        tokio::time::timeout(std::time::Duration::from_secs(1), notify.notified())
            .await
            .unwrap();
        drop(reg);
        assert!(list().iter().all(|c| c.id != id));
    }

    /// Every MQTT connection, idle ones too, has an entry: it stays small.
    #[test]
    fn entry_is_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 128,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }
}
