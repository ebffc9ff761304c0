//! Inbound: consume an AMQP queue (or a private queue bound to an exchange) and route
//! each message into the core; ack to RabbitMQ only once the core has it.
//!
//! Messages are handled one at a time per source, so their order is kept; RabbitMQ
//! keeps `prefetch` messages in flight to us meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use lapin::Acker;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::convert::{self, Inbound};
use super::link::LinkCtx;
use crate::link::{Backoff, LinkStatus};
use crate::router::RouterError;
use crate::routes::AmqpSourceKey;

static CONSUMER_SEQ: AtomicU64 = AtomicU64::new(1);

/// Runs one source's consumer until `stop`; consumer-level failures (a missing queue, a
/// channel RabbitMQ closed) are retried with backoff, connection-level ones end the
/// session through `fail`.
pub(super) async fn run(
    ctx: Arc<LinkCtx>,
    conn: Arc<Connection>,
    key: AmqpSourceKey,
    stop: CancellationToken,
    fail: mpsc::Sender<String>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let result = consume(&ctx, &conn, &key, &stop).await;
        if stop.is_cancelled() {
            return;
        }
        let e = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        if !conn.status().connected() {
            let _ = fail.send(format!("consumer of {key}: {e}")).await;
            return;
        }
        tracing::warn!(error = %e, "AMQP consumer failed; retrying");
        ctx.status.set_error(format!("consumer of {key}: {e}"));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn consume(
    ctx: &LinkCtx,
    conn: &Connection,
    key: &AmqpSourceKey,
    stop: &CancellationToken,
) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: lapin::Error| format!("{what}: {err}")
    };
    let ch = conn.create_channel().await.map_err(e("open channel"))?;
    ch.basic_qos(ctx.settings.prefetch, BasicQosOptions::default())
        .await
        .map_err(e("basic.qos"))?;
    let queue = match key {
        AmqpSourceKey::Queue(q) => q.clone(),
        AmqpSourceKey::Exchange {
            exchange,
            binding_key,
        } => {
            // A private queue: exists while we consume, like a topic subscription.
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(e("declare private queue"))?;
            ch.queue_bind(
                q.name().clone(),
                exchange.as_str().into(),
                binding_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(e("bind private queue"))?;
            q.name().to_string()
        }
    };
    let tag = format!(
        "switchboard.{}.{}",
        ctx.settings.name,
        CONSUMER_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(e("basic.consume"))?;
    tracing::info!(queue, "AMQP consumer started");
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            d = consumer.next() => d,
        };
        // Handle this delivery and every one already waiting, then ack them together
        // (`multiple`): one frame instead of one per message, once they are all durable
        // (their store writes share fsyncs).
        let mut pending = Pending::default();
        let mut next = next;
        loop {
            match next {
                None => return Err("the consumer was cancelled by RabbitMQ".into()),
                Some(Err(err)) => return Err(format!("delivery: {err}")),
                Some(Ok(d)) => handle(ctx, key, d, &mut pending).await?,
            }
            match futures::FutureExt::now_or_never(consumer.next()) {
                Some(n) => next = n,
                None => break,
            }
        }
        flush(&mut pending).await?;
    }
    // Everything handled is settled (flushed above), so closing loses nothing.
    let _ = ch.close(200, "route removed".into()).await;
    tracing::info!(queue, "AMQP consumer stopped");
    Ok(())
}

/// Accepted deliveries not yet acked: the last one's acker (acks cover every earlier
/// one) and what must be durable first.
#[derive(Default)]
struct Pending {
    acker: Option<Acker>,
    confirmation: crate::core::Confirmation,
}

/// Acks everything up to the last accepted delivery once it is all durable. When the
/// store refused (disk full), everything pending goes back to RabbitMQ instead.
async fn flush(pending: &mut Pending) -> Result<(), String> {
    let confirmation = std::mem::take(&mut pending.confirmation);
    let Some(a) = pending.acker.take() else {
        return Ok(());
    };
    match confirmation.wait().await {
        Ok(()) => a
            .ack(BasicAckOptions { multiple: true })
            .await
            .map(drop)
            .map_err(|e| format!("ack: {e}")),
        Err(err) => {
            crate::rate_warn!(CORE_REFUSED, reason = %err, "the core could not store the messages: requeued in RabbitMQ");
            tokio::time::sleep(Duration::from_secs(1)).await;
            a.nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await
            .map(drop)
            .map_err(|e| format!("nack: {e}"))
        }
    }
}

