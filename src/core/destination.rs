//! Internal destinations: queues (point-to-point) and topics (publish/subscribe).
//!
//! Internal names use one grammar for every protocol: levels separated by `.`. A topic
//! *pattern* may use `*` (exactly one level) and `#` (zero or more levels) as whole
//! levels. Edges translate their own grammar (MQTT `/`, `+`, `#`; STOMP paths; AMQP
//! binding keys; JIDs) into this one; see `docs/mapping.md`.

use std::fmt;
use std::sync::Arc;

/// Longest internal destination name accepted, in bytes (AMQP's shortstr limit).
pub const MAX_NAME_LEN: usize = 255;

/// An internal address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// Point-to-point: each message goes to exactly one consumer.
    Queue(Arc<str>),
    /// Publish/subscribe: every matching subscription gets a copy.
    Topic(Arc<str>),
}

impl Destination {
    pub fn queue(name: &str) -> Self {
        Self::Queue(name.into())
    }

    pub fn topic(name: &str) -> Self {
        Self::Topic(name.into())
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Queue(n) | Self::Topic(n) => n,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Queue(_) => "queue",
            Self::Topic(_) => "topic",
        }
    }

    /// Parses the `queue:NAME` / `topic:NAME` form used in config and logs.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (kind, name) = s.split_once(':').ok_or(NameError::MissingKind)?;
        validate_name(name)?;
        match kind {
            "queue" => Ok(Self::queue(name)),
            "topic" => Ok(Self::topic(name)),
            _ => Err(NameError::MissingKind),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.name())
    }
}

/// Why a name is not a valid internal destination name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("destination name is empty")]
    Empty,
    #[error("destination name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("destination name contains a control or whitespace character")]
    BadChar,
    #[error("wildcard `{0}` is only allowed in subscription patterns")]
    Wildcard(char),
    #[error("expected `queue:NAME` or `topic:NAME`")]
    MissingKind,
}

/// Checks a concrete (wildcard-free) destination name.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    validate_chars(name)?;
    for level in name.split('.') {
        if level == "*" {
            return Err(NameError::Wildcard('*'));
        }
        if level == "#" {
            return Err(NameError::Wildcard('#'));
        }
    }
    Ok(())
}

pub(crate) fn validate_chars(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(NameError::BadChar);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let d = Destination::parse("queue:orders.eu").unwrap();
        assert_eq!(d, Destination::queue("orders.eu"));
        assert_eq!(d.to_string(), "queue:orders.eu");
        assert_eq!(
            Destination::parse("topic:a.b").unwrap(),
            Destination::topic("a.b")
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(Destination::parse("orders"), Err(NameError::MissingKind));
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("a b"), Err(NameError::BadChar));
        assert_eq!(validate_name("a.*.b"), Err(NameError::Wildcard('*')));
        assert_eq!(validate_name("a.#"), Err(NameError::Wildcard('#')));
        assert_eq!(validate_name(&"x".repeat(256)), Err(NameError::TooLong));
        // `*` inside a level is an ordinary character.
        assert_eq!(validate_name("a*b.c"), Ok(()));
    }
}
