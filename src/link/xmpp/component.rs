//! The component connection (XEP-0114), on tokio-xmpp's XML stream rather than its
//! `Component` type. `Component` reports every read problem — a `<stream:error>` with
//! its condition, a stanza it cannot parse, a quiet minute — as the plain end of the
//! stream. Here each is told apart: stream errors are logged with their condition, a
//! stanza that does not parse is skipped (the XML stream itself stays in sync), and
//! a quiet stream gets a ping instead of being dropped.
//!
//! Stanzas cross this stream renamed between `jabber:client`, the namespace of this
//! build's stanza types, and the component's `jabber:component:accept` ([`super::accept_ns`]).

use std::borrow::Cow;

use futures::{SinkExt, StreamExt};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_xmpp::Stanza;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, ReadError, StreamHeader, Timeouts, XmlStream, XmppStreamElement,
    initiate_stream,
};
use xmpp_parsers::component::Handshake;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;

use super::accept_ns::{FromAccept, NS_ACCEPT, ToAccept};
use super::conn::Incoming;
use super::header_version::WithVersion;
use super::iq::NS_PING;

/// One connected, authenticated component stream.
pub(super) struct ComponentConn {
    inner: XmlStream<BufStream<WithVersion<TcpStream>>, FromAccept>,
    domain: Option<Jid>,
    /// Keepalive pings sent, for their ids.
    pings: u64,
}

/// Connects to `server` (IP:PORT), opens a stream for `domain` and authenticates with
/// the shared secret (the handshake of XEP-0114 §3).
pub(super) async fn connect(
    server: &str,
    domain: &str,
    secret: &str,
) -> Result<ComponentConn, String> {
    let tcp = TcpStream::connect(server)
        .await
        .map_err(|e| format!("cannot open a stream: {e}"))?;
    let header = StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: None,
        id: None,
    };
    let io = BufStream::new(WithVersion::new(tcp));
    let mut pending = initiate_stream(io, NS_ACCEPT, header, Timeouts::tight())
        .await
        .map_err(|e| format!("cannot open a stream: {e}"))?;
    let header = pending.take_header();
    let mut inner: XmlStream<_, FromAccept> = pending.skip_features();
    let stream_id = header
        .id
        .ok_or("the server's stream header carries no id")?
        .into_owned();
    inner
        .send(&XmppStreamElement::ComponentHandshake(
            Handshake::from_stream_id_and_password(stream_id, secret),
        ))
        .await
        .map_err(|e| format!("cannot send the handshake: {e}"))?;
    loop {
        match inner.next().await.map(|r| r.map(|e| e.0)) {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::ComponentHandshake(_)))) => {
                return Ok(ComponentConn {
                    inner,
                    domain: domain.parse().ok(),
                    pings: 0,
                });
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                return Err(format!("the server refused the component: {}", e.0));
            }
            Some(Ok(_)) => return Err("unexpected element during the handshake".into()),
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(e)) => return Err(format!("handshake: {e}")),
            None => return Err("the server closed the stream during the handshake".into()),
        }
    }
}

impl ComponentConn {
    pub async fn send(&mut self, stanza: Stanza) -> Result<(), tokio_xmpp::Error> {
        self.inner
            .send(&ToAccept(&stanza))
            .await
            .map_err(tokio_xmpp::Error::from)
    }

    /// The next thing from the server. Cancel-safe: it only polls the stream.
    pub async fn next(&mut self) -> Incoming {
        match self.inner.next().await.map(|r| r.map(|e| e.0)) {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(s)))) => {
                Incoming::Stanza(Box::new(s))
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                Incoming::Ended(format!("stream error from the server: {}", e.0))
            }
            Some(Ok(FallibleStreamElement::Ok(_))) => {
                Incoming::Skipped("an element that is not a stanza".into())
            }
            Some(Ok(FallibleStreamElement::Err(e))) => Incoming::Skipped(e.to_string()),
            Some(Err(ReadError::SoftTimeout)) => Incoming::Quiet,
            Some(Err(ReadError::ParseError(e))) => Incoming::Skipped(e.to_string()),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                Incoming::Ended("the server closed the stream".into())
            }
            Some(Err(ReadError::HardError(e))) => Incoming::Ended(format!("read failed: {e}")),
        }
    }

    /// Something for the server to answer on a quiet stream: a ping to our own domain
    /// comes back through the server.
    pub async fn keepalive(&mut self) -> Result<(), tokio_xmpp::Error> {
        self.pings += 1;
        let ping = Iq::Get {
            from: self.domain.clone(),
            to: self.domain.clone(),
            id: format!("sb-keepalive-{}", self.pings),
            payload: Element::builder("ping", NS_PING).build(),
        };
        self.send(Stanza::Iq(ping)).await
    }

    /// Ends the stream politely.
    pub async fn close(&mut self) {
        let _ = self.inner.shutdown().await;
    }
}
