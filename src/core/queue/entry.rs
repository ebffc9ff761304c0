//! A message as a queue holds it: where it was published, its deadline, how often it
//! was delivered, and whether (and under which sequence) it is in the store.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use crate::core::dead_letter::{DeadLetter, DeadReason};
use crate::core::destination::Destination;
use crate::core::message::Message;

/// A message inside a queue.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(super) seq: u64,
    pub(super) message: Arc<Message>,
    pub(super) destination: Destination,
    pub(super) deadline: Option<Instant>,
    pub(super) redelivered: bool,
    pub(super) deliveries: u32,
    pub(super) size: usize,
    /// The encoded message, to append to the store when admitted (then dropped).
    pub(super) persist: Option<Bytes>,
    /// In the store under (queue, seq).
    pub(super) stored: bool,
}

impl Entry {
    pub(crate) fn new(
        message: Arc<Message>,
        destination: Destination,
        deadline: Option<Instant>,
    ) -> Self {
        let size = message.byte_size();
        Self::sized(message, destination, deadline, size)
    }

    /// As [`Entry::new`] with the size already known (fan-out computes it once).
    pub(crate) fn sized(
        message: Arc<Message>,
        destination: Destination,
        deadline: Option<Instant>,
        size: usize,
    ) -> Self {
        Self {
            seq: 0,
            message,
            destination,
            deadline,
            redelivered: false,
            deliveries: 0,
            size,
            persist: None,
            stored: false,
        }
    }

    /// To be written to the store (as `bytes`) when a durable queue admits it.
    pub(crate) fn persisted(mut self, bytes: Option<Bytes>) -> Self {
        self.persist = bytes;
        self
    }

    pub(super) fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    pub(crate) fn message(&self) -> &Arc<Message> {
        &self.message
    }

    pub(super) fn into_dead(self, reason: DeadReason) -> DeadLetter {
        DeadLetter {
            message: self.message,
            destination: self.destination,
            reason,
            deliveries: self.deliveries,
            stored: self.stored.then_some(self.seq),
        }
    }
}
