//! PUBLISH from the client at QoS 0, 1 and 2: topic aliases, permissions, retained
//! messages, and the acknowledgement (PUBACK, PUBREC) once the message is durable.

use std::pin::Pin;
use std::sync::Arc;

use super::connection::{Connection, read_failed};
use super::end::{End, end};
use super::reason_code;
use super::transport::Transport;
use crate::core::{Confirmation, Destination, Message, Origin, PublishError};
use crate::listener::mqtt::codec::{In, Out, Publish, Version};
use crate::listener::mqtt::convert::{publish_destination, publish_to_message};
use crate::ratelog::Cause;
use crate::router::RouterError;
use crate::translate::mqtt_names;
use crate::translate::traffic::{self, Protocol};

/// What a QoS 1/2 PUBLISH whose message is not durable yet is answered with (its
/// PUBACK/PUBREC), or (with `release`) the PUBREL of an outbound QoS 2 delivery that
/// waits for its acknowledgement to be durable.
pub(super) struct Unconfirmed {
    pub(super) packet_id: u16,
    pub(super) qos: u8,
    /// Queues reached (0: no matching subscribers).
    pub(super) reached: usize,
    /// A PUBREL owed to the client, not an acknowledgement of its PUBLISH.
    pub(super) release: bool,
}

/// Retained publishes refused or not retained for lack of room (see [`crate::ratelog`]).
static RETAINED_FULL: Cause = Cause::new("mqtt.retained_full");

/// Publishes refused, counted and logged at most once a second (see [`crate::ratelog`]).
static PUBLISH_DENIED: Cause = Cause::new("mqtt.publish_denied");
static PUBLISH_REFUSED: Cause = Cause::new("mqtt.publish_refused");

/// Most QoS 0 PUBLISHes published as one batch.
const MAX_RUN: usize = 64;

/// Whether a QoS 0 PUBLISH may join a run published as one batch: not retained (the
/// retained store takes each), no topic alias (set or resolved one by one).
fn joins_run(p: &Publish) -> bool {
    p.qos == 0 && !p.retain && p.props.topic_alias.is_none()
}

impl<T: Transport> Connection<T> {
    /// A QoS 0 PUBLISH, with the QoS 0 PUBLISHes to the same topic that the same read
    /// brought after it: published as one batch ([`crate::router::Router::publish_batch_unconfirmed`]),
    /// which fans them out with one lock and one wake-up per subscriber instead of one
    /// per message. Nothing is acknowledged at QoS 0, so a run changes no answer.
    /// Returns the packet that ended the run, for the caller to handle next, in order
    /// (returned, not handled here: a buffer of publishes to alternating topics would
    /// otherwise nest one handler in another per packet).
    pub(super) async fn on_publish_qos0(&mut self, first: Box<Publish>) -> Result<Option<In>, End> {
        if !joins_run(&first) {
            self.on_publish(*first).await?;
            return Ok(None);
        }
        let mut run = vec![*first];
        let mut after = None;
        while run.len() < MAX_RUN {
            match self.t.next_buffered() {
                Some(Ok(In::Publish(p))) if joins_run(&p) && p.topic == run[0].topic => {
                    run.push(*p)
                }
                Some(other) => {
                    after = Some(other);
                    break;
                }
                None => break,
            }
        }
        if run.len() == 1 {
            self.on_publish(run.remove(0)).await?;
        } else {
            self.publish_run(run).await?;
        }
        match after {
            None => Ok(None),
            Some(Ok(p)) => {
                self.last_recv = super::stamp::Stamp::now();
                Ok(Some(p))
            }
            Some(Err(e)) => Err(read_failed(e)),
        }
    }

    /// Publishes a run of QoS 0 PUBLISHes to one topic (see [`Self::on_publish_qos0`]):
    /// the topic checked once, the messages routed as one batch.
    async fn publish_run(&mut self, run: Vec<Publish>) -> Result<(), End> {
        let topic = &run[0].topic;
        if let Err(e) = mqtt_names::validate_topic(topic) {
            return Err(end(reason_code::TOPIC_NAME_INVALID, e));
        }
        let dest = publish_destination(topic);
        if !self.principal.can_publish(&dest) {
            crate::rate_warn!(PUBLISH_DENIED, topic = %topic, count = run.len(), "publish refused by permissions");
            return Ok(());
        }
        let origin = Origin::shared("mqtt", Arc::clone(&self.client_id));
        let messages: Vec<Message> = run
            .iter()
            .map(|p| publish_to_message(p, origin.clone()))
            .collect();
        let n = messages.len();
        let bytes: u64 = messages.iter().map(|m| m.body.len() as u64).sum();
        drop(run);
        let router = self.state.router.clone();
        let batch = std::pin::pin!(router.publish_batch_unconfirmed(dest, messages));
        let Some(batch) = self.delivering(batch).await else {
            return Ok(());
        };
        for e in &batch.errors {
            crate::rate_warn!(PUBLISH_REFUSED, error = %e, "publish refused");
        }
        let ok = batch.ok();
        traffic::received(Protocol::Mqtt, ok as u64, bytes * ok as u64 / n as u64);
        Ok(())
    }

