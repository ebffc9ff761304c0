//! PubSub (XEP-0060) on both kinds of XMPP link: nodes as route sources and targets.
//!
//! - **Sources**: the link subscribes to every node its routes read (when a session
//!   starts, and on each reload: new nodes subscribed, dropped ones unsubscribed), with
//!   its own bare JID (a component: its domain), and fetches the node's last items
//!   with each subscription. Each `<item/>` of an event notification becomes one
//!   message, routed by the routes of its node, and so do the fetched items the link
//!   missed ([`super::pubsub_events`]).
//! - **Targets**: a message for a node is published as one item (`<publish/>` in an
//!   `iq set`), after a `<create/>` once per session when the route says `create: true`
//!   (a `conflict` answer means the node is there). A publish the service refuses is
//!   dead-lettered with its error.
//!
//! Item ↔ body: a JSON body travels in XEP-0335's `<json xmlns='urn:xmpp:json:0'/>`, an
//! XML body (`application/xml`, `text/xml`, `…+xml`) as the item's payload itself, any
//! other body as text in `<text xmlns='urn:switchboard:text:0'/>` (base64, with
//! `encoding='base64'`, when it is not UTF-8). Reading, those two wrappers are
//! unwrapped; any other payload is the body as serialized XML (`application/xml`).
//! The table is in docs/mapping.md ("XMPP PubSub").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_xmpp::Stanza;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use tracing::Instrument;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;

use super::conn::Settle;
use super::convert::NS_JSON;
use super::link::{LinkCtx, lock};
use super::outbound::{Outcome, dead_letter_message};
use super::pubsub_events::Seen;
use super::session::{Session, Sink};
use crate::core::{Delivery, Message, Origin};
use crate::routes::{PUBSUB_MAX_ITEMS, PubsubNode};

pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// Switchboard's wrapper for a body that is neither JSON nor XML.
pub const NS_TEXT: &str = "urn:switchboard:text:0";

/// The service's JID, the node and the item id of a message read from a node.
pub const SERVICE_HEADER: &str = "x-xmpp-pubsub-service";
pub const NODE_HEADER: &str = "x-xmpp-pubsub-node";
pub const ITEM_HEADER: &str = "x-xmpp-pubsub-item";
/// The item's publisher, when the service says (`publisher` attribute).
pub const PUBLISHER_HEADER: &str = "x-xmpp-pubsub-publisher";

/// Requests in flight are remembered up to this many (beyond, their answers are only
/// logged as unknown).
const MAX_PENDING: usize = 10_000;

/// How often a refused subscription is asked for again (the node may have been created
/// since, or the owner changed its access model).
const RETRY_SUBSCRIBE: std::time::Duration = std::time::Duration::from_secs(10);

/// A link's PubSub requests: nodes created this session, requests awaiting an answer;
/// and the items it delivered lately (kept across sessions).
#[derive(Default)]
pub(super) struct State {
    inner: Mutex<Inner>,
    pub seen: Mutex<Seen>,
}

#[derive(Default)]
struct Inner {
    created: HashSet<(String, String)>,
    /// Nodes whose subscription the service refused: asked again every
    /// [`RETRY_SUBSCRIBE`] and on every reload.
    refused: HashSet<PubsubNode>,
    pending: HashMap<String, Pending>,
    seq: u64,
}

enum Pending {
    /// A publish: the message, dead-lettered if the service refuses it.
    Publish(Arc<Message>, String),
    Create(String),
    Subscribe(PubsubNode),
    Unsubscribe(String),
    /// The node's last items, fetched with a subscription; `first`: the node's first
    /// subscription, and how many of them the routes ask for.
    Items {
        node: PubsubNode,
        first: Option<u32>,
    },
}

