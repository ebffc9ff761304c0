//! Reading the headers a session interprets: a missing or unreadable one is fatal.

use super::fatal::{Fatal, fatal};
use crate::listener::stomp::convert::parse_bool;
use crate::listener::stomp::frame::Frame;

/// A header the frame must carry.
pub(super) fn header<'a>(f: &'a Frame, name: &str) -> Result<&'a str, Fatal> {
    f.header(name).ok_or_else(|| {
        fatal(
            format!("missing {name} header"),
            format!("{} requires a `{name}` header", f.command.as_str()),
        )
    })
}

/// A header the session interprets has a value it cannot read: ERROR `message` naming the
/// header and the value, and one log line. Never a silent default: a client that wrote
/// `requeue:maybe` or `durable:yes` meant something, and guessing loses messages.
pub(super) fn invalid_header(message: &str, header: &str, value: &str, expected: &str) -> Fatal {
    tracing::warn!(header, %value, "invalid header value");
    fatal(
        message,
        format!("invalid `{header}` header `{value}`: {expected}"),
    )
}

/// A boolean header: `true`/`false` in any case, `default` when absent, ERROR otherwise.
pub(super) fn bool_header(f: &Frame, name: &str, default: bool) -> Result<bool, Fatal> {
    match f.header(name) {
        None => Ok(default),
        Some(v) => parse_bool(v)
            .ok_or_else(|| invalid_header("invalid header", name, v, "expected true or false")),
    }
}

/// Whether a SUBSCRIBE or UNSUBSCRIBE asks for a durable subscription (`durable` or
/// `persistent`); both headers are read, so a bad value in either is an ERROR.
pub(super) fn durable_header(f: &Frame) -> Result<bool, Fatal> {
    let durable = bool_header(f, "durable", false)?;
    let persistent = bool_header(f, "persistent", false)?;
    Ok(durable || persistent)
}
