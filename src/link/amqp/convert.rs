//! AMQP 0-9-1 message ↔ canonical message. The table is in `docs/mapping.md#amqp-0-9-1`;
//! keep both in step.
//!
//! AMQP headers are typed (integers of several widths, floats, booleans, timestamps,
//! byte arrays, nested tables and arrays); canonical headers are strings. A string
//! header crosses as it is. Any other value crosses in a text form (below), and its name
//! and AMQP type are recorded in the `x-amqp-types` header (a JSON object), so that a
//! message going back out to AMQP gets exactly its types again:
//!
//! | AMQP type | text form | tag |
//! |---|---|---|
//! | boolean | `true` / `false` | `bool` |
//! | i8 u8 i16 u16 i32 u32 i64 | decimal | `i8` `u8` `i16` `u16` `i32` `u32` `i64` |
//! | f32 f64 | decimal (shortest round-trip form) | `f32` `f64` |
//! | decimal | `SCALE:VALUE` | `decimal` |
//! | timestamp | seconds since the Unix epoch | `timestamp` |
//! | byte array, or a string that is not UTF-8 | base64 | `bytes` / `binary` |
//! | void | empty | `void` |
//! | table, array | JSON (below) | `table` / `array` |
//!
//! Inside a table or array, values are JSON: strings, booleans, numbers, objects and
//! arrays as themselves, void as `null`, and the types JSON lacks as one-key objects:
//! `{"$timestamp": 1700000000}`, `{"$bytes": "base64"}`, `{"$decimal": "2:12345"}`.
//! Going back, JSON integers become i64 and other numbers f64 (nested widths are not
//! kept); the top-level header keeps its exact type.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};

use crate::core::{Loss, Message, MessageId, Origin};
use crate::translate::loss::{Field, Fields};

/// Header listing the AMQP types of non-string headers (JSON object name → tag).
pub const TYPES_HEADER: &str = "x-amqp-types";
/// AMQP `type` property.
pub const TYPE_HEADER: &str = "x-amqp-type";
/// AMQP `app_id` property.
pub const APP_ID_HEADER: &str = "x-amqp-app-id";
/// AMQP `user_id` property (RabbitMQ checks it against the publishing user).
pub const USER_ID_HEADER: &str = "x-amqp-user-id";
/// The exchange a consumed message was published to (informational; not sent out).
pub const EXCHANGE_HEADER: &str = "x-amqp-exchange";
/// The routing key a consumed message was published with (informational; not sent out).
pub const ROUTING_KEY_HEADER: &str = "x-amqp-routing-key";
/// AMQP `content_encoding` property.
pub const CONTENT_ENCODING_HEADER: &str = "content-encoding";

/// Why a consumed AMQP message cannot become a canonical message.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid expiration `{0}` (milliseconds expected)")]
    Expiration(String),
    #[error("header `{0}`: {1}")]
    Header(String, String),
    #[error("{0} is longer than AMQP's 255-byte limit for it")]
    TooLong(String),
    #[error(
        "header `{0}` repeats, AMQP carries one value per name, and the route says `loss: reject`"
    )]
    Repeated(String),
}

/// A short string (AMQP's 255-byte names and properties), refused rather than cut.
pub fn short(s: &str, what: &str) -> Result<ShortString, ConvertError> {
    ShortString::try_new(s).map_err(|_| ConvertError::TooLong(what.to_owned()))
}

/// What the conversion needs to know about the message's context.
pub struct Inbound<'a> {
    pub link: &'a str,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// A consumed AMQP message → canonical. `reply_to` is the internal address the link
