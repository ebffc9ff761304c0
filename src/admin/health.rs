//! `GET /health/live` and `GET /health/ready`: for supervisors and load balancers.
//!
//! Live means the process serves HTTP. Ready means it can do its job: the store
//! recovered and accepts writes, the routes are loaded, every configured listener is
//! bound, every configured link is connected, in cluster mode the NATS connection is up. The admin listener opens only after the
//! store recovered and the routes loaded (the daemon does not start otherwise), so those
//! two hold whenever it answers; listeners are still being bound for a moment after it
//! opens, links connect on their own schedule, and the store can stop accepting writes
//! (a full or failing disk).
//!
//! Both are open like `/health` (probes rarely carry credentials), so the answer names
//! listeners and links and their states, never addresses or error texts: those are on
//! the authenticated `/links`.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AdminState;
use crate::store::Store as _;

/// What start-up has done beyond what the admin API's own existence proves.
#[derive(Debug, Default)]
pub struct Startup {
    listeners: OnceLock<Vec<String>>,
}

impl Startup {
    /// Every configured listener is bound (their names).
    pub fn listeners_bound(&self, names: impl IntoIterator<Item = String>) {
        let _ = self.listeners.set(names.into_iter().collect());
    }
}

/// One readiness condition.
#[derive(Debug, serde::Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

fn check(check: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        check: check.into(),
        ok,
        detail: detail.into(),
    }
}

/// Link states in which a link is up: `blocked` is connected, with RabbitMQ holding
/// publishes back for a while (messages wait in the link queue); `standby` is run by
/// another router of the cluster, which holds its lease.
const LINK_UP: &[&str] = &["connected", "blocked", "standby"];

fn checks(s: &AdminState) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match &s.journal {
        None => check("store", true, "in memory only (no data directory)"),
        Some(journal) => match journal.check() {
            Ok(()) => check("store", true, "recovered; writable"),
            Err(_) => check("store", false, "recovered; writes fail (see the log)"),
        },
    });
    let routes = s.routes.status();
    let mut detail = format!("version {}: {} routes", routes.version, routes.routes);
    if !routes.ok {
        detail.push_str("; the latest reload failed and the previous table stays in force");
    }
    out.push(check("routes", true, detail));
    out.push(match s.startup.listeners.get() {
        Some(names) => check("listeners", true, format!("bound: {}", names.join(", "))),
        None => check("listeners", false, "still binding the configured listeners"),
    });
    if let Some(c) = &s.cluster {
        out.push(if c.connected() {
            check(
                "cluster",
                true,
                format!("connected to NATS server {}", c.server_name()),
            )
        } else {
            check(
                "cluster",
                false,
                "NATS connection lost; reconnecting (local traffic is still served)",
            )
        });
    }
    if let serde_json::Value::Array(links) = s.links.to_json() {
        for l in &links {
            let name = l["name"].as_str().unwrap_or("?");
            let state = l["state"].as_str().unwrap_or("?");
            let kind = l["kind"].as_str().unwrap_or("?");
            out.push(check(
                format!("link {name}"),
                LINK_UP.contains(&state),
                format!("{kind} link {state}"),
            ));
        }
    }
    out
}

/// 200 when every check passes, 503 otherwise; the checks as JSON either way.
pub(super) async fn ready(State(s): State<AdminState>) -> Response {
    let checks = checks(&s);
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks }))).into_response()
}
