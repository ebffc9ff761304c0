//! Outbound: consume the link's core queue and publish each message to RabbitMQ with
//! publisher confirms and `mandatory` set. The core message is acked only after the
//! confirm; a nack or an unroutable return is retried (bounded, with backoff) and then
//! sent to the link's dead-letter queue, logged.
//!
//! The same channel consumes RabbitMQ's direct reply-to pseudo-queue: a message with an
//! internal `reply_to` goes out with `reply_to: amq.rabbitmq.reply-to` and a correlation
//! id of the router's making, and the reply that comes back with that id is routed to
//! the internal reply address, with the requester's own correlation id restored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ExchangeKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::convert::{self, Inbound, ReplyTo, short};
use super::link::LinkCtx;
use crate::core::{ConsumeOptions, Delivery, Destination, Message};
use crate::link::{LinkStatus, link_queue};
use crate::router::{LINK_TARGET_HEADER, reply_target};
use crate::routes::Rendered;
use crate::translate::loss::{self, Fields};
use crate::translate::trace;

const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Most requests awaiting a reply at once; the oldest is forgotten beyond it.
const MAX_PENDING_REPLIES: usize = 100_000;

static REPLY_SEQ: AtomicU64 = AtomicU64::new(1);

/// Runs the publisher until `stop`; any failure ends the session through `fail` (the
/// supervisor reconnects, and the unconfirmed messages are published again).
pub(super) async fn run(
    ctx: Arc<LinkCtx>,
    conn: Arc<Connection>,
    stop: CancellationToken,
    fail: mpsc::Sender<String>,
) {
    let mut p = match Publisher::open(&ctx, &conn).await {
        Ok(p) => p,
        Err(e) => {
            let _ = fail.send(format!("publisher: {e}")).await;
            return;
        }
    };
    if let Err(e) = p.run(&stop).await
        && !stop.is_cancelled()
    {
        let _ = fail.send(format!("publisher: {e}")).await;
    }
}

/// One message on its way to RabbitMQ.
struct Job {
    /// The core delivery to ack once the message is settled. `None` once it has been
    /// acked already: a publish RabbitMQ confirmed and then turned out to be the one a
    /// `basic.return` was about (see [`Publisher::step`]).
    d: Option<Delivery>,
    message: Arc<Message>,
    attempt: u32,
    key: PubKey,
    /// `amqp:LINK/EXCHANGE/ROUTING_KEY`, for logs and dead-letter headers.
    shown: String,
}

/// What identifies a publish in a `basic.return`: RabbitMQ returns the message itself,
/// and lapin may hand it to the confirm of another publish of the same batch (it pairs
/// returns with a multiple-ack's tags in no particular order), so the link pairs them
/// itself. Two messages alike in all of these are interchangeable for retrying.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PubKey {
    message_id: String,
    exchange: String,
    routing_key: String,
    body: u64,
}

impl PubKey {
    fn new(message_id: &str, exchange: &str, routing_key: &str, body: &[u8]) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        Self {
            message_id: message_id.to_owned(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            body: h.finish(),
        }
    }

    fn of_return(r: &lapin::message::BasicReturnMessage) -> Self {
        let id = r
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        Self::new(
            &id,
            r.delivery.exchange.as_str(),
            r.delivery.routing_key.as_str(),
            &r.delivery.data,
        )
    }
}

/// What a pending future yields back to the loop.
enum Step {
    Confirmed {
        job: Job,
        result: Box<lapin::Result<Confirmation>>,
    },
    Retry(Job),
}

struct Publisher<'a> {
    ctx: &'a LinkCtx,
    conn: &'a Connection,
    ch: Channel,
    replies: lapin::Consumer,
    consumer: crate::core::Consumer,
    pending: FuturesUnordered<BoxFuture<'static, Step>>,
    known_exchanges: HashSet<String>,
    probe: Option<Channel>,
    waiting: ReplyMap,
    /// Publishes awaiting their confirm, by identity.
    inflight: HashMap<PubKey, usize>,
    /// Returns seen for publishes whose confirm has not been handled yet.
    returned: HashMap<PubKey, Vec<String>>,
    /// The latest confirmed publishes, in case a return for one of them turns up on a
    /// later confirm of the same batch.
    recent: VecDeque<Job>,
}

