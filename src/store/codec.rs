//! The stored form of a canonical message: a small, versioned, length-prefixed binary
//! layout (no schema crate needed, and decoding never trusts a length it has not checked).
//!
//! Layout, version 1 (integers little-endian, `str` = u32 length + UTF-8):
//! `1u8`, id `str` (its text: generated ids are rendered, since their counter is
//! per process), body (u32 length + bytes), content type (`0u8` | `1u8 str`), header count
//! u32 and (`str`, `str`) pairs, correlation id (opt `str`), reply-to (`0u8` |
//! `1u8 str` queue | `2u8 str` topic), timestamp ms u64, expiry (`0u8` | `1u8 u64` ms),
//! priority u8, persistent u8, qos u8, origin protocol `str`, origin peer `str`, and
//! the loss policy u8 (1 encode, 2 reject) only when it is not `drop`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::core::{Destination, Headers, Loss, Message, MessageId, Origin};

const VERSION: u8 = 1;

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored message is corrupt: {0}")]
pub struct Corrupt(pub &'static str);

pub fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + m.body.len() + m.headers.byte_size());
    out.push(VERSION);
    put_str(&mut out, &m.id.to_string());
    out.extend_from_slice(&(m.body.len() as u32).to_le_bytes());
    out.extend_from_slice(&m.body);
    put_opt_str(&mut out, m.content_type.as_deref());
    out.extend_from_slice(&(m.headers.len() as u32).to_le_bytes());
    for (k, v) in m.headers.iter() {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    put_opt_str(&mut out, m.correlation_id.as_deref());
    match &m.reply_to {
        None => out.push(0),
        Some(Destination::Queue(q)) => {
            out.push(1);
            put_str(&mut out, q);
        }
        Some(Destination::Topic(t)) => {
            out.push(2);
            put_str(&mut out, t);
        }
    }
    out.extend_from_slice(&millis(m.timestamp).to_le_bytes());
    match m.expiry {
        None => out.push(0),
        Some(e) => {
            out.push(1);
            out.extend_from_slice(&millis(e).to_le_bytes());
        }
    }
    out.push(m.priority);
    out.push(u8::from(m.persistent));
    out.push(m.qos);
    put_str(&mut out, &m.origin.protocol);
    put_str(&mut out, &m.origin.peer);
    // Added after version 1 shipped its first journals: absent = `drop`.
    if m.loss != Loss::Drop {
        out.push(m.loss as u8);
    }
    out
}

/// A queued message as stored: the destination its consumer sees (for a topic
/// subscription, the concrete topic it was published to), then the message.
pub fn encode_queued(destination: &Destination, m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + m.body.len() + m.headers.byte_size());
    put_destination(&mut out, destination);
    out.extend_from_slice(&encode(m));
    out
}

/// Reads what [`encode_queued`] wrote.
pub fn decode_queued(b: &[u8]) -> Result<(Destination, Message), Corrupt> {
    let mut r = Reader::new(b);
    let kind = r.u8()?;
    let name = r.str()?;
    let d = match kind {
        1 => Destination::queue(name),
        2 => Destination::topic(name),
        _ => return Err(Corrupt("bad destination kind")),
    };
    Ok((d, decode(r.rest())?))
}

fn put_destination(out: &mut Vec<u8>, d: &Destination) {
    match d {
        Destination::Queue(q) => {
            out.push(1);
            put_str(out, q);
        }
        Destination::Topic(t) => {
            out.push(2);
            put_str(out, t);
        }
    }
}

pub fn decode(b: &[u8]) -> Result<Message, Corrupt> {
    let mut r = Reader { b, at: 0 };
    if r.u8()? != VERSION {
        return Err(Corrupt("unknown version"));
    }
    let id = r.str()?;
    let body_len = r.u32()? as usize;
    let body = Bytes::copy_from_slice(r.take(body_len)?);
    let mut m = Message::new(body);
    m.id = MessageId::given(id);
    m.content_type = r.opt_str()?.map(str::to_owned);
    let n = r.u32()?;
    let mut headers = Headers::new();
    for _ in 0..n {
        let k = r.str()?;
        let v = r.str()?;
        headers.append(k, v);
    }
    m.headers = headers;
    m.correlation_id = r.opt_str()?.map(str::to_owned);
    m.reply_to = match r.u8()? {
        0 => None,
        1 => Some(Destination::queue(r.str()?)),
        2 => Some(Destination::topic(r.str()?)),
        _ => return Err(Corrupt("bad reply-to tag")),
    };
    m.timestamp = UNIX_EPOCH + Duration::from_millis(r.u64()?);
    m.expiry = match r.u8()? {
        0 => None,
        1 => Some(UNIX_EPOCH + Duration::from_millis(r.u64()?)),
        _ => return Err(Corrupt("bad expiry tag")),
    };
    m.priority = r.u8()?;
    m.persistent = r.u8()? != 0;
    m.qos = r.u8()?;
    let protocol = r.str()?;
    let peer = r.str()?;
    m.origin = Origin::new(protocol, peer);
    if r.at < b.len() {
        m.loss = match r.u8()? {
            1 => Loss::Encode,
            2 => Loss::Reject,
            _ => return Err(Corrupt("bad loss policy")),
        };
    }
    if r.at != b.len() {
        return Err(Corrupt("trailing bytes"));
    }
    Ok(m)
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// A bounds-checked cursor over stored bytes.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b, at: 0 }
    }
    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let r = &self.b[self.at..];
        self.at = self.b.len();
        r
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.at.checked_add(n).ok_or(Corrupt("length overflow"))?;
        let s = self.b.get(self.at..end).ok_or(Corrupt("truncated"))?;
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| Corrupt("u32"))?,
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| Corrupt("u64"))?,
        ))
    }
    pub(crate) fn str(&mut self) -> Result<&'a str, Corrupt> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| Corrupt("invalid UTF-8"))
    }
    fn opt_str(&mut self) -> Result<Option<&'a str>, Corrupt> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(Corrupt("bad option tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full() -> Message {
        let mut m = Message::new(vec![0u8, 1, 255])
            .with_header("a", "1")
            .with_header("a", "2")
            .with_content_type("application/octet-stream");
        m.correlation_id = Some("c".into());
        m.reply_to = Some(Destination::topic("replies.x"));
        m.timestamp = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        m.expiry = Some(UNIX_EPOCH + Duration::from_millis(1_800_000_000_000));
        m.priority = 7;
        m.persistent = true;
        m.qos = 2;
        m.origin = Origin::new("mqtt", "client-1");
        m
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let m = full();
        let back = decode(&encode(&m)).unwrap();
        assert_eq!(back.id.to_string(), m.id.to_string());
        let mut expect = m.clone();
        expect.id = MessageId::given(&m.id.to_string());
        assert_eq!(back, expect);
        for loss in [Loss::Encode, Loss::Reject] {
            let mut m = full();
            m.loss = loss;
            assert_eq!(decode(&encode(&m)).unwrap().loss, loss);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = encode(&full());
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&b);
        }
    }
}
