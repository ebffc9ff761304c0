//! Starting the MQTT listeners: TCP and WebSocket (`/mqtt`, subprotocol `mqtt`).

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::Either;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::codec::Codec;
use super::session;
use super::state::MqttState;
use crate::listener::packet_io::PacketIo;
use crate::listener::ws::WsFramed;
use crate::listener::{accept_loop, next_connection_id};

/// Serves MQTT over TCP (TLS when `tls` is set) until `cancel` fires.
pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<MqttState>,
    loopback: bool,
    tls: Option<TlsAcceptor>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let max = state.settings.max_connections;
    // Sessions do not watch `cancel` themselves (it would make every idle connection
    // bigger): they are kicked when it fires.
    state.kick_all_on(cancel.clone());
    state.start_parker(&tracker, &cancel);
    let c2 = cancel.clone();
    accept_loop(
        listener,
        "mqtt",
        max,
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
    )
    .await;
}

#[derive(Clone)]
struct WsState {
    state: Arc<MqttState>,
    loopback: bool,
    cancel: CancellationToken,
    tracker: TaskTracker,
    limit: Arc<Semaphore>,
}

/// Serves MQTT over WebSocket on `/mqtt` (over TLS when `tls` is set) until `cancel` fires.
pub async fn serve_ws(
    listener: TcpListener,
    state: Arc<MqttState>,
    loopback: bool,
    tls: Option<TlsAcceptor>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    state.kick_all_on(cancel.clone());
    let app = ws_app(state, loopback, cancel.clone(), tracker.clone());
    crate::listener::serve_ws_router(listener, app, tls, "mqtt-ws", cancel, tracker).await;
}

/// The WebSocket listener's HTTP app (`/mqtt`; handlers need `ConnectInfo<SocketAddr>`).
/// Public for the session fuzz targets, which serve it over in-memory streams.
#[doc(hidden)]
pub fn ws_app(
    state: Arc<MqttState>,
    loopback: bool,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> axum::Router {
    let limit = Arc::new(Semaphore::new(state.settings.max_connections));
    let st = WsState {
        state,
        loopback,
        cancel,
        tracker,
        limit,
    };
    axum::Router::new()
        .route("/mqtt", get(upgrade))
        .with_state(st)
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(st): State<WsState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> impl IntoResponse {
    let max = st.state.settings.max_packet_size as usize + 16;
    ws.protocols(["mqtt", "mqttv3.1"]).max_message_size(max).on_upgrade(move |socket| {
        let id = next_connection_id();
        let span = tracing::info_span!("conn", protocol = "mqtt-ws", id, %peer, client_id = tracing::field::Empty, user = tracing::field::Empty);
        let permit = Arc::clone(&st.limit).try_acquire_owned().ok();
        let state = Arc::clone(&st.state);
        let cancel = st.cancel.clone();
        let loopback = st.loopback;
        let fut = async move {
            let Some(_permit) = permit else { return };
            let t = WsFramed::new(socket, Codec::new(state.settings.max_packet_size), false);
            session::run(t, state, id, loopback, cancel, None).await;
        }
        .instrument(span);
        let handle = st.tracker.spawn(fut);
        async move {
            let _ = handle.await;
        }
    })
}
