//! Server-side STOMP 1.0/1.1/1.2 wire codec.
//!
//! Wire format (1.2 spec, "Augmented BNF"):
//!
//! ```text
//! frame  = command EOL *( header EOL ) EOL *OCTET NULL *( EOL )
//! header = header-name ":" header-value
//! EOL    = [CR] LF
//! ```
//!
//! The decoder is incremental and remembers how far it has scanned, so a
//! large frame arriving in many small reads costs linear, not quadratic, work.
//! It enforces [`Limits`] as early as they can be known so a peer cannot make
//! the server buffer without bound. Every decode error is fatal for the
//! connection (the spec says the server should send an ERROR frame and
//! close); error messages are single-line so they can be used verbatim as the
//! ERROR frame's `message` header.
//!
//! Interpretations of the spec made here:
//! * CRLF is accepted as EOL in every version (1.2 made it official; 1.0/1.1
//!   peers in the wild send it too). Hence a trailing CR is never part of a
//!   header value.
//! * EOLs between frames (including the optional ones after a NUL) are
//!   reported as [`Incoming::HeartBeat`], one per EOL.
//! * Only the first `:` of a header line separates name and value; further
//!   colons belong to the value (1.0 behaviour, and lenient for 1.1+ peers that
//!   forget to escape them). Whitespace is never trimmed. Header names must be
//!   non-empty (`header-name = 1*<any OCTET except CR or LF or ":">`).
//! * A raw CR inside a header line (not before the LF) is kept as an octet.
//! * `content-length` must be plain ASCII digits; the first occurrence wins.
//! * A command line longer than any command is rejected before its EOL.
//! * The encoder refuses (with [`CodecError::Unencodable`]) frames that would
//!   be read back differently, instead of silently altering them: e.g. a
//!   header value containing LF cannot be sent unescaped (1.0, CONNECTED), and
//!   a value ending in CR cannot be sent in 1.1 (no `\r` escape; the CR would
//!   be read as part of a CRLF). This matters when relaying headers received
//!   in 1.2 to a 1.0/1.1 subscriber: it prevents header injection.

use std::borrow::Cow;
use std::ops::Range;
use std::str;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{Command, Frame, Version};

/// Resource limits for decoding untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted frame, in octets, counting the command line, header
    /// lines, the blank line and the body (not the final NUL nor trailing
    /// EOLs). Default: 4 MiB.
    pub max_frame_size: usize,
    /// Most header lines accepted in one frame (repeats count). Default: 64.
    pub max_headers: usize,
    /// Longest accepted header line in octets, as on the wire (escaped,
    /// `name:value`, excluding its EOL). Default: 8 KiB.
    pub max_header_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 4 * 1024 * 1024,
            max_headers: 64,
            max_header_len: 8 * 1024,
        }
    }
}

/// Errors from decoding or encoding. The `Display` text never contains CR or
/// LF, so it is safe as an ERROR frame `message` header in any version.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("malformed header line: expected name:value with a non-empty name")]
    MalformedHeader,
    #[error("invalid escape sequence {0:?} in header")]
    InvalidEscape(String),
    #[error("command or header is not valid UTF-8")]
    InvalidUtf8,
    #[error("invalid content-length header")]
    InvalidContentLength,
    #[error("frame body is not terminated by a NUL octet after content-length octets")]
    MissingNul,
    #[error("frame exceeds the maximum size of {limit} octets")]
    FrameTooLarge { limit: usize },
    #[error("frame has more than {limit} headers")]
    TooManyHeaders { limit: usize },
    #[error("header line exceeds {limit} octets")]
    HeaderTooLong { limit: usize },
    /// The frame cannot be written in the negotiated version without changing
    /// its meaning (e.g. a header value with LF in STOMP 1.0).
    #[error("frame cannot be encoded for STOMP {version}: {reason}")]
    Unencodable {
        version: Version,
        reason: &'static str,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Frame(Frame),
    /// A bare EOL (LF or CRLF) between frames (1.1+ "Heart-beating"). In
    /// 1.0 these are just the optional EOLs after a frame's NUL; callers may
    /// ignore them, but they do prove the peer is alive.
    HeartBeat,
}

/// What the encoder accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Frame(Frame),
    /// A frame already in wire format for the connection's version (written by a
    /// [`FrameWriter`]), sent as it is.
    Encoded(Bytes),
    /// Encoded as a single LF.
    HeartBeat,
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Self {
        Outgoing::Frame(frame)
    }
}

