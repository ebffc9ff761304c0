//! The STOMP 1.0–1.2 listener, over TCP and WebSocket.
//!
//! `codec` turns bytes into frames (hand-written: no maintained server-side STOMP crate
//! exists), `convert` maps frames to and from the canonical message, `session` runs the
//! protocol state machine against the router and the core, `crate::listener::ws` adapts
//! a WebSocket to the same frame stream.

pub mod codec;
pub mod convert;
pub mod frame;
pub mod server;
pub mod session;
