//! STOMP frame model: commands, frames and protocol versions.
//!
//! This module is transport-agnostic: it knows nothing about octets on the
//! wire (see `codec.rs` for that), only about what a frame *is* per
//! <https://stomp.github.io/stomp-specification-1.2.html#STOMP_Frames>.

use std::fmt;

use bytes::Bytes;

/// A STOMP command: the first line of every frame.
///
/// Commands are case-sensitive upper-case ASCII on the wire; the spec defines
/// no others, so anything else is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    // Client frames.
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    // Server frames.
    Connected,
    Message,
    Receipt,
    Error,
}

impl Command {
    /// Every command, client frames first.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// Length of the longest command name (`UNSUBSCRIBE`), which bounds how
    /// much a decoder must buffer before rejecting an unknown command line.
    pub const MAX_LEN: usize = 11;

    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses a command line (without its EOL). Exact, case-sensitive match.
    pub fn parse(line: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == line)
    }

    /// Whether header names and values of this frame use backslash escaping
    /// (in versions that have it at all).
    ///
    /// The 1.2 spec ("Value Encoding") exempts CONNECT and CONNECTED frames
    /// "for backward compatibility with STOMP 1.0"; STOMP is a synonym for
    /// CONNECT and is treated the same way.
    pub fn uses_header_escaping(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP protocol version. Ordered, so the newest common version is `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Version {
    /// STOMP 1.0: the version spoken before (and without) negotiation.
    #[default]
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    /// Every version this server supports, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `accept-version` / `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses one version token such as `"1.2"`.
    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Chooses the protocol version from a CONNECT/STOMP frame's
    /// `accept-version` header.
    ///
    /// Per the 1.2 spec ("Protocol Negotiation"): a missing header means the
    /// client only speaks 1.0; otherwise the server answers with the highest
    /// version both sides support, or `None` (the server must then send an
    /// ERROR frame and close). Tokens are comma-separated; surrounding spaces
    /// are tolerated and unknown tokens (e.g. `2.1`) are ignored.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
        match accept_version {
            None => Some(Version::V1_0),
            Some(list) => list
                .split(',')
                .filter_map(|token| Version::parse(token.trim()))
                .max(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded (or to-be-encoded) STOMP frame.
///
/// Headers are kept in wire order and may repeat: the 1.2 spec says only the
/// first occurrence of a repeated header is significant, but later ones must
/// still be preserved (e.g. when relaying), so they are not deduplicated.
/// Names and values here are always *unescaped*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Appends a header (after any existing ones, so it does not override an
    /// earlier header of the same name).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// The value of header `name`, honouring the 1.2 rule that the first
    /// occurrence of a repeated header wins. Names are case-sensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).next()
    }

    /// Every value of header `name`, in wire order.
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips_through_its_wire_name() {
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str().as_bytes()), Some(c));
            assert!(c.as_str().len() <= Command::MAX_LEN);
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(Command::MAX_LEN, "UNSUBSCRIBE".len());
    }

    #[test]
    fn command_parse_is_exact_and_case_sensitive() {
        for bad in [
            &b"send"[..],
            b"SEND ",
            b" SEND",
            b"SEND\r",
            b"",
            b"SENDX",
            b"\xffSEND",
        ] {
            assert_eq!(Command::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_connect_stomp_connected_skip_escaping() {
        let exempt: Vec<_> = Command::ALL
            .into_iter()
            .filter(|c| !c.uses_header_escaping())
            .collect();
        assert_eq!(
            exempt,
            [Command::Connect, Command::Stomp, Command::Connected]
        );
    }

    #[test]
    fn version_strings_and_order() {
        assert!(Version::V1_0 < Version::V1_1 && Version::V1_1 < Version::V1_2);
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::default(), Version::V1_0);
        assert_eq!(Version::V1_2.to_string(), "1.2");
    }

    #[test]
    fn negotiate_follows_the_spec() {
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("1.0")), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("1.1")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.0,1.1,1.2")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.2,1.0")), Some(Version::V1_2));
        // Example from the spec: the client also offers an unknown 2.1.
        assert_eq!(Version::negotiate(Some("1.0,1.1,2.1")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some(" 1.1 , 1.2 ")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("2.0")), None);
        assert_eq!(Version::negotiate(Some("")), None);
        assert_eq!(Version::negotiate(Some("1.3,1.")), None);
    }

    #[test]
    fn builder_and_first_header_wins() {
        let f = Frame::new(Command::Send)
            .with_header("destination", "/a")
            .with_header("x", "1")
            .with_header("x", "2")
            .with_body(Bytes::from_static(b"hi"));
        assert_eq!(f.command, Command::Send);
        assert_eq!(f.header("x"), Some("1"));
        assert_eq!(f.header("X"), None);
        assert_eq!(f.header("destination"), Some("/a"));
        assert_eq!(f.headers_named("x").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(f.body, Bytes::from_static(b"hi"));
        assert_eq!(Frame::new(Command::Ack).headers.len(), 0);
    }
}
