//! The compiled, immutable routing table and how a message goes through it: the routes
//! its destination (or link source) matches, their legs, and internal targets followed
//! on to further routes.

use std::collections::HashMap;
use std::time::Duration;

use super::explain;
use super::rate::Admit;
use super::route::{CompiledRoute, PubsubNode, Rendered, RoutingError, Source, Verdict};
use super::schema::{ERROR_HEADER, SchemaFile};
use super::spec::DeclareSpec;
use crate::core::trie::SubjectTrie;
use crate::core::{Capture, Destination, Message};

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
    /// The schema files its routes read, as they were then (a reload recompiles when
    /// one changed, even if no route file did).
    pub schema_files: Vec<SchemaFile>,
}

/// Upper bound on chained internal routes for one publish.
pub const MAX_ROUTE_DEPTH: usize = 8;

/// One leg of a routed publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    pub target: Rendered,
    pub message: Message,
}

/// A routed publish: its legs, and how long the publisher must wait before they are
/// delivered (a `rate_limit` with `over: hold` that had no token for it; zero
/// otherwise).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub legs: Vec<Leg>,
    pub hold: Duration,
}

/// A route that takes a message: with its captures, and the schema error when it takes
/// it only to dead-letter it.
type Hit<'a> = (&'a CompiledRoute, Vec<Capture>, Option<String>);

impl RouteTable {
    pub fn empty() -> Self {
        Self::default()
    }

    /// A table of compiled routes (in evaluation order), indexed by source, with
    /// version 0 until a loader numbers it.
    pub(super) fn new(
        routes: Vec<CompiledRoute>,
        files: Vec<String>,
        schema_files: Vec<SchemaFile>,
    ) -> Self {
        let mut table = RouteTable {
            version: 0,
            routes,
            by_queue: HashMap::new(),
            by_topic: SubjectTrie::new(),
            files,
            schema_files,
        };
        for (i, r) in table.routes.iter().enumerate() {
            match &r.source {
                Source::Queue(q) => table.by_queue.entry(q.clone()).or_default().push(i),
                Source::Topic(p) => table.by_topic.insert(p, i),
                Source::Amqp { .. } | Source::Xmpp { .. } => {}
            }
        }
        table
    }

    /// Whether a schema file the table read holds something else now.
    pub fn schema_files_changed(&self) -> bool {
        self.schema_files.iter().any(SchemaFile::changed)
    }

    /// The routes (of `candidates`, whose sources matched) that take `m`: those whose
    /// filter accepts it, and those whose schema refuses it when they dead-letter
    /// invalid messages. Invalid messages are counted on their route (real publishes
    /// only); routes that do not take `m` are reported to `trace`.
    fn takers<'a, T: explain::Trace>(
        candidates: impl IntoIterator<Item = (&'a CompiledRoute, Vec<Capture>)>,
        m: &Message,
        depth: usize,
        trace: &mut T,
    ) -> Vec<Hit<'a>> {
        let mut hits = Vec::new();
        for (r, caps) in candidates {
            match r.verdict(m, &caps) {
                Verdict::Take => hits.push((r, caps, None)),
                Verdict::Refuse => trace.refused(depth, r, None),
                Verdict::Invalid(why) => {
                    if !T::ON {
                        r.counters.invalid();
                    }
                    if r.dead_letter.is_some() {
                        hits.push((r, caps, Some(why)));
                    } else {
                        trace.refused(depth, r, Some(&why));
                    }
                }
            }
        }
        hits
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
    pub fn resolve(&self, dest: Destination, m: Message) -> Result<Resolved, RoutingError> {
        let mut out = Resolved {
            legs: Vec::with_capacity(1),
            hold: Duration::ZERO,
        };
        self.resolve_into(dest, m, 0, &mut out, &mut explain::NoTrace)?;
        Ok(out)
    }

