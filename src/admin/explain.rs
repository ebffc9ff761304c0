//! `POST /explain`: `switchboard explain` against the route table in force. The command
//! line compiles the files on disk; this walks the table the daemon routes with right
//! now (after the last successful reload, or the one a cluster installed), through the
//! same [`crate::routes::explain::explain`]. It counts nothing and sends nothing.
//!
//! The request: `{"query": "stomp /queue/orders"}` (or the words as a list, for an
//! address with spaces), with `body`, `content_type` and `headers` (an object, or a
//! list of `[name, value]` pairs) optional. The answer: `{"query": […], "text": "…"}`,
//! or 400 with `error` when the query or the message does not parse.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AdminState;
use super::queue_actions::error;
use crate::core::Message;
use crate::routes::explain;

pub(super) async fn explain(State(s): State<AdminState>, bytes: Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let (words, message) = match parse(&req) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let query = match explain::parse_query(&words) {
        Ok(q) => q,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let table = s.routes.table().load_full();
    let text = explain::explain(&table, &query, message);
    Json(json!({ "query": words, "text": text })).into_response()
}

/// The query's words and the message to explain.
fn parse(req: &Value) -> Result<(Vec<String>, Message), String> {
    let words: Vec<String> = match req.get("query") {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|w| w.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or("`query` is a string or a list of strings")?,
        _ => return Err("`query` is needed, e.g. \"stomp /queue/orders\"".into()),
    };
    let text = |name: &str| -> Result<Option<String>, String> {
        match req.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{name}` is a string")),
        }
    };
    let mut message = Message::new(text("body")?.unwrap_or_default());
    message.content_type = text("content_type")?.filter(|c| !c.is_empty());
    let bad = "`headers` is an object of strings or a list of [name, value] pairs";
    match req.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                message.headers.append(k.clone(), v.as_str().ok_or(bad)?);
            }
        }
        Some(Value::Array(a)) => {
            for pair in a {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), Value::String(v)]) => {
                        message.headers.append(k.clone(), v.clone())
                    }
                    _ => return Err(bad.into()),
                }
            }
        }
        Some(_) => return Err(bad.into()),
    }
    Ok((words, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_messages_parse() {
        let (w, m) = parse(&json!({
            "query": "stomp  /queue/orders",
            "body": "hi",
            "content_type": "text/plain",
            "headers": {"a": "1"},
        }))
        .unwrap();
        assert_eq!(w, ["stomp", "/queue/orders"]);
        assert_eq!(&m.body[..], b"hi");
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.headers.get("a"), Some("1"));
        let (w, m) =
            parse(&json!({"query": ["mqtt", "a b"], "headers": [["x", "1"], ["x", "2"]]})).unwrap();
        assert_eq!(w, ["mqtt", "a b"]);
        assert_eq!(m.headers.iter().count(), 2);
        assert!(parse(&json!({})).is_err());
        assert!(parse(&json!({"query": "mqtt t", "headers": {"a": 1}})).is_err());
        assert!(parse(&json!({"query": [1]})).is_err());
    }
}
