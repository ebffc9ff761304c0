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

#[cfg(test)]
mod tests {
    use super::*;

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
