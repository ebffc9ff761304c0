//! The operator's actions on queues and dead letters (see `docs/admin-api.md`): peek at
//! ready messages, inspect one, delete one, purge, move, replay dead letters. Each needs
//! an admin ([`admin_only`]): they show message contents and name client-owned queues,
//! which other callers see redacted. The core does the work and keeps its invariants
//! ([`crate::core::Core::transfer`]); this turns requests and errors into HTTP.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::message_json::{self, BODY_MAX_LIMIT, LIST_BODY_MAX, ONE_BODY_MAX};
use super::{AdminState, Caller};
use crate::core::{ActionError, Destination, Pick, Transfer};

/// Messages a peek shows by default, and at most.
const PEEK_DEFAULT: usize = 20;
const PEEK_MAX: usize = 1000;

/// A JSON error answer.
pub(super) fn error(status: StatusCode, why: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": why.to_string() }))).into_response()
}

/// [`error`], boxed for a `Result` (a response is large; the success path stays small).
fn refusal(status: StatusCode, why: impl std::fmt::Display) -> Box<Response> {
    Box::new(error(status, why))
}

/// 403 unless the caller is an admin (a loopback caller without credentials, allowed to
/// read figures when no admin is configured, is not).
pub(super) fn admin_only(caller: Caller) -> Result<(), Box<Response>> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Local => Err(refusal(
            StatusCode::FORBIDDEN,
            "this needs an admin: configure an admin user (`admin: true`) or token and send its credentials",
        )),
    }
}

fn action_error(e: ActionError) -> Response {
    let status = match &e {
        ActionError::NoSuchQueue(_) | ActionError::NoSuchMessage(_) => StatusCode::NOT_FOUND,
        ActionError::Shared(_) | ActionError::Ambiguous { .. } => StatusCode::CONFLICT,
        ActionError::SameQueue => StatusCode::BAD_REQUEST,
        ActionError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

/// The query parameter `name`, when present.
fn param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

/// A numeric query parameter: `default` when absent, 400 when not a number.
fn number(uri: &Uri, name: &str, default: usize) -> Result<usize, Box<Response>> {
    match param(uri, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            refusal(
                StatusCode::BAD_REQUEST,
                format!("`{name}` must be a number, not `{v}`"),
            )
        }),
    }
}

fn seq(uri: &Uri) -> Result<Option<u64>, Box<Response>> {
    param(uri, "seq")
        .map(|v| {
            v.parse()
                .map_err(|_| refusal(StatusCode::BAD_REQUEST, "`seq` must be a number"))
        })
        .transpose()
}

/// The JSON request body, `{}` when empty.
fn body(bytes: &Bytes) -> Result<Value, Box<Response>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| refusal(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))
}

/// `to` of a request body, parsed (`queue:NAME` or `topic:NAME`).
fn target(v: &Value) -> Result<Option<Destination>, Box<Response>> {
    match v.get("to") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Destination::parse(s).map(Some).map_err(|e| {
            refusal(
                StatusCode::BAD_REQUEST,
                format!("`to`: {e} (`queue:NAME` or `topic:NAME`)"),
            )
        }),
        Some(_) => Err(refusal(
            StatusCode::BAD_REQUEST,
            "`to` is a string: `queue:NAME` or `topic:NAME`",
        )),
    }
}

/// `count` of a request body: how many messages at most; all when absent.
fn count(v: &Value) -> Result<usize, Box<Response>> {
    match v.get("count") {
        None | Some(Value::Null) => Ok(usize::MAX),
        Some(c) => c
            .as_u64()
            .map(|c| c as usize)
            .ok_or_else(|| refusal(StatusCode::BAD_REQUEST, "`count` is a whole number")),
    }
}

/// A transfer's answer: 200, or 409 when a message could not go (the report says which
/// and why; it and the ones after it are still in the queue).
fn transferred(r: Result<crate::core::Transferred, ActionError>) -> Response {
    match r {
        Ok(t) if t.failed.is_some() => (StatusCode::CONFLICT, Json(json!(t))).into_response(),
        Ok(t) => Json(json!(t)).into_response(),
        Err(e) => action_error(e),
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return *r,
        }
    };
}

/// `GET /queues/{name}/messages?limit=N&body_max=B`: the first ready messages.
pub(super) async fn peek(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    uri: Uri,
) -> Response {
    tri!(admin_only(caller));
    let limit = tri!(number(&uri, "limit", PEEK_DEFAULT)).min(PEEK_MAX);
    let body_max = tri!(number(&uri, "body_max", LIST_BODY_MAX)).min(BODY_MAX_LIMIT);
    match s.core.peek(&queue, limit) {
        Ok(msgs) => {
            let ready = s.core.queue(&queue).map_or(0, |q| q.len());
            let messages: Vec<Value> = msgs
                .iter()
                .map(|m| message_json::message(m, body_max))
                .collect();
            Json(json!({ "queue": queue, "ready": ready, "messages": messages })).into_response()
        }
        Err(e) => action_error(e),
    }
}

