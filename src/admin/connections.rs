//! `GET /connections` and `DELETE /connections/{id}`: the open client connections
//! (protocol, peer address, user, client id; see [`crate::listener::connections`]) and
//! closing one. Admin only: they name users and client ids.

use axum::Extension;
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Caller;
use super::queue_actions::{admin_only, error};
use crate::listener::connections;

pub(super) async fn list(Extension(caller): Extension<Caller>) -> Response {
    if let Err(r) = admin_only(caller) {
        return *r;
    }
    Json(json!({ "connections": connections::list() })).into_response()
}

pub(super) async fn close(
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = admin_only(caller) {
        return *r;
    }
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "a connection id is a number");
    };
    match connections::close(id) {
        Some(c) => {
            tracing::info!(id, protocol = c.protocol, peer = %c.peer, user = ?c.user, "admin API: connection closed");
            Json(json!({ "closed": id })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no open connection {id}")),
    }
}
