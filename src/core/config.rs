//! The core's settings: the options of the queues it creates, by name or by default,
//! and whether it creates them on demand.

use std::collections::HashMap;

use super::queue::{Overflow, QueueOptions};

/// Core settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Options of queues created on demand.
    pub default_queue: QueueOptions,
    /// Options of the private queues behind non-durable subscriptions.
    pub default_subscription: QueueOptions,
    /// Options by exact queue name, applied when the queue is created.
    pub queues: HashMap<String, QueueOptions>,
    /// Create a queue on first publish or consume (as Artemis and RabbitMQ's STOMP do).
    pub auto_create_queues: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            default_queue: QueueOptions::default(),
            // A slow subscriber must not hold back the publisher and so every other
            // subscriber: its buffer drops its oldest message (dead-lettered when a
            // dead-letter destination is set, else counted and logged).
            default_subscription: QueueOptions {
                max_length: 10_000,
                overflow: Overflow::DropHead,
                durable: false,
                auto_delete: true,
                ..QueueOptions::default()
            },
            queues: HashMap::new(),
            auto_create_queues: true,
        }
    }
}
