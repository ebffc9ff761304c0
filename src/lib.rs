//! Switchboard: a multi-protocol message router.
//!
//! # Layout
//!
//! Imports point one way, from the outside world in; `tests/layering.rs` reads the
//! sources and fails on an import against it:
//!
//! ```text
//! wiring   app, admin, config, watermark, cluster, systemd, main   builds and connects everything below
//! edges    listener/ (stomp, mqtt), link/ (amqp, xmpp)   protocols, one folder each
//! auth     users, passwords, permissions, who owns an internal name
//! router   the route table in front of the core: publish = resolve routes + hand to core
//! routes   route files → validated, immutable table, swapped atomically on reload
//! translate  what several edges share: names, escaping, body formats, the loss record
//! core     queues, topics, subscriptions, the canonical message; knows no protocol
//! store    durable bytes behind a trait (the file journal today); knows no message
//! ```
//!
//! Leaf modules (`ratelog`, `counter`, `alloc`, `fd_limit`, `tls`, `duration`, `random`) import nothing of the
//! crate and serve every layer. Edges never import each other: what two need moves down.
//!
//! Where to look:
//!
//! - A message's path: an edge's session decodes a frame and converts it
//!   (`listener/*/convert.rs`, `link/*/convert.rs`) into a [`core::Message`], publishes
//!   through [`router::Router`], which resolves [`routes`] and fans out in
//!   [`core`] (`core/fanout.rs`) into queues (`core/queue.rs`); a consumer
//!   ([`core::Consumer`]) takes deliveries and the edge converts them back out.
//! - Durability: `core/durable.rs` and `core/persist.rs` encode persistent messages
//!   into a [`store::Store`]; the publisher's confirmation waits for it in order
//!   ([`listener::confirm`]).
//! - Links reconnect under one supervisor (`link/supervise.rs`); their state is
//!   `GET /links` on the admin API.
//! - A folder's main type sits in a file named after it (`core/broker.rs` for
//!   [`core::Core`], `store/file_journal.rs`, `listener/stomp/session/connection.rs`);
//!   its `mod.rs` holds only docs, module lines and re-exports.
pub mod admin;
pub mod alloc;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod core;
pub mod counter;
pub mod duration;
pub mod fd_limit;
pub mod link;
pub mod listener;
pub mod random;
pub mod ratelog;
pub mod router;
pub mod routes;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod translate;
pub mod watermark;