/// chose for the AMQP `reply_to` (see [`crate::router::amqp_reply_address`]).
pub fn from_amqp(
    ctx: &Inbound<'_>,
    props: &BasicProperties,
    body: Vec<u8>,
    now: SystemTime,
) -> Result<Message, ConvertError> {
    let mut m = Message::new(Bytes::from(body));
    m.origin = Origin::new("amqp", ctx.link);
    m.content_type = props.content_type().as_ref().map(|s| s.to_string());
    if let Some(id) = props.message_id() {
        m.id = MessageId::given(id.as_str());
    }
    m.correlation_id = props.correlation_id().as_ref().map(|s| s.to_string());
    if let Some(r) = props.reply_to()
        && !r.as_str().is_empty()
    {
        m.reply_to = Some(crate::router::amqp_reply_address(ctx.link, r.as_str()));
    }
    if let Some(p) = props.priority() {
        m.priority = (*p).min(9);
    }
    m.persistent = *props.delivery_mode() == Some(2);
    if let Some(ts) = props.timestamp() {
        m.timestamp = UNIX_EPOCH + Duration::from_secs(*ts);
    }
    if let Some(exp) = props.expiration() {
        let ms: u64 = exp
            .as_str()
            .trim()
            .parse()
            .map_err(|_| ConvertError::Expiration(exp.to_string()))?;
        m.expiry = Some(now + Duration::from_millis(ms));
    }
    if let Some(table) = props.headers() {
        let mut types = serde_json::Map::new();
        for (k, v) in table.inner() {
            let (text, tag) = value_to_text(v);
            if let Some(tag) = tag {
                types.insert(k.to_string(), tag.into());
            }
            m.headers.append(k.as_str(), text);
        }
        if !types.is_empty() {
            m.headers
                .set(TYPES_HEADER, serde_json::Value::Object(types).to_string());
        }
    }
    if let Some(e) = props.content_encoding() {
        m.headers.set(CONTENT_ENCODING_HEADER, e.as_str());
    }
    if let Some(t) = props.kind() {
        m.headers.set(TYPE_HEADER, t.as_str());
    }
    if let Some(a) = props.app_id() {
        m.headers.set(APP_ID_HEADER, a.as_str());
    }
    if let Some(u) = props.user_id() {
        m.headers.set(USER_ID_HEADER, u.as_str());
    }
    m.headers.set(EXCHANGE_HEADER, ctx.exchange);
    m.headers.set(ROUTING_KEY_HEADER, ctx.routing_key);
    Ok(m)
}

/// How an outbound message's `reply_to` is expressed in AMQP.
pub enum ReplyTo {
    None,
    /// An AMQP queue name (the reply goes straight to it).
    Queue(String),
    /// RabbitMQ direct reply-to with a router-made correlation id.
    Direct {
        correlation_id: String,
    },
}

