//! External links: connections the router makes to other brokers (AMQP) and servers
//! (XMPP). Each link runs under its own supervisor task ([`supervise`]) that reconnects
//! with backoff; messages for a link wait in its core queue (`$sb.link.NAME`, bounded)
//! meanwhile.
//!
//! [`LinkStatus`] is what operators see: logs, and `GET /links` on the admin API.

pub mod amqp;
mod backoff;
mod queues;
mod registry;
mod settings;
mod status;
mod supervise;
pub mod xmpp;

pub use backoff::Backoff;
pub use queues::{declare_link_queues, link_queue};
pub use registry::Links;
pub(crate) use settings::SettingsCheck;
pub use status::{LinkCounters, LinkState, LinkStatus};
pub(crate) use supervise::{Supervised, supervise};