    /// PUBLISH: published through the router; acknowledged at once, or once durable.
    pub(super) async fn on_publish(&mut self, mut p: Publish) -> Result<(), End> {
        // Topic aliases (5.0).
        if let Some(alias) = p.props.topic_alias.take() {
            if alias == 0 || alias > self.state.settings.topic_alias_max {
                return Err(end(
                    reason_code::TOPIC_ALIAS_INVALID,
                    format!("topic alias {alias} out of range"),
                ));
            }
            if p.topic.is_empty() {
                match self.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(end(
                            reason_code::PROTOCOL_ERROR,
                            format!("unknown topic alias {alias}"),
                        ));
                    }
                }
            } else {
                self.aliases
                    .get_or_insert_with(Default::default)
                    .inbound
                    .insert(alias, p.topic.clone());
            }
        }
        if let Err(e) = mqtt_names::validate_topic(&p.topic) {
            return Err(end(reason_code::TOPIC_NAME_INVALID, e));
        }
        let pid = p.packet_id.unwrap_or(0);
        if p.qos == 2 && self.data().flows().incoming_qos2.contains(&pid) {
            // A resent QoS 2 PUBLISH we already have: acknowledge again, publish nothing.
            self.send(Out::PubRec {
                packet_id: pid,
                code: reason_code::SUCCESS,
            })
            .await?;
            return self.flush().await;
        }
        if p.qos == 2
            && self.data().flows().incoming_qos2.len()
                >= usize::from(self.state.settings.max_inflight)
        {
            return Err(end(
                reason_code::RECEIVE_MAX_EXCEEDED,
                "too many QoS 2 messages in flight",
            ));
        }
        let dest = publish_destination(&p.topic);
        // Replies to a STOMP temporary queue are allowed to whoever was handed its
        // address (`can_publish` says so); other owned queues only to their owner.
        let code = if !self.principal.can_publish(&dest) {
            crate::rate_warn!(PUBLISH_DENIED, topic = %p.topic, "publish refused by permissions");
            reason_code::NOT_AUTHORIZED
        } else {
            let message =
                publish_to_message(&p, Origin::shared("mqtt", Arc::clone(&self.client_id)));
            // A retained publish the retained store has no room for is refused whole
            // (not delivered either): 0x97 in MQTT 5; a 3.1.1 connection is closed.
            let over = match (&dest, p.retain) {
                (Destination::Topic(t), true) => self.state.retained_fits(t, &message).err(),
                _ => None,
            };
            let retained = p.retain.then(|| Arc::new(message.clone()));
            if let Some(full) = over {
                crate::rate_warn!(RETAINED_FULL, topic = %p.topic, limit = ?full, "retained publish refused: the retained store is at its limit (mqtt.max_retained / mqtt.max_retained_bytes)");
                return self
                    .acknowledge(pid, p.qos, reason_code::QUOTA_EXCEEDED)
                    .await;
            }
            match self.publish(dest.clone(), message).await {
                Ok((n, mut confirmation)) => {
                    if let (Some(m), Destination::Topic(t)) = (retained, &dest) {
                        match self.state.retain(t, m) {
                            Err(full) => {
                                crate::rate_warn!(RETAINED_FULL, topic = %p.topic, limit = ?full, "retained store full: message delivered but not retained")
                            }
                            Ok(Some(w)) if p.qos > 0 => confirmation.push(w),
                            Ok(_) => {}
                        }
                    }
                    if p.qos > 0 && self.confirmations.must_wait(&confirmation) {
                        if p.qos == 2 {
                            // Known from now on: a resent PUBLISH is not published twice.
                            self.data().flows_mut().incoming_qos2.insert(pid);
                        }
                        let answer = Unconfirmed {
                            packet_id: pid,
                            qos: p.qos,
                            reached: n,
                            release: false,
                        };
                        self.confirmations.push(answer, confirmation);
                        return Ok(());
                    }
                    if n == 0 {
                        reason_code::NO_MATCHING_SUBSCRIBERS
                    } else {
                        reason_code::SUCCESS
                    }
                }
                Err(code) => code,
            }
        };
        self.acknowledge(pid, p.qos, code).await
    }

    /// A QoS 1/2 PUBLISH's message is durable (or could not be made so): acknowledge.
    pub(super) async fn confirmed(
        &mut self,
        u: Unconfirmed,
        r: Result<(), PublishError>,
    ) -> Result<(), End> {
        if u.release {
            if let Err(e) = r {
                // Withholding it would not make the acknowledgement durable: the client
                // has the message either way. After a restart it may come back (DUP).
                tracing::warn!(error = %e, "acknowledgement of a QoS 2 delivery not stored");
            }
            return self.release(u.packet_id).await;
        }
        let code = match r {
            Ok(()) if u.reached == 0 => reason_code::NO_MATCHING_SUBSCRIBERS,
            Ok(()) => reason_code::SUCCESS,
            Err(e) => {
                crate::rate_warn!(PUBLISH_REFUSED, error = %e, "publish refused");
                if u.qos == 2 {
                    self.data().flows_mut().incoming_qos2.remove(&u.packet_id);
                }
                reason_code::UNSPECIFIED
            }
        };
        self.acknowledge(u.packet_id, u.qos, code).await
    }

    /// Sends a PUBLISH's acknowledgement (none for QoS 0), or ends a 3.1.1 connection
    /// that cannot be told of a refusal.
    pub(super) async fn acknowledge(&mut self, pid: u16, qos: u8, code: u8) -> Result<(), End> {
        match (qos, self.version) {
            (0, _) => Ok(()),
            // 3.1.1 cannot refuse a message: dropping the connection makes the client
            // resend it later rather than believe it delivered.
            // A message a 3.1.1 client may not publish is acknowledged and dropped (as
            // Mosquitto does; logged above): closing would only make the client resend it.
            (1, Version::V3) if code == reason_code::NOT_AUTHORIZED => {
                self.send(Out::PubAck {
                    packet_id: pid,
                    code,
                })
                .await?;
                self.flush().await
            }
            (_, Version::V3) if code >= 0x80 && code != reason_code::NOT_AUTHORIZED => Err(End {
                code: None,
                reason: "publish refused".into(),
                will: true,
            }),
            (1, _) => {
                self.send(Out::PubAck {
                    packet_id: pid,
                    code,
                })
                .await?;
                self.flush().await
            }
            _ => {
                if code < 0x80 {
                    self.data().flows_mut().incoming_qos2.insert(pid);
                }
                self.send(Out::PubRec {
                    packet_id: pid,
                    code,
                })
                .await?;
                self.flush().await
            }
        }
    }

    /// Publishes through the router, delivering meanwhile; maps refusals to reason codes.
    /// Returns what the acknowledgement must wait for.
    pub(super) async fn publish(
        &mut self,
        dest: Destination,
        m: Message,
    ) -> Result<(usize, Confirmation), u8> {
        let router = self.state.router.clone();
        let bytes = m.body.len() as u64;
        // Pinned here and lent: a future passed by value would be kept twice in this
        // one's state (the argument and its pinned move).
        let f = std::pin::pin!(router.publish_unconfirmed(dest, m));
        let Some(r) = self.delivering(f).await else {
            return Err(reason_code::UNSPECIFIED);
        };
        if r.is_ok() {
            traffic::received(Protocol::Mqtt, 1, bytes);
        }
        r.map_err(|e| {
            crate::rate_warn!(PUBLISH_REFUSED, error = %e, "publish refused");
            match e {
                RouterError::Publish(PublishError::Full(_)) => reason_code::QUOTA_EXCEEDED,
                _ => reason_code::UNSPECIFIED,
            }
        })
    }

    /// Runs a publish to its end while delivering to this client meanwhile (a publish
    /// waiting for room or at the flow gate must not stop this client's own
    /// deliveries). `None`: writing to the client failed meanwhile and the publish was
    /// given up.
    async fn delivering<F: Future>(&mut self, mut fut: Pin<&mut F>) -> Option<F::Output> {
        let notify = Arc::clone(&self.notify);
        loop {
            tokio::select! {
                biased;
                r = fut.as_mut() => return Some(r),
                _ = notify.notified() => {
                    if self.deliver().await.is_err() {
                        return None;
                    }
                }
                // Waiting at the flow gate: what is owed to the client goes out meanwhile.
                _ = std::future::ready(()), if self.unflushed > 0 => {
                    if self.flush_now().await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}
