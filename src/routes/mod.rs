//! The routing table: compiled from `routes/*.yaml`, immutable once built, swapped
//! atomically on reload (see [`reload`]). Readers take a snapshot per publish, so a
//! message is routed entirely by one table even while a reload happens.

pub mod compile;
pub mod explain;
mod fanout;
pub mod jid_pattern;
pub mod reload;
pub mod spec;
pub mod template;

use std::collections::HashMap;

use crate::core::trie::SubjectTrie;
use crate::core::{Capture, Destination, Message, Pattern, validate_name};
use crate::translate::body::{self, BodyError};
use crate::translate::mqtt_names;

pub use compile::{
    CompileContext, DEFAULT_MAX_FANOUT, LinkKind, RouteError, compile_sources, load_dir,
};
pub use spec::BodyFormat;
use template::{Grammar, RenderError, Template};

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
        jid_pattern: Option<jid_pattern::JidPattern>,
    },
}

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
}

/// A route's filter.
#[derive(Debug, Clone, Default)]
pub struct When {
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub origin: Option<String>,
}

impl When {
    pub fn matches(&self, m: &Message) -> bool {
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

/// A route's message changes: rename, then remove, then set headers; then the body.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    pub set: Vec<(String, Template)>,
    pub rename: Vec<(String, String)>,
    pub remove: Vec<String>,
    pub body: Option<BodyFormat>,
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
    #[error("routing depth limit reached at {0} (a loop through header templates?)")]
    TooDeep(Destination),
}

impl Transform {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.rename.is_empty()
            && self.remove.is_empty()
            && self.body.is_none()
    }

    fn apply(&self, route: &str, m: &mut Message, caps: &[Capture]) -> Result<(), RoutingError> {
        let original = m.headers.clone();
        for (from, to) in &self.rename {
            m.headers.rename(from, to);
        }
        for h in &self.remove {
            m.headers.remove(h);
        }
        for (k, t) in &self.set {
            let v =
                t.render(caps, &original, Grammar::Text)
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
}

/// A route's validated AMQP declarations and the link they go to.
#[derive(Debug, Clone)]
pub struct Declare {
    pub link: String,
    pub spec: spec::DeclareSpec,
}

/// What an AMQP link consumes for routes: a named queue, or a private queue bound to
/// an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AmqpSourceKey {
    Queue(String),
    Exchange {
        exchange: String,
        binding_key: String,
    },
}

impl std::fmt::Display for AmqpSourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Queue(q) => write!(f, "queue {q}"),
            Self::Exchange {
                exchange,
                binding_key,
            } => write!(f, "exchange {exchange} key {binding_key}"),
        }
    }
}

impl CompiledRoute {
    /// Renders every target for a message that matched with `caps`.
    pub fn render_targets(
        &self,
        caps: &[Capture],
        m: &Message,
    ) -> Result<Vec<Rendered>, RoutingError> {
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
        self.targets
            .iter()
            .map(|t| {
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
                })
            })
            .collect()
    }
}

/// The compiled, immutable routing table.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Increases with every successful (re)load.
    pub version: u64,
    pub routes: Vec<CompiledRoute>,
    by_queue: HashMap<String, Vec<usize>>,
    by_topic: SubjectTrie<usize>,
    /// The files it was compiled from.
    pub files: Vec<String>,
}

/// Upper bound on chained internal routes for one publish.
pub const MAX_ROUTE_DEPTH: usize = 8;

/// One leg of a routed publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    pub target: Rendered,
    pub message: Message,
}

impl RouteTable {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Routes whose source matches `dest` and whose filter accepts `m`, in table order,
    /// with the source's wildcard captures.
    pub fn matching(&self, dest: &Destination, m: &Message) -> Vec<(&CompiledRoute, Vec<Capture>)> {
        self.source_matches(dest)
            .into_iter()
            .filter(|(r, _)| r.when.as_ref().is_none_or(|w| w.matches(m)))
            .collect()
    }

    /// Routes whose source matches `dest`, filters not applied, in table order.
    fn source_matches(&self, dest: &Destination) -> Vec<(&CompiledRoute, Vec<Capture>)> {
        let mut hits: Vec<(usize, Vec<Capture>)> = match dest {
            Destination::Queue(q) => self
                .by_queue
                .get(&**q)
                .map(|v| v.iter().map(|&i| (i, Vec::new())).collect())
                .unwrap_or_default(),
            Destination::Topic(t) => {
                if self.by_topic.is_empty() {
                    return Vec::new();
                }
                let mut idx = Vec::new();
                self.by_topic.matches(t, &mut idx);
                idx.sort_unstable();
                idx.dedup();
                idx.into_iter()
                    .filter_map(|i| match &self.routes[i].source {
                        Source::Topic(p) => p.captures(t).map(|c| (i, c)),
                        _ => None,
                    })
                    .collect()
            }
        };
        hits.sort_by_key(|(i, _)| *i);
        hits.into_iter()
            .map(|(i, c)| (&self.routes[i], c))
            .collect()
    }