/// Canonical → AMQP properties (the body goes as it is). `username` is the link's
/// user: RabbitMQ refuses a `user_id` that is not the publisher's own, so any other
/// value stays a header.
pub fn to_amqp(
    m: &Message,
    reply: ReplyTo,
    username: &str,
    now: SystemTime,
    skip_header: impl Fn(&str) -> bool,
    lost: &mut Fields,
) -> Result<BasicProperties, ConvertError> {
    // Only what the message carries, as RabbitMQ's shovel passes a message on: the
    // canonical default priority 4 stands for none (RabbitMQ reads a missing priority as
    // 0, and a 4 would put a bridged message ahead of the queue's own), and an id the
    // router generated stays the router's. Each property costs RabbitMQ's queue process:
    // a priority and a message id on every message cost a queue → queue move 15 % of
    // its throughput (docs/benchmarks.md).
    let mut p = BasicProperties::default().with_delivery_mode(if m.persistent { 2 } else { 1 });
    if m.priority != 4 {
        p = p.with_priority(m.priority);
    }
    if let MessageId::Given(id) = &m.id {
        p = p.with_message_id(short(id, "the message id")?);
    }
    if let Some(ct) = &m.content_type {
        p = p.with_content_type(short(ct, "the content type")?);
    }
    if let Ok(d) = m.timestamp.duration_since(UNIX_EPOCH) {
        p = p.with_timestamp(d.as_secs());
    }
    if let Some(exp) = m.expiry {
        let ms = exp.duration_since(now).unwrap_or_default().as_millis();
        p = p.with_expiration(ms.to_string().into());
    }
    match reply {
        ReplyTo::None => {
            if let Some(c) = &m.correlation_id {
                p = p.with_correlation_id(short(c, "the correlation id")?);
            }
        }
        ReplyTo::Queue(q) => {
            p = p.with_reply_to(short(&q, "the reply-to queue")?);
            if let Some(c) = &m.correlation_id {
                p = p.with_correlation_id(short(c, "the correlation id")?);
            }
        }
        ReplyTo::Direct { correlation_id } => {
            p = p
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id(short(&correlation_id, "the correlation id")?);
        }
    }
    let types: BTreeMap<String, String> = m
        .headers
        .get(TYPES_HEADER)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let mut table = FieldTable::default();
    let mut seen_props: Vec<&str> = Vec::new();
    for (k, v) in m.headers.iter() {
        // Repeated names: the first wins, as for lookups.
        if matches!(
            k,
            CONTENT_ENCODING_HEADER | TYPE_HEADER | APP_ID_HEADER | USER_ID_HEADER
        ) {
            if seen_props.contains(&k) {
                continue;
            }
            seen_props.push(k);
        }
        match k {
            CONTENT_ENCODING_HEADER => p = p.with_content_encoding(short(v, k)?),
            TYPE_HEADER => p = p.with_type(short(v, k)?),
            APP_ID_HEADER => p = p.with_app_id(short(v, k)?),
            USER_ID_HEADER if v == username => p = p.with_user_id(short(v, k)?),
            TYPES_HEADER | EXCHANGE_HEADER | ROUTING_KEY_HEADER => {}
            k if skip_header(k) => {}
            k => {
                let key = short(
                    k,
                    &format!("header name `{}…`", &k[..k.floor_char_boundary(40)]),
                )?;
                // Repeated names: AMQP holds one value per name. The first wins, as for
                // lookups, unless the message's loss policy says otherwise.
                if let Some(first) = table.inner().get(&key).cloned() {
                    lost.add(Field::Headers);
                    match (m.loss, first) {
                        (Loss::Reject, _) => return Err(ConvertError::Repeated(k.to_owned())),
                        (Loss::Encode, AMQPValue::LongString(f)) if !types.contains_key(k) => {
                            let a = FieldArray::from(vec![
                                AMQPValue::LongString(f),
                                AMQPValue::LongString(v.into()),
                            ]);
                            table.insert(key, AMQPValue::FieldArray(a));
                        }
                        (Loss::Encode, AMQPValue::FieldArray(mut a)) if !types.contains_key(k) => {
                            a.push(AMQPValue::LongString(v.into()));
                            table.insert(key, AMQPValue::FieldArray(a));
                        }
                        _ => {}
                    }
                    continue;
                }
                let value = match types.get(k) {
                    Some(tag) => {
                        text_to_value(v, tag).map_err(|e| ConvertError::Header(k.to_owned(), e))?
                    }
                    None => AMQPValue::LongString(v.into()),
                };
                table.insert(key, value);
            }
        }
    }
    if !table.inner().is_empty() {
        p = p.with_headers(table);
    }
    Ok(p)
}

/// A header value's text form and, unless it is a UTF-8 string, its type tag.
pub fn value_to_text(v: &AMQPValue) -> (String, Option<&'static str>) {
    match v {
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(t) => (t.to_owned(), None),
            Err(_) => (B64.encode(s.as_bytes()), Some("binary")),
        },
        AMQPValue::ShortString(s) => (s.to_string(), None),
        AMQPValue::Boolean(b) => (b.to_string(), Some("bool")),
        AMQPValue::ShortShortInt(n) => (n.to_string(), Some("i8")),
        AMQPValue::ShortShortUInt(n) => (n.to_string(), Some("u8")),
        AMQPValue::ShortInt(n) => (n.to_string(), Some("i16")),
        AMQPValue::ShortUInt(n) => (n.to_string(), Some("u16")),
        AMQPValue::LongInt(n) => (n.to_string(), Some("i32")),
        AMQPValue::LongUInt(n) => (n.to_string(), Some("u32")),
        AMQPValue::LongLongInt(n) => (n.to_string(), Some("i64")),
        AMQPValue::Float(f) => (f.to_string(), Some("f32")),
        AMQPValue::Double(f) => (f.to_string(), Some("f64")),
        AMQPValue::DecimalValue(d) => (format!("{}:{}", d.scale, d.value), Some("decimal")),
        AMQPValue::Timestamp(t) => (t.to_string(), Some("timestamp")),
        AMQPValue::ByteArray(b) => (B64.encode(b.as_slice()), Some("bytes")),
        AMQPValue::Void => (String::new(), Some("void")),
        AMQPValue::FieldTable(t) => (table_to_json(t).to_string(), Some("table")),
        AMQPValue::FieldArray(a) => (
            serde_json::Value::Array(a.as_slice().iter().map(value_to_json).collect()).to_string(),
            Some("array"),
        ),
    }
}