/// STOMP codec for one connection.
///
/// Starts in [`Version::V1_0`]; after answering CONNECT, call
/// [`set_version`](Self::set_version) with the negotiated version before the
/// next frame is decoded (with `Framed`, via `decoder_mut()`/`codec_mut()`).
/// The decoder keeps offsets into the buffer it is given, so it must always be
/// fed the same, append-only buffer (as `FramedRead` does).
#[derive(Debug, Default)]
pub struct StompCodec {
    limits: Limits,
    version: Version,
    parser: Parser,
}

impl StompCodec {
    pub fn new(limits: Limits) -> Self {
        StompCodec {
            limits,
            ..StompCodec::default()
        }
    }

    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl Decoder for StompCodec {
    type Item = Incoming;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        match self.parser.step(src, self.version, &self.limits)? {
            None => {
                // When content-length says how much is coming, make room once
                // instead of growing in small steps (bounded by the limits).
                if let Some(wanted) = self.parser.wanted() {
                    src.reserve(wanted.saturating_sub(src.len()));
                }
                Ok(None)
            }
            Some(parsed) => {
                // The body is split off without a copy; what is around it is dropped.
                let mut body_end = 0;
                let (incoming, len) = parsed.into_incoming(|body| {
                    src.advance(body.start);
                    body_end = body.end;
                    src.split_to(body.len()).freeze()
                });
                src.advance(len - body_end);
                Ok(Some(incoming))
            }
        }
    }
}

impl Encoder<Outgoing> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Outgoing::Frame(frame) => encode_frame(&frame, self.version, dst),
            Outgoing::Encoded(bytes) => {
                dst.extend_from_slice(&bytes);
                Ok(())
            }
            Outgoing::HeartBeat => {
                dst.put_u8(b'\n');
                Ok(())
            }
        }
    }
}

impl Encoder<Frame> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_frame(&frame, self.version, dst)
    }
}

/// Decodes the first item of a complete buffer (e.g. one WebSocket message),
/// returning it with the number of octets it used; `Ok(None)` if `buf` holds
/// only part of a frame. The body is copied out of `buf`.
pub fn decode_one(
    buf: &[u8],
    version: Version,
    limits: &Limits,
) -> Result<Option<(Incoming, usize)>, CodecError> {
    Ok(Parser::default()
        .step(buf, version, limits)?
        .map(|parsed| parsed.into_incoming(|body| Bytes::copy_from_slice(&buf[body]))))
}

/// Appends `frame` to `dst` in the wire format of `version`.
///
/// Headers are escaped as the version requires (never for CONNECT, STOMP and
/// CONNECTED). A `content-length` header is appended when the body is
/// non-empty and the frame has none, so bodies may contain NUL octets. Fails,
/// leaving `dst` untouched, if the frame cannot be represented faithfully:
/// an empty header name, a first `content-length` that disagrees with the
/// body, or (unescaped frames) a name containing LF or `:` / a value
/// containing LF, or (unescaped and 1.1) a value ending in CR, which the
/// decoder would take for part of a CRLF.
pub fn encode_frame(frame: &Frame, version: Version, dst: &mut BytesMut) -> Result<(), CodecError> {
    // Exactly what the frame takes (a connection's write buffer grows no further than it
    // must); headers that need no escape (almost all) are measured without a per-octet
    // loop.
    let esc = Escaping::of(version, frame.command);
    let mut size = frame.command.as_str().len() + 1;
    for (name, value) in &frame.headers {
        size += escaped_len(name, esc) + 1 + escaped_len(value, esc) + 1;
    }
    if frame.header("content-length").is_none() && !frame.body.is_empty() {
        size += "content-length:".len() + itoa::Buffer::new().format(frame.body.len()).len() + 1;
    }
    size += 1 + frame.body.len() + 1;
    dst.reserve(size);
    let mut w = FrameWriter::begin(frame.command, version, dst);
    for (name, value) in &frame.headers {
        w.header(name, value)?;
    }
    w.finish(&frame.body)
}

/// Writes one frame straight into an output buffer, header by header, with the checks,
/// escaping and `content-length` rule of [`encode_frame`] (which is built on it). For
/// frames made of data the caller already holds, such as a delivery: no [`Frame`] with
/// an owned copy of every header is built per frame. An error leaves the buffer as it
/// was before [`FrameWriter::begin`].
pub struct FrameWriter<'a> {
    dst: &'a mut BytesMut,
    start: usize,
    version: Version,
    esc: Escaping,
    /// The first `content-length` header written, parsed (`Some(None)`: not a
    /// number); checked against the body at [`FrameWriter::finish`].
    declared_length: Option<Option<usize>>,
}

