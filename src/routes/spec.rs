//! The serde model of a route file (`routes/*.yaml`). No logic: [`super::compile`] turns
//! it into a validated [`super::RouteTable`]. Every struct denies unknown keys, and the
//! positions recorded by [`Spanned`] let errors name file, line and column.
//!
//! The reference for users is `docs/routes.md`; keep both in step.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub use crate::translate::body::BodyFormat;

/// One route file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSpec>>,
}

/// One route: where messages come from, which of them, where they go, what changes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique across all route files.
    pub name: Spanned<String>,
    /// Free text for operators.
    #[serde(default)]
    pub description: Option<String>,
    pub from: Spanned<SourceSpec>,
    /// Optional filter: all conditions must hold.
    #[serde(default)]
    pub when: Option<WhenSpec>,
    /// One or more targets (a destination list).
    pub to: Spanned<Vec<Spanned<TargetSpec>>>,
    #[serde(default)]
    pub transform: Option<Spanned<TransformSpec>>,
    /// Also deliver the (untransformed) message to the source's own destination.
    #[serde(default)]
    pub passthrough: bool,
    /// What edges do with fields their protocol cannot carry (`drop`, `encode`,
    /// `reject`); unset: whatever the message already carries (`drop` by default).
    #[serde(default)]
    pub loss: Option<LossSpec>,
    /// AMQP topology this route needs, declared on its link on connect and on every
    /// reload.
    #[serde(default)]
    pub declare: Option<Spanned<DeclareSpec>>,
    /// What becomes of messages `when.schema` finds invalid (unset: the route does not
    /// take them).
    #[serde(default)]
    pub invalid: Option<Spanned<InvalidSpec>>,
    /// A token bucket in front of the route, per publisher or for the whole route.
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimitSpec>>,
}

/// `invalid:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidSpec {
    /// Where invalid messages go instead, with the validation error as a header.
    pub dead_letter: Spanned<TargetSpec>,
}

/// `rate_limit:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Messages per second, sustained.
    pub rate: Spanned<f64>,
    /// Messages that may pass at once after a quiet spell (default: the rate, at least 1).
    #[serde(default)]
    pub burst: Option<Spanned<f64>>,
    /// Whose messages share a bucket.
    #[serde(default)]
    pub per: crate::routes::rate::Per,
    /// What a message over the limit does.
    #[serde(default)]
    pub over: crate::routes::rate::Over,
}

/// `loss:` as written.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossSpec {
    Drop,
    Encode,
    Reject,
}

impl From<LossSpec> for crate::core::Loss {
    fn from(l: LossSpec) -> Self {
        match l {
            LossSpec::Drop => crate::core::Loss::Drop,
            LossSpec::Encode => crate::core::Loss::Encode,
            LossSpec::Reject => crate::core::Loss::Reject,
        }
    }
}

/// Exchanges, queues and bindings a route declares on an AMQP link. Declaring is
/// idempotent: RabbitMQ accepts a declaration equal to what exists and refuses one that
/// differs (PRECONDITION_FAILED), which the link reports with the route's name.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeclareSpec {
    /// The link to declare on; may be left out when the route uses exactly one AMQP link.
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub exchanges: Vec<ExchangeDecl>,
    #[serde(default)]
    pub queues: Vec<QueueDecl>,
    #[serde(default)]
    pub bindings: Vec<BindingDecl>,
}

