//! jq programs in routes: `transform.jq` computes new bodies (and headers) from a
//! message, `when.jq` decides whether a route takes it. The reference is the "jq"
//! section of `docs/routes.md`.
//!
//! Programs run on [jaq](https://github.com/01mf02/jaq), a jq clone in pure Rust
//! (`forbid(unsafe_code)`, MIT). A program is parsed and compiled once, when the route
//! table compiles, so a syntax error or an undefined function is a `check` error with its
//! position in the program; the compiled filter is shared by every worker thread.
//!
//! The program's input is one object, `{body, headers, source}` (see [`input`]). Cost is
//! bounded on what can be bounded: the input by the listeners' frame limits, the number
//! of outputs by the route's `jq_max_outputs` (the iterator is not driven past it), and
//! each output's size by [`MAX_OUTPUT_BYTES`] (serialisation stops at the limit). jaq has
//! no step budget: a program that loops forever on one input (`repeat(.)` without
//! `limit`) holds the thread it runs on, so programs are configuration, written by the
//! operator, not by publishers.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Ctx, ValT, Vars, data::JustLut, unwrap_valr};
use jaq_json::{Map, Val};

use crate::core::{Capture, Message};
use crate::translate::body::{self, BodyFormat};
use crate::translate::escape::unescape_level;

type Data = JustLut<Val>;
type Filter = jaq_core::Filter<Data>;

/// Largest JSON body one output may serialise to (the listeners' default frame limit):
/// a program cannot turn a small message into a huge one.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Default and ceiling of `jq_max_outputs`: how many messages one message may be split
/// into.
pub const DEFAULT_MAX_OUTPUTS: usize = 16;
pub const MAX_MAX_OUTPUTS: usize = 1000;

/// A compiled jq program.
#[derive(Clone)]
pub struct Program {
    text: Arc<str>,
    filter: Arc<Filter>,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Program").field(&self.text).finish()
    }
}

/// A program that does not compile: where in the program (1-based line and column,
/// counted in characters) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "jq program, line {} column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Why a program could not transform or filter a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JqError {
    #[error("body is not JSON ({0})")]
    NotJson(String),
    #[error("body conversion for jq failed: {0}")]
    Body(#[from] body::BodyError),
    #[error("jq error: {0}")]
    Run(String),
    #[error("jq program yielded more than {0} outputs (jq_max_outputs)")]
    TooMany(usize),
    #[error("jq output is over {MAX_OUTPUT_BYTES} bytes")]
    TooLarge,
    #[error("jq output is not JSON: {0}")]
    NotJsonOutput(&'static str),
    #[error("jq output must be an object {{body, headers}} (jq_output: message): {0}")]
    Shape(String),
}

impl Program {
    /// Parses and compiles `text` with jq's standard library (jaq's core, std and JSON
    /// definitions; no `input`/`inputs`, no `env`).
    pub fn compile(text: &str) -> Result<Self, Vec<SyntaxError>> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        // `env` would hand the daemon's environment (secrets included) to route files.
        let funs = jaq_core::funs()
            .chain(jaq_std::funs().filter(|(name, ..)| *name != "env"))
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let at = |s: &str| position(text, s);
        let modules = loader
            .load(
                &arena,
                File {
                    code: text,
                    path: (),
                },
            )
            .map_err(|errs| {
                errs.into_iter()
                    .flat_map(|(_, e)| load_errors(e, &at))
                    .collect::<Vec<_>>()
            })?;
        let filter = jaq_core::Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                errs.into_iter()
                    .flat_map(|(_, es)| es)
                    .map(|(s, undefined)| {
                        let (line, column) = at(s);
                        SyntaxError {
                            line,
                            column,
                            message: format!("undefined {} `{s}`", undefined_kind(&undefined)),
                        }
                    })
                    .collect::<Vec<_>>()
            })?;
        Ok(Self {
            text: text.into(),
            filter: Arc::new(filter),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Runs the program on `input`; at most `max` outputs, each one checked by `each`
    /// (which may refuse it) as it comes, so a program yielding too much stops early.
    fn run<T>(
        &self,
        input: Val,
        max: usize,
        mut each: impl FnMut(Val) -> Result<T, JqError>,
    ) -> Result<Vec<T>, JqError> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for v in self.filter.id.run((ctx, input)).map(unwrap_valr) {
            let v = v.map_err(|e| JqError::Run(e.to_string()))?;
            if out.len() == max {
                return Err(JqError::TooMany(max));
            }
            out.push(each(v)?);
        }
        Ok(out)
    }

    /// `when.jq`: whether the program's first output is truthy (not `false` or
    /// `null`). A program with no output does not match.
    pub fn accepts(&self, m: &Message, route: &str, caps: &[Capture]) -> Result<bool, JqError> {
        let input = input(m, route, caps)?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let first = self.filter.id.run((ctx, input)).map(unwrap_valr).next();
        match first {
            None => Ok(false),
            Some(Ok(v)) => Ok(v.as_bool()),
            Some(Err(e)) => Err(JqError::Run(e.to_string())),
        }
    }

    /// `transform.jq`: the messages `m` becomes, one per output (none when the program
    /// yields nothing). Each keeps `m`'s other fields; its body is the output as JSON
    /// (`application/json`), or with `message` output the output's `body`, with its
    /// `headers` set.
    pub fn transform(
        &self,
        m: &Message,
        route: &str,
        caps: &[Capture],
        output: Output,
        max: usize,
    ) -> Result<Vec<Message>, JqError> {
        let input = input(m, route, caps)?;
        self.run(input, max, |v| {
            let mut next = m.clone();
            let body = match output {
                Output::Body => v,
                Output::Message => {
                    let (body, headers) = split_message(v)?;
                    for (k, h) in headers {
                        match h {
                            Some(h) => next.headers.set(&k, h),
                            None => {
                                next.headers.remove(&k);
                            }
                        }
                    }
                    body
                }
            };
            next.body = to_json(&body)?;
            next.content_type = Some("application/json".to_owned());
            Ok(next)
        })
    }
}

