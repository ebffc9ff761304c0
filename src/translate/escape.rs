//! The reversible escape for characters that collide with the internal grammar.
//!
//! Internal names separate levels with `.` and reserve `*` and `#` as wildcard levels.
//! When a name from another grammar (an MQTT level such as `v1.2`) is carried into the
//! internal one, those characters are percent-encoded: `%` → `%25`, `.` → `%2E`,
//! `*` → `%2A`, `#` → `%23`, `+` → `%2B`, `/` → `%2F`. Decoding restores the original
//! exactly, so `a/v1.2` → `a.v1%2E2` → `a/v1.2` round-trips.

/// Escapes one level of a foreign name for use as one internal level.
pub fn escape_level(level: &str) -> String {
    if !level
        .bytes()
        .any(|b| matches!(b, b'%' | b'.' | b'*' | b'#' | b'+' | b'/'))
    {
        return level.to_owned();
    }
    let mut out = String::with_capacity(level.len() + 6);
    for c in level.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '*' => out.push_str("%2A"),
            '#' => out.push_str("%23"),
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_level`]. Unknown `%XY` sequences are kept verbatim, so a name that
/// was never escaped decodes to itself.
pub fn unescape_level(level: &str) -> String {
    if !level.contains('%') {
        return level.to_owned();
    }
    let mut out = String::with_capacity(level.len());
    let mut rest = level;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        let decoded = match code {
            Some("25") => Some('%'),
            Some("2E") | Some("2e") => Some('.'),
            Some("2A") | Some("2a") => Some('*'),
            Some("23") => Some('#'),
            Some("2B") | Some("2b") => Some('+'),
            Some("2F") | Some("2f") => Some('/'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Percent-encodes every byte of `s` for which `keep` is false (`%XX`, upper case): for
/// addresses that must survive inside another grammar (a reply address level, a `file:`
/// URI). Only [`percent_decode`] reads it.
pub fn percent_encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`percent_encode`]: `None` for a truncated or non-hex `%` sequence, or bytes
/// that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips_and_refuses_broken_sequences() {
        let keep = |b: u8| b.is_ascii_alphanumeric();
        let s = "a b/é%.";
        let e = percent_encode(s, keep);
        assert_eq!(e, "a%20b%2F%C3%A9%25%2E");
        assert_eq!(percent_decode(&e).as_deref(), Some(s));
        for bad in ["%", "%2", "%zz", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        for s in ["plain", "v1.2", "100%", "a*b", "#", "+", "x/y", "%2E", ""] {
            let e = escape_level(s);
            assert!(!e.contains('.') && !e.contains('/'), "{e}");
            assert_eq!(unescape_level(&e), s);
        }
        assert_eq!(escape_level("v1.2"), "v1%2E2");
        assert_eq!(unescape_level("50%off"), "50%off");
    }
}
