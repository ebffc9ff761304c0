//! `switchboard explain`: what the compiled route table does with a message sent to an
//! address of any protocol — the internal destination the address means, every route it
//! passes through (with file and line, captures, filters and transforms), and where it
//! ends up, spelled in each protocol. It walks the very table and code the daemon
//! routes with ([`RouteTable::resolve`] and friends, through the [`Trace`] hook), so
//! what it prints is what the router does.

use std::fmt::Write as _;

use super::{AmqpSourceKey, CompiledRoute, Leg, Rendered, RouteTable, RoutingError, Source};
use crate::core::{Capture, Destination, Message};
use crate::translate::{mqtt_names, stomp_names};

/// Observes a routing walk. The router uses [`NoTrace`], which compiles to nothing.
pub(crate) trait Trace {
    /// Whether events are wanted at all (lets the walk skip work for [`NoTrace`]).
    const ON: bool;
    /// A route matched and was applied: its rendered targets and the message before
    /// and after its transform.
    fn route(
        &mut self,
        _depth: usize,
        _route: &CompiledRoute,
        _caps: &[Capture],
        _targets: &[Rendered],
        _before: &Message,
        _after: &[Message],
    ) {
    }
    /// A route's source matched but its filter refused the message (`why`: its schema
    /// found it invalid, for this reason).
    fn refused(&mut self, _depth: usize, _route: &CompiledRoute, _why: Option<&str>) {}
    /// A route's schema found the message invalid; it goes to the route's dead letter.
    fn dead_lettered(
        &mut self,
        _depth: usize,
        _route: &CompiledRoute,
        _why: &str,
        _target: &Rendered,
    ) {
    }
    /// The message is delivered to `dest` as addressed: no route claims it, or (with
    /// `passthrough`) a route passes it through.
    fn addressed(&mut self, _depth: usize, _dest: &Destination, _passthrough: bool) {}
}

/// No tracing.
pub(crate) struct NoTrace;

impl Trace for NoTrace {
    const ON: bool = false;
}

/// An address to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A STOMP destination, an MQTT topic or an internal name: an internal destination.
    Internal { shown: String, dest: Destination },
    /// What an AMQP link consumes: a queue, or an exchange with a routing key.
    Amqp {
        link: String,
        queue: Option<String>,
        exchange: Option<String>,
        routing_key: String,
    },
    /// A JID of an XMPP link (a chat to it, or with `presence` the presence of a user).
    Xmpp {
        link: String,
        jid: String,
        presence: bool,
    },
}

const USAGE: &str = "expected one of: stomp DESTINATION | mqtt TOPIC | internal queue:NAME|topic:NAME | amqp LINK queue NAME | amqp LINK exchange NAME ROUTING_KEY | xmpp LINK JID | xmpp LINK presence JID";

/// Reads `PROTOCOL ADDRESS…` from the command line.
pub fn parse_query(args: &[String]) -> Result<Query, String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["stomp", d] => {
            let dest = match stomp_names::parse(d, false).map_err(|e| format!("`{d}`: {e}"))? {
                stomp_names::StompDest::Queue(n) => Destination::queue(&n),
                stomp_names::StompDest::Topic(n) => Destination::topic(&n),
                stomp_names::StompDest::TempQueue(_) => {
                    return Err(format!(
                        "`{d}`: a temporary queue belongs to one connection; routes never see it"
                    ));
                }
            };
            Ok(Query::Internal {
                shown: format!("STOMP {d}"),
                dest,
            })
        }
        ["mqtt", t] => {
            mqtt_names::validate_filter(t).map_err(|e| format!("`{t}`: {e}"))?;
            if t.contains(['+', '#']) {
                return Err(format!(
                    "`{t}`: give a topic name a client publishes to, not a filter"
                ));
            }
            Ok(Query::Internal {
                shown: format!("MQTT {t}"),
                dest: mqtt_names::topic_to_destination(t),
            })
        }
        ["internal", d] => Ok(Query::Internal {
            shown: format!("internal {d}"),
            dest: Destination::parse(d).map_err(|e| format!("`{d}`: {e}"))?,
        }),
        ["amqp", link, "queue", q] => Ok(Query::Amqp {
            link: (*link).to_owned(),
            queue: Some((*q).to_owned()),
            exchange: None,
            routing_key: String::new(),
        }),
        ["amqp", link, "exchange", x, key] => Ok(Query::Amqp {
            link: (*link).to_owned(),
            queue: None,
            exchange: Some((*x).to_owned()),
            routing_key: (*key).to_owned(),
        }),
        ["xmpp", link, "presence", jid] => Ok(Query::Xmpp {
            link: (*link).to_owned(),
            jid: (*jid).to_owned(),
            presence: true,
        }),
        ["xmpp", link, jid] => Ok(Query::Xmpp {
            link: (*link).to_owned(),
            jid: (*jid).to_owned(),
            presence: false,
        }),
        _ => Err(USAGE.into()),
    }
}

/// Collects a walk as indented text.
#[derive(Default)]
struct Recorder {
    out: String,
}