/// The inverse of [`value_to_text`].
pub fn text_to_value(text: &str, tag: &str) -> Result<AMQPValue, String> {
    fn num<T: std::str::FromStr>(t: &str, what: &str) -> Result<T, String> {
        t.trim().parse().map_err(|_| format!("`{t}` is not {what}"))
    }
    Ok(match tag {
        "bool" => AMQPValue::Boolean(num(text, "a boolean")?),
        "i8" => AMQPValue::ShortShortInt(num(text, "an i8")?),
        "u8" => AMQPValue::ShortShortUInt(num(text, "a u8")?),
        "i16" => AMQPValue::ShortInt(num(text, "an i16")?),
        "u16" => AMQPValue::ShortUInt(num(text, "a u16")?),
        "i32" => AMQPValue::LongInt(num(text, "an i32")?),
        "u32" => AMQPValue::LongUInt(num(text, "a u32")?),
        "i64" => AMQPValue::LongLongInt(num(text, "an i64")?),
        "f32" => AMQPValue::Float(num(text, "an f32")?),
        "f64" => AMQPValue::Double(num(text, "an f64")?),
        "decimal" => AMQPValue::DecimalValue(decimal(text)?),
        "timestamp" => AMQPValue::Timestamp(num(text, "a timestamp")?),
        "bytes" => AMQPValue::ByteArray(ByteArray::from(
            B64.decode(text).map_err(|e| format!("bad base64: {e}"))?,
        )),
        "binary" => AMQPValue::LongString(LongString::from(
            B64.decode(text).map_err(|e| format!("bad base64: {e}"))?,
        )),
        "void" => AMQPValue::Void,
        "table" | "array" => {
            let j: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
            match (tag, json_to_value(&j)?) {
                ("table", v @ AMQPValue::FieldTable(_)) => v,
                ("array", v @ AMQPValue::FieldArray(_)) => v,
                _ => return Err(format!("JSON is not a {tag}")),
            }
        }
        other => return Err(format!("unknown AMQP type tag `{other}`")),
    })
}

fn decimal(text: &str) -> Result<DecimalValue, String> {
    let (s, v) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not SCALE:VALUE"))?;
    Ok(DecimalValue {
        scale: s.parse().map_err(|_| format!("bad scale in `{text}`"))?,
        value: v.parse().map_err(|_| format!("bad value in `{text}`"))?,
    })
}

fn table_to_json(t: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::{Value, json};
    match v {
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(t) => Value::String(t.to_owned()),
            Err(_) => json!({"$bytes": B64.encode(s.as_bytes())}),
        },
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!({"$decimal": format!("{}:{}", d.scale, d.value)}),
        AMQPValue::Timestamp(t) => json!({"$timestamp": t}),
        AMQPValue::ByteArray(b) => json!({"$bytes": B64.encode(b.as_slice())}),
        AMQPValue::Void => Value::Null,
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
    }
}

fn json_to_value(j: &serde_json::Value) -> Result<AMQPValue, String> {
    use serde_json::Value;
    Ok(match j {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(json_to_value).collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(o) => {
            if o.len() == 1 {
                let (k, v) = o.iter().next().expect("one entry");
                match (k.as_str(), v) {
                    ("$timestamp", Value::Number(n)) => {
                        return Ok(AMQPValue::Timestamp(n.as_u64().ok_or("bad $timestamp")?));
                    }
                    ("$bytes", Value::String(s)) => {
                        return Ok(AMQPValue::ByteArray(ByteArray::from(
                            B64.decode(s).map_err(|e| format!("bad $bytes: {e}"))?,
                        )));
                    }
                    ("$decimal", Value::String(s)) => {
                        return Ok(AMQPValue::DecimalValue(decimal(s)?));
                    }
                    _ => {}
                }
            }
            let mut t = FieldTable::default();
            for (k, v) in o {
                let key = ShortString::try_new(k.as_str())
                    .map_err(|_| format!("table key `{k}` is longer than 255 bytes"))?;
                t.insert(key, json_to_value(v)?);
            }
            AMQPValue::FieldTable(t)
        }
    })
}

