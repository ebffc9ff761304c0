//! The XMPP link: an external component (XEP-0114) that serves a domain, so that every
//! JID in it (`orders@bridge.example.org`) is an address the route table maps.
//!
//! The connection is ours ([`stream`], on tokio-xmpp's XML stream): stream errors are
//! logged with their condition, a stanza that does not parse is skipped, a quiet
//! stream is pinged. A supervisor reconnects with capped, jittered backoff, while
//! messages for XMPP wait in the link's core queue (bounded).
//!
//! Delivery: XEP-0114 has no acknowledgements, so a message counts as sent once the
//! component stream has written it; it is acked in the core then. A message from an
//! XMPP user is answered with a receipt (XEP-0184, when asked for) only after the core
//! accepted it, and with an error stanza when it cannot be routed — never silence.

mod availability;
pub mod convert;
mod presence;
pub mod settings;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_xmpp::Stanza;
use tokio_xmpp::minidom::Element;
use tracing::Instrument;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Message as XMessage, MessageType};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

pub use settings::{RawXmppLink, XmppLinkSettings};

use stream::Incoming;

use super::{Backoff, LinkState, LinkStatus, Links, link_queue};
use crate::core::{ConsumeOptions, Delivery, Destination, Loss};
use crate::router::{LINK_TARGET_HEADER, Router, RouterError, xmpp_reply_address};
use crate::translate::loss;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_PING: &str = "urn:xmpp:ping";
/// How long a message from XMPP may wait for room in a full destination.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

struct LinkCtx {
    settings: XmppLinkSettings,
    router: Router,
    status: Arc<LinkStatus>,
    /// Presence-driven push: (user's bare JID, our JID) → what is pushed. Kept across
    /// reconnects (in memory; durable storage is the durability issue's).
    subs: Mutex<BTreeMap<(String, String), Sub>>,
}

/// A user's subscription to one of our JIDs' presence: while the user is online, the
/// messages of that JID's destination (a topic) are pushed to them.
#[derive(Debug, Clone)]
struct Sub {
    dest: Destination,
    /// The durable subscription queue that collects while they are away.
    queue: String,
}

/// One connected session's state.
struct Session {
    /// Users with at least one available resource, and their resources.
    presence: availability::Availability,
    /// Running pushes by (user, our JID).
    pushes: HashMap<(String, String), CancellationToken>,
    out: mpsc::Sender<(Stanza, oneshot::Sender<bool>)>,
    cancel: CancellationToken,
    /// Receipts of accepted chats waiting for their messages to be durable; the session
    /// loop sends them as they resolve and keeps reading meanwhile.
    confirming: FuturesUnordered<Confirming>,
}

/// A deferred receipt: what to send once the message is durable, or instead if it
/// could not be stored.
type Confirming = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Option<XMessage>,
                    Option<XMessage>,
                    Result<(), crate::core::PublishError>,
                ),
            > + Send,
    >,
>;

/// Sends a deferred receipt (or the refusal, when the store failed).
async fn settle_receipt(
    ctx: &LinkCtx,
    sink: &mut Sink,
    (receipt, refusal, r): (
        Option<XMessage>,
        Option<XMessage>,
        Result<(), crate::core::PublishError>,
    ),
) -> Result<(), tokio_xmpp::Error> {
    let reply = match r {
        Ok(()) => receipt,
        Err(e) => {
            LinkStatus::bump(&ctx.status.counters.rejected);
            tracing::warn!(error = %e, "accepted chat could not be stored: refused");
            refusal
        }
    };
    match reply {
        Some(m) => sink.send(Stanza::Message(m)).await,
        None => Ok(()),
    }
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
    links.insert(Arc::clone(&status));
    super::declare_link_queues(
        router.core(),
        &settings.name,
        settings.max_pending,
        &settings.dead_letter,
    );
    let span = tracing::info_span!("xmpp_link", link = %settings.name, domain = %settings.domain);
    let ctx = Arc::new(LinkCtx {
        settings,
        router,
        status,
        subs: Mutex::new(BTreeMap::new()),
    });
    tracker.spawn(supervise(ctx, cancel).instrument(span));
}

