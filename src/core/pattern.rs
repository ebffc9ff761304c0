//! Subscription patterns in the internal grammar, and their captures.
//!
//! Levels are separated by `.`; `*` matches exactly one level, `#` matches zero or more
//! levels. Wildcards must stand alone in their level (`a*` is a literal). As in MQTT, a
//! pattern that *starts* with a wildcard does not match a name whose first level starts
//! with `$`, so `#` never sweeps up system topics such as `$SYS.broker.load`.
//!
//! Every wildcard is a capture, numbered from 1 left to right; route templates refer
//! to them as `{1}`, `{2}`, … (see [`Pattern::captures`]).

use std::fmt;

use super::destination::{NameError, validate_chars};

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Level {
    Literal(String),
    /// `*`
    One,
    /// `#`
    Many,
}

/// A parsed, validated pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    levels: Vec<Level>,
    text: String,
}

/// A captured wildcard value: `*` captures one level, `#` captures zero or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    One(String),
    Many(Vec<String>),
}

impl Capture {
    /// The capture in internal spelling (levels joined with `.`).
    pub fn joined(&self) -> String {
        match self {
            Self::One(s) => s.clone(),
            Self::Many(v) => v.join("."),
        }
    }

    /// The capture as a list of levels.
    pub fn levels(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl Pattern {
    /// Parses and validates a pattern.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        validate_chars(text)?;
        let levels = text
            .split('.')
            .map(|l| match l {
                "*" => Level::One,
                "#" => Level::Many,
                _ => Level::Literal(l.to_owned()),
            })
            .collect();
        Ok(Self {
            levels,
            text: text.to_owned(),
        })
    }

    /// `#`: matches every name (but `$` names, see the module docs).
    pub fn any() -> Self {
        Self {
            levels: vec![Level::Many],
            text: "#".to_owned(),
        }
    }

    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Number of wildcards, i.e. of captures a template may use.
    pub fn wildcard_count(&self) -> usize {
        self.levels
            .iter()
            .filter(|l| !matches!(l, Level::Literal(_)))
            .count()
    }

    /// True when the pattern has no wildcard.
    pub fn is_literal(&self) -> bool {
        self.wildcard_count() == 0
    }

    /// Does `name` match? The reference implementation the trie is tested against, and
    /// what an MQTT session asks for each delivery (which of its subscriptions it
    /// answers): so without allocating, unlike [`Pattern::captures`], whose level list
    /// and captured strings took 12 % of the router's CPU in the MQTT QoS 0 1→1 profile.
    pub fn matches(&self, name: &str) -> bool {
        if name.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return false;
        }
        match_from(&self.levels, Some(name))
    }

    /// Matches `name` and returns the captures, or `None` when it does not match.
    /// Where `#` makes a match ambiguous, each `#` takes as few levels as possible.
    pub fn captures(&self, name: &str) -> Option<Vec<Capture>> {
        let name_levels: Vec<&str> = name.split('.').collect();
        if name.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return None;
        }
        let mut caps = Vec::with_capacity(self.levels.len());
        if capture_from(&self.levels, &name_levels, &mut caps) {
            Some(caps)
        } else {
            None
        }
    }

    /// Could some name match both patterns? Used to find routing loops.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        overlap(&self.levels, &other.levels)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `pat` matches `name`'s levels: `None` when no level is left (a name of one
/// empty level is `Some("")`). `#` takes as few levels as it can, as in [`capture_from`].
fn match_from(pat: &[Level], name: Option<&str>) -> bool {
    fn split(levels: &str) -> (&str, Option<&str>) {
        match levels.split_once('.') {
            Some((first, rest)) => (first, Some(rest)),
            None => (levels, None),
        }
    }
    let Some((first, rest)) = pat.split_first() else {
        return name.is_none();
    };
    match first {
        Level::Literal(l) => name.is_some_and(|n| {
            let (level, after) = split(n);
            level == l && match_from(rest, after)
        }),
        Level::One => name.is_some_and(|n| match_from(rest, split(n).1)),
        Level::Many => {
            let mut left = name;
            loop {
                if match_from(rest, left) {
                    return true;
                }
                match left {
                    Some(n) => left = split(n).1,
                    None => return false,
                }
            }
        }
    }
}

