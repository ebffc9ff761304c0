//! SUBSCRIBE and UNSUBSCRIBE: queues, topics, durable subscriptions.

use std::sync::Arc;

use super::connection::Connection;
use super::fatal::{Fatal, fatal};
use super::headers::{durable_header, header, invalid_header};
use super::transport::Transport;
use crate::auth::Kind;
use crate::core::{ConsumeOptions, Consumer, Pattern};
use crate::listener::stomp::frame::{Frame, Version};
use crate::translate::stomp_names::{self, StompDest, durable_queue};

/// How the client acknowledges a subscription's deliveries: its `ack` header. Not the
/// core's `AckMode` (how the session consumes the queue): a SUBSCRIBE with `ack:auto`
/// still consumes in manual mode, to check read rights first (see `on_subscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckPolicy {
    /// `auto`: a delivery is done once written.
    Auto,
    /// `client`: an ACK or NACK settles every earlier delivery of the subscription too.
    Client,
    /// `client-individual` (1.1+): an ACK or NACK settles its own delivery only.
    ClientIndividual,
}

/// A subscription (or the connection's own temporary queue).
pub(super) struct Sub {
    /// The destination as the client wrote it (MESSAGE `destination` for temp queues).
    pub(super) dest: String,
    pub(super) consumer: Consumer,
    pub(super) ack: AckPolicy,
    /// The connection's own temporary queue (not counted, not permission-checked).
    pub(super) temp: bool,
    /// The queue of a durable topic subscription, deleted by an UNSUBSCRIBE that says
    /// `durable:true`.
    pub(super) durable: Option<String>,
}

impl<T: Transport> Connection<T> {
    /// SUBSCRIBE: a consumer of the queue, or of the topic (durably if asked).
    pub(super) async fn on_subscribe(&mut self, f: Frame) -> Result<(), Fatal> {
        let dest_text = header(&f, "destination")?.to_owned();
        let id = match f.header("id") {
            Some(id) => id.to_owned(),
            None if self.version == Version::V1_0 => dest_text.clone(),
            None => {
                return Err(fatal(
                    "missing id header",
                    "SUBSCRIBE requires an `id` header",
                ));
            }
        };
        if self.subs.contains_key(&id) {
            return Err(fatal(
                "duplicate subscription id",
                format!("subscription `{id}` already exists"),
            ));
        }
        if self.subs.values().filter(|s| !s.temp).count() >= self.shared.settings.max_subscriptions
        {
            return Err(fatal(
                "too many subscriptions",
                format!(
                    "at most {} subscriptions per connection",
                    self.shared.settings.max_subscriptions
                ),
            ));
        }
        let ack = match f.header("ack").unwrap_or("auto") {
            "auto" => AckPolicy::Auto,
            "client" => AckPolicy::Client,
            "client-individual" if self.version >= Version::V1_1 => AckPolicy::ClientIndividual,
            other => {
                let expected = if self.version >= Version::V1_1 {
                    "expected auto, client or client-individual"
                } else {
                    "expected auto or client (STOMP 1.0)"
                };
                return Err(invalid_header("invalid ack mode", "ack", other, expected));
            }
        };
        let prefetch = match f.header("prefetch-count") {
            Some(p) => match p.parse::<usize>() {
                Ok(n) if (1..=65_535).contains(&n) => n,
                _ => {
                    return Err(invalid_header(
                        "invalid prefetch-count",
                        "prefetch-count",
                        p,
                        "expected 1 to 65535",
                    ));
                }
            },
            None => self.shared.settings.default_prefetch,
        };
        // Manual in the core even in `auto` mode: each delivery is checked against the
        // user's read rights first ([`Connection::deliver`]), and one refused must be
        // dead-lettered, not counted as acknowledged; the allowed ones are acknowledged
        // once written.
        let opts = ConsumeOptions::manual(prefetch)
            .with_notify(Arc::clone(&self.notify))
            .with_budget(Arc::clone(&self.budget));
        let wants_durable = durable_header(&f)?;
        let core = self.shared.router.core().clone();
        let principal = self.principal()?.clone();
        let refused = || {
            fatal(
                "access refused",
                format!("not allowed to subscribe to {dest_text}"),
            )
        };
        let parsed = stomp_names::parse(&dest_text, true)
            .map_err(|e| fatal("invalid destination", e.to_string()))?;
        let mut durable = None;
        let consumer = match parsed {
            StompDest::Queue(n) => {
                let p =
                    Pattern::parse(&n).map_err(|e| fatal("invalid destination", e.to_string()))?;
                // Owned queues (sessions', users', the router's) too: Principal checks.
                if !principal.can_subscribe(Kind::Queue, &p) {
                    return Err(refused());
                }
                core.consume(&n, opts)
            }
            StompDest::Topic(p) => {
                let pat =
                    Pattern::parse(&p).map_err(|e| fatal("invalid destination", e.to_string()))?;
                if !principal.can_subscribe(Kind::Topic, &pat) {
                    return Err(refused());
                }
                if wants_durable {
                    let name = durable_queue(
                        principal.name(),
                        f.header("subscription-name").unwrap_or(&id),
                    );
                    durable = Some(name.clone());
                    core.subscribe_durable(&name, &[&p], opts)
                } else {
                    core.subscribe(&[&p], opts)
                }
            }
            StompDest::TempQueue(_) => {
                return Err(fatal(
                    "invalid destination",
                    "temporary queues are subscribed to automatically by using them in reply-to",
                ));
            }
        }
        .map_err(|e| fatal("invalid destination", e.to_string()))?;
        // Clustered, the subscription is in force on the other routers before it is
        // confirmed and before this connection's next frame (at once on a router alone).
        let _ = self
            .shared
            .router
            .core()
            .bindings_settled(consumer.queue_name())
            .wait()
            .await;
        tracing::debug!(id = %id, destination = %dest_text, ?ack, prefetch, "subscribed");
        self.subs.insert(
            id,
            Sub {
                dest: dest_text,
                consumer,
                ack,
                temp: false,
                durable,
            },
        );
        self.receipt(&f).await?;
        self.deliver().await
    }

    /// UNSUBSCRIBE: drops the consumer (its unacknowledged deliveries go back); deletes a
    /// durable subscription's queue if asked.
    pub(super) async fn on_unsubscribe(&mut self, f: Frame) -> Result<(), Fatal> {
        let id = match f.header("id") {
            Some(id) => id.to_owned(),
            None if self.version == Version::V1_0 => header(&f, "destination")?.to_owned(),
            None => {
                return Err(fatal(
                    "missing id header",
                    "UNSUBSCRIBE requires an `id` header",
                ));
            }
        };
        let delete_durable = durable_header(&f)?;
        let sub = self
            .subs
            .remove(&id)
            .ok_or_else(|| fatal("unknown subscription", format!("no subscription `{id}`")))?;
        self.outstanding.retain(|_, o| o.sub != id);
        let durable = sub.durable.clone();
        drop(sub);
        self.refill_if_starved();
        if let Some(name) = durable
            && delete_durable
        {
            self.shared.router.core().delete_queue(&name);
        }
        self.receipt(&f).await
    }
}