/// How a `transform.jq` program's outputs are read (`jq_output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Each output is the new body.
    #[default]
    Body,
    /// Each output is `{body, headers}`: the new body, and headers to set (a `null`
    /// value removes the header).
    Message,
}

/// The program's input: `{body, headers, source}`.
///
/// - `body`: the body parsed as JSON; an XML body (by content type) is first converted
///   by the route body converter (`transform.body: json`'s mapping). Any other content
///   type, or none (MQTT 3.1.1 carries none), is parsed as JSON as it is.
/// - `headers`: each application header's first value, as a string.
/// - `source`: `{route, protocol, captures}`: the route's name, the protocol the message
///   entered by, and the source pattern's captures as text.
pub fn input(m: &Message, route: &str, caps: &[Capture]) -> Result<Val, JqError> {
    let json: Bytes = if body::is_xml(m.content_type.as_deref()) {
        body::convert(&m.body, m.content_type.as_deref(), BodyFormat::Json)?.0
    } else {
        m.body.clone()
    };
    // serde_json, not jaq's own reader: that keeps every decimal as a string (an
    // allocation, then a parse at each use), which made up much of a reshape's cost.
    let body: Val = serde_json::from_slice(&json).map_err(|e| JqError::NotJson(e.to_string()))?;
    let mut headers = Map::default();
    for (k, v) in m.headers.iter() {
        headers
            .entry(Val::from(k.to_owned()))
            .or_insert_with(|| Val::from(v.to_owned()));
    }
    let captures: Vec<Val> = caps
        .iter()
        .map(|c| {
            let levels: Vec<String> = c.levels().into_iter().map(unescape_level).collect();
            Val::from(levels.join("."))
        })
        .collect();
    let mut source = Map::default();
    source.insert(Val::from("route".to_owned()), Val::from(route.to_owned()));
    source.insert(
        Val::from("protocol".to_owned()),
        Val::from(m.origin.protocol.to_string()),
    );
    source.insert(
        Val::from("captures".to_owned()),
        Val::Arr(jaq_json::Rc::new(captures)),
    );
    let mut top = Map::default();
    top.insert(Val::from("body".to_owned()), body);
    top.insert(Val::from("headers".to_owned()), Val::obj(headers));
    top.insert(Val::from("source".to_owned()), Val::obj(source));
    Ok(Val::obj(top))
}

