//! XMPP `<message/>` ↔ canonical message. The table is in `docs/mapping.md#xmpp`; keep
//! both in step.
//!
//! Inbound: the body (whatever its `xml:lang`; Prosody stamps `en`) is the payload as
//! UTF-8 text; a JSON container (XEP-0335) makes an `application/json` body instead;
//! SHIM headers (XEP-0131) become headers; a delay (XEP-0203) sets the timestamp; the
//! stanza id becomes the message id; the thread (or else the id) the correlation id;
//! the sender's full JID the reply address. Extension elements the link does not map
//! are kept, serialized, in `x-xmpp-payloads`, and put back when the message leaves
//! through an XMPP link, so XMPP → XMPP loses nothing.
//!
//! Outbound: a body that is not UTF-8 is sent base64-encoded with the SHIM header
//! `Content-Transfer-Encoding: base64`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Lang, Message as Stanza, MessageType, Thread};

use crate::core::{Message, MessageId, Origin};

pub const NS_SHIM: &str = "http://jabber.org/protocol/shim";
pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_JSON: &str = "urn:xmpp:json:0";
pub const NS_SID: &str = "urn:xmpp:sid:0";

/// Stanza type (`chat`, `normal`, `headline`, `groupchat`).
pub const TYPE_HEADER: &str = "x-xmpp-type";
pub const SUBJECT_HEADER: &str = "x-xmpp-subject";
pub const THREAD_HEADER: &str = "x-xmpp-thread";
/// Sender's full JID (informational; the reply address is what replies use).
pub const FROM_HEADER: &str = "x-xmpp-from";
/// The JID the sender wrote to.
pub const TO_HEADER: &str = "x-xmpp-to";
/// Extension elements kept verbatim, concatenated XML.
pub const PAYLOADS_HEADER: &str = "x-xmpp-payloads";
/// The text body when a JSON container made the payload.
pub const BODY_HEADER: &str = "x-xmpp-body";
/// Marks a base64-encoded binary body (SHIM header name of XEP-0131).
pub const ENCODING_HEADER: &str = "Content-Transfer-Encoding";

/// An incoming chat message → canonical. `reply_to` is chosen by the caller (the
/// link's reply address for the sender).
pub fn from_stanza(s: &Stanza) -> Message {
    let mut m = match json_payload(s) {
        Some(json) => {
            let mut m = Message::new(Bytes::from(json)).with_content_type("application/json");
            if let Some((_, text)) = s.get_best_body(vec![]) {
                m.headers.set(BODY_HEADER, text.as_str());
            }
            m
        }
        None => {
            let text = s
                .get_best_body(vec![])
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            Message::new(Bytes::from(text)).with_content_type("text/plain; charset=utf-8")
        }
    };
    let from = s.from.as_ref().map(Jid::to_string).unwrap_or_default();
    m.origin = Origin::new("xmpp", &from);
    // An IM user expects a message the router accepted (and acknowledged with a
    // receipt) to survive a restart when it waits in a durable queue.
    m.persistent = true;
    // The sender's own id (XEP-0359 origin-id) outlives the stanza id, which servers
    // may rewrite; prefer it.
    let origin_id = s
        .payloads
        .iter()
        .find(|p| p.is("origin-id", NS_SID))
        .and_then(|p| p.attr("id"));
    if let Some(id) = origin_id.or(s.id.as_ref().map(|i| i.0.as_str())) {
        m.id = MessageId::given(id);
    }
    let mut kept = String::new();
    for p in &s.payloads {
        if p.is("headers", NS_SHIM) {
            for h in p.children().filter(|c| c.is("header", NS_SHIM)) {
                if let Some(name) = h.attr("name") {
                    m.headers.append(name, h.text());
                }
            }
        } else if p.is("delay", NS_DELAY) {
            if let Some(ts) = p
                .attr("stamp")
                .and_then(|t| t.parse::<xmpp_parsers::date::DateTime>().ok())
                .and_then(|d| u64::try_from(d.0.timestamp_millis()).ok())
            {
                m.timestamp = UNIX_EPOCH + std::time::Duration::from_millis(ts);
            }
        } else if p.is("request", NS_RECEIPTS) || p.is("json", NS_JSON) {
            // Receipts are answered by the link; the JSON container is the body.
        } else {
            kept.push_str(&String::from(p));
        }
    }
    if !kept.is_empty() {
        m.headers.set(PAYLOADS_HEADER, kept);
    }
    // A binary body another Switchboard (or anyone following the same convention) sent.
    if m.headers.get(ENCODING_HEADER) == Some("base64")
        && let Ok(raw) = B64.decode(m.body.trim_ascii())
    {
        m.body = Bytes::from(raw);
        m.content_type = None;
        m.headers.remove(ENCODING_HEADER);
    }
    m.headers.set(TYPE_HEADER, type_name(&s.type_));
    if let Some((_, subject)) = s.get_best_subject(vec![]) {
        m.headers.set(SUBJECT_HEADER, subject.as_str());
    }
    if let Some(t) = &s.thread {
        m.headers.set(THREAD_HEADER, t.id.as_str());
    }
    m.correlation_id = s
        .thread
        .as_ref()
        .map(|t| t.id.clone())
        .or_else(|| s.id.as_ref().map(|i| i.0.clone()));
    m.headers.set(FROM_HEADER, from);
    if let Some(to) = &s.to {
        m.headers.set(TO_HEADER, to.to_string());
    }
    m
}

