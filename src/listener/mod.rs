//! Servers that clients connect to. The accept loop is shared: a connection limit (a
//! semaphore; over it the protocol's refusal is sent and the socket closed), a tracing
//! span per connection, and shutdown by one cancellation token.

pub mod mqtt;
pub mod packet_io;
pub mod stomp;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A process-unique connection id, for spans and session ids.
pub fn next_connection_id() -> u64 {
    CONNECTION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// Accepts connections until `cancel` fires. `handle` gets the socket, the peer, a
/// connection id and the permit (`None` when over the limit: refuse and close).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, u64, Option<OwnedSemaphorePermit>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                tracing::warn!(protocol, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let permit = Arc::clone(&limit).try_acquire_owned().ok();
        if permit.is_none() {
            tracing::warn!(protocol, %peer, max_connections, "connection limit reached; refusing");
        }
        let id = next_connection_id();
        let span = tracing::info_span!(
            "conn",
            protocol,
            id,
            %peer,
            client_id = tracing::field::Empty,
            user = tracing::field::Empty
        );
        tracker.spawn(handle(stream, peer, id, permit).instrument(span));
    }
}

/// Serves an HTTP router (a WebSocket listener) over TLS until `cancel` fires: each
/// connection is TLS-accepted, then served by hyper with upgrades (the WebSocket
/// handshake) enabled. `axum::serve` speaks plain TCP only.
pub async fn serve_http_tls(
    listener: TcpListener,
    app: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
    protocol: &'static str,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(protocol, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(protocol, %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(protocol, %peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Serves a WebSocket listener's router until `cancel` fires: over TLS when `tls` is set,
/// else plain, with the peer address available to handlers as `ConnectInfo`.
pub async fn serve_ws_router(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    protocol: &'static str,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    if let Some(acceptor) = tls {
        return serve_http_tls(listener, app, acceptor, protocol, cancel, tracker).await;
    }
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { cancel.cancelled().await })
    .await;
    if let Err(e) = served {
        tracing::error!(protocol, error = %e, "WebSocket listener failed");
    }
}