/// `{body, headers}` → the body and the headers to set (`None`: remove).
#[allow(clippy::type_complexity)]
fn split_message(v: Val) -> Result<(Val, Vec<(String, Option<String>)>), JqError> {
    let Val::Obj(o) = v else {
        return Err(JqError::Shape(format!("got {}", kind(&v))));
    };
    let mut body = None;
    let mut headers = Vec::new();
    for (k, v) in o.iter() {
        match text(k).as_deref() {
            Some("body") => body = Some(v.clone()),
            Some("headers") => {
                let Val::Obj(h) = v else {
                    return Err(JqError::Shape(format!("`headers` is {}", kind(v))));
                };
                for (name, value) in h.iter() {
                    let name = text(name).ok_or_else(|| {
                        JqError::Shape("a header name is not a string".to_owned())
                    })?;
                    let value = match value {
                        Val::Null => None,
                        Val::Arr(_) | Val::Obj(_) => {
                            return Err(JqError::Shape(format!(
                                "header `{name}` is {}; headers are strings, numbers or booleans",
                                kind(value)
                            )));
                        }
                        other => Some(text(other).unwrap_or_else(|| other.to_string())),
                    };
                    headers.push((name, value));
                }
            }
            _ => {
                return Err(JqError::Shape(format!(
                    "unknown key {k} (only `body` and `headers`)"
                )));
            }
        }
    }
    let body = body.ok_or_else(|| JqError::Shape("no `body`".to_owned()))?;
    Ok((body, headers))
}

/// A text string's contents.
fn text(v: &Val) -> Option<String> {
    match v {
        Val::TStr(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn kind(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Num(_) => "a number",
        Val::TStr(_) => "a string",
        Val::BStr(_) => "a byte string",
        Val::Arr(_) => "an array",
        Val::Obj(_) => "an object",
    }
}

/// Serialises an output as JSON, refusing what JSON cannot hold (byte strings, NaN and
/// infinities, non-string keys) and stopping at [`MAX_OUTPUT_BYTES`].
///
/// Written here rather than with `jaq_json::write`, which formats strings one character
/// at a time: on a 1 KiB body that was most of a transform's cost (65 µs of `.body`'s
/// 67 µs per message in `cargo bench --bench core`).
fn to_json(v: &Val) -> Result<Bytes, JqError> {
    let mut out = Vec::with_capacity(256);
    write_json(&mut out, v)?;
    Ok(Bytes::from(out))
}

fn write_json(out: &mut Vec<u8>, v: &Val) -> Result<(), JqError> {
    use std::io::Write as _;
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Num(jaq_json::Num::Float(f)) if !f.is_finite() => {
            return Err(JqError::NotJsonOutput("NaN or infinite number"));
        }
        Val::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Val::TStr(b) => write_str(out, b),
        Val::BStr(_) => return Err(JqError::NotJsonOutput("a byte string")),
        Val::Arr(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, x)?;
            }
            out.push(b']');
        }
        Val::Obj(o) => {
            out.push(b'{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let Val::TStr(k) = k else {
                    return Err(JqError::NotJsonOutput("an object key that is not a string"));
                };
                write_str(out, k);
                out.push(b':');
                write_json(out, x)?;
            }
            out.push(b'}');
        }
    }
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(JqError::TooLarge);
    }
    Ok(())
}

/// A JSON string; invalid UTF-8 becomes U+FFFD (jq's text strings are meant as UTF-8).
fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &*text);
}

