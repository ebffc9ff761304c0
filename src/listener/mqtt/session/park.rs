//! Idle plain-TCP MQTT connections wait here, all in one poller, instead of each in a
//! task of its own.
//!
//! A tokio task and its socket's reactor registration cost about 1 KiB per connection
//! before any session state, and a broker's connections are mostly idle (Mosquitto
//! holds one in about 0.7 KiB). So a connection that has had nothing to do for
//! `mqtt.park_idle_after`, with nothing owed to its client and nothing waiting for the
//! store, gives its task up: its socket moves from tokio's reactor into this poller's
//! own epoll set (through mio, the crate under tokio's reactor), its session is kept
//! here as it was, and the task ends.
//!
//! It is revived (a new task on the same socket with the same session and a span with
//! the same fields) when its socket becomes readable (a packet, or the peer closing),
//! when its notifier fires (a delivery, a takeover, shutdown) or when its keep-alive
//! deadline passes, so the revived session ends it as before. Nothing is read or lost
//! meanwhile: bytes wait in the kernel's socket buffer, deliveries in the core's queue.
//! A connection holding part of a packet is not idle and stays in its task.
//!
//! TLS and WebSocket connections keep state outside the socket and are never parked.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use futures::{Sink, Stream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::connection::{Connection, live};
use super::end::End;
use super::transport::Transport;
use crate::listener::mqtt::codec::{Codec, CodecError, In, Out};
use crate::listener::packet_io::PacketIo;

/// A parked connection's socket. Its codec is not kept: between packets it holds only
/// the protocol version and packet size limits, which the session has.
pub struct Detached {
    pub(super) stream: std::net::TcpStream,
}

/// What became of a session handed to [`park`].
pub(super) enum Parking<T> {
    Parked,
    /// Not parked (no poller, something buffered, shutting down): serve on.
    Kept(Connection<T>),
    /// The socket was lost taking it from tokio: the session must end.
    Lost(Connection<Gone>, std::io::Error),
}

/// The poller, shared by the MQTT TCP listeners of one daemon.
#[derive(Debug)]
pub struct Parker {
    shared: Arc<Shared>,
}

