//! Starting the MQTT listeners: TCP and WebSocket (`/mqtt`, subprotocol `mqtt`).

use std::future::Future;
use std::sync::Arc;

use futures::future::Either;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::Codec;
use super::session;
use super::state::MqttState;
use crate::listener::limit::Gate;
use crate::listener::origin::{Client, WsPolicy};
use crate::listener::packet_io::PacketIo;
use crate::listener::ws::WsFramed;
use crate::listener::ws_endpoint::{self, Endpoint, Upgraded};
use crate::listener::{accept_loop, refuse};

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
    let voice = if plain {
        refuse::Voice::Mqtt
    } else {
        refuse::Voice::Silent
    };
    accept_loop(
        listener,
        "mqtt",
        voice,
        gate,
        cancel,
        tracker,
        move |stream, peer, id, permit| {
            let accepted = session::Accepted {
                id,
                listener: "mqtt",
                peer,
            };
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
                    accepted,
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
                            let t = PacketIo::new(s, codec);
                            session::run(t, state, accepted, loopback, cancel, None).await
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

/// MQTT's WebSocket endpoint (`/mqtt`).
#[derive(Clone)]
struct MqttWs {
    state: Arc<MqttState>,
    loopback: bool,
    /// What `loopback` is for a browser's connection: a browser never gets the loopback
    /// anonymous grant unless `mqtt.ws_allow_anonymous_browsers`.
    browser_loopback: bool,
}

impl MqttWs {
    fn new(state: Arc<MqttState>, loopback: bool, policy: &WsPolicy) -> Self {
        Self {
            state,
            loopback,
            browser_loopback: loopback && policy.anonymous_browsers,
        }
    }
}

impl Endpoint for MqttWs {
    const PATH: &'static str = "/mqtt";
    const SUBPROTOCOLS: &'static [&'static str] = &["mqtt", "mqttv3.1"];
    const PROTOCOL: &'static str = "mqtt-ws";

    fn loopback(&self) -> bool {
        self.loopback
    }

    fn max_message_size(&self) -> usize {
        self.state.settings.max_packet_size as usize + 16
    }

    fn serve(self, conn: Upgraded) -> impl Future<Output = ()> + Send + 'static {
        let loopback = match conn.client {
            Client::NotBrowser => self.loopback,
            Client::Browser => self.browser_loopback,
        };
        async move {
            let codec = Codec::new(self.state.settings.max_packet_size);
            let t = WsFramed::new(conn.socket, codec, false);
            let accepted = session::Accepted {
                id: conn.id,
                listener: Self::PROTOCOL,
                peer: conn.peer,
            };
            session::run(t, self.state, accepted, loopback, conn.cancel, conn.slot).await;
        }
    }
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
    let endpoint = MqttWs::new(state, loopback, &policy);
    ws_endpoint::serve(listener, endpoint, policy, tls, gate, cancel, tracker).await;
}

/// The WebSocket listener's HTTP app (see [`ws_endpoint::app`]). Public for the session fuzz
/// targets, which serve it over in-memory streams.
#[doc(hidden)]
pub fn ws_app(
    state: Arc<MqttState>,
    loopback: bool,
    policy: WsPolicy,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> axum::Router {
    let endpoint = MqttWs::new(state, loopback, &policy);
    ws_endpoint::app(endpoint, policy, gate, cancel, tracker)
}
