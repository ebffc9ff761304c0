//! An XMPP link: what its tasks share, and how it is started under the link supervisor,
//! which carries who was online from one session to the next.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::availability::Availability;
use super::c2s::{self, Resumable};
use super::component;
use super::conn::{Conn, Kind, Settle};
use super::session::{self, Session};
use super::settings::{Mode, XmppLinkSettings};
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
    /// reconnects, and a mirror of [`Self::kept_subs`] when there is one.
    pub subs: Mutex<BTreeMap<(String, String), Sub>>,
    /// Where `subs` outlives the process ([`crate::core::Core::kept_metadata`]):
    /// clustered, the cluster's copy, which the router holding the link writes and
    /// every router mirrors, so whichever takes the link over knows whom to push; alone,
    /// the router's store, so a restarted router pushes them again (see
    /// [`super::presence::shared_key`]). `None` with `--data-dir off`: memory only.
    pub kept_subs: Option<Arc<dyn SharedMeta>>,
    /// Where what the link delivered from PubSub nodes is kept across restarts
    /// ([`super::pubsub_events::keeper`]); `None`: in memory only.
    pub kept_pubsub: Option<Arc<dyn SharedMeta>>,
    /// The users whose permissions ad-hoc commands have ([`XmppLinkSettings::users`]).
    pub auth: Arc<crate::auth::Auth>,
    /// PubSub requests in flight and nodes created this session.
    pub pubsub: super::pubsub::State,
    /// Fires on every route table swap (the PubSub nodes to follow may change).
    pub routes_changed: tokio::sync::watch::Receiver<u64>,
    /// Users refused a push subscription over a cap since they were last served
    /// ([`super::push_caps`]): each is logged once.
    pub over_cap: Mutex<HashSet<String>>,
}

/// A user's subscription to one of our JIDs' presence: while the user is online, the
/// messages of that JID's destination (a topic) are pushed to them.
#[derive(Debug, Clone)]
pub(super) struct Sub {
    pub dest: Destination,
    /// The durable subscription queue that collects while they are away.
    pub queue: String,
}

/// Starts a link's supervisor. `routes_changed` fires on every route table swap.
pub fn spawn(
    settings: XmppLinkSettings,
    router: Router,
    auth: Arc<crate::auth::Auth>,
    routes_changed: tokio::sync::watch::Receiver<u64>,
    links: &Links,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let status = Arc::new(LinkStatus::new(
        &settings.name,
        settings.kind(),
        settings.peer(),
    ));
    links.add(
        &status,
        router.core(),
        settings.max_pending,
        &settings.dead_letter,
    );
    let span = match &settings.mode {
        Mode::Component { domain, .. } => {
            tracing::info_span!("xmpp_link", link = %settings.name, domain = %domain)
        }
        Mode::Client(c) => tracing::info_span!("xmpp_link", link = %settings.name, jid = %c.jid),
    };
    let kept_subs = router.core().kept_metadata(super::META_XMPP_PUSH);
    let kept_pubsub = super::pubsub_events::keeper(router.core());
    let ctx = Arc::new(LinkCtx {
        settings,
        router,
        status,
        subs: Mutex::new(BTreeMap::new()),
        kept_subs,
        kept_pubsub,
        auth,
        pubsub: super::pubsub::State::default(),
        routes_changed,
        over_cap: Mutex::new(HashSet::new()),
    });
    super::pubsub_events::restore(&ctx);
    let mirrored = ctx.kept_subs.as_ref().map(|shared| {
        let mirror = Arc::downgrade(&ctx);
        shared.watch(Box::new(move |key, value| {
            if let Some(ctx) = mirror.upgrade() {
                super::presence::mirror(&ctx, key, value.as_deref());
            }
        }))
    });
    let backoff = Backoff::new(ctx.settings.reconnect_initial, ctx.settings.reconnect_max);
    let status = Arc::clone(&ctx.status);
    // A server takes one component connection per domain (and one session per account
    // and resource): clustered, one router at a time runs the link, the one holding
    // this lease.
    let lease = ctx.router.core().lease(&ctx.settings.lease_name());
    let link = XmppLink {
        ctx,
        presence: Availability::default(),
        carried: None,
    };
    tracker.spawn(
        async move {
            // Whom to probe after connecting: the kept subscriptions, once read.
            if let Some(mirrored) = mirrored
                && let Err(e) = mirrored.wait().await
            {
                tracing::warn!(error = %e, "cannot read the kept presence subscriptions");
            }
            supervise(link, status, backoff, cancel, lease).await;
        }
        .instrument(span),
    );
}

