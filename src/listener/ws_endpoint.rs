//! A protocol's WebSocket listener: an HTTP path whose upgrade starts a session. The
//! protocol says its path, subprotocols and how to serve an upgraded socket
//! ([`Endpoint`]); what every protocol does the same way is here: the origin check, the
//! admission slot handed on to the session, the connection's span, and the session
//! tracked so shutdown waits for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::listener::limit::{ConnSlot, Gate};
use crate::listener::origin::{Client, WsPolicy};
use crate::listener::{SlotHold, next_connection_id};

/// A protocol served over WebSocket.
pub trait Endpoint: Clone + Send + Sync + 'static {
    /// The HTTP path upgraded (`/ws`).
    const PATH: &'static str;
    /// The subprotocols offered, preferred first.
    const SUBPROTOCOLS: &'static [&'static str];
    /// The listener's name in logs and in each connection's span (`stomp-ws`).
    const PROTOCOL: &'static str;

    /// Whether the listener is bound to loopback (the origin check needs it).
    fn loopback(&self) -> bool;

    /// The largest WebSocket message accepted.
    fn max_message_size(&self) -> usize;

    /// Serves one upgraded connection until it ends.
    fn serve(self, conn: Upgraded) -> impl Future<Output = ()> + Send + 'static;
}

/// An upgraded connection, for [`Endpoint::serve`].
pub struct Upgraded {
    pub socket: WebSocket,
    /// Whether a web page of another origin opened it.
    pub client: Client,
    /// Process-unique, as in the connection's span.
    pub id: u64,
    pub peer: SocketAddr,
    /// Fires at shutdown.
    pub cancel: CancellationToken,
    /// Its admission slot, held while the session lives.
    pub slot: Option<ConnSlot>,
}

/// Serves `endpoint` over WebSocket (over TLS when `tls` is set) until `cancel` fires.
#[allow(clippy::too_many_arguments)]
pub async fn serve<E: Endpoint>(
    listener: TcpListener,
    endpoint: E,
    policy: WsPolicy,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let app = app(
        endpoint,
        policy,
        Arc::clone(&gate),
        cancel.clone(),
        tracker.clone(),
    );
    crate::listener::serve_http(listener, app, tls, gate, E::PROTOCOL, cancel, tracker).await;
}

#[derive(Clone)]
struct WsState<E> {
    endpoint: E,
    policy: Arc<WsPolicy>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// The listener's HTTP app (handlers need `ConnectInfo<SocketAddr>` and the
/// connection's [`SlotHold`] as extensions; [`crate::listener::serve_http`] adds them).
pub fn app<E: Endpoint>(
    endpoint: E,
    policy: WsPolicy,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> axum::Router {
    let state = WsState {
        endpoint,
        policy: Arc::new(policy),
        gate,
        cancel,
        tracker,
    };
    axum::Router::new()
        .route(E::PATH, get(upgrade::<E>))
        .with_state(state)
}

async fn upgrade<E: Endpoint>(
    ws: WebSocketUpgrade,
    State(st): State<WsState<E>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(hold): Extension<SlotHold>,
    headers: HeaderMap,
) -> Response {
    let client = match st.policy.check(&headers, st.endpoint.loopback()) {
        Ok(client) => client,
        Err(origin) => return crate::listener::origin::refuse(&st.gate, peer, &origin),
    };
    let max = st.endpoint.max_message_size();
    let slot = hold.take();
    ws.protocols(E::SUBPROTOCOLS.iter().copied())
        .max_message_size(max)
        .on_upgrade(move |socket| {
            let id = next_connection_id();
            let span = tracing::info_span!(
                "conn",
                protocol = E::PROTOCOL,
                id,
                %peer,
                client_id = tracing::field::Empty,
                user = tracing::field::Empty
            );
            let conn = Upgraded {
                socket,
                client,
                id,
                peer,
                cancel: st.cancel.clone(),
                slot,
            };
            let fut = st.endpoint.serve(conn).instrument(span);
            // Track the session so shutdown waits for it.
            let handle = st.tracker.spawn(fut);
            async move {
                let _ = handle.await;
            }
        })
}