async fn supervise(ctx: Arc<LinkCtx>, cancel: CancellationToken) {
    let s = &ctx.settings;
    let mut backoff = Backoff::new(s.reconnect_initial, s.reconnect_max);
    let mut connected_before = false;
    // Who was online, carried from one session to the next (see Availability::after).
    let mut presence = availability::Availability::default();
    loop {
        ctx.status.set_state(LinkState::Connecting);
        let attempt = tokio::select! {
            _ = cancel.cancelled() => break,
            c = stream::connect(&s.server, &s.domain, &s.secret) => c,
        };
        match attempt {
            Ok(component) => {
                backoff.reset();
                if connected_before {
                    LinkStatus::bump(&ctx.status.counters.reconnects);
                }
                connected_before = true;
                ctx.status.set_state(LinkState::Connected);
                tracing::info!(server = %s.server, "XMPP component connected");
                let (reason, known) = session(&ctx, component, &cancel, presence).await;
                presence = availability::Availability::after(known);
                if cancel.is_cancelled() {
                    break;
                }
                tracing::warn!(%reason, "XMPP link lost; reconnecting");
                ctx.status.set_error(reason);
            }
            Err(e) => {
                let e = format!("connect failed: {e}");
                tracing::warn!(server = %s.server, error = %e, "XMPP component cannot connect");
                ctx.status.set_error(e);
            }
        }
        if !super::retry_pause(&ctx.status, &mut backoff, &cancel).await {
            break;
        }
    }
    ctx.status.set_state(LinkState::Stopped);
    tracing::info!("XMPP link stopped");
}

type Sink = stream::Conn;

/// One connected session; returns why it ended, and who was online then.
async fn session(
    ctx: &Arc<LinkCtx>,
    mut conn: stream::Conn,
    cancel: &CancellationToken,
    presence: availability::Availability,
) -> (String, availability::Availability) {
    let (out_tx, mut out_rx) = mpsc::channel::<(Stanza, oneshot::Sender<bool>)>(64);
    let mut st = Session {
        presence,
        pushes: HashMap::new(),
        out: out_tx,
        cancel: cancel.child_token(),
        confirming: FuturesUnordered::new(),
    };
    let reason = session_loop(ctx, &mut conn, &mut out_rx, &mut st, cancel).await;
    st.cancel.cancel();
    (reason, st.presence)
}

