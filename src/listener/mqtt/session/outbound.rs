//! The outbound half of a session: packet ids, which subscriptions a delivery answers,
//! and sending deliveries within the client's in-flight window.

use super::*;
use crate::core::{DeadReason, Loss};
use crate::translate::loss::{self, Edge};

impl<T: Transport> Session<T> {
    pub(super) fn alloc_pid(&mut self) -> u16 {
        loop {
            let p = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            let data = self.data();
            let reserved =
                data.pending_rel.contains(&p) || data.sent_pids.values().any(|&v| v == p);
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
        let mut sent = false;
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
                        Ok(s) => sent |= s,
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
        if sent {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends one delivery; the tags of those settled without waiting for the client
    /// (QoS 0, or not sent at all) go into `settled` for the caller to acknowledge.
    async fn deliver_one(
        &mut self,
        source: usize,
        d: Delivery,
        settled: &mut Vec<u64>,
    ) -> Result<bool, End> {
        let Some((sub_qos, rap, ids)) = self.matching(&d, source) else {
            // No subscription wants it any more (unsubscribed meanwhile, or no-local).
            settled.push(d.tag);
            return Ok(false);
        };
        if !self.principal.can_read(&d.destination) {
            tracing::warn!(topic = %d.destination, "delivery refused by permissions");
            settled.push(d.tag);
            return Ok(false);
        }
        let qos = sub_qos.min(d.message.qos);
        let retain = d.message.headers.get(RETAINED_HEADER) == Some("1")
            || (rap && d.message.headers.get(RETAIN_HEADER) == Some("1"));
        let mut p = message_to_publish(&d.message, delivery_topic(&d), qos, retain);
        let (edge, lost) = if self.version == Version::V5 {
            p.props.subscription_ids = ids;
            (Edge::Mqtt5, loss::lost_to_mqtt5(&d.message))
        } else {
            p.props = Default::default();
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
                    return Ok(false);
                }
            }
        }
        if let Some(max) = self.client_max_packet
            && publish_size_bound(&p) > u64::from(max)
        {
            crate::rate_warn!(TOO_LARGE, topic = %p.topic, size = p.payload.len(), max, "message larger than the client's maximum packet size; not sent");
            settled.push(d.tag);
            return Ok(false);
        }
        if qos > 0 {
            let known = self.data().sent_pids.get(&d.message.id).copied();
            let pid = match known {
                Some(pid) if d.redelivered && !self.inflight.contains_key(&pid) => pid,
                _ => {
                    let pid = self.alloc_pid();
                    self.data().sent_pids.insert(d.message.id.clone(), pid);
                    pid
                }
            };
            p.packet_id = Some(pid);
            p.dup = d.redelivered;
            let queue = self.consumers[source].1.queue_name().into();
            self.inflight.insert(pid, Inflight { queue, tag: d.tag });
        } else {
            settled.push(d.tag);
        }
        self.send(Out::Publish(Box::new(p))).await?;
        Ok(true)
    }
}

/// An upper bound of a PUBLISH's encoded size, properties included (each property's
/// identifier, length prefixes and the packet's fixed header counted generously), so a
/// message over the client's Maximum Packet Size is skipped rather than failing to encode.
/// Deliveries not made, counted and logged at most once a second (see [`crate::ratelog`]).
static LOSS_REJECT: crate::ratelog::Cause = crate::ratelog::Cause::new("mqtt.loss_reject");
static TOO_LARGE: crate::ratelog::Cause = crate::ratelog::Cause::new("mqtt.larger_than_client_max");

fn publish_size_bound(p: &Publish) -> u64 {
    let pr = &p.props;
    let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 3);
    let props = opt(&pr.content_type)
        + opt(&pr.response_topic)
        + pr.correlation_data.as_ref().map_or(0, |c| c.len() + 3)
        + pr.user
            .iter()
            .map(|(k, v)| k.len() + v.len() + 5)
            .sum::<usize>()
        + pr.subscription_ids.len() * 5
        + 16;
    (p.payload.len() + p.topic.len() + props + 16) as u64
}
