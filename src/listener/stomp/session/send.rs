//! SEND: to a queue, a topic or a temporary queue, at once or when its transaction
//! commits. Publishing waits for the core (backpressure) and delivers meanwhile.

use std::sync::Arc;

use super::connection::Connection;
use super::fatal::{Fatal, fatal};
use super::headers::header;
use super::receipt::Unconfirmed;
use super::transaction::TxOp;
use super::transport::Transport;
use crate::core::{Confirmation, Destination, Message, Origin, PRIVATE_PREFIX};
use crate::listener::stomp::convert::{SendError, send_to_message};
use crate::listener::stomp::frame::Frame;
use crate::ratelog::Cause;
use crate::translate::stomp_names::{self, StompDest};

/// Counted, rate-limited causes of this listener (see [`crate::ratelog`]).
static REPLY_DROPPED: Cause = Cause::new("stomp.reply_to_gone");

impl<T: Transport> Connection<T> {
    /// Resolves a SEND destination to an internal one.
    async fn send_destination(&mut self, dest: &str) -> Result<Destination, Fatal> {
        match stomp_names::parse(dest, false)
            .map_err(|e| fatal("invalid destination", e.to_string()))?
        {
            StompDest::Queue(n) => Ok(Destination::queue(&n)),
            StompDest::Topic(n) => Ok(Destination::topic(&n)),
            StompDest::TempQueue(n) => Ok(Destination::queue(&self.ensure_temp(&n).await?)),
        }
    }

    /// SEND: publishes at once, or buffers into its transaction.
    pub(super) async fn on_send(&mut self, f: Frame) -> Result<(), Fatal> {
        let dest_text = header(&f, "destination")?.to_owned();
        let dest = self.send_destination(&dest_text).await?;
        // Replies to a temporary queue are allowed to whoever was handed its address
        // (`can_publish` says so); other owned queues only to their owner.
        if !self.principal()?.can_publish(&dest) {
            tracing::warn!(destination = %dest_text, "publish refused by permissions");
            return Err(fatal(
                "access refused",
                format!("not allowed to send to {dest_text}"),
            ));
        }
        let reply_to = match f.header("reply-to") {
            Some(r) => Some(
                self.send_destination(r)
                    .await
                    .map_err(|e| fatal("invalid reply-to", e.detail))?,
            ),
            None => None,
        };
        let origin = Origin::shared("stomp", self.principal()?.name_shared());
        let message = send_to_message(&f, origin, reply_to).map_err(|e| {
            let SendError::BadHeader { header, value, .. } = &e;
            tracing::warn!(header, %value, "invalid header value");
            fatal("invalid header", e.to_string())
        })?;
        if let Some(tx) = f.header("transaction") {
            let size = message.byte_size();
            self.buffer_tx(tx, size, TxOp::Send(dest, message, dest_text))?;
        } else {
            let mut confirmation = self.publish_unconfirmed(dest, message, &dest_text).await?;
            if f.header("receipt").is_some() {
                confirmation.extend(self.settlements_owed());
            }
            if self.confirmations.must_wait(&confirmation) {
                let answer = Unconfirmed {
                    receipt: f.header("receipt").map(str::to_owned),
                    refused: "message refused",
                    dest_text,
                };
                self.confirmations.push(answer, confirmation);
                return Ok(());
            }
            return self.receipt(&f).await;
        }
        self.answer(&f, Confirmation::default(), String::new())
            .await
    }

    /// Publishes and waits until the message is durable (transactions).
    pub(super) async fn publish(
        &mut self,
        dest: Destination,
        message: Message,
        dest_text: &str,
    ) -> Result<(), Fatal> {
        let confirmation = self.publish_unconfirmed(dest, message, dest_text).await?;
        confirmation.wait().await.map_err(|e| {
            tracing::warn!(destination = %dest_text, error = %e, "publish refused");
            fatal("message refused", format!("{dest_text}: {e}"))
        })
    }

    /// Publishes; returns what the SEND's receipt must wait for.
    async fn publish_unconfirmed(
        &mut self,
        dest: Destination,
        message: Message,
        dest_text: &str,
    ) -> Result<Confirmation, Fatal> {
        if let Destination::Queue(n) = &dest
            && n.starts_with(PRIVATE_PREFIX)
            && crate::router::reply_target(&dest).is_none()
            && !self.shared.router.core().reaches_queue(n)
        {
            // A reply to a temporary queue whose owner has gone: nobody can receive it.
            crate::rate_warn!(REPLY_DROPPED, destination = %dest_text, message_id = %message.id, "reply to a temporary queue that no longer exists; message dropped");
            return Ok(Confirmation::default());
        }
        let router = self.shared.router.clone();
        let fut = router.publish_unconfirmed(dest, message);
        tokio::pin!(fut);
        let notify = Arc::clone(&self.notify);
        loop {
            tokio::select! {
                r = &mut fut => {
                    return r.map(|(_, c)| c).map_err(|e| {
                        tracing::warn!(destination = %dest_text, error = %e, "publish refused");
                        fatal("message refused", format!("{dest_text}: {e}"))
                    });
                }
                // Keep delivering while the core holds us back.
                _ = notify.notified() => self.deliver().await?,
            }
        }
    }
}
