//! The router: the route table in front of the core. Edges publish through it; it
//! resolves routes on one snapshot of the table and hands each leg to the core.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::Instrument;

use crate::core::{Confirmation, Core, Destination, Message, PublishError};
use crate::routes::{AmqpSourceKey, Leg, Rendered, RouteTable, RoutingError};
use crate::translate::trace::{self, Traced};

/// Prefix of the internal queues that hold messages for an external link; the link
/// consumes its queue, so messages wait in the core (bounded) while the link is down.
pub const LINK_QUEUE_PREFIX: &str = "$sb.link.";

/// The internal queue a link consumes its outbound messages from.
pub fn link_queue(link: &str) -> String {
    format!("{LINK_QUEUE_PREFIX}{link}")
}

/// Messages a link queue may hold not yet taken by its publisher before a message from
/// a RabbitMQ source waits to join it ([`Router::paced`]): about one publish window, so
/// the publisher never runs dry.
const BRIDGE_PACE: usize = 1_000;

/// Header carrying a link leg's rendered address (JSON) on a link queue. The link strips
/// it before sending.
pub const LINK_TARGET_HEADER: &str = "x-switchboard-link-target";

/// Why a routed publish failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Core + live route table; cheap to clone.
#[derive(Debug, Clone)]
pub struct Router {
    core: Core,
    table: Arc<ArcSwap<RouteTable>>,
    /// Start a W3C trace for a message that arrives without one (`log.start_traces`).
    start_traces: bool,
}

impl Router {
    pub fn new(core: Core, table: Arc<ArcSwap<RouteTable>>) -> Self {
        Self {
            core,
            table,
            start_traces: false,
        }
    }

    /// Starts a trace for every message published without a valid `traceparent`.
    pub fn with_start_traces(mut self, start: bool) -> Self {
        self.start_traces = start;
        self
    }