impl<'a> FrameWriter<'a> {
    /// Starts a `command` frame for a connection speaking `version`.
    pub fn begin(command: Command, version: Version, dst: &'a mut BytesMut) -> Self {
        let start = dst.len();
        dst.put_slice(command.as_str().as_bytes());
        dst.put_u8(b'\n');
        Self {
            dst,
            start,
            version,
            esc: Escaping::of(version, command),
            declared_length: None,
        }
    }

    fn fail(&mut self, reason: &'static str) -> CodecError {
        self.dst.truncate(self.start);
        CodecError::Unencodable {
            version: self.version,
            reason,
        }
    }

    /// Appends one header, escaped as the version requires. After an error the frame
    /// is abandoned: write no more to it.
    pub fn header(&mut self, name: &str, value: &str) -> Result<(), CodecError> {
        self.prefixed_header("", name, value)
    }

    /// Appends a header named `prefix` + `name` (a reserved name sent as `x-sb-NAME`)
    /// without building the name.
    pub fn prefixed_header(
        &mut self,
        prefix: &str,
        name: &str,
        value: &str,
    ) -> Result<(), CodecError> {
        if let Err(reason) = check_header(prefix, name, value, self.esc) {
            return Err(self.fail(reason));
        }
        if prefix.is_empty() && name == "content-length" && self.declared_length.is_none() {
            self.declared_length = Some(parse_content_length(value).ok());
        }
        put_escaped(self.dst, prefix, self.esc);
        put_escaped(self.dst, name, self.esc);
        self.dst.put_u8(b':');
        put_escaped(self.dst, value, self.esc);
        self.dst.put_u8(b'\n');
        Ok(())
    }

    /// Ends the headers (adding `content-length` when the body is not empty and no
    /// header declared it, so bodies may hold NUL octets) and appends the body.
    pub fn finish(mut self, body: &[u8]) -> Result<(), CodecError> {
        match self.declared_length {
            Some(declared) if declared != Some(body.len()) => {
                return Err(self.fail("content-length does not match the body"));
            }
            Some(_) => {}
            None if body.is_empty() => {}
            None => {
                self.dst.put_slice(b"content-length:");
                self.dst
                    .put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
                self.dst.put_u8(b'\n');
            }
        }
        self.dst.put_u8(b'\n');
        self.dst.put_slice(body);
        self.dst.put_u8(0);
        Ok(())
    }
}

/// Header value encoding in effect for one frame (1.2 spec, "Value Encoding";
/// 1.1 has the same rule without `\r`; 1.0 has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escaping {
    None,
    V1_1,
    V1_2,
}

impl Escaping {
    fn of(version: Version, command: Command) -> Escaping {
        match version {
            _ if !command.uses_header_escaping() => Escaping::None,
            Version::V1_0 => Escaping::None,
            Version::V1_1 => Escaping::V1_1,
            Version::V1_2 => Escaping::V1_2,
        }
    }

    /// Whether `s` holds an octet this encoding escapes: one vectorised scan (two for
    /// 1.2's CR), since almost no header does and a per-octet loop over every header of
    /// every delivery was a quarter of the router's CPU on a STOMP fan-out.
    fn needed(self, s: &[u8]) -> bool {
        match self {
            Escaping::None => false,
            Escaping::V1_1 => memchr::memchr3(b'\\', b'\n', b':', s).is_some(),
            Escaping::V1_2 => {
                memchr::memchr3(b'\\', b'\n', b':', s).is_some()
                    || memchr::memchr(b'\r', s).is_some()
            }
        }
    }

    /// The escape sequence for octet `b`, if it needs one.
    fn sequence(self, b: u8) -> Option<&'static [u8]> {
        match (self, b) {
            (Escaping::None, _) => None,
            (_, b'\\') => Some(b"\\\\"),
            (_, b'\n') => Some(b"\\n"),
            (_, b':') => Some(b"\\c"),
            (Escaping::V1_2, b'\r') => Some(b"\\r"),
            _ => None,
        }
    }
}

fn check_header(prefix: &str, name: &str, value: &str, esc: Escaping) -> Result<(), &'static str> {
    if prefix.is_empty() && name.is_empty() {
        return Err("empty header name");
    }
    if esc == Escaping::None && (prefix.contains(['\n', ':']) || name.contains(['\n', ':'])) {
        return Err("header name contains LF or ':'");
    }
    if esc == Escaping::None && value.contains('\n') {
        return Err("header value contains LF");
    }
    if esc != Escaping::V1_2 && value.ends_with('\r') {
        return Err("header value ends with CR");
    }
    Ok(())
}

