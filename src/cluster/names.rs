//! How internal names become NATS names: subjects for topics and queues, stream and
//! consumer names for queues (docs/cluster.md, "What lives where").
//!
//! NATS subject tokens are separated by `.` and may not contain whitespace; `*` and
//! `>` are wildcards. Stream and consumer names are safest in `A-Z a-z 0-9 _ -`. Our
//! names allow more (any printable character but a few), so both are escaped, reversibly
//! and without collisions:
//!
//! - a subject token keeps letters, digits, `-` and `_`, and writes every other byte as
//!   `%XX`; an empty level is a lone `%` (no escape produces one);
//! - a stream or consumer name keeps letters, digits and `-`, writes `_` as `__` and
//!   every other byte as `_XX`; a name longer than [`MAX_NAME`] is cut and ends in a
//!   hash of the whole;
//! - a KV key (NATS allows `A-Z a-z 0-9 - _ / = .`, `.` separating tokens, no empty
//!   token) keeps each `.`-separated level's letters, digits, `-` and `_`, writes every
//!   other byte as `=XX` and an empty level as a lone `=`: read back by [`from_kv_key`].

use crate::core::pattern::{Level, Pattern};

/// The longest stream or consumer name made here (JetStream keeps names as directory
/// names: 255 bytes at most, less the prefix).
const MAX_NAME: usize = 200;

/// One level of a topic or a queue name as one subject token.
pub fn token(level: &str) -> String {
    if level.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(level.len());
    for b in level.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The subject a publish to `topic` goes to: `<root>.t.<level>.<level>…`.
pub fn topic_subject(root: &str, topic: &str) -> String {
    let mut s = format!("{root}.t");
    for level in topic.split('.') {
        s.push('.');
        s.push_str(&token(level));
    }
    s
}

/// The subjects a router subscribes to for `pattern`: together they cover every topic
/// the pattern matches (the router matches exactly again; a broader subject costs only
/// messages it then drops). `#` matches zero or more levels, NATS's `>` one or more, and
/// only at the end: `a.#` needs `a` and `a.>`; a `#` before the end becomes `>` there.
pub fn pattern_subjects(root: &str, pattern: &Pattern) -> Vec<String> {
    let mut s = format!("{root}.t");
    for level in pattern.levels() {
        match level {
            Level::Literal(l) => {
                s.push('.');
                s.push_str(&token(l));
            }
            Level::One => s.push_str(".*"),
            Level::Many => {
                let exact = s.clone();
                let last = matches!(pattern.levels().last(), Some(Level::Many))
                    && pattern
                        .levels()
                        .iter()
                        .filter(|l| **l == Level::Many)
                        .count()
                        == 1;
                let mut out = vec![format!("{s}.>")];
                // `a.#` also matches `a` itself (a topic has at least one level: `#` alone
                // is covered by `>`).
                if last && exact != format!("{root}.t") {
                    out.push(exact);
                }
                return out;
            }
        }
    }
    vec![s]
}

/// The subject of queue `queue`'s stream: `<root>.q.<token>` (the whole name one token).
pub fn queue_subject(root: &str, queue: &str) -> String {
    format!("{root}.q.{}", token(queue))
}

/// `name` as (part of) a stream or consumer name.
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else if b == b'_' {
            out.push_str("__");
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    if out.len() > MAX_NAME {
        let mut cut = MAX_NAME - 18;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&format!("_h{:016x}", fnv1a(name.as_bytes())));
    }
    out
}

/// The longest KV key made here: the key is a subject token sequence, and a subject
/// goes into a protocol line NATS caps at 4 KiB with the reply subject and size.
pub const MAX_KV_KEY: usize = 2048;

/// `key` (levels separated by `.`, as internal topic names are) as a KV key; `None`
/// when its escaped form is longer than [`MAX_KV_KEY`].
pub fn kv_key(key: &str) -> Option<String> {
    let mut out = String::with_capacity(key.len());
    for (i, level) in key.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if level.is_empty() {
            out.push('=');
        }
        for b in level.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(b as char);
            } else {
                out.push_str(&format!("={b:02X}"));
            }
        }
    }
    (out.len() <= MAX_KV_KEY).then_some(out)
}

/// The key [`kv_key`] made `escaped` from; `None` for a key it does not make.
pub fn from_kv_key(escaped: &str) -> Option<String> {
    let mut out = Vec::with_capacity(escaped.len());
    for (i, level) in escaped.split('.').enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if level == "=" {
            continue;
        }
        let bytes = level.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            match bytes[j] {
                b'=' => {
                    let hex = std::str::from_utf8(bytes.get(j + 1..j + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    j += 3;
                }
                b => {
                    out.push(b);
                    j += 1;
                }
            }
        }
    }
    String::from_utf8(out).ok()
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not promised
/// to be), so every router names a long queue's stream alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(p: &str) -> Vec<String> {
        pattern_subjects("sb", &Pattern::parse(p).unwrap())
    }

    #[test]
    fn tokens_escape_what_nats_reads_as_syntax() {
        assert_eq!(token("room-1_a"), "room-1_a");
        assert_eq!(token("a b*>"), "a%20b%2A%3E");
        assert_eq!(token("$SYS"), "%24SYS");
        assert_eq!(token(""), "%");
        assert_eq!(token("é"), "%C3%A9");
        assert_eq!(topic_subject("sb", "a..b"), "sb.t.a.%.b");
    }

    #[test]
    fn patterns_cover_what_they_match() {
        assert_eq!(subjects("a.b"), ["sb.t.a.b"]);
        assert_eq!(subjects("a.*.c"), ["sb.t.a.*.c"]);
        assert_eq!(subjects("a.#"), ["sb.t.a.>", "sb.t.a"]);
        assert_eq!(subjects("#"), ["sb.t.>"]);
        assert_eq!(subjects("a.#.b"), ["sb.t.a.>"]);
        assert_eq!(subjects("*.#"), ["sb.t.*.>", "sb.t.*"]);
    }

    #[test]
    fn kv_keys_escape_reversibly() {
        for key in [
            "a.b",
            "sensors.v1%2E2.temp",
            "a..b",
            ".a.",
            "x=y/z é",
            "$SYS.-_",
        ] {
            let k = kv_key(key).unwrap();
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b)),
                "{k}"
            );
            assert!(
                !k.starts_with('.') && !k.ends_with('.') && !k.contains(".."),
                "{k}"
            );
            assert_eq!(from_kv_key(&k).as_deref(), Some(key), "{k}");
        }
        assert_eq!(kv_key("a.b%2Ec").unwrap(), "a.b=252Ec");
        assert_eq!(kv_key("a..b").unwrap(), "a.=.b");
        assert_ne!(kv_key("a=3D").unwrap(), kv_key("a=").unwrap());
        assert!(kv_key(&"x".repeat(MAX_KV_KEY + 1)).is_none());
        assert_eq!(from_kv_key("a=G1"), None);
    }

    #[test]
    fn names_escape_reversibly_and_stay_short() {
        assert_eq!(escape_name("orders"), "orders");
        assert_eq!(escape_name("stomp.bob.s_1"), "stomp_2Ebob_2Es__1");
        assert_ne!(escape_name("a_2E"), escape_name("a.")); // `a__2E` vs `a_2E`
        let long = "x".repeat(300);
        let other = format!("{}y", "x".repeat(299));
        assert!(escape_name(&long).len() <= MAX_NAME);
        assert_ne!(escape_name(&long), escape_name(&other));
    }
}
