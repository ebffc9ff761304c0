//! What every edge shares when it turns its protocol into the canonical message: pure
//! functions, no I/O.
//!
//! Each protocol's own conversion lives beside its edge (`listener/stomp/convert.rs`,
//! `listener/mqtt/convert.rs`, `link/amqp/convert.rs`, `link/xmpp/convert.rs`), because it
//! speaks that edge's frame or packet types. Here stay the pieces several layers need:
//! the address conventions (how an MQTT topic or a STOMP destination spells an internal
//! destination, which the route compiler needs as much as the listeners), level escaping,
//! body conversion, the record of what a conversion could not carry (`loss`) and of what
//! each edge moved (`traffic`), and W3C trace context (`trace`).

pub mod body;
pub mod escape;
pub mod loss;
pub mod mqtt_names;
pub mod stomp_names;
pub mod trace;
pub mod traffic;