impl State {
    /// A new session on the server: nodes are created again before their first
    /// publish (the server may have restarted), and answers to the previous session's
    /// requests will not come.
    pub fn new_session(&self) {
        let mut i = lock(&self.inner);
        i.created.clear();
        i.refused.clear();
        let lost = i.pending.len();
        i.pending.clear();
        if lost > 0 {
            tracing::debug!(
                lost,
                "PubSub requests of the previous session got no answer"
            );
        }
    }

    fn request(&self, what: Pending) -> String {
        let mut i = lock(&self.inner);
        i.seq += 1;
        let id = format!("sb-ps-{}", i.seq);
        if i.pending.len() < MAX_PENDING {
            i.pending.insert(id.clone(), what);
        }
        id
    }
}

/// The JID the link subscribes with, and sends from (`None`: the server stamps it).
fn our_jid(ctx: &LinkCtx) -> (Option<Jid>, String) {
    let ours = ctx.settings.default_from();
    let from = ours
        .parse::<Jid>()
        .ok()
        .and_then(|j| ctx.settings.stamp(&j));
    (from, ours)
}

fn iq_set(ctx: &LinkCtx, service: &str, id: String, child: Element) -> Option<Iq> {
    let to = service.parse::<Jid>().ok()?;
    Some(Iq::Set {
        from: our_jid(ctx).0,
        to: Some(to),
        id,
        payload: Element::builder("pubsub", NS_PUBSUB).append(child).build(),
    })
}

/// Asks for the node's last [`PUBSUB_MAX_ITEMS`] items (XEP-0060 §6.5.7).
fn items_request(ctx: &LinkCtx, n: &PubsubNode) -> Option<Iq> {
    let to = n.service.parse::<Jid>().ok()?;
    let first = (!lock(&ctx.pubsub.seen).knows(n))
        .then(|| ctx.router.table().pubsub_catch_up(&ctx.settings.name, n));
    lock(&ctx.pubsub.seen).fetching(n);
    let what = Pending::Items {
        node: n.clone(),
        first,
    };
    let child = Element::builder("items", NS_PUBSUB)
        .attr(xml_ncname!("node").into(), n.node.clone())
        .attr(
            xml_ncname!("max_items").into(),
            PUBSUB_MAX_ITEMS.to_string(),
        )
        .build();
    Some(Iq::Get {
        from: our_jid(ctx).0,
        to: Some(to),
        id: ctx.pubsub.request(what),
        payload: Element::builder("pubsub", NS_PUBSUB).append(child).build(),
    })
}

fn node_request(ctx: &LinkCtx, verb: &str, n: &PubsubNode, what: Pending) -> Option<Iq> {
    let child = Element::builder(verb, NS_PUBSUB)
        .attr(xml_ncname!("node").into(), n.node.clone())
        .attr(xml_ncname!("jid").into(), our_jid(ctx).1)
        .build();
    iq_set(ctx, &n.service, ctx.pubsub.request(what), child)
}

