//! Servers that clients connect to. The accept loops are shared: admission through the
//! listener's [`limit::Gate`] (its connection limit, and per peer address a connection
//! limit and a connect rate; over them the protocol's refusal is sent and the socket
//! closed), a tracing span per connection, and shutdown by one cancellation token.
//!
//! Besides, what the STOMP and MQTT sessions both need and no protocol owns: [`confirm`]
//! (answering a publisher once its message is durable, in order), [`ws`] and
//! [`ws_endpoint`] (WebSocket listeners), [`origin`] (cross-site checks), [`limit`] and
//! [`refuse`] (admission), [`packet_io`] (a framed stream that holds no buffer while idle),
//! [`connections`] (the open connections an operator lists and closes).

pub mod confirm;
pub mod connections;
pub mod limit;
pub mod mqtt;
pub mod origin;
pub mod packet_io;
pub mod refuse;
pub mod stomp;
pub mod ws;
pub mod ws_endpoint;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use limit::{ConnSlot, Gate, Refusal};

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A process-unique connection id, for spans and session ids.
pub fn next_connection_id() -> u64 {
    CONNECTION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// A listener's accepting side: the next connection, and what happens when the process
/// is out of file descriptors. Then `accept` fails while the connection waits in the
/// listen queue, and the listener stays readable: the reserve descriptor
/// ([`crate::fd_limit`]) is given up to accept the connection and refuse it at once in
/// `voice`, then taken again. The episode is logged when it starts and when it ends
/// (with the count refused), not at every refusal.
struct Acceptor<'a> {
    listener: &'a TcpListener,
    protocol: &'static str,
    voice: refuse::Voice,
    gate: &'a Gate,
    starved: Option<Starved>,
    other_errors: limit::LogEvery,
}

/// An episode without file descriptors.
struct Starved {
    since: std::time::Instant,
    refused: u64,
    /// When the last line about it was logged.
    logged: std::time::Instant,
}

/// How long a refusal for lack of file descriptors waits for the client's first bytes
/// (see [`Acceptor::refuse_one`]). Honest clients send them right after connecting.
const REFUSAL_WAITS_FOR_HELLO: std::time::Duration = std::time::Duration::from_millis(100);

/// How often a long episode without file descriptors is logged again, with its count.
const STARVED_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl<'a> Acceptor<'a> {
    fn new(
        listener: &'a TcpListener,
        protocol: &'static str,
        voice: refuse::Voice,
        gate: &'a Gate,
    ) -> Self {
        Acceptor {
            listener,
            protocol,
            voice,
            gate,
            starved: None,
            other_errors: limit::LogEvery::default(),
        }
    }

    /// The next accepted connection (Nagle off), or `None` once `cancel` fires.
    async fn next(&mut self, cancel: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return None,
                a = self.listener.accept() => a,
            };
            let e = match accepted {
                Ok((stream, peer)) => {
                    self.fed();
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => e,
            };
            if crate::fd_limit::is_out_of_files(&e) {
                self.starving();
                if self.refuse_one().await {
                    continue;
                }
            } else if e.kind() == std::io::ErrorKind::ConnectionAborted {
                // That connection went before it was accepted: nothing to do.
                continue;
            } else if let Some(count) = self.other_errors.hit() {
                tracing::warn!(
                    protocol = self.protocol,
                    listener = %self.gate.listener,
                    error = %e,
                    count,
                    "accept failed (count: since the last such line)"
                );
            }
            // Back off briefly (no reserve to refuse with, or another error), keep serving.
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
    }

    /// Out of descriptors: the first time, says so.
    fn starving(&mut self) {
        let now = std::time::Instant::now();
        match &mut self.starved {
            None => {
                tracing::warn!(
                    protocol = self.protocol,
                    listener = %self.gate.listener,
                    open_files_limit = crate::fd_limit::soft_limit(),
                    "out of file descriptors: new connections are refused until some close"
                );
                self.starved = Some(Starved {
                    since: now,
                    refused: 0,
                    logged: now,
                });
            }
            Some(s) if now.duration_since(s.logged) >= STARVED_LOG_EVERY => {
                tracing::warn!(
                    protocol = self.protocol,
                    listener = %self.gate.listener,
                    refused = s.refused,
                    seconds = now.duration_since(s.since).as_secs(),
                    "still out of file descriptors"
                );
                s.logged = now;
            }
            Some(_) => {}
        }
    }

    /// A connection accepted normally: an episode without descriptors is over.
    fn fed(&mut self) {
        if let Some(s) = self.starved.take() {
            tracing::info!(
                protocol = self.protocol,
                listener = %self.gate.listener,
                refused = s.refused,
                seconds = format_args!("{:.1}", s.since.elapsed().as_secs_f64()),
                "file descriptors available again (refused: connections refused meanwhile)"
            );
            // Taken again if a refusal could not.
            crate::fd_limit::keep_reserve();
        }
    }

    /// Frees the reserve descriptor, accepts the waiting connection with it, refuses it
    /// and takes the reserve back. `false`: nothing was done (no reserve, or its
    /// descriptor taken elsewhere first): the caller waits before trying again.
    ///
    /// The refusal waits up to [`REFUSAL_WAITS_FOR_HELLO`] for the client's first bytes:
    /// an MQTT client is answered at its protocol level only once its CONNECT is read,
    /// and a close with the client's bytes still to come would reach it as a reset that
    /// can discard the answer before it is read. A client that connects and says nothing
    /// holds this listener's refusals for that long, no more.
    async fn refuse_one(&mut self) -> bool {
        use futures::FutureExt;
        if !crate::fd_limit::release_reserve() {
            crate::fd_limit::keep_reserve();
            return false;
        }
        let done = match self.listener.accept().now_or_never() {
            // Nobody waits any more.
            None => true,
            Some(Ok((stream, _))) => {
                // `peek`, not `readable`: readiness can be a false positive.
                let mut first = [0u8; 1];
                let _ =
                    tokio::time::timeout(REFUSAL_WAITS_FOR_HELLO, stream.peek(&mut first)).await;
                if let Ok(stream) = stream.into_std() {
                    refuse::refuse_now(stream, self.voice, Refusal::Files);
                }
                self.gate.out_of_files();
                if let Some(s) = &mut self.starved {
                    s.refused += 1;
                }
                true
            }
            Some(Err(_)) => false,
        };
        crate::fd_limit::keep_reserve();
        done
    }
}

