//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) across protocols.
//!
//! Every edge already carries application headers both ways (STOMP headers, MQTT 5 user
//! properties, AMQP headers, XMPP SHIM headers), so a `traceparent` crosses them as an
//! ordinary header. What the router adds, in [`reparent`], called once per published
//! message before it is routed:
//!
//! - it validates the `traceparent` (`version-traceid-parentid-flags`, 55 characters for
//!   version `00`); one that does not parse is ignored as the specification asks:
//!   removed, with its `tracestate`, so no copy claims a trace the router did not join;
//! - it re-parents a valid one: every outgoing copy carries the same trace id with the
//!   router's span id for this message as the parent id, version `00`, flags unchanged
//!   (a higher version keeps only the sampled bit, as the specification says);
//! - `tracestate` is carried unchanged (the router adds no entry of its own).
//!
//! A hand-written parser rather than the OpenTelemetry SDK: the format is fixed and
//! small, and the SDK's propagator would bring its crates into every build for 55
//! characters (docs/operations.md, "Tracing").
//!
//! A message without a `traceparent` costs one pass over its header names, and nothing
//! else unless the router is told to start traces.

use std::cell::Cell;
use std::fmt;

use crate::core::Headers;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A parsed `traceparent`: who the message's parent span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// A trace id as 32 lower-case hex digits (its `Display`), for log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// A span id as 16 lower-case hex digits (its `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

/// What [`reparent`] did with a message's trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traced {
    /// The message carried a valid `traceparent`, now re-parented: the router's span
    /// `span` in trace `trace`, child of `parent`.
    Continued {
        trace: TraceId,
        span: SpanId,
        parent: SpanId,
    },
    /// The message carried none (or an invalid one) and the router started a trace.
    Started { trace: TraceId, span: SpanId },
    /// An invalid `traceparent` (or several) was removed, with any `tracestate`.
    Dropped,
}

impl Traced {
    pub fn trace_id(&self) -> Option<TraceId> {
        match self {
            Traced::Continued { trace, .. } | Traced::Started { trace, .. } => Some(*trace),
            Traced::Dropped => None,
        }
    }

    pub fn span_id(&self) -> Option<SpanId> {
        match self {
            Traced::Continued { span, .. } | Traced::Started { span, .. } => Some(*span),
            Traced::Dropped => None,
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex only: the specification forbids upper case in version 00.
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

fn fmt_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut s = String::with_capacity(2 * bytes.len());
    push_hex(&mut s, bytes);
    f.write_str(&s)
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_hex(f, &self.0)
    }
}

impl TraceParent {
    /// Parses a `traceparent` value by the specification's rules: version `00` is exactly
    /// 55 characters; a higher version (not `ff`) is read for its first four fields when
    /// what follows them is nothing or a `-`. All-zero trace or parent ids are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let s = value.as_bytes();
        if s.len() < 55 || s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return None;
        }
        let [version] = unhex::<1>(&s[..2])?;
        if version == 0xff || (version == 0 && s.len() != 55) {
            return None;
        }
        if s.len() > 55 && s[55] != b'-' {
            return None;
        }
        let trace_id = unhex::<16>(&s[3..35])?;
        let parent_id = unhex::<8>(&s[36..52])?;
        let [mut flags] = unhex::<1>(&s[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        if version != 0 {
            // Of a later version's flags only the sampled bit is known.
            flags &= 1;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The version-00 header value, 55 characters.
    pub fn format(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.parent_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        s
    }
}

thread_local! {
    /// Per-thread generator state (splitmix64), seeded once from the OS generator: span
    /// ids need to be unique, not secret, and this costs a few arithmetic operations.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        // No OS generator: the clock and the thread's stack address still differ.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let here = 0u8;
        t ^ (&here as *const u8 as u64).rotate_left(32)
    })
}

fn next_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A new, non-zero span id.
pub fn new_span_id() -> SpanId {
    loop {
        let v = next_u64();
        if v != 0 {
            return SpanId(v.to_be_bytes());
        }
    }
}

fn new_trace_id() -> TraceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_u64().to_be_bytes());
    id[8..].copy_from_slice(&new_span_id().0);
    TraceId(id)
}

fn is_traceparent(name: &str) -> bool {
    name.len() == TRACEPARENT.len() && name.eq_ignore_ascii_case(TRACEPARENT)
}

/// Validates and re-parents a message's `traceparent` (module docs). With `start`, a
/// message without a valid one starts a trace (sampled flag set: the router's log is its
/// record) and loses any `tracestate`. `None`: the message had no `traceparent` and
/// `start` is off; its headers are untouched.
pub fn reparent(headers: &mut Headers, start: bool) -> Option<Traced> {
    let parsed = {
        let mut found = headers.iter().filter(|(k, _)| is_traceparent(k));
        match found.next() {
            None if !start => return None,
            None => None,
            // Several `traceparent`s: which one is meant cannot be known (HTTP calls it
            // invalid).
            Some((_, v)) if found.next().is_none() => TraceParent::parse(v),
            Some(_) => None,
        }
    };
    let span = new_span_id();
    let traced = match parsed {
        Some(p) => {
            let out = TraceParent {
                parent_id: span.0,
                ..p
            };
            set_traceparent(headers, &out);
            Traced::Continued {
                trace: TraceId(p.trace_id),
                span,
                parent: SpanId(p.parent_id),
            }
        }
        None => {
            headers.retain(|k, _| !is_traceparent(k) && !k.eq_ignore_ascii_case(TRACESTATE));
            if !start {
                return Some(Traced::Dropped);
            }
            let trace = new_trace_id();
            let out = TraceParent {
                trace_id: trace.0,
                parent_id: span.0,
                flags: 1,
            };
            headers.append(TRACEPARENT, out.format());
            Traced::Started { trace, span }
        }
    };
    Some(traced)
}