struct Shared {
    /// Its place in [`POLLERS`], which its sessions' wakers name.
    index: usize,
    registry: mio::Registry,
    inner: Mutex<Inner>,
    /// Keys of parked sessions whose notifier fired.
    rung: Mutex<Vec<usize>>,
    /// Wakes the poller's task (a notifier rang).
    wake: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("parked", &self.inner().parked.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Boxed: a slab is one vector, and one grown by doubling would hold up to twice
    /// the sessions' size.
    parked: Slab<Box<Parked>>,
    /// Keep-alive deadlines of parked sessions, earliest first.
    deadlines: BTreeSet<(Instant, usize)>,
    /// Shutting down: nothing more is parked.
    closed: bool,
}

struct Parked {
    session: Connection<Detached>,
    /// Registered with the session's notifier; its waker rings this key.
    _notified: Pin<Box<OwnedNotified>>,
}

/// A parked session's keep-alive deadline: not kept with it (every parked connection
/// would carry 16 bytes more); its inputs do not change while it is parked.
fn deadline<T>(s: &Connection<T>) -> Option<Instant> {
    s.keep_alive().map(|k| s.last_recv.instant() + k)
}

/// Every poller of the process, for the wakers of parked sessions to find theirs
/// (a daemon has one; tests and embedders may start more). Never shrinks: an entry is
/// 8 bytes per poller ever started.
static POLLERS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Bits of a bell's word that hold the session's key; the poller's index is above.
const KEY_BITS: u32 = 40;

/// The waker a parked session's notifier holds: its poller's index and its key in one
/// word, so that it allocates nothing (an `Arc` per parked session would be 32 bytes
/// more each). Rings by putting the key on its poller's list.
fn bell(poller: usize, key: usize) -> Waker {
    let word = (poller << KEY_BITS) | key;
    // SAFETY: the data pointer is a plain number, never dereferenced; the vtable's
    // functions only copy it or read it, from any thread.
    unsafe { Waker::from_raw(RawWaker::new(word as *const (), &BELL)) }
}

static BELL: RawWakerVTable =
    RawWakerVTable::new(|word| RawWaker::new(word, &BELL), ring, ring, |_| {});

fn ring(word: *const ()) {
    let word = word as usize;
    let (poller, key) = (word >> KEY_BITS, word & ((1 << KEY_BITS) - 1));
    let shared = lock(&POLLERS).get(poller).and_then(Weak::upgrade);
    if let Some(shared) = shared {
        lock(&shared.rung).push(key);
        shared.wake.notify_one();
    }
}

/// Connections parked now, over every poller of the process (the admin API's `/mqtt`).
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// How many MQTT connections wait parked now.
pub fn parked_now() -> usize {
    PARKED.load(Ordering::Relaxed)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

impl Parker {
    /// Starts the poller's task on `tracker`; it revives every parked session and ends
    /// when `cancel` fires.
    pub fn start(tracker: &TaskTracker, cancel: CancellationToken) -> std::io::Result<Self> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let mut pollers = lock(&POLLERS);
        let shared = Arc::new(Shared {
            index: pollers.len(),
            registry,
            inner: Mutex::new(Inner {
                parked: Slab::new(),
                deadlines: BTreeSet::new(),
                closed: false,
            }),
            rung: Mutex::new(Vec::new()),
            wake: Notify::new(),
        });
        pollers.push(Arc::downgrade(&shared));
        drop(pollers);
        // SAFETY: the `mio::Poll` owns its epoll descriptor and keeps it open, unchanged,
        // for as long as the `AsyncFd` owns the `Poll`.
        let fd = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        tracker.spawn(
            poller(fd, Arc::clone(&shared), tracker.clone(), cancel)
                .instrument(tracing::info_span!("mqtt_parker")),
        );
        Ok(Parker { shared })
    }
}

/// Parks an idle session, or gives it back.
pub(super) fn park<T: Transport>(s: Connection<T>) -> Parking<T> {
    let Some(parker) = s.state.parker() else {
        return Parking::Kept(s);
    };
    let shared = Arc::clone(&parker.shared);
    let Some(fd) = s.t.park_fd() else {
        return Parking::Kept(s);
    };
    // Held until the session is in the slab: an event for its key waits for it.
    let mut inner = shared.inner();
    if inner.closed {
        return Parking::Kept(s);
    }
    let key = inner.parked.vacant_key();
    // In the poller's set first, while tokio still has it: a socket can be in both.
    if let Err(e) = shared
        .registry
        .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
    {
        tracing::debug!(error = %e, "cannot park the connection; it stays in its task");
        return Parking::Kept(s);
    }
    // What the session had in flight and is over, it does not carry while parked.
    s.data().tidy();
    // Nor the room its subscriptions' queues kept from their last burst.
    for (_, c) in &s.consumers {
        c.release_idle_memory();
    }
    let (t, s) = s.swap_transport(Gone);
    // Closed on failure, which also takes it out of the poller's set.
    let detached = match t.detach() {
        Ok(d) => d,
        Err(e) => return Parking::Lost(s, e),
    };
    let (Gone, mut session) = s.swap_transport(detached);
    session.timer = None;
    let deadline = deadline(&session);
    let mut notified = Box::pin(Arc::clone(&session.notify).notified_owned());
    let bell = bell(shared.index, key);
    // Registers the waker; ready already if the notifier fired since the task last
    // looked (a stored permit): then it is revived at once.
    let rang = notified
        .as_mut()
        .poll(&mut Context::from_waker(&bell))
        .is_ready();
    // The poller sleeps until the earliest deadline it knew of: an earlier one wakes it.
    let earliest = deadline.filter(|d| inner.deadlines.first().is_none_or(|f| *d < f.0));
    if let Some(d) = deadline {
        inner.deadlines.insert((d, key));
    }
    inner.parked.insert(Box::new(Parked {
        session,
        _notified: notified,
    }));
    drop(inner);
    PARKED.fetch_add(1, Ordering::Relaxed);
    if rang {
        lock(&shared.rung).push(key);
    }
    if rang || earliest.is_some() {
        shared.wake.notify_one();
    }
    tracing::trace!("parked");
    Parking::Parked
}

/// The poller's task: waits for parked sockets, notifiers and deadlines, and revives.
async fn poller(
    mut fd: AsyncFd<mio::Poll>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let mut events = Events::with_capacity(1024);
    let mut due: Vec<usize> = Vec::new();
    loop {
        let next = shared.inner().deadlines.first().map(|d| d.0);
        tokio::select! {
            _ = cancel.cancelled() => break,
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    match guard.get_inner_mut().poll(&mut events, Some(std::time::Duration::ZERO)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            // Nothing parked could be woken by its socket: revive them
                            // all and park no more.
                            tracing::error!(error = %e, "MQTT idle-connection poller failed");
                            break;
                        }
                    }
                    if events.is_empty() {
                        guard.clear_ready();
                    }
                    due.extend(events.iter().map(|e| e.token().0));
                }
                Err(e) => {
                    tracing::error!(error = %e, "MQTT idle-connection poller failed");
                    break;
                }
            },
            _ = shared.wake.notified() => {}
            _ = sleep_until_opt(next) => {}
        }
        due.append(&mut lock(&shared.rung));
        {
            let now = Instant::now();
            let inner = shared.inner();
            due.extend(
                inner
                    .deadlines
                    .iter()
                    .take_while(|(d, _)| *d <= now)
                    .map(|(_, k)| *k),
            );
        }
        // A key reused since its event was queued revives a session that has nothing
        // to do yet: it is parked again when idle.
        for key in due.drain(..) {
            revive(&shared, &tracker, key);
        }
    }
    // Shutting down (or the poller broke): every parked session goes back to a task,
    // where it sees why and ends as a live one does.
    let keys: Vec<usize> = {
        let mut inner = shared.inner();
        inner.closed = true;
        inner.parked.iter().map(|(k, _)| k).collect()
    };
    for key in keys {
        revive(&shared, &tracker, key);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Takes a parked session out of the poller and serves it in a new task.
fn revive(shared: &Shared, tracker: &TaskTracker, key: usize) {
    let parked = {
        let mut inner = shared.inner();
        let Some(p) = inner.parked.try_remove(key) else {
            return;
        };
        if let Some(d) = deadline(&p.session) {
            inner.deadlines.remove(&(d, key));
        }
        p
    };
    PARKED.fetch_sub(1, Ordering::Relaxed);
    let Parked { session, .. } = *parked;
    let _ = shared
        .registry
        .deregister(&mut SourceFd(&session.t.stream.as_raw_fd()));
    let (Detached { stream }, session) = session.swap_transport(Gone);
    let codec = Codec::connected(
        session.version,
        session.state.settings.max_packet_size,
        session.client_max_packet.map(std::num::NonZeroU32::get),
    );
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |p| p.to_string());
    let span = tracing::info_span!(
        "conn",
        protocol = "mqtt",
        id = session.conn.id(),
        peer,
        client_id = &*session.client_id,
        user = session.principal.name()
    );
    match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => {
            let (Gone, session) = session.swap_transport(PacketIo::new(stream, codec));
            tracker.spawn(live(session).instrument(span));
        }
        Err(e) => {
            let ended = End {
                code: None,
                reason: format!("connection lost reviving it: {e}"),
                will: true,
            };
            tracker.spawn(async move { session.finish(ended).await }.instrument(span));
        }
    }
}

