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

impl Supervised for AmqpLink {
    type Conn = Connection;
    const LABEL: &'static str = "AMQP";

    async fn connect(&mut self) -> Result<Connection, String> {
        connect(&self.ctx.settings).await.map_err(|e| e.to_string())
    }

    async fn run(&mut self, conn: Connection, cancel: &CancellationToken) -> String {
        let conn = Arc::new(conn);
        let reason = session(
            &self.ctx,
            &conn,
            &mut self.routes_changed,
            cancel,
            &self.tracker,
        )
        .await;
        if cancel.is_cancelled() {
            let _ = conn.close(200, "switchboard shutting down".into()).await;
        } else {
            let _ = conn.close(320, "switchboard reconnecting".into()).await;
        }
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

async fn connect(s: &AmqpLinkSettings) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("switchboard link {}", s.name).into());
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