fn capture_from(pat: &[Level], name: &[&str], caps: &mut Vec<Capture>) -> bool {
    let Some((first, rest)) = pat.split_first() else {
        return name.is_empty();
    };
    match first {
        Level::Literal(l) => {
            name.first() == Some(&l.as_str()) && capture_from(rest, &name[1..], caps)
        }
        Level::One => {
            let Some(level) = name.first() else {
                return false;
            };
            caps.push(Capture::One((*level).to_owned()));
            if capture_from(rest, &name[1..], caps) {
                return true;
            }
            caps.pop();
            false
        }
        Level::Many => {
            for take in 0..=name.len() {
                caps.push(Capture::Many(
                    name[..take].iter().map(|s| (*s).to_owned()).collect(),
                ));
                if capture_from(rest, &name[take..], caps) {
                    return true;
                }
                caps.pop();
            }
            false
        }
    }
}

fn overlap(a: &[Level], b: &[Level]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        (None, Some(_)) => b.iter().all(|l| *l == Level::Many),
        (Some(_), None) => a.iter().all(|l| *l == Level::Many),
        (Some((Level::Many, ar)), Some((_, br))) => {
            overlap(ar, b) || overlap(a, br) || (b[0] == Level::Many && overlap(ar, br))
        }
        (Some((_, ar)), Some((Level::Many, br))) => overlap(a, br) || overlap(ar, b),
        (Some((x, ar)), Some((y, br))) => {
            let compatible = match (x, y) {
                (Level::Literal(p), Level::Literal(q)) => p == q,
                _ => true,
            };
            compatible && overlap(ar, br)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn one_level_wildcard() {
        assert!(p("a.*.c").matches("a.b.c"));
        assert!(!p("a.*.c").matches("a.c"));
        assert!(!p("a.*.c").matches("a.b.b.c"));
        assert!(p("*").matches(""));
    }

    #[test]
    fn many_level_wildcard() {
        assert!(p("a.#").matches("a"));
        assert!(p("a.#").matches("a.b.c"));
        assert!(p("#").matches("x.y"));
        assert!(p("a.#.z").matches("a.z"));
        assert!(p("a.#.z").matches("a.b.c.z"));
        assert!(!p("a.#.z").matches("a.b.c"));
    }

    #[test]
    fn dollar_names_need_a_literal_first_level() {
        assert!(!p("#").matches("$SYS.load"));
        assert!(!p("*.load").matches("$SYS.load"));
        assert!(p("$SYS.#").matches("$SYS.load"));
    }

    #[test]
    fn captures_in_order() {
        let caps = p("sensors.*.temp.#")
            .captures("sensors.k1.temp.a.b")
            .unwrap();
        assert_eq!(
            caps,
            vec![
                Capture::One("k1".into()),
                Capture::Many(vec!["a".into(), "b".into()])
            ]
        );
        assert_eq!(caps[1].joined(), "a.b");
    }

    #[test]
    fn overlap_detection() {
        assert!(p("a.*").overlaps(&p("a.b")));
        assert!(p("a.#").overlaps(&p("*.b.c")));
        assert!(!p("a.*").overlaps(&p("b.*")));
        assert!(!p("a.*").overlaps(&p("a.b.c")));
        assert!(p("#").overlaps(&p("x")));
        assert!(p("a.#.c").overlaps(&p("a.*.*.c")));
    }

    proptest::proptest! {
        /// The allocation-free `matches` answers as `captures` does, on every shape of
        /// pattern (literals, `*`, `#` anywhere, several `#`) and name (empty levels, `$`).
        #[test]
        fn matches_agrees_with_captures(
            pat in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "*", "#", "$s"]), 1..6),
            name in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "", "$s"]), 1..7),
        ) {
            let (pat, name) = (p(&pat.join(".")), name.join("."));
            proptest::prop_assert_eq!(pat.matches(&name), pat.captures(&name).is_some(), "{} against {}", pat, name);
        }
    }
}
