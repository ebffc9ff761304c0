//! Inbound: consume an AMQP queue (or a private queue bound to an exchange) and route
//! each message into the core; ack to RabbitMQ only once the core has it.
//!
//! Messages are handled one at a time per source, so their order is kept; RabbitMQ
//! keeps `prefetch` messages in flight to us meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
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
    // Accepted deliveries are acked together (`multiple`: one frame for many) once
    // their store writes are durable. One batch waits for its fsync while the next is
    // handled and gathered (group commit): the consumer never stops to wait for the
    // disk, and each fsync covers everything that arrived during the one before.
    let mut gathering = Pending::default();
    let mut acking: Option<BoxFuture<'static, Result<(), String>>> = None;
    'consume: loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = async { acking.as_mut().expect("guarded").await }, if acking.is_some() => {
                r?;
                acking = gathering.start_acking();
                continue;
            }
            d = consumer.next() => d,
        };
        let mut next = next;
        loop {
            let d = match next {
                None => return Err("the consumer was cancelled by RabbitMQ".into()),
                Some(Err(err)) => return Err(format!("delivery: {err}")),
                Some(Ok(d)) => d,
            };
            let acker = d.acker.clone();
            let mut handling = std::pin::pin!(handle(ctx, key, d));
            let outcome = match futures::poll!(handling.as_mut()) {
                std::task::Poll::Ready(o) => o,
                std::task::Poll::Pending => {
                    // This delivery waits (a full or paced destination) for as long as
                    // that lasts: what came before it is acked meanwhile. Stopping
                    // abandons it unacked; RabbitMQ delivers it again when the channel
                    // closes.
                    if acking.is_none() {
                        acking = gathering.start_acking();
                    }
                    loop {
                        tokio::select! {
                            biased;
                            _ = stop.cancelled() => break 'consume,
                            r = async { acking.as_mut().expect("guarded").await }, if acking.is_some() => {
                                r?;
                                acking = gathering.start_acking();
                            }
                            o = handling.as_mut() => break o,
                        }
                    }
                }
            };
            match outcome {
                Outcome::Accepted(confirmation) => {
                    gathering.acker = Some(acker);
                    gathering.confirmation.extend(confirmation);
                }
                Outcome::Refused(how) => {
                    // Settled on its own, after everything before it, so that no
                    // `multiple` ack covers it.
                    if let Some(a) = acking.take() {
                        a.await?;
                    }
                    ack_when_durable(std::mem::take(&mut gathering)).await?;
                    settle(&acker, how).await?;
                }
            }
            match futures::FutureExt::now_or_never(consumer.next()) {
                Some(n) => next = n,
                None => break,
            }
        }
        if acking.is_none() {
            acking = gathering.start_acking();
        }
    }
    // Settle everything handled, so closing loses nothing.
    if let Some(a) = acking.take() {
        a.await?;
    }
    ack_when_durable(gathering).await?;
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

impl Pending {
    /// The ack of everything gathered, once durable, as a future of its own; `None`
    /// when nothing was gathered.
    fn start_acking(&mut self) -> Option<BoxFuture<'static, Result<(), String>>> {
        self.acker.as_ref()?;
        Some(Box::pin(ack_when_durable(std::mem::take(self))))
    }
}

/// What became of one delivery.
enum Outcome {
    /// The core took it: ack it once this is durable.
    Accepted(crate::core::Confirmation),
    /// The core did not: settle it on its own.
    Refused(Refused),
}

/// Acks everything up to the last accepted delivery once it is all durable. When the
/// store refused (disk full), everything pending goes back to RabbitMQ instead.
async fn ack_when_durable(pending: Pending) -> Result<(), String> {
    let Some(a) = pending.acker else {
        return Ok(());
    };
    match pending.confirmation.wait().await {
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

/// How a delivery the core did not take is settled.
enum Refused {
    /// For good (RabbitMQ dead-letters it if its queue has a dead-letter exchange).
    Reject,
    /// Given back at once, to be delivered again (a reload removed its route).
    Requeue,
    /// Given back after a pause: the destination refused it for now.
    RequeueLater,
}

async fn settle(acker: &Acker, how: Refused) -> Result<(), String> {
    match how {
        Refused::Reject => reject(acker).await,
        Refused::Requeue => requeue(acker).await,
        Refused::RequeueLater => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            requeue(acker).await
        }
    }
}

/// Routes one delivery.
async fn handle(ctx: &LinkCtx, key: &AmqpSourceKey, d: Delivery) -> Outcome {
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
    let payload = d.data.len();
    let message = match convert::from_amqp(
        &Inbound {
            link,
            exchange: &exchange,
            routing_key: &routing_key,
        },
        &d.properties,
        d.data,
        SystemTime::now(),
    ) {
        Ok(m) => m,
        Err(err) => {
            LinkStatus::bump(&c.rejected);
            crate::rate_warn!(UNTRANSLATABLE, %exchange, %routing_key, reason = %err, "cannot translate the AMQP message: rejected without requeue (RabbitMQ dead-letters it if the queue has a dead-letter exchange)");
            return Outcome::Refused(Refused::Reject);
        }
    };
    let routed = ctx
        .router
        .publish_from_amqp_unconfirmed(link, key, &routing_key, message)
        .await;
    match routed {
        Ok(Some((n, confirmation))) if n > 0 => {
            ctx.status.received(payload);
            Outcome::Accepted(confirmation)
        }
        Ok(Some(_)) => {
            LinkStatus::bump(&c.rejected);
            crate::rate_info!(FILTERED, %exchange, %routing_key, "no route's filter accepted the message: rejected without requeue");
            Outcome::Refused(Refused::Reject)
        }
        // A reload removed the route between delivery and now: give it back.
        Ok(None) => Outcome::Refused(Refused::Requeue),
        Err(RouterError::Routing(err)) => {
            LinkStatus::bump(&c.rejected);
            crate::rate_warn!(UNTRANSLATABLE, %exchange, %routing_key, reason = %err, "the route cannot translate the message: rejected without requeue");
            Outcome::Refused(Refused::Reject)
        }
        Err(RouterError::Publish(err)) => {
            // The destination refused it for now (full, or gone): leave it in RabbitMQ
            // and slow down rather than drop it.
            crate::rate_warn!(CORE_REFUSED, %exchange, %routing_key, reason = %err, "the core refused the message: requeued in RabbitMQ");
            Outcome::Refused(Refused::RequeueLater)
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