/// Starts following the route table for a new session: subscribes to the nodes its
/// routes read, and on every reload to the new ones, unsubscribing from the dropped
/// ones; stops with the session. The requests go out through the session's loop.
pub(super) fn follow_routes(ctx: &Arc<LinkCtx>, st: &Session) {
    ctx.pubsub.new_session();
    // Before anything is sent: a service may send a node's last item as soon as it has
    // our presence (ejabberd), and that waits for the fetch like any event.
    let nodes = ctx.router.table().pubsub_nodes(&ctx.settings.name);
    lock(&ctx.pubsub.seen).new_session(&nodes);
    let ctx = Arc::clone(ctx);
    let out = st.out.clone();
    let stop = st.cancel.clone();
    let mut changes = ctx.routes_changed.clone();
    tokio::spawn(
        async move {
            let mut have: Vec<PubsubNode> = Vec::new();
            loop {
                let want = ctx.router.table().pubsub_nodes(&ctx.settings.name);
                let refused: HashSet<PubsubNode> =
                    std::mem::take(&mut lock(&ctx.pubsub.inner).refused);
                let mut send = Vec::new();
                for n in want
                    .iter()
                    .filter(|n| !have.contains(n) || refused.contains(n))
                {
                    tracing::info!(service = %n.service, node = %n.node, "subscribing to PubSub node");
                    let what = Pending::Subscribe(n.clone());
                    send.extend(node_request(&ctx, "subscribe", n, what));
                    // Answered after the subscription (the service handles our requests
                    // in order): what was published while we were not subscribed.
                    send.extend(items_request(&ctx, n));
                }
                for n in have.iter().filter(|n| !want.contains(n)) {
                    tracing::info!(service = %n.service, node = %n.node, "no route reads this PubSub node any more: unsubscribing");
                    lock(&ctx.pubsub.seen).forget(n);
                    super::pubsub_events::forgotten(&ctx, n);
                    let what = Pending::Unsubscribe(n.node.clone());
                    send.extend(node_request(&ctx, "unsubscribe", n, what));
                }
                for iq in send {
                    let (tx, _rx) = oneshot::channel();
                    if out.send((Stanza::Iq(iq), tx)).await.is_err() {
                        return;
                    }
                }
                have = want;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    // Refused subscriptions are asked for again (nothing is sent when
                    // there are none).
                    _ = tokio::time::sleep(RETRY_SUBSCRIBE) => {}
                    changed = changes.changed() => if changed.is_err() {
                        return;
                    },
                }
            }
        }
        .in_current_span(),
    );
}

/// An answer to one of the link's PubSub requests: `false` if `iq` is not one.
pub(super) async fn answer(ctx: &LinkCtx, iq: &Iq) -> bool {
    let (id, error, payload) = match iq {
        Iq::Result { id, payload, .. } => (id, None, payload.as_ref()),
        Iq::Error { id, error, .. } => (id, Some(error), None),
        _ => return false,
    };
    let Some(what) = lock(&ctx.pubsub.inner).pending.remove(id) else {
        return id.starts_with("sb-ps-");
    };
    let why = error.map(|e| {
        let text = e.texts.values().next().cloned().unwrap_or_default();
        let condition = Element::from(e.defined_condition.clone());
        if text.is_empty() {
            condition.name().to_owned()
        } else {
            format!("{}: {text}", condition.name())
        }
    });
    let conflict = error.is_some_and(|e| {
        e.defined_condition == xmpp_parsers::stanza_error::DefinedCondition::Conflict
    });
    match (what, why) {
        (Pending::Subscribe(n), None) => {
            tracing::info!(service = %n.service, node = %n.node, "subscribed to PubSub node");
        }
        (Pending::Subscribe(n), Some(why)) => {
            tracing::warn!(service = %n.service, node = %n.node, error = %why, "cannot subscribe to PubSub node: asking again in 10 s and on every reload");
            lock(&ctx.pubsub.inner).refused.insert(n);
        }
        (Pending::Unsubscribe(node), Some(why)) => {
            tracing::info!(node = %node, error = %why, "unsubscribing from PubSub node refused");
        }
        (Pending::Create(node), None) => tracing::info!(node = %node, "PubSub node created"),
        (Pending::Create(_), Some(_)) if conflict => {}
        (Pending::Create(node), Some(why)) => {
            tracing::warn!(node = %node, error = %why, "cannot create PubSub node");
        }
        (Pending::Publish(m, node), Some(why)) => {
            let detail = format!("PubSub node {node} refused the item: {why}");
            dead_letter_message(ctx, &m, "pubsub-refused", &detail).await;
        }
        (Pending::Items { node, first }, None) => {
            let empty = Element::builder("pubsub", NS_PUBSUB).build();
            super::pubsub_events::fetched(ctx, &node, first, payload.unwrap_or(&empty)).await;
        }
        (Pending::Items { node, .. }, Some(why)) => {
            tracing::info!(service = %node.service, node = %node.node, error = %why, "cannot fetch the items of PubSub node: what it received while the link was not subscribed is not delivered");
            super::pubsub_events::not_fetched(ctx, &node).await;
        }
        (Pending::Publish(..) | Pending::Unsubscribe(_), None) => {}
    }
    true
}

