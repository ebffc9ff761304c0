//! The XMPP link, of two kinds sharing everything above the connection:
//!
//! - `xmpp`: an external component (XEP-0114) that serves a domain, so that every JID
//!   in it (`orders@bridge.example.org`) is an address the route table maps
//!   ([`component`]);
//! - `xmpp_client`: an ordinary account (a bot, `bot@example.org`) that logs in with
//!   SASL over TLS, binds a resource, keeps a roster and acknowledges with stream
//!   management (XEP-0198) ([`c2s`]).
//!
//! Both connections are ours, on tokio-xmpp's XML stream: stream errors are logged
//! with their condition, a stanza that does not parse is skipped, a quiet stream is
//! pinged. A supervisor reconnects with capped, jittered backoff, while messages for
//! XMPP wait in the link's core queue (bounded). One build holds both: stanzas are
//! `jabber:client` throughout, and the component stream renames them at its edge
//! ([`accept_ns`]).
//!
//! Delivery: XEP-0114 has no acknowledgements, so a message counts as sent once the
//! component stream has written it; it is acked in the core then. A client with stream
//! management acks it once the server's `<a/>` covers it, and sends it again on the
//! resumed (or, failing that, the next) stream otherwise ([`conn`], [`sm`]). A message
//! from an XMPP user is answered with a receipt (XEP-0184, when asked for) only after
//! the core accepted it, and with an error stanza when it cannot be routed — never
//! silence.

mod accept_ns;
mod availability;
mod c2s;
mod client_settings;
mod client_tls;
mod commands;
mod component;
mod conn;
pub mod convert;
mod header_version;
mod inbound;
mod iq;
mod link;
mod outbound;
mod presence;
pub mod pubsub;
pub mod pubsub_events;
mod push_caps;
mod rooms;
mod roster;
mod session;
pub mod settings;
mod sm;

pub use client_settings::RawXmppClientLink;
pub use link::spawn;
pub use presence::{META_XMPP_PUSH, PUSH_PREFIX};
pub use settings::{RawXmppLink, XmppLinkSettings};
