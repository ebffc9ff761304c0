//! An XMPP link: what its tasks share, and how it is started under the link supervisor,
//! which carries who was online from one session to the next.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::XmppLinkSettings;
use super::availability::Availability;
use super::session::session;
use super::stream;
use crate::core::Destination;
use crate::core::shared::SharedMeta;
use crate::link::{Backoff, LinkStatus, Links, Supervised, supervise};
use crate::router::Router;

/// Everything a link's tasks share.
pub(super) struct LinkCtx {
    pub settings: XmppLinkSettings,
    pub router: Router,
    pub status: Arc<LinkStatus>,
    /// Presence-driven push: (user's bare JID, our JID) → what is pushed. Kept across
    /// reconnects (in memory alone; clustered, a mirror of [`Self::shared_subs`]).
    pub subs: Mutex<BTreeMap<(String, String), Sub>>,
    /// Clustered: the cluster's copy of `subs`, which the router holding the link
    /// writes and every router mirrors, so whichever takes the link over knows whom
    /// to push (see [`super::presence::shared_key`]).
    pub shared_subs: Option<Arc<dyn SharedMeta>>,
}

/// A user's subscription to one of our JIDs' presence: while the user is online, the
/// messages of that JID's destination (a topic) are pushed to them.
#[derive(Debug, Clone)]
pub(super) struct Sub {
    pub dest: Destination,
    /// The durable subscription queue that collects while they are away.
    pub queue: String,
}

/// Starts a link's supervisor.
pub fn spawn(
    settings: XmppLinkSettings,
    router: Router,
    links: &Links,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let peer = format!("xmpp-component://{}@{}", settings.domain, settings.server);
    let status = Arc::new(LinkStatus::new(&settings.name, "xmpp", peer));
    links.add(
        &status,
        router.core(),
        settings.max_pending,
        &settings.dead_letter,
    );
    let span = tracing::info_span!("xmpp_link", link = %settings.name, domain = %settings.domain);
    let shared_subs = router.core().shared_metadata(super::META_XMPP_PUSH);
    let ctx = Arc::new(LinkCtx {
        settings,
        router,
        status,
        subs: Mutex::new(BTreeMap::new()),
        shared_subs,
    });
    let mirrored = ctx.shared_subs.as_ref().map(|shared| {
        let mirror = Arc::downgrade(&ctx);
        shared.watch(Box::new(move |key, value| {
            if let Some(ctx) = mirror.upgrade() {
                super::presence::mirror(&ctx, key, value.as_deref());
            }
        }))
    });
    let backoff = Backoff::new(ctx.settings.reconnect_initial, ctx.settings.reconnect_max);
    let status = Arc::clone(&ctx.status);
    // A server takes one component connection per domain: clustered, one router at a
    // time runs the link, the one holding this lease.
    let lease = ctx.router.core().lease(&lease_name(&ctx.settings.domain));
    let link = XmppLink {
        ctx,
        presence: Availability::default(),
    };
    tracker.spawn(
        async move {
            // Whom to probe after connecting: the cluster's subscriptions, once read.
            if let Some(mirrored) = mirrored
                && let Err(e) = mirrored.wait().await
            {
                tracing::warn!(error = %e, "cannot read the cluster's presence subscriptions");
            }
            supervise(link, status, backoff, cancel, lease).await;
        }
        .instrument(span),
    );
}

/// The lease of the component connection for `domain` (`GET /cluster` lists it).
pub fn lease_name(domain: &str) -> String {
    format!("xmpp:{}", domain.to_ascii_lowercase())
}

/// The supervisor's side of an XMPP link.
struct XmppLink {
    ctx: Arc<LinkCtx>,
    /// Who was online, carried from one session to the next (see [`Availability::after`]).
    presence: Availability,
}

impl Supervised for XmppLink {
    type Conn = stream::Conn;
    const LABEL: &'static str = "XMPP";

    async fn connect(&mut self) -> Result<stream::Conn, String> {
        let s = &self.ctx.settings;
        stream::connect(&s.server, &s.domain, &s.secret).await
    }

    async fn run(&mut self, conn: stream::Conn, cancel: &CancellationToken) -> String {
        let presence = std::mem::take(&mut self.presence);
        let (reason, known) = session(&self.ctx, conn, cancel, presence).await;
        self.presence = Availability::after(known);
        reason
    }

    fn log_connected(&self) {
        tracing::info!(server = %self.ctx.settings.server, "XMPP component connected");
    }

    fn log_cannot_connect(&self, error: &str) {
        let s = &self.ctx.settings;
        tracing::warn!(server = %s.server, error = %error, "XMPP component cannot connect");
    }
}

/// Locks `m` even if a panic elsewhere poisoned it: the subscriptions stay usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
