//! STOMP frames ⇄ the canonical message. Pure functions; the table is in
//! `docs/mapping.md` ("STOMP").
//!
//! | STOMP header | canonical field |
//! |---|---|
//! | `content-type` | `content_type` |
//! | `correlation-id` | `correlation_id` |
//! | `reply-to` | `reply_to` (resolved by the session: `/queue/…`, `/topic/…`, `/temp-queue/…`) |
//! | `persistent` (`true`/`false`, any case) | `persistent` |
//! | `expires` (ms since the epoch, `0` = never) | `expiry` |
//! | `priority` (`0`–`9`) | `priority` |
//! | `message-id` on SEND | `id` |
//! | `timestamp` (ms since the epoch) | `timestamp` |
//! | any other header | `headers`, in order, repeats kept |
//!
//! Frame-level headers (`destination`, `content-length`, `receipt`, `transaction`) are not
//! copied into the message. Going out, a header from another protocol whose name is one
//! STOMP reserves is sent as `x-sb-NAME` so it cannot change the frame's meaning.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use super::codec::{CodecError, FrameWriter};
use super::frame::{Command, Frame, Version};
use crate::core::{Delivery, Destination, Message, MessageId, Origin};

/// Headers with a meaning in STOMP frames; never copied verbatim from other protocols.
pub const RESERVED: &[&str] = &[
    "destination",
    "subscription",
    "message-id",
    "ack",
    "id",
    "content-type",
    "content-length",
    "receipt",
    "receipt-id",
    "transaction",
    "correlation-id",
    "reply-to",
    "persistent",
    "expires",
    "priority",
    "timestamp",
    "redelivered",
];

/// Headers of SEND consumed by the frame itself, not the message.
const FRAME_ONLY: &[&str] = &["destination", "content-length", "receipt", "transaction"];

/// Why a SEND could not become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("invalid `{header}` header `{value}`: {reason}")]
    BadHeader {
        header: &'static str,
        value: String,
        reason: &'static str,
    },
}

fn bad(header: &'static str, value: &str, reason: &'static str) -> SendError {
    SendError::BadHeader {
        header,
        value: value.to_owned(),
        reason,
    }
}

/// A boolean header: `true` or `false` in any case (RabbitMQ clients written in Python
/// send `True`/`False`); `None` for anything else, which the caller must refuse rather
/// than read as a default.
pub fn parse_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn epoch_ms(v: &str, header: &'static str) -> Result<u64, SendError> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| bad(header, v, "expected milliseconds since the epoch"))
}

/// SEND → message. `reply_to` is the session's resolution of the `reply-to` header.
pub fn send_to_message(
    frame: &Frame,
    origin: Origin,
    reply_to: Option<Destination>,
) -> Result<Message, SendError> {
    let mut m = Message::new(frame.body.clone());
    m.origin = origin;
    m.reply_to = reply_to;
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in &frame.headers {
        // STOMP 1.2: if a header is repeated, only the first value is used.
        let reserved = RESERVED.contains(&k.as_str());
        if reserved && seen.contains(&k.as_str()) {
            continue;
        }
        if reserved {
            seen.push(k);
        }
        match k.as_str() {
            h if FRAME_ONLY.contains(&h) => {}
            "reply-to" => {}
            "content-type" => m.content_type = Some(v.clone()),
            "correlation-id" => m.correlation_id = Some(v.clone()),
            "persistent" => {
                m.persistent =
                    parse_bool(v).ok_or_else(|| bad("persistent", v, "expected true or false"))?
            }
            "expires" => {
                let ms = epoch_ms(v, "expires")?;
                m.expiry = (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms));
            }
            "priority" => {
                m.priority = match v.trim().parse::<u8>() {
                    Ok(p) if p <= 9 => p,
                    _ => return Err(bad("priority", v, "expected 0 to 9")),
                }
            }
            "message-id" => {
                if !v.is_empty() {
                    m.id = MessageId::given(v);
                }
            }
            "timestamp" => {
                m.timestamp = UNIX_EPOCH + Duration::from_millis(epoch_ms(v, "timestamp")?)
            }
            _ => m.headers.append(k.clone(), v.clone()),
        }
    }
    Ok(m)
}

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the session knows about a delivery that the message does not.
#[derive(Debug, Clone)]
pub struct MessageFrameInfo<'a> {
    pub subscription: &'a str,
    /// The `ack` header (1.2), present when the subscription needs acks.
    pub ack: Option<&'a str>,
    /// The destination as the subscriber should see it.
    pub destination: &'a str,
    /// `reply-to` spelled for STOMP.
    pub reply_to: Option<String>,
}

