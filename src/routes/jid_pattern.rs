//! JID patterns for `xmpp` route sources: `local@domain/resource` where any part may be
//! `*` (exactly one whole part, never empty). A pattern without `/resource` matches any
//! resource (or none); one without `local@` matches only the domain itself. Each `*`
//! gives a capture, in order, for the route's templates: `*@bridge.example.org` on
//! `orders@bridge.example.org` captures `orders`.

use crate::core::Capture;

/// A compiled JID pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JidPattern {
    text: String,
    local: Option<Part>,
    domain: Part,
    resource: Option<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Any,
    Exact(String),
}

impl Part {
    fn parse(s: &str, what: &str) -> Result<Self, String> {
        match s {
            "" => Err(format!("empty {what}")),
            "*" => Ok(Self::Any),
            s if s.contains('*') => Err(format!(
                "`*` must be a whole {what}, not part of one (`{s}`)"
            )),
            s => Ok(Self::Exact(s.to_owned())),
        }
    }

    /// Local parts and domains compare case-insensitively (their stringprep forms are
    /// lowercase); resources exactly.
    fn matches(&self, v: &str, fold: bool, caps: &mut Vec<Capture>) -> bool {
        match self {
            Self::Any if v.is_empty() => false,
            Self::Any => {
                // Held in internal spelling, like every capture: `first.last` is one level.
                caps.push(Capture::One(crate::translate::escape::escape_level(v)));
                true
            }
            Self::Exact(e) if fold => e.eq_ignore_ascii_case(v),
            Self::Exact(e) => e == v,
        }
    }
}

impl JidPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (bare, resource) = match text.split_once('/') {
            Some((b, r)) => (b, Some(Part::parse(r, "resource")?)),
            None => (text, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((l, d)) => (Some(Part::parse(l, "local part")?), d),
            None => (None, bare),
        };
        let domain = Part::parse(domain, "domain")?;
        Ok(Self {
            text: text.to_owned(),
            local,
            domain,
            resource,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn wildcard_count(&self) -> usize {
        [
            Some(&self.domain),
            self.local.as_ref(),
            self.resource.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter(|p| **p == Part::Any)
        .count()
    }

    /// The JID this pattern names when it has no wildcard (for service discovery).
    pub fn literal(&self) -> Option<String> {
        (self.wildcard_count() == 0).then(|| self.text.clone())
    }

    /// Captures of a JID given as `local@domain/resource` (local and resource optional),
    /// or `None` if it does not match.
    pub fn captures(&self, jid: &str) -> Option<Vec<Capture>> {
        let (bare, resource) = match jid.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (jid, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, bare),
        };
        let mut caps = Vec::new();
        match (&self.local, local) {
            (None, None) => {}
            (Some(p), Some(l)) if p.matches(l, true, &mut caps) => {}
            _ => return None,
        }
        if !self.domain.matches(domain, true, &mut caps) {
            return None;
        }
        match (&self.resource, resource) {
            (None, _) => {}
            (Some(p), Some(r)) if p.matches(r, false, &mut caps) => {}
            _ => return None,
        }
        Some(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, jid: &str) -> Option<Vec<String>> {
        JidPattern::parse(p)
            .unwrap()
            .captures(jid)
            .map(|c| c.iter().map(Capture::joined).collect())
    }

    #[test]
    fn wildcards_capture_whole_parts() {
        assert_eq!(
            caps("*@b.example", "orders@b.example"),
            Some(vec!["orders".into()])
        );
        assert_eq!(
            caps("*@b.example", "Orders@B.Example/phone"),
            Some(vec!["Orders".into()])
        );
        assert_eq!(
            caps("orders@b.example/*", "orders@b.example/eu"),
            Some(vec!["eu".into()])
        );
        assert_eq!(caps("orders@b.example/*", "orders@b.example"), None);
        assert_eq!(caps("*@*", "a@b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(caps("b.example", "b.example"), Some(vec![]));
        assert_eq!(caps("b.example", "x@b.example"), None);
        assert_eq!(caps("*@b.example", "b.example"), None);
        assert_eq!(caps("orders@b.example", "sales@b.example"), None);
        assert_eq!(caps("x@b/Res", "x@b/res"), None, "resources are exact");
        assert_eq!(
            caps("*@b", "first.last@b"),
            Some(vec!["first%2Elast".into()])
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(JidPattern::parse("or*@b").is_err());
        assert!(JidPattern::parse("@b").is_err());
        assert!(JidPattern::parse("a@").is_err());
        assert!(JidPattern::parse("a@b/").is_err());
        assert_eq!(
            JidPattern::parse("a@b").unwrap().literal().as_deref(),
            Some("a@b")
        );
        assert_eq!(JidPattern::parse("*@b").unwrap().literal(), None);
    }
}
