//! Starting the STOMP listeners: plain TCP and WebSocket (`/ws`, subprotocols
//! `v10.stomp`, `v11.stomp`, `v12.stomp`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::Either;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::StompCodec;
use super::session::{self, Shared};
use crate::listener::limit::{ConnSlot, Gate};
use crate::listener::origin::{Client, WsPolicy};
use crate::listener::packet_io::PacketIo;
use crate::listener::ws::WsFramed;
use crate::listener::ws_endpoint::{self, Endpoint, Upgraded};
use crate::listener::{accept_loop, refuse};

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
    let voice = if plain {
        refuse::Voice::Stomp
    } else {
        refuse::Voice::Silent
    };
    accept_loop(
        listener,
        "stomp",
        voice,
        gate,
        cancel,
        tracker,
        move |stream, peer, id, slot| {
            let shared = Arc::clone(&shared);
            let cancel = c2.clone();
            let codec = StompCodec::new(shared.settings.limits);
            match tls.clone() {
                None => {
                    let t = PacketIo::new(stream, codec);
                    Either::Left(serve_one(t, shared, id, "stomp", peer, cancel, slot))
                }
                // Boxed: a TLS stream is large, and a plain connection's task would
                // otherwise be sized for it too.
                Some(acceptor) => Either::Right(Box::pin(async move {
                    let timeout = shared.settings.connect_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let t = PacketIo::new(s, codec);
                            serve_one(t, shared, id, "stomp", peer, cancel, slot).await
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
    listener: &'static str,
    peer: SocketAddr,
    cancel: CancellationToken,
    slot: Option<ConnSlot>,
) {
    match slot {
        Some(_slot) => {
            // Listed for the admin API until the session ends; closed through `close`.
            let (_listed, close) =
                crate::listener::connections::register(id, listener, peer, &cancel);
            session::run(t, shared, id, peer.to_string(), close).await
        }
        None => session::refuse(t, "connection limit reached").await,
    }
}

/// STOMP's WebSocket endpoint (`/ws`).
#[derive(Clone)]
struct StompWs {
    shared: Arc<Shared>,
    /// For clients whose upgrade carried an `Origin` (browsers): no loopback anonymous
    /// grant unless `stomp.ws_allow_anonymous_browsers`.
    browser_shared: Arc<Shared>,
}

impl Endpoint for StompWs {
    const PATH: &'static str = "/ws";
    const SUBPROTOCOLS: &'static [&'static str] = &["v12.stomp", "v11.stomp", "v10.stomp"];
    const PROTOCOL: &'static str = "stomp-ws";

    fn loopback(&self) -> bool {
        self.shared.loopback
    }

    /// A frame of `max_frame_size` and its headers. (Both `Shared`s carry the same
    /// settings: they differ in `loopback` only.)
    fn max_message_size(&self) -> usize {
        self.shared.settings.limits.max_frame_size + 64 * 1024
    }

    fn serve(self, conn: Upgraded) -> impl Future<Output = ()> + Send + 'static {
        let shared = match conn.client {
            Client::NotBrowser => self.shared,
            Client::Browser => self.browser_shared,
        };
        async move {
            let codec = StompCodec::new(shared.settings.limits);
            let t = WsFramed::new(conn.socket, codec, true);
            let (id, peer) = (conn.id, conn.peer);
            serve_one(t, shared, id, Self::PROTOCOL, peer, conn.cancel, conn.slot).await
        }
    }
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
    let endpoint = StompWs {
        shared,
        browser_shared,
    };
    ws_endpoint::serve(listener, endpoint, policy, tls, gate, cancel, tracker).await;
}

/// The WebSocket listener's HTTP app (see [`ws_endpoint::app`]). Public for the session fuzz
/// targets, which serve it over in-memory streams.
#[doc(hidden)]
pub fn ws_app(
    shared: Arc<Shared>,
    browser_shared: Arc<Shared>,
    policy: WsPolicy,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> axum::Router {
    let endpoint = StompWs {
        shared,
        browser_shared,
    };
    ws_endpoint::app(endpoint, policy, gate, cancel, tracker)
}
