//! Starting the STOMP listeners: plain TCP and WebSocket (`/ws`, subprotocols
//! `v10.stomp`, `v11.stomp`, `v12.stomp`).

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::codec::StompCodec;
use super::session::{self, Shared};
use crate::listener::limit::{ConnSlot, Gate};
use crate::listener::origin::{Client, WsPolicy};
use crate::listener::ws::WsFramed;
use crate::listener::{SlotHold, accept_loop, next_connection_id, refuse};

/// Serves STOMP over TCP (TLS when `tls` is set) until `cancel` fires.
pub async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let c2 = cancel.clone();
    let plain = tls.is_none();
    accept_loop(
        listener,
        "stomp",
        gate,
        cancel,
        tracker,
        move |stream, peer, id, slot| {
            let shared = Arc::clone(&shared);
            let cancel = c2.clone();
            let tls = tls.clone();
            async move {
                let codec = StompCodec::new(shared.settings.limits);
                let peer = peer.to_string();
                let Some(acceptor) = tls else {
                    return serve_one(Framed::new(stream, codec), shared, id, peer, cancel, slot)
                        .await;
                };
                match tokio::time::timeout(shared.settings.connect_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(s)) => {
                        serve_one(Framed::new(s, codec), shared, id, peer, cancel, slot).await
                    }
                    Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::info!("TLS handshake timed out"),
                }
            }
        },
        // A refusal over TLS would cost a handshake: those are closed without a word.
        move |stream, why| async move {
            if plain {
                refuse::answer_and_close(stream, &refuse::stomp_error(why)).await;
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
    slot: Option<ConnSlot>,
) {
    match slot {
        Some(_slot) => session::run(t, shared, id, peer, cancel).await,
        None => session::refuse(t, "connection limit reached").await,
    }
}

#[derive(Clone)]
struct WsState {
    shared: Arc<Shared>,
    /// For clients whose upgrade carried an `Origin` (browsers): no loopback anonymous
    /// grant unless `stomp.ws_allow_anonymous_browsers`.
    browser_shared: Arc<Shared>,
    policy: Arc<WsPolicy>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Serves STOMP over WebSocket on `/ws` (over TLS when `tls` is set) until `cancel` fires.
#[allow(clippy::too_many_arguments)]
pub async fn serve_ws(
    listener: TcpListener,
    shared: Arc<Shared>,
    browser_shared: Arc<Shared>,
    policy: WsPolicy,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let app = ws_app(
        shared,
        browser_shared,
        policy,
        Arc::clone(&gate),
        cancel.clone(),
        tracker.clone(),
    );
    crate::listener::serve_http(listener, app, tls, gate, "stomp-ws", cancel, tracker).await;
}

/// The WebSocket listener's HTTP app (`/ws`; handlers need `ConnectInfo<SocketAddr>` and
/// the connection's [`SlotHold`](crate::listener::SlotHold) as extensions). Public for the
/// session fuzz targets, which serve it over in-memory streams.
#[doc(hidden)]
pub fn ws_app(
    shared: Arc<Shared>,
    browser_shared: Arc<Shared>,
    policy: WsPolicy,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> axum::Router {
    let state = WsState {
        shared,
        browser_shared,
        policy: Arc::new(policy),
        gate,
        cancel,
        tracker,
    };
    axum::Router::new()
        .route("/ws", get(upgrade))
        .with_state(state)
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(st): State<WsState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Extension(hold): Extension<SlotHold>,
    headers: HeaderMap,
) -> Response {
    let shared = match st.policy.check(&headers, st.shared.loopback) {
        Ok(Client::NotBrowser) => Arc::clone(&st.shared),
        Ok(Client::Browser) => Arc::clone(&st.browser_shared),
        Err(origin) => return crate::listener::origin::refuse(&st.gate, peer, &origin),
    };
    let max_frame = shared.settings.limits.max_frame_size + 64 * 1024;
    let slot = hold.take();
    ws.protocols(["v12.stomp", "v11.stomp", "v10.stomp"])
        .max_message_size(max_frame)
        .on_upgrade(move |socket| {
            let id = next_connection_id();
            let span = tracing::info_span!("conn", protocol = "stomp-ws", id, %peer, user = tracing::field::Empty);
            let cancel = st.cancel.clone();
            let fut = async move {
                let t = WsFramed::new(socket, StompCodec::new(shared.settings.limits), true);
                serve_one(t, shared, id, peer.to_string(), cancel, slot).await
            }
            .instrument(span);
            // Track the session so shutdown waits for it.
            let handle = st.tracker.spawn(fut);
            async move {
                let _ = handle.await;
            }
        })
}
