//! An AMQP link: what its tasks share, how it connects, and how it is started under the
//! link supervisor.

use std::sync::Arc;

use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::AmqpLinkSettings;
use super::session::session;
use crate::link::{Backoff, LinkStatus, Links, Supervised, supervise};
use crate::router::Router;

/// How long closing a session's connections may wait for RabbitMQ's answer.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything a link's tasks share.
pub(crate) struct LinkCtx {
    pub settings: AmqpLinkSettings,
    pub router: Router,
    pub status: Arc<LinkStatus>,
}

/// Starts a link's supervisor. `routes_changed` fires on every route table swap.
pub fn spawn(
    settings: AmqpLinkSettings,
    router: Router,
    routes_changed: watch::Receiver<u64>,
    links: &Links,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let status = Arc::new(LinkStatus::new(
        &settings.name,
        "amqp",
        settings.shown_uri(),
    ));
    links.add(
        &status,
        router.core(),
        settings.max_pending,
        &settings.dead_letter,
    );
    let span = tracing::info_span!("amqp_link", link = %settings.name);
    let ctx = Arc::new(LinkCtx {
        settings,
        router,
        status,
    });
    let backoff = Backoff::new(ctx.settings.reconnect_initial, ctx.settings.reconnect_max);
    let status = Arc::clone(&ctx.status);
    let link = AmqpLink {
        ctx,
        routes_changed,
        tracker: tracker.clone(),
    };
    // Every router of a cluster may run an AMQP link (RabbitMQ spreads consumers; the
    // routers compete on the shared link queue): no lease.
    let lease = crate::core::shared::lease::Lease::alone(&status.name);
    tracker.spawn(supervise(link, status, backoff, cancel, lease).instrument(span));
}

/// The supervisor's side of an AMQP link.
struct AmqpLink {
    ctx: Arc<LinkCtx>,
    routes_changed: watch::Receiver<u64>,
    tracker: TaskTracker,
}

/// A session's two connections to RabbitMQ: one consumes (and declares the routes'
/// topology: an exclusive queue belongs to the connection that declared it), one
/// publishes, as RabbitMQ advises: when it blocks a publishing connection for a resource
/// alarm, that must not also hold up the acks and deliveries of the consuming side. Each
/// has its own reader and writer on both ends, so the two directions do not queue
/// behind each other either (in the queue → queue benchmark the split alone moved the
/// figures within their noise: docs/benchmarks.md).
pub(super) struct Connections {
    pub consume: Arc<Connection>,
    pub publish: Arc<Connection>,
}

impl Connections {
    pub fn connected(&self) -> bool {
        self.consume.status().connected() && self.publish.status().connected()
    }
}

impl Supervised for AmqpLink {
    type Conn = Connections;
    const LABEL: &'static str = "AMQP";

    async fn connect(&mut self) -> Result<Connections, String> {
        let s = &self.ctx.settings;
        let consume = connect(s, "consume").await.map_err(|e| e.to_string())?;
        let publish = match connect(s, "publish").await {
            Ok(c) => c,
            Err(e) => {
                let _ = consume.close(320, "switchboard reconnecting".into()).await;
                return Err(e.to_string());
            }
        };
        Ok(Connections {
            consume: Arc::new(consume),
            publish: Arc::new(publish),
        })
    }

    async fn run(&mut self, conns: Connections, cancel: &CancellationToken) -> String {
        let reason = session(
            &self.ctx,
            &conns,
            &mut self.routes_changed,
            cancel,
            &self.tracker,
        )
        .await;
        let (code, why) = if cancel.is_cancelled() {
            (200, "switchboard shutting down")
        } else {
            (320, "switchboard reconnecting")
        };
        // `close` waits for RabbitMQ's close-ok, which a dead connection never sends
        // (lapin may not know yet that it is dead): bounded, both at once.
        let _ = tokio::time::timeout(
            CLOSE_WAIT,
            futures::future::join(
                conns.publish.close(code, why.into()),
                conns.consume.close(code, why.into()),
            ),
        )
        .await;
        reason
    }

    fn log_connected(&self) {
        tracing::info!(peer = %self.ctx.settings.shown_uri(), "AMQP link connected");
    }

    fn log_cannot_connect(&self, error: &str) {
        let s = &self.ctx.settings;
        tracing::warn!(peer = %s.shown_uri(), error = %error, "AMQP link cannot connect");
    }
}

/// One connection; `role` (consume, publish) ends its name in RabbitMQ's management.
async fn connect(s: &AmqpLinkSettings, role: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("switchboard link {} ({role})", s.name).into());
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: s.ca_pem.clone(),
    };
    Connection::connect_uri_with_config(
        s.uri.clone(),
        props,
        tls,
        lapin::runtime::default_runtime()?,
    )
    .await
}
