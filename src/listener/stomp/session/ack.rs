//! ACK and NACK: which delivery they name, and settling it with the core.

use super::connection::Connection;
use super::fatal::{Fatal, fatal};
use super::headers::{bool_header, header};
use super::subscribe::AckPolicy;
use super::transaction::{TxOp, frame_bytes};
use super::transport::Transport;
use crate::core::{Confirmation, MessageId};
use crate::listener::stomp::frame::{Command, Frame, Version};

/// A delivery of a `client` or `client-individual` subscription, sent and not yet
/// acknowledged. The session keys them by a token of its own: STOMP 1.2's `ack` header.
pub(super) struct Outstanding {
    /// The subscription's id.
    pub(super) sub: String,
    /// The core's delivery tag.
    pub(super) tag: u64,
    pub(super) message_id: MessageId,
}

impl<T: Transport> Connection<T> {
    /// Finds the delivery an ACK/NACK names, per the version's rules.
    pub(super) fn find_ack(&self, f: &Frame) -> Result<u64, Fatal> {
        let unknown = |what: &str| {
            fatal(
                "unknown message",
                format!(
                    "{} for {what}: no such unacknowledged message",
                    f.command.as_str()
                ),
            )
        };
        if self.version >= Version::V1_2 {
            let id = header(f, "id")?;
            let token: u64 = id.parse().map_err(|_| unknown(id))?;
            return self
                .outstanding
                .contains_key(&token)
                .then_some(token)
                .ok_or_else(|| unknown(id));
        }
        let mid = header(f, "message-id")?;
        let sub = if self.version == Version::V1_1 {
            Some(header(f, "subscription")?)
        } else {
            f.header("subscription")
        };
        self.outstanding
            .iter()
            .find(|(_, o)| o.message_id.matches(mid) && sub.is_none_or(|s| o.sub == s))
            .map(|(t, _)| *t)
            .ok_or_else(|| unknown(mid))
    }

    /// ACK or NACK: settles at once, or buffers into its transaction.
    pub(super) async fn on_ack(&mut self, f: Frame) -> Result<(), Fatal> {
        let token = self.find_ack(&f)?;
        // `requeue` means something on NACK only (RabbitMQ's extension; default requeue).
        let requeue = if f.command == Command::Nack {
            bool_header(&f, "requeue", true)?
        } else {
            true
        };
        if let Some(tx) = f.header("transaction") {
            self.buffer_tx(tx, frame_bytes(&f), TxOp::Ack(f.clone(), requeue))?;
            return self
                .answer(&f, Confirmation::default(), String::new())
                .await;
        }
        // Named in the ERROR should it not be stored; only a frame with a receipt waits.
        let what = match (f.header("receipt"), self.outstanding.get(&token)) {
            (Some(_), Some(o)) => format!("{} of message {}", f.command.as_str(), o.message_id),
            _ => String::new(),
        };
        self.settle(token, f.command == Command::Ack, requeue);
        // Its RECEIPT waits until the settlement is durable: a message whose ACK was
        // receipted never comes back, even after a crash.
        self.answer(&f, Confirmation::default(), what).await
    }

    /// Settles delivery `token` with the core (acknowledged, or refused and requeued or
    /// dead-lettered); under `client`, every earlier delivery of its subscription too.
    pub(super) fn settle(&mut self, token: u64, ack: bool, requeue: bool) {
        let Some(o) = self.outstanding.get(&token) else {
            return;
        };
        let sub_id = o.sub.clone();
        let tag = o.tag;
        let Some(sub) = self.subs.get(&sub_id) else {
            return;
        };
        self.settled_durable |= sub.consumer.is_durable();
        if sub.consumer.is_shared() {
            let queue = sub.consumer.queue_name();
            if !self.settled_shared.iter().any(|q| q == queue) {
                self.settled_shared.push(queue.to_owned());
            }
        }
        // `client` mode is cumulative: it settles every earlier delivery of the subscription.
        let cumulative = sub.ack == AckPolicy::Client;
        match (ack, cumulative) {
            (true, true) => sub.consumer.ack_through(tag),
            (true, false) => sub.consumer.ack(tag),
            (false, true) => sub.consumer.nack_through(tag, requeue),
            (false, false) => sub.consumer.nack(tag, requeue),
        };
        if cumulative {
            self.outstanding
                .retain(|_, o| o.sub != sub_id || o.tag > tag);
        } else {
            self.outstanding.remove(&token);
        }
        self.refill_if_starved();
    }

    /// Room appeared in the connection's byte budget after a queue withheld deliveries
    /// for lack of it: let every subscription take what now fits (the room may have
    /// come from another subscription's queue).
    pub(super) fn refill_if_starved(&self) {
        if self.budget.take_starved() {
            for sub in self.subs.values() {
                sub.consumer.refill();
            }
        }
    }
}
