//! The default convention between MQTT topics and internal topic names.
//!
//! MQTT separates levels with `/`, the internal grammar with `.`. Each level is carried
//! over with [`super::escape`], so a `.` inside an MQTT level survives the round trip:
//! `sensors/v1.2/temp` ⇄ `sensors.v1%2E2.temp`. In filters `+` becomes `*` and `#` stays `#`.

use super::escape::{escape_level, unescape_level};
use crate::core::Destination;

/// MQTT topics under this prefix address internal *queues*: `$queue/NAME` is the queue
/// NAME (verbatim, internal spelling). This lets an MQTT client send to a queue, and
/// answer a request whose reply address is a queue (a STOMP temp queue, an AMQP reply
/// queue).
pub const QUEUE_PREFIX: &str = "$queue/";

/// MQTT topic name → internal destination.
pub fn topic_to_destination(topic: &str) -> Destination {
    match topic.strip_prefix(QUEUE_PREFIX) {
        Some(q) => Destination::queue(q),
        None => Destination::topic(&topic_to_internal(topic)),
    }
}

/// Internal destination → MQTT topic name.
pub fn destination_to_topic(d: &Destination) -> String {
    match d {
        Destination::Queue(q) => format!("{QUEUE_PREFIX}{q}"),
        Destination::Topic(t) => internal_to_topic(t),
    }
}

/// MQTT topic name (no wildcards) → internal topic name.
pub fn topic_to_internal(topic: &str) -> String {
    // The common case, nothing to escape: one allocation instead of one per level
    // (every PUBLISH goes through here).
    if !topic
        .bytes()
        .any(|b| matches!(b, b'%' | b'.' | b'*' | b'#' | b'+'))
    {
        return topic.replace('/', ".");
    }
    topic
        .split('/')
        .map(escape_level)
        .collect::<Vec<_>>()
        .join(".")
}

/// MQTT topic filter → internal pattern.
pub fn filter_to_internal(filter: &str) -> String {
    filter
        .split('/')
        .map(|l| match l {
            "+" => "*".to_owned(),
            "#" => "#".to_owned(),
            l => escape_level(l),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Internal topic name → MQTT topic name.
pub fn internal_to_topic(name: &str) -> String {
    // Nothing escaped (no `%`): one allocation instead of one per level (every
    // delivery goes through here).
    if !name.contains('%') {
        return name.replace('.', "/");
    }
    name.split('.')
        .map(unescape_level)
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks an MQTT topic filter per MQTT 3.1.1 §4.7: `#` only last and alone in its
/// level, `+` alone in its level, no NUL, not empty.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("an MQTT topic filter must not be empty".into());
    }
    if filter.contains('\0') {
        return Err("an MQTT topic filter must not contain NUL".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i != levels.len() - 1) {
            return Err(format!(
                "`#` must be the last level on its own in `{filter}`"
            ));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("`+` must stand alone in its level in `{filter}`"));
        }
    }
    Ok(())
}

/// Checks an MQTT topic name: not empty, no wildcards, no NUL.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("an MQTT topic must not be empty".into());
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(format!(
            "an MQTT topic name must not contain `+`, `#` or NUL: `{topic}`"
        ));
    }
    Ok(())
}

/// Prefix of the core queues the MQTT listener names (sessions, shared groups): they
/// belong to sessions, never to be named by a client (`auth/owner.rs` reads it).
pub const MQTT_QUEUE_PREFIX: &str = "$mqtt.";

/// Prefix of the session queues ([`session_queue`]).
pub const SESSION_QUEUE_PREFIX: &str = "$mqtt.s.";

/// The core queue name of a client's session: the client id with anything outside a
/// safe set percent-encoded, so every client id gives a valid, distinct name.
pub fn session_queue(client_id: &str) -> String {
    let mut out = SESSION_QUEUE_PREFIX.to_owned();
    for b in client_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Is this the queue of a `$share` group (as opposed to a `$queue/NAME` subscription)?
pub fn is_share_queue(name: &str) -> bool {
    name.strip_prefix(MQTT_QUEUE_PREFIX)
        .is_some_and(|r| r.starts_with("share."))
}

/// The core queue of a shared subscription `$share/GROUP/FILTER`.
pub fn shared_queue(group: &str, filter: &str) -> String {
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    format!("{MQTT_QUEUE_PREFIX}share.{}.{}", hex(group), hex(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_with_dots() {
        let t = "sensors/v1.2/temp";
        let i = topic_to_internal(t);
        assert_eq!(i, "sensors.v1%2E2.temp");
        assert_eq!(internal_to_topic(&i), t);
        assert_eq!(internal_to_topic(&topic_to_internal("/a//b")), "/a//b");
    }

    #[test]
    fn queue_prefix() {
        assert_eq!(
            topic_to_destination("$queue/orders.eu"),
            Destination::queue("orders.eu")
        );
        assert_eq!(topic_to_destination("a/b.c"), Destination::topic("a.b%2Ec"));
        assert_eq!(
            destination_to_topic(&Destination::queue("r.1")),
            "$queue/r.1"
        );
        assert_eq!(
            destination_to_topic(&Destination::topic("a.b%2Ec")),
            "a/b.c"
        );
    }

    proptest::proptest! {
        /// The one-allocation fast paths give what the level-by-level way gives.
        #[test]
        fn fast_paths_match_level_by_level(t in "[a-z/.%*#+2EFe]{0,12}") {
            let slow = t.split('/').map(escape_level).collect::<Vec<_>>().join(".");
            proptest::prop_assert_eq!(topic_to_internal(&t), slow);
            let slow = t.split('.').map(unescape_level).collect::<Vec<_>>().join("/");
            proptest::prop_assert_eq!(internal_to_topic(&t), slow);
        }
    }

    #[test]
    fn filters() {
        assert_eq!(filter_to_internal("sensors/+/temp/#"), "sensors.*.temp.#");
        assert!(validate_filter("a/#/b").is_err());
        assert!(validate_filter("a/b+").is_err());
        assert!(validate_filter("+/x/#").is_ok());
    }
}
