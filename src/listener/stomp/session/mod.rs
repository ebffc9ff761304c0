//! One STOMP connection: the protocol state machine between a frame transport and the
//! router/core.
//!
//! Flow: wait for CONNECT/STOMP (negotiate version, authenticate, agree heart-beats),
//! then serve frames and push deliveries until DISCONNECT, an error, a heart-beat
//! timeout or shutdown. Every subscription is a core [`Consumer`]; they share one
//! [`Notify`], so the session waits on one thing and drains every consumer when woken.
//! Dropping the session drops the consumers: whatever was delivered and not acknowledged
//! goes back to its queue, marked redelivered.
//!
//! Publishing waits for the core (backpressure) but keeps delivering meanwhile, so a
//! client that publishes into a full queue it also consumes from cannot deadlock itself.
//!
//! `Connection` (in `connection`) holds the state and runs the serve loop; each frame's
//! handling has a file of its own (`connect`, `send`, `send_run`, `subscribe`, `ack`,
//! `transaction`, `receipt`), as do deliveries (`deliver`) and temporary queues (`temp_queue`).
//!
//! [`Consumer`]: crate::core::Consumer
//! [`Notify`]: tokio::sync::Notify

mod ack;
mod connect;
mod connection;
mod deliver;
mod fatal;
mod headers;
mod receipt;
mod send;
mod send_run;
mod settings;
mod subscribe;
mod temp_queue;
mod transaction;
mod transport;

pub use connection::{refuse, run};
pub use settings::{Shared, StompSettings};
pub use transport::Transport;
