//! The component protocol's stanza namespace, translated at the edge of the component
//! stream, so that one build serves a component link and a client link.
//!
//! Stanzas (`<message/>`, `<presence/>`, `<iq/>`) and the children that inherit their
//! namespace (`<body/>`, `<thread/>`, `<error/>`…) are in `jabber:client` on a client
//! stream and in `jabber:component:accept` on a component stream (XEP-0114). xmpp-parsers
//! picks one of the two at compile time (its `component` feature), for the whole build.
//! This build leaves the feature off, so every stanza type is in `jabber:client`, and the
//! component stream renames the namespace as elements go by: [`FromAccept`] reads,
//! [`ToAccept`] writes. Only the stanza element and its descendants that are in the
//! stanza namespace through an unbroken chain of such parents change: a `<message/>` in
//! `jabber:client` forwarded inside another namespace (XEP-0297) keeps its own, and
//! elements that are not stanzas (the handshake, stream errors) are left alone.
//!
//! The renaming works on the parser's events and the serialiser's items: no tree is
//! built or copied, and `xml:lang` inheritance is kept (the context goes through).

use tokio_xmpp::minidom::rxml::{self, Namespace};
use tokio_xmpp::xmlstream::FallibleStreamElement;
use xso::error::{Error, FromEventsError};
use xso::{AsXml, Context, FromEventsBuilder, FromXml, Item};

/// The stanza namespace of a component stream (XEP-0114).
pub(super) const NS_ACCEPT: &str = "jabber:component:accept";
/// The stanza namespace of a client stream, the one xmpp-parsers' types use here.
pub(super) const NS_CLIENT: &str = "jabber:client";

fn is_stanza(name: &str) -> bool {
    matches!(name, "message" | "presence" | "iq")
}

/// A stream element read from a component stream, its stanzas moved to `jabber:client`.
#[derive(Debug)]
pub(super) struct FromAccept(pub FallibleStreamElement);

impl FromXml for FromAccept {
    type Builder = FromAcceptBuilder;

    fn from_events(
        qname: rxml::QName,
        attrs: rxml::AttrMap,
        ctx: &Context<'_>,
    ) -> Result<Self::Builder, FromEventsError> {
        let renamed = qname.0 == NS_ACCEPT && is_stanza(qname.1.as_str());
        let qname = if renamed { to_client(qname) } else { qname };
        Ok(FromAcceptBuilder {
            inner: FallibleStreamElement::from_events(qname, attrs, ctx)?,
            renamed: vec![renamed],
        })
    }
}

fn to_client((_, name): rxml::QName) -> rxml::QName {
    (Namespace::from_str(NS_CLIENT), name)
}

/// Feeds the element's events to the stream element's own builder, renamed.
pub(super) struct FromAcceptBuilder {
    inner: <FallibleStreamElement as FromXml>::Builder,
    /// For each open element, outermost first: whether it was renamed.
    renamed: Vec<bool>,
}

impl FromEventsBuilder for FromAcceptBuilder {
    type Output = FromAccept;

    fn feed(&mut self, ev: rxml::Event, ctx: &Context<'_>) -> Result<Option<FromAccept>, Error> {
        let ev = match ev {
            rxml::Event::StartElement(m, qname, attrs) => {
                let renamed = self.renamed.last() == Some(&true) && qname.0 == NS_ACCEPT;
                self.renamed.push(renamed);
                let qname = if renamed { to_client(qname) } else { qname };
                rxml::Event::StartElement(m, qname, attrs)
            }
            rxml::Event::EndElement(m) => {
                self.renamed.pop();
                rxml::Event::EndElement(m)
            }
            other => other,
        };
        Ok(self.inner.feed(ev, ctx)?.map(FromAccept))
    }
}

/// Something to write on a component stream: its stanza namespace becomes
/// `jabber:component:accept`.
pub(super) struct ToAccept<'a, T>(pub &'a T);

