//! A route's `from:`: the queue, topic pattern or link source it takes messages from,
//! compiled into a [`Source`] whose wildcards give the captures its targets may use.

use serde_saphyr::Spanned;

use super::{Compiler, LinkKind};
use crate::core::{Pattern, validate_name};
use crate::routes::jid_pattern::JidPattern;
use crate::routes::spec::SourceSpec;
use crate::routes::{PUBSUB_MAX_ITEMS, PubsubNode, PubsubRead, Source};
use crate::translate::{mqtt_names, stomp_names};

impl Compiler<'_> {
    pub(super) fn source(
        &mut self,
        file: &str,
        route: &str,
        from: &Spanned<SourceSpec>,
    ) -> Option<Source> {
        let at = from.referenced;
        let pattern = |this: &mut Self, text: &str, what: &str| -> Option<Pattern> {
            match Pattern::parse(text) {
                Ok(p) => Some(p),
                Err(e) => {
                    this.err(file, at, route, format!("invalid {what} `{text}`: {e}"));
                    None
                }
            }
        };
        match &from.value {
            SourceSpec::Queue(q) => {
                if let Err(e) = validate_name(q) {
                    self.err(file, at, route, format!("invalid queue name `{q}`: {e}"));
                    return None;
                }
                self.check_queue_known(file, at, route, q);
                Some(Source::Queue(q.clone()))
            }
            SourceSpec::Topic(t) => pattern(self, t, "topic pattern").map(Source::Topic),
            SourceSpec::Stomp(d) => match stomp_names::parse(d, true) {
                Ok(stomp_names::StompDest::Queue(q)) => {
                    self.check_queue_known(file, at, route, &q);
                    Some(Source::Queue(q))
                }
                Ok(stomp_names::StompDest::Topic(t)) => {
                    pattern(self, &t, "topic pattern").map(Source::Topic)
                }
                Ok(stomp_names::StompDest::TempQueue(_)) => {
                    self.err(file, at, route, format!("`{d}`: temporary queues are private to a connection and cannot be a route source"));
                    None
                }
                Err(e) => {
                    self.err(file, at, route, e.to_string());
                    None
                }
            },
            SourceSpec::Mqtt(f) => {
                if let Err(e) = mqtt_names::validate_filter(f) {
                    self.err(file, at, route, e);
                    return None;
                }
                pattern(self, &mqtt_names::filter_to_internal(f), "topic pattern")
                    .map(Source::Topic)
            }
            SourceSpec::Amqp(a) => {
                let mut link_ok = self.check_link(file, at, route, &a.link, LinkKind::Amqp);
                for n in [&a.queue, &a.exchange, &a.binding_key]
                    .into_iter()
                    .flatten()
                {
                    if n.len() > 255 {
                        self.err(
                            file,
                            at,
                            route,
                            format!("`{n}` is longer than AMQP's 255-byte limit"),
                        );
                        link_ok = false;
                    }
                }
                match (&a.queue, &a.exchange) {
                    (Some(_), Some(_)) | (None, None) => {
                        self.err(file, at, route, "an amqp source takes either `queue` or `exchange` (with `binding_key`)");
                        None
                    }
                    (None, Some(x)) if x.is_empty() => {
                        self.err(file, at, route, "the default exchange (`\"\"`) cannot be bound: consume a queue instead");
                        None
                    }
                    _ if !link_ok => None,
                    _ => {
                        // A binding key is an AMQP topic pattern, the same grammar as
                        // ours, so its wildcards give captures for the targets.
                        let binding = match (&a.exchange, &a.binding_key) {
                            (Some(_), Some(k)) => pattern(self, k, "binding key"),
                            _ => None,
                        };
                        Some(Source::Amqp {
                            link: a.link.clone(),
                            queue: a.queue.clone(),
                            exchange: a.exchange.clone(),
                            binding_key: a.binding_key.clone(),
                            binding,
                        })
                    }
                }
            }
            SourceSpec::Xmpp(x) => {
                let link_ok = self.check_link(file, at, route, &x.link, LinkKind::Xmpp);
                let given = [x.jid.is_some(), x.presence.is_some(), x.pubsub.is_some()];
                if given.iter().filter(|g| **g).count() != 1 {
                    self.err(
                        file,
                        at,
                        route,
                        "an xmpp source takes one of `jid`, `presence` and `pubsub`",
                    );
                    return None;
                }
                if let Some(p) = &x.pubsub {
                    let node = self.pubsub_node(file, at, route, &p.service, &p.node)?;
                    if p.catch_up > PUBSUB_MAX_ITEMS {
                        let msg = format!("pubsub `catch_up` is at most {PUBSUB_MAX_ITEMS}");
                        self.err(file, at, route, msg);
                        return None;
                    }
                    return link_ok.then(|| Source::Xmpp {
                        link: x.link.clone(),
                        jid: None,
                        presence: None,
                        jid_pattern: None,
                        pubsub: Some(PubsubRead {
                            node,
                            catch_up: p.catch_up,
                            retractions: p.retractions,
                        }),
                    });
                }
                if !link_ok {
                    return None;
                }
                let text = x.jid.as_deref().or(x.presence.as_deref());
                let jid_pattern = match text.map(JidPattern::parse) {
                    Some(Ok(p)) => Some(p),
                    Some(Err(e)) => {
                        let msg = format!("invalid JID pattern `{}`: {e}", text.unwrap_or(""));
                        self.err(file, at, route, msg);
                        return None;
                    }
                    None => None,
                };
                Some(Source::Xmpp {
                    link: x.link.clone(),
                    jid: x.jid.clone(),
                    presence: x.presence.clone(),
                    jid_pattern,
                    pubsub: None,
                })
            }
        }
    }

    /// A PubSub source's node: the service must be a JID (a domain, or a user's bare
    /// JID for PEP) and the node a non-empty name.
    pub(super) fn pubsub_node(
        &mut self,
        file: &str,
        at: serde_saphyr::Location,
        route: &str,
        service: &str,
        node: &str,
    ) -> Option<PubsubNode> {
        match service.parse::<xmpp_parsers::jid::Jid>() {
            Ok(j) if j.resource().is_none() => {}
            Ok(_) => {
                let msg = format!("pubsub service `{service}` must be a bare JID (no resource)");
                self.err(file, at, route, msg);
                return None;
            }
            Err(e) => {
                let msg = format!("invalid pubsub service JID `{service}`: {e}");
                self.err(file, at, route, msg);
                return None;
            }
        }
        if node.is_empty() {
            self.err(file, at, route, "a pubsub node name cannot be empty");
            return None;
        }
        Some(PubsubNode {
            // As the link reads it from an event's `from` (a domain in lowercase).
            service: service
                .parse::<xmpp_parsers::jid::Jid>()
                .map_or_else(|_| service.to_owned(), |j| j.to_string()),
            node: node.to_owned(),
        })
    }
}

/// The source as written, for `explain` and logs.
pub(super) fn describe_source(s: &SourceSpec) -> String {
    match s {
        SourceSpec::Queue(q) => format!("queue {q}"),
        SourceSpec::Topic(t) => format!("topic {t}"),
        SourceSpec::Stomp(d) => format!("stomp {d}"),
        SourceSpec::Mqtt(f) => format!("mqtt {f}"),
        SourceSpec::Amqp(a) => match (&a.queue, &a.exchange) {
            (Some(q), _) => format!("amqp {} queue {q}", a.link),
            (_, Some(x)) => format!(
                "amqp {} exchange {x} key {}",
                a.link,
                a.binding_key.as_deref().unwrap_or("#")
            ),
            _ => format!("amqp {}", a.link),
        },
        SourceSpec::Xmpp(x) => match (&x.jid, &x.presence, &x.pubsub) {
            (_, _, Some(p)) => format!("xmpp {} pubsub {} node {}", x.link, p.service, p.node),
            (Some(j), _, _) => format!("xmpp {} jid {j}", x.link),
            (_, Some(p), _) => format!("xmpp {} presence {p}", x.link),
            _ => format!("xmpp {}", x.link),
        },
    }
}