fn json_payload(s: &Stanza) -> Option<String> {
    s.payloads
        .iter()
        .find(|p| p.is("json", NS_JSON))
        .map(Element::text)
}

pub fn type_name(t: &MessageType) -> &'static str {
    match t {
        MessageType::Chat => "chat",
        MessageType::Normal => "normal",
        MessageType::Headline => "headline",
        MessageType::Groupchat => "groupchat",
        MessageType::Error => "error",
    }
}

pub fn parse_type(t: &str) -> MessageType {
    match t {
        "normal" => MessageType::Normal,
        "headline" => MessageType::Headline,
        "groupchat" => MessageType::Groupchat,
        _ => MessageType::Chat,
    }
}

/// Why a canonical message cannot be sent as a stanza.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid JID `{0}`: {1}")]
    Jid(String, String),
    #[error("`{PAYLOADS_HEADER}` is not well-formed XML: {0}")]
    Payloads(String),
}

/// Canonical → `<message/>` from `from` to `to`. Headers the link maps (and any named
/// in `skip`) are not sent as SHIM headers.
pub fn to_stanza(
    m: &Message,
    to: &str,
    from: &str,
    kind: &str,
    skip: impl Fn(&str) -> bool,
) -> Result<Stanza, ConvertError> {
    let jid = |s: &str| {
        s.parse::<Jid>()
            .map_err(|e| ConvertError::Jid(s.to_owned(), e.to_string()))
    };
    let mut s = Stanza::new_with_type(parse_type(kind), Some(jid(to)?));
    s.from = Some(jid(from)?);
    s.id = Some(xmpp_parsers::message::Id(m.id.to_string()));
    let mut shim: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let is_json = m.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
    });
    match std::str::from_utf8(&m.body) {
        Ok(text) if is_json => {
            let body = m.headers.get(BODY_HEADER).unwrap_or(text);
            s.bodies.insert(Lang::default(), body.to_owned());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
                s.payloads.push(
                    Element::builder("json", NS_JSON)
                        .append(v.to_string())
                        .build(),
                );
            }
        }
        Ok(text) => {
            s.bodies.insert(Lang::default(), text.to_owned());
        }
        Err(_) => {
            s.bodies.insert(Lang::default(), B64.encode(&m.body));
            shim.entry(ENCODING_HEADER.into())
                .or_default()
                .push("base64".into());
        }
    }
    if let Some(subject) = m.headers.get(SUBJECT_HEADER) {
        s.subjects.insert(Lang::default(), subject.to_owned());
    }
    let thread = m
        .headers
        .get(THREAD_HEADER)
        .map(str::to_owned)
        .or_else(|| m.correlation_id.clone());
    if let Some(t) = thread {
        s.thread = Some(Thread {
            parent: None,
            id: t,
        });
    }
    // A message that waited (offline push, a reconnect, another protocol's timestamp)
    // says when it was sent (XEP-0203), unless it already carries a delay of its own.
    let age = SystemTime::now()
        .duration_since(m.timestamp)
        .unwrap_or_default();
    let kept_delay = m
        .headers
        .get(PAYLOADS_HEADER)
        .is_some_and(|p| p.contains(NS_DELAY));
    if age >= DELAY_AFTER && !kept_delay {
        let secs = m
            .timestamp
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        s.payloads.push(
            Element::builder("delay", NS_DELAY)
                .attr(xml_ncname!("stamp").into(), rfc3339(secs))
                .build(),
        );
    }
    if let Some(p) = m.headers.get(PAYLOADS_HEADER) {
        // The payloads were one or more sibling elements: parse them inside a wrapper.
        let wrapped: Element = format!("<w xmlns='urn:switchboard:payloads'>{p}</w>")
            .parse()
            .map_err(|e: tokio_xmpp::minidom::Error| ConvertError::Payloads(e.to_string()))?;
        s.payloads.extend(wrapped.children().cloned());
    }
    for (k, v) in m.headers.iter() {
        if k.starts_with("x-xmpp-") || skip(k) {
            continue;
        }
        shim.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    if !shim.is_empty() {
        let mut headers = Element::builder("headers", NS_SHIM);
        for (k, vs) in shim {
            for v in vs {
                headers = headers.append(
                    Element::builder("header", NS_SHIM)
                        .attr(xml_ncname!("name").into(), k.clone())
                        .append(v)
                        .build(),
                );
            }
        }
        s.payloads.push(headers.build());
    }
    Ok(s)
}

