//! The XMPP link: an external component (XEP-0114) that serves a domain, so that every
//! JID in it (`orders@bridge.example.org`) is an address the route table maps.
//!
//! The connection is ours ([`stream`], on tokio-xmpp's XML stream): stream errors are
//! logged with their condition, a stanza that does not parse is skipped, a quiet
//! stream is pinged. A supervisor reconnects with capped, jittered backoff, while
//! messages for XMPP wait in the link's core queue (bounded).
//!
//! Delivery: XEP-0114 has no acknowledgements, so a message counts as sent once the
//! component stream has written it; it is acked in the core then. A message from an
//! XMPP user is answered with a receipt (XEP-0184, when asked for) only after the core
//! accepted it, and with an error stanza when it cannot be routed — never silence.

mod accept_ns;
mod availability;
pub mod convert;
mod header_version;
mod inbound;
mod iq;
mod link;
mod outbound;
mod presence;
mod rooms;
mod session;
pub mod settings;
mod stream;

pub use link::spawn;
pub use presence::{META_XMPP_PUSH, PUSH_PREFIX};
pub use settings::{RawXmppLink, XmppLinkSettings};
