//! [`Cluster`]: a running router's membership of the cluster, for start-up (the table
//! in force before any connection is accepted), its tasks, and `GET /cluster`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{self, NODES_BUCKET, RETAINED_BUCKET, ROUTES_BUCKET, TABLE_KEY};
use super::membership::{self, NodeRecord, QUERY_TIMEOUT};
use super::table::TableBlob;
use crate::config::ClusterSettings;
use crate::routes::RouteError;
use crate::routes::received::Received;
use crate::routes::reload::LiveRoutes;

/// The cluster's current route table at start-up: its revision and its files (or why
/// they cannot be read), `None` before the first push.
pub type InitialTable = Option<(u64, Result<Received, Vec<RouteError>>)>;

/// The most streams `GET /cluster` lists.
const STREAMS_SHOWN: usize = 1000;

/// This router in the cluster.
pub struct Cluster {
    settings: ClusterSettings,
    client: async_nats::Client,
    js: jetstream::Context,
    nodes: kv::Store,
    routes_kv: kv::Store,
    leases: kv::Store,
    started_at_unix_ms: u64,
    /// Counts the MQTT sessions served here (see [`Cluster::count_sessions`]).
    sessions: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.settings.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects and opens (or creates) the buckets. Start-up fails when the cluster
    /// cannot be reached: a router must not serve on a table it could not check.
    pub async fn join(settings: &ClusterSettings) -> Result<Self, String> {
        let client = connection::connect(settings, &settings.node).await?;
        let js = jetstream::new(client.clone());
        let nodes = connection::nodes_bucket(&js, settings, &client).await?;
        let routes_kv = connection::routes_bucket(&js, settings, &client).await?;
        let leases = connection::leases_bucket(&js, settings, &client).await?;
        let started_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Self {
            settings: settings.clone(),
            client,
            js,
            nodes,
            routes_kv,
            leases,
            started_at_unix_ms,
            sessions: std::sync::OnceLock::new(),
        })
    }

    /// The cluster's side of the core: shared queues and topics across routers.
    pub async fn shared(&self) -> Result<Arc<super::SharedCluster>, String> {
        let replicas = connection::replicas(&self.settings, &self.client);
        super::SharedCluster::open(&self.settings, &self.client, replicas).await
    }

    /// The bucket holding the route table (key `table`).
    pub(super) fn routes_kv(&self) -> &kv::Store {
        &self.routes_kv
    }

    /// The route table in force in the cluster now.
    /// A bucket another router has just created may not answer yet (its stream's
    /// leader is still being elected: `503 no responders`), so this asks again for a
    /// few seconds before giving up.
    pub async fn initial_table(&self) -> Result<InitialTable, String> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let entry = loop {
            match self.routes_kv.entry(TABLE_KEY).await {
                Ok(e) => break e,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "cluster: route table not readable yet; asking again");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => return Err(format!("cannot read the cluster's route table: {e}")),
            }
        };
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.revision, TableBlob::decode(&e.value, e.revision))))
    }

    fn record(&self, routes: &LiveRoutes) -> NodeRecord {
        NodeRecord {
            node: self.settings.node.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            routes_version: routes.status().version,
            started_at_unix_ms: self.started_at_unix_ms,
            mqtt_sessions: self.sessions.get().map_or(0, |count| count()),
        }
    }

    /// Tells the cluster how to count the MQTT sessions this router serves (shown in
    /// its `SB_NODES` record and `GET /cluster`). Set once, when MQTT starts.
    pub fn count_sessions(&self, count: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.sessions.set(Box::new(count));
    }

    /// Registers this router (the name must be free) and starts keeping its key and
    /// following the route table, until `cancel`.
    pub async fn start(
        self: &Arc<Self>,
        routes: Arc<LiveRoutes>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<(), String> {
        membership::register(&self.nodes, &self.record(&routes)).await?;
        let me = Arc::clone(self);
        let r = Arc::clone(&routes);
        tracker.spawn(membership::keep_alive(
            self.nodes.clone(),
            move || me.record(&r),
            cancel.clone(),
        ));
        tracker.spawn(super::follow::follow(
            self.routes_kv.clone(),
            routes,
            cancel,
        ));
        tracing::info!(node = %self.settings.node, servers = %self.settings.servers.join(","), "cluster: joined");
        Ok(())
    }

    /// Is the NATS connection up?
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The name of the NATS server this router is connected to (or was, last).
    pub fn server_name(&self) -> String {
        self.client.server_info().server_name
    }

    /// `GET /cluster`: this node, the routers seen and the table each runs, JetStream's
    /// figures. A part the cluster cannot answer now shows its error instead.
    pub async fn status(&self, routes: &LiveRoutes) -> serde_json::Value {
        let nodes = match tokio::time::timeout(QUERY_TIMEOUT, membership::list(&self.nodes)).await {
            Ok(Ok(list)) => json!(list),
            Ok(Err(e)) => json!({ "error": e }),
            Err(_) => json!({ "error": "timed out" }),
        };
        let jetstream = match tokio::time::timeout(QUERY_TIMEOUT, self.js.query_account()).await {
            Ok(Ok(a)) => json!({
                "streams": a.streams,
                "consumers": a.consumers,
                "memory_bytes": a.memory,
                "storage_bytes": a.storage,
            }),
            Ok(Err(e)) => json!({ "error": e.to_string() }),
            Err(_) => json!({ "error": "timed out" }),
        };
        let streams = match tokio::time::timeout(QUERY_TIMEOUT, self.streams()).await {
            Ok(Ok(list)) => json!(list),
            Ok(Err(e)) => json!({ "error": e }),
            Err(_) => json!({ "error": "timed out" }),
        };
        let leases =
            match tokio::time::timeout(QUERY_TIMEOUT, super::leases::holders(&self.leases)).await {
                Ok(Ok(list)) => json!(
                    list.into_iter()
                        .map(|(lease, holder)| json!({ "lease": lease, "holder": holder }))
                        .collect::<Vec<_>>()
                ),
                Ok(Err(e)) => json!({ "error": e }),
                Err(_) => json!({ "error": "timed out" }),
            };
        json!({
            "node": self.record(routes),
            "connected": self.connected(),
            "server": self.server_name(),
            "servers": self.settings.servers,
            "buckets": {
                "nodes": connection::bucket_name(&self.settings, NODES_BUCKET),
                "routes": connection::bucket_name(&self.settings, ROUTES_BUCKET),
                "retained": connection::bucket_name(&self.settings, RETAINED_BUCKET),
                "sessions": connection::bucket_name(&self.settings, connection::SESSIONS_BUCKET),
                "leases": connection::bucket_name(&self.settings, connection::LEASES_BUCKET),
                "links": connection::bucket_name(&self.settings, connection::LINKS_BUCKET),
            },
            "leases": leases,
            "nodes": nodes,
            "jetstream": jetstream,
            "streams": streams,
        })
    }

    /// The streams of this cluster's queues and topics (names under the prefix), at
    /// most [`STREAMS_SHOWN`], with their state.
    async fn streams(&self) -> Result<Vec<serde_json::Value>, String> {
        use futures::StreamExt;
        let mut out = Vec::new();
        let mut list = self.js.streams();
        let queue = format!("{}SBQ_", self.settings.prefix);
        let topics = format!("{}SB_TOPICS", self.settings.prefix);
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| e.to_string())?;
            let name = &info.config.name;
            if !(name.starts_with(&queue) || *name == topics) {
                continue;
            }
            out.push(json!({
                "stream": name,
                "queue": info.config.description.as_deref().and_then(|d| d.strip_prefix("Switchboard queue ")),
                "messages": info.state.messages,
                "bytes": info.state.bytes,
                "consumers": info.state.consumer_count,
                "replicas": info.config.num_replicas,
            }));
            if out.len() >= STREAMS_SHOWN {
                break;
            }
        }
        out.sort_by(|a, b| a["stream"].as_str().cmp(&b["stream"].as_str()));
        Ok(out)
    }
}
