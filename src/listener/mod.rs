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

/// The next accepted connection (Nagle off), or `None` once `cancel` fires. Both accept
/// loops share it so a failed accept is handled one way.
async fn accept_next(
    listener: &TcpListener,
    protocol: &'static str,
    cancel: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                tracing::warn!(protocol, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections until `cancel` fires. Each goes through `gate`: an admitted one
/// is handed to `handle` with its slot; one over the listener's own limit is handed with
/// `None` (the protocol's refusal is said there, after TLS if any); one refused for its
/// peer address goes to `refuse` (at most [`limit::Gate::refusing`] at once; beyond,
/// closed without a word).
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop<F, Fut, R, RFut>(
    listener: TcpListener,
    protocol: &'static str,
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
    while let Some((stream, peer)) = accept_next(&listener, protocol, &cancel).await {
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
    while let Some((stream, peer)) = accept_next(&listener, protocol, &cancel).await {
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
