//! The AMQP 0-9-1 link (RabbitMQ, via `lapin`).
//!
//! One supervisor task per link: connect, declare the routes' topology, run the
//! inbound consumers and the outbound publisher, and when anything fails at connection
//! level, tear the session down and reconnect with capped, jittered backoff. We do not
//! use lapin's own auto-recovery: one loop that rebuilds everything from the current
//! route table is easier to reason about, and it picks up route changes for free.
//!
//! Delivery guarantees (at least once both ways):
//! - inbound: `basic.ack` to RabbitMQ only after the core accepted the message; a
//!   message the route cannot translate is `basic.reject`ed without requeue (RabbitMQ
//!   dead-letters it where the queue has a dead-letter exchange);
//! - outbound: the core's link queue is consumed with manual acks; a message is acked
//!   in the core only after RabbitMQ's publisher confirm. Unconfirmed messages go back
//!   to the core queue when the connection drops and are published again (counted as
//!   `republished`).
//!
//! Clustered (docs/cluster.md, "Links"), every router may run the link: RabbitMQ
//! spreads an inbound queue's messages among the routers' consumers, and the link
//! queue lives in the cluster, so whichever router's link takes a message publishes it
//! and acks it to the cluster after the confirm (a router that dies leaves its
//! unconfirmed ones to another). The topology is declared by one router per change
//! (`declared_once.rs`), not by every router on every connection.

pub mod convert;
mod declared_once;
mod inbound;
mod link;
mod outbound;
mod session;
pub mod settings;
mod topology;

pub use link::spawn;
pub use settings::{AmqpLinkSettings, RawAmqpLink};
