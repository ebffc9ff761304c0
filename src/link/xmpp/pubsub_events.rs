//! What the nodes a link reads send it: event notifications (items, retractions), and
//! the items it fetches when it subscribes, to deliver those it missed while away.
//!
//! **Exactly once across reconnections.** The link remembers, per node, the items it
//! delivered lately: their ids and a digest of their payload (the last
//! [`REMEMBERED`]). A router running alone with a store keeps that in the store too
//! ([`META_XMPP_PUBSUB`]), so that after a restart the first fetch delivers what was
//! published while it was stopped; clustered, or with `--data-dir off`, it is kept in
//! memory only. Each time it subscribes (a new session, a reload adding the node, a
//! refused subscription asked again) it fetches the node's last
//! [`PUBSUB_MAX_ITEMS`] (XEP-0060 §6.5.7) and delivers, in the order the service lists
//! them (oldest first, on Prosody and ejabberd alike), each one it does not remember:
//! new ids, and ids published again with another payload (a sensor's item, say). On
//! the first subscription of the node since the link started (or since no route read
//! it), nothing old is delivered unless a route asks (`catch_up: N`: the last N); the
//! fetched items are only remembered.
//!
//! Comparing with what was delivered rather than finding the last item in the list is
//! what keeps this right when items are retracted, or published again under an id the
//! link already saw (the service moves such an item to the end of its list).
//!
//! From the start of a session (or a subscription) until the fetch is answered, the
//! node's events wait: the service may send old items again (ejabberd sends a node's
//! last item to each new subscription, and to a subscriber's new presence, as a
//! live-looking event), and a missed item must not overtake older missed ones. Once the
//! fetched items are delivered, the waiting events not among them follow. Outside that
//! window an event carrying a `<delay/>` (an old item sent again) is delivered only if
//! the link has not delivered it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio_xmpp::minidom::Element;
use xmpp_parsers::message::Message as XMessage;

use super::link::{LinkCtx, lock};
use super::pubsub::{ITEM_HEADER, NODE_HEADER, NS_PUBSUB, NS_PUBSUB_EVENT, SERVICE_HEADER};
use crate::core::{Message, Origin};
use crate::link::LinkStatus;
use crate::routes::{PUBSUB_MAX_ITEMS, PubsubNode};

/// XEP-0203: the `<delay/>` of a stanza sent again.
const NS_DELAY: &str = "urn:xmpp:delay";

/// `item` or `retract`: what a message read from a node says happened.
pub const EVENT_HEADER: &str = "x-xmpp-pubsub-event";

/// The metadata namespace (in the router's store) of what links delivered from PubSub
/// nodes: one key per link and node ([`kept_key`]), a [`Kept`] each.
pub const META_XMPP_PUBSUB: &str = "xmpp_pubsub";

/// What a link delivered from a node, as the store keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    link: String,
    service: String,
    node: String,
    /// (item id, payload digest), oldest first.
    items: Vec<(String, u64)>,
}

fn kept_key(link: &str, node: &PubsubNode) -> String {
    format!("{link}/{}/{}", node.service, node.node)
}

/// Where a link keeps what it delivered from nodes: the router's store when it runs
/// alone; `None` clustered (another router's store would be stale: a router taking
/// the link over starts afresh, as before) or without a store.
pub(super) fn keeper(core: &crate::core::Core) -> Option<Arc<dyn crate::core::shared::SharedMeta>> {
    if core.is_clustered() {
        return None;
    }
    core.kept_metadata(META_XMPP_PUBSUB)
}

/// Puts back what the link delivered from the nodes its routes read (before its first
/// session): their next fetch delivers only what is new. What it kept of nodes no
/// route reads any more is dropped (a route reading one again starts afresh).
pub(super) fn restore(ctx: &LinkCtx) {
    let Some(keeper) = &ctx.kept_pubsub else {
        return;
    };
    let got: Arc<Mutex<Vec<(String, Kept)>>> = Arc::default();
    let sink = Arc::clone(&got);
    // The store's namespace applies its values at once, within `watch`.
    let _ = keeper.watch(Box::new(move |key, value| {
        if let Some(k) = value.and_then(|v| serde_json::from_slice::<Kept>(&v).ok()) {
            lock(&sink).push((key.to_owned(), k));
        }
    }));
    let read = ctx.router.table().pubsub_nodes(&ctx.settings.name);
    let mut seen = lock(&ctx.pubsub.seen);
    for (key, k) in std::mem::take(&mut *lock(&got)) {
        if k.link != ctx.settings.name {
            continue;
        }
        let node = PubsubNode {
            service: k.service,
            node: k.node,
        };
        if read.contains(&node) {
            tracing::info!(service = %node.service, node = %node.node, items = k.items.len(), "restored what this link delivered from the PubSub node");
            seen.restore(node, k.items);
        } else {
            let _ = keeper.delete(&key);
        }
    }
}

