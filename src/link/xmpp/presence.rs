//! Presence: users' availability as events on internal topics (per `presence` routes),
//! subscriptions to our JIDs accepted, and presence-driven push — a user subscribed to
//! one of our JIDs gets that JID's messages while online; while offline they wait in a
//! bounded durable subscription. A user cancelling the subscription (`unsubscribe` or
//! `unsubscribed`) ends every push from that JID, the ad-hoc command ones included.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tracing::Instrument;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::presence::{Presence, Show, Type as PresenceType};

use super::availability::{Change, Shown};
use super::convert;
use super::link::{LinkCtx, Sub, lock};
use super::push_caps;
use super::session::{Session, Sink};
use crate::core::{ConsumeOptions, Destination, Message};
use crate::translate::escape::escape_level;

/// Prefix of the durable subscription queues of presence-driven push.
pub const PUSH_PREFIX: &str = "$sb.push.";

/// The metadata namespace of push subscriptions (presence and ad-hoc command ones),
/// which a cluster keeps for every router and a router alone in its store
/// ([`crate::core::Core::kept_metadata`]); with `--data-dir off`, in memory only.
pub const META_XMPP_PUSH: &str = "xmpp_push";

/// A subscription's key in [`META_XMPP_PUSH`]: both bare JIDs, which cannot contain
/// `/`.
pub(super) fn shared_key(user: &str, ours: &str) -> String {
    format!("{user}/{ours}")
}

/// A subscription as it is kept.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedSub {
    destination: String,
    queue: String,
}

/// Applies a kept push subscription (what the store held at start, another router's
/// change: `None`, ended) to this link's mirror. The namespace holds every link's:
/// those of JIDs the link cannot send from are another link's.
pub(super) fn mirror(ctx: &LinkCtx, key: &str, value: Option<&[u8]>) {
    let Some((user, ours)) = key.split_once('/') else {
        return;
    };
    let bare = ours.split_once('/').map_or(ours, |(bare, _)| bare);
    if ctx.settings.refuses_from(bare).is_some() {
        return;
    }
    let key = (user.to_owned(), ours.to_owned());
    let sub = value.and_then(|v| {
        let s: SharedSub = serde_json::from_slice(v).ok()?;
        Some(Sub {
            dest: Destination::parse(&s.destination).ok()?,
            queue: s.queue,
        })
    });
    let mut subs = lock(&ctx.subs);
    match sub {
        Some(sub) => {
            subs.insert(key, sub);
        }
        None => {
            subs.remove(&key);
        }
    }
}

/// Writes a subscription's change where subscriptions are kept (the cluster, the
/// store), logging a failure: the link still pushes; a router taking it over, or this
/// one restarted, would not know.
fn share(ctx: &LinkCtx, user: &str, ours: &str, sub: Option<&Sub>) {
    let Some(shared) = &ctx.kept_subs else {
        return;
    };
    let key = shared_key(user, ours);
    let wait = match sub {
        Some(sub) => {
            let value = SharedSub {
                destination: sub.dest.to_string(),
                queue: sub.queue.clone(),
            };
            shared.put(&key, serde_json::to_vec(&value).unwrap_or_default().into())
        }
        None => shared.delete(&key),
    };
    let (user, ours) = (user.to_owned(), ours.to_owned());
    tokio::spawn(async move {
        if let Err(e) = wait.wait().await {
            tracing::warn!(user, jid = ours, error = %e, "cannot record a push subscription: a router taking the link over, or this one restarted, would not push it");
        }
    });
}

