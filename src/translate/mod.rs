//! Protocol models ⇄ the canonical message and internal names: pure functions, no I/O.
//!
//! Each edge owns one file here. The address conventions (how an MQTT topic or a STOMP
//! destination spells an internal destination) live here too, because the route compiler
//! needs them to turn protocol-flavoured route sources and targets into internal ones.

pub mod body;
pub mod escape;
pub mod loss;
pub mod mqtt;
pub mod mqtt_names;
pub mod stomp;
pub mod stomp_names;
