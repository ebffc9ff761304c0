//! The JSON endpoints of the admin API: route table and reload, queues, memory, links,
//! cluster, listener limits.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::{AdminState, Caller};

pub(super) async fn routes_status(State(s): State<AdminState>) -> impl IntoResponse {
    let table = s.routes.table().load_full();
    let routes: Vec<_> = table
        .routes
        .iter()
        .map(|r| {
            let c = r.counters.counts();
            json!({
                "name": r.name,
                "file": r.file,
                "line": r.line,
                "from": r.source_text,
                "targets": r.targets.len(),
                "passthrough": r.passthrough,
                "matches": c.matched,
                "errors": c.failed,
                "schema_invalid": c.invalid,
                "rate_held": c.held,
                "rate_dropped": c.rate_dropped,
            })
        })
        .collect();
    Json(json!({ "status": s.routes.status(), "routes": routes }))
}

/// 200 with the status, or 422 with the status and this reload's errors. They are the
/// status's own after a failed reload; a clustered router refuses without touching its
/// status, so the errors say why (the table comes from `switchboard routes push`).
pub(super) async fn reload(State(s): State<AdminState>) -> impl IntoResponse {
    let routes = Arc::clone(&s.routes);
    let result = tokio::task::spawn_blocking(move || routes.reload("admin api")).await;
    let mut status = json!(s.routes.status());
    match result {
        Ok(Ok(_)) => (StatusCode::OK, Json(status)),
        Ok(Err(errors)) => {
            status["ok"] = json!(false);
            status["errors"] = json!(errors.iter().map(ToString::to_string).collect::<Vec<_>>());
            (StatusCode::UNPROCESSABLE_ENTITY, Json(status))
        }
        Err(_) => (StatusCode::UNPROCESSABLE_ENTITY, Json(status)),
    }
}

/// Prefixes of queue names that carry a client's identity after them: MQTT client ids
/// and shared groups, temporary queues, subscription and reply queues, STOMP durable
/// subscriptions (`stomp.USER.NAME`).
pub(super) const OWNED_PREFIXES: &[&str] = &[
    "$mqtt.s.",
    "$mqtt.share.",
    "$sb.tmp.",
    "$sb.sub.",
    "$sb.reply.",
    "$sb.push.",
    "stomp.",
];

/// `name` with the part after an owned prefix replaced by a keyed hash (stable while
/// the daemon runs, so entries can be told apart and followed; not reversible), or
/// `None` when the name is nobody's.
pub(super) fn redacted(name: &str) -> Option<String> {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let prefix = OWNED_PREFIXES.iter().find(|p| name.starts_with(**p))?;
    let h = KEY.get_or_init(Default::default).hash_one(name);
    Some(format!("{prefix}~{h:016x}"))
}

pub(super) async fn queues(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let mut v = json!(s.core.stats());
    if caller != Caller::Admin
        && let Some(qs) = v.get_mut("queues").and_then(|q| q.as_array_mut())
    {
        for q in qs {
            let Some(name) = q.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            if let Some(r) = redacted(name) {
                q["name"] = json!(r);
                q["redacted"] = json!(true);
            }
        }
    }
    Json(v).into_response()
}

/// What the memory watermark counts, by kind, and the counters of drops, refusals and
/// limit hits (the causes of [`crate::ratelog`]).
pub(super) async fn memory(State(s): State<AdminState>) -> impl IntoResponse {
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

pub(super) async fn links_status(State(s): State<AdminState>) -> impl IntoResponse {
    Json(s.links.to_json())
}

/// `GET /cluster`; for a caller who is not an admin, the streams of owned queues
/// (durable subscriptions) show a redacted name, as in `GET /queues`.
pub(super) async fn cluster_status(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    match &s.cluster {
        Some(c) => {
            let mut v = c.status(&s.routes).await;
            if caller != Caller::Admin
                && let Some(streams) = v.get_mut("streams").and_then(|q| q.as_array_mut())
            {
                for st in streams {
                    if let Some(r) = st.get("queue").and_then(|n| n.as_str()).and_then(redacted) {
                        st["queue"] = json!(r);
                        st["stream"] = json!(null);
                        st["redacted"] = json!(true);
                    }
                }
            }
            Json(v).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "this router runs alone (no --cluster)" })),
        )
            .into_response(),
    }
}

pub(super) async fn limits(State(s): State<AdminState>) -> impl IntoResponse {
    Json(s.gates.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_names_are_redacted() {
        let r = redacted("$mqtt.s.alice-phone").unwrap();
        assert!(r.starts_with("$mqtt.s.~") && !r.contains("alice"), "{r}");
        assert_eq!(redacted("$mqtt.s.alice-phone").unwrap(), r, "stable");
        assert_ne!(redacted("$mqtt.s.bob").unwrap(), r);
        assert!(redacted("stomp.alice.feed").is_some());
        assert!(redacted("$sb.tmp.x").is_some());
        assert_eq!(redacted("orders"), None);
        assert_eq!(redacted("$sb.link.rabbit"), None);
    }
}