    /// A router with an empty table (tests, embedding).
    pub fn without_routes(core: Core) -> Self {
        Self::new(core, Arc::new(ArcSwap::from_pointee(RouteTable::empty())))
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The table in force now.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Routes and publishes a message addressed to `dest`. Waits while a destination
    /// applies backpressure. Returns the number of queues (and link queues) it reached.
    pub async fn publish(&self, dest: Destination, message: Message) -> Result<usize, RouterError> {
        let (n, confirmation) = self.publish_unconfirmed(dest, message).await?;
        confirmation.wait().await?;
        Ok(n)
    }

    /// [`Router::publish`] that returns before the message is durable, with the
    /// [`Confirmation`] its publisher's acknowledgement must wait for.
    pub async fn publish_unconfirmed(
        &self,
        dest: Destination,
        mut message: Message,
    ) -> Result<(usize, Confirmation), RouterError> {
        match trace::reparent(&mut message.headers, self.start_traces) {
            // Boxed, and one `route` await for the rest: each await of a future is a
            // state of its own in this one, and edges box this future per publish (three
            // inline `route` futures made it 6.6 KiB).
            Some(t) if trace_logged() => {
                let what = dest.clone();
                Box::pin(traced(&t, &what, self.route(dest, message))).await
            }
            _ => self.route(dest, message).await,
        }
    }

    async fn route(
        &self,
        dest: Destination,
        message: Message,
    ) -> Result<(usize, Confirmation), RouterError> {
        // A reply address of a link goes straight back out through that link.
        if let Some(target) = reply_target(&dest) {
            return self
                .publish_legs_unconfirmed(vec![Leg { target, message }])
                .await;
        }
        // One snapshot for the whole publish: a concurrent reload never splits a message
        // between two tables.
        let routed = {
            let table = self.table.load();
            table.resolve(dest, message)?
        };
        held(routed.hold).await;
        self.publish_legs_unconfirmed(routed.legs).await
    }

    /// Routes and publishes messages that arrived together for one destination (the
    /// frames one read of a connection yielded), as [`Router::publish_unconfirmed`]
    /// would each in turn, except that each destination they resolve to gets its share
    /// in one batch: one lock per queue per batch instead of per message, one wake-up
    /// per subscriber. Every destination gets the messages in the order given; the
    /// copies of one message routed to several destinations go destination by
    /// destination. A message with a trace (or any, with `log.start_traces`) is routed
    /// on its own, in its place, within its span. Named queues take their share one
    /// message at a time, so that one refusing a message (full, too large) refuses
    /// that message only.
    pub async fn publish_batch_unconfirmed(
        &self,
        dest: Destination,
        messages: Vec<Message>,
    ) -> Batch {
        let mut out = Batch::default();
        let mut legs: Vec<(Destination, Vec<Arc<Message>>)> = Vec::new();
        for mut m in messages {
            if let Some(t) = trace::reparent(&mut m.headers, self.start_traces) {
                self.publish_grouped(std::mem::take(&mut legs), &mut out)
                    .await;
                let r = if trace_logged() {
                    traced(&t, &dest, self.route(dest.clone(), m)).await
                } else {
                    self.route(dest.clone(), m).await
                };
                out.add(r);
                continue;
            }
            if let Some(target) = reply_target(&dest) {
                self.publish_grouped(std::mem::take(&mut legs), &mut out)
                    .await;
                let r = self
                    .publish_legs_unconfirmed(vec![Leg { target, message: m }])
                    .await;
                out.add(r);
                continue;
            }
            let resolved = self.table.load().resolve(dest.clone(), m);
            match resolved {
                Ok(resolved) => {
                    if !resolved.hold.is_zero() {
                        // A rate limit holds this message: what came before it goes
                        // first, then the wait, as one by one.
                        self.publish_grouped(std::mem::take(&mut legs), &mut out)
                            .await;
                        held(resolved.hold).await;
                    }
                    out.published += 1;
                    for leg in resolved.legs {
                        let (d, m) = leg_destination(leg);
                        match legs.iter_mut().find(|(to, _)| *to == d) {
                            Some((_, ms)) => ms.push(Arc::new(m)),
                            None => legs.push((d, vec![Arc::new(m)])),
                        }
                    }
                }
                Err(e) => out.errors.push(e.into()),
            }
        }
        self.publish_grouped(legs, &mut out).await;
        out
    }

    /// Hands grouped legs to the core: a topic's share in one batch, a named queue's one
    /// message at a time (see [`Router::publish_batch_unconfirmed`]).
    async fn publish_grouped(&self, legs: Vec<(Destination, Vec<Arc<Message>>)>, out: &mut Batch) {
        if legs.is_empty() {
            return;
        }
        self.core.flow().wait_open().await;
        for (dest, messages) in legs {
            if matches!(dest, Destination::Topic(_)) {
                match self.core.publish_batch_unconfirmed(&dest, &messages).await {
                    Ok((n, c)) => {
                        out.deliveries += n;
                        out.confirmation.extend(c);
                    }
                    Err(e) => {
                        out.failed += messages.len();
                        out.errors.push(e.into());
                    }
                }
                continue;
            }
            for m in messages {
                match self.core.publish_unconfirmed(&dest, m).await {
                    Ok((n, c)) => {
                        out.deliveries += n;
                        out.confirmation.extend(c);
                    }
                    Err(e) => {
                        out.failed += 1;
                        out.errors.push(e.into());
                    }
                }
            }
        }
    }

    /// Routes a message an AMQP link consumed from `key`; returns how many legs it
    /// took. `Ok(None)` when no route consumes `key` any more; `Ok(Some(0))` when the
    /// routes' filters refused it.
    pub async fn publish_from_amqp(
        &self,
        link: &str,
        key: &AmqpSourceKey,
        routing_key: &str,
        message: Message,
    ) -> Result<Option<usize>, RouterError> {
        let unconfirmed = self
            .publish_from_amqp_unconfirmed(link, key, routing_key, message)
            .await?;
        confirmed(unconfirmed).await
    }

    /// [`Router::publish_from_amqp`] that returns before the message is durable, with
    /// the [`Confirmation`] the link's ack to RabbitMQ must wait for.
    pub async fn publish_from_amqp_unconfirmed(
        &self,
        link: &str,
        key: &AmqpSourceKey,
        routing_key: &str,
        mut message: Message,
    ) -> Result<Option<(usize, Confirmation)>, RouterError> {
        let Some(t) = trace::reparent(&mut message.headers, self.start_traces) else {
            return self.route_from_amqp(link, key, routing_key, message).await;
        };
        if !trace_logged() {
            return self.route_from_amqp(link, key, routing_key, message).await;
        }
        let from = LinkSource("amqp", link, routing_key);
        traced(
            &t,
            &from,
            self.route_from_amqp(link, key, routing_key, message),
        )
        .await
    }

    async fn route_from_amqp(
        &self,
        link: &str,
        key: &AmqpSourceKey,
        routing_key: &str,
        message: Message,
    ) -> Result<Option<(usize, Confirmation)>, RouterError> {
        let routed = {
            let table = self.table.load();
            match table.resolve_amqp(link, key, routing_key, message) {
                None => return Ok(None),
                Some(routed) => routed?,
            }
        };
        held(routed.hold).await;
        let n = routed.legs.len();
        for leg in &routed.legs {
            if let Some(link) = leg.target.link() {
                self.paced(link).await;
            }
        }
        let (_, confirmation) = self.publish_legs_unconfirmed(routed.legs).await?;
        Ok(Some((n, confirmation)))
    }

    /// Routes a message an XMPP link received for the JID `to`; returns how many legs
    /// it took. `Ok(None)` when no route's JID pattern matches `to`; `Ok(Some(0))` when
    /// the routes' filters refused it.
    pub async fn publish_from_xmpp(
        &self,
        link: &str,
        to: &str,
        presence: bool,
        message: Message,
    ) -> Result<Option<usize>, RouterError> {
        let unconfirmed = self
            .publish_from_xmpp_unconfirmed(link, to, presence, message)
            .await?;
        confirmed(unconfirmed).await
    }

    /// [`Router::publish_from_xmpp`] that returns before the message is durable, with
    /// the [`Confirmation`] the link's receipt must wait for.
    pub async fn publish_from_xmpp_unconfirmed(
        &self,
        link: &str,
        to: &str,
        presence: bool,
        mut message: Message,
    ) -> Result<Option<(usize, Confirmation)>, RouterError> {
        let Some(t) = trace::reparent(&mut message.headers, self.start_traces) else {
            return self.route_from_xmpp(link, to, presence, message).await;
        };
        if !trace_logged() {
            return self.route_from_xmpp(link, to, presence, message).await;
        }
        let from = LinkSource("xmpp", link, to);
        traced(&t, &from, self.route_from_xmpp(link, to, presence, message)).await
    }

    async fn route_from_xmpp(
        &self,
        link: &str,
        to: &str,
        presence: bool,
        message: Message,
    ) -> Result<Option<(usize, Confirmation)>, RouterError> {
        let routed = {
            let table = self.table.load();
            match table.resolve_xmpp(link, to, presence, message) {
                None => return Ok(None),
                Some(routed) => routed?,
            }
        };
        held(routed.hold).await;
        let n = routed.legs.len();
        let (_, confirmation) = self.publish_legs_unconfirmed(routed.legs).await?;
        Ok(Some((n, confirmation)))
    }

    /// Routes an item an XMPP link received from a PubSub node it is subscribed to (or,
    /// `retraction`, the news of one retracted: only routes asking for those take it);
    /// returns how many legs it took, `Ok(None)` when no route reads the node (any
    /// more). Returns once the legs are durable.
    pub async fn publish_from_pubsub(
        &self,
        link: &str,
        node: &crate::routes::PubsubNode,
        retraction: bool,
        mut message: Message,
    ) -> Result<Option<usize>, RouterError> {
        let _ = trace::reparent(&mut message.headers, self.start_traces);
        let routed = {
            let table = self.table.load();
            match table.resolve_pubsub(link, node, retraction, message) {
                None => return Ok(None),
                Some(routed) => routed?,
            }
        };
        held(routed.hold).await;
        let n = routed.legs.len();
        let (_, confirmation) = self.publish_legs_unconfirmed(routed.legs).await?;
        confirmation.wait().await?;
        Ok(Some(n))
    }

    /// Waits while link `link`'s queue holds more than [`BRIDGE_PACE`] messages not yet
    /// taken by its publisher. A message from a RabbitMQ source waits here before it
    /// joins a link queue, as RabbitMQ's shovel waits for its confirms: the link does not
    /// pull faster than it publishes, and the backlog stays in RabbitMQ (durable, visible
    /// there) rather than in the router. Only RabbitMQ sources: an XMPP link reads one
    /// stream for all its addresses, which one slow link must not hold up.
    async fn paced(&self, link: &str) {
        if let Some(q) = self.core.queue(&link_queue(link)) {
            q.ready_at_most(BRIDGE_PACE).await;
        }
    }

    /// Hands resolved legs to the core (link legs go to their link's queue); returns
    /// how many queues they reached and what must become durable before the publisher
    /// is confirmed.
    async fn publish_legs_unconfirmed(
        &self,
        legs: Vec<Leg>,
    ) -> Result<(usize, Confirmation), RouterError> {
        // Above a watermark every edge's publish waits here (its flow control).
        self.core.flow().wait_open().await;
        let mut confirmation = Confirmation::default();
        let mut reached = 0;
        for leg in legs {
            let (dest, message) = leg_destination(leg);
            let (n, c) = self
                .core
                .publish_unconfirmed(&dest, std::sync::Arc::new(message))
                .await?;
            reached += n;
            confirmation.extend(c);
        }
        Ok((reached, confirmation))
    }
}

/// Whether the router's traced lines are logged now (debug level for this module): when
/// not, a traced message is routed exactly as an untraced one, without the span, the
/// wrapper future and the copy of its destination that [`traced`] needs for its line.
/// One relaxed load of the subscriber's level hint (and, when that lets debug through, the
/// callsite's cached interest), so a `traceparent` costs its parse and nothing more at
/// `info` (docs/benchmarks.md, "Cost of trace context").
fn trace_logged() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// Waits out a route's rate limit (`over: hold`) before the legs are delivered. The
/// edge awaits its publish, so its publisher waits too: an MQTT PUBACK or a STOMP
/// RECEIPT comes later, and the connection is not read meanwhile.
async fn held(hold: std::time::Duration) {
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
}

/// Where a resolved leg goes in the core: its destination, or its link's queue (with
/// the address the link is to send it to in a header).
fn leg_destination(leg: Leg) -> (Destination, Message) {
    match &leg.target {
        Rendered::Internal(d) => (d.clone(), leg.message),
        Rendered::Amqp { link, .. }
        | Rendered::Xmpp { link, .. }
        | Rendered::XmppPubsub { link, .. } => {
            let mut m = leg.message;
            m.headers
                .set(LINK_TARGET_HEADER, link_address_json(&leg.target));
            (Destination::queue(&link_queue(link)), m)
        }
    }
}

/// What [`Router::publish_batch_unconfirmed`] did.
#[derive(Debug, Default)]
pub struct Batch {
    /// Messages routed (resolved and handed to the core), those that failed there
    /// included.
    pub published: usize,
    /// Of those, messages a destination refused (counted once per refusal).
    pub failed: usize,
    /// Queues reached, summed over the messages.
    pub deliveries: usize,
    /// What must become durable before the publisher is confirmed.
    pub confirmation: Confirmation,
    /// Why messages were not routed or not published, in order (empty mostly).
    pub errors: Vec<RouterError>,
}

impl Batch {
    /// Messages published without a refusal.
    pub fn ok(&self) -> usize {
        self.published.saturating_sub(self.failed)
    }

