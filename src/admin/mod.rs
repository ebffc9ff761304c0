//! The admin HTTP API: health, route table and reload status, queue statistics.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/health` | `ok` while the daemon runs (always open: a health check) |
//! | GET | `/health/live`, `/health/ready` | liveness; readiness with its checks, 503 when one fails (always open; [`health`]) |
//! | GET | `/metrics` | Prometheus text exposition; `?per_object=1` for per-queue series ([`metrics`]) |
//! | GET | `/routes` | reload status (version, route count, last errors) and the routes in force |
//! | GET | `/`, `/console/…` | the management console's page, script and style (open: no data in them; [`console`]) |
//! | POST | `/explain` | `switchboard explain` against the table in force ([`explain`]) |
//! | POST | `/routes/reload` | reload now; 200 with the status, or 422 with the errors (in cluster mode: why it is refused) |
//! | PUT, DELETE | `/routes/files/NAME` | write or remove a route file, checked first (400 with the errors); admin callers only ([`route_files`]) |
//! | GET | `/queues` | per-queue counters (names owned by clients redacted unless the caller is an admin) |
//! | GET | `/queues/{q}/messages` | peek: the first ready messages, left in place (admin only, as every action below; [`queue_actions`]) |
//! | GET, DELETE | `/queues/{q}/messages/{id}` | one ready message: inspect, delete |
//! | POST | `/queues/{q}/messages/{id}/replay` | a dead letter back where it died, or `to` another destination |
//! | POST | `/queues/{q}/purge`, `/queues/{q}/move`, `/queues/{q}/replay` | remove every ready message; move them `to` a destination; replay them |
//! | GET | `/dead-letters` | the dead-letter queues, their depth and the queues sending there |
//! | GET, DELETE | `/connections`, `/connections/{id}` | open STOMP and MQTT connections (protocol, listener, peer, user, client id); close one |
//! | GET | `/links` | each link's state (connected, retrying, blocked…), last error, topology errors by route, counters |
//! | GET | `/loss` | fields dropped, encoded or rejected at each edge |
//! | GET | `/mqtt` | MQTT: connections parked in the idle-connection poller, deliveries over a client's Maximum Packet Size not sent, bytes saved by outbound topic aliases |
//! | GET | `/memory` | bytes the memory watermark counts, by kind, and how often each limit was hit |
//! | GET | `/limits` | each listener's admissions and refusals (per peer address, connect rate) |
//! | GET | `/cluster` | cluster mode: this node, the routers seen, the route table each runs, JetStream's figures; 404 on a router running alone |
//!
//! Access ([`guard`]): with an admin user (`admin: true`) or an admin token configured,
//! every request but the health checks needs HTTP Basic credentials of an admin user or a
//! bearer token. Without either, the API answers only on a loopback listener to loopback
//! peers, and those unauthenticated callers see client-owned queue names redacted.
//! On a loopback listener the `Host` must name this machine (DNS rebinding), and a
//! state-changing request must not come from another site (`Origin`, `Sec-Fetch-Site`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::routing::{get, post, put};
use axum::{Json, Router as Http};
use serde_json::json;

use crate::auth::Auth;
use crate::core::Core;
use crate::link::Links;
use crate::listener::limit::{Gates, LogEvery};
use crate::routes::reload::LiveRoutes;
use crate::store::FileJournal;

mod access;
mod connections;
mod console;
mod endpoints;
mod explain;
mod families;
mod health;
mod message_json;
mod metrics;
mod process;
mod queue_actions;
mod route_files;
mod totals;

pub use access::{AdminAccess, parse_token_digest, token_digest};
pub use health::Startup;

use access::{Caller, Verified, guard};
use endpoints::*;

#[derive(Clone)]
struct AdminState {
    core: Core,
    routes: Arc<LiveRoutes>,
    links: Links,
    gates: Arc<Gates>,
    auth: Arc<Auth>,
    access: Arc<AdminAccess>,
    /// The listener's own address.
    local: SocketAddr,
    verified: Arc<Mutex<Verified>>,
    logs: Arc<[LogEvery; 3]>,
    journal: Option<Arc<FileJournal>>,
    watermarks: crate::watermark::Watermarks,
    startup: Arc<Startup>,
    totals: Arc<Mutex<totals::QueueTotals>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// What the admin API needs.
pub struct AdminDeps {
    pub core: Core,
    pub routes: Arc<LiveRoutes>,
    pub links: Links,
    pub gates: Arc<Gates>,
    pub auth: Arc<Auth>,
    pub access: AdminAccess,
    /// The address the admin listener is bound to.
    pub local: SocketAddr,
    /// The message store, when there is a data directory.
    pub journal: Option<Arc<FileJournal>>,
    pub watermarks: crate::watermark::Watermarks,
    /// Told when every listener is bound (readiness).
    pub startup: Arc<Startup>,
    /// This router's membership of a cluster, in cluster mode.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Builds the admin API.
pub fn router(d: AdminDeps) -> Http {
    let state = AdminState {
        core: d.core,
        routes: d.routes,
        links: d.links,
        gates: d.gates,
        auth: d.auth,
        access: Arc::new(d.access),
        local: d.local,
        verified: Arc::default(),
        logs: Arc::new(Default::default()),
        journal: d.journal,
        watermarks: d.watermarks,
        startup: d.startup,
        totals: Arc::default(),
        cluster: d.cluster,
    };
    Http::new()
        .route("/health", get(|| async { "ok" }))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/routes", get(routes_status))
        .route("/routes/reload", post(reload))
        .route("/explain", post(explain::explain))
        .route(
            "/routes/files/{name}",
            put(route_files::put_file).delete(route_files::delete_file),
        )
        .route("/queues", get(queues))
        .route("/queues/{queue}/messages", get(queue_actions::peek))
        .route(
            "/queues/{queue}/messages/{id}",
            get(queue_actions::inspect).delete(queue_actions::delete),
        )
        .route(
            "/queues/{queue}/messages/{id}/replay",
            post(queue_actions::replay_one),
        )
        .route("/queues/{queue}/purge", post(queue_actions::purge))
        .route("/queues/{queue}/move", post(queue_actions::move_messages))
        .route("/queues/{queue}/replay", post(queue_actions::replay))
        .route("/dead-letters", get(queue_actions::dead_letters))
        .route("/connections", get(connections::list))
        .route(
            "/connections/{id}",
            axum::routing::delete(connections::close),
        )
        .route("/memory", get(memory))
        .route("/links", get(links_status))
        .route(
            "/loss",
            get(|| async { Json(crate::translate::loss::snapshot()) }),
        )
        .route(
            "/mqtt",
            get(|| async {
                use crate::listener::mqtt::session as mqtt;
                Json(json!({
                    "parked": mqtt::park::parked_now(),
                    "oversize_dropped": mqtt::oversize_dropped(),
                    "topic_alias_bytes_saved": mqtt::alias::bytes_saved(),
                }))
            }),
        )
        .route("/limits", get(limits))
        .route("/cluster", get(cluster_status))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        // After the guard's layer: the console's page holds no data (see [`console`]).
        .merge(console::router())
        .with_state(state)
}
