//! A message as the admin API shows it: its fields, its headers as an ordered list (names
//! may repeat), what dead-lettering recorded (`x-death-*`), and its body made safe to
//! carry in JSON: UTF-8 text as it is, anything else base64 (`body_encoding`), cut at a
//! size with `truncated` set. A console must still escape what it puts in a page: the
//! texts are the publishers'.

use std::time::UNIX_EPOCH;

use base64::Engine;
use serde_json::{Value, json};

use crate::core::Peeked;

/// Body bytes shown by default in a listing, and the most any request may ask for.
pub(super) const LIST_BODY_MAX: usize = 4 * 1024;
pub(super) const ONE_BODY_MAX: usize = 64 * 1024;
pub(super) const BODY_MAX_LIMIT: usize = 1024 * 1024;

fn unix_ms(t: std::time::SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// The body, at most `max` bytes of it: `(text or base64, encoding, truncated)`.
pub(super) fn body(bytes: &[u8], max: usize) -> (String, &'static str, bool) {
    let truncated = bytes.len() > max;
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut end = max.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (text[..end].to_owned(), "text", truncated)
        }
        Err(_) => {
            let shown = &bytes[..max.min(bytes.len())];
            (
                base64::engine::general_purpose::STANDARD.encode(shown),
                "base64",
                truncated,
            )
        }
    }
}

/// One message as JSON, its body cut at `body_max` bytes.
pub(super) fn message(p: &Peeked, body_max: usize) -> Value {
    let m = &p.message;
    let (text, encoding, truncated) = body(&m.body, body_max);
    let headers: Vec<[&str; 2]> = m.headers.iter().map(|(k, v)| [k, v]).collect();
    let death = m.headers.get("x-death-reason").map(|reason| {
        json!({
            "reason": reason,
            "queue": m.headers.get("x-death-queue"),
            "destination": m.headers.get("x-death-destination"),
            "deliveries": m.headers.get("x-death-deliveries").and_then(|d| d.parse::<u32>().ok()),
        })
    });
    json!({
        "id": m.id.to_string(),
        "seq": p.seq,
        "destination": p.destination.to_string(),
        "redelivered": p.redelivered,
        "deliveries": p.deliveries,
        "timestamp_ms": unix_ms(m.timestamp),
        "expiry_ms": m.expiry.and_then(unix_ms),
        "priority": m.priority,
        "persistent": m.persistent,
        "content_type": m.content_type,
        "correlation_id": m.correlation_id,
        "reply_to": m.reply_to.as_ref().map(ToString::to_string),
        "origin": {"protocol": &*m.origin.protocol, "peer": &*m.origin.peer},
        "headers": headers,
        "death": death,
        "body": text,
        "body_encoding": encoding,
        "body_size": m.body.len(),
        "truncated": truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_text_or_base64_and_cut_on_a_character() {
        assert_eq!(body(b"hello", 10), ("hello".into(), "text", false));
        assert_eq!(body(b"hello", 3), ("hel".into(), "text", true));
        // "é" is two bytes: never cut in the middle.
        assert_eq!(body("aé".as_bytes(), 2), ("a".into(), "text", true));
        assert_eq!(body(&[0xff, 0, 1], 10), ("/wAB".into(), "base64", false));
        assert_eq!(body(&[0xff, 0, 1], 1), ("/w==".into(), "base64", true));
    }
}
