//! The client connections open now, for the admin API to list and close (`GET
//! /connections`, `DELETE /connections/{id}`): each session registers as it starts (its
//! [`Registration`] removes it when the session ends, however it ends), names its user
//! and client id once it knows them, and watches the token an operator's close cancels.
//!
//! STOMP sessions (TCP and WebSocket) register. MQTT sessions do not yet: they are
//! counted per byte (an idle one is parked with its buffers freed) and leave through
//! their session's own kick, which this would have to reach.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// One open connection as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OpenConnection {
    /// The process-unique connection id ([`crate::listener::next_connection_id`]).
    pub id: u64,
    pub protocol: &'static str,
    /// The peer's address (`IP:PORT`).
    pub peer: String,
    pub since_unix_ms: u64,
    /// The user it logged in as, once it did (`anonymous` without a login).
    pub user: Option<String>,
    /// Its client id, for a protocol that has one.
    pub client_id: Option<String>,
}

#[derive(Debug)]
struct Entry {
    shown: OpenConnection,
    close: CancellationToken,
    closed_by_operator: bool,
}

static OPEN: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());

fn open() -> MutexGuard<'static, BTreeMap<u64, Entry>> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A registered connection; dropped when its session ends, which unlists it.
#[derive(Debug)]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        open().remove(&self.0);
    }
}

/// Lists connection `id`; its session watches the returned token (a child of
/// `cancel`, the listener's shutdown), which an operator's [`close`] cancels.
pub fn register(
    id: u64,
    protocol: &'static str,
    peer: &str,
    cancel: &CancellationToken,
) -> (Registration, CancellationToken) {
    let close = cancel.child_token();
    let since_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    open().insert(
        id,
        Entry {
            shown: OpenConnection {
                id,
                protocol,
                peer: peer.to_owned(),
                since_unix_ms,
                user: None,
                client_id: None,
            },
            close: close.clone(),
            closed_by_operator: false,
        },
    );
    (Registration(id), close)
}

/// Names the user (and client id) of connection `id` once it logged in.
pub fn identify(id: u64, user: &str, client_id: Option<&str>) {
    if let Some(e) = open().get_mut(&id) {
        e.shown.user = Some(user.to_owned());
        e.shown.client_id = client_id.map(str::to_owned);
    }
}

/// Every open connection, by id.
pub fn list() -> Vec<OpenConnection> {
    open().values().map(|e| e.shown.clone()).collect()
}

/// Closes connection `id` (its session says why to its client, then ends); `None` when
/// there is no such connection.
pub fn close(id: u64) -> Option<OpenConnection> {
    let mut open = open();
    let e = open.get_mut(&id)?;
    e.closed_by_operator = true;
    e.close.cancel();
    Some(e.shown.clone())
}

/// Whether connection `id` is ending because an operator closed it (not a shutdown).
pub fn closed_by_operator(id: u64) -> bool {
    open().get(&id).is_some_and(|e| e.closed_by_operator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_until_dropped_and_closed_through_the_token() {
        let shutdown = CancellationToken::new();
        let id = crate::listener::next_connection_id();
        let (reg, token) = register(id, "stomp", "127.0.0.1:5000", &shutdown);
        identify(id, "alice", None);
        let shown = list().into_iter().find(|c| c.id == id).unwrap();
        assert_eq!(shown.user.as_deref(), Some("alice"));
        assert!(!closed_by_operator(id));
        assert!(close(id).is_some());
        assert!(token.is_cancelled() && closed_by_operator(id));
        assert!(!shutdown.is_cancelled(), "one connection, not the listener");
        drop(reg);
        assert!(close(id).is_none());
        assert!(list().iter().all(|c| c.id != id));
    }
}