/// A transport whose socket is gone: reads end, writes fail. A session on it can
/// still be finished (will, session state).
pub(super) struct Gone;

fn not_connected() -> CodecError {
    CodecError::Io(std::io::ErrorKind::NotConnected.into())
}

impl Stream for Gone {
    type Item = Result<In, CodecError>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(None)
    }
}

impl Sink<Out> for Gone {
    type Error = CodecError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), CodecError>> {
        Poll::Ready(Err(not_connected()))
    }

    fn start_send(self: Pin<&mut Self>, _: Out) -> Result<(), CodecError> {
        Err(not_connected())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), CodecError>> {
        Poll::Ready(Err(not_connected()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), CodecError>> {
        Poll::Ready(Ok(()))
    }
}

impl Transport for Gone {
    fn set_max_outbound(&mut self, _: u32) {}
}

/// Where the daemon's poller is kept (in `MqttState`): started by the first TCP
/// listener.
pub type ParkerCell = OnceLock<Parker>;

#[cfg(test)]
mod tests {
    /// A parked connection is one allocation of this size (and its notifier's waiter):
    /// at 224 bytes or less it takes mimalloc's 224-byte size class, above it the
    /// 256-byte one, 32 bytes more for every idle connection.
    #[test]
    fn a_parked_session_fits_in_224_bytes() {
        let size = std::mem::size_of::<super::Parked>();
        assert!(size <= 224, "{size}");
    }
}
