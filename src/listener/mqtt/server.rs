//! Starting the MQTT listeners: TCP and WebSocket (`/mqtt`, subprotocol `mqtt`).

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::Either;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::codec::Codec;
use super::session;
use super::state::MqttState;
use crate::listener::limit::Gate;
use crate::listener::origin::{Client, WsPolicy};
use crate::listener::packet_io::PacketIo;
use crate::listener::ws::WsFramed;
use crate::listener::{SlotHold, accept_loop, next_connection_id, refuse};

/// Serves MQTT over TCP (TLS when `tls` is set) until `cancel` fires.
pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<MqttState>,
    loopback: bool,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    // Sessions do not watch `cancel` themselves (it would make every idle connection
    // bigger): they are kicked when it fires.
    state.kick_all_on(cancel.clone());
    state.start_parker(&tracker, &cancel);
    let c2 = cancel.clone();
    let plain = tls.is_none();
    accept_loop(
        listener,
        "mqtt",
        gate,
        cancel,
        tracker,
        move |stream, _peer, id, permit| {
            let state = Arc::clone(&state);
            let cancel = c2.clone();
            let codec = Codec::new(state.settings.max_packet_size);
            // Built here, not in an `async` block: one would keep its captured stream,
            // codec and settings in every connection's task for the connection's life.
            match (permit, tls.clone()) {
                // Over the limit: close at once (MQTT has nothing to say before CONNECT).
                (None, _) => Either::Left(Either::Left(std::future::ready(()))),
                // The permit goes with the session: a parked one holds it too.
                (Some(permit), None) => Either::Left(Either::Right(session::run(
                    PacketIo::new(stream, codec),
                    state,
                    id,
                    loopback,
                    cancel,
                    Some(permit),
                ))),
                // Boxed: a TLS stream is large, and a plain connection's task would
                // otherwise be sized for it too.
                (Some(permit), Some(acceptor)) => Either::Right(Box::pin(async move {
                    let _permit = permit;
                    let timeout = state.settings.connect_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            session::run(PacketIo::new(s, codec), state, id, loopback, cancel, None)
                                .await
                        }
                        Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!("TLS handshake timed out"),
                    }
                })),
            }
        },
        // A refusal over TLS would cost a handshake: those are closed without a word.
        move |stream, why| async move {
            if plain {
                refuse::mqtt(stream, why).await;
            }
        },
    )
    .await;
}

#[derive(Clone)]
struct WsState {
    state: Arc<MqttState>,
    loopback: bool,
    policy: Arc<WsPolicy>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Serves MQTT over WebSocket on `/mqtt` (over TLS when `tls` is set) until `cancel` fires.
#[allow(clippy::too_many_arguments)]
pub async fn serve_ws(
    listener: TcpListener,
    state: Arc<MqttState>,
    loopback: bool,
    policy: WsPolicy,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    state.kick_all_on(cancel.clone());
    let app = ws_app(
        state,
        loopback,
        policy,
        Arc::clone(&gate),
        cancel.clone(),
        tracker.clone(),
    );
    crate::listener::serve_http(listener, app, tls, gate, "mqtt-ws", cancel, tracker).await;
}

/// The WebSocket listener's HTTP app (`/mqtt`; handlers need `ConnectInfo<SocketAddr>`
/// and the connection's [`SlotHold`](crate::listener::SlotHold) as extensions). Public
/// for the session fuzz targets, which serve it over in-memory streams.
#[doc(hidden)]
pub fn ws_app(
    state: Arc<MqttState>,
    loopback: bool,
    policy: WsPolicy,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> axum::Router {
    let st = WsState {
        state,
        loopback,
        policy: Arc::new(policy),
        gate,
        cancel,
        tracker,
    };
    axum::Router::new()
        .route("/mqtt", get(upgrade))
        .with_state(st)
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(st): State<WsState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Extension(hold): Extension<SlotHold>,
    headers: HeaderMap,
) -> Response {
    // A browser never gets the loopback anonymous grant unless configured.
    let loopback = match st.policy.check(&headers, st.loopback) {
        Ok(Client::NotBrowser) => st.loopback,
        Ok(Client::Browser) => st.loopback && st.policy.anonymous_browsers,
        Err(origin) => {
            return crate::listener::origin::refuse(&st.gate, peer, &origin);
        }
    };
    let max = st.state.settings.max_packet_size as usize + 16;
    let slot = hold.take();
    ws.protocols(["mqtt", "mqttv3.1"]).max_message_size(max).on_upgrade(move |socket| {
        let id = next_connection_id();
        let span = tracing::info_span!("conn", protocol = "mqtt-ws", id, %peer, client_id = tracing::field::Empty, user = tracing::field::Empty);
        let state = Arc::clone(&st.state);
        let cancel = st.cancel.clone();
        let fut = async move {
            let t = WsFramed::new(socket, Codec::new(state.settings.max_packet_size), false);
            session::run(t, state, id, loopback, cancel, slot).await;
        }
        .instrument(span);
        let handle = st.tracker.spawn(fut);
        async move {
            let _ = handle.await;
        }
    }).into_response()
}
