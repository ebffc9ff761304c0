//! Starting the STOMP listeners: plain TCP and WebSocket (`/ws`, subprotocols
//! `v10.stomp`, `v11.stomp`, `v12.stomp`).

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::codec::StompCodec;
use super::session::{self, Shared};
use crate::listener::ws::WsFramed;
use crate::listener::{accept_loop, next_connection_id};

/// Serves STOMP over TCP (TLS when `tls` is set) until `cancel` fires.
pub async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let max = shared.settings.max_connections;
    let c2 = cancel.clone();
    accept_loop(
        listener,
        "stomp",
        max,
        cancel,
        tracker,
        move |stream, peer, id, permit| {
            let shared = Arc::clone(&shared);
            let cancel = c2.clone();
            let tls = tls.clone();
            async move {
                let codec = StompCodec::new(shared.settings.limits);
                let peer = peer.to_string();
                let Some(acceptor) = tls else {
                    return serve_one(Framed::new(stream, codec), shared, id, peer, cancel, permit)
                        .await;
                };
                match tokio::time::timeout(shared.settings.connect_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(s)) => {
                        serve_one(Framed::new(s, codec), shared, id, peer, cancel, permit).await
                    }
                    Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::info!("TLS handshake timed out"),
                }
            }
        },
    )
    .await;
}

async fn serve_one<T: session::Transport>(
    t: T,
    shared: Arc<Shared>,
    id: u64,
    peer: String,
    cancel: CancellationToken,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    match permit {
        Some(_permit) => session::run(t, shared, id, peer, cancel).await,
        None => session::refuse(t, "connection limit reached").await,
    }
}

#[derive(Clone)]
struct WsState {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    limit: Arc<Semaphore>,
}

/// Serves STOMP over WebSocket on `/ws` (over TLS when `tls` is set) until `cancel` fires.
pub async fn serve_ws(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let app = ws_app(shared, cancel.clone(), tracker.clone());
    crate::listener::serve_ws_router(listener, app, tls, "stomp-ws", cancel, tracker).await;
}

/// The WebSocket listener's HTTP app (`/ws`; handlers need `ConnectInfo<SocketAddr>`).
/// Public for the session fuzz targets, which serve it over in-memory streams.
#[doc(hidden)]
pub fn ws_app(
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> axum::Router {
    let limit = Arc::new(Semaphore::new(shared.settings.max_connections));
    let state = WsState {
        shared,
        cancel,
        tracker,
        limit,
    };
    axum::Router::new()
        .route("/ws", get(upgrade))
        .with_state(state)
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(st): State<WsState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> impl IntoResponse {
    let max_frame = st.shared.settings.limits.max_frame_size + 64 * 1024;
    ws.protocols(["v12.stomp", "v11.stomp", "v10.stomp"])
        .max_message_size(max_frame)
        .on_upgrade(move |socket| {
            let id = next_connection_id();
            let span = tracing::info_span!("conn", protocol = "stomp-ws", id, %peer, user = tracing::field::Empty);
            let permit = Arc::clone(&st.limit).try_acquire_owned().ok();
            let shared = Arc::clone(&st.shared);
            let cancel = st.cancel.clone();
            let fut = async move {
                let t = WsFramed::new(socket, StompCodec::new(shared.settings.limits), true);
                match permit {
                    Some(_permit) => session::run(t, shared, id, peer.to_string(), cancel).await,
                    None => session::refuse(t, "connection limit reached").await,
                }
            }
            .instrument(span);
            // Track the session so shutdown waits for it.
            let handle = st.tracker.spawn(fut);
            async move {
                let _ = handle.await;
            }
        })
}
