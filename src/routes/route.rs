//! A compiled route: where it takes messages from, what it accepts, where it sends them
//! and how it changes them on the way. [`super::compile`] builds it from a route file;
//! [`super::RouteTable`] applies it to each message.

use super::jid_pattern::JidPattern;
use super::jq::{JqError, Output, Program};
use super::rate::RateLimiter;
use super::schema::Schema;
use super::spec::{BodyFormat, DeclareSpec};
use super::template::{Grammar, RenderError, Template};
use crate::core::{Capture, Destination, Message, Pattern, validate_name};
use crate::translate::body::{self, BodyError};
use crate::translate::mqtt_names;

/// Where a compiled route takes messages from.
#[derive(Debug, Clone)]
pub enum Source {
    Queue(String),
    Topic(Pattern),
    Amqp {
        link: String,
        queue: Option<String>,
        exchange: Option<String>,
        binding_key: Option<String>,
        /// The binding key as a pattern, for captures from the routing key.
        binding: Option<Pattern>,
    },
    Xmpp {
        link: String,
        jid: Option<String>,
        presence: Option<String>,
        /// `jid` (or `presence`) compiled.
        jid_pattern: Option<JidPattern>,
        /// A PubSub node whose items the link receives (then no `jid_pattern`).
        pubsub: Option<PubsubRead>,
    },
}

/// A PubSub node: the service's JID and the node's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PubsubNode {
    pub service: String,
    pub node: String,
}

/// A PubSub node a route reads, and what else than new items it asks for.
#[derive(Debug, Clone)]
pub struct PubsubRead {
    pub node: PubsubNode,
    /// On the link's first subscription to the node, its last this many items too.
    pub catch_up: u32,
    /// Retractions become messages too.
    pub retractions: bool,
}

/// The most items a route may ask for on a first subscription (`catch_up`), and the
/// most a link fetches when it subscribes.
pub const PUBSUB_MAX_ITEMS: u32 = 100;

/// Where a compiled route sends messages.
#[derive(Debug, Clone)]
pub enum Target {
    Queue(Template),
    Topic(Template),
    /// An MQTT topic template, converted to the internal topic by the MQTT convention.
    Mqtt(Template),
    Amqp {
        link: String,
        exchange: String,
        routing_key: Option<Template>,
    },
    Xmpp {
        link: String,
        to: Template,
        from: Option<Template>,
        kind: String,
    },
    /// Publish an item to a PubSub node through an XMPP link.
    XmppPubsub {
        link: String,
        service: String,
        node: Template,
        item_id: Option<Template>,
        create: bool,
    },
}

/// A rendered target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    Internal(Destination),
    Amqp {
        link: String,
        exchange: String,
        routing_key: String,
    },
    Xmpp {
        link: String,
        to: String,
        from: Option<String>,
        kind: String,
    },
    XmppPubsub {
        link: String,
        service: String,
        node: String,
        item_id: Option<String>,
        create: bool,
    },
}

impl Rendered {
    /// The link a target goes through; `None` for an internal destination.
    pub fn link(&self) -> Option<&str> {
        match self {
            Rendered::Internal(_) => None,
            Rendered::Amqp { link, .. }
            | Rendered::Xmpp { link, .. }
            | Rendered::XmppPubsub { link, .. } => Some(link),
        }
    }
}

/// A route's filter.
#[derive(Debug, Clone, Default)]
pub struct When {
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub origin: Option<String>,
    /// Checked after the cheap checks, before `jq`.
    pub schema: Option<Schema>,
    /// Runs last, after the other checks passed.
    pub jq: Option<Program>,
}

/// What a route's filter says about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Take,
    Refuse,
    /// The body fails the route's schema, for this reason.
    Invalid(String),
}

/// `when.jq` programs that failed on a message (body not JSON, a jq error): the route
/// does not take it, and the count is in `GET /memory` (`limits`).
static WHEN_JQ_FAILED: crate::ratelog::Cause = crate::ratelog::Cause::new("route_when_jq_failed");