/// Delivery → MESSAGE, as a [`Frame`] (what [`encode_delivery`] writes), for tests.
#[cfg(test)]
pub fn delivery_to_frame(d: &Delivery, info: MessageFrameInfo<'_>) -> Frame {
    let mut f = Frame::new(Command::Message);
    let _ = delivery_headers::<()>(d, &info, |prefix, name, value| {
        f.headers
            .push((format!("{prefix}{name}"), value.to_owned()));
        Ok(())
    });
    f.body = d.message.body.clone();
    f
}

/// Delivery → MESSAGE, written straight into `dst` in the wire format of `version`:
/// the session's delivery path, with no [`Frame`] and no copy of each header between the
/// message and the bytes sent. On an error (a header this version cannot carry) `dst`
/// is left as it was.
pub fn encode_delivery(
    d: &Delivery,
    info: &MessageFrameInfo<'_>,
    version: Version,
    dst: &mut BytesMut,
) -> Result<(), CodecError> {
    let mut w = FrameWriter::begin(Command::Message, version, dst);
    delivery_headers(d, info, |prefix, name, value| {
        w.prefixed_header(prefix, name, value)
    })?;
    w.finish(&d.message.body)
}

/// The MESSAGE frame's headers for a delivery, in order, each handed to `put` as (name
/// prefix, name, value): a header from another protocol whose name STOMP reserves goes
/// out as `x-sb-NAME` so it cannot change the frame's meaning.
fn delivery_headers<E>(
    d: &Delivery,
    info: &MessageFrameInfo<'_>,
    mut put: impl FnMut(&str, &str, &str) -> Result<(), E>,
) -> Result<(), E> {
    let m = &d.message;
    put("", "subscription", info.subscription)?;
    let generated;
    let id = match &m.id {
        MessageId::Given(s) => &**s,
        MessageId::Generated(_) => {
            generated = m.id.to_string();
            generated.as_str()
        }
    };
    put("", "message-id", id)?;
    put("", "destination", info.destination)?;
    if let Some(a) = info.ack {
        put("", "ack", a)?;
    }
    if let Some(ct) = &m.content_type {
        put("", "content-type", ct)?;
    }
    if let Some(c) = &m.correlation_id {
        put("", "correlation-id", c)?;
    }
    if let Some(r) = &info.reply_to {
        put("", "reply-to", r)?;
    }
    if m.persistent {
        put("", "persistent", "true")?;
    }
    let mut digits = itoa::Buffer::new();
    if let Some(e) = m.expiry {
        put("", "expires", digits.format(ms_since_epoch(e)))?;
    }
    if m.priority != 4 {
        put("", "priority", digits.format(m.priority))?;
    }
    put("", "timestamp", digits.format(ms_since_epoch(m.timestamp)))?;
    // Always present, as RabbitMQ sends it: clients read `redelivered:false` to know that a
    // message is a first delivery.
    put(
        "",
        "redelivered",
        if d.redelivered { "true" } else { "false" },
    )?;
    for (k, v) in m.headers.iter() {
        let prefix = if RESERVED.contains(&k) { "x-sb-" } else { "" };
        put(prefix, k, v)?;
    }
    Ok(())
}