pub(super) async fn handle(
    ctx: &Arc<LinkCtx>,
    sink: &mut Sink,
    st: &mut Session,
    p: Presence,
) -> Result<(), tokio_xmpp::Error> {
    let (Some(from), Some(to)) = (p.from.clone(), p.to.clone()) else {
        return Ok(());
    };
    let user = from.to_bare().to_string();
    let ours = to.to_bare().to_string();
    let reply = |t: PresenceType| {
        let mut r = Presence::new(t);
        r.from = ctx.settings.stamp(&to);
        r.to = Some(from.to_bare().into());
        r
    };
    match p.type_ {
        PresenceType::Subscribe
            if !ctx
                .settings
                .accepts_subscription_from(from.domain().as_str()) =>
        {
            tracing::info!(
                user,
                jid = ours,
                "presence subscription refused: the user's domain is not in subscriptions_from"
            );
            sink.send(Stanza::Presence(reply(PresenceType::Unsubscribed)))
                .await?;
        }
        PresenceType::Subscribe => {
            // The subscription collects before it is accepted: an alert published
            // once the user sees it accepted (on any router) reaches them.
            subscribe(ctx, &user, &ours).await;
            sink.send(Stanza::Presence(reply(PresenceType::Subscribed)))
                .await?;
            if !ctx.settings.is_client() {
                // A client's server sends the account's presence to a new subscriber
                // itself; a component's JIDs have only the presence they send.
                sink.send(Stanza::Presence(reply(PresenceType::None)))
                    .await?;
            }
            // Ask for theirs in return (as gateways do): only a mutual subscription
            // makes the user's server send us their presence — which is what starts and
            // stops the push (a client's roster then keeps the contact).
            sink.send(Stanza::Presence(reply(PresenceType::Subscribe)))
                .await?;
        }
        PresenceType::Probe => {
            sink.send(Stanza::Presence(reply(PresenceType::None)))
                .await?;
        }
        PresenceType::Unsubscribe | PresenceType::Unsubscribed => {
            // Either way the subscription between the user and this JID is over: every
            // push from it ends, the command subscriptions made at it too.
            let ended = unsubscribe_all(ctx, st, &user, &ours);
            if ended > 0 {
                tracing::info!(
                    user,
                    jid = ours,
                    ended,
                    "presence subscription cancelled: the user's pushes from this JID end"
                );
            }
        }
        PresenceType::None => {
            let shown = Shown {
                show: match p.show {
                    None => "available",
                    Some(Show::Away) => "away",
                    Some(Show::Chat) => "chat",
                    Some(Show::Dnd) => "dnd",
                    Some(Show::Xa) => "xa",
                },
                status: status_of(&p),
                priority: p.priority.0,
            };
            if let Some(change) = st.presence.available(&from, shown) {
                event(ctx, &change).await;
            }
            start_pushes(ctx, st, &user);
        }
        PresenceType::Unavailable => {
            let Some(change) = st.presence.unavailable(&from, status_of(&p), p.priority.0) else {
                tracing::debug!(
                    jid = %from,
                    online = st.presence.is_online(&user),
                    "unavailable presence that changes nothing (a resource not known as available, or the bare JID): no event"
                );
                return Ok(());
            };
            // Stop pushing before telling anyone they left: whoever reacts to the event
            // by publishing must find the message kept for later, not sent into the void.
            if !change.available {
                stop_pushes(st, &user);
            }
            event(ctx, &change).await;
        }
        PresenceType::Error => refused(ctx, &from, &p),
        PresenceType::Subscribed => {}
    }
    Ok(())
}

/// A presence of ours the server or a room refused — a room join, most likely: never
/// silent, since the room then stays without us (joins are retried on the next connect).
fn refused(ctx: &LinkCtx, from: &Jid, p: &Presence) {
    let (condition, text) = error_of(p);
    let bare = from.to_bare().to_string();
    match ctx
        .settings
        .rooms
        .iter()
        .find(|r| r.room.eq_ignore_ascii_case(&bare))
    {
        Some(r) => tracing::warn!(
            room = %r.room,
            nick = %r.nick,
            condition,
            text,
            "cannot join the room: refused (if it does not exist yet, may the component's JIDs create rooms? see docs/xmpp.md#rooms-muc)"
        ),
        None => tracing::info!(from = %from, condition, text, "presence error received"),
    }
}

/// The condition and text of an error stanza's `<error/>`, as far as it has them.
fn error_of(p: &Presence) -> (String, String) {
    const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    let Some(e) = p.payloads.iter().find(|e| e.name() == "error") else {
        return ("(no <error/>)".into(), String::new());
    };
    let condition = e
        .children()
        .find(|c| c.ns() == NS_STANZAS && c.name() != "text")
        .map_or_else(|| "(no condition)".to_owned(), |c| c.name().to_owned());
    let text = e
        .children()
        .find(|c| c.is("text", NS_STANZAS))
        .map(|t| t.text())
        .unwrap_or_default();
    (condition, text)
}

/// The first status text of a presence, if any.
fn status_of(p: &Presence) -> Option<String> {
    p.statuses.values().next().cloned()
}