/// An AMQP exchange kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDecl {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ExchangeType,
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    /// Exchange arguments (`alternate-exchange`, …): strings, numbers, booleans.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDecl {
    pub name: String,
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub auto_delete: bool,
    /// Queue arguments: `x-message-ttl`, `x-dead-letter-exchange`, `x-queue-type`, …
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindingDecl {
    pub exchange: String,
    pub queue: String,
    #[serde(default)]
    pub routing_key: String,
    /// Binding arguments (headers exchanges: `x-match` and the header values).
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

/// Where a route takes messages from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// An internal queue, by exact name.
    Queue(String),
    /// An internal topic pattern (`.` levels, `*`, `#`).
    Topic(String),
    /// A STOMP destination: `/queue/NAME` or `/topic/PATTERN`.
    Stomp(String),
    /// An MQTT topic filter (`/` levels, `+`, `#`).
    Mqtt(String),
    /// Messages consumed by an AMQP link.
    Amqp(AmqpSourceSpec),
    /// Messages or presence received by an XMPP link.
    Xmpp(XmppSourceSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceSpec {
    pub link: String,
    /// Consume this AMQP queue...
    #[serde(default)]
    pub queue: Option<String>,
    /// ...or bind a private queue to this exchange with `binding_key`.
    #[serde(default)]
    pub exchange: Option<String>,
    #[serde(default)]
    pub binding_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppSourceSpec {
    pub link: String,
    /// Messages addressed to JIDs matching this pattern (`*` = any one JID part).
    #[serde(default)]
    pub jid: Option<String>,
    /// Presence of users whose bare JID matches this pattern.
    #[serde(default)]
    pub presence: Option<String>,
    /// Items published to this PubSub node (XEP-0060); the link subscribes to it.
    #[serde(default)]
    pub pubsub: Option<PubsubSourceSpec>,
}

/// A PubSub node a route reads: `{ service, node, catch_up, retractions }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSourceSpec {
    /// The PubSub service's JID (`pubsub.example.org`; a user's bare JID for PEP).
    pub service: String,
    pub node: String,
    /// On the link's first subscription to the node, also deliver its last this many
    /// items (at most 100); after that, items missed while away are always delivered.
    #[serde(default)]
    pub catch_up: u32,
    /// Retractions become messages too (empty body, `x-xmpp-pubsub-event: retract`).
    #[serde(default)]
    pub retractions: bool,
}

/// A PubSub node a route publishes to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubTargetSpec {
    /// The PubSub service's JID (literal).
    pub service: String,
    /// The node (template).
    pub node: String,
    /// Create the node (once per session, before the first publish) if it is missing.
    #[serde(default)]
    pub create: bool,
    /// The item id (template); unset: the service assigns one.
    #[serde(default)]
    pub item_id: Option<String>,
}

/// Where a route sends messages.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// An internal queue; the name may use `{N}` captures and `{header:NAME}`.
    Queue(String),
    /// An internal topic (template as for queues).
    Topic(String),
    /// A STOMP destination `/queue/…` or `/topic/…` (template).
    Stomp(String),
    /// An MQTT topic (template; captures are rendered with `/` between levels).
    Mqtt(String),
    /// Publish through an AMQP link.
    Amqp(AmqpTargetSpec),
    /// Send through an XMPP link.
    Xmpp(XmppTargetSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpTargetSpec {
    pub link: String,
    #[serde(default)]
    pub exchange: String,
    /// Template, e.g. `sensors.{1}.temp`.
    #[serde(default)]
    pub routing_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppTargetSpec {
    pub link: String,
    /// Recipient JID (template); or, instead, `pubsub`.
    #[serde(default)]
    pub to: Option<String>,
    /// Publish an item to a PubSub node instead of sending a message.
    #[serde(default)]
    pub pubsub: Option<PubsubTargetSpec>,
    /// Sender JID in the component's domain (template).
    #[serde(default)]
    pub from: Option<String>,
    /// Stanza type: chat (default), normal, headline, groupchat.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// A filter on the message.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    /// Each header must be present with exactly this value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The MIME type must equal this (parameters such as `charset` are ignored).
    #[serde(default)]
    pub content_type: Option<String>,
    /// The protocol the message entered by (`stomp`, `mqtt`, `amqp`, `xmpp`, `internal`).
    #[serde(default)]
    pub origin: Option<String>,
    /// A jq program over `{body, headers, source}`: its first output must be truthy.
    #[serde(default)]
    pub jq: Option<Spanned<String>>,
    /// A JSON Schema file (relative to the routes directory) the body must satisfy.
    #[serde(default)]
    pub schema: Option<Spanned<String>>,
}

/// Changes made to the message on its way.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    /// Set (replace) headers; values are templates.
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
    /// Rename headers: `old: new`.
    #[serde(default)]
    pub rename_headers: BTreeMap<String, String>,
    /// Remove headers.
    #[serde(default)]
    pub remove_headers: Vec<String>,
    /// Convert the body.
    #[serde(default)]
    pub body: Option<BodyFormat>,
    /// A jq program over `{body, headers, source}`; each output becomes a message.
    #[serde(default)]
    pub jq: Option<Spanned<String>>,
    /// How the outputs are read: `body` (default) or `message` (`{body, headers}`).
    #[serde(default)]
    pub jq_output: Option<crate::routes::jq::Output>,
    /// Most outputs (messages) one message may become; default 16, at most 1000.
    #[serde(default)]
    pub jq_max_outputs: Option<Spanned<usize>>,
}
