//! Fields a target protocol cannot carry: which ones a message would lose, how a route's
//! loss policy ([`Loss`]) treats them, and the counts (`GET /loss` on the admin API).
//!
//! Only fields that say something are counted: a content type, correlation id, reply
//! address, expiry, application headers, a priority other than the default 4. Message
//! ids and timestamps are not: every protocol has or makes its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use base64::Engine as _;

use crate::core::{Destination, Loss, Message};

/// An edge that can lose fields (STOMP carries them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Mqtt311 = 0,
    Mqtt5 = 1,
    Amqp = 2,
    Xmpp = 3,
}

const EDGES: [&str; 4] = ["mqtt-3.1.1", "mqtt-5", "amqp", "xmpp"];
const FIELDS: [&str; 6] = [
    "content_type",
    "correlation_id",
    "reply_to",
    "expiry",
    "headers",
    "priority",
];
const OUTCOMES: [&str; 3] = ["dropped", "encoded", "rejected"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    ContentType = 0,
    CorrelationId = 1,
    ReplyTo = 2,
    Expiry = 3,
    Headers = 4,
    Priority = 5,
}

/// A set of fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields(u8);

impl Fields {
    pub fn add(&mut self, f: Field) {
        self.0 |= 1 << f as u8;
    }

    pub fn has(self, f: Field) -> bool {
        self.0 & (1 << f as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The fields' names, comma-separated (for logs and dead-letter details).
    pub fn names(self) -> String {
        FIELDS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

static COUNTS: [AtomicU64; 4 * 3 * 6] = [const { AtomicU64::new(0) }; 4 * 3 * 6];

/// Counts `fields` of one message at `edge`, as the policy treated them.
pub fn record(edge: Edge, fields: Fields, loss: Loss) {
    let outcome = loss as usize;
    for f in 0..FIELDS.len() {
        if fields.0 & (1 << f) != 0 {
            COUNTS[(edge as usize * 3 + outcome) * 6 + f].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `{"dropped": {"mqtt-3.1.1": {"headers": 3}}, "encoded": {…}, "rejected": {…}}`,
/// non-zero counts only.
pub fn snapshot() -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (o, outcome) in OUTCOMES.iter().enumerate() {
        let mut by_edge = serde_json::Map::new();
        for (e, edge) in EDGES.iter().enumerate() {
            let mut by_field = serde_json::Map::new();
            for (f, field) in FIELDS.iter().enumerate() {
                let n = COUNTS[(e * 3 + o) * 6 + f].load(Ordering::Relaxed);
                if n > 0 {
                    by_field.insert((*field).into(), n.into());
                }
            }
            if !by_field.is_empty() {
                by_edge.insert((*edge).into(), by_field.into());
            }
        }
        out.insert((*outcome).into(), by_edge.into());
    }
    out.into()
}

/// Priority is lost only when it says something (4 is everyone's default).
fn priority_set(m: &Message) -> bool {
    m.priority != 4
}

/// What an MQTT 3.1.1 subscriber cannot get: everything but topic, payload and QoS.
pub fn lost_to_mqtt311(m: &Message) -> Fields {
    let mut f = lost_to_mqtt5(m);
    if m.content_type.is_some() {
        f.add(Field::ContentType);
    }
    if m.correlation_id.is_some() {
        f.add(Field::CorrelationId);
    }
    if m.reply_to.is_some() {
        f.add(Field::ReplyTo);
    }
    if m.expiry.is_some() {
        f.add(Field::Expiry);
    }
    if m.headers.iter().any(|(k, _)| !k.starts_with("x-mqtt-")) {
        f.add(Field::Headers);
    }
    f
}

/// What an MQTT 5 subscriber cannot get: the priority.
pub fn lost_to_mqtt5(m: &Message) -> Fields {
    let mut f = Fields::default();
    if priority_set(m) {
        f.add(Field::Priority);
    }
    f
}

/// What a stanza cannot carry: a content type other than text and JSON, a reply
/// address (other than the XMPP user's own, which the stanza's `from` already is), an
/// expiry, a priority. Headers go as SHIM headers, a binary body as base64.
pub fn lost_to_xmpp(m: &Message) -> Fields {
    let mut f = Fields::default();
    if let Some(ct) = &m.content_type {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if base != "text/plain" && base != "application/json" {
            f.add(Field::ContentType);
        }
    }
    if m.reply_to
        .as_ref()
        .is_some_and(|r| !r.name().starts_with("$sb.reply.xmpp."))
    {
        f.add(Field::ReplyTo);
    }
    if m.expiry.is_some() {
        f.add(Field::Expiry);
    }
    if priority_set(m) {
        f.add(Field::Priority);
    }
    f
}

/// `fields` as headers, named as STOMP names them: `content-type`, `correlation-id`,
/// `reply-to` (written by `reply`), `expires` (milliseconds since the Unix epoch),
/// `priority`. `headers` is not among them: only a target without headers loses those.
pub fn as_headers(
    m: &Message,
    fields: Fields,
    reply: impl Fn(&Destination) -> String,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if fields.has(Field::ContentType)
        && let Some(ct) = &m.content_type
    {
        out.push(("content-type".into(), ct.clone()));
    }
    if fields.has(Field::CorrelationId)
        && let Some(c) = &m.correlation_id
    {
        out.push(("correlation-id".into(), c.clone()));
    }
    if fields.has(Field::ReplyTo)
        && let Some(r) = &m.reply_to
    {
        out.push(("reply-to".into(), reply(r)));
    }
    if fields.has(Field::Expiry)
        && let Some(e) = m.expiry
    {
        let ms = e.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        out.push(("expires".into(), ms.to_string()));
    }
    if fields.has(Field::Priority) {
        out.push(("priority".into(), m.priority.to_string()));
    }
    out
}

/// The payload an MQTT 3.1.1 subscriber gets under `loss: encode`: a JSON object with
/// the fields it would lose (as [`as_headers`] names them, `headers` as a list of
/// `[name, value]` pairs, `x-mqtt-*` left out) and the body, as `body` when it is UTF-8,
/// else as `body_base64`.
pub fn mqtt311_envelope(
    m: &Message,
    fields: Fields,
    reply: impl Fn(&Destination) -> String,
) -> bytes::Bytes {
    let mut o = serde_json::Map::new();
    for (k, v) in as_headers(m, fields, reply) {
        let v = match k.as_str() {
            "expires" | "priority" => v.parse::<u64>().map_or(v.into(), Into::into),
            _ => v.into(),
        };
        o.insert(k, v);
    }
    if fields.has(Field::Headers) {
        let list: Vec<serde_json::Value> = m
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("x-mqtt-"))
            .map(|(k, v)| serde_json::json!([k, v]))
            .collect();
        o.insert("headers".into(), list.into());
    }
    match std::str::from_utf8(&m.body) {
        Ok(t) => o.insert("body".into(), t.into()),
        Err(_) => o.insert(
            "body_base64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(&m.body)
                .into(),
        ),
    };
    serde_json::to_vec(&serde_json::Value::Object(o))
        .unwrap_or_default()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_edge_loses_and_the_envelope() {
        let mut m = Message::new(&b"\xff\x00"[..])
            .with_content_type("application/octet-stream")
            .with_header("k", "v")
            .with_header("x-mqtt-retain", "1");
        assert_eq!(lost_to_mqtt311(&m).names(), "content_type, headers");
        assert!(lost_to_mqtt5(&m).is_empty());
        assert_eq!(lost_to_xmpp(&m).names(), "content_type");
        m.priority = 7;
        m.correlation_id = Some("c1".into());
        m.reply_to = Some(Destination::queue("$sb.reply.xmpp.im.a.b"));
        assert_eq!(lost_to_mqtt5(&m).names(), "priority");
        assert_eq!(lost_to_xmpp(&m).names(), "content_type, priority");
        let env = mqtt311_envelope(&m, lost_to_mqtt311(&m), |d| d.name().to_owned());
        let v: serde_json::Value = serde_json::from_slice(&env).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "content-type": "application/octet-stream",
                "correlation-id": "c1",
                "reply-to": "$sb.reply.xmpp.im.a.b",
                "priority": 7,
                "headers": [["k", "v"]],
                "body_base64": "/wA=",
            })
        );
    }
}
