//! The outbound half of a session: packet ids, which subscriptions a delivery answers,
//! and sending deliveries within the client's in-flight window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::alias::Plan;
use super::connection::{Connection, Source};
use super::end::End;
use super::transport::Transport;
use crate::core::{DeadReason, Delivery, Loss};
use crate::listener::mqtt::codec::{Out, Version, publish_wire_size};
use crate::listener::mqtt::convert::{
    RETAIN_HEADER, RETAINED_HEADER, delivery_topic, message_to_publish,
};
use crate::translate::loss::{self, Edge};
use crate::translate::traffic::{self, Protocol};

/// A QoS 1/2 delivery awaiting the client's acknowledgement. The consumer is named by
/// its queue, not by position: subscriptions come and go while messages are in flight.
pub(super) struct Inflight {
    pub(super) queue: Arc<str>,
    pub(super) tag: u64,
    /// QoS 2 from a shared queue: PUBREC received and PUBREL sent, settled with the core
    /// at PUBCOMP (see `super::release`). Still counts in the in-flight window, as the
    /// core counts it in the consumer's credit (and MQTT 5 §4.9 until PUBCOMP).
    pub(super) released: bool,
}

impl<T: Transport> Connection<T> {
    pub(super) fn alloc_pid(&mut self) -> u16 {
        loop {
            let p = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            let data = self.data();
            let reserved = data.flows().pending_rel.contains(&p)
                || data.flows().sent_pids.values().any(|&v| v == p);
            drop(data);
            if !self.inflight.contains_key(&p) && !reserved {
                return p;
            }
        }
    }

    /// The QoS, retain flag and subscription ids a delivery from the session queue gets:
    /// the highest QoS among the matching subscriptions (MQTT 3.1.1 §3.3.5).
    fn matching(&self, d: &Delivery, source: usize) -> Option<(u8, bool, Vec<u32>)> {
        let data = self.data();
        let name = d.destination.name();
        let from_self =
            &*d.message.origin.protocol == "mqtt" && *d.message.origin.peer == *self.client_id;
        let mut best: Option<(u8, bool, Vec<u32>)> = None;
        for s in data.subs.values() {
            let hit = match (&self.consumers[source].0, &s.shared_queue) {
                (Source::Session, None) => s.pattern.matches(name),
                (Source::Shared(q), Some(sq)) => q == sq,
                _ => false,
            };
            if !hit || (s.opts.no_local && from_self) {
                continue;
            }
            let e = best.get_or_insert((0, false, Vec::new()));
            e.0 = e.0.max(s.opts.qos);
            e.1 |= s.opts.retain_as_published;
            if let Some(id) = s.subscription_id {
                e.2.push(id);
            }
        }
        best
    }

