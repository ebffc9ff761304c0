//! The client connections open now, for the admin API to list and close (`GET
//! /connections`, `DELETE /connections/{id}`): each session registers as it starts (its
//! [`Registration`] removes it when the session ends, however it ends), names its user
//! and client id once it knows them, and is closed through what it registered with.
//!
//! STOMP sessions register at accept with a cancellation token they watch. MQTT
//! sessions register once CONNECT is accepted, with a kick through the session's own
//! takeover mechanism ([`crate::listener::mqtt::state::Holder`]): an idle MQTT
//! connection is parked without a task (see `mqtt::session::park`), so it watches no
//! token, and its registration is the connection id it already carried. An entry here
//! is 128 bytes (plus the map's share), outside the connection's task.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::listener::mqtt::state::{Holder, Leave};

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
    /// The session is told as a takeover tells it (MQTT), as
    /// [`Leave::Administrative`]: no allocation of its own.
    Kick(Holder),
}

/// Who a connection logged in as.
enum User {
    NotYet,
    Anonymous,
    /// Shared with the session's principal.
    Named(Arc<str>),
}

/// One per open connection, so kept compact: no `String`s (the user and client id are
/// shared with the session), no box (see `entry_is_small`).
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

static OPEN: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());

fn open() -> MutexGuard<'static, BTreeMap<u64, Entry>> {
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
        Entry {
            listener,
            peer,
            since_unix_ms,
            user: User::NotYet,
            client_id: None,
            close,
            closed_by_operator: false,
        },
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

/// Lists MQTT connection `id` (from `listener`), closed by kicking `holder` (the
/// session's takeover mechanism, which reaches a parked connection too).
pub fn register_holder(
    id: u64,
    listener: &'static str,
    peer: SocketAddr,
    holder: Holder,
) -> Registration {
    insert(id, listener, peer, Closer::Kick(holder))
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
        Closer::Kick(holder) => holder.kick(Leave::Administrative),
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
    use crate::listener::mqtt::state::Handoff;
    use tokio::sync::Notify;

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

    #[test]
    fn a_holder_is_closed_by_a_kick() {
        let id = crate::listener::next_connection_id();
        let handoff = Arc::new(Handoff::default());
        let holder = Holder {
            conn: id,
            notify: Arc::new(Notify::new()),
            handoff: Arc::clone(&handoff),
        };
        let reg = register_holder(id, "mqtt", peer(), holder);
        identify(id, Some("bob".into()), Some("sensor-1".into()));
        let shown = list().into_iter().find(|c| c.id == id).unwrap();
        assert_eq!((shown.protocol, shown.listener), ("mqtt", "mqtt"));
        assert_eq!(shown.client_id.as_deref(), Some("sensor-1"));
        assert_eq!(shown.user.as_deref(), Some("bob"));
        assert_eq!(handoff.leave(), None);
        assert!(close(id).is_some());
        assert_eq!(handoff.leave(), Some(Leave::Administrative));
        // A later reason does not replace the first (shutdown while closing).
        holder_kick_again(&handoff, id);
        assert_eq!(handoff.leave(), Some(Leave::Administrative));
        drop(reg);
        assert!(list().iter().all(|c| c.id != id));
    }

    fn holder_kick_again(handoff: &Arc<Handoff>, id: u64) {
        let again = Holder {
            conn: id,
            notify: Arc::new(Notify::new()),
            handoff: Arc::clone(handoff),
        };
        again.kick(Leave::Shutdown);
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