/// Publishes a message of the link queue to the node its target names (`target`: the
/// `pubsub` object of the link address).
pub(super) async fn publish(
    ctx: &LinkCtx,
    sink: &mut Sink,
    d: Delivery,
    target: &serde_json::Value,
) -> Result<Outcome, tokio_xmpp::Error> {
    let field = |k: &str| target.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let (Some(service), Some(node)) = (field("service"), field("node")) else {
        return Ok(given_up(ctx, &d, "bad-target", "no PubSub node on the message").await);
    };
    let create = target.get("create").and_then(|v| v.as_bool()) == Some(true);
    if node.is_empty() {
        return Ok(given_up(ctx, &d, "bad-target", "the PubSub node name rendered empty").await);
    }
    let payload = match item_payload(&d.message) {
        Ok(p) => p,
        Err(why) => return Ok(given_up(ctx, &d, "untranslatable", &why).await),
    };
    let key = (service.clone(), node.clone());
    if create && !lock(&ctx.pubsub.inner).created.contains(&key) {
        let child = Element::builder("create", NS_PUBSUB)
            .attr(xml_ncname!("node").into(), node.clone())
            .build();
        let id = ctx.pubsub.request(Pending::Create(node.clone()));
        if let Some(iq) = iq_set(ctx, &service, id, child) {
            // The service handles our requests in order: the node exists (or the
            // answer is an error) before the publish that follows.
            sink.send(Stanza::Iq(iq)).await?;
            lock(&ctx.pubsub.inner).created.insert(key);
        }
    }
    let mut item = Element::builder("item", NS_PUBSUB).append(payload);
    if let Some(id) = field("item_id") {
        item = item.attr(xml_ncname!("id").into(), id);
    }
    let publish = Element::builder("publish", NS_PUBSUB)
        .attr(xml_ncname!("node").into(), node.clone())
        .append(item.build())
        .build();
    let id = ctx
        .pubsub
        .request(Pending::Publish(Arc::clone(&d.message), node));
    let Some(iq) = iq_set(ctx, &service, id, publish) else {
        let why = format!("invalid PubSub service JID `{service}`");
        return Ok(given_up(ctx, &d, "bad-target", &why).await);
    };
    let size = d.message.body.len();
    sink.send_settled(Stanza::Iq(iq), Some(Settle::Link(d.tag)))
        .await?;
    ctx.status.published(size);
    Ok(Outcome::Sent)
}

async fn given_up(ctx: &LinkCtx, d: &Delivery, reason: &str, detail: &str) -> Outcome {
    if dead_letter_message(ctx, &d.message, reason, detail).await {
        Outcome::DeadLettered
    } else {
        Outcome::Stuck
    }
}