/// Replaces the one `traceparent` (whatever its case) in place, named in lower case. A
/// version-00 value differs from `out` only in its parent id: those 16 characters are
/// overwritten where they are, without a new allocation.
fn set_traceparent(headers: &mut Headers, out: &TraceParent) {
    headers.for_each_mut(|k, v| {
        if !is_traceparent(k) {
            return;
        }
        if k != TRACEPARENT {
            *k = TRACEPARENT.to_owned();
        }
        if v.len() == 55 && v.starts_with("00-") {
            let mut hex = [0u8; 16];
            for (i, b) in out.parent_id.iter().enumerate() {
                hex[2 * i] = HEX[usize::from(b >> 4)];
                hex[2 * i + 1] = HEX[usize::from(b & 15)];
            }
            // Hex digits are ASCII: the conversion cannot fail.
            if let Ok(hex) = std::str::from_utf8(&hex) {
                v.replace_range(36..52, hex);
            }
        } else {
            *v = out.format();
        }
    });
}

/// The trace id of a message's `traceparent`, when it has a valid one (for the log lines
/// of an edge that handles the message after the router re-parented it).
pub fn trace_id(headers: &Headers) -> Option<TraceId> {
    let v = headers.iter().find(|(k, _)| is_traceparent(k))?.1;
    TraceParent::parse(v).map(|p| TraceId(p.trace_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_specifications_example() {
        let p = TraceParent::parse(TP).unwrap();
        assert_eq!(p.flags, 1);
        assert_eq!(p.format(), TP);
        assert_eq!(
            TraceId(p.trace_id).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn invalid_values_do_not_parse() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_first_fields_and_sent_as_00() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-ever";
        let p = TraceParent::parse(v).unwrap();
        assert_eq!(p.flags, 1, "only the sampled bit of an unknown version");
        assert!(p.format().starts_with("00-4bf92f35"));
        let mut h: Headers = [("traceparent", v)].into_iter().collect();
        let span = reparent(&mut h, false).unwrap().span_id().unwrap();
        assert_eq!(
            h.get(TRACEPARENT).unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01")
        );
    }

    #[test]
    fn reparenting_keeps_the_trace_and_tracestate_and_changes_the_parent() {
        let mut h: Headers = [("x", "1"), ("Traceparent", TP), ("tracestate", "a=b")]
            .into_iter()
            .collect();
        let t = reparent(&mut h, false).unwrap();
        let Traced::Continued {
            trace,
            span,
            parent,
        } = t
        else {
            panic!("{t:?}")
        };
        let out = TraceParent::parse(h.get(TRACEPARENT).unwrap()).unwrap();
        assert_eq!(out.trace_id, trace.0);
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(out.parent_id, span.0);
        assert_eq!(parent.to_string(), "00f067aa0ba902b7");
        assert_ne!(span, parent);
        assert_eq!(out.flags, 1);
        assert_eq!(h.get(TRACESTATE), Some("a=b"));
        assert_eq!(
            h.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["x", "traceparent", "tracestate"]
        );
        assert_eq!(trace_id(&h), Some(trace));
    }

    #[test]
    fn an_invalid_or_repeated_traceparent_is_removed_with_its_tracestate() {
        let mut h: Headers = [
            ("traceparent", "garbage"),
            ("tracestate", "a=b"),
            ("x", "1"),
        ]
        .into_iter()
        .collect();
        assert_eq!(reparent(&mut h, false), Some(Traced::Dropped));
        assert_eq!(h.iter().collect::<Vec<_>>(), [("x", "1")]);
        let mut h: Headers = [("traceparent", TP), ("traceparent", TP)]
            .into_iter()
            .collect();
        assert_eq!(reparent(&mut h, false), Some(Traced::Dropped));
        assert!(h.is_empty());
    }

    #[test]
    fn without_a_traceparent_nothing_changes_unless_starting() {
        let mut h: Headers = [("tracestate", "a=b")].into_iter().collect();
        assert_eq!(reparent(&mut h, false), None);
        assert_eq!(h.len(), 1);
        let t = reparent(&mut h, true).unwrap();
        assert!(matches!(t, Traced::Started { .. }));
        assert_eq!(h.get(TRACESTATE), None);
        let p = TraceParent::parse(h.get(TRACEPARENT).unwrap()).unwrap();
        assert_eq!(Some(TraceId(p.trace_id)), t.trace_id());
        assert_eq!(Some(SpanId(p.parent_id)), t.span_id());
    }

    #[test]
    fn span_ids_differ() {
        let a = new_span_id();
        let b = new_span_id();
        assert_ne!(a, b);
        assert_ne!(a.0, [0; 8]);
    }
}