/// Accepts connections until `cancel` fires. Each goes through `gate`: an admitted one
/// is handed to `handle` with its slot; one over the listener's own limit is handed with
/// `None` (the protocol's refusal is said there, after TLS if any); one refused for its
/// peer address goes to `refuse` (at most [`limit::Gate::refusing`] at once; beyond,
/// closed without a word). Out of file descriptors, connections are refused at once in
/// `voice` (see [`Acceptor`]).
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop<F, Fut, R, RFut>(
    listener: TcpListener,
    protocol: &'static str,
    voice: refuse::Voice,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    handle: F,
    refuse: R,
) where
    F: Fn(TcpStream, SocketAddr, u64, Option<ConnSlot>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream, Refusal) -> RFut + Send + Sync + 'static,
    RFut: Future<Output = ()> + Send + 'static,
{
    let mut acceptor = Acceptor::new(&listener, protocol, voice, &gate);
    while let Some((stream, peer)) = acceptor.next(&cancel).await {
        let slot = match gate.admit(peer.ip()) {
            Ok(slot) => Some(slot),
            Err(Refusal::Listener) => None,
            Err(why) => {
                if let Some(p) = gate.refusing() {
                    let answer = refuse(stream, why);
                    tracker.spawn(async move {
                        answer.await;
                        drop(p);
                    });
                }
                continue;
            }
        };
        let id = next_connection_id();
        let span = tracing::info_span!(
            "conn",
            protocol,
            id,
            %peer,
            client_id = tracing::field::Empty,
            user = tracing::field::Empty
        );
        tracker.spawn(handle(stream, peer, id, slot).instrument(span));
    }
}

/// A connection's admission slot, for a WebSocket upgrade to take into its session: the
/// HTTP connection ends when it upgrades, the session lives on and keeps the slot.
#[derive(Debug, Clone, Default)]
pub struct SlotHold(Arc<std::sync::Mutex<Option<ConnSlot>>>);

impl SlotHold {
    /// Holds `slot` for a handler to take (public for the WebSocket fuzz target).
    #[doc(hidden)]
    pub fn new(slot: ConnSlot) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(slot))))
    }

    pub fn take(&self) -> Option<ConnSlot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Serves an HTTP router (a WebSocket listener, the admin API) until `cancel` fires,
/// over TLS when `tls` is set. Each connection goes through `gate` (refused: 429 or 503
/// on plain HTTP, closed on TLS) and is served by hyper with upgrades (the WebSocket
/// handshake) enabled; handlers find the peer as `ConnectInfo` and the connection's slot
/// as a [`SlotHold`] extension. On `cancel`, open connections finish their request and
/// close.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    gate: Arc<Gate>,
    protocol: &'static str,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let voice = match tls {
        None => refuse::Voice::Http,
        Some(_) => refuse::Voice::Silent,
    };
    let mut acceptor = Acceptor::new(&listener, protocol, voice, &gate);
    while let Some((stream, peer)) = acceptor.next(&cancel).await {
        let slot = match gate.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                if tls.is_none()
                    && let Some(p) = gate.refusing()
                {
                    tracker.spawn(async move {
                        refuse::answer_and_close(stream, &refuse::http_error(why)).await;
                        drop(p);
                    });
                }
                continue;
            }
        };
        let hold = SlotHold(Arc::new(std::sync::Mutex::new(Some(slot))));
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)))
            .layer(axum::Extension(hold));
        let acceptor = tls.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            match acceptor {
                None => serve_http_conn(stream, app, peer, protocol, cancel).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(s)) => serve_http_conn(s, app, peer, protocol, cancel).await,
                        Ok(Err(e)) => {
                            tracing::info!(protocol, %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::info!(protocol, %peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_http_conn<S>(
    io: S,
    app: axum::Router,
    peer: SocketAddr,
    protocol: &'static str,
    cancel: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(protocol, %peer, error = %e, "HTTP connection ended with an error");
    }
}