/// Writes what the link delivered from `node` to the store (when it keeps it).
fn keep(ctx: &LinkCtx, node: &PubsubNode) {
    let Some(keeper) = &ctx.kept_pubsub else {
        return;
    };
    let key = kept_key(&ctx.settings.name, node);
    let items = lock(&ctx.pubsub.seen).kept(node);
    let wait = match items {
        Some(items) => {
            let k = Kept {
                link: ctx.settings.name.clone(),
                service: node.service.clone(),
                node: node.node.clone(),
                items,
            };
            keeper.put(&key, serde_json::to_vec(&k).unwrap_or_default().into())
        }
        None => keeper.delete(&key),
    };
    if !wait.is_done_ok() {
        let (service, name) = (node.service.clone(), node.node.clone());
        tokio::spawn(async move {
            if let Err(e) = wait.wait().await {
                tracing::warn!(service, node = name, error = %e, "cannot record what was delivered from a PubSub node: after a restart, some items may be delivered again");
            }
        });
    }
}

/// No route reads `node` any more ([`Seen::forget`]): nor is it kept.
pub(super) fn forgotten(ctx: &LinkCtx, node: &PubsubNode) {
    keep(ctx, node);
}

/// How many delivered items the link remembers per node: twice what it fetches, so
/// that every fetched item it delivered is still remembered.
const REMEMBERED: usize = 2 * PUBSUB_MAX_ITEMS as usize;

/// The items a link delivered lately, per node (see the module's documentation).
#[derive(Default)]
pub(super) struct Seen {
    nodes: HashMap<PubsubNode, Node>,
    /// Nodes whose items are being fetched, and the event items waiting for that.
    waiting: HashMap<PubsubNode, Vec<Element>>,
}

#[derive(Default)]
struct Node {
    /// A fetch of the node's items was answered (since the link started, or since a
    /// route last read the node).
    synced: bool,
    /// (item id, payload digest), oldest first.
    items: VecDeque<(String, u64)>,
}

impl Seen {
    /// Whether the link fetched `node`'s items before (since it started, or since a
    /// route last read it): if not, its next fetch is a first subscription.
    pub fn knows(&self, node: &PubsubNode) -> bool {
        self.nodes.get(node).is_some_and(|n| n.synced)
    }

    /// No route reads `node` any more: a route reading it again starts afresh.
    pub fn forget(&mut self, node: &PubsubNode) {
        self.nodes.remove(node);
        self.waiting.remove(node);
    }

    /// What the link delivered from `node` before it restarted: as if fetched.
    fn restore(&mut self, node: PubsubNode, items: Vec<(String, u64)>) {
        let mut items: VecDeque<_> = items.into();
        while items.len() > REMEMBERED {
            items.pop_front();
        }
        self.nodes.insert(
            node,
            Node {
                synced: true,
                items,
            },
        );
    }

    /// What to keep of `node` across a restart: `None` until its first fetch was
    /// answered (until then, a restart starts afresh).
    fn kept(&self, node: &PubsubNode) -> Option<Vec<(String, u64)>> {
        let n = self.nodes.get(node).filter(|n| n.synced)?;
        Some(n.items.iter().cloned().collect())
    }

    /// A new session, which will subscribe to `nodes` and fetch their items: their
    /// events wait until then; the previous session's waiting events are dropped (the
    /// next fetch has them).
    pub fn new_session(&mut self, nodes: &[PubsubNode]) {
        self.waiting.clear();
        for n in nodes {
            self.fetching(n);
        }
    }

    /// `node`'s items are being fetched: its events wait.
    pub fn fetching(&mut self, node: &PubsubNode) {
        self.waiting.entry(node.clone()).or_default();
    }

    /// Keeps an event's item until the node's fetch is answered; gives it back when
    /// the node is not being fetched.
    fn wait(&mut self, node: &PubsubNode, item: &Element) -> bool {
        match self.waiting.get_mut(node) {
            Some(v) => {
                v.push(item.clone());
                true
            }
            None => false,
        }
    }

    /// The fetch of `node` is over: its waiting events not delivered yet.
    fn release(&mut self, node: &PubsubNode) -> Vec<Element> {
        let waited = self.waiting.remove(node).unwrap_or_default();
        waited
            .into_iter()
            .filter(|e| !self.has(node, e.attr("id").unwrap_or_default(), digest(e)))
            .collect()
    }