fn mime(m: &Message) -> String {
    let ct = m.content_type.as_deref().unwrap_or("");
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The item payload a message becomes (see the module's documentation).
pub fn item_payload(m: &Message) -> Result<Element, String> {
    let mime = mime(m);
    let text = std::str::from_utf8(&m.body);
    if mime == "application/json" || mime.ends_with("+json") {
        let text = text.map_err(|_| "a JSON body that is not UTF-8".to_owned())?;
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("a JSON body that does not parse: {e}"))?;
        return Ok(Element::builder("json", NS_JSON)
            .append(v.to_string())
            .build());
    }
    if mime == "application/xml" || mime == "text/xml" || mime.ends_with("+xml") {
        let text = text.map_err(|_| "an XML body that is not UTF-8".to_owned())?;
        return text
            .trim()
            .parse::<Element>()
            .map_err(|e| format!("an XML body that is not one well-formed element: {e}"));
    }
    Ok(match text {
        Ok(t) => Element::builder("text", NS_TEXT)
            .append(t.to_owned())
            .build(),
        Err(_) => Element::builder("text", NS_TEXT)
            .attr(xml_ncname!("encoding").into(), "base64")
            .append(B64.encode(&m.body))
            .build(),
    })
}

/// The message an item's payload becomes (see the module's documentation).
pub fn item_message(service: &str, node: &str, item: &Element) -> Message {
    let payload = item.children().next();
    let mut m = match payload {
        Some(p) if p.is("json", NS_JSON) => {
            Message::new(Bytes::from(p.text())).with_content_type("application/json")
        }
        Some(p) if p.is("text", NS_TEXT) => {
            let text = p.text();
            match p.attr("encoding") {
                Some("base64") => match B64.decode(text.trim()) {
                    Ok(raw) => Message::new(Bytes::from(raw)),
                    Err(_) => Message::new(Bytes::from(text)),
                },
                _ => Message::new(Bytes::from(text)).with_content_type("text/plain; charset=utf-8"),
            }
        }
        Some(p) => Message::new(Bytes::from(String::from(p))).with_content_type("application/xml"),
        None => Message::new(Bytes::new()),
    };
    m.origin = Origin::new("xmpp", service);
    m.headers.set(SERVICE_HEADER, service);
    m.headers.set(NODE_HEADER, node);
    if let Some(id) = item.attr("id") {
        m.headers.set(ITEM_HEADER, id);
    }
    if let Some(p) = item.attr("publisher") {
        m.headers.set(PUBLISHER_HEADER, p);
    }
    m.persistent = true;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: &[u8], ct: Option<&str>) -> Message {
        let mut m = Message::new(Bytes::copy_from_slice(body));
        m.content_type = ct.map(str::to_owned);
        let item = Element::builder("item", NS_PUBSUB_EVENT)
            .attr(xml_ncname!("id").into(), "i1")
            .append(item_payload(&m).unwrap())
            .build();
        item_message("pubsub.example.org", "n", &item)
    }

    #[test]
    fn bodies_round_trip_through_items() {
        let j = round_trip(br#"{"t": 21.5}"#, Some("application/json"));
        assert_eq!(&j.body[..], br#"{"t":21.5}"#);
        assert_eq!(j.content_type.as_deref(), Some("application/json"));
        assert_eq!(j.headers.get(ITEM_HEADER), Some("i1"));
        assert_eq!(j.headers.get(NODE_HEADER), Some("n"));
        assert_eq!(j.headers.get(SERVICE_HEADER), Some("pubsub.example.org"));
        let t = round_trip("hé <b>".as_bytes(), None);
        assert_eq!(&t.body[..], "hé <b>".as_bytes());
        assert_eq!(t.content_type.as_deref(), Some("text/plain; charset=utf-8"));
        let b = round_trip(&[0, 255, 1], Some("application/octet-stream"));
        assert_eq!(&b.body[..], &[0, 255, 1]);
        let x = round_trip(
            b"<entry xmlns='http://www.w3.org/2005/Atom'><title>hi</title></entry>",
            Some("application/atom+xml"),
        );
        assert_eq!(x.content_type.as_deref(), Some("application/xml"));
        let back: Element = std::str::from_utf8(&x.body).unwrap().parse().unwrap();
        assert!(back.is("entry", "http://www.w3.org/2005/Atom"));
        assert_eq!(
            back.get_child("title", "http://www.w3.org/2005/Atom")
                .unwrap()
                .text(),
            "hi"
        );
    }

    #[test]
    fn bad_json_or_xml_bodies_are_refused() {
        let mut m = Message::new(Bytes::from_static(b"{nope"));
        m.content_type = Some("application/json".into());
        assert!(item_payload(&m).is_err());
        m.content_type = Some("application/xml".into());
        m.body = Bytes::from_static(b"<a/><b/>");
        assert!(item_payload(&m).is_err());
    }
}
