//! The one canonical message every edge converts into and out of.
//!
//! Edges (STOMP, MQTT, AMQP, XMPP) translate their wire model into a [`Message`] when a
//! message enters the router and back out when it leaves; nothing inside the core knows a
//! protocol. The body is a [`Bytes`], so a message fanned out to a thousand subscribers is
//! a thousand reference-count bumps, never a thousand copies, and it is never re-encoded
//! unless a route explicitly asks for a body conversion.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::destination::Destination;

/// Ordered header list: repeated names are allowed and order is kept, because STOMP
/// (repeated headers, first wins), MQTT 5 user properties (repeats allowed, order
/// significant) and AMQP tables all need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The first value stored under `name` (STOMP's "first wins" rule).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value stored under `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a value, keeping any earlier values under the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every value under `name` with one value, at the position of the first.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter().position(|(k, _)| k == name) {
            Some(i) => {
                self.0[i].1 = value;
                let mut seen = false;
                self.0.retain(|(k, _)| {
                    if k != name {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Removes every value under `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != name);
        before - self.0.len()
    }

    /// Renames every header called `from` to `to`, keeping positions.
    pub fn rename(&mut self, from: &str, to: &str) {
        for (k, _) in self.0.iter_mut() {
            if k == from {
                *k = to.to_owned();
            }
        }
    }

    /// Keeps the headers for which `keep(name, value)` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.0.retain(|(k, v)| keep(k, v));
    }

    /// Visits every header with its name and value open to change, in order.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut String, &mut String)) {
        for (k, v) in self.0.iter_mut() {
            f(k, v);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Approximate heap size, used for the queues' byte limits.
    pub fn byte_size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len() + 16).sum()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Where a message entered the router: the protocol's name and the peer's identity
/// (user, client id, JID, link name). Kept as plain strings so the core stays
/// protocol-agnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub protocol: Arc<str>,
    pub peer: Arc<str>,
}

impl Origin {
    pub fn new(protocol: &str, peer: &str) -> Self {
        Self {
            protocol: protocol.into(),
            peer: peer.into(),
        }
    }

    /// An origin from names the caller already shares: an edge's session keeps its
    /// peer's name as an `Arc<str>` and a protocol name is one of a few, so stamping
    /// every message costs two reference counts instead of two allocations.
    pub fn shared(protocol: &'static str, peer: Arc<str>) -> Self {
        static NAMES: std::sync::OnceLock<[Arc<str>; 4]> = std::sync::OnceLock::new();
        let names =
            NAMES.get_or_init(|| ["mqtt".into(), "stomp".into(), "amqp".into(), "xmpp".into()]);
        let protocol = names
            .iter()
            .find(|n| ***n == *protocol)
            .cloned()
            .unwrap_or_else(|| protocol.into());
        Self { protocol, peer }
    }

    /// Origin of messages the router makes itself (dead letters, presence events).
    /// Shared, so making one costs no allocation.
    pub fn internal() -> Self {
        static INTERNAL: std::sync::OnceLock<Origin> = std::sync::OnceLock::new();
        INTERNAL
            .get_or_init(|| Self::new("internal", "switchboard"))
            .clone()
    }
}

/// The canonical message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Unique id: the publisher's when its protocol carries one, else generated.
    pub id: MessageId,
    /// The payload, byte for byte as received.
    pub body: Bytes,
    /// MIME type of the body, when known.
    pub content_type: Option<String>,
    /// Application headers (STOMP custom headers, MQTT 5 user properties, AMQP headers, SHIM).
    pub headers: Headers,
    /// Correlates a reply with its request.
    pub correlation_id: Option<String>,
    /// Internal destination a reply should be sent to.
    pub reply_to: Option<Destination>,
    /// When the message entered the router (or the publisher's timestamp when carried).
    pub timestamp: SystemTime,
    /// Absolute expiry; `None` never expires (a queue TTL may still apply).
    pub expiry: Option<SystemTime>,
    /// 0 (lowest) to 9 (highest), as in JMS/STOMP/AMQP; 4 is the default.
    pub priority: u8,
    /// Persistent messages are written to the store when their destination is durable.
    pub persistent: bool,
    /// Delivery guarantee the publisher asked for: 0 at most once, 1 at least once,
    /// 2 exactly once. Protocols without the notion publish at 1 (the router accepted
    /// the message and passes it on at least once). A subscriber gets the lower of this
    /// and its own.
    pub qos: u8,
    /// Who published it.
    pub origin: Origin,
    /// What an edge does with fields its protocol cannot carry (set by a route).
    pub loss: Loss,
}

/// What an edge does with the fields of a message that its protocol cannot carry (an
/// MQTT 3.1.1 subscriber has no headers, an XMPP stanza no reply address, …). A route
/// chooses it (`loss:` in the route file); the message carries it to whichever edge
/// delivers it, since a route sending to an internal destination cannot know which
/// protocols will consume from there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Loss {
    /// Leave them out; each one is counted.
    #[default]
    Drop,
    /// Carry them in what the target does have: headers, user properties, SHIM headers,
    /// or (MQTT 3.1.1) a JSON envelope as the payload.
    Encode,
    /// Do not deliver the message: dead-letter it with the reason `untranslatable`.
    Reject,
}

impl Loss {
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::Drop => "drop",
            Loss::Encode => "encode",
            Loss::Reject => "reject",
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn id_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}-{:x}", nanos, std::process::id())
    })
}

/// A message id: the publisher's own (any text), or one the router generated. Generated
/// ids are a process-start prefix (unique across restarts) and a counter, rendered as
/// text only when an edge needs it, so publishing costs no formatting or allocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageId {
    Generated(u64),
    Given(Arc<str>),
}

impl MessageId {
    pub fn generate() -> Self {
        Self::Generated(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }

    pub fn given(text: &str) -> Self {
        Self::Given(text.into())
    }

    /// Does the id render as `text`?
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Self::Given(s) => **s == *text,
            Self::Generated(n) => text
                .strip_prefix(id_prefix())
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| r.parse::<u64>().ok() == Some(*n)),
        }
    }

    /// Length of the rendered id, for memory accounting.
    fn approx_len(&self) -> usize {
        match self {
            Self::Given(s) => s.len(),
            Self::Generated(_) => 40,
        }
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Generated(n) => write!(f, "{}-{n}", id_prefix()),
            Self::Given(s) => f.write_str(s),
        }
    }
}

impl Message {
    /// A new message with a generated id, the current time, default priority 4,
    /// non-persistent, and an internal origin.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            id: MessageId::generate(),
            body: body.into(),
            content_type: None,
            headers: Headers::new(),
            correlation_id: None,
            reply_to: None,
            timestamp: SystemTime::now(),
            expiry: None,
            priority: 4,
            persistent: false,
            qos: 1,
            origin: Origin::internal(),
            loss: Loss::Drop,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(name, value);
        self
    }

    pub fn with_content_type(mut self, ct: &str) -> Self {
        self.content_type = Some(ct.to_owned());
        self
    }

    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// Sets the expiry `ttl` from now.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.expiry = Some(SystemTime::now() + ttl);
        self
    }

    /// Approximate memory footprint, counted against queue byte limits.
    pub fn byte_size(&self) -> usize {
        self.body.len() + self.headers.byte_size() + self.id.approx_len() + 128
    }
}

/// One message handed to one consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// The destination the message was published to (for a topic subscription, the
    /// concrete topic name, which edges need to fill e.g. an MQTT PUBLISH topic).
    pub destination: Destination,
    /// Tag to ack or nack this delivery with; unique within its consumer.
    pub tag: u64,
    /// True when the message was handed out before and not acknowledged.
    pub redelivered: bool,
    /// How many times the message has been handed to a consumer, this time included.
    pub delivery_count: u32,
}
