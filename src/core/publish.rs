//! The ways to publish: one message or a batch, to one destination or a list, waiting
//! for room or never, confirmed once durable or at once. Each resolves its destination
//! and hands its messages to the fan-out ([`super::fanout`]).

use std::sync::Arc;

use super::destination::Destination;
use super::durable::Confirmation;
use super::fanout::{Sender, Targets};
use super::message::Message;
use super::{Core, PublishError};

impl Core {
    /// Publishes one message. Waits while a `block` destination is full (backpressure).
    /// Returns how many queues received it (0 for a topic nobody subscribes to).
    pub async fn publish(
        &self,
        destination: &Destination,
        message: Message,
    ) -> Result<usize, PublishError> {
        self.publish_arc(destination, Arc::new(message)).await
    }

    /// Publishes one message to several destinations (a destination list).
    pub async fn publish_all(
        &self,
        destinations: &[Destination],
        message: Message,
    ) -> Result<usize, PublishError> {
        let message = Arc::new(message);
        let mut n = 0;
        for d in destinations {
            n += self.publish_arc(d, Arc::clone(&message)).await?;
        }
        Ok(n)
    }

    /// [`Core::publish`] for an already shared message.
    pub async fn publish_arc(
        &self,
        destination: &Destination,
        message: Arc<Message>,
    ) -> Result<usize, PublishError> {
        let (n, confirmation) = self.publish_unconfirmed(destination, message).await?;
        confirmation.wait().await?;
        Ok(n)
    }

    /// Publishes and returns at once with what must still become durable before the
    /// publisher may be confirmed (see [`Confirmation`]). The message is already in
    /// its queues (and may be delivered) when this returns.
    pub async fn publish_unconfirmed(
        &self,
        destination: &Destination,
        message: Arc<Message>,
    ) -> Result<(usize, Confirmation), PublishError> {
        let to = self.targets(destination)?;
        let reached = self
            .fan_out(&to, destination, &[message], Sender::Confirmed)
            .await?;
        Ok((reached.deliveries, Confirmation::new(reached.waits)))
    }

    /// Publishes several messages to one destination, in order, taking each queue's lock
    /// once per batch instead of once per message (the fast path for a session that
    /// decoded many frames from one read, and for fan-out). Same semantics as calling
    /// [`Core::publish`] for each message. Returns the number of deliveries made.
    pub async fn publish_batch(
        &self,
        destination: &Destination,
        messages: Vec<Message>,
    ) -> Result<usize, PublishError> {
        let messages: Vec<Arc<Message>> = messages.into_iter().map(Arc::new).collect();
        let (n, confirmation) = self
            .publish_batch_unconfirmed(destination, &messages)
            .await?;
        confirmation.wait().await?;
        Ok(n)
    }

    /// [`Core::publish_batch`] that returns once the messages are in their queues, with
    /// what must become durable before their publisher may be confirmed. A named queue
    /// refusing one message (full, too large) fails the batch there, the messages before
    /// it kept: publish to a named queue one by one where each message must be answered
    /// on its own.
    pub async fn publish_batch_unconfirmed(
        &self,
        destination: &Destination,
        messages: &[Arc<Message>],
    ) -> Result<(usize, Confirmation), PublishError> {
        let to = self.targets(destination)?;
        let reached = self
            .fan_out(&to, destination, messages, Sender::Confirmed)
            .await?;
        Ok((reached.deliveries, Confirmation::new(reached.waits)))
    }

    /// Puts a message into one named queue, labelled with `destination` (what its consumer
    /// sees as where it was published), without routing and without waiting: an edge
    /// replaying something to one subscriber (an MQTT retained message) uses it.
    pub fn enqueue(
        &self,
        queue: &str,
        destination: &Destination,
        message: Arc<Message>,
    ) -> Result<(), PublishError> {
        let q = self
            .queue(queue)
            .ok_or_else(|| PublishError::NotFound(Destination::queue(queue)))?;
        self.fan_out_now(
            &Targets::Queue(q),
            destination,
            &[message],
            Sender::Unconfirmed,
        )?;
        Ok(())
    }

    /// Another router's publish to `topic` (as it arrived from the cluster), for this
    /// router's local subscriptions only: never shared again, never waiting (a full
    /// subscription loses it as for a local publish). Returns how many took it.
    pub fn deliver_remote(&self, destination: &Destination, message: Message) -> usize {
        let Destination::Topic(topic) = destination else {
            return 0;
        };
        let to = Targets::Subscriptions(self.match_topic(topic));
        self.fan_out_now(&to, destination, &[Arc::new(message)], Sender::Remote)
            .map(|r| r.deliveries)
            .unwrap_or(0)
    }

    /// Publishes without ever waiting: a full `block` destination fails with
    /// [`PublishError::Full`].
    pub fn try_publish(
        &self,
        destination: &Destination,
        message: Message,
    ) -> Result<usize, PublishError> {
        let to = self.targets(destination)?;
        let reached =
            self.fan_out_now(&to, destination, &[Arc::new(message)], Sender::Unconfirmed)?;
        Ok(reached.deliveries)
    }
}