async fn session_loop(
    ctx: &Arc<LinkCtx>,
    sink: &mut Sink,
    out_rx: &mut mpsc::Receiver<(Stanza, oneshot::Sender<bool>)>,
    st: &mut Session,
    cancel: &CancellationToken,
) -> String {
    // Join the configured rooms (again, after a reconnect), without their history: what
    // was said before is not news, and replaying it would re-route old messages.
    for r in &ctx.settings.rooms {
        let (Ok(occupant), Ok(ours)) = (
            format!("{}/{}", r.room, r.nick).parse::<Jid>(),
            r.jid.parse::<Jid>(),
        ) else {
            continue;
        };
        let mut join = Presence::new(PresenceType::None);
        join.from = Some(ours);
        join.to = Some(occupant);
        join.payloads.push(
            Element::builder("x", NS_MUC)
                .append(
                    Element::builder("history", NS_MUC)
                        .attr(
                            tokio_xmpp::minidom::rxml::xml_ncname!("maxstanzas").into(),
                            "0",
                        )
                        .build(),
                )
                .build(),
        );
        if let Err(e) = sink.send(Stanza::Presence(join)).await {
            return format!("send failed: {e}");
        }
        tracing::info!(room = %r.room, nick = %r.nick, "joining room");
    }
    // After a (re)connect, ask every subscribed user's server for their presence: the
    // answers restart the pushes of those who are online.
    let subs: Vec<(String, String)> = lock(&ctx.subs).keys().cloned().collect();
    for (user, ours) in subs {
        if let (Ok(user), Ok(ours)) = (user.parse::<Jid>(), ours.parse::<Jid>()) {
            let mut probe = Presence::new(PresenceType::Probe);
            probe.from = Some(ours);
            probe.to = Some(user);
            if let Err(e) = sink.send(Stanza::Presence(probe)).await {
                return format!("send failed: {e}");
            }
        }
    }
    let consumer = match ctx
        .router
        .core()
        .consume(&link_queue(&ctx.settings.name), ConsumeOptions::manual(256))
    {
        Ok(c) => c,
        Err(e) => return format!("cannot consume the link queue: {e}"),
    };
    let domain: Option<Jid> = ctx.settings.domain.parse().ok();
    let mut pings = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = sink.close().await;
                return "shutdown".into();
            }
            Some(done) = st.confirming.next(), if !st.confirming.is_empty() => {
                if let Err(e) = settle_receipt(ctx, sink, done).await {
                    return format!("send failed: {e}");
                }
            }
            pushed = out_rx.recv() => {
                if let Some((stanza, ack)) = pushed {
                    let sent = sink.send(stanza).await;
                    let _ = ack.send(sent.is_ok());
                    if let Err(e) = sent {
                        return format!("send failed: {e}");
                    }
                }
            }
            read = sink.next() => match read {
                Incoming::Stanza(stanza) => {
                    if let Err(e) = incoming(ctx, sink, st, *stanza).await {
                        return format!("send failed: {e}");
                    }
                }
                Incoming::Skipped(why) => {
                    tracing::warn!(reason = %why, "skipped something the server sent that is not a usable stanza");
                }
                Incoming::Quiet => {
                    // A quiet stream: a ping to our own domain comes back through the
                    // server, so the stream hears something before it times out.
                    pings += 1;
                    let ping = Iq::Get {
                        from: domain.clone(),
                        to: domain.clone(),
                        id: format!("sb-keepalive-{pings}"),
                        payload: Element::builder("ping", NS_PING).build(),
                    };
                    if let Err(e) = sink.send(Stanza::Iq(ping)).await {
                        return format!("send failed: {e}");
                    }
                }
                Incoming::Ended(reason) => return reason,
            },
            d = consumer.recv() => match d {
                Some(d) => {
                    let tag = d.tag;
                    match outgoing(ctx, sink, d).await {
                        Ok(true) => {
                            consumer.ack(tag);
                        }
                        Ok(false) => {
                            consumer.nack(tag, true);
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                        Err(e) => {
                            consumer.nack(tag, true);
                            return format!("send failed: {e}");
                        }
                    }
                }
                None => return "the link queue was closed".into(),
            },
        }
    }
}

