//! The MQTT 3.1.1 / 5.0 listener, over TCP and WebSocket.
//!
//! `codec` wraps the `rmqtt-codec` crate behind version-neutral packet types, `convert`
//! maps PUBLISH to and from the canonical message, `state` holds what outlives a
//! connection (sessions by client id, retained messages), `session` runs one connection,
//! `offline` runs a session no client holds (delayed will, expiry), `roaming` moves
//! sessions between the routers of a cluster and `orphans` takes over the sessions of a
//! dead one.

pub mod codec;
pub mod convert;
pub mod offline;
pub mod orphans;
pub mod persist;
pub mod roaming;
pub mod server;
pub mod session;
pub mod state;