impl When {
    /// Whether route `route`, whose source matched with `caps`, takes `m`: the cheap
    /// checks, then the schema, then jq.
    pub fn verdict(&self, m: &Message, route: &str, caps: &[Capture]) -> Verdict {
        if !self.matches_fields(m) {
            return Verdict::Refuse;
        }
        if let Some(s) = &self.schema
            && let Err(why) = s.check(m)
        {
            return Verdict::Invalid(why);
        }
        let taken = match &self.jq {
            None => true,
            Some(p) => match p.accepts(m, route, caps) {
                Ok(yes) => yes,
                Err(e) => {
                    crate::rate_warn!(WHEN_JQ_FAILED, route, error = %e, "`when.jq` failed on a message: the route does not take it");
                    false
                }
            },
        };
        if taken {
            Verdict::Take
        } else {
            Verdict::Refuse
        }
    }

    fn matches_fields(&self, m: &Message) -> bool {
        if let Some(ct) = &self.content_type {
            let actual = m.content_type.as_deref().unwrap_or("");
            let mime = actual.split(';').next().unwrap_or("").trim();
            if !mime.eq_ignore_ascii_case(ct) {
                return false;
            }
        }
        if let Some(o) = &self.origin
            && *m.origin.protocol != **o
        {
            return false;
        }
        self.headers
            .iter()
            .all(|(k, v)| m.headers.get(k) == Some(v.as_str()))
    }
}

/// A route's message changes: jq first (which may split the message), then on each
/// message rename, remove and set headers; then convert the body.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    pub set: Vec<(String, Template)>,
    pub rename: Vec<(String, String)>,
    pub remove: Vec<String>,
    pub body: Option<BodyFormat>,
    pub jq: Option<JqTransform>,
}

/// `transform.jq` compiled, with how its outputs are read and how many it may yield.
#[derive(Debug, Clone)]
pub struct JqTransform {
    pub program: Program,
    pub output: Output,
    pub max_outputs: usize,
}

/// Why a message could not be routed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoutingError {
    #[error("route `{route}`: {err}")]
    Render { route: String, err: RenderError },
    #[error("route `{route}`: rendered an invalid destination `{name}`: {reason}")]
    BadName {
        route: String,
        name: String,
        reason: String,
    },
    #[error("route `{route}`: body conversion failed: {err}")]
    Body { route: String, err: BodyError },
    #[error("route `{route}`: {err}")]
    Jq { route: String, err: JqError },
    #[error("routing depth limit reached at {0} (a loop through header templates?)")]
    TooDeep(Destination),
}

impl Transform {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.rename.is_empty()
            && self.remove.is_empty()
            && self.body.is_none()
            && self.jq.is_none()
    }

    /// How many messages one message may become (1 without jq).
    pub fn max_copies(&self) -> usize {
        self.jq.as_ref().map_or(1, |j| j.max_outputs)
    }

    /// The messages `m` becomes: one, or with jq one per output (possibly none).
    pub(super) fn apply_all(
        &self,
        route: &str,
        m: &Message,
        caps: &[Capture],
    ) -> Result<Vec<Message>, RoutingError> {
        let mut out = match &self.jq {
            None => vec![m.clone()],
            Some(j) => j
                .program
                .transform(m, route, caps, j.output, j.max_outputs)
                .map_err(|err| RoutingError::Jq {
                    route: route.to_owned(),
                    err,
                })?,
        };
        for next in &mut out {
            self.apply(route, next, &m.headers, caps)?;
        }
        Ok(out)
    }

    /// Header changes and body conversion on one message; templates read `original`,
    /// the headers as the route received them.
    fn apply(
        &self,
        route: &str,
        m: &mut Message,
        original: &crate::core::Headers,
        caps: &[Capture],
    ) -> Result<(), RoutingError> {
        for (from, to) in &self.rename {
            m.headers.rename(from, to);
        }
        for h in &self.remove {
            m.headers.remove(h);
        }
        for (k, t) in &self.set {
            let v =
                t.render(caps, original, Grammar::Text)
                    .map_err(|err| RoutingError::Render {
                        route: route.to_owned(),
                        err,
                    })?;
            m.headers.set(k, v);
        }
        if let Some(format) = self.body {
            let (b, ct) =
                body::convert(&m.body, m.content_type.as_deref(), format).map_err(|err| {
                    RoutingError::Body {
                        route: route.to_owned(),
                        err,
                    }
                })?;
            m.body = b;
            m.content_type = Some(ct.to_owned());
        }
        Ok(())
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub name: String,
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub source: Source,
    /// The source as written (for `explain` and logs).
    pub source_text: String,
    pub when: Option<When>,
    pub targets: Vec<Target>,
    pub transform: Transform,
    pub passthrough: bool,
    /// The loss policy the route gives its copies (`None`: left as it is).
    pub loss: Option<crate::core::Loss>,
    /// AMQP topology the route declares.
    pub declare: Option<Declare>,
    /// Where messages its schema finds invalid go (`invalid.dead_letter`); without it
    /// the route does not take them.
    pub dead_letter: Option<Target>,
    /// Its `rate_limit`, carried across reloads while name and settings stay.
    pub rate: Option<std::sync::Arc<RateLimiter>>,
    /// Messages it took and could not route; carried across reloads by name.
    pub counters: std::sync::Arc<super::counters::RouteCounters>,
}

