//! Switchboard: a multi-protocol message router.
pub mod core;