/// `GET /queues/{name}/messages/{id}?seq=S&body_max=B`: one ready message.
pub(super) async fn inspect(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((queue, id)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    tri!(admin_only(caller));
    let body_max = tri!(number(&uri, "body_max", ONE_BODY_MAX)).min(BODY_MAX_LIMIT);
    let seq = tri!(seq(&uri));
    match s.core.peek_one(&queue, &id, seq) {
        Ok(m) => Json(message_json::message(&m, body_max)).into_response(),
        Err(e) => action_error(e),
    }
}

/// `DELETE /queues/{name}/messages/{id}?seq=S`.
pub(super) async fn delete(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((queue, id)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    tri!(admin_only(caller));
    let seq = tri!(seq(&uri));
    match s.core.delete_message(&queue, &id, seq).await {
        Ok(m) => {
            tracing::info!(queue, message_id = %m.message.id, seq = m.seq, "admin API: message deleted");
            Json(json!({ "deleted": { "id": m.message.id.to_string(), "seq": m.seq } }))
                .into_response()
        }
        Err(e) => action_error(e),
    }
}

/// `POST /queues/{name}/messages/{id}/replay?seq=S` with `{"to": …}` optional.
pub(super) async fn replay_one(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((queue, id)): Path<(String, String)>,
    uri: Uri,
    bytes: Bytes,
) -> Response {
    tri!(admin_only(caller));
    let seq = tri!(seq(&uri));
    let req = tri!(body(&bytes));
    let to = tri!(target(&req));
    let r = s
        .core
        .transfer(
            &queue,
            Pick::One { id: &id, seq },
            Transfer::Replay { to: to.as_ref() },
        )
        .await;
    log_transfer("replayed", &queue, &r);
    transferred(r)
}

/// `POST /queues/{name}/replay` with `{"to": …, "count": N}`, both optional.
pub(super) async fn replay(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    bytes: Bytes,
) -> Response {
    tri!(admin_only(caller));
    let req = tri!(body(&bytes));
    let to = tri!(target(&req));
    let max = tri!(count(&req));
    let r = s
        .core
        .transfer(
            &queue,
            Pick::First { max, through: 0 },
            Transfer::Replay { to: to.as_ref() },
        )
        .await;
    log_transfer("replayed", &queue, &r);
    transferred(r)
}

/// `POST /queues/{name}/move` with `{"to": …}` and `"count": N` optional.
pub(super) async fn move_messages(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    bytes: Bytes,
) -> Response {
    tri!(admin_only(caller));
    let req = tri!(body(&bytes));
    let Some(to) = tri!(target(&req)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "`to` is needed: `queue:NAME` or `topic:NAME`",
        );
    };
    let max = tri!(count(&req));
    let r = s
        .core
        .transfer(
            &queue,
            Pick::First { max, through: 0 },
            Transfer::Move { to: &to },
        )
        .await;
    log_transfer("moved", &queue, &r);
    transferred(r)
}

/// `POST /queues/{name}/purge`.
pub(super) async fn purge(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
) -> Response {
    tri!(admin_only(caller));
    match s.core.purge(&queue).await {
        Ok(n) => {
            tracing::info!(queue, messages = n, "admin API: queue purged");
            Json(json!({ "purged": n })).into_response()
        }
        Err(e) => action_error(e),
    }
}

/// `GET /dead-letters`: the dead-letter queues, their depth and who sends there.
pub(super) async fn dead_letters(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    tri!(admin_only(caller));
    let list: Vec<Value> = s
        .core
        .dead_letter_queues()
        .into_iter()
        .map(|(name, sources)| {
            let q = s.core.queue(&name);
            json!({
                "queue": name,
                "exists": q.is_some(),
                "shared": q.as_ref().is_some_and(|q| q.is_shared()),
                "ready": q.as_ref().map_or(0, |q| q.len()),
                "from": sources,
            })
        })
        .collect();
    Json(json!({ "dead_letter_queues": list })).into_response()
}

fn log_transfer(what: &str, queue: &str, r: &Result<crate::core::Transferred, ActionError>) {
    match r {
        Ok(t) => {
            tracing::info!(queue, messages = t.moved, to = ?t.to, failed = ?t.failed, "admin API: messages {what}")
        }
        Err(e) => tracing::info!(queue, error = %e, "admin API: messages not {what}"),
    }
}