    /// Routes a message published to `dest`: follows internal routes (a route's internal
    /// target may itself be another route's source) and returns every leg to deliver.
    /// A destination no route claims is delivered as addressed.
    pub fn resolve(&self, dest: Destination, m: Message) -> Result<Vec<Leg>, RoutingError> {
        let mut out = Vec::with_capacity(1);
        self.resolve_into(dest, m, 0, &mut out, &mut explain::NoTrace)?;
        Ok(out)
    }

    fn resolve_into<T: explain::Trace>(
        &self,
        dest: Destination,
        m: Message,
        depth: usize,
        out: &mut Vec<Leg>,
        trace: &mut T,
    ) -> Result<(), RoutingError> {
        let hits = self.matching(&dest, &m);
        if T::ON {
            for (r, _) in self.source_matches(&dest) {
                if !r.when.as_ref().is_none_or(|w| w.matches(&m)) {
                    trace.refused(depth, r);
                }
            }
        }
        if hits.is_empty() {
            trace.addressed(depth, &dest, false);
            out.push(Leg {
                target: Rendered::Internal(dest),
                message: m,
            });
            return Ok(());
        }
        if depth >= MAX_ROUTE_DEPTH {
            return Err(RoutingError::TooDeep(dest));
        }
        let passthrough = hits.iter().any(|(r, _)| r.passthrough);
        for (route, caps) in &hits {
            self.apply_route(route, caps, &m, depth, out, trace)?;
        }
        if passthrough {
            trace.addressed(depth, &dest, true);
            out.push(Leg {
                target: Rendered::Internal(dest),
                message: m,
            });
        }
        Ok(())
    }