    fn has(&self, node: &PubsubNode, id: &str, digest: u64) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.items.iter().any(|(i, d)| i == id && *d == digest))
    }

    fn remember(&mut self, node: &PubsubNode, id: &str, digest: u64) {
        let v = &mut self.nodes.entry(node.clone()).or_default().items;
        if v.iter().any(|(i, d)| i == id && *d == digest) {
            return;
        }
        if v.len() >= REMEMBERED {
            v.pop_front();
        }
        v.push_back((id.to_owned(), digest));
    }

    /// Which of a fetched list (oldest first) to deliver: with `first = Some(n)`
    /// (the node's first subscription) the last `n` at most, otherwise every one not
    /// delivered yet. All of them are remembered.
    fn deliverable<'a>(
        &mut self,
        node: &PubsubNode,
        items: &[&'a Element],
        first: Option<u32>,
    ) -> Vec<&'a Element> {
        let old = match first {
            Some(n) => items.len().saturating_sub(n as usize),
            None => 0,
        };
        let mut out = Vec::new();
        self.nodes.entry(node.clone()).or_default().synced = true;
        for (k, item) in items.iter().enumerate() {
            let id = item.attr("id").unwrap_or_default();
            let digest = digest(item);
            if k >= old && !self.has(node, id, digest) {
                out.push(*item);
            }
            self.remember(node, id, digest);
        }
        out
    }
}