/// An ERROR frame: `message` holds the short reason, the body the explanation.
pub fn error_frame(message: &str, detail: &str, receipt: Option<&str>) -> Frame {
    let mut f =
        Frame::new(Command::Error).with_header("message", message.replace(['\n', '\r'], " "));
    if let Some(r) = receipt {
        f = f.with_header("receipt-id", r);
    }
    f.with_header("content-type", "text/plain")
        .with_body(Bytes::from(detail.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn send_headers_map_onto_the_message() {
        let f = Frame::new(Command::Send)
            .with_header("destination", "/queue/a")
            .with_header("content-type", "application/json")
            .with_header("correlation-id", "c1")
            .with_header("persistent", "true")
            .with_header("priority", "7")
            .with_header("expires", "4102444800000")
            .with_header("x-custom", "1")
            .with_header("x-custom", "2")
            .with_header("priority", "1")
            .with_header("receipt", "r1")
            .with_body(Bytes::from_static(b"{}\0x"));
        let m = send_to_message(&f, Origin::new("stomp", "u"), None).unwrap();
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.correlation_id.as_deref(), Some("c1"));
        assert!(m.persistent);
        assert_eq!(m.priority, 7, "first priority wins");
        assert_eq!(
            m.expiry,
            Some(UNIX_EPOCH + Duration::from_millis(4102444800000))
        );
        assert_eq!(
            m.headers.get_all("x-custom").collect::<Vec<_>>(),
            ["1", "2"],
            "custom repeats kept"
        );
        assert_eq!(m.headers.len(), 2);
        assert_eq!(&m.body[..], b"{}\0x");
        let e = send_to_message(
            &Frame::new(Command::Send).with_header("priority", "12"),
            Origin::internal(),
            None,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "invalid `priority` header `12`: expected 0 to 9"
        );
    }

    #[test]
    fn message_frame_carries_fields_and_protects_reserved_names() {
        let mut m = Message::new("b")
            .with_header("destination", "evil")
            .with_header("k", "v");
        m.correlation_id = Some("c".into());
        m.persistent = true;
        let d = Delivery {
            message: Arc::new(m),
            destination: Destination::queue("q"),
            tag: 1,
            redelivered: true,
            delivery_count: 2,
        };
        let f = delivery_to_frame(
            &d,
            MessageFrameInfo {
                subscription: "s1",
                ack: Some("7"),
                destination: "/queue/q",
                reply_to: Some("/queue/r".into()),
            },
        );
        assert_eq!(f.header("destination"), Some("/queue/q"));
        assert_eq!(f.header("x-sb-destination"), Some("evil"));
        assert_eq!(f.header("k"), Some("v"));
        assert_eq!(f.header("ack"), Some("7"));
        assert_eq!(f.header("redelivered"), Some("true"));
        assert_eq!(f.header("persistent"), Some("true"));
        assert_eq!(f.header("reply-to"), Some("/queue/r"));
        assert_eq!(f.header("correlation-id"), Some("c"));
        let first = Delivery {
            redelivered: false,
            ..d
        };
        let f = delivery_to_frame(
            &first,
            MessageFrameInfo {
                subscription: "s1",
                ack: None,
                destination: "/queue/q",
                reply_to: None,
            },
        );
        assert_eq!(
            f.header("redelivered"),
            Some("false"),
            "as RabbitMQ sends it"
        );
    }

    /// The session's direct encoder writes byte for byte what encoding the frame of
    /// [`delivery_to_frame`] writes, in every version, escapes and repeats included; a
    /// header a version cannot carry fails both ways and leaves the buffer as it was.
    #[test]
    fn encode_delivery_writes_what_the_frame_encodes() {
        use crate::listener::stomp::codec::encode_frame;
        let mut m = Message::new("body\0with nul")
            .with_header("destination", "evil")
            .with_header("a:b", "c\\d")
            .with_header("k", "1")
            .with_header("k", "2")
            .with_header("content-length", "3");
        m.correlation_id = Some("c".into());
        m.content_type = Some("text/plain".into());
        m.persistent = true;
        m.priority = 7;
        m.expiry = Some(UNIX_EPOCH + Duration::from_millis(4102444800000));
        let d = Delivery {
            message: Arc::new(m),
            destination: Destination::queue("q"),
            tag: 1,
            redelivered: false,
            delivery_count: 1,
        };
        let info = MessageFrameInfo {
            subscription: "s:1",
            ack: Some("7"),
            destination: "/queue/q",
            reply_to: Some("/queue/r".into()),
        };
        for v in [Version::V1_0, Version::V1_1, Version::V1_2] {
            let mut want = BytesMut::from(&b"earlier"[..]);
            let mut got = want.clone();
            let a = encode_frame(&delivery_to_frame(&d, info.clone()), v, &mut want);
            let b = encode_delivery(&d, &info, v, &mut got);
            assert_eq!(a.is_ok(), b.is_ok(), "{v:?}");
            assert_eq!(want, got, "{v:?}");
            assert!(got.starts_with(b"earlier"));
        }
        // A value with LF cannot go to a 1.0 client: refused, nothing written.
        let mut m = (*d.message).clone();
        m.headers.append("x", "line\nbreak");
        let d = Delivery {
            message: Arc::new(m),
            ..d
        };
        let mut out = BytesMut::from(&b"earlier"[..]);
        assert!(encode_delivery(&d, &info, Version::V1_0, &mut out).is_err());
        assert_eq!(&out[..], b"earlier");
        assert!(encode_delivery(&d, &info, Version::V1_2, &mut out).is_ok());
    }

    #[test]
    fn booleans_in_any_case_and_nothing_else() {
        assert_eq!(parse_bool("False"), Some(false));
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("no"), None);
        assert_eq!(parse_bool(""), None);
        assert_eq!(parse_bool(" true"), None);
        let f = Frame::new(Command::Send).with_header("persistent", "True");
        assert!(
            send_to_message(&f, Origin::internal(), None)
                .unwrap()
                .persistent
        );
        let f = Frame::new(Command::Send).with_header("persistent", "yes");
        assert_eq!(
            send_to_message(&f, Origin::internal(), None)
                .unwrap_err()
                .to_string(),
            "invalid `persistent` header `yes`: expected true or false"
        );
    }
}