    /// The distinct things an AMQP link must consume for the routes of this table.
    pub fn amqp_sources(&self, link: &str) -> Vec<AmqpSourceKey> {
        let mut keys: Vec<AmqpSourceKey> = self
            .routes
            .iter()
            .filter_map(|r| amqp_key(&r.source, link))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Declarations for a link, with the route that asked for each, in table order.
    pub fn amqp_declarations<'a>(
        &'a self,
        link: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a spec::DeclareSpec)> + 'a {
        self.routes.iter().filter_map(move |r| match &r.declare {
            Some(d) if d.link == link => Some((r.name.as_str(), &d.spec)),
            _ => None,
        })
    }

    /// Routes a message an XMPP link received for the JID `to`: every route of the link
    /// whose `jid` pattern matches, in table order. `None` when no route's pattern
    /// matches `to`; an empty list when routes match but their filters refused it.
    ///
    /// With `presence`, the routes are the `presence` sources and `to` is the bare JID
    /// of the user whose presence the message reports.
    pub fn resolve_xmpp(
        &self,
        link: &str,
        to: &str,
        presence: bool,
        m: Message,
    ) -> Option<Result<Vec<Leg>, RoutingError>> {
        self.resolve_xmpp_traced(link, to, presence, m, &mut explain::NoTrace)
    }

    pub(crate) fn resolve_xmpp_traced<T: explain::Trace>(
        &self,
        link: &str,
        to: &str,
        presence: bool,
        m: Message,
        trace: &mut T,
    ) -> Option<Result<Vec<Leg>, RoutingError>> {
        let mut hits = Vec::new();
        let mut any = false;
        for r in &self.routes {
            let Source::Xmpp {
                link: l,
                jid_pattern: Some(p),
                presence: pres,
                ..
            } = &r.source
            else {
                continue;
            };
            if l != link || pres.is_some() != presence {
                continue;
            }
            let Some(caps) = p.captures(to) else {
                continue;
            };
            any = true;
            if r.when.as_ref().is_none_or(|w| w.matches(&m)) {
                hits.push((r, caps));
            } else {
                trace.refused(0, r);
            }
        }
        any.then(|| self.apply_all(&hits, &m, trace))
    }

    /// JIDs the routes of an XMPP link name without wildcards (service discovery lists
    /// them).
    pub fn xmpp_jids(&self, link: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .routes
            .iter()
            .filter_map(|r| match &r.source {
                Source::Xmpp {
                    link: l,
                    jid_pattern: Some(p),
                    presence: None,
                    ..
                } if l == link => p.literal(),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The internal destination messages to the JID `jid` are routed to (the first
    /// internal target of the first route serving it whose targets render without
    /// message headers): what a user who subscribes to that JID's presence is pushed.
    pub fn xmpp_destination(&self, link: &str, jid: &str) -> Option<Destination> {
        let probe = Message::new("");
        self.routes.iter().find_map(|r| match &r.source {
            Source::Xmpp {
                link: l,
                jid_pattern: Some(p),
                presence: None,
                ..
            } if l == link => {
                let caps = p.captures(jid)?;
                r.render_targets(&caps, &probe)
                    .ok()?
                    .into_iter()
                    .find_map(|t| match t {
                        Rendered::Internal(d) => Some(d),
                        _ => None,
                    })
            }
            _ => None,
        })
    }

    /// Routes a message an AMQP link consumed from `key` (its routing key gives the
    /// captures of a binding-key pattern). `None` when no route of this table consumes
    /// `key` any more (a reload removed it); an empty list when routes exist but their
    /// filters refused the message.
    pub fn resolve_amqp(
        &self,
        link: &str,
        key: &AmqpSourceKey,
        routing_key: &str,
        m: Message,
    ) -> Option<Result<Vec<Leg>, RoutingError>> {
        self.resolve_amqp_traced(link, key, routing_key, m, &mut explain::NoTrace)
    }

    pub(crate) fn resolve_amqp_traced<T: explain::Trace>(
        &self,
        link: &str,
        key: &AmqpSourceKey,
        routing_key: &str,
        m: Message,
        trace: &mut T,
    ) -> Option<Result<Vec<Leg>, RoutingError>> {
        let mut hits = Vec::new();
        let mut any = false;
        for r in &self.routes {
            if amqp_key(&r.source, link).as_ref() != Some(key) {
                continue;
            }
            any = true;
            if !r.when.as_ref().is_none_or(|w| w.matches(&m)) {
                trace.refused(0, r);
                continue;
            }
            let caps = match &r.source {
                Source::Amqp {
                    binding: Some(p), ..
                } => p.captures(routing_key).unwrap_or_default(),
                _ => Vec::new(),
            };
            hits.push((r, caps));
        }
        any.then(|| self.apply_all(&hits, &m, trace))
    }

    /// Applies the routes a link source matched, in order; the legs of them all.
    fn apply_all<T: explain::Trace>(
        &self,
        hits: &[(&CompiledRoute, Vec<Capture>)],
        m: &Message,
        trace: &mut T,
    ) -> Result<Vec<Leg>, RoutingError> {
        let mut out = Vec::new();
        for (r, caps) in hits {
            self.apply_route(r, caps, m, 0, &mut out, trace)?;
        }
        Ok(out)
    }

    /// One matched route: render its targets, transform, follow internal targets.
    fn apply_route<T: explain::Trace>(
        &self,
        route: &CompiledRoute,
        caps: &[Capture],
        m: &Message,
        depth: usize,
        out: &mut Vec<Leg>,
        trace: &mut T,
    ) -> Result<(), RoutingError> {
        let targets = route.render_targets(caps, m)?;
        let mut changed = m.clone();
        route.transform.apply(&route.name, &mut changed, caps)?;
        if let Some(loss) = route.loss {
            changed.loss = loss;
        }
        trace.route(depth, route, caps, &targets, m, &changed);
        for t in targets {
            match t {
                Rendered::Internal(d) => {
                    self.resolve_into(d, changed.clone(), depth + 1, out, trace)?
                }
                other => out.push(Leg {
                    target: other,
                    message: changed.clone(),
                }),
            }
        }
        Ok(())
    }

    /// Routes whose source is the named link (the link consumes what they ask for).
    pub fn link_sources<'a>(
        &'a self,
        link: &'a str,
    ) -> impl Iterator<Item = &'a CompiledRoute> + 'a {
        self.routes.iter().filter(move |r| match &r.source {
            Source::Amqp { link: l, .. } | Source::Xmpp { link: l, .. } => l == link,
            _ => false,
        })
    }
}

fn amqp_key(source: &Source, link: &str) -> Option<AmqpSourceKey> {
    match source {
        Source::Amqp {
            link: l,
            queue,
            exchange,
            binding_key,
            ..
        } if l == link => Some(match (queue, exchange) {
            (Some(q), _) => AmqpSourceKey::Queue(q.clone()),
            (None, Some(x)) => AmqpSourceKey::Exchange {
                exchange: x.clone(),
                binding_key: binding_key.clone().unwrap_or_default(),
            },
            (None, None) => return None,
        }),
        _ => None,
    }
}
