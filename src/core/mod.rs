//! The broker core: queues, topics, subscriptions and delivery.
//!
//! The core knows no protocol (a test in `tests/layering.rs` enforces that it imports
//! nothing from the edges). Edges hand it canonical [`Message`]s addressed to internal
//! [`Destination`]s and take [`Delivery`]s out of [`Consumer`]s.
//!
//! A topic subscription is a private queue bound to one or more patterns: a publish to a
//! topic puts a reference to the same message into every matching subscription queue.
//! So everything a queue offers (credit, acks, redelivery, limits, TTL, dead-lettering)
//! also holds for subscriptions, and a durable subscription is simply a named queue that
//! stays bound while its subscriber is away.
//!
//! [`Core`] (in `broker`) is the handle everything goes through; `publish` holds the
//! ways to publish, `fanout` the one path by which messages enter queues,
//! `subscription` topic subscriptions over the `topics` bindings, `dead_letter` where
//! unacknowledged messages go, `sweeper` periodic TTL expiry, `durable` what the core
//! keeps in the store and `actions` what an operator does to a queue's messages (peek,
//! purge, delete, move, replay).

mod actions;
mod broker;
pub mod budget;
mod config;
pub mod consumer;
mod dead_letter;
pub mod destination;
mod durable;
mod error;
mod fanout;
pub mod flow;
mod kept_meta;
pub mod message;
pub mod pattern;
pub mod persist;
mod publish;
pub mod queue;
pub mod shared;
mod subscription;
mod sweeper;
mod topics;
pub mod trie;

pub use actions::{ActionError, Transfer, TransferFailure, Transferred};
pub use broker::{Core, CoreStats};
pub use budget::{ByteBudget, Held};
pub use config::CoreConfig;
pub use consumer::{Closed, ConsumeOptions, Consumer};
pub use dead_letter::DeadReason;
pub use destination::{Destination, NameError, validate_name};
pub use durable::Confirmation;
pub use error::{CoreError, PublishError};
pub use message::{Delivery, Headers, Loss, Message, MessageId, Origin};
pub use pattern::{Capture, Pattern};
pub use queue::{AckMode, ExpiredAction, Overflow, Peeked, Pick, Queue, QueueOptions, QueueStats};
pub use shared::{Shared, SharedLog};
pub use subscription::PRIVATE_PREFIX;
