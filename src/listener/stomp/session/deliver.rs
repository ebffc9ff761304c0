//! Deliveries: what the subscriptions have, sent as MESSAGE frames.

use super::ack::Outstanding;
use super::connection::Connection;
use super::fatal::Fatal;
use super::subscribe::AckPolicy;
use super::transport::Transport;
use crate::core::DeadReason;
use crate::listener::stomp::codec::Outgoing;
use crate::listener::stomp::convert::{MessageFrameInfo, encode_delivery};
use crate::listener::stomp::frame::Version;
use crate::ratelog::Cause;
use crate::translate::stomp_names;
use crate::translate::traffic::{self, Protocol};

/// Counted, rate-limited causes of this listener (see [`crate::ratelog`]).
static READ_DENIED: Cause = Cause::new("stomp.delivery_forbidden");

impl<T: Transport> Connection<T> {
    /// Sends what the subscriptions have, a bounded batch per subscription; re-arms the
    /// wake-up when more is waiting so frames from the client are not starved.
    ///
    /// Every delivery is checked against the user's read rights first, as the MQTT
    /// listener does (the rules may have changed since the subscription was made, and a
    /// durable subscription keeps what it collected): one refused is dead-lettered with
    /// reason `forbidden`, never sent and never counted as acknowledged. A connection's
    /// own temporary queue needs no check. `auto` deliveries are acknowledged to the core
    /// once written.
    pub(super) async fn deliver(&mut self) -> Result<(), Fatal> {
        const BATCH: usize = 256;
        let Some(principal) = self.principal.as_ref() else {
            return Ok(());
        };
        // Frames are written straight into one buffer, each split off as its own bytes
        // (one WebSocket message each; shared allocation).
        let mut frames = Vec::new();
        let mut out = bytes::BytesMut::new();
        let mut more = false;
        let mut closed = Vec::new();
        let mut buf = Vec::new();
        let mut written: Vec<(String, Vec<u64>)> = Vec::new();
        let mut refused = 0usize;
        let mut bytes = 0u64;
        for (id, sub) in &self.subs {
            match sub.consumer.try_recv_many(BATCH, &mut buf) {
                Ok(n) => more |= n == BATCH,
                Err(_) => closed.push(id.clone()),
            }
            let mut auto_tags = Vec::new();
            for d in buf.drain(..) {
                if !sub.temp && !principal.can_read(&d.destination) {
                    refused += 1;
                    sub.consumer.dead_letter(d.tag, DeadReason::Forbidden);
                    continue;
                }
                if sub.ack == AckPolicy::Auto && !sub.temp {
                    auto_tags.push(d.tag);
                }
                let token = (sub.ack != AckPolicy::Auto).then(|| {
                    let t = self.next_ack;
                    self.next_ack += 1;
                    self.outstanding.insert(
                        t,
                        Outstanding {
                            sub: id.clone(),
                            tag: d.tag,
                            message_id: d.message.id.clone(),
                        },
                    );
                    t
                });
                let token_text = token.map(|t| t.to_string());
                let dest = if sub.temp {
                    sub.dest.clone()
                } else {
                    stomp_names::from_internal(&d.destination)
                };
                let reply_to = d.message.reply_to.as_ref().map(stomp_names::from_internal);
                bytes += d.message.body.len() as u64;
                let info = MessageFrameInfo {
                    subscription: id,
                    ack: if self.version >= Version::V1_2 {
                        token_text.as_deref()
                    } else {
                        None
                    },
                    destination: &dest,
                    reply_to,
                };
                if out.capacity() - out.len() < 512 + d.message.body.len() {
                    out.reserve(8192.max(512 + d.message.body.len()));
                }
                encode_delivery(&d, &info, self.version, &mut out)
                    .map_err(|e| super::fatal::fatal("write failed", e.to_string()))?;
                frames.push(out.split().freeze());
            }
            if !auto_tags.is_empty() {
                written.push((id.clone(), auto_tags));
            }
        }
        if refused > 0 {
            crate::rate_warn!(
                READ_DENIED,
                refused,
                "deliveries refused by permissions: dead-lettered (reason `forbidden`)"
            );
        }
        for id in closed {
            tracing::info!(subscription = %id, "queue deleted under subscription");
            self.subs.remove(&id);
        }
        // Auto-acknowledged deliveries taken above released their bytes.
        self.refill_if_starved();
        if frames.is_empty() {
            return Ok(());
        }
        let sent = frames.len() as u64;
        for f in frames {
            self.write(Outgoing::Encoded(f)).await?;
        }
        self.flush().await?;
        traffic::delivered(Protocol::Stomp, sent, bytes);
        // Written: `auto` deliveries are done. (Had the write failed, the session would
        // end and they would go back to their queues, marked redelivered.)
        for (id, tags) in written {
            if let Some(sub) = self.subs.get(&id) {
                sub.consumer.ack_many(&tags);
            }
        }
        if more {
            self.notify.notify_one();
        }
        Ok(())
    }
}
