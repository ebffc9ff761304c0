//! One MQTT connection: CONNECT (version, auth, session takeover and resumption), then
//! PUBLISH flows at QoS 0/1/2 in both directions, SUBSCRIBE/UNSUBSCRIBE (wildcards,
//! shared subscriptions, retained messages), keep-alive, will, DISCONNECT.
//!
//! Inbound, an acknowledgement (PUBACK, PUBREC) is sent only after the router accepted
//! the message. Outbound, a message is acknowledged to the core when the client
//! acknowledged it (PUBACK; PUBREC for QoS 2, after which the PUBREL/PUBCOMP exchange is
//! tracked in the session; PUBCOMP for QoS 2 from a shared queue, see `release`), so a
//! connection lost mid-flight gives the message back to the session queue, redelivered
//! with DUP on the next connection.
//!
//! `Connection` (in `connection`) holds one connection's state and runs its serve loop;
//! `connect` opens or takes over the session, `publish` takes the client's messages,
//! `outbound` sends it the session's, `subscribe` handles its subscriptions, `end`
//! closes the connection (will, session expiry), `park` keeps idle plain-TCP
//! connections in one poller.

pub mod alias;
mod connect;
mod connection;
mod end;
mod outbound;
pub mod park;
mod publish;
mod reason_code;
mod release;
mod stamp;
mod subscribe;
mod transport;

pub(in crate::listener::mqtt) use connect::session_queue_options;
pub use connection::{Accepted, run};
pub(in crate::listener::mqtt) use end::spawn_expiry;
pub use outbound::oversize_dropped;
pub use transport::{Socket, Transport};