    fn add(&mut self, r: Result<(usize, Confirmation), RouterError>) {
        match r {
            Ok((n, c)) => {
                self.published += 1;
                self.deliveries += n;
                self.confirmation.extend(c);
            }
            Err(e) => self.errors.push(e),
        }
    }
}

/// Runs one traced message's routing inside the router's span for it (`message`, with
/// the fields `trace_id` and `span_id`, at debug level so that it costs nothing while
/// debug is off), and logs one debug line: where the message came from or went, the
/// parent span, and how many queues or legs it reached. A message whose `traceparent`
/// was invalid gets the line, without a span.
async fn traced<T: Reached>(
    t: &Traced,
    dest: &(dyn std::fmt::Display + Sync),
    route: impl Future<Output = Result<T, RouterError>>,
) -> Result<T, RouterError> {
    let span = match (t.trace_id(), t.span_id()) {
        (Some(trace_id), Some(span_id)) => {
            tracing::debug_span!("message", %trace_id, %span_id)
        }
        _ => tracing::Span::none(),
    };
    async move {
        let r = route.await;
        let reached = r.as_ref().map(Reached::reached);
        match (t, reached) {
            (Traced::Continued { parent, .. }, Ok(n)) => {
                tracing::debug!(%dest, parent_id = %parent, reached = n, "routed, trace continued")
            }
            (Traced::Started { .. }, Ok(n)) => {
                tracing::debug!(%dest, reached = n, "routed, trace started")
            }
            (Traced::Dropped, Ok(n)) => tracing::debug!(
                %dest,
                reached = n,
                "routed; an invalid traceparent was removed (and its tracestate)"
            ),
            (_, Err(e)) => tracing::debug!(%dest, error = %e, "not routed"),
        }
        r
    }
    .instrument(span)
    .await
}

/// Where a link's message came from, rendered only when the traced line is logged:
/// protocol, link name, and the routing key or JID it arrived with.
struct LinkSource<'a>(&'static str, &'a str, &'a str);