/// A route's validated AMQP declarations and the link they go to.
#[derive(Debug, Clone)]
pub struct Declare {
    pub link: String,
    pub spec: DeclareSpec,
}

impl CompiledRoute {
    /// What the route's filter (if any) says about `m`, which its source matched with
    /// `caps`.
    pub fn verdict(&self, m: &Message, caps: &[Capture]) -> Verdict {
        self.when
            .as_ref()
            .map_or(Verdict::Take, |w| w.verdict(m, &self.name, caps))
    }

    /// Renders every target for a message that matched with `caps`.
    pub fn render_targets(
        &self,
        caps: &[Capture],
        m: &Message,
    ) -> Result<Vec<Rendered>, RoutingError> {
        self.targets
            .iter()
            .map(|t| self.render_target(t, caps, m))
            .collect()
    }

    /// Renders one target (of `to`, or the dead letter's) for a message that matched
    /// with `caps`.
    pub fn render_target(
        &self,
        t: &Target,
        caps: &[Capture],
        m: &Message,
    ) -> Result<Rendered, RoutingError> {
        let render = |t: &Template, g: Grammar| {
            t.render(caps, &m.headers, g)
                .map_err(|err| RoutingError::Render {
                    route: self.name.clone(),
                    err,
                })
        };
        let name_ok = |name: String, dest: fn(&str) -> Destination| {
            validate_name(&name)
                .map(|()| dest(&name))
                .map_err(|e| RoutingError::BadName {
                    route: self.name.clone(),
                    name: name.clone(),
                    reason: e.to_string(),
                })
        };
        Ok(match t {
            Target::Queue(tpl) => {
                Rendered::Internal(name_ok(render(tpl, Grammar::Dot)?, Destination::queue)?)
            }
            Target::Topic(tpl) => {
                Rendered::Internal(name_ok(render(tpl, Grammar::Dot)?, Destination::topic)?)
            }
            Target::Mqtt(tpl) => {
                let topic = render(tpl, Grammar::Slash)?;
                Rendered::Internal(name_ok(
                    mqtt_names::topic_to_internal(&topic),
                    Destination::topic,
                )?)
            }
            Target::Amqp {
                link,
                exchange,
                routing_key,
            } => Rendered::Amqp {
                link: link.clone(),
                exchange: exchange.clone(),
                routing_key: match routing_key {
                    Some(k) => render(k, Grammar::Dot)?,
                    None => String::new(),
                },
            },
            Target::Xmpp {
                link,
                to,
                from,
                kind,
            } => Rendered::Xmpp {
                link: link.clone(),
                to: render(to, Grammar::Text)?,
                from: from
                    .as_ref()
                    .map(|f| render(f, Grammar::Text))
                    .transpose()?,
                kind: kind.clone(),
            },
            Target::XmppPubsub {
                link,
                service,
                node,
                item_id,
                create,
            } => Rendered::XmppPubsub {
                link: link.clone(),
                service: service.clone(),
                node: render(node, Grammar::Text)?,
                item_id: item_id
                    .as_ref()
                    .map(|i| render(i, Grammar::Text))
                    .transpose()?,
                create: *create,
            },
        })
    }
}