/// Line and column (1-based, in characters) of `at`, a slice of `text` (or past its end).
fn position(text: &str, at: &str) -> (usize, usize) {
    let start = text.as_ptr() as usize;
    let p = at.as_ptr() as usize;
    let offset = if p >= start && p <= start + text.len() {
        p - start
    } else {
        text.len()
    };
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

fn load_errors(
    e: jaq_core::load::Error<&str>,
    at: &impl Fn(&str) -> (usize, usize),
) -> Vec<SyntaxError> {
    use jaq_core::load::Error;
    let err = |s: &str, message: String| {
        let (line, column) = at(s);
        SyntaxError {
            line,
            column,
            message,
        }
    };
    match e {
        Error::Io(es) => es
            .into_iter()
            .map(|(s, m)| err(s, format!("cannot load module: {m}")))
            .collect(),
        Error::Lex(es) => es
            .into_iter()
            .map(|(expect, s)| err(s, format!("expected {}", expect.as_str())))
            .collect(),
        Error::Parse(es) => es
            .into_iter()
            .map(|(expect, s)| {
                let found = s.split_whitespace().next().unwrap_or("");
                let found = if found.is_empty() {
                    "end of program".to_owned()
                } else {
                    format!("`{}`", found.chars().take(20).collect::<String>())
                };
                err(s, format!("expected {}, found {found}", expect.as_str()))
            })
            .collect(),
    }
}

fn undefined_kind(u: &jaq_core::compile::Undefined) -> String {
    use jaq_core::compile::Undefined;
    match u {
        Undefined::Mod => "module".to_owned(),
        Undefined::Var => "variable".to_owned(),
        Undefined::Label => "label".to_owned(),
        Undefined::Filter(arity) => format!("filter (with {arity} arguments)"),
        _ => "symbol".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> Message {
        let mut m = Message::new(body.to_owned());
        m.content_type = Some("application/json".to_owned());
        m
    }

    #[test]
    fn reshapes_a_body() {
        let p = Program::compile("{id: .body.device, celsius: .body.t}").unwrap();
        let out = p
            .transform(
                &msg(r#"{"device":"k1","t":21.5}"#),
                "r",
                &[],
                Output::Body,
                16,
            )
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].body[..], br#"{"id":"k1","celsius":21.5}"#);
        assert_eq!(out[0].content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn splits_and_bounds_outputs() {
        let p = Program::compile(".body[]").unwrap();
        let out = p
            .transform(&msg("[1,2,3]"), "r", &[], Output::Body, 3)
            .unwrap();
        let bodies: Vec<&[u8]> = out.iter().map(|m| &m.body[..]).collect();
        assert_eq!(bodies, [b"1", b"2", b"3"]);
        let err = p
            .transform(&msg("[1,2,3,4]"), "r", &[], Output::Body, 3)
            .unwrap_err();
        assert_eq!(err, JqError::TooMany(3));
        // An endless program stops at the bound too.
        let p = Program::compile("repeat(1)").unwrap();
        let err = p
            .transform(&msg("0"), "r", &[], Output::Body, 5)
            .unwrap_err();
        assert_eq!(err, JqError::TooMany(5));
    }

    #[test]
    fn message_output_sets_and_removes_headers() {
        let p = Program::compile(r#"{body: .body.v, headers: {kind: .body.k, n: 3, old: null}}"#)
            .unwrap();
        let mut m = msg(r#"{"v":[1],"k":"x"}"#);
        m.headers.set("old", "gone".to_owned());
        let out = p.transform(&m, "r", &[], Output::Message, 16).unwrap();
        assert_eq!(&out[0].body[..], b"[1]");
        assert_eq!(out[0].headers.get("kind"), Some("x"));
        assert_eq!(out[0].headers.get("n"), Some("3"));
        assert_eq!(out[0].headers.get("old"), None);
        let bad = Program::compile("{body: 1, extra: 2}").unwrap();
        assert!(matches!(
            bad.transform(&m, "r", &[], Output::Message, 16),
            Err(JqError::Shape(_))
        ));
    }

    #[test]
    fn input_has_headers_source_and_xml_bodies() {
        let p =
            Program::compile("[.headers.h, .source.route, .source.protocol, .body.a.b]").unwrap();
        let mut m = Message::new("<a><b>7</b></a>");
        m.content_type = Some("application/xml".to_owned());
        m.headers.set("h", "v".to_owned());
        let out = p.transform(&m, "rt", &[], Output::Body, 1).unwrap();
        assert_eq!(&out[0].body[..], br#"["v","rt","internal","7"]"#);
    }

    #[test]
    fn filters_on_truthiness() {
        let p = Program::compile(".body.t > 30").unwrap();
        assert!(p.accepts(&msg(r#"{"t":31}"#), "r", &[]).unwrap());
        assert!(!p.accepts(&msg(r#"{"t":3}"#), "r", &[]).unwrap());
        assert!(matches!(
            p.accepts(&msg("not json"), "r", &[]),
            Err(JqError::NotJson(_))
        ));
        assert!(
            !Program::compile("empty")
                .unwrap()
                .accepts(&msg("1"), "r", &[])
                .unwrap()
        );
    }

    #[test]
    fn runtime_errors_and_bad_outputs() {
        let p = Program::compile(".body | error(\"boom\")").unwrap();
        assert!(matches!(
            p.transform(&msg("1"), "r", &[], Output::Body, 1),
            Err(JqError::Run(_))
        ));
        let p = Program::compile("nan").unwrap();
        assert!(matches!(
            p.transform(&msg("1"), "r", &[], Output::Body, 1),
            Err(JqError::NotJsonOutput(_))
        ));
        let p = Program::compile("[range(300000)] | map(\"xxxx\")").unwrap();
        assert_eq!(
            p.transform(&msg("1"), "r", &[], Output::Body, 1),
            Err(JqError::TooLarge)
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = Program::compile("{a: .b,\n  c: (.d | }").unwrap_err();
        assert_eq!(e[0].line, 2, "{e:?}");
        assert!(e[0].column > 1, "{e:?}");
        let e = Program::compile(".a | nosuchfn(1)").unwrap_err();
        assert_eq!((e[0].line, e[0].column), (1, 6), "{e:?}");
        assert!(e[0].message.contains("nosuchfn"), "{e:?}");
    }
}
