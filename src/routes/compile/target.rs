//! A route's `to:` and `transform:`: target names and header values as templates over
//! the source's captures, each checked to render a valid name for its protocol.

use serde_saphyr::{Location, Spanned};

use super::{Compiler, LinkKind};
use crate::core::validate_name;
use crate::routes::spec::{TargetSpec, TransformSpec};
use crate::routes::template::Template;
use crate::routes::{Target, Transform};
use crate::translate::mqtt_names;

impl Compiler<'_> {
    fn template(
        &mut self,
        file: &str,
        at: Location,
        route: &str,
        text: &str,
        captures: usize,
    ) -> Option<Template> {
        let t = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => {
                self.err(file, at, route, e);
                return None;
            }
        };
        if t.max_capture() > captures {
            let msg = format!(
                "template `{text}` uses {{{}}} but the source pattern has {captures} wildcard{}",
                t.max_capture(),
                if captures == 1 { "" } else { "s" }
            );
            self.err(file, at, route, msg);
            return None;
        }
        Some(t)
    }

    /// Checks that a name template renders to a valid name: literal templates exactly,
    /// templates with captures with a placeholder in each capture.
    fn check_name(
        &mut self,
        file: &str,
        at: Location,
        route: &str,
        t: &Template,
        what: &str,
    ) -> bool {
        let probe = t.probe();
        match validate_name(&probe) {
            Ok(()) => true,
            Err(e) => {
                self.err(
                    file,
                    at,
                    route,
                    format!("invalid {what} `{}`: {e}", t.as_str()),
                );
                false
            }
        }
    }

    /// An internal queue target (`queue:`, or a STOMP `/queue/…`).
    fn queue_target(
        &mut self,
        file: &str,
        at: Location,
        route: &str,
        q: &str,
        captures: usize,
    ) -> Option<Target> {
        let tpl = self.template(file, at, route, q, captures)?;
        if !self.check_name(file, at, route, &tpl, "queue name") {
            return None;
        }
        if tpl.is_literal() {
            self.check_queue_known(file, at, route, q);
        }
        Some(Target::Queue(tpl))
    }

    /// An internal topic target (`topic:`, or a STOMP `/topic/…`).
    fn topic_target(
        &mut self,
        file: &str,
        at: Location,
        route: &str,
        n: &str,
        captures: usize,
    ) -> Option<Target> {
        let tpl = self.template(file, at, route, n, captures)?;
        self.check_name(file, at, route, &tpl, "topic name")
            .then_some(Target::Topic(tpl))
    }

    pub(super) fn target(
        &mut self,
        file: &str,
        route: &str,
        t: &Spanned<TargetSpec>,
        captures: usize,
    ) -> Option<Target> {
        let at = t.referenced;
        match &t.value {
            TargetSpec::Queue(q) => self.queue_target(file, at, route, q, captures),
            TargetSpec::Topic(n) => self.topic_target(file, at, route, n, captures),
            TargetSpec::Stomp(d) => {
                if let Some(q) = d.strip_prefix("/queue/") {
                    self.queue_target(file, at, route, q, captures)
                } else if let Some(n) = d.strip_prefix("/topic/") {
                    self.topic_target(file, at, route, n, captures)
                } else {
                    self.err(
                        file,
                        at,
                        route,
                        format!("STOMP target `{d}` must start with /queue/ or /topic/"),
                    );
                    None
                }
            }
            TargetSpec::Mqtt(topic) => {
                let tpl = self.template(file, at, route, topic, captures)?;
                let probe = tpl.probe();
                if let Err(e) = mqtt_names::validate_topic(&probe) {
                    self.err(file, at, route, e);
                    return None;
                }
                Some(Target::Mqtt(tpl))
            }
            TargetSpec::Amqp(a) => {
                let mut link_ok = self.check_link(file, at, route, &a.link, LinkKind::Amqp);
                if a.exchange.len() > 255 {
                    let msg = format!(
                        "exchange `{}` is longer than AMQP's 255-byte limit",
                        a.exchange
                    );
                    self.err(file, at, route, msg);
                    link_ok = false;
                }
                let rk = match &a.routing_key {
                    Some(k) => Some(self.template(file, at, route, k, captures)?),
                    None => None,
                };
                link_ok.then(|| Target::Amqp {
                    link: a.link.clone(),
                    exchange: a.exchange.clone(),
                    routing_key: rk,
                })
            }
            TargetSpec::Xmpp(x) => {
                let link_ok = self.check_link(file, at, route, &x.link, LinkKind::Xmpp);
                let to = match (&x.to, &x.pubsub) {
                    (Some(to), None) => to,
                    (None, Some(p)) => {
                        if x.from.is_some() || x.kind.is_some() {
                            self.err(file, at, route, "a pubsub target takes no `from` or `type`: the item is published by the link");
                            return None;
                        }
                        self.pubsub_node(file, at, route, &p.service, &p.node)?;
                        let node = self.template(file, at, route, &p.node, captures)?;
                        let item_id = match &p.item_id {
                            Some(i) => Some(self.template(file, at, route, i, captures)?),
                            None => None,
                        };
                        return link_ok.then(|| Target::XmppPubsub {
                            link: x.link.clone(),
                            service: p.service.clone(),
                            node,
                            item_id,
                            create: p.create,
                        });
                    }
                    _ => {
                        self.err(
                            file,
                            at,
                            route,
                            "an xmpp target takes either `to` or `pubsub`",
                        );
                        return None;
                    }
                };
                let to = self.template(file, at, route, to, captures)?;
                let from = match &x.from {
                    Some(f) => Some(self.template(file, at, route, f, captures)?),
                    None => None,
                };
                let kind = x.kind.clone().unwrap_or_else(|| "chat".into());
                if !matches!(kind.as_str(), "chat" | "normal" | "headline" | "groupchat") {
                    self.err(
                        file,
                        at,
                        route,
                        format!(
                            "unknown XMPP message type `{kind}` (chat, normal, headline, groupchat)"
                        ),
                    );
                    return None;
                }
                link_ok.then(|| Target::Xmpp {
                    link: x.link.clone(),
                    to,
                    from,
                    kind,
                })
            }
        }
    }

    pub(super) fn transform(
        &mut self,
        file: &str,
        route: &str,
        t: &Spanned<TransformSpec>,
        captures: usize,
    ) -> Transform {
        let at = t.referenced;
        let mut out = Transform {
            rename: t
                .value
                .rename_headers
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            remove: t.value.remove_headers.clone(),
            body: t.value.body,
            jq: self.jq_transform(file, route, t),
            ..Transform::default()
        };
        for (k, v) in &t.value.set_headers {
            if let Some(tpl) = self.template(file, at, route, v, captures) {
                out.set.push((k.clone(), tpl));
            }
        }
        out
    }
}
