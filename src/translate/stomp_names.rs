//! The default convention between STOMP destinations and internal destinations, as
//! RabbitMQ and ActiveMQ use it: `/queue/NAME` is the queue NAME, `/topic/NAME` the topic
//! NAME (internal grammar: `.` levels, `*` and `#` wildcards in SUBSCRIBE),
//! `/temp-queue/NAME` a private reply queue of the connection.

use crate::core::{Destination, NameError, Pattern, validate_name};

/// A STOMP destination, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StompDest {
    Queue(String),
    Topic(String),
    TempQueue(String),
}

/// Why a STOMP destination is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StompDestError {
    #[error("unknown destination `{0}`: use /queue/NAME, /topic/NAME or /temp-queue/NAME")]
    UnknownPrefix(String),
    #[error("invalid destination `{dest}`: {err}")]
    Name { dest: String, err: NameError },
}

/// Parses a destination; wildcards are accepted only when `pattern` is true (SUBSCRIBE).
pub fn parse(dest: &str, pattern: bool) -> Result<StompDest, StompDestError> {
    let check = |name: &str| -> Result<(), StompDestError> {
        let r = if pattern {
            Pattern::parse(name).map(|_| ())
        } else {
            validate_name(name)
        };
        r.map_err(|err| StompDestError::Name {
            dest: dest.to_owned(),
            err,
        })
    };
    if let Some(n) = dest.strip_prefix("/queue/") {
        validate_name(n).map_err(|err| StompDestError::Name {
            dest: dest.to_owned(),
            err,
        })?;
        Ok(StompDest::Queue(n.to_owned()))
    } else if let Some(n) = dest.strip_prefix("/topic/") {
        check(n)?;
        Ok(StompDest::Topic(n.to_owned()))
    } else if let Some(n) = dest.strip_prefix("/temp-queue/") {
        validate_name(n).map_err(|err| StompDestError::Name {
            dest: dest.to_owned(),
            err,
        })?;
        Ok(StompDest::TempQueue(n.to_owned()))
    } else {
        Err(StompDestError::UnknownPrefix(dest.to_owned()))
    }
}

/// Internal destination → STOMP destination.
pub fn from_internal(d: &Destination) -> String {
    match d {
        Destination::Queue(n) => format!("/queue/{n}"),
        Destination::Topic(n) => format!("/topic/{n}"),
    }
}

/// Prefix of temporary reply queues (`/temp-queue/NAME` of a connection):
/// `$sb.tmp.TOKEN.NAME`, TOKEN being 128 random bits in hex. Whoever holds the address
/// may reply to it, so it must not be guessable; only the connection consumes it.
pub const TEMP_PREFIX: &str = "$sb.tmp.";

/// Prefix of durable subscription queues: `stomp.USER.NAME`, USER escaped so that a
/// login with a `.` cannot pose as another user's (`auth/owner.rs` reads it).
pub const DURABLE_PREFIX: &str = "stomp.";

/// The queue of `user`'s durable subscription `name`.
pub fn durable_queue(user: &str, name: &str) -> String {
    format!(
        "{DURABLE_PREFIX}{}.{name}",
        super::escape::escape_level(user)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions() {
        assert_eq!(
            parse("/queue/a.b", false),
            Ok(StompDest::Queue("a.b".into()))
        );
        assert_eq!(
            parse("/topic/a.*", true),
            Ok(StompDest::Topic("a.*".into()))
        );
        assert!(parse("/topic/a.*", false).is_err());
        assert!(matches!(
            parse("/exchange/x", false),
            Err(StompDestError::UnknownPrefix(_))
        ));
        assert_eq!(from_internal(&Destination::topic("x.y")), "/topic/x.y");
    }
}