impl<T: AsXml> AsXml for ToAccept<'_, T> {
    type ItemIter<'x>
        = ToAcceptIter<T::ItemIter<'x>>
    where
        Self: 'x;

    fn as_xml_iter(&self) -> Result<Self::ItemIter<'_>, Error> {
        Ok(ToAcceptIter {
            inner: self.0.as_xml_iter()?,
            renamed: Vec::new(),
        })
    }
}

/// The items of the wrapped value, renamed.
pub(super) struct ToAcceptIter<I> {
    inner: I,
    /// As in [`FromAcceptBuilder`].
    renamed: Vec<bool>,
}

impl<'x, I: Iterator<Item = Result<Item<'x>, Error>>> Iterator for ToAcceptIter<I> {
    type Item = Result<Item<'x>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.inner.next()? {
            Ok(Item::ElementHeadStart(ns, name)) => {
                let renamed = ns == NS_CLIENT
                    && match self.renamed.last() {
                        None => is_stanza(name.as_str()),
                        Some(parent) => *parent,
                    };
                self.renamed.push(renamed);
                let ns = if renamed {
                    Namespace::from_str(NS_ACCEPT)
                } else {
                    ns
                };
                Item::ElementHeadStart(ns, name)
            }
            Ok(Item::ElementFoot) => {
                self.renamed.pop();
                Item::ElementFoot
            }
            other => return Some(other),
        };
        Some(Ok(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::Stanza;
    use tokio_xmpp::xmlstream::XmppStreamElement;

    fn read(xml: &str) -> XmppStreamElement {
        match xso::from_bytes::<FromAccept>(xml.as_bytes()).unwrap().0 {
            FallibleStreamElement::Ok(e) => e,
            FallibleStreamElement::Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_component_message_reads_as_a_client_message_with_its_body_and_language() {
        let e = read(
            "<message xmlns='jabber:component:accept' xml:lang='en' from='a@l/r' to='q@b' type='chat'>\
             <body>hi</body><thread>t1</thread></message>",
        );
        let XmppStreamElement::Stanza(Stanza::Message(m)) = e else {
            panic!("not a message: {e:?}");
        };
        assert_eq!(m.bodies.get("en").map(|b| b.as_str()), Some("hi"));
        assert_eq!(m.thread.map(|t| t.id), Some("t1".to_owned()));
    }

    #[test]
    fn non_stanzas_and_foreign_children_keep_their_namespace() {
        let e = read("<handshake xmlns='jabber:component:accept'/>");
        assert!(
            matches!(e, XmppStreamElement::ComponentHandshake(_)),
            "{e:?}"
        );
        // A forwarded client message inside a foreign element stays jabber:client, and
        // an element of the accept namespace below a foreign one is not renamed either.
        let e = read(
            "<message xmlns='jabber:component:accept' from='a@l' to='q@b'>\
             <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'><body>x</body></message>\
             <odd xmlns='jabber:component:accept'/></forwarded></message>",
        );
        let XmppStreamElement::Stanza(Stanza::Message(m)) = e else {
            panic!("not a message: {e:?}");
        };
        let fwd = &m.payloads[0];
        let inner = fwd.get_child("message", NS_CLIENT).unwrap();
        assert_eq!(
            inner.get_child("body", NS_CLIENT).map(|b| b.text()),
            Some("x".into())
        );
        assert!(fwd.get_child("odd", NS_ACCEPT).is_some());
    }

    #[test]
    fn a_client_stanza_is_written_in_the_accept_namespace_and_reads_back() {
        let xml = "<message xmlns='jabber:client' from='q@b' to='a@l/r' type='chat' id='1'>\
                   <body>yo</body><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded></message>";
        let Ok(s) = xso::from_bytes::<Stanza>(xml.as_bytes()) else {
            panic!("cannot parse");
        };
        let out = String::from_utf8(xso::to_vec(&ToAccept(&s)).unwrap()).unwrap();
        assert!(
            out.starts_with("<message xmlns='jabber:component:accept'"),
            "{out}"
        );
        assert!(out.contains("<body>yo</body>"), "{out}");
        assert!(out.contains("<message xmlns='jabber:client'"), "{out}");
        let XmppStreamElement::Stanza(back) = read(&out) else {
            panic!("{out}");
        };
        assert_eq!(back, s);
    }
}