/// Publishes a presence change as a JSON event through the `presence` routes.
async fn event(ctx: &LinkCtx, c: &Change) {
    let body = serde_json::json!({
        "jid": c.jid,
        "user": c.user,
        "available": c.available,
        "show": c.shown.show,
        "status": c.shown.status,
        "priority": i64::from(c.shown.priority),
        "resources": c.resources,
    })
    .to_string();
    let mut m = Message::new(body).with_content_type("application/json");
    m.origin = crate::core::Origin::new("xmpp", &c.jid);
    m.headers.set(convert::FROM_HEADER, c.jid.as_str());
    let user = c.user.as_str();
    let payload = m.body.len();
    match ctx
        .router
        .publish_from_xmpp(&ctx.settings.name, user, true, m)
        .await
    {
        Ok(Some(_)) => ctx.status.received(payload),
        Ok(None) => {}
        Err(e) => tracing::warn!(user, error = %e, "cannot publish a presence event"),
    }
}

/// Records a subscription and creates what collects its messages; resolves once that
/// collects topic publishes made anywhere in the cluster.
async fn subscribe(ctx: &LinkCtx, user: &str, ours: &str) {
    let table = ctx.router.table();
    let Some(dest) = table.xmpp_destination(&ctx.settings.name, ours) else {
        tracing::info!(
            user,
            jid = ours,
            "presence subscription accepted; this JID routes to no internal destination, so nothing is pushed"
        );
        return;
    };
    match &dest {
        Destination::Queue(q) => {
            // Pushing a queue would make the user a competing consumer, taking work
            // meant for its workers: only topics are pushed.
            tracing::info!(user, jid = ours, queue = %q, "presence subscription accepted; this JID routes to a queue, which is not pushed (only topics are)");
        }
        Destination::Topic(t) => {
            if push_caps::check(ctx, user, ours).is_err() {
                // Accepted all the same: the presence subscription is the user's
                // server's business; only the push is not held (logged by the check).
                return;
            }
            if let Err(e) = collect(ctx, user, ours, t).await {
                tracing::warn!(user, jid = ours, error = %e, "cannot subscribe for push");
            }
        }
    }
}

/// Pushes topic `topic` to `user` from now on, as `ours` (a bare JID of ours, or, for an
/// ad-hoc command's subscription, `BARE/TOPIC`): creates the durable subscription that
/// collects while they are away, records it (in the cluster too); resolves once it
/// collects topic publishes made anywhere in the cluster.
pub(super) async fn collect(
    ctx: &LinkCtx,
    user: &str,
    ours: &str,
    topic: &str,
) -> Result<(), String> {
    let name = format!(
        "{PUSH_PREFIX}{}.{}.{}",
        ctx.settings.name,
        escape_level(user),
        escape_level(ours)
    );
    // A durable subscription: it collects (bounded) while nobody consumes it.
    ctx.router
        .core()
        .subscribe_durable(&name, &[topic], ConsumeOptions::manual(1))
        .map_err(|e| e.to_string())?;
    if let Err(e) = ctx.router.core().bindings_settled(&name).wait().await {
        tracing::warn!(user, jid = ours, error = %e, "the push subscription may miss what other routers publish until the cluster answers");
    }
    tracing::info!(
        user,
        jid = ours,
        topic,
        "pushing this topic while the user is online"
    );
    let sub = Sub {
        dest: Destination::topic(topic),
        queue: name,
    };
    share(ctx, user, ours, Some(&sub));
    lock(&ctx.subs).insert((user.to_owned(), ours.to_owned()), sub);
    Ok(())
}

/// Ends a subscription: its push stops and its collecting queue is deleted; whether
/// there was one.
pub(super) fn unsubscribe(ctx: &LinkCtx, st: &mut Session, user: &str, ours: &str) -> bool {
    let key = (user.to_owned(), ours.to_owned());
    if let Some(stop) = st.pushes.remove(&key) {
        stop.cancel();
    }
    let removed = lock(&ctx.subs).remove(&key);
    if let Some(sub) = removed {
        push_caps::served(ctx, user);
        share(ctx, user, ours, None);
        ctx.router.core().delete_queue(&sub.queue);
        tracing::info!(
            user,
            jid = ours,
            "presence subscription ended; push removed"
        );
        return true;
    }
    false
}