impl std::fmt::Display for LinkSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} link {} from {}", self.0, self.1, self.2)
    }
}

/// How many queues (or legs) a routing result reached, for the traced log line.
trait Reached {
    fn reached(&self) -> usize;
}

impl Reached for (usize, Confirmation) {
    fn reached(&self) -> usize {
        self.0
    }
}

impl Reached for Option<(usize, Confirmation)> {
    fn reached(&self) -> usize {
        self.as_ref().map_or(0, |(n, _)| *n)
    }
}

/// Prefix of internal reply addresses that stand for an AMQP link's reply queue:
/// `$sb.reply.amqp.LINK.ESCAPED_QUEUE`. An AMQP message's `reply_to` becomes such an
/// address, so a responder on any protocol replies into it and the link publishes the
/// reply to the default exchange with the original `reply_to` as routing key.
pub const AMQP_REPLY_PREFIX: &str = "$sb.reply.amqp.";

/// The internal reply address for an AMQP `reply_to` received on `link`.
pub fn amqp_reply_address(link: &str, reply_to: &str) -> Destination {
    Destination::queue(&format!(
        "{AMQP_REPLY_PREFIX}{link}.{}",
        encode_part(reply_to)
    ))
}

/// Encodes a foreign address (an AMQP queue name, a JID) as one level of a reply
/// address: every byte outside a small safe set becomes `%XX`, so whitespace, `.` and
/// wildcard characters can never break the internal name. Only [`decode_part`] reads it.
fn encode_part(s: &str) -> String {
    crate::translate::escape::percent_encode(s, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@' | b'~' | b'=' | b':')
    })
}