/// Messages older than this when sent get a `<delay/>`.
const DELAY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (XEP-0082).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A receipt (XEP-0184) for a message that asked for one.
pub fn wants_receipt(s: &Stanza) -> bool {
    s.id.is_some() && s.payloads.iter().any(|p| p.is("request", NS_RECEIPTS))
}

pub fn receipt(s: &Stanza) -> Option<Stanza> {
    let id = s.id.as_ref()?;
    let mut r = Stanza::new_with_type(s.type_.clone(), s.from.clone());
    r.from = s.to.clone();
    r.payloads.push(
        Element::builder("received", NS_RECEIPTS)
            .attr(xml_ncname!("id").into(), id.0.clone())
            .build(),
    );
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(xml: &str) -> Stanza {
        let e: Element = xml.parse().unwrap();
        Stanza::try_from(e).unwrap()
    }

    #[test]
    fn chat_with_extensions_round_trips() {
        let s = stanza(
            "<message xmlns='jabber:client' from='alice@localhost/phone' to='orders@bridge.localhost' id='m1' type='chat'>\
               <body xml:lang='en'>status 42</body><subject>s</subject><thread>t-9</thread>\
               <request xmlns='urn:xmpp:receipts'/>\
               <headers xmlns='http://jabber.org/protocol/shim'><header name='priority-class'>high</header><header name='k'>1</header><header name='k'>2</header></headers>\
               <delay xmlns='urn:xmpp:delay' stamp='2024-01-02T03:04:05Z'/>\
               <active xmlns='http://jabber.org/protocol/chatstates'/>\
               <origin-id xmlns='urn:xmpp:sid:0' id='oid-1'/>\
             </message>",
        );
        assert!(wants_receipt(&s));
        let m = from_stanza(&s);
        assert_eq!(&m.body[..], b"status 42");
        assert_eq!(m.id.to_string(), "oid-1", "origin-id preferred");
        assert_eq!(m.correlation_id.as_deref(), Some("t-9"));
        assert_eq!(m.headers.get("priority-class"), Some("high"));
        assert_eq!(m.headers.get_all("k").collect::<Vec<_>>(), vec!["1", "2"]);
        assert_eq!(m.headers.get(SUBJECT_HEADER), Some("s"));
        assert_eq!(m.headers.get(FROM_HEADER), Some("alice@localhost/phone"));
        assert_eq!(
            m.timestamp.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_704_164_645
        );
        assert!(
            m.headers
                .get(PAYLOADS_HEADER)
                .unwrap()
                .contains("chatstates")
        );
        let back = to_stanza(
            &m,
            "bob@localhost",
            "orders@bridge.localhost",
            "chat",
            |_| false,
        )
        .unwrap();
        assert_eq!(back.get_best_body(vec![]).unwrap().1, "status 42");
        assert_eq!(back.thread.as_ref().unwrap().id, "t-9");
        assert_eq!(back.get_best_subject(vec![]).unwrap().1, "s");
        assert!(
            back.payloads
                .iter()
                .any(|p| p.is("active", "http://jabber.org/protocol/chatstates"))
        );
        let again = from_stanza(&back);
        assert_eq!(
            again.headers.get_all("k").collect::<Vec<_>>(),
            vec!["1", "2"]
        );
        assert_eq!(again.headers.get("priority-class"), Some("high"));
        assert_eq!(
            again.headers.get(PAYLOADS_HEADER),
            m.headers.get(PAYLOADS_HEADER)
        );
    }

    /// A SHIM `traceparent` is the message's `traceparent`, and the re-parented one goes
    /// back out as a SHIM header (the router re-parents between the two).
    #[test]
    fn a_shim_traceparent_crosses_both_ways() {
        use crate::translate::trace::{self, TraceParent};
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let s = stanza(&format!(
            "<message xmlns='jabber:client' from='alice@localhost/phone' to='orders@bridge.localhost' type='chat'>\
               <body>hi</body>\
               <headers xmlns='http://jabber.org/protocol/shim'><header name='traceparent'>{tp}</header><header name='tracestate'>v=1</header></headers>\
             </message>"
        ));
        let mut m = from_stanza(&s);
        assert_eq!(m.headers.get("traceparent"), Some(tp));
        let t = trace::reparent(&mut m.headers, false).unwrap();
        let back = to_stanza(
            &m,
            "bob@localhost",
            "orders@bridge.localhost",
            "chat",
            |_| false,
        )
        .unwrap();
        let again = from_stanza(&back);
        let out = TraceParent::parse(again.headers.get("traceparent").unwrap()).unwrap();
        assert_eq!(Some(trace::TraceId(out.trace_id)), t.trace_id());
        assert_eq!(Some(trace::SpanId(out.parent_id)), t.span_id());
        assert_eq!(again.headers.get("tracestate"), Some("v=1"));
    }

    #[test]
    fn json_and_binary_bodies() {
        let s = stanza(
            "<message xmlns='jabber:client' from='a@l/r' to='x@b'><body>fallback</body><json xmlns='urn:xmpp:json:0'>{\"n\":1}</json></message>",
        );
        let m = from_stanza(&s);
        assert_eq!(&m.body[..], br#"{"n":1}"#);
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        let back = to_stanza(&m, "a@l/r", "x@b", "chat", |_| false).unwrap();
        assert_eq!(back.get_best_body(vec![]).unwrap().1, "fallback");
        assert!(
            back.payloads
                .iter()
                .any(|p| p.is("json", NS_JSON) && p.text() == r#"{"n":1}"#)
        );

        let bin = Message::new(vec![0u8, 255, 1]);
        let s = to_stanza(&bin, "a@l", "x@b", "normal", |_| false).unwrap();
        assert_eq!(s.get_best_body(vec![]).unwrap().1, "AP8B");
        assert_eq!(s.type_, MessageType::Normal);
        let shim = s
            .payloads
            .iter()
            .find(|p| p.is("headers", NS_SHIM))
            .unwrap();
        assert!(String::from(shim).contains("base64"));
        let back = from_stanza(&s);
        assert_eq!(&back.body[..], &[0u8, 255, 1]);
        assert_eq!(back.headers.get(ENCODING_HEADER), None);
    }

    #[test]
    fn old_messages_carry_a_delay_both_ways() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_164_645), "2024-01-02T03:04:05Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let mut m = Message::new("late");
        m.timestamp = UNIX_EPOCH + std::time::Duration::from_secs(1_704_164_645);
        let s = to_stanza(&m, "a@l", "x@b", "chat", |_| false).unwrap();
        let d = s.payloads.iter().find(|p| p.is("delay", NS_DELAY)).unwrap();
        assert_eq!(d.attr("stamp"), Some("2024-01-02T03:04:05Z"));
        assert_eq!(from_stanza(&s).timestamp, m.timestamp);
        let fresh = to_stanza(&Message::new("now"), "a@l", "x@b", "chat", |_| false).unwrap();
        assert!(!fresh.payloads.iter().any(|p| p.is("delay", NS_DELAY)));
    }

    #[test]
    fn bad_jids_and_payloads_are_errors() {
        let m = Message::new("x");
        assert!(to_stanza(&m, "not a jid@@", "x@b", "chat", |_| false).is_err());
        let m = Message::new("x").with_header(PAYLOADS_HEADER, "<unclosed>");
        assert!(to_stanza(&m, "a@l", "x@b", "chat", |_| false).is_err());
    }

    #[test]
    fn entities_are_never_expanded() {
        // A DTD with an entity: the parser refuses it rather than expanding anything.
        let xml = "<!DOCTYPE m [<!ENTITY x 'boom'>]><message xmlns='jabber:client'><body>&x;</body></message>";
        assert!(xml.parse::<Element>().is_err());
        let xml = "<message xmlns='jabber:client'><body>&undefined;</body></message>";
        assert!(xml.parse::<Element>().is_err());
    }
}