/// Ends every subscription of `user` to `ours` (a bare JID of ours): the presence one
/// and the command ones made at that JID (`ours/TOPIC`); how many there were.
pub(super) fn unsubscribe_all(ctx: &LinkCtx, st: &mut Session, user: &str, ours: &str) -> usize {
    let prefix = format!("{ours}/");
    let keys: Vec<String> = lock(&ctx.subs)
        .keys()
        .filter(|(u, o)| u == user && (o == ours || o.starts_with(&prefix)))
        .map(|(_, o)| o.clone())
        .collect();
    keys.iter()
        .filter(|o| unsubscribe(ctx, st, user, o))
        .count()
}

/// The id prefix of the pings a new session sends the resources its contacts had.
const RESOURCE_PING: &str = "sb-resource-";

/// A ping to `resource`, a resource a contact had when the previous session ended
/// (`n` makes its id unique in the session).
pub(super) fn resource_ping(resource: Jid, n: &str) -> Iq {
    Iq::Get {
        from: None,
        to: Some(resource),
        id: format!("{RESOURCE_PING}{n}"),
        payload: tokio_xmpp::minidom::Element::builder("ping", super::iq::NS_PING).build(),
    }
}

/// Handles the answer to a [`resource_ping`] (whether `iq` is one): an error says the
/// resource is gone, and the last of a contact's resources gone without a presence from
/// them meanwhile is their "offline" event. An answer from the resource itself says
/// nothing new: its presence, the answer to the probe sent before, came first.
pub(super) async fn resource_answer(ctx: &LinkCtx, st: &mut Session, iq: &Iq) -> bool {
    let (id, from, error) = match iq {
        Iq::Error { id, from, .. } => (id, from, true),
        Iq::Result { id, from, .. } => (id, from, false),
        _ => return false,
    };
    if !id.starts_with(RESOURCE_PING) {
        return false;
    }
    if let (true, Some(from)) = (error, from)
        && let Some(change) = st.presence.gone(from)
    {
        tracing::info!(
            user = change.user,
            "the contact left while the link had no session"
        );
        stop_pushes(st, &change.user);
        event(ctx, &change).await;
    }
    true
}

fn stop_pushes(st: &mut Session, user: &str) {
    st.pushes.retain(|(u, _), stop| {
        let keep = u != user;
        if !keep {
            stop.cancel();
        }
        keep
    });
}

/// Starts a push for each of the user's subscriptions not already running.
pub(super) fn start_pushes(ctx: &Arc<LinkCtx>, st: &mut Session, user: &str) {
    let subs: Vec<((String, String), Sub)> = lock(&ctx.subs)
        .iter()
        .filter(|((u, _), _)| u == user)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, sub) in subs {
        if st.pushes.contains_key(&key) {
            continue;
        }
        let stop = st.cancel.child_token();
        st.pushes.insert(key.clone(), stop.clone());
        let span = tracing::info_span!("xmpp_push", user = %key.0, jid = %key.1);
        tokio::spawn(push(Arc::clone(ctx), key, sub, st.out.clone(), stop).instrument(span));
    }
}

/// Sends the destination's messages to the user, one at a time, acking each in the
/// core once written; on stop, what is unacked goes back to the queue.
async fn push(
    ctx: Arc<LinkCtx>,
    (user, ours): (String, String),
    sub: Sub,
    out: tokio::sync::mpsc::Sender<(Stanza, oneshot::Sender<bool>)>,
    stop: CancellationToken,
) {
    let core = ctx.router.core();
    let consumer =
        core.subscribe_durable(&sub.queue, &[sub.dest.name()], ConsumeOptions::manual(16));
    let consumer = match consumer {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the push");
            return;
        }
    };
    tracing::info!("user online: pushing");
    loop {
        let d = tokio::select! {
            _ = stop.cancelled() => break,
            d = consumer.recv() => match d {
                Some(d) => d,
                None => break,
            },
        };
        // An ad-hoc command's subscription (`BARE/TOPIC`) is sent from the bare JID.
        let from = ours.split_once('/').map_or(ours.as_str(), |(bare, _)| bare);
        let stanza = match convert::to_stanza(&d.message, &user, from, "chat", |k| {
            k == crate::router::LINK_TARGET_HEADER
        }) {
            Ok(s) => Stanza::Message(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot push a message as a stanza; rejected");
                consumer.nack(d.tag, false);
                continue;
            }
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        if out.send((stanza, ack_tx)).await.is_err() {
            break;
        }
        if ack_rx.await.unwrap_or(false) {
            consumer.ack(d.tag);
            ctx.status.published(d.message.body.len());
        } else {
            break;
        }
    }
    tracing::info!("push stopped");
}