/// A route argument (YAML scalar) → an AMQP argument value. Integers go as i64 (what
/// RabbitMQ's own clients send for `x-message-ttl` and friends).
pub fn argument(v: &serde_json::Value) -> AMQPValue {
    json_to_value(v).unwrap_or(AMQPValue::Void)
}

/// Route arguments → a field table.
pub fn arguments(args: &BTreeMap<String, serde_json::Value>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        // Names were checked at route compile time; a long one is skipped, not a panic.
        if let Ok(key) = ShortString::try_new(k.as_str()) {
            t.insert(key, argument(v));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(m: &Message, user: &str, now: SystemTime) -> Result<BasicProperties, ConvertError> {
        to_amqp(
            m,
            ReplyTo::None,
            user,
            now,
            |_| false,
            &mut Fields::default(),
        )
    }

    #[test]
    fn a_repeated_header_follows_the_loss_policy() {
        let mut m = Message::new("x")
            .with_header("k", "1")
            .with_header("k", "2");
        let now = SystemTime::now();
        let mut lost = Fields::default();
        let p = to_amqp(&m, ReplyTo::None, "u", now, |_| false, &mut lost).unwrap();
        assert_eq!(lost.names(), "headers");
        let k = |p: &BasicProperties| p.headers().as_ref().unwrap().inner()["k"].clone();
        assert_eq!(k(&p), AMQPValue::LongString("1".into()));
        m.loss = Loss::Encode;
        let p = out(&m, "u", now).unwrap();
        let both = vec![
            AMQPValue::LongString("1".into()),
            AMQPValue::LongString("2".into()),
        ];
        assert_eq!(k(&p), AMQPValue::FieldArray(both.into()));
        m.loss = Loss::Reject;
        assert!(matches!(out(&m, "u", now), Err(ConvertError::Repeated(_))));
    }

    fn all_types() -> FieldTable {
        let mut nested = FieldTable::default();
        nested.insert("s".into(), AMQPValue::LongString("x".into()));
        nested.insert("n".into(), AMQPValue::LongLongInt(-5));
        nested.insert("t".into(), AMQPValue::Timestamp(1_700_000_000));
        nested.insert(
            "b".into(),
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 255])),
        );
        nested.insert(
            "d".into(),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        );
        nested.insert("v".into(), AMQPValue::Void);
        nested.insert("f".into(), AMQPValue::Double(1.5));
        let mut t = FieldTable::default();
        t.insert("str".into(), AMQPValue::LongString("hello".into()));
        t.insert(
            "bin".into(),
            AMQPValue::LongString(LongString::from(vec![0xffu8, 0])),
        );
        t.insert("bool".into(), AMQPValue::Boolean(true));
        t.insert("i8".into(), AMQPValue::ShortShortInt(-8));
        t.insert("u8".into(), AMQPValue::ShortShortUInt(8));
        t.insert("i16".into(), AMQPValue::ShortInt(-16));
        t.insert("u16".into(), AMQPValue::ShortUInt(16));
        t.insert("i32".into(), AMQPValue::LongInt(-32));
        t.insert("u32".into(), AMQPValue::LongUInt(32));
        t.insert("i64".into(), AMQPValue::LongLongInt(-64));
        t.insert("f32".into(), AMQPValue::Float(0.25));
        t.insert("f64".into(), AMQPValue::Double(-1e300));
        t.insert(
            "dec".into(),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 3,
                value: 42,
            }),
        );
        t.insert("ts".into(), AMQPValue::Timestamp(1_600_000_000));
        t.insert(
            "bytes".into(),
            AMQPValue::ByteArray(ByteArray::from(vec![1u8, 2, 3])),
        );
        t.insert("void".into(), AMQPValue::Void);
        t.insert("table".into(), AMQPValue::FieldTable(nested.clone()));
        t.insert(
            "array".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongString("a".into()),
                AMQPValue::LongLongInt(1),
                AMQPValue::FieldTable(nested),
            ])),
        );
        t
    }

    fn ctx() -> Inbound<'static> {
        Inbound {
            link: "rabbit",
            exchange: "x",
            routing_key: "k.1",
        }
    }

    #[test]
    fn every_header_type_round_trips_exactly() {
        let props = BasicProperties::default().with_headers(all_types());
        let now = SystemTime::now();
        let m = from_amqp(&ctx(), &props, b"body".to_vec(), now).unwrap();
        assert_eq!(m.headers.get("str"), Some("hello"));
        assert_eq!(m.headers.get("i32"), Some("-32"));
        assert_eq!(m.headers.get("ts"), Some("1600000000"));
        assert_eq!(m.headers.get("bytes"), Some("AQID"));
        let back = out(&m, "guest", now).unwrap();
        assert_eq!(back.headers().as_ref().unwrap(), &all_types());
    }

    #[test]
    fn a_bare_message_crosses_bare() {
        // What a shovel would publish: no priority, no message id the source lacked.
        let now = SystemTime::now();
        let props = BasicProperties::default().with_delivery_mode(2);
        let m = from_amqp(&ctx(), &props, b"x".to_vec(), now).unwrap();
        assert_eq!(m.priority, 4, "the canonical default");
        let back = out(&m, "guest", now).unwrap();
        assert_eq!(back.priority(), &None);
        assert_eq!(back.message_id(), &None);
        assert_eq!(back.delivery_mode(), &Some(2));
        // From another protocol: a priority other than 4 and a given id cross.
        let mut m = Message::new(&b"y"[..]);
        m.priority = 0;
        m.id = MessageId::given("given-1");
        let back = out(&m, "guest", now).unwrap();
        assert_eq!(back.priority(), &Some(0));
        assert_eq!(
            back.message_id().as_ref().map(|s| s.as_str()),
            Some("given-1")
        );
    }

    #[test]
    fn properties_round_trip() {
        let now = SystemTime::now();
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c-1".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_type("order.created".into())
            .with_user_id("guest".into())
            .with_app_id("shop".into());
        let m = from_amqp(&ctx(), &props, b"{}".to_vec(), now).unwrap();
        assert!(m.persistent);
        assert_eq!(m.priority, 7);
        assert_eq!(m.id.to_string(), "m-1");
        assert_eq!(m.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(m.expiry, Some(now + Duration::from_secs(60)));
        assert_eq!(m.headers.get(TYPE_HEADER), Some("order.created"));
        assert_eq!(m.headers.get(ROUTING_KEY_HEADER), Some("k.1"));
        let back = out(&m, "guest", now).unwrap();
        assert_eq!(back, props);
        // Another user's id stays a header: RabbitMQ would refuse it.
        let back = out(&m, "someone", now).unwrap();
        assert_eq!(back.user_id(), &None);
        let h = back.headers().as_ref().unwrap();
        assert_eq!(
            h.inner().get(&ShortString::from(USER_ID_HEADER)),
            Some(&AMQPValue::LongString("guest".into()))
        );
    }

    #[test]
    fn reply_to_becomes_a_link_reply_address() {
        let props =
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to.g1h/x+y==".into());
        let m = from_amqp(&ctx(), &props, Vec::new(), SystemTime::now()).unwrap();
        let r = m.reply_to.clone().unwrap();
        match crate::router::reply_target(&r) {
            Some(crate::routes::Rendered::Amqp {
                link,
                exchange,
                routing_key,
            }) => {
                assert_eq!(link, "rabbit");
                assert_eq!(exchange, "");
                assert_eq!(routing_key, "amq.rabbitmq.reply-to.g1h/x+y==");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_typed_header_is_an_error_not_a_silent_change() {
        let m = Message::new("x")
            .with_header("n", "forty")
            .with_header(TYPES_HEADER, r#"{"n":"i32"}"#);
        assert!(out(&m, "", SystemTime::now()).is_err());
    }

    #[test]
    fn bad_expiration_is_refused() {
        let props = BasicProperties::default().with_expiration("soon".into());
        assert!(from_amqp(&ctx(), &props, Vec::new(), SystemTime::now()).is_err());
    }
}