    pub(super) async fn deliver(&mut self) -> Result<(), End> {
        let mut buf = Vec::new();
        // Deliveries settled as soon as they are sent or skipped (at-most-once ones):
        // acknowledged together after each batch, under one lock of their queue.
        let mut settled = Vec::new();
        // Messages written and their payload bytes, counted once per call.
        let (mut sent, mut bytes) = (0u64, 0u64);
        for i in 0..self.consumers.len() {
            loop {
                let room = usize::from(self.client_receive_max).saturating_sub(self.inflight.len());
                if room == 0 {
                    break;
                }
                buf.clear();
                match self.consumers[i].1.try_recv_many(room.min(64), &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let mut batch = std::mem::take(&mut buf).into_iter();
                let result = loop {
                    let Some(d) = batch.next() else { break Ok(()) };
                    match self.deliver_one(i, d, &mut settled).await {
                        Ok(Some(payload)) => {
                            sent += 1;
                            bytes += payload as u64;
                        }
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    }
                };
                // Also when the connection failed: what was sent or skipped is settled
                // (at most once); the rest of the batch goes back to the queue with the
                // consumer.
                self.consumers[i].1.ack_many(&settled);
                settled.clear();
                result?;
            }
        }
        if sent > 0 {
            self.flush().await?;
            traffic::delivered(Protocol::Mqtt, sent, bytes);
        }
        Ok(())
    }

    /// Sends one delivery; the tags of those settled without waiting for the client
    /// (QoS 0, or not sent at all) go into `settled` for the caller to acknowledge.
    /// `Some(payload bytes)` when it was written.
    async fn deliver_one(
        &mut self,
        source: usize,
        d: Delivery,
        settled: &mut Vec<u64>,
    ) -> Result<Option<usize>, End> {
        let Some((sub_qos, rap, ids)) = self.matching(&d, source) else {
            // No subscription wants it any more (unsubscribed meanwhile, or no-local).
            settled.push(d.tag);
            return Ok(None);
        };
        if !self.principal.can_read(&d.destination) {
            // Never counted as delivered: dead-lettered with its reason (dropped and
            // counted when the queue has no dead-letter destination).
            crate::rate_warn!(READ_DENIED, topic = %d.destination, "delivery refused by permissions; dead-lettered (reason `forbidden`)");
            self.consumers[source]
                .1
                .dead_letter(d.tag, DeadReason::Forbidden);
            return Ok(None);
        }
        let qos = sub_qos.min(d.message.qos);
        let retain = d.message.headers.get(RETAINED_HEADER) == Some("1")
            || (rap && d.message.headers.get(RETAIN_HEADER) == Some("1"));
        let v5 = self.version == Version::V5;
        let mut p = message_to_publish(&d.message, delivery_topic(&d), qos, retain, v5);
        let (edge, lost) = if v5 {
            p.props.subscription_ids = ids;
            (Edge::Mqtt5, loss::lost_to_mqtt5(&d.message))
        } else {
            (Edge::Mqtt311, loss::lost_to_mqtt311(&d.message))
        };
        if !lost.is_empty() {
            let m = &d.message;
            loss::record(edge, lost, m.loss);
            let topic = crate::translate::mqtt_names::destination_to_topic;
            match (m.loss, edge) {
                (Loss::Drop, _) => {}
                (Loss::Encode, Edge::Mqtt311) => p.payload = loss::mqtt311_envelope(m, lost, topic),
                (Loss::Encode, _) => p.props.user.extend(loss::as_headers(m, lost, topic)),
                (Loss::Reject, _) => {
                    crate::rate_warn!(LOSS_REJECT, topic = %p.topic, fields = %lost.names(), "message not delivered: this MQTT version cannot carry some of its fields and its route says `loss: reject`");
                    self.consumers[source]
                        .1
                        .dead_letter(d.tag, DeadReason::Untranslatable);
                    return Ok(None);
                }
            }
        }
        let plan = match self.aliases.as_ref().and_then(|a| a.outbound.as_ref()) {
            Some(a) => a.plan(&p.topic),
            None => Plan::Topic,
        };
        let topic = match plan {
            Plan::Topic => None,
            Plan::Assign(alias) => {
                p.props.topic_alias = Some(alias);
                None
            }
            Plan::Known(alias) => {
                p.props.topic_alias = Some(alias);
                Some(std::mem::take(&mut p.topic))
            }
        };
        if let Some(max) = self.client_max_packet.map(std::num::NonZeroU32::get) {
            let size = publish_wire_size(&p, self.version == Version::V5);
            if size > u64::from(max) {
                // MQTT-3.1.2-25: discard it and behave as if it had been sent.
                OVERSIZE_DROPPED.fetch_add(1, Ordering::Relaxed);
                crate::rate_warn!(TOO_LARGE, topic = %d.destination, size, max, "message larger than the client's Maximum Packet Size; not sent");
                settled.push(d.tag);
                return Ok(None);
            }
        }
        if let Some(a) = self.aliases.as_mut().and_then(|a| a.outbound.as_mut()) {
            a.sent(topic.as_deref().unwrap_or(&p.topic), plan);
        }
        if qos > 0 {
            let known = self.data().flows().sent_pids.get(&d.message.id).copied();
            let pid = match known {
                Some(pid) if d.redelivered && !self.inflight.contains_key(&pid) => pid,
                _ => {
                    let pid = self.alloc_pid();
                    self.data()
                        .flows_mut()
                        .sent_pids
                        .insert(d.message.id.clone(), pid);
                    pid
                }
            };
            p.packet_id = Some(pid);
            p.dup = d.redelivered;
            let queue = self.consumers[source].1.queue_name().into();
            self.inflight.insert(
                pid,
                Inflight {
                    queue,
                    tag: d.tag,
                    released: false,
                },
            );
        } else {
            settled.push(d.tag);
        }
        let payload = p.payload.len();
        self.send(Out::Publish(Box::new(p))).await?;
        Ok(Some(payload))
    }

    /// Acknowledges the delivery sent as `pid`. True when that may have written to the
    /// store (its queue is durable).
    pub(super) fn settle(&mut self, pid: u16) -> bool {
        self.data().flows_mut().sent_pids.retain(|_, p| *p != pid);
        if let Some(f) = self.inflight.remove(&pid)
            && let Some((_, c)) = self
                .consumers
                .iter()
                .find(|(_, c)| c.queue_name() == &*f.queue)
        {
            return c.ack(f.tag) && c.is_durable();
        }
        false
    }

    /// Sends the PUBREL of an outbound QoS 2 delivery the client has received.
    pub(super) async fn release(&mut self, pid: u16) -> Result<(), End> {
        self.send(Out::PubRel {
            packet_id: pid,
            code: 0,
        })
        .await?;
        self.flush().await
    }
}

/// Deliveries not sent because they exceeded the client's Maximum Packet Size, since
/// start (`GET /mqtt`).
static OVERSIZE_DROPPED: AtomicU64 = AtomicU64::new(0);

pub fn oversize_dropped() -> u64 {
    OVERSIZE_DROPPED.load(Ordering::Relaxed)
}

/// Deliveries not made, counted and logged at most once a second (see [`crate::ratelog`]).
static LOSS_REJECT: crate::ratelog::Cause = crate::ratelog::Cause::new("mqtt.loss_reject");
static TOO_LARGE: crate::ratelog::Cause = crate::ratelog::Cause::new("mqtt.larger_than_client_max");
static READ_DENIED: crate::ratelog::Cause = crate::ratelog::Cause::new("mqtt.delivery_forbidden");
