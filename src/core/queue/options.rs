//! The limits and policies a queue is declared with, and how its consumers acknowledge.

use std::time::Duration;

use crate::core::destination::Destination;

/// What a full queue does with the next publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// The publisher waits until there is room (backpressure up to the edge, which stops
    /// reading its socket or withholds credit).
    #[default]
    Block,
    /// The publisher gets an error at once (STOMP ERROR, MQTT 5 quota-exceeded, AMQP nack).
    RejectPublish,
    /// The oldest ready message is removed (to the dead-letter destination when one is
    /// set) to make room.
    DropHead,
}

/// What happens to a message whose TTL has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiredAction {
    /// To the dead-letter destination if the queue has one, else dropped (and counted).
    #[default]
    DeadLetter,
    /// Dropped (and counted).
    Drop,
}

/// How a consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Handing a message to the consumer acknowledges it (at most once past this point).
    Auto,
    /// The consumer acks or nacks each delivery by tag.
    Manual,
}

/// Limits and policies of one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueOptions {
    /// Most ready messages held.
    pub max_length: usize,
    /// Most bytes held: ready messages and those assigned to consumers and not yet
    /// acknowledged (approximate, see [`Message::byte_size`](crate::core::Message::byte_size)).
    pub max_bytes: usize,
    pub overflow: Overflow,
    /// Time-to-live applied to every message on enqueue (the shorter of this and the
    /// message's own expiry wins).
    pub ttl: Option<Duration>,
    pub expired: ExpiredAction,
    /// Where rejected, expired, over-delivered and overflowed messages go.
    pub dead_letter: Option<Destination>,
    /// After this many deliveries without an ack, a message is dead-lettered instead of
    /// being requeued again.
    pub max_deliveries: Option<u32>,
    /// Survives restarts (with the durability feature) and consumer absence.
    pub durable: bool,
    /// Deleted when its last consumer goes (non-durable subscriptions, temp queues).
    pub auto_delete: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_length: 100_000,
            max_bytes: 256 * 1024 * 1024,
            overflow: Overflow::Block,
            ttl: None,
            expired: ExpiredAction::DeadLetter,
            dead_letter: None,
            max_deliveries: None,
            durable: true,
            auto_delete: false,
        }
    }
}
