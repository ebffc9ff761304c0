//! Switchboard: a multi-protocol message router.
pub mod admin;
pub mod alloc;
pub mod app;
pub mod auth;
pub mod config;
pub mod core;
pub mod duration;
pub mod link;
pub mod listener;
pub mod random;
pub mod ratelog;
pub mod router;
pub mod routes;
pub mod store;
pub mod tls;
pub mod translate;
pub mod watermark;
