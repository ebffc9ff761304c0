//! Declaring the exchanges, queues and bindings routes ask for (`declare:` in a route).
//!
//! Each route's declarations run on a channel of their own: RabbitMQ answers a
//! conflicting declaration (say, a queue that exists with other arguments) with
//! PRECONDITION_FAILED and closes the channel, and that must cost only that route.
//! Errors are logged with the route's name and kept in the link status.

use std::collections::BTreeMap;
use std::sync::Arc;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::{Connection, ExchangeKind};

use super::convert::arguments;
use super::link::LinkCtx;
use crate::routes::spec::{DeclareSpec, ExchangeType};

/// Declares every route's topology for this link; records failures per route.
/// Clustered, one router declares it per change ([`super::declared_once`]); a
/// declaration with an exclusive queue belongs to one connection, so every router
/// makes its own.
pub(super) async fn declare_all(ctx: &Arc<LinkCtx>, conn: &Connection) {
    let table = ctx.router.table();
    let specs: Vec<(&str, &DeclareSpec)> = table.amqp_declarations(&ctx.settings.name).collect();
    let per_connection = specs
        .iter()
        .any(|(_, s)| s.queues.iter().any(|q| q.exclusive));
    match ctx.router.core().link_records() {
        Some(records) if !specs.is_empty() && !per_connection => {
            super::declared_once::declare(ctx, conn, records.as_ref(), &specs).await;
        }
        _ => {
            declare_now(ctx, conn, &specs).await;
        }
    }
}

/// Declares `specs` now; records failures per route. True when all were declared.
pub(super) async fn declare_now(
    ctx: &LinkCtx,
    conn: &Connection,
    specs: &[(&str, &DeclareSpec)],
) -> bool {
    let mut errors = BTreeMap::new();
    let mut declared = 0;
    for (route, spec) in specs {
        match declare(conn, spec).await {
            Ok(()) => declared += 1,
            Err(e) => {
                tracing::error!(route, error = %e, "AMQP topology declaration failed; the route's other work goes on");
                errors.insert((*route).to_owned(), e);
            }
        }
    }
    if declared > 0 {
        tracing::info!(routes = declared, "AMQP topology declared");
    }
    let ok = errors.is_empty();
    ctx.status.set_topology(errors);
    ok
}

async fn declare(conn: &Connection, spec: &DeclareSpec) -> Result<(), String> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    let result = async {
        for x in &spec.exchanges {
            let kind = match x.kind {
                ExchangeType::Direct => ExchangeKind::Direct,
                ExchangeType::Fanout => ExchangeKind::Fanout,
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Headers => ExchangeKind::Headers,
            };
            let opts = ExchangeDeclareOptions {
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                ..ExchangeDeclareOptions::default()
            };
            ch.exchange_declare(x.name.as_str().into(), kind, opts, arguments(&x.arguments))
                .await
                .map_err(|e| format!("exchange `{}`: {e}", x.name))?;
        }
        for q in &spec.queues {
            let opts = QueueDeclareOptions {
                durable: q.durable,
                exclusive: q.exclusive,
                auto_delete: q.auto_delete,
                ..QueueDeclareOptions::default()
            };
            ch.queue_declare(q.name.as_str().into(), opts, arguments(&q.arguments))
                .await
                .map_err(|e| format!("queue `{}`: {e}", q.name))?;
        }
        for b in &spec.bindings {
            ch.queue_bind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                arguments(&b.arguments),
            )
            .await
            .map_err(|e| {
                format!(
                    "binding `{}` → `{}` key `{}`: {e}",
                    b.exchange, b.queue, b.routing_key
                )
            })?;
        }
        Ok(())
    }
    .await;
    if ch.status().connected() {
        let _ = ch.close(200, "declared".into()).await;
    }
    result
}