fn escaped_len(s: &str, esc: Escaping) -> usize {
    if !esc.needed(s.as_bytes()) {
        return s.len();
    }
    s.len()
        + s.bytes()
            .filter_map(|b| esc.sequence(b))
            .map(|seq| seq.len() - 1)
            .sum::<usize>()
}

fn put_escaped(dst: &mut BytesMut, s: &str, esc: Escaping) {
    let bytes = s.as_bytes();
    if !esc.needed(bytes) {
        dst.put_slice(bytes);
        return;
    }
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(seq) = esc.sequence(b) {
            dst.put_slice(&bytes[plain_from..i]);
            dst.put_slice(seq);
            plain_from = i + 1;
        }
    }
    dst.put_slice(&bytes[plain_from..]);
}

/// Undoes [`put_escaped`]. Any other backslash sequence is fatal: "Undefined
/// escape sequences such as \t MUST be treated as a fatal protocol error."
fn unescape(s: &str, esc: Escaping) -> Result<Cow<'_, str>, CodecError> {
    if esc == Escaping::None || !s.contains('\\') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('\\') => '\\',
            Some('n') => '\n',
            Some('c') => ':',
            Some('r') if esc == Escaping::V1_2 => '\r',
            Some(other) => return Err(CodecError::InvalidEscape(format!("\\{other}"))),
            None => return Err(CodecError::InvalidEscape("\\".to_owned())),
        });
    }
    Ok(Cow::Owned(out))
}

/// `content-length` is a decimal octet count; anything but ASCII digits
/// (signs, spaces, empty) or a value overflowing `usize` is rejected.
fn parse_content_length(value: &str) -> Result<usize, CodecError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodecError::InvalidContentLength);
    }
    value.parse().map_err(|_| CodecError::InvalidContentLength)
}

/// Strips the optional CR of a CRLF line ending.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn find(byte: u8, buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .iter()
        .position(|&b| b == byte)
        .map(|i| from + i)
}

/// A complete item found at the start of a buffer; ranges and lengths are
/// offsets into that buffer.
#[derive(Debug)]
enum Parsed {
    HeartBeat {
        len: usize,
    },
    Frame {
        command: Command,
        headers: Vec<(String, String)>,
        body: Range<usize>,
        /// Octets used, including the NUL.
        len: usize,
    },
}

