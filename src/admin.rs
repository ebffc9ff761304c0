//! The admin HTTP API: health, route table and reload status, queue statistics.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/health` | `ok` while the daemon runs |
//! | GET | `/routes` | reload status (version, route count, last errors) and the routes in force |
//! | POST | `/routes/reload` | reload now; 200 with the status, or 422 with the errors |
//! | GET | `/queues` | per-queue counters |
//! | GET | `/links` | each link's state (connected, retrying, blocked…), last error, topology errors by route, counters |
//! | GET | `/loss` | fields dropped, encoded or rejected at each edge |
//! | GET | `/mqtt` | MQTT: connections parked in the idle-connection poller, deliveries over a client's Maximum Packet Size not sent, bytes saved by outbound topic aliases |
//! | GET | `/memory` | bytes the memory watermark counts, by kind, and how often each limit was hit |

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router as Http};
use serde_json::json;

use crate::core::Core;
use crate::link::Links;
use crate::routes::reload::RouteStore;

#[derive(Clone)]
struct AdminState {
    core: Core,
    routes: Arc<RouteStore>,
    links: Links,
}

/// Builds the admin API.
pub fn router(core: Core, routes: Arc<RouteStore>, links: Links) -> Http {
    Http::new()
        .route("/health", get(|| async { "ok" }))
        .route("/routes", get(routes_status))
        .route("/routes/reload", post(reload))
        .route("/queues", get(queues))
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
        .with_state(AdminState {
            core,
            routes,
            links,
        })
}

async fn routes_status(State(s): State<AdminState>) -> impl IntoResponse {
    let table = s.routes.table().load_full();
    let routes: Vec<_> = table
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "file": r.file,
                "line": r.line,
                "from": r.source_text,
                "targets": r.targets.len(),
                "passthrough": r.passthrough,
            })
        })
        .collect();
    Json(json!({ "status": s.routes.status(), "routes": routes }))
}

async fn reload(State(s): State<AdminState>) -> impl IntoResponse {
    let store = Arc::clone(&s.routes);
    let result = tokio::task::spawn_blocking(move || store.reload("admin api")).await;
    let status = s.routes.status();
    match result {
        Ok(Ok(_)) => (StatusCode::OK, Json(json!(status))),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!(status))),
    }
}

async fn queues(State(s): State<AdminState>) -> impl IntoResponse {
    Json(json!(s.core.stats()))
}

/// What the memory watermark counts, by kind, and the counters of drops, refusals and
/// limit hits (the causes of [`crate::ratelog`]).
async fn memory(State(s): State<AdminState>) -> impl IntoResponse {
    use std::sync::atomic::Ordering;
    let (ready, unacked) = s.core.queue_bytes();
    let held = s.core.held();
    let retained = held.retained.load(Ordering::Relaxed);
    let transactions = held.transactions.load(Ordering::Relaxed);
    Json(json!({
        "held": {
            "ready": ready,
            "unacked": unacked,
            "retained": retained,
            "transactions": transactions,
            "total": ready + unacked + retained + transactions,
        },
        "publishers_blocked": s.core.flow().blocked(),
        "limits": crate::ratelog::snapshot(),
    }))
}

async fn links_status(State(s): State<AdminState>) -> impl IntoResponse {
    Json(s.links.to_json())
}