/// The supervisor's side of an XMPP link.
struct XmppLink {
    ctx: Arc<LinkCtx>,
    /// Who was online, carried from one session to the next (see [`Availability::after`]).
    presence: Availability,
    /// A client's session whose stream the server may resume (XEP-0198), waiting for
    /// the next connection.
    carried: Option<Carried>,
}

struct Carried {
    session: Session,
    /// Taken by the connection that asks the server to resume.
    stream: Option<Resumable>,
}

impl XmppLink {
    /// Ends a session for good: settles what `settled` says, and the rest of its
    /// deliveries goes back to the link queue.
    fn end(&mut self, session: Session, settled: Vec<(Settle, bool)>) {
        session.settle(settled);
        self.presence = Availability::after(session.end());
    }
}

impl Supervised for XmppLink {
    type Conn = Conn;
    const LABEL: &'static str = "XMPP";

    async fn connect(&mut self) -> Result<Conn, String> {
        match &self.ctx.settings.mode {
            Mode::Component {
                server,
                domain,
                secret,
            } => component::connect(server, domain, secret)
                .await
                .map(|c| Conn::new(Kind::Component(c), Vec::new())),
            Mode::Client(c) => {
                let mut none = None;
                let stream = match self.carried.as_mut() {
                    Some(carried) => &mut carried.stream,
                    None => &mut none,
                };
                let mut settled = Vec::new();
                let conn = c2s::connect(c, stream, &mut settled).await;
                if !settled.is_empty()
                    && let Some(carried) = &self.carried
                {
                    // The server answered about the previous stream (acknowledged
                    // some, cannot resume the rest): settle that in its own session.
                    carried.session.settle(settled);
                }
                let conn = conn?;
                Ok(Conn::new(Kind::Client(conn), Vec::new()))
            }
        }
    }

    async fn run(&mut self, mut conn: Conn, cancel: &CancellationToken) -> String {
        let resumed = conn.client().is_some_and(|c| c.resumed);
        let carried = self.carried.take();
        let mut session = match carried {
            Some(c) if resumed => c.session,
            other => {
                if let Some(old) = other {
                    self.end(old.session, Vec::new());
                }
                match Session::new(&self.ctx, std::mem::take(&mut self.presence), cancel) {
                    Ok(s) => s,
                    Err(e) => return e,
                }
            }
        };
        let reason = session::run(&self.ctx, &mut conn, &mut session, cancel, !resumed).await;
        let (resumable, settled) = conn.into_parts();
        match resumable {
            Some(stream) if !cancel.is_cancelled() => {
                session.settle(settled);
                tracing::info!(
                    "the server may resume this XMPP stream: its session waits for the next connection"
                );
                self.carried = Some(Carried {
                    session,
                    stream: Some(stream),
                });
            }
            _ => self.end(session, settled),
        }
        reason
    }

    fn on_standby(&mut self) {
        // Another router runs the link now: a stream kept for resumption is not ours
        // to resume, and its deliveries go back to the (shared) link queue.
        if let Some(c) = self.carried.take() {
            self.end(c.session, Vec::new());
        }
    }

    fn log_connected(&self) {
        match &self.ctx.settings.mode {
            Mode::Component { server, .. } => {
                tracing::info!(server = %server, "XMPP component connected");
            }
            Mode::Client(c) => tracing::info!(server = %c.server, "XMPP client connected"),
        }
    }

    fn log_cannot_connect(&self, error: &str) {
        match &self.ctx.settings.mode {
            Mode::Component { server, .. } => {
                tracing::warn!(server = %server, error = %error, "XMPP component cannot connect");
            }
            Mode::Client(c) => {
                tracing::warn!(server = %c.server, error = %error, "XMPP client cannot connect");
            }
        }
    }
}

/// Locks `m` even if a panic elsewhere poisoned it: the subscriptions stay usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