/// A digest of an item's payload (its serialized children): FNV-1a, which, unlike the
/// standard library's hasher, is the same in every build (digests are kept across
/// restarts).
fn digest(item: &Element) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in item.children() {
        for b in String::from(c).bytes().chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Whether a message is a PubSub event notification.
pub(super) fn is_event(s: &XMessage) -> bool {
    s.payloads.iter().any(|p| p.is("event", NS_PUBSUB_EVENT))
}

/// Routes the items (and, to the routes asking, the retractions) of an event
/// notification; purges and deletions are not routed.
pub(super) async fn received(ctx: &LinkCtx, s: &XMessage) {
    let Some(from) = &s.from else { return };
    let service = from.to_bare().to_string();
    let replayed = s.payloads.iter().any(|p| p.is("delay", NS_DELAY));
    for event in s.payloads.iter().filter(|p| p.is("event", NS_PUBSUB_EVENT)) {
        for items in event.children().filter(|c| c.is("items", NS_PUBSUB_EVENT)) {
            let key = PubsubNode {
                service: service.clone(),
                node: items.attr("node").unwrap_or_default().to_owned(),
            };
            for c in items.children() {
                if c.is("item", NS_PUBSUB_EVENT) {
                    let id = c.attr("id").unwrap_or_default();
                    let (waits, again) = {
                        let mut seen = lock(&ctx.pubsub.seen);
                        let waits = seen.wait(&key, c);
                        (waits, !waits && replayed && seen.has(&key, id, digest(c)))
                    };
                    if waits {
                        tracing::debug!(service = %service, node = %key.node, item = id, "PubSub event waits for the node's items being fetched");
                    } else if again {
                        tracing::debug!(service = %service, node = %key.node, item = id, "PubSub item sent again by the service (delayed), already delivered");
                    } else {
                        deliver(ctx, &key, c, true).await;
                    }
                } else if c.is("retract", NS_PUBSUB_EVENT) {
                    retracted(ctx, &key, c.attr("id").unwrap_or_default()).await;
                }
            }
        }
    }
}

/// The answer to the items request sent with a subscription: delivers those the link
/// has not delivered yet (`first`: the node's first subscription, and how many of its
/// last items the routes ask for).
pub(super) async fn fetched(
    ctx: &LinkCtx,
    node: &PubsubNode,
    first: Option<u32>,
    answer: &Element,
) {
    let items: Vec<&Element> = answer
        .get_child("items", NS_PUBSUB)
        .map(|i| i.children().filter(|c| c.is("item", NS_PUBSUB)).collect())
        .unwrap_or_default();
    let fresh = lock(&ctx.pubsub.seen).deliverable(node, &items, first);
    match first {
        Some(asked) => {
            tracing::info!(service = %node.service, node = %node.node, fetched = items.len(), asked, delivering = fresh.len(), "first subscription to PubSub node: its last items delivered as `catch_up` asks, the others only remembered");
        }
        None if !fresh.is_empty() => {
            tracing::info!(service = %node.service, node = %node.node, items = fresh.len(), "delivering items of a PubSub node published while the link was not subscribed");
        }
        None => {
            tracing::debug!(service = %node.service, node = %node.node, fetched = items.len(), "no PubSub item to catch up on");
        }
    }
    if first.is_none() && items.len() >= PUBSUB_MAX_ITEMS as usize && fresh.len() == items.len() {
        tracing::warn!(service = %node.service, node = %node.node, "every fetched PubSub item was new: more may have been published while the link was away than it fetches (100)");
    }
    // Kept once they are all delivered: `deliverable` remembered the fetched items,
    // delivered or not, and a restart meanwhile must deliver them.
    for item in fresh {
        deliver(ctx, node, item, false).await;
    }
    keep(ctx, node);
    not_fetched(ctx, node).await;
}

/// The fetch of `node` is over (answered, or refused): the events that waited for it
/// and are not delivered yet are, in order.
pub(super) async fn not_fetched(ctx: &LinkCtx, node: &PubsubNode) {
    let waited = lock(&ctx.pubsub.seen).release(node);
    for item in &waited {
        deliver(ctx, node, item, true).await;
    }
}

/// Routes one item of `node` (remembered once a route took it, and kept when `kept`).
async fn deliver(ctx: &LinkCtx, node: &PubsubNode, item: &Element, kept: bool) {
    let mut m = super::pubsub::item_message(&node.service, &node.node, item);
    m.headers.set(EVENT_HEADER, "item");
    let size = m.body.len();
    let link = ctx.settings.name.as_str();
    match ctx.router.publish_from_pubsub(link, node, false, m).await {
        Ok(Some(n)) => {
            let id = item.attr("id").unwrap_or_default();
            lock(&ctx.pubsub.seen).remember(node, id, digest(item));
            if kept {
                keep(ctx, node);
            }
            if n > 0 {
                ctx.status.received(size);
            } else {
                LinkStatus::bump(&ctx.status.counters.rejected);
                tracing::info!(service = %node.service, node = %node.node, "no route of this PubSub node accepted the item");
            }
        }
        Ok(None) => {
            tracing::debug!(service = %node.service, node = %node.node, "item from a PubSub node no route reads: not routed");
        }
        Err(e) => {
            LinkStatus::bump(&ctx.status.counters.rejected);
            tracing::warn!(service = %node.service, node = %node.node, error = %e, "PubSub item could not be routed");
        }
    }
}

/// The message a retraction becomes: no body, the item's id.
pub fn retraction_message(service: &str, node: &str, id: &str) -> Message {
    let mut m = Message::new(bytes::Bytes::new());
    m.origin = Origin::new("xmpp", service);
    m.headers.set(SERVICE_HEADER, service);
    m.headers.set(NODE_HEADER, node);
    m.headers.set(ITEM_HEADER, id);
    m.headers.set(EVENT_HEADER, "retract");
    m.persistent = true;
    m
}

/// Routes the retraction of item `id` to the routes of `node` that ask for them.
async fn retracted(ctx: &LinkCtx, node: &PubsubNode, id: &str) {
    let m = retraction_message(&node.service, &node.node, id);
    let link = ctx.settings.name.as_str();
    match ctx.router.publish_from_pubsub(link, node, true, m).await {
        Ok(Some(n)) if n > 0 => ctx.status.received(0),
        Ok(Some(_)) => {
            LinkStatus::bump(&ctx.status.counters.rejected);
            tracing::info!(service = %node.service, node = %node.node, item = id, "no route of this PubSub node accepted the retraction");
        }
        Ok(None) => {
            tracing::debug!(service = %node.service, node = %node.node, item = id, "PubSub item retracted: no route asks for retractions (`retractions: true`), not routed");
        }
        Err(e) => {
            LinkStatus::bump(&ctx.status.counters.rejected);
            tracing::warn!(service = %node.service, node = %node.node, error = %e, "PubSub retraction could not be routed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::minidom::rxml::xml_ncname;

    fn item(id: &str, text: &str) -> Element {
        Element::builder("item", NS_PUBSUB)
            .attr(xml_ncname!("id").into(), id)
            .append(
                Element::builder("t", "urn:x")
                    .append(text.to_owned())
                    .build(),
            )
            .build()
    }

    fn ids(v: &[&Element]) -> Vec<String> {
        v.iter().map(|e| e.attr("id").unwrap().to_owned()).collect()
    }

    fn node() -> PubsubNode {
        PubsubNode {
            service: "pubsub.example.org".into(),
            node: "n".into(),
        }
    }

    #[test]
    fn a_first_subscription_delivers_only_what_the_routes_ask_for() {
        let (a, b, c) = (item("a", "1"), item("b", "2"), item("c", "3"));
        let list = [&a, &b, &c];
        let mut s = Seen::default();
        assert!(!s.knows(&node()));
        assert!(s.deliverable(&node(), &list, Some(0)).is_empty());
        assert!(s.knows(&node()));
        let mut s = Seen::default();
        assert_eq!(ids(&s.deliverable(&node(), &list, Some(2))), ["b", "c"]);
        assert_eq!(
            ids(&s.deliverable(&node(), &list, Some(9))),
            Vec::<String>::new()
        );
        // An empty node is known too: what comes later is all new.
        let mut s = Seen::default();
        assert!(s.deliverable(&node(), &[], Some(0)).is_empty());
        assert!(s.knows(&node()));
        assert_eq!(ids(&s.deliverable(&node(), &list, None)), ["a", "b", "c"]);
    }

    #[test]
    fn later_subscriptions_deliver_what_was_missed_in_order_once() {
        let (a, b, c, d) = (
            item("a", "1"),
            item("b", "2"),
            item("c", "3"),
            item("d", "4"),
        );
        let mut s = Seen::default();
        s.deliverable(&node(), &[&a, &b], Some(0));
        // `b` retracted while away, `c` and `d` published.
        assert_eq!(
            ids(&s.deliverable(&node(), &[&a, &c, &d], None)),
            ["c", "d"]
        );
        assert!(s.deliverable(&node(), &[&a, &c, &d], None).is_empty());
        // `a` published again with another payload: the service lists it last.
        let a2 = item("a", "changed");
        assert_eq!(ids(&s.deliverable(&node(), &[&c, &d, &a2], None)), ["a"]);
        // Delivered from an event meanwhile: not again.
        let e = item("e", "5");
        s.remember(&node(), "e", digest(&e));
        assert!(s.deliverable(&node(), &[&d, &a2, &e], None).is_empty());
        s.forget(&node());
        assert!(!s.knows(&node()));
    }

    #[test]
    fn events_wait_for_the_fetch_and_only_new_ones_follow_it() {
        let (a, b, c) = (item("a", "1"), item("b", "2"), item("c", "3"));
        let mut s = Seen::default();
        assert!(!s.wait(&node(), &a));
        s.new_session(&[node()]);
        // The service sends its last item `b` again, then `c` is published live.
        assert!(s.wait(&node(), &b));
        assert!(s.wait(&node(), &c));
        assert_eq!(
            ids(&s.deliverable(&node(), &[&a, &b], Some(0))),
            Vec::<String>::new()
        );
        let released = s.release(&node());
        assert_eq!(
            released
                .iter()
                .map(|e| e.attr("id").unwrap())
                .collect::<Vec<_>>(),
            ["c"]
        );
        assert!(!s.wait(&node(), &c));
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = Seen::default();
        for k in 0..3 * REMEMBERED {
            s.remember(&node(), &k.to_string(), 0);
        }
        assert_eq!(s.nodes[&node()].items.len(), REMEMBERED);
        // Delivered from events only: the node's first fetch is still to come.
        assert!(!s.knows(&node()));
        assert!(s.has(&node(), &(3 * REMEMBERED - 1).to_string(), 0));
        assert!(!s.has(&node(), "0", 0));
    }

    #[test]
    fn a_kept_node_is_a_reconnection_after_a_restart() {
        let (a, b, c) = (item("a", "1"), item("b", "2"), item("c", "3"));
        let mut s = Seen::default();
        // Nothing to keep before the node's first fetch.
        s.remember(&node(), "a", digest(&a));
        assert!(s.kept(&node()).is_none());
        s.deliverable(&node(), &[&a, &b], Some(1));
        let kept = s.kept(&node()).unwrap();
        let mut restarted = Seen::default();
        restarted.restore(node(), kept);
        assert!(restarted.knows(&node()));
        assert_eq!(
            ids(&restarted.deliverable(&node(), &[&a, &b, &c], None)),
            ["c"]
        );
    }

    #[test]
    fn retractions_say_so() {
        let m = retraction_message("pubsub.example.org", "n", "i7");
        assert!(m.body.is_empty());
        assert_eq!(m.headers.get(EVENT_HEADER), Some("retract"));
        assert_eq!(m.headers.get(ITEM_HEADER), Some("i7"));
        assert_eq!(m.headers.get(NODE_HEADER), Some("n"));
    }
}
