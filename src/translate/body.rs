//! Body conversion between text, JSON and XML, done only where a route asks for it
//! (`transform.body`). The mapping (documented in `docs/mapping.md`):
//!
//! - JSON → XML: an object with a single key becomes that element; anything else is
//!   wrapped in `<message>`. Object keys become child elements, arrays repeat their
//!   element, keys starting with `@` become attributes, `#text` becomes text content,
//!   `null` an empty element, scalars their text.
//! - XML → JSON: the reverse; every scalar becomes a string (XML has no types); repeated
//!   children become arrays; attributes become `@name` keys.
//! - text → JSON: a JSON string. text → XML: `<message>text</message>`.
//! - anything → text: the same bytes, which must be UTF-8.
//!
//! The XML reader never expands entities other than the five predefined ones and
//! character references; a DOCTYPE is refused, so entity tricks (billion laughs,
//! external entities) cannot apply.

use bytes::Bytes;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// Body formats a route can convert to (`transform.body` in a route file). It lives here,
/// beside the conversion, so that routes import translate and never the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    Text,
    Json,
    Xml,
}

/// Why a body could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body is not well-formed XML: {0}")]
    Xml(String),
    #[error("`{0}` cannot be an XML element name")]
    XmlName(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Json,
    Xml,
}

fn kind_of(content_type: Option<&str>) -> Kind {
    let mime = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        Kind::Json
    } else if mime == "application/xml" || mime == "text/xml" || mime.ends_with("+xml") {
        Kind::Xml
    } else {
        Kind::Text
    }
}

/// Whether `content_type` names XML (`application/xml`, `text/xml`, `*+xml`).
pub fn is_xml(content_type: Option<&str>) -> bool {
    kind_of(content_type) == Kind::Xml
}

/// Converts `body` (of `content_type`) to `to`; returns the new body and content type.
pub fn convert(
    body: &Bytes,
    content_type: Option<&str>,
    to: BodyFormat,
) -> Result<(Bytes, &'static str), BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    let from = kind_of(content_type);
    match to {
        BodyFormat::Text => Ok((body.clone(), "text/plain; charset=utf-8")),
        BodyFormat::Json => {
            let out = match from {
                Kind::Json => {
                    serde_json::from_str::<Value>(text)
                        .map_err(|e| BodyError::Json(e.to_string()))?;
                    body.clone()
                }
                Kind::Xml => Bytes::from(xml_to_json(text)?.to_string()),
                Kind::Text => Bytes::from(Value::String(text.to_owned()).to_string()),
            };
            Ok((out, "application/json"))
        }
        BodyFormat::Xml => {
            let out = match from {
                Kind::Xml => {
                    xml_to_json(text)?;
                    body.clone()
                }
                Kind::Json => {
                    let v: Value =
                        serde_json::from_str(text).map_err(|e| BodyError::Json(e.to_string()))?;
                    Bytes::from(json_to_xml(&v)?)
                }
                Kind::Text => Bytes::from(format!(
                    "<message>{}</message>",
                    quick_xml::escape::escape(text)
                )),
            };
            Ok((out, "application/xml"))
        }
    }
}

fn valid_xml_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !n.to_ascii_lowercase().starts_with("xml")
}

/// JSON → XML per the module docs.
pub fn json_to_xml(v: &Value) -> Result<String, BodyError> {
    let mut out = String::new();
    match v {
        // A single key becomes the root element, unless its value is an array (which
        // would make several roots).
        Value::Object(m)
            if m.len() == 1
                && !m.keys().any(|k| k.starts_with(['@', '#']))
                && !m.values().any(Value::is_array) =>
        {
            let (k, inner) = m
                .iter()
                .next()
                .ok_or_else(|| BodyError::XmlName(String::new()))?;
            write_element(&mut out, k, inner)?;
        }
        Value::Array(_) => {
            let mut wrapped = Map::new();
            wrapped.insert("item".into(), v.clone());
            write_element(&mut out, "message", &Value::Object(wrapped))?;
        }
        other => write_element(&mut out, "message", other)?,
    }
    Ok(out)
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn write_element(out: &mut String, name: &str, v: &Value) -> Result<(), BodyError> {
    if let Value::Array(items) = v {
        for item in items {
            write_element(out, name, item)?;
        }
        return Ok(());
    }
    if !valid_xml_name(name) {
        return Err(BodyError::XmlName(name.to_owned()));
    }
    out.push('<');
    out.push_str(name);
    match v {
        Value::Object(m) => {
            for (k, a) in m.iter().filter(|(k, _)| k.starts_with('@')) {
                let attr = &k[1..];
                if !valid_xml_name(attr) {
                    return Err(BodyError::XmlName(attr.to_owned()));
                }
                out.push_str(&format!(
                    " {attr}=\"{}\"",
                    quick_xml::escape::escape(scalar_text(a))
                ));
            }
            out.push('>');
            if let Some(t) = m.get("#text") {
                out.push_str(&quick_xml::escape::escape(scalar_text(t)));
            }
            for (k, child) in m.iter().filter(|(k, _)| !k.starts_with(['@', '#'])) {
                write_element(out, k, child)?;
            }
        }
        Value::Null => {
            out.push_str("/>");
            return Ok(());
        }
        scalar => {
            out.push('>');
            out.push_str(&quick_xml::escape::escape(scalar_text(scalar)));
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
    Ok(())
}

struct Open {
    name: String,
    map: Map<String, Value>,
    text: String,
}

fn insert_child(map: &mut Map<String, Value>, name: String, v: Value) {
    match map.get_mut(&name) {
        Some(Value::Array(a)) => a.push(v),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, v]);
        }
        None => {
            map.insert(name, v);
        }
    }
}

