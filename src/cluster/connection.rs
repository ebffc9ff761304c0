//! The NATS connection and the cluster's KV buckets.
//!
//! The connection retries forever once made: a router that loses NATS keeps serving its
//! local traffic, logs the loss and shows it in `GET /cluster` and `/health/ready`.
//! A bucket is created only when missing, so routers configured with other replica
//! counts do not rewrite each other's buckets.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use crate::config::ClusterSettings;

/// The bucket of router keys; a key lives `NODE_TTL` after its last refresh.
pub const NODES_BUCKET: &str = "SB_NODES";
/// The bucket of the route table: key [`TABLE_KEY`], one revision per push.
pub const ROUTES_BUCKET: &str = "SB_ROUTES";
/// The bucket of MQTT retained messages: one key per topic ([`super::names::kv_key`]).
pub const RETAINED_BUCKET: &str = "SB_RETAINED";
/// The bucket of the XMPP link's presence subscriptions: one key per (user, our JID).
pub const XMPP_PUSH_BUCKET: &str = "SB_XMPP_PUSH";
/// The route table's key in [`ROUTES_BUCKET`].
pub const TABLE_KEY: &str = "table";
/// Route tables kept in [`ROUTES_BUCKET`] (the current one and nine before it).
const TABLE_HISTORY: i64 = 10;
/// How long a router's key outlives its last refresh.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// The largest route table: NATS's default `max_payload`. A bigger one is refused by
/// `routes push` (see [`table`](super::table)).
pub const MAX_TABLE_BYTES: usize = 1024 * 1024;

/// Connects to the cluster as `name`. Fails when no server answers now; later losses
/// are retried without end.
pub async fn connect(settings: &ClusterSettings, name: &str) -> Result<async_nats::Client, String> {
    let servers = settings.servers.clone();
    async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(3))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("cluster: connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!(
                    "cluster: NATS connection lost; reconnecting (local traffic is still served)"
                ),
                async_nats::Event::Closed => tracing::debug!("cluster: NATS connection closed"),
                other => tracing::warn!(event = %other, "cluster: NATS event"),
            }
        })
        .connect(servers.as_slice())
        .await
        .map_err(|e| {
            format!(
                "cannot connect to the NATS cluster {}: {e}",
                settings.servers.join(",")
            )
        })
}

/// The bucket's full name under the settings' prefix.
pub fn bucket_name(settings: &ClusterSettings, bucket: &str) -> String {
    format!("{}{bucket}", settings.prefix)
}

/// Replicas for a new bucket: as configured, at most one per server known (those given,
/// or those the server announced, whichever is more).
pub(super) fn replicas(settings: &ClusterSettings, client: &async_nats::Client) -> usize {
    let known = settings
        .servers
        .len()
        .max(client.server_info().connect_urls.len())
        .max(1);
    settings.replicas.min(known)
}

/// Opens `bucket`, creating it with `config` (name and replicas filled in) if missing.
async fn open(
    js: &jetstream::Context,
    settings: &ClusterSettings,
    client: &async_nats::Client,
    bucket: &str,
    config: kv::Config,
) -> Result<kv::Store, String> {
    let name = bucket_name(settings, bucket);
    let config = kv::Config {
        bucket: name.clone(),
        num_replicas: replicas(settings, client),
        ..config
    };
    patiently(|| async {
        if let Ok(store) = js.get_key_value(&name).await {
            return Ok(store);
        }
        match js.create_key_value(config.clone()).await {
            Ok(store) => Ok(store),
            // Another router created it meanwhile.
            Err(e) => js
                .get_key_value(&name)
                .await
                .map_err(|_| format!("cannot open or create the KV bucket {name}: {e}")),
        }
    })
    .await
}

/// How long start-up keeps asking a NATS cluster that refuses for a moment.
const START_PATIENCE: Duration = Duration::from_secs(15);

/// Runs `attempt` until it succeeds, for up to [`START_PATIENCE`]. A NATS cluster that
/// is itself starting, or has just had a node restarted, refuses for a moment what it
/// will do a second later (`no suitable peers for placement, peer offline`, `503 no
/// responders` while a leader is elected): a router starting then waits instead of
/// failing.
pub(super) async fn patiently<T, F, Fut>(mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "cluster: refused at start-up; asking again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The bucket of router keys.
pub async fn nodes_bucket(
    js: &jetstream::Context,
    settings: &ClusterSettings,
    client: &async_nats::Client,
) -> Result<kv::Store, String> {
    let config = kv::Config {
        description: "Switchboard routers: one key per router, refreshed every 2 s".into(),
        history: 1,
        max_age: NODE_TTL,
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    };
    open(js, settings, client, NODES_BUCKET, config).await
}

/// The bucket of leases: one key per lease, naming its holder; a key lives
/// [`LEASE_TTL`](super::leases::LEASE_TTL) after its last renewal.
pub const LEASES_BUCKET: &str = "SB_LEASES";

/// The bucket of leases (see [`super::leases`]).
pub async fn leases_bucket(
    js: &jetstream::Context,
    settings: &ClusterSettings,
    client: &async_nats::Client,
) -> Result<kv::Store, String> {
    let config = kv::Config {
        description:
            "Switchboard leases: one key per lease, naming its holder, renewed every second".into(),
        history: 1,
        max_age: super::leases::LEASE_TTL,
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    };
    open(js, settings, client, LEASES_BUCKET, config).await
}

/// The bucket of the route table.
pub async fn routes_bucket(
    js: &jetstream::Context,
    settings: &ClusterSettings,
    client: &async_nats::Client,
) -> Result<kv::Store, String> {
    let config = kv::Config {
        description: "Switchboard route table: key `table`, one revision per push".into(),
        history: TABLE_HISTORY,
        max_value_size: MAX_TABLE_BYTES as i32,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    open(js, settings, client, ROUTES_BUCKET, config).await
}

/// A bucket of replicated metadata ([`crate::core::shared::SharedMeta`]): the last value
/// of each key only, on disk, values up to the largest message the server takes.
pub async fn meta_bucket(
    js: &jetstream::Context,
    settings: &ClusterSettings,
    client: &async_nats::Client,
    bucket: &str,
    description: &str,
) -> Result<kv::Store, String> {
    let config = kv::Config {
        description: description.into(),
        history: 1,
        max_value_size: i32::try_from(client.server_info().max_payload).unwrap_or(i32::MAX),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    open(js, settings, client, bucket, config).await
}

/// The bucket of MQTT sessions: one key per client id, claimed by the router serving it
/// (see `claims`).
pub const SESSIONS_BUCKET: &str = "SB_SESSIONS";

/// The bucket of the links' records: one key per link and purpose (an AMQP link's
/// marker of the topology declared, `amqp-topology.<link>`).
pub const LINKS_BUCKET: &str = "SB_LINKS";
