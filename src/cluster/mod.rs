//! Cluster mode: several routers over one NATS JetStream cluster share their
//! membership, one route table, durable queues and topics, MQTT persistent sessions and
//! retained messages, the links' queues and leases (docs/cluster.md).
//!
//! - [`connection`]: the NATS connection and the KV buckets (`SB_NODES`, `SB_ROUTES`,
//!   `SB_RETAINED`, `SB_SESSIONS`, `SB_LEASES`).
//! - [`leases`]: the core's leases (one router at a time runs the XMPP link) over
//!   `SB_LEASES`: taken by create, kept by compare-and-set, expired by `max_age`.
//! - [`claims`]: the core's `Claims` over `SB_SESSIONS`: MQTT session records written
//!   by compare-and-set on the key's revision.
//! - [`membership`]: this router's key in `SB_NODES`, refreshed while it runs; the
//!   others' keys are the routers seen.
//! - [`table`]: a route directory as one KV value (`switchboard routes push` writes it).
//! - [`follow`]: every router watches that value and swaps its live table, as a reload.
//! - [`table_edit`]: one file of that table changed over the admin API, by
//!   compare-and-set on the revision read.
//! - [`replicated`]: metadata kept for every router in a KV bucket, mirrored by its
//!   owner (MQTT retained messages).
//! - [`node`]: the running router's side, [`Cluster`], for start-up and `GET /cluster`.
//! - [`shared`]: the core's [`Shared`](crate::core::Shared): which queues live in
//!   JetStream ([`queue_link`], published through an [`outbox`]), topics across
//!   routers, reply addresses across routers ([`reply`]); [`names`] maps our names
//!   onto NATS's.
//!
//! Wiring-level: it builds on the routes' live table and the settings, and implements
//! the core's seam to the cluster (`core/shared.rs`); nothing below (core, store,
//! routes, the edges) knows NATS exists.

mod claims;
pub mod connection;
mod follow;
mod leases;
mod membership;
mod mirror_ledger;
mod names;
mod node;
mod outbox;
pub mod push;
mod queue_link;
mod replicated;
mod reply;
mod shared;
pub mod table;
mod table_edit;

pub use node::Cluster;
pub use shared::SharedCluster;
pub use table_edit::TableEditError;