fn close(o: Open) -> Value {
    let text = o.text.trim();
    if o.map.is_empty() {
        if text.is_empty() {
            Value::Null
        } else {
            Value::String(text.to_owned())
        }
    } else {
        let mut map = o.map;
        if !text.is_empty() {
            map.insert("#text".into(), Value::String(text.to_owned()));
        }
        Value::Object(map)
    }
}

/// XML → JSON per the module docs.
pub fn xml_to_json(xml: &str) -> Result<Value, BodyError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let err = |e: &dyn std::fmt::Display| BodyError::Xml(e.to_string());
    let open = |e: &quick_xml::events::BytesStart<'_>| -> Result<Open, BodyError> {
        let name = e.name().as_ref().to_owned();
        let mut map = Map::new();
        for a in e.attributes() {
            let a = a.map_err(|e| err(&e))?;
            let key: &str = a.key.as_ref();
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| err(&e))?;
            map.insert(format!("@{key}"), Value::String(value.into_owned()));
        }
        Ok(Open {
            name,
            map,
            text: String::new(),
        })
    };
    loop {
        let ev = reader.read_event().map_err(|e| err(&e))?;
        match ev {
            Event::Start(e) => {
                if root.is_some() {
                    return Err(BodyError::Xml("more than one root element".into()));
                }
                stack.push(open(&e)?);
            }
            Event::Empty(e) => {
                let o = open(&e)?;
                let name = o.name.clone();
                let v = close(o);
                match stack.last_mut() {
                    Some(parent) => insert_child(&mut parent.map, name, v),
                    None if root.is_none() => root = Some((name, v)),
                    None => return Err(BodyError::Xml("more than one root element".into())),
                }
            }
            Event::End(_) => {
                let o = stack
                    .pop()
                    .ok_or_else(|| BodyError::Xml("unbalanced end tag".into()))?;
                let name = o.name.clone();
                let v = close(o);
                match stack.last_mut() {
                    Some(parent) => insert_child(&mut parent.map, name, v),
                    None => root = Some((name, v)),
                }
            }
            Event::Text(t) => {
                if let Some(o) = stack.last_mut() {
                    o.text.push_str(&t.xml10_content());
                } else if !t.xml10_content().trim().is_empty() {
                    return Err(BodyError::Xml("text outside the root element".into()));
                }
            }
            Event::CData(c) => {
                if let Some(o) = stack.last_mut() {
                    o.text.push_str(&c.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| err(&e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name_cow = r.xml10_content();
                        let name: &str = &name_cow;
                        quick_xml::escape::resolve_predefined_entity(name)
                            .ok_or_else(|| BodyError::Xml(format!("undefined entity `&{name};` (only the predefined ones are allowed)")))?
                            .to_owned()
                    }
                };
                if let Some(o) = stack.last_mut() {
                    o.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => {
                return Err(BodyError::Xml(
                    "DOCTYPE declarations are not accepted".into(),
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(BodyError::Xml("unclosed element".into()));
    }
    let (name, v) = root.ok_or_else(|| BodyError::Xml("no root element".into()))?;
    let mut m = Map::new();
    m.insert(name, v);
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_xml_round_trip() {
        let v = json!({"order": {"@id": "7", "item": ["a", "b"], "note": "x & y", "empty": null}});
        let xml = json_to_xml(&v).unwrap();
        assert_eq!(
            xml,
            r#"<order id="7"><item>a</item><item>b</item><note>x &amp; y</note><empty/></order>"#
        );
        assert_eq!(xml_to_json(&xml).unwrap(), v);
    }

    #[test]
    fn conversions() {
        let (b, ct) = convert(
            &Bytes::from("hi <there>"),
            Some("text/plain"),
            BodyFormat::Xml,
        )
        .unwrap();
        assert_eq!(&b[..], b"<message>hi &lt;there&gt;</message>");
        assert_eq!(ct, "application/xml");
        let (b, _) = convert(&b, Some(ct), BodyFormat::Json).unwrap();
        assert_eq!(&b[..], br#"{"message":"hi <there>"}"#);
        let (b, _) = convert(&Bytes::from("plain"), None, BodyFormat::Json).unwrap();
        assert_eq!(&b[..], br#""plain""#);
        assert_eq!(
            convert(&Bytes::from_static(&[0xff]), None, BodyFormat::Text),
            Err(BodyError::NotUtf8)
        );
        assert!(convert(&Bytes::from("{"), Some("application/json"), BodyFormat::Xml).is_err());
    }

    #[test]
    fn always_one_root() {
        for v in [
            json!([1, 2]),
            json!({"item": [1, 2]}),
            json!("x"),
            json!({"a": 1, "b": 2}),
        ] {
            let xml = json_to_xml(&v).unwrap();
            assert!(xml_to_json(&xml).is_ok(), "{xml}");
        }
        assert_eq!(
            json_to_xml(&json!([1, 2])).unwrap(),
            "<message><item>1</item><item>2</item></message>"
        );
    }

    #[test]
    fn entities_are_never_expanded() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><a>&lol;</a>"#;
        assert!(matches!(xml_to_json(bomb), Err(BodyError::Xml(_))));
        assert!(
            matches!(xml_to_json("<a>&lol;</a>"), Err(BodyError::Xml(m)) if m.contains("undefined entity"))
        );
        assert_eq!(xml_to_json("<a>&#65;&lt;</a>").unwrap(), json!({"a": "A<"}));
    }
}
