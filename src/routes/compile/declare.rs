//! A route's `declare:` block: the AMQP exchanges, queues and bindings it asks a link to
//! declare, checked against what RabbitMQ accepts before anything is sent.

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::Spanned;

use super::{Compiler, LinkKind};
use crate::routes::spec::DeclareSpec;
use crate::routes::{Declare, Source, Target};

impl Compiler<'_> {
    /// Validates a route's AMQP declarations and settles which link they are for.
    pub(super) fn declare(
        &mut self,
        file: &str,
        route: &str,
        d: &Spanned<DeclareSpec>,
        source: &Option<Source>,
        targets: &[Target],
    ) -> Option<Declare> {
        let at = d.referenced;
        let spec = &d.value;
        let link = match &spec.link {
            Some(l) => {
                if !self.check_link(file, at, route, l, LinkKind::Amqp) {
                    return None;
                }
                l.clone()
            }
            None => {
                let mut used: BTreeSet<&str> = targets
                    .iter()
                    .filter_map(|t| match t {
                        Target::Amqp { link, .. } => Some(link.as_str()),
                        _ => None,
                    })
                    .collect();
                if let Some(Source::Amqp { link, .. }) = source {
                    used.insert(link);
                }
                if used.len() != 1 {
                    self.err(
                        file,
                        at,
                        route,
                        "`declare` needs `link:` unless the route uses exactly one AMQP link",
                    );
                    return None;
                }
                used.into_iter().next().unwrap_or_default().to_owned()
            }
        };
        let mut ok = true;
        let mut check_args =
            |this: &mut Self, what: &str, args: &BTreeMap<String, serde_json::Value>| {
                for (k, v) in args {
                    if v.is_array() || v.is_object() || v.is_null() {
                        this.err(file, at, route, format!("{what} argument `{k}`: only strings, numbers and booleans are supported"));
                        ok = false;
                    }
                }
            };
        for x in &spec.exchanges {
            check_args(self, &format!("exchange `{}`", x.name), &x.arguments);
        }
        for q in &spec.queues {
            check_args(self, &format!("queue `{}`", q.name), &q.arguments);
        }
        for b in &spec.bindings {
            check_args(
                self,
                &format!("binding `{}`→`{}`", b.exchange, b.queue),
                &b.arguments,
            );
        }
        let names = spec
            .exchanges
            .iter()
            .flat_map(|x| std::iter::once(&x.name).chain(x.arguments.keys()))
            .chain(
                spec.queues
                    .iter()
                    .flat_map(|q| std::iter::once(&q.name).chain(q.arguments.keys())),
            )
            .chain(spec.bindings.iter().flat_map(|b| {
                [&b.exchange, &b.queue, &b.routing_key]
                    .into_iter()
                    .chain(b.arguments.keys())
            }));
        let long: Vec<String> = names.filter(|n| n.len() > 255).cloned().collect();
        for n in long {
            self.err(
                file,
                at,
                route,
                format!("`{n}` is longer than AMQP's 255-byte limit"),
            );
            ok = false;
        }
        for x in &spec.exchanges {
            if x.name.is_empty() || x.name.starts_with("amq.") {
                self.err(file, at, route, format!("cannot declare exchange `{}`: the default exchange and names starting `amq.` belong to RabbitMQ", x.name));
                ok = false;
            }
        }
        for q in &spec.queues {
            if q.name.is_empty() || q.name.starts_with("amq.") {
                self.err(
                    file,
                    at,
                    route,
                    format!(
                        "cannot declare queue `{}`: give it a name that does not start with `amq.`",
                        q.name
                    ),
                );
                ok = false;
            }
        }
        for b in &spec.bindings {
            if b.exchange.is_empty() {
                self.err(
                    file,
                    at,
                    route,
                    format!(
                        "binding of `{}`: the default exchange cannot be bound",
                        b.queue
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| Declare {
            link,
            spec: spec.clone(),
        })
    }
}
