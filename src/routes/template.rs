//! Address and header templates: literal text with `{N}` (the N-th wildcard capture of
//! the route's source) and `{header:NAME}` (a header of the message). `{{` and `}}` are
//! literal braces.
//!
//! Captures are held in internal spelling (levels joined with `.`, foreign separators
//! escaped). Rendering into a `/`-separated grammar (MQTT) unescapes each level and
//! joins with `/`, so `sensors/v1.2/temp` → `sensors.{1}.temp` → `sensors.v1%2E2.temp`
//! → back to MQTT `out/{1}` → `out/v1.2`.

use crate::core::{Capture, Headers};
use crate::translate::escape::unescape_level;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Capture(usize),
    Header(String),
}

/// How captures are spelled when rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grammar {
    /// Internal, STOMP, AMQP: `.` between levels, escapes kept.
    Dot,
    /// MQTT: `/` between levels, escapes undone.
    Slash,
    /// Free text (header values, JIDs): captures as their levels unescaped, joined by `.`.
    Text,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    text: String,
}

/// A value a template needed was missing at render time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("template `{template}` uses header `{header}`, which the message does not have")]
    MissingHeader { template: String, header: String },
    #[error("template `{template}` uses capture {{{index}}}, which the match did not produce")]
    MissingCapture { template: String, index: usize },
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => inner.push(c),
                            None => return Err(format!("unclosed `{{` in template `{text}`")),
                        }
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    if let Some(h) = inner.strip_prefix("header:") {
                        if h.is_empty() {
                            return Err(format!("empty header name in template `{text}`"));
                        }
                        parts.push(Part::Header(h.to_owned()));
                    } else {
                        match inner.parse::<usize>() {
                            Ok(n) if n >= 1 => parts.push(Part::Capture(n)),
                            _ => {
                                return Err(format!(
                                    "`{{{inner}}}` in template `{text}`: use {{N}} (N ≥ 1) for a wildcard capture or {{header:NAME}}"
                                ));
                            }
                        }
                    }
                }
                '}' => return Err(format!("unmatched `}}` in template `{text}`")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Self {
            parts,
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The highest capture index used (0 when none).
    pub fn max_capture(&self) -> usize {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Capture(n) => Some(*n),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// True when part of the rendered text comes from a header.
    pub fn uses_headers(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Header(_)))
    }

    /// Renders with every capture and header replaced by `x`: a sample name to validate
    /// the literal parts of the template.
    pub fn probe(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                _ => "x",
            })
            .collect()
    }

    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    pub fn render(
        &self,
        caps: &[Capture],
        headers: &Headers,
        grammar: Grammar,
    ) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.text.len() + 16);
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Capture(n) => {
                    let c = caps.get(n - 1).ok_or_else(|| RenderError::MissingCapture {
                        template: self.text.clone(),
                        index: *n,
                    })?;
                    match grammar {
                        Grammar::Dot => out.push_str(&c.joined()),
                        Grammar::Slash => out.push_str(
                            &c.levels()
                                .into_iter()
                                .map(unescape_level)
                                .collect::<Vec<_>>()
                                .join("/"),
                        ),
                        Grammar::Text => out.push_str(
                            &c.levels()
                                .into_iter()
                                .map(unescape_level)
                                .collect::<Vec<_>>()
                                .join("."),
                        ),
                    }
                }
                Part::Header(h) => {
                    let v = headers.get(h).ok_or_else(|| RenderError::MissingHeader {
                        template: self.text.clone(),
                        header: h.clone(),
                    })?;
                    out.push_str(v);
                }
            }
        }
        Ok(out)
    }

    /// Renders with every capture and header replaced by a wildcard (`*` for a one-level
    /// capture, `#` otherwise): the set of names the template can produce, as a pattern.
    /// Used to find routing loops.
    pub fn as_pattern(&self, capture_is_many: &dyn Fn(usize) -> bool, grammar: Grammar) -> String {
        let (one, many) = match grammar {
            Grammar::Slash => ("+", "#"),
            _ => ("*", "#"),
        };
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Capture(n) if !capture_is_many(*n) => out.push_str(one),
                Part::Capture(_) | Part::Header(_) => out.push_str(many),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render() {
        let t = Template::parse("sensors.{1}.{header:unit}.{{x}}").unwrap();
        assert_eq!(t.max_capture(), 1);
        let caps = vec![Capture::One("v1%2E2".into())];
        let h: Headers = [("unit", "c")].into_iter().collect();
        assert_eq!(
            t.render(&caps, &h, Grammar::Dot).unwrap(),
            "sensors.v1%2E2.c.{x}"
        );
        let m = Template::parse("out/{1}").unwrap();
        let caps = vec![Capture::Many(vec!["a".into(), "v1%2E2".into()])];
        assert_eq!(m.render(&caps, &h, Grammar::Slash).unwrap(), "out/a/v1.2");
    }

    #[test]
    fn errors() {
        assert!(Template::parse("a.{").is_err());
        assert!(Template::parse("a.{0}").is_err());
        assert!(Template::parse("a.{x}").is_err());
        assert!(Template::parse("a}").is_err());
        let t = Template::parse("{header:h}").unwrap();
        assert_eq!(
            t.render(&[], &Headers::new(), Grammar::Dot),
            Err(RenderError::MissingHeader {
                template: "{header:h}".into(),
                header: "h".into()
            })
        );
    }
}