impl<'a> Publisher<'a> {
    async fn open(ctx: &'a LinkCtx, conn: &'a Connection) -> Result<Self, String> {
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("open channel: {e}"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("confirm.select: {e}"))?;
        let replies = ch
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                format!("switchboard.{}.replies", ctx.settings.name)
                    .as_str()
                    .into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consume direct reply-to: {e}"))?;
        let consumer = ctx
            .router
            .core()
            .consume(
                &link_queue(&ctx.settings.name),
                ConsumeOptions::manual(ctx.settings.publish_window),
            )
            .map_err(|e| format!("consume the link queue: {e}"))?;
        Ok(Self {
            ctx,
            conn,
            ch,
            replies,
            consumer,
            pending: FuturesUnordered::new(),
            known_exchanges: HashSet::from([String::new()]),
            probe: None,
            waiting: ReplyMap::new(ctx.settings.reply_timeout),
            inflight: HashMap::new(),
            returned: HashMap::new(),
            recent: VecDeque::new(),
        })
    }

    async fn run(&mut self, stop: &CancellationToken) -> Result<(), String> {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                Some(step) = self.pending.next(), if !self.pending.is_empty() => {
                    self.step(step).await?;
                }
                reply = self.replies.next() => match reply {
                    Some(Ok(r)) => self.reply(r).await,
                    Some(Err(e)) => return Err(format!("direct reply-to: {e}")),
                    None => return Err("direct reply-to consumer cancelled".into()),
                },
                d = self.consumer.recv() => match d {
                    Some(d) => {
                        if d.redelivered {
                            // Left unconfirmed by a lost connection (or retried): RabbitMQ
                            // may already have it.
                            LinkStatus::bump(&self.ctx.status.counters.republished);
                        }
                        let message = Arc::clone(&d.message);
                        self.publish(Job {
                            d: Some(d),
                            message,
                            attempt: 1,
                            key: PubKey::new("", "", "", b""),
                            shown: String::new(),
                        })
                        .await?;
                    }
                    None => return Err("the link queue was closed".into()),
                },
            }
        }
    }

    async fn publish(&mut self, mut job: Job) -> Result<(), String> {
        let m = Arc::clone(&job.message);
        let target = m
            .headers
            .get(LINK_TARGET_HEADER)
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| {
                Some((
                    v.get("exchange")?.as_str()?.to_owned(),
                    v.get("routing_key")?.as_str()?.to_owned(),
                ))
            });
        let Some((exchange, routing_key)) = target else {
            let why = "no AMQP address on the message".to_owned();
            return self.dead_letter(job, "bad-target", why).await;
        };
        job.shown = format!("amqp:{}/{exchange}/{routing_key}", self.ctx.settings.name);
        let (Ok(x), Ok(rk)) = (
            short(&exchange, "exchange"),
            short(&routing_key, "routing key"),
        ) else {
            let why = "exchange or routing key over 255 bytes".to_owned();
            return self.dead_letter(job, "bad-target", why).await;
        };
        if !self.known_exchanges.contains(&exchange) {
            match self.exchange_exists(&exchange).await? {
                Ok(()) => {
                    self.known_exchanges.insert(exchange.clone());
                }
                Err(e) => return self.dead_letter(job, "no-exchange", e).await,
            }
        }
        let reply = match &m.reply_to {
            None => ReplyTo::None,
            Some(dest) => match reply_target(dest) {
                // A reply address of this very link: RabbitMQ's own queue name.
                Some(Rendered::Amqp {
                    link,
                    exchange,
                    routing_key,
                }) if link == self.ctx.settings.name && exchange.is_empty() => {
                    ReplyTo::Queue(routing_key)
                }
                _ => ReplyTo::Direct {
                    correlation_id: self.waiting.insert(dest.clone(), m.correlation_id.clone()),
                },
            },
        };
        let mut lost = Fields::default();
        let props = match convert::to_amqp(
            &m,
            reply,
            self.ctx.settings.username(),
            SystemTime::now(),
            |k| k == LINK_TARGET_HEADER,
            &mut lost,
        ) {
            Ok(p) => p,
            Err(e) => {
                if !lost.is_empty() {
                    loss::record(loss::Edge::Amqp, lost, m.loss);
                }
                return self.dead_letter(job, "untranslatable", e.to_string()).await;
            }
        };
        if !lost.is_empty() && job.attempt == 1 {
            loss::record(loss::Edge::Amqp, lost, m.loss);
        }
        let message_id = props
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        job.key = PubKey::new(&message_id, &exchange, &routing_key, &m.body);
        *self.inflight.entry(job.key.clone()).or_default() += 1;
        // lapin's publish future resolves once the io thread has written the frames;
        // awaiting each in turn would cost one hand-off per message. Instead: poll it
        // once here (that queues its frames, so publishes stay in order), then let it
        // finish, and its confirm arrive, among the pending ones.
        let ch = self.ch.clone();
        let body = m.body.clone();
        let mut publish: BoxFuture<'static, Step> = Box::pin(async move {
            let opts = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            let result = match ch.basic_publish(x, rk, opts, &body, props).await {
                Ok(confirm) => confirm.await,
                Err(e) => Err(e),
            };
            Step::Confirmed {
                job,
                result: Box::new(result),
            }
        });
        match futures::FutureExt::now_or_never(&mut publish) {
            Some(step) => self.pending.push(Box::pin(std::future::ready(step))),
            None => self.pending.push(publish),
        }
        Ok(())
    }

    async fn step(&mut self, step: Step) -> Result<(), String> {
        let (job, result) = match step {
            Step::Retry(job) => return self.publish(job).await,
            Step::Confirmed { job, result } => (job, result),
        };
        if let Some(n) = self.inflight.get_mut(&job.key) {
            *n -= 1;
            if *n == 0 {
                self.inflight.remove(&job.key);
            }
        }
        let (acked, returned) = match (*result).map_err(|e| format!("publisher confirm: {e}"))? {
            Confirmation::Ack(r) => (true, r),
            Confirmation::Nack(r) => (false, r),
            Confirmation::NotRequested => (true, None),
        };
        let mut own_failure =
            (!acked).then(|| ("nacked", "RabbitMQ nacked the publish".to_owned()));
        if let Some(r) = returned {
            let detail = format!("{} {}", r.reply_code, r.reply_text);
            let owner = PubKey::of_return(&r);
            if owner == job.key {
                own_failure = Some(("unroutable", detail));
            } else if self.inflight.contains_key(&owner) {
                // Its own confirm is still to come: fail it then.
                self.returned.entry(owner).or_default().push(detail);
            } else if let Some(i) = self.recent.iter().position(|j| j.key == owner) {
                // Already confirmed (and acked in the core): publish it again from here.
                // It was counted as published when its confirm came first; its return
                // came with a later confirm of the same batch: it was not published.
                if let Some(other) = self.recent.remove(i) {
                    self.ctx.status.unpublished(other.message.body.len());
                    self.failed(other, "unroutable", detail).await?;
                }
            } else {
                crate::rate_warn!(UNMATCHED_RETURN, exchange = %r.delivery.exchange, routing_key = %r.delivery.routing_key, "RabbitMQ returned a message that matches no recent publish");
            }
        }
        if own_failure.is_none()
            && let Some(details) = self.returned.get_mut(&job.key)
        {
            own_failure = details.pop().map(|d| ("unroutable", d));
            if details.is_empty() {
                self.returned.remove(&job.key);
            }
        }
        match own_failure {
            Some((reason, detail)) => self.failed(job, reason, detail).await,
            None => {
                let mut job = job;
                if let Some(d) = job.d.take() {
                    self.consumer.ack(d.tag);
                }
                self.ctx.status.published(job.message.body.len());
                self.recent.push_back(job);
                while self.recent.len() > 2 * self.ctx.settings.publish_window {
                    self.recent.pop_front();
                }
                Ok(())
            }
        }
    }

    /// A publish RabbitMQ nacked or returned: retry after a pause, or give up.
    async fn failed(&mut self, job: Job, reason: &str, detail: String) -> Result<(), String> {
        LinkStatus::bump(&self.ctx.status.counters.publish_failures);
        if job.attempt >= self.ctx.settings.publish_attempts {
            return self.dead_letter(job, reason, detail).await;
        }
        let delay = Duration::from_millis(100 << job.attempt.min(8));
        crate::rate_warn!(PUBLISH_RETRY, target = %job.shown, trace_id = trace::trace_id(&job.message.headers).map(tracing::field::display), reason, %detail, attempt = job.attempt, retry_in_ms = delay.as_millis() as u64, "AMQP publish failed; retrying");
        self.pending.push(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Step::Retry(Job {
                attempt: job.attempt + 1,
                ..job
            })
        }));
        Ok(())
    }

    /// Gives up on a message: a copy with `x-death-*` headers goes to the link's
    /// dead-letter queue, then the original is acked.
    async fn dead_letter(&mut self, job: Job, reason: &str, detail: String) -> Result<(), String> {
        let s = &self.ctx.settings;
        crate::rate_warn!(PUBLISH_GIVEN_UP, target = %job.shown, trace_id = trace::trace_id(&job.message.headers).map(tracing::field::display), reason, %detail, dead_letter = %s.dead_letter, "AMQP publish given up: message sent to the dead-letter queue");
        let mut m = (*job.message).clone();
        m.headers.remove(LINK_TARGET_HEADER);
        m.headers.set("x-death-reason", reason);
        m.headers.set("x-death-queue", link_queue(&s.name));
        m.headers.set("x-death-destination", job.shown.as_str());
        m.headers.set("x-death-deliveries", job.attempt.to_string());
        m.headers.set("x-death-detail", detail);
        m.expiry = None;
        let core = self.ctx.router.core();
        match core.publish(&Destination::queue(&s.dead_letter), m).await {
            Ok(_) => {
                if let Some(d) = &job.d {
                    self.consumer.ack(d.tag);
                }
                LinkStatus::bump(&self.ctx.status.counters.dead_lettered);
            }
            Err(e) => {
                // Keep it in the link queue rather than lose it.
                tracing::error!(error = %e, "cannot dead-letter; the message stays in the link queue");
                match &job.d {
                    Some(d) => {
                        self.consumer.nack(d.tag, true);
                    }
                    None => {
                        let _ = core
                            .publish_arc(&Destination::queue(&link_queue(&s.name)), job.message)
                            .await;
                    }
                }
            }
        }
        Ok(())
    }

    /// `Ok(Ok(()))` if the exchange exists, `Ok(Err(why))` if not; `Err` if the
    /// connection failed meanwhile. A failed passive declare closes its channel, so it
    /// runs on a probe channel of its own, never the publishing one.
    async fn exchange_exists(&mut self, name: &str) -> Result<Result<(), String>, String> {
        let ch = match &self.probe {
            Some(c) if c.status().connected() => c.clone(),
            _ => {
                let c = self
                    .conn
                    .create_channel()
                    .await
                    .map_err(|e| format!("open probe channel: {e}"))?;
                self.probe = Some(c.clone());
                c
            }
        };
        let opts = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        match ch
            .exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                opts,
                FieldTable::default(),
            )
            .await
        {
            Ok(()) => Ok(Ok(())),
            Err(_) if !self.conn.status().connected() => {
                Err("connection lost while checking an exchange".into())
            }
            Err(e) => {
                self.probe = None;
                Ok(Err(format!("exchange `{name}`: {e}")))
            }
        }
    }

    /// A reply through direct reply-to: route it to the requester.
    async fn reply(&mut self, r: lapin::message::Delivery) {
        let token = r
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let link = self.ctx.settings.name.clone();
        let exchange = r.exchange.to_string();
        let routing_key = r.routing_key.to_string();
        let inbound = Inbound {
            link: &link,
            exchange: &exchange,
            routing_key: &routing_key,
        };
        let mut m = match convert::from_amqp(&inbound, &r.properties, r.data, SystemTime::now()) {
            Ok(m) => m,
            Err(e) => {
                crate::rate_warn!(REPLY_LOST, error = %e, "cannot translate a reply; dropped (direct reply-to has no dead-lettering)");
                return;
            }
        };
        let core = self.ctx.router.core();
        match self.waiting.take(&token) {
            Some((dest, correlation)) => {
                m.correlation_id = correlation;
                let payload = m.body.len();
                match self.ctx.router.publish(dest.clone(), m).await {
                    Ok(_) => self.ctx.status.replied(payload),
                    Err(e) => {
                        crate::rate_warn!(REPLY_LOST, reply_to = %dest, error = %e, "cannot deliver a reply")
                    }
                }
            }
            None => {
                crate::rate_warn!(REPLY_UNMATCHED, correlation_id = %token, "a reply matches no waiting request (timed out or unknown): sent to the dead-letter queue");
                m.headers.set("x-death-reason", "unmatched-reply");
                m.headers.set("x-death-queue", DIRECT_REPLY_TO);
                let _ = core
                    .publish(&Destination::queue(&self.ctx.settings.dead_letter), m)
                    .await;
                LinkStatus::bump(&self.ctx.status.counters.dead_lettered);
            }
        }
    }
}