fn decode_part(s: &str) -> Option<String> {
    crate::translate::escape::percent_decode(s)
}

/// Prefix of internal reply addresses for XMPP users:
/// `$sb.reply.xmpp.LINK.ESCAPED_USER_JID.ESCAPED_OUR_JID`. A message from an XMPP user
/// carries one as its reply address; a reply sent to it goes back through the link to
/// the user's full JID, from the JID the user wrote to.
pub const XMPP_REPLY_PREFIX: &str = "$sb.reply.xmpp.";

/// The internal reply address for an XMPP message from `user` to `ours` on `link`.
pub fn xmpp_reply_address(link: &str, user: &str, ours: &str) -> Destination {
    Destination::queue(&format!(
        "{XMPP_REPLY_PREFIX}{link}.{}.{}",
        encode_part(user),
        encode_part(ours)
    ))
}

/// The link leg a reply address stands for, if `dest` is one.
pub fn reply_target(dest: &Destination) -> Option<Rendered> {
    let Destination::Queue(name) = dest else {
        return None;
    };
    if let Some(rest) = name.strip_prefix(XMPP_REPLY_PREFIX) {
        let mut parts = rest.splitn(3, '.');
        let (link, user, ours) = (parts.next()?, parts.next()?, parts.next()?);
        return Some(Rendered::Xmpp {
            link: link.to_owned(),
            to: decode_part(user)?,
            from: Some(decode_part(ours)?),
            kind: "chat".into(),
        });
    }
    let rest = name.strip_prefix(AMQP_REPLY_PREFIX)?;
    let (link, queue) = rest.split_once('.')?;
    Some(Rendered::Amqp {
        link: link.to_owned(),
        exchange: String::new(),
        routing_key: decode_part(queue)?,
    })
}

