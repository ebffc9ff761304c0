//! The serde mirror of the settings file. No logic; see `docs/configuration.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::LogFormat;
use crate::core::{ExpiredAction, Overflow};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Directory of route files, relative to the settings file.
    pub routes_dir: Option<String>,
    /// Listener name → `HOST:PORT`, or `off`.
    #[serde(default)]
    pub listeners: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub queues: RawQueues,
    #[serde(default)]
    pub links: BTreeMap<String, RawLink>,
    pub log: Option<RawLog>,
    pub auth: Option<RawAuth>,
    /// Listener name → certificate and key: that listener speaks TLS.
    #[serde(default)]
    pub tls: BTreeMap<String, RawTls>,
    pub stomp: Option<RawStomp>,
    pub mqtt: Option<RawMqtt>,
    pub sweep_interval: Option<String>,
    pub shutdown_grace: Option<String>,
    pub durability: Option<RawDurability>,
    /// Limits on the route table (the route files themselves hold only routes).
    pub routes: Option<RawRoutes>,
    pub connections: Option<RawConnections>,
    /// Join a NATS JetStream cluster (docs/cluster.md).
    pub cluster: Option<RawCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `nats://HOST:PORT` URLs.
    pub servers: Option<Vec<String>>,
    /// This router's name in the cluster.
    pub node: Option<String>,
    /// Replicas of the buckets (1..5).
    pub replicas: Option<usize>,
    /// Put before every bucket name.
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutes {
    /// Most legs one publish may turn into, worst case (0: no limit).
    pub max_fanout: Option<u64>,
}

/// Admission limits per peer address, on every listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnections {
    /// Connections open at once from one address, per listener (0: no limit).
    pub max_per_ip: Option<u32>,
    /// New connections per second from one address, per listener (0: no limit).
    pub connect_rate: Option<f64>,
    /// Connections one address may open at once before the rate applies.
    pub connect_burst: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDurability {
    /// `always`, or `interval DURATION` (e.g. `interval 10ms`).
    pub fsync: Option<String>,
    /// Bytes of queued messages above which publishers are blocked.
    pub memory_high_watermark: Option<u64>,
    /// Free bytes on the data directory's disk below which publishers are blocked.
    pub disk_free_limit: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueues {
    pub auto_create: Option<bool>,
    #[serde(default)]
    pub defaults: RawQueue,
    #[serde(default)]
    pub subscription_defaults: RawQueue,
    #[serde(default)]
    pub named: BTreeMap<String, RawQueue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub max_length: Option<usize>,
    pub max_bytes: Option<usize>,
    pub overflow: Option<Overflow>,
    pub ttl: Option<String>,
    pub expired: Option<ExpiredAction>,
    pub dead_letter: Option<String>,
    pub max_deliveries: Option<u32>,
}

/// External links: `NAME: {amqp: …}`, `NAME: {xmpp: …}` or `NAME: {xmpp_client: …}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum RawLink {
    Amqp(Box<crate::link::amqp::RawAmqpLink>),
    Xmpp(Box<crate::link::xmpp::RawXmppLink>),
    #[serde(rename = "xmpp_client")]
    XmppClient(Box<crate::link::xmpp::RawXmppClientLink>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
    /// Start a W3C trace for messages published without a `traceparent`.
    pub start_traces: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `loopback` (default), `always` or `never`.
    pub anonymous: Option<crate::auth::Anonymous>,
    pub anonymous_publish: Option<Vec<String>>,
    pub anonymous_subscribe: Option<Vec<String>>,
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    /// Admin API bearer tokens, as `sha256:HEX` digests of the tokens (never the tokens).
    pub admin_tokens: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// argon2 PHC string from `switchboard passwd`.
    pub password_hash: String,
    /// Allow-list of patterns (default: everything).
    pub publish: Option<Vec<String>>,
    pub subscribe: Option<Vec<String>>,
    /// May use the admin API (HTTP Basic with this user's password).
    pub admin: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStomp {
    /// `SEND_MS,RECEIVE_MS` offered to clients (default `10000,10000`).
    pub heart_beat: Option<String>,
    pub max_frame_size: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_header_length: Option<usize>,
    pub max_subscriptions: Option<usize>,
    pub max_connections: Option<usize>,
    /// Prefetch of subscriptions without a `prefetch-count` header.
    pub prefetch: Option<usize>,
    /// A duration (`5m`) or `off`: how long a connection without heart-beats may idle.
    pub idle_timeout: Option<String>,
    /// Most unacknowledged bytes per connection.
    pub max_unacked_bytes: Option<usize>,
    /// Most bytes buffered in a connection's open transactions.
    pub max_transaction_bytes: Option<usize>,
    /// Most open transactions per connection.
    pub max_transactions: Option<usize>,
    /// Origins (`https://app.example.com`) whose pages may open the WebSocket listener,
    /// besides its own; `*`: any.
    pub ws_allowed_origins: Option<Vec<String>>,
    /// Browsers (an upgrade with an `Origin`) may connect anonymously on loopback.
    pub ws_allow_anonymous_browsers: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    pub max_packet_size: Option<u32>,
    /// QoS 1/2 messages in flight to one client (its Receive Maximum caps it further).
    pub max_inflight: Option<u16>,
    /// Messages kept per session while the client is offline or slow.
    pub max_queued: Option<usize>,
    pub max_retained: Option<usize>,
    /// Most bytes of retained messages in all.
    pub max_retained_bytes: Option<u64>,
    /// Most topic filters per session.
    pub max_subscriptions: Option<usize>,
    pub max_connections: Option<usize>,
    /// Longest keep-alive accepted, seconds (0: any).
    pub max_keep_alive: Option<u16>,
    /// Idle time after which a plain TCP connection waits in the shared poller
    /// (a duration, or `off`).
    pub park_idle_after: Option<String>,
    /// As `stomp.ws_allowed_origins`, for the `mqtt-ws` listener.
    pub ws_allowed_origins: Option<Vec<String>>,
    /// As `stomp.ws_allow_anonymous_browsers`, for the `mqtt-ws` listener.
    pub ws_allow_anonymous_browsers: Option<bool>,
}