/// Routes one delivery. An accepted one is left in `pending` to be acked with the
/// next flush; a refused one is settled at once (after flushing, so `multiple` acks
/// never cover it).
async fn handle(
    ctx: &LinkCtx,
    key: &AmqpSourceKey,
    d: Delivery,
    pending: &mut Pending,
) -> Result<(), String> {
    let c = &ctx.status.counters;
    let link = ctx.settings.name.as_str();
    if d.redelivered {
        LinkStatus::bump(&c.redelivered);
        tracing::debug!(
            delivery_tag = d.delivery_tag,
            "redelivered by RabbitMQ: may be a duplicate"
        );
    }
    let routing_key = d.routing_key.to_string();
    let exchange = d.exchange.to_string();
    let acker = d.acker;
    let payload = d.data.len();
    let message = convert::from_amqp(
        &Inbound {
            link,
            exchange: &exchange,
            routing_key: &routing_key,
        },
        &d.properties,
        d.data,
        SystemTime::now(),
    );
    let routed = match message {
        Ok(m) => Ok(ctx
            .router
            .publish_from_amqp_unconfirmed(link, key, &routing_key, m)
            .await),
        Err(e) => Err(e),
    };
    let routed = match routed {
        Ok(Ok(Some((n, confirmation)))) if n > 0 => {
            ctx.status.received(payload);
            pending.acker = Some(acker);
            pending.confirmation.extend(confirmation);
            return Ok(());
        }
        Ok(Ok(Some((n, _)))) => Ok(Ok(Some(n))),
        Ok(Ok(None)) => Ok(Ok(None)),
        Ok(Err(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    };
    flush(pending).await?;
    let routed = match routed {
        Ok(r) => r,
        Err(err) => {
            LinkStatus::bump(&c.rejected);
            crate::rate_warn!(UNTRANSLATABLE, %exchange, %routing_key, reason = %err, "cannot translate the AMQP message: rejected without requeue (RabbitMQ dead-letters it if the queue has a dead-letter exchange)");
            return reject(&acker).await;
        }
    };
    match routed {
        Ok(Some(0)) => {
            LinkStatus::bump(&c.rejected);
            crate::rate_info!(FILTERED, %exchange, %routing_key, "no route's filter accepted the message: rejected without requeue");
            reject(&acker).await
        }
        // Accepted deliveries were parked in `pending` above.
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            // A reload removed the route between delivery and now: give it back.
            requeue(&acker).await
        }
        Err(RouterError::Routing(err)) => {
            LinkStatus::bump(&c.rejected);
            crate::rate_warn!(UNTRANSLATABLE, %exchange, %routing_key, reason = %err, "the route cannot translate the message: rejected without requeue");
            reject(&acker).await
        }
        Err(RouterError::Publish(err)) => {
            // The destination refused it for now (full, or gone): leave it in RabbitMQ
            // and slow down rather than drop it.
            crate::rate_warn!(CORE_REFUSED, %exchange, %routing_key, reason = %err, "the core refused the message: requeued in RabbitMQ");
            tokio::time::sleep(Duration::from_secs(1)).await;
            requeue(&acker).await
        }
    }
}

/// Gives a delivery back to RabbitMQ, to be delivered again.
async fn requeue(acker: &Acker) -> Result<(), String> {
    settled(
        acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await,
    )
}

/// Refuses a delivery for good (RabbitMQ dead-letters it if its queue has a
/// dead-letter exchange).
async fn reject(acker: &Acker) -> Result<(), String> {
    settled(acker.reject(BasicRejectOptions { requeue: false }).await)
}

fn settled(r: lapin::Result<bool>) -> Result<(), String> {
    r.map(drop).map_err(|e| format!("settle: {e}"))
}

/// Messages refused on the way in, counted and logged at most once a second (see
/// [`crate::ratelog`]).
static UNTRANSLATABLE: crate::ratelog::Cause = crate::ratelog::Cause::new("amqp.in_untranslatable");
static FILTERED: crate::ratelog::Cause = crate::ratelog::Cause::new("amqp.in_no_route");
static CORE_REFUSED: crate::ratelog::Cause = crate::ratelog::Cause::new("amqp.in_requeued");
