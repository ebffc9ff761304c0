//! What a STOMP listener's sessions are configured with and share.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::listener::stomp::codec::Limits;
use crate::router::Router;

/// STOMP listener settings.
#[derive(Debug, Clone)]
pub struct StompSettings {
    /// What the server offers: (can send every ms, wants to receive every ms).
    pub heart_beat: (u64, u64),
    pub limits: Limits,
    pub max_subscriptions: usize,
    pub max_connections: usize,
    /// Prefetch of a subscription without a `prefetch-count` header.
    pub default_prefetch: usize,
    /// Most frames buffered in one transaction.
    pub max_transaction_frames: usize,
    /// Most open transactions per connection.
    pub max_transactions: usize,
    /// Most bytes buffered in the open transactions of one connection (all together).
    pub max_transaction_bytes: usize,
    /// Most bytes of messages delivered (or assigned) to one connection and not yet
    /// acknowledged, over all its subscriptions; beyond it deliveries are withheld.
    pub max_unacked_bytes: usize,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// How long a connection that sends no heart-beats may stay without traffic either way
    /// before it is closed (`None`: forever). Without it, connections that negotiated
    /// `heart-beat:0,0` hold listener slots for good.
    pub idle_timeout: Option<Duration>,
}

impl Default for StompSettings {
    fn default() -> Self {
        Self {
            heart_beat: (10_000, 10_000),
            limits: Limits::default(),
            max_subscriptions: 1024,
            max_connections: 10_000,
            default_prefetch: 100,
            max_transaction_frames: 10_000,
            max_transactions: 64,
            max_transaction_bytes: 16 * 1024 * 1024,
            max_unacked_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// What every session of one listener shares.
#[derive(Debug)]
pub struct Shared {
    pub router: Router,
    pub auth: Arc<Auth>,
    pub settings: StompSettings,
    /// The listener is bound to loopback (anonymous policy).
    pub loopback: bool,
}