    pub(super) fn resolve_into<T: explain::Trace>(
        &self,
        dest: Destination,
        m: Message,
        depth: usize,
        out: &mut Resolved,
        trace: &mut T,
    ) -> Result<(), RoutingError> {
        let hits = Self::takers(self.source_matches(&dest), &m, depth, trace);
        if hits.is_empty() {
            trace.addressed(depth, &dest, false);
            out.legs.push(Leg {
                target: Rendered::Internal(dest),
                message: m,
            });
            return Ok(());
        }
        if depth >= MAX_ROUTE_DEPTH {
            return Err(RoutingError::TooDeep(dest));
        }
        let passthrough = hits.iter().any(|(r, ..)| r.passthrough);
        for (route, caps, invalid) in hits {
            self.apply_route(route, &caps, invalid, &m, depth, out, trace)?;
        }
        if passthrough {
            trace.addressed(depth, &dest, true);
            out.legs.push(Leg {
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
    ) -> impl Iterator<Item = (&'a str, &'a DeclareSpec)> + 'a {
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
    ) -> Option<Result<Resolved, RoutingError>> {
        self.resolve_xmpp_traced(link, to, presence, m, &mut explain::NoTrace)
    }

    pub(crate) fn resolve_xmpp_traced<T: explain::Trace>(
        &self,
        link: &str,
        to: &str,
        presence: bool,
        m: Message,
        trace: &mut T,
    ) -> Option<Result<Resolved, RoutingError>> {
        self.resolve_link(m, trace, |source| match source {
            Source::Xmpp {
                link: l,
                jid_pattern: Some(p),
                presence: pres,
                ..
            } if l == link && pres.is_some() == presence => p.captures(to),
            _ => None,
        })
    }

    /// Routes an item an XMPP link received from the PubSub `node` (or, `retraction`,
    /// the news that one was retracted): every route of the link reading that node
    /// (and asking for retractions). `None` when no route reads it (any more).
    pub fn resolve_pubsub(
        &self,
        link: &str,
        node: &PubsubNode,
        retraction: bool,
        m: Message,
    ) -> Option<Result<Resolved, RoutingError>> {
        self.resolve_link(m, &mut explain::NoTrace, |source| match source {
            Source::Xmpp {
                link: l,
                pubsub: Some(p),
                ..
            } if l == link && p.node == *node && (p.retractions || !retraction) => Some(Vec::new()),
            _ => None,
        })
    }

    /// How many of the node's last items the link delivers when it first subscribes:
    /// the most any route of the link reading the node asks for (`catch_up`).
    pub fn pubsub_catch_up(&self, link: &str, node: &PubsubNode) -> u32 {
        self.routes
            .iter()
            .filter_map(|r| match &r.source {
                Source::Xmpp {
                    link: l,
                    pubsub: Some(p),
                    ..
                } if l == link && p.node == *node => Some(p.catch_up),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The PubSub nodes the routes of an XMPP link read (the link subscribes to them),
    /// sorted, without duplicates.
    pub fn pubsub_nodes(&self, link: &str) -> Vec<PubsubNode> {
        let mut v: Vec<PubsubNode> = self
            .routes
            .iter()
            .filter_map(|r| match &r.source {
                Source::Xmpp {
                    link: l,
                    pubsub: Some(p),
                    ..
                } if l == link => Some(p.node.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
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
    ) -> Option<Result<Resolved, RoutingError>> {
        self.resolve_amqp_traced(link, key, routing_key, m, &mut explain::NoTrace)
    }

    pub(crate) fn resolve_amqp_traced<T: explain::Trace>(
        &self,
        link: &str,
        key: &AmqpSourceKey,
        routing_key: &str,
        m: Message,
        trace: &mut T,
    ) -> Option<Result<Resolved, RoutingError>> {
        self.resolve_link(m, trace, |source| {
            if amqp_key(source, link).as_ref() != Some(key) {
                return None;
            }
            Some(match source {
                Source::Amqp {
                    binding: Some(p), ..
                } => p.captures(routing_key).unwrap_or_default(),
                _ => Vec::new(),
            })
        })
    }

    /// Routes a message a link received: every route whose source `matches` (giving the
    /// captures) and whose filter takes the message, applied in table order. `None` when
    /// no route's source matches; an empty list when some do but their filters refused.
    fn resolve_link<T: explain::Trace>(
        &self,
        m: Message,
        trace: &mut T,
        matches: impl Fn(&Source) -> Option<Vec<Capture>>,
    ) -> Option<Result<Resolved, RoutingError>> {
        let candidates: Vec<_> = self
            .routes
            .iter()
            .filter_map(|r| matches(&r.source).map(|caps| (r, caps)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let hits = Self::takers(candidates, &m, 0, trace);
        let mut out = Resolved::default();
        for (r, caps, invalid) in hits {
            if let Err(e) = self.apply_route(r, &caps, invalid, &m, 0, &mut out, trace) {
                return Some(Err(e));
            }
        }
        Some(Ok(out))
    }

    /// One route that takes the message: its rate limit, then its targets (or, for a
    /// message its schema refused, its dead letter), transform, and internal targets
    /// followed on.
    #[allow(clippy::too_many_arguments)]
    fn apply_route<T: explain::Trace>(
        &self,
        route: &CompiledRoute,
        caps: &[Capture],
        invalid: Option<String>,
        m: &Message,
        depth: usize,
        out: &mut Resolved,
        trace: &mut T,
    ) -> Result<(), RoutingError> {
        // Only real publishes count and spend tokens (`explain` traces walk the same
        // code).
        if !T::ON {
            route.counters.matched();
            if let Some(limiter) = &route.rate {
                match limiter.admit(&m.origin, tokio::time::Instant::now()) {
                    Admit::Now => {}
                    Admit::After(wait) => {
                        route.counters.held();
                        out.hold = out.hold.max(wait);
                    }
                    Admit::Drop => {
                        route.counters.rate_dropped();
                        return Ok(());
                    }
                }
            }
        }
        if let Some(why) = invalid {
            return self.dead_letter(route, caps, why, m, depth, out, trace);
        }
        let rendered = route.render_targets(caps, m).and_then(|targets| {
            let changed = route.transform.apply_all(&route.name, m, caps)?;
            Ok((targets, changed))
        });
        let (targets, mut changed) = match rendered {
            Ok(r) => r,
            Err(e) => {
                if !T::ON {
                    route.counters.failed();
                }
                return Err(e);
            }
        };
        if let Some(loss) = route.loss {
            for c in &mut changed {
                c.loss = loss;
            }
        }
        trace.route(depth, route, caps, &targets, m, &changed);
        for c in changed {
            for t in &targets {
                match t {
                    Rendered::Internal(d) => {
                        self.resolve_into(d.clone(), c.clone(), depth + 1, out, trace)?
                    }
                    other => out.legs.push(Leg {
                        target: other.clone(),
                        message: c.clone(),
                    }),
                }
            }
        }
        Ok(())
    }

    /// A message the route's schema refused goes, untransformed and with the reason in
    /// [`ERROR_HEADER`], to the route's dead letter: as addressed, not routed again (as
    /// the core's dead letters).
    #[allow(clippy::too_many_arguments)]
    fn dead_letter<T: explain::Trace>(
        &self,
        route: &CompiledRoute,
        caps: &[Capture],
        why: String,
        m: &Message,
        depth: usize,
        out: &mut Resolved,
        trace: &mut T,
    ) -> Result<(), RoutingError> {
        let Some(target) = &route.dead_letter else {
            return Ok(());
        };
        let target = route.render_target(target, caps, m).inspect_err(|_| {
            if !T::ON {
                route.counters.failed();
            }
        })?;
        trace.dead_lettered(depth, route, &why, &target);
        let mut message = m.clone();
        message.headers.set(ERROR_HEADER, why);
        out.legs.push(Leg { target, message });
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