impl Parsed {
    /// The item, its body taken by `body_of` from the buffer's range, and the octets it
    /// used.
    fn into_incoming(self, body_of: impl FnOnce(Range<usize>) -> Bytes) -> (Incoming, usize) {
        match self {
            Parsed::HeartBeat { len } => (Incoming::HeartBeat, len),
            Parsed::Frame {
                command,
                headers,
                body,
                len,
            } => {
                let frame = Frame {
                    command,
                    headers,
                    body: body_of(body),
                };
                (Incoming::Frame(frame), len)
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
enum Phase {
    #[default]
    Command,
    Headers(Command),
    Body {
        command: Command,
        start: usize,
    },
}

/// Resumable frame parser. Offsets are relative to the start of the buffer,
/// which holds the current frame from its first octet; nothing is consumed
/// from the buffer until a whole item is found.
#[derive(Debug, Default)]
struct Parser {
    phase: Phase,
    /// Start of the first line not parsed yet (or of the body).
    pos: usize,
    /// How far the current line or NUL-terminated body has been searched.
    scan: usize,
    headers: Vec<(String, String)>,
    content_length: Option<usize>,
}

/// Longest possible command line: command, CR, LF.
const MAX_COMMAND_LINE: usize = Command::MAX_LEN + 2;

impl Parser {
    fn step(
        &mut self,
        buf: &[u8],
        version: Version,
        limits: &Limits,
    ) -> Result<Option<Parsed>, CodecError> {
        let result = self.parse(buf, version, limits);
        if !matches!(result, Ok(None)) {
            // Finished an item, or failed (fatally): start afresh either way.
            *self = Parser::default();
        }
        result
    }

    /// Total buffer length needed to finish the current frame, if known.
    fn wanted(&self) -> Option<usize> {
        match self.phase {
            Phase::Body { start, .. } => Some(start + self.content_length? + 1),
            _ => None,
        }
    }

    fn parse(
        &mut self,
        buf: &[u8],
        version: Version,
        limits: &Limits,
    ) -> Result<Option<Parsed>, CodecError> {
        if buf.len() < self.scan {
            // Not the buffer we were fed before (misuse): start over rather
            // than index out of bounds.
            *self = Parser::default();
        }
        loop {
            match self.phase {
                Phase::Command => {
                    match buf {
                        [] | [b'\r'] => return Ok(None),
                        [b'\n', ..] => return Ok(Some(Parsed::HeartBeat { len: 1 })),
                        [b'\r', b'\n', ..] => return Ok(Some(Parsed::HeartBeat { len: 2 })),
                        _ => {}
                    }
                    // No command is longer than MAX_LEN, so an unknown one is
                    // rejected after a few octets instead of buffering forever.
                    let window = &buf[..buf.len().min(MAX_COMMAND_LINE)];
                    let Some(eol) = find(b'\n', window, 0) else {
                        if window.len() == MAX_COMMAND_LINE {
                            return Err(unknown_command(window));
                        }
                        return Ok(None);
                    };
                    let line = strip_cr(&window[..eol]);
                    let command = Command::parse(line).ok_or_else(|| unknown_command(line))?;
                    self.pos = eol + 1;
                    self.scan = self.pos;
                    self.phase = Phase::Headers(command);
                    check_frame_size(self.pos, limits)?;
                }
                Phase::Headers(command) => {
                    let Some(eol) = find(b'\n', buf, self.scan) else {
                        let partial = strip_cr(&buf[self.pos..]);
                        check_header_len(partial, limits)?;
                        check_frame_size(buf.len(), limits)?;
                        self.scan = buf.len();
                        return Ok(None);
                    };
                    let line = strip_cr(&buf[self.pos..eol]);
                    check_header_len(line, limits)?;
                    self.pos = eol + 1;
                    self.scan = self.pos;
                    check_frame_size(self.pos, limits)?;
                    if line.is_empty() {
                        self.phase = Phase::Body {
                            command,
                            start: self.pos,
                        };
                    } else {
                        self.parse_header(command, line, version, limits)?;
                    }
                    if let Some(len) = self.content_length {
                        // The blank line and body are still to come, but the
                        // frame is already known to be too large.
                        check_frame_size(self.pos.saturating_add(len), limits)?;
                    }
                }
                Phase::Body { command, start } => {
                    let end = match self.content_length {
                        // Cannot overflow: start + len <= max_frame_size.
                        Some(len) => match buf.get(start + len) {
                            None => return Ok(None),
                            Some(0) => start + len,
                            Some(_) => return Err(CodecError::MissingNul),
                        },
                        None => match find(0, buf, self.scan.max(start)) {
                            Some(end) => {
                                check_frame_size(end, limits)?;
                                end
                            }
                            None => {
                                check_frame_size(buf.len(), limits)?;
                                self.scan = buf.len();
                                return Ok(None);
                            }
                        },
                    };
                    return Ok(Some(Parsed::Frame {
                        command,
                        headers: std::mem::take(&mut self.headers),
                        body: start..end,
                        len: end + 1,
                    }));
                }
            }
        }
    }

    fn parse_header(
        &mut self,
        command: Command,
        line: &[u8],
        version: Version,
        limits: &Limits,
    ) -> Result<(), CodecError> {
        if self.headers.len() >= limits.max_headers {
            return Err(CodecError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        let colon = match line.iter().position(|&b| b == b':') {
            Some(0) | None => return Err(CodecError::MalformedHeader),
            Some(colon) => colon,
        };
        let utf8 = |raw| str::from_utf8(raw).map_err(|_| CodecError::InvalidUtf8);
        let (name, value) = (utf8(&line[..colon])?, utf8(&line[colon + 1..])?);
        let esc = Escaping::of(version, command);
        let name = unescape(name, esc)?.into_owned();
        let value = unescape(value, esc)?.into_owned();
        // Repeated headers: only the first occurrence counts (1.2 spec).
        if name == "content-length" && self.content_length.is_none() {
            self.content_length = Some(parse_content_length(&value)?);
        }
        self.headers.push((name, value));
        Ok(())
    }
}

fn unknown_command(line: &[u8]) -> CodecError {
    CodecError::UnknownCommand(String::from_utf8_lossy(line).into_owned())
}

fn check_frame_size(size: usize, limits: &Limits) -> Result<(), CodecError> {
    if size > limits.max_frame_size {
        return Err(CodecError::FrameTooLarge {
            limit: limits.max_frame_size,
        });
    }
    Ok(())
}

fn check_header_len(line: &[u8], limits: &Limits) -> Result<(), CodecError> {
    if line.len() > limits.max_header_len {
        return Err(CodecError::HeaderTooLong {
            limit: limits.max_header_len,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