/// A message for XMPP: stanza out, or the dead-letter queue if it cannot be one.
/// `Ok(false)`: neither worked; leave it in the link queue.
async fn outgoing(ctx: &LinkCtx, sink: &mut Sink, d: Delivery) -> Result<bool, tokio_xmpp::Error> {
    let m = &d.message;
    let target = m
        .headers
        .get(LINK_TARGET_HEADER)
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
    let field = |k: &str| {
        target
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let domain = &ctx.settings.domain;
    let (Some(to), from, kind) = (field("to"), field("from"), field("type")) else {
        return Ok(dead_letter(ctx, &d, "bad-target", "no XMPP address on the message").await);
    };
    let from = from.unwrap_or_else(|| domain.clone());
    let in_domain = from
        .parse::<Jid>()
        .is_ok_and(|j| j.domain().as_str().eq_ignore_ascii_case(domain));
    if !in_domain {
        let why = format!("`from` {from} is outside the component's domain {domain}");
        return Ok(dead_letter(ctx, &d, "bad-target", &why).await);
    }
    let kind = kind.unwrap_or_else(|| "chat".into());
    // Fields a stanza cannot carry, as the route's loss policy says.
    let lost = loss::lost_to_xmpp(m);
    let encoded;
    let m = if lost.is_empty() {
        m
    } else {
        loss::record(loss::Edge::Xmpp, lost, m.loss);
        match m.loss {
            Loss::Drop => m,
            Loss::Encode => {
                let mut c = (**m).clone();
                for (k, v) in loss::as_headers(m, lost, ToString::to_string) {
                    c.headers.append(&k, &v);
                }
                encoded = c;
                &encoded
            }
            Loss::Reject => {
                let why = format!(
                    "a stanza cannot carry its {}; its route says `loss: reject`",
                    lost.names()
                );
                return Ok(dead_letter(ctx, &d, "untranslatable", &why).await);
            }
        }
    };
    match convert::to_stanza(m, &to, &from, &kind, |k| k == LINK_TARGET_HEADER) {
        Ok(s) => {
            sink.send(Stanza::Message(s)).await?;
            LinkStatus::bump(&ctx.status.counters.published);
            Ok(true)
        }
        Err(e) => Ok(dead_letter(ctx, &d, "untranslatable", &e.to_string()).await),
    }
}

/// Gives up on a message; `false` if even that failed (then it stays in the link queue).
async fn dead_letter(ctx: &LinkCtx, d: &Delivery, reason: &str, detail: &str) -> bool {
    let s = &ctx.settings;
    tracing::warn!(reason, detail, dead_letter = %s.dead_letter, "XMPP send given up: message sent to the dead-letter queue");
    let mut m = (*d.message).clone();
    m.headers.remove(LINK_TARGET_HEADER);
    m.headers.set("x-death-reason", reason);
    m.headers.set("x-death-queue", link_queue(&s.name));
    m.headers.set("x-death-detail", detail);
    m.expiry = None;
    if let Err(e) = ctx
        .router
        .core()
        .publish(&Destination::queue(&s.dead_letter), m)
        .await
    {
        tracing::error!(error = %e, "cannot dead-letter an XMPP message; it stays in the link queue");
        false
    } else {
        LinkStatus::bump(&ctx.status.counters.dead_lettered);
        true
    }
}

/// A stanza from the server.
async fn incoming(
    ctx: &Arc<LinkCtx>,
    sink: &mut Sink,
    st: &mut Session,
    stanza: Stanza,
) -> Result<(), tokio_xmpp::Error> {
    match stanza {
        Stanza::Message(m) => message(ctx, sink, st, m).await,
        Stanza::Presence(p) => {
            if let Some(unlock) = instant_room(ctx, &p) {
                sink.send(Stanza::Iq(unlock)).await?;
            }
            presence::handle(ctx, sink, st, p).await
        }
        Stanza::Iq(iq) => self::iq(ctx, sink, iq).await,
    }
}

/// When our join created a room (status 201), it stays locked until its owner (we)
/// accepts the default configuration: an "instant room" (XEP-0045 §10.1.2).
fn instant_room(ctx: &LinkCtx, p: &Presence) -> Option<Iq> {
    let from = p.from.as_ref()?;
    let room = ctx.settings.rooms.iter().find(|r| {
        r.room.eq_ignore_ascii_case(&from.to_bare().to_string())
            && from.resource().is_some_and(|n| n.as_str() == r.nick)
    })?;
    let created = p.payloads.iter().any(|x| {
        x.is("x", NS_MUC_USER)
            && x.children()
                .any(|c| c.is("status", NS_MUC_USER) && c.attr("code") == Some("201"))
    });
    if !created {
        return None;
    }
    tracing::info!(room = %room.room, "created the room; configuring it as an instant room");
    let form = Element::builder("x", "jabber:x:data")
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("type").into(),
            "submit",
        )
        .build();
    Some(Iq::Set {
        from: room.jid.parse().ok(),
        to: room.room.parse().ok(),
        id: format!("sb-room-{}", room.nick),
        payload: Element::builder("query", NS_MUC_OWNER).append(form).build(),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn message(
    ctx: &LinkCtx,
    sink: &mut Sink,
    st: &mut Session,
    s: XMessage,
) -> Result<(), tokio_xmpp::Error> {
    if s.type_ == MessageType::Error {
        tracing::info!(from = ?s.from.as_ref().map(ToString::to_string), "error stanza received");
        return Ok(());
    }
    let (Some(from), Some(to)) = (s.from.clone(), s.to.clone()) else {
        return Ok(());
    };
    // Chat states ("typing…"), receipts for what we sent, read markers: no body, no
    // JSON payload — nothing to route. Routing them would fill queues with empty messages.
    if s.bodies.is_empty() && !s.payloads.iter().any(|p| p.is("json", convert::NS_JSON)) {
        tracing::debug!(from = ?s.from.as_ref().map(ToString::to_string), "message without content (chat state, receipt, marker) not routed");
        return Ok(());
    }
    let groupchat = s.type_ == MessageType::Groupchat;
    if groupchat {
        let room = from.to_bare().to_string();
        let nick = from.resource().map(|r| r.to_string()).unwrap_or_default();
        let joined = ctx
            .settings
            .rooms
            .iter()
            .find(|r| r.room.eq_ignore_ascii_case(&room));
        match joined {
            // The room reflects what we said back to us: routing it again would loop.
            Some(r) if r.nick == nick => return Ok(()),
            // The room's subject, and messages from the room itself, are not chat.
            _ if nick.is_empty() || s.bodies.is_empty() => return Ok(()),
            _ => {}
        }
    }
    let link = ctx.settings.name.as_str();
    let c = &ctx.status.counters;
    let mut m = convert::from_stanza(&s);
    m.reply_to = Some(xmpp_reply_address(link, &from.to_string(), &to.to_string()));
    // A full destination makes the publish wait; the link must not stall for long (it
    // also sends, pings and pushes), so the sender is told to try again later instead.
    let to_text = to.to_string();
    let publish = ctx
        .router
        .publish_from_xmpp_unconfirmed(link, &to_text, false, m);
    tokio::pin!(publish);
    let routed = match futures::poll!(&mut publish) {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => {
            // Held back (a full destination, a watermark): settle the receipts already
            // owed first, so earlier senders are not kept waiting behind this one.
            while let Some(done) = st.confirming.next().await {
                settle_receipt(ctx, sink, done).await?;
            }
            tokio::time::timeout(PUBLISH_WAIT, publish).await
        }
    };
    let Ok(routed) = routed else {
        LinkStatus::bump(&c.rejected);
        tracing::warn!(from = %from, to = %to, "destination full: message refused with resource-constraint");
        if !groupchat {
            let mut e = XMessage::new_with_type(MessageType::Error, Some(from));
            e.from = Some(to);
            e.id = s.id.clone();
            e.payloads.push(
                StanzaError::new(
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                    "en",
                    "the destination is full; try again later",
                )
                .into(),
            );
            sink.send(Stanza::Message(e)).await?;
        }
        return Ok(());
    };
    let mut confirmation = None;
    let refused = match routed {
        Ok(Some((n, c))) if n > 0 => {
            confirmation = Some(c);
            None
        }
        Ok(Some(_)) => Some((
            DefinedCondition::NotAcceptable,
            format!("no route for {to} accepted this message"),
        )),
        Ok(None) => Some((
            DefinedCondition::ItemNotFound,
            format!("{to} routes nowhere: no route of this bridge serves that address"),
        )),
        Err(RouterError::Routing(e)) => Some((DefinedCondition::BadRequest, e.to_string())),
        Err(RouterError::Publish(e)) => Some((
            DefinedCondition::ServiceUnavailable,
            format!("the destination refused the message: {e}"),
        )),
    };
    match refused {
        None => {
            LinkStatus::bump(&c.received);
            let receipt = (!groupchat && convert::wants_receipt(&s))
                .then(|| convert::receipt(&s))
                .flatten();
            let confirmation = confirmation.unwrap_or_default();
            if confirmation.is_ready() {
                if let Some(r) = receipt {
                    sink.send(Stanza::Message(r)).await?;
                }
            } else {
                let refusal = (!groupchat).then(|| {
                    let mut e = XMessage::new_with_type(MessageType::Error, Some(from.clone()));
                    e.from = Some(to.clone());
                    e.id = s.id.clone();
                    e.payloads.push(
                        StanzaError::new(
                            ErrorType::Wait,
                            DefinedCondition::ServiceUnavailable,
                            "en",
                            "the message could not be stored; try again later",
                        )
                        .into(),
                    );
                    e
                });
                st.confirming.push(Box::pin(async move {
                    (receipt, refusal, confirmation.wait().await)
                }));
            }
        }
        Some((_, text)) if groupchat => {
            // Never answer a room with errors: everyone would see them.
            LinkStatus::bump(&c.rejected);
            tracing::info!(from = %from, to = %to, reason = %text, "room message not routed");
        }
        Some((condition, text)) => {
            LinkStatus::bump(&c.rejected);
            tracing::info!(from = %from, to = %to, reason = %text, "message refused with an error stanza");
            let mut e = XMessage::new_with_type(MessageType::Error, Some(from));
            e.from = Some(to);
            e.id = s.id.clone();
            e.payloads
                .push(StanzaError::new(ErrorType::Cancel, condition, "en", text).into());
            sink.send(Stanza::Message(e)).await?;
        }
    }
    Ok(())
}

async fn iq(ctx: &LinkCtx, sink: &mut Sink, iq: Iq) -> Result<(), tokio_xmpp::Error> {
    let (from, to, id, payload, is_get) = match iq {
        Iq::Get {
            from,
            to,
            id,
            payload,
        } => (from, to, id, payload, true),
        Iq::Set {
            from,
            to,
            id,
            payload,
        } => (from, to, id, payload, false),
        _ => return Ok(()),
    };
    let (Some(from), Some(to)) = (from, to) else {
        return Ok(());
    };
    let result: Result<Option<Element>, (DefinedCondition, &str)> = if !is_get {
        Err((
            DefinedCondition::ServiceUnavailable,
            "nothing here accepts iq set",
        ))
    } else if payload.is("query", NS_DISCO_INFO) {
        Ok(Some(disco_info(&to).into()))
    } else if payload.is("query", NS_DISCO_ITEMS) {
        Ok(Some(disco_items(ctx, &to).into()))
    } else if payload.is("ping", NS_PING) {
        Ok(None)
    } else {
        Err((DefinedCondition::ServiceUnavailable, "unsupported request"))
    };
    let reply = match result {
        Ok(payload) => Iq::Result {
            from: Some(to),
            to: Some(from),
            id,
            payload,
        },
        Err((condition, text)) => Iq::Error {
            from: Some(to),
            to: Some(from),
            id,
            error: StanzaError::new(ErrorType::Cancel, condition, "en", text),
            payload: None,
        },
    };
    sink.send(Stanza::Iq(reply)).await
}

fn disco_info(to: &Jid) -> DiscoInfoResult {
    let identity = if to.node().is_none() {
        Identity::new("gateway", "switchboard", "en", "Switchboard message router")
    } else {
        Identity::new("component", "generic", "en", to.to_string())
    };
    DiscoInfoResult {
        node: None,
        identities: vec![identity],
        features: [
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            convert::NS_RECEIPTS,
            convert::NS_SHIM,
            convert::NS_JSON,
            NS_PING,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
        extensions: Vec::new(),
    }
}

fn disco_items(ctx: &LinkCtx, to: &Jid) -> DiscoItemsResult {
    let items = if to.node().is_none() {
        ctx.router
            .table()
            .xmpp_jids(&ctx.settings.name)
            .into_iter()
            .filter_map(|j| j.parse::<Jid>().ok())
            .map(|jid| Item {
                jid,
                node: None,
                name: None,
            })
            .collect()
    } else {
        Vec::new()
    };
    DiscoItemsResult {
        node: None,
        items,
        rsm: None,
    }
}