fn at(r: &CompiledRoute) -> String {
    format!("{}:{}:{}", r.file, r.line, r.column)
}

impl Trace for Recorder {
    const ON: bool = true;

    fn route(
        &mut self,
        depth: usize,
        route: &CompiledRoute,
        caps: &[Capture],
        targets: &[Rendered],
        before: &Message,
        after: &[Message],
    ) {
        let pad = "  ".repeat(depth + 1);
        let _ = writeln!(
            self.out,
            "{pad}route `{}` ({}) from {}",
            route.name,
            at(route),
            route.source_text
        );
        if !caps.is_empty() {
            let shown: Vec<String> = caps
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{{{}}}={}", i + 1, c.joined()))
                .collect();
            let _ = writeln!(self.out, "{pad}  captures: {}", shown.join(" "));
        }
        if route.when.is_some() {
            let _ = writeln!(self.out, "{pad}  filter: passed");
        }
        if let Some(l) = &route.rate {
            let l = l.limit();
            let _ = writeln!(
                self.out,
                "{pad}  rate limit: {}/s, burst {}, per {}, over: {} (not applied by explain)",
                l.rate,
                l.burst,
                l.per.as_str(),
                l.over.as_str()
            );
        }
        if route.transform.jq.is_some() {
            let _ = writeln!(
                self.out,
                "{pad}  jq: {} message{}",
                after.len(),
                if after.len() == 1 { "" } else { "s" }
            );
            for (i, a) in after.iter().enumerate() {
                let _ = writeln!(self.out, "{pad}    [{}] body: {}", i + 1, body_text(a));
                for line in transform_lines(before, a) {
                    if !line.starts_with("body ") {
                        let _ = writeln!(self.out, "{pad}        {line}");
                    }
                }
            }
        } else if let [after] = after {
            for line in transform_lines(before, after) {
                let _ = writeln!(self.out, "{pad}  {line}");
            }
        }
        for t in targets {
            let _ = writeln!(self.out, "{pad}  → {}", target_text(t));
        }
        if let Some(loss) = route.loss {
            let _ = writeln!(
                self.out,
                "{pad}  fields a target cannot carry: {}",
                loss.as_str()
            );
        }
        if route.passthrough {
            let _ = writeln!(
                self.out,
                "{pad}  (passthrough: also delivered as addressed)"
            );
        }
    }

    fn refused(&mut self, depth: usize, route: &CompiledRoute, why: Option<&str>) {
        let pad = "  ".repeat(depth + 1);
        let _ = writeln!(
            self.out,
            "{pad}route `{}` ({}) matches the address, but its filter refuses this message",
            route.name,
            at(route)
        );
        if let Some(why) = why {
            let _ = writeln!(self.out, "{pad}  schema: invalid: {why}");
        }
    }

    fn dead_lettered(&mut self, depth: usize, route: &CompiledRoute, why: &str, target: &Rendered) {
        let pad = "  ".repeat(depth + 1);
        let _ = writeln!(
            self.out,
            "{pad}route `{}` ({}) from {}",
            route.name,
            at(route),
            route.source_text
        );
        let _ = writeln!(self.out, "{pad}  schema: invalid: {why}");
        let _ = writeln!(
            self.out,
            "{pad}  dead letter (header {}) → {}",
            super::schema::ERROR_HEADER,
            target_text(target)
        );
    }

    fn addressed(&mut self, depth: usize, dest: &Destination, passthrough: bool) {
        if depth > 0 {
            return;
        }
        let _ = if passthrough {
            writeln!(
                self.out,
                "  passed through: also delivered to {dest} as addressed"
            )
        } else {
            writeln!(
                self.out,
                "  no route takes {dest}: delivered to it as addressed"
            )
        };
    }
}

/// What changed in a route's transform, one line per change.
fn transform_lines(before: &Message, after: &Message) -> Vec<String> {
    let mut lines = Vec::new();
    for (k, v) in after.headers.iter() {
        if before.headers.get(k) != Some(v) {
            lines.push(format!("header {k}: {v}"));
        }
    }
    for (k, _) in before.headers.iter() {
        if after.headers.get(k).is_none() {
            lines.push(format!("header {k}: removed"));
        }
    }
    if before.body != after.body || before.content_type != after.content_type {
        lines.push(format!(
            "body converted to {} ({} bytes)",
            after.content_type.as_deref().unwrap_or("?"),
            after.body.len()
        ));
    }
    lines
}

/// A body as `explain` shows it: its text, cut at 300 characters.
fn body_text(m: &Message) -> String {
    let text = String::from_utf8_lossy(&m.body);
    let mut shown: String = text.chars().take(300).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!(
        "{shown}   ({}, {} bytes)",
        m.content_type.as_deref().unwrap_or("no content type"),
        m.body.len()
    )
}

