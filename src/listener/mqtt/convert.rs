//! MQTT PUBLISH ⇄ the canonical message. Pure functions; the table is in
//! `docs/mapping.md` ("MQTT").
//!
//! | MQTT | canonical |
//! |---|---|
//! | topic | destination by the default convention (`$queue/NAME` = queue NAME) |
//! | payload | body (bytes as they are) |
//! | QoS | `qos`; `persistent` = QoS ≥ 1 |
//! | 5.0 content type | `content_type` |
//! | 5.0 correlation data | `correlation_id` (UTF-8 as is, other bytes as `hex:…`) |
//! | 5.0 response topic | `reply_to` |
//! | 5.0 message expiry interval | `expiry` |
//! | 5.0 user properties | `headers`, in order, repeats kept |
//! | 5.0 payload format indicator | header `x-mqtt-payload-format: utf-8` |
//! | retain flag of a live publish | header `x-mqtt-retain: 1` (for "retain as published") |
//!
//! The `x-mqtt-*` headers are removed again when the message goes out over MQTT.

use std::time::{Duration, SystemTime};

use super::codec::{Props, Publish};
use crate::core::{Delivery, Destination, Message, MessageId, Origin};
use crate::translate::mqtt_names::{destination_to_topic, topic_to_destination};

pub const PAYLOAD_FORMAT_HEADER: &str = "x-mqtt-payload-format";
pub const RETAIN_HEADER: &str = "x-mqtt-retain";
/// Marks a copy of a retained message queued for a new subscriber (sent with retain 1).
pub const RETAINED_HEADER: &str = "x-mqtt-retained";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Correlation data → correlation id.
pub fn correlation_to_id(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.starts_with("hex:") => s.to_owned(),
        _ => format!("hex:{}", hex(b)),
    }
}

/// Correlation id → correlation data.
pub fn id_to_correlation(s: &str) -> Vec<u8> {
    s.strip_prefix("hex:")
        .and_then(unhex)
        .unwrap_or_else(|| s.as_bytes().to_vec())
}

/// PUBLISH (topic alias already resolved) → message.
pub fn publish_to_message(p: &Publish, origin: Origin) -> Message {
    let mut m = Message::new(p.payload.clone());
    m.id = MessageId::generate();
    m.origin = origin;
    m.qos = p.qos;
    m.persistent = p.qos > 0;
    let pr = &p.props;
    m.content_type = pr.content_type.clone();
    m.correlation_id = pr.correlation_data.as_deref().map(correlation_to_id);
    m.reply_to = pr.response_topic.as_deref().map(topic_to_destination);
    m.expiry = pr
        .expiry
        .map(|s| SystemTime::now() + Duration::from_secs(u64::from(s)));
    for (k, v) in &pr.user {
        m.headers.append(k.clone(), v.clone());
    }
    if pr.utf8 {
        m.headers.set(PAYLOAD_FORMAT_HEADER, "utf-8");
    }
    if p.retain {
        m.headers.set(RETAIN_HEADER, "1");
    }
    m
}

/// Message → PUBLISH on `topic` at `qos`. `retain` is the flag to send.
pub fn message_to_publish(m: &Message, topic: String, qos: u8, retain: bool, v5: bool) -> Publish {
    Publish {
        dup: false,
        retain,
        qos,
        topic,
        packet_id: None,
        payload: m.body.clone(),
        // MQTT 3.1.1 has no properties: not built only to be dropped, once per delivery.
        props: if v5 {
            publish_props(m)
        } else {
            Props::default()
        },
    }
}

/// The MQTT 5 properties a message is published with.
fn publish_props(m: &Message) -> Props {
    let expiry = m.expiry.map(|e| {
        e.duration_since(SystemTime::now())
            .map(|d| d.as_secs().max(1) as u32)
            .unwrap_or(1)
    });
    Props {
        content_type: m.content_type.clone(),
        correlation_data: m
            .correlation_id
            .as_deref()
            .map(|c| id_to_correlation(c).into()),
        response_topic: m.reply_to.as_ref().map(destination_to_topic),
        expiry,
        user: m
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("x-mqtt-"))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        utf8: m.headers.get(PAYLOAD_FORMAT_HEADER) == Some("utf-8"),
        topic_alias: None,
        subscription_ids: Vec::new(),
    }
}

/// The MQTT topic a delivery is shown on.
pub fn delivery_topic(d: &Delivery) -> String {
    destination_to_topic(&d.destination)
}

/// Destination of a PUBLISH topic name.
pub fn publish_destination(topic: &str) -> Destination {
    topic_to_destination(topic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn v5_properties_round_trip() {
        let p = Publish {
            dup: false,
            retain: true,
            qos: 1,
            topic: "a/b".into(),
            packet_id: Some(3),
            payload: Bytes::from_static(b"\x00\x01"),
            props: Props {
                content_type: Some("application/octet-stream".into()),
                correlation_data: Some(Bytes::from_static(b"\xff\x00")),
                response_topic: Some("replies/x".into()),
                expiry: Some(60),
                user: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
                utf8: true,
                topic_alias: None,
                subscription_ids: vec![],
            },
        };
        let m = publish_to_message(&p, Origin::new("mqtt", "c"));
        assert_eq!(m.correlation_id.as_deref(), Some("hex:ff00"));
        assert_eq!(m.reply_to, Some(Destination::topic("replies.x")));
        assert!(m.persistent && m.qos == 1);
        let back = message_to_publish(&m, "a/b".into(), 1, true, true);
        assert_eq!(back.props.correlation_data, p.props.correlation_data);
        assert_eq!(back.props.response_topic, p.props.response_topic);
        assert_eq!(
            back.props.user, p.props.user,
            "x-mqtt-* headers are not user properties"
        );
        assert!(back.props.utf8);
        assert!(back.props.expiry.is_some_and(|e| (59..=60).contains(&e)));
        assert_eq!(back.payload, p.payload);
    }

    #[test]
    fn correlation_ids() {
        assert_eq!(correlation_to_id(b"abc"), "abc");
        assert_eq!(id_to_correlation("abc"), b"abc");
        assert_eq!(id_to_correlation(&correlation_to_id(b"hex:x")), b"hex:x");
    }
}
