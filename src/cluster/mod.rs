//! Cluster mode, part 1: several routers over one NATS JetStream cluster share their
//! membership and one route table (docs/cluster.md). Queues, topics and MQTT sessions
//! are still each router's own.
//!
//! - [`connection`]: the NATS connection and the KV buckets (`SB_NODES`, `SB_ROUTES`).
//! - [`membership`]: this router's key in `SB_NODES`, refreshed while it runs; the
//!   others' keys are the routers seen.
//! - [`table`]: a route directory as one KV value (`switchboard routes push` writes it).
//! - [`follow`]: every router watches that value and swaps its live table, as a reload.
//! - [`node`]: the running router's side, [`Cluster`], for start-up and `GET /cluster`.
//!
//! Wiring-level: it builds on the routes' live table and the settings; nothing below
//! (core, store, routes, the edges) knows it exists.

mod claims;
pub mod connection;
mod follow;
mod membership;
mod names;
mod node;
mod outbox;
pub mod push;
mod queue_link;
mod shared;
pub mod table;

pub use node::Cluster;
pub use shared::SharedCluster;