/// A rendered target, with the names each protocol knows it by.
fn target_text(t: &Rendered) -> String {
    match t {
        Rendered::Internal(d @ Destination::Queue(q)) => {
            format!("{d}   (STOMP /queue/{q}, MQTT $queue/{q})")
        }
        Rendered::Internal(d @ Destination::Topic(name)) => format!(
            "{d}   (STOMP /topic/{name}, MQTT {})",
            mqtt_names::destination_to_topic(d)
        ),
        Rendered::Amqp {
            link,
            exchange,
            routing_key,
        } => {
            let x = if exchange.is_empty() {
                "(default exchange)"
            } else {
                exchange
            };
            format!("AMQP link `{link}`: exchange {x}, routing key `{routing_key}`")
        }
        Rendered::Xmpp {
            link,
            to,
            from,
            kind,
        } => format!(
            "XMPP link `{link}`: {kind} to {to}{}",
            from.as_deref()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default()
        ),
        Rendered::XmppPubsub {
            link,
            service,
            node,
            item_id,
            create,
        } => format!(
            "XMPP link `{link}`: publish to PubSub node {node} of {service}{}{}",
            item_id
                .as_deref()
                .map(|i| format!(" as item {i}"))
                .unwrap_or_default(),
            if *create { " (created if missing)" } else { "" }
        ),
    }
}

/// Explains what `table` does with `message` sent to `query`. The text ends with the
/// deliveries; `Err` carries the text so far and the routing error.
pub fn explain(table: &RouteTable, query: &Query, message: Message) -> String {
    let mut rec = Recorder::default();
    let result: Option<Result<Vec<Leg>, RoutingError>> = match query {
        Query::Internal { shown, dest } => {
            let _ = writeln!(rec.out, "{shown} is the internal {dest}");
            Some(table_resolve(table, dest.clone(), message, &mut rec))
        }
        Query::Amqp {
            link,
            queue,
            exchange,
            routing_key,
        } => {
            let keys: Vec<AmqpSourceKey> = table
                .amqp_sources(link)
                .into_iter()
                .filter(|k| match (k, queue, exchange) {
                    (AmqpSourceKey::Queue(q), Some(want), _) => q == want,
                    (AmqpSourceKey::Exchange { exchange: x, .. }, None, Some(want)) => {
                        x == want && binding_matches(table, link, k, routing_key)
                    }
                    _ => false,
                })
                .collect();
            let _ = writeln!(
                rec.out,
                "AMQP link `{link}`: {}",
                match (queue, exchange) {
                    (Some(q), _) => format!("messages consumed from queue {q}"),
                    (_, Some(x)) => format!(
                        "messages published to exchange {x} with routing key `{routing_key}`"
                    ),
                    _ => String::new(),
                }
            );
            if keys.is_empty() {
                None
            } else {
                let mut legs = Vec::new();
                let mut err = None;
                for k in &keys {
                    let _ = writeln!(rec.out, "  the link consumes {k} for:");
                    match table.resolve_amqp_traced(link, k, routing_key, message.clone(), &mut rec)
                    {
                        Some(Ok(l)) => legs.extend(l.legs),
                        Some(Err(e)) => err = Some(e),
                        None => {}
                    }
                }
                Some(match err {
                    Some(e) => Err(e),
                    None => Ok(legs),
                })
            }
        }
        Query::Xmpp {
            link,
            jid,
            presence,
        } => {
            let what = if *presence {
                format!("presence of {jid}")
            } else {
                format!("a chat to {jid}")
            };
            let _ = writeln!(rec.out, "XMPP link `{link}`: {what}");
            table
                .resolve_xmpp_traced(link, jid, *presence, message, &mut rec)
                .map(|r| r.map(|r| r.legs))
        }
    };
    let mut out = rec.out;
    match result {
        None => {
            let _ = writeln!(
                out,
                "  no route of this table serves it: the link does not consume it (AMQP) or answers item-not-found (XMPP)"
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "error: {e}");
        }
        Some(Ok(legs)) => {
            let _ = writeln!(
                out,
                "delivered to {} destination{}:",
                legs.len(),
                if legs.len() == 1 { "" } else { "s" }
            );
            for leg in &legs {
                let _ = writeln!(out, "  {}", target_text(&leg.target));
            }
        }
    }
    out
}

fn table_resolve(
    table: &RouteTable,
    dest: Destination,
    m: Message,
    rec: &mut Recorder,
) -> Result<Vec<Leg>, RoutingError> {
    let mut out = super::Resolved::default();
    table.resolve_into(dest, m, 0, &mut out, rec)?;
    Ok(out.legs)
}

/// Does an exchange source's binding key take `routing_key`?
fn binding_matches(table: &RouteTable, link: &str, key: &AmqpSourceKey, routing_key: &str) -> bool {
    table.routes.iter().any(|r| match &r.source {
        Source::Amqp {
            link: l,
            exchange: Some(x),
            binding,
            binding_key,
            queue: None,
        } if l == link => {
            matches!(key, AmqpSourceKey::Exchange { exchange, binding_key: k } if exchange == x && Some(k) == binding_key.as_ref())
                && binding.as_ref().is_none_or(|p| p.matches(routing_key))
        }
        _ => false,
    })
}