/// The address a link leg is for, as the link reads it from `LINK_TARGET_HEADER`.
fn link_address_json(r: &Rendered) -> String {
    match r {
        Rendered::Amqp {
            exchange,
            routing_key,
            ..
        } => serde_json::json!({"exchange": exchange, "routing_key": routing_key}).to_string(),
        Rendered::Xmpp { to, from, kind, .. } => {
            serde_json::json!({"to": to, "from": from, "type": kind}).to_string()
        }
        Rendered::XmppPubsub {
            service,
            node,
            item_id,
            create,
            ..
        } => serde_json::json!({"pubsub": {
            "service": service, "node": node, "item_id": item_id, "create": create
        }})
        .to_string(),
        Rendered::Internal(d) => serde_json::json!({"destination": d.to_string()}).to_string(),
    }
}

/// What a link's publish took, once the message is durable.
async fn confirmed(
    unconfirmed: Option<(usize, Confirmation)>,
) -> Result<Option<usize>, RouterError> {
    match unconfirmed {
        None => Ok(None),
        Some((n, confirmation)) => {
            confirmation.wait().await?;
            Ok(Some(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_addresses_round_trip_any_address() {
        let jid = "alice@example.org/My Phone.2 *#+%/ü";
        let d = xmpp_reply_address("im", jid, "orders@bridge.example.org");
        crate::core::validate_name(d.name()).unwrap();
        assert_eq!(
            reply_target(&d),
            Some(Rendered::Xmpp {
                link: "im".into(),
                to: jid.into(),
                from: Some("orders@bridge.example.org".into()),
                kind: "chat".into(),
            })
        );
        let q = "amq.rabbitmq.reply-to.g1h2AA==/x+y z";
        let d = amqp_reply_address("rabbit", q);
        crate::core::validate_name(d.name()).unwrap();
        assert_eq!(
            reply_target(&d),
            Some(Rendered::Amqp {
                link: "rabbit".into(),
                exchange: String::new(),
                routing_key: q.into(),
            })
        );
        assert_eq!(
            reply_target(&Destination::queue("$sb.reply.amqp.x.%zz")),
            None
        );
    }
}