/// Requests waiting for a reply through direct reply-to, by the correlation id the
/// router gave them; bounded in number and age.
struct ReplyMap {
    by_token: HashMap<String, (Destination, Option<String>, Instant)>,
    order: VecDeque<(Instant, String)>,
    timeout: Duration,
}

impl ReplyMap {
    fn new(timeout: Duration) -> Self {
        Self {
            by_token: HashMap::new(),
            order: VecDeque::new(),
            timeout,
        }
    }

    fn insert(&mut self, dest: Destination, correlation: Option<String>) -> String {
        let now = Instant::now();
        while let Some((at, token)) = self.order.front() {
            let answered = !self.by_token.contains_key(token);
            let stale = now.duration_since(*at) >= self.timeout
                || self.by_token.len() >= MAX_PENDING_REPLIES;
            if !answered && !stale {
                break;
            }
            if !answered {
                crate::rate_info!(REPLY_TIMEOUT, correlation_id = %token, "a request got no reply in time; a late reply will be dead-lettered");
                self.by_token.remove(token);
            }
            self.order.pop_front();
        }
        let token = format!(
            "sb-{}-{}",
            std::process::id(),
            REPLY_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.by_token
            .insert(token.clone(), (dest, correlation, now));
        self.order.push_back((now, token.clone()));
        token
    }

    /// The request a reply is for, unless it waited longer than the timeout.
    fn take(&mut self, token: &str) -> Option<(Destination, Option<String>)> {
        let (dest, corr, at) = self.by_token.remove(token)?;
        (at.elapsed() < self.timeout).then_some((dest, corr))
    }
}

/// Per-message outcomes, counted and logged at most once a second (see
/// [`crate::ratelog`]).
static UNMATCHED_RETURN: crate::ratelog::Cause =
    crate::ratelog::Cause::new("amqp.unmatched_return");
static PUBLISH_RETRY: crate::ratelog::Cause = crate::ratelog::Cause::new("amqp.publish_retry");
static PUBLISH_GIVEN_UP: crate::ratelog::Cause =
    crate::ratelog::Cause::new("amqp.publish_given_up");
static REPLY_LOST: crate::ratelog::Cause = crate::ratelog::Cause::new("amqp.reply_lost");
static REPLY_UNMATCHED: crate::ratelog::Cause = crate::ratelog::Cause::new("amqp.reply_unmatched");
static REPLY_TIMEOUT: crate::ratelog::Cause = crate::ratelog::Cause::new("amqp.reply_timeout");
