//! The client connection: an ordinary account's stream (RFC 6120), on tokio-xmpp's XML
//! stream and SASL, with the TLS, resource binding and stream management (XEP-0198)
//! done here.
//!
//! Why not tokio-xmpp's `Client` (or its `StanzaStream`, which does XEP-0198): it
//! reconnects on its own, with its own delays and without saying why an attempt
//! failed; it tells that a stanza was acknowledged only through a token per stanza, and
//! when it cannot resume it drops the unacknowledged ones, whose tokens then look the
//! same as those of a server without stream management. The link needs the opposite:
//! its supervisor reconnects (backoff, `GET /links`), and each stanza carries what to
//! settle in the core once the server has it — so the acknowledgement state is kept
//! here ([`Sm`]), and survives a dropped connection to be resumed or handed back.
//! tokio-xmpp's connectors are not used either: they want its DNS feature and trust
//! only fixed root stores, while this link resolves names through the system and can
//! trust the certificates of a `ca_file` ([`super::client_tls`]).

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::AsyncReadAndWrite;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, ReadError, StreamElementError, StreamHeader, Timeouts, XmppStream,
    XmppStreamElement, initiate_stream,
};
use xmpp_parsers::bind::{BindQuery, BindResponse};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::sm::{self, Nonza};
use xmpp_parsers::starttls;
use xmpp_parsers::stream_features::StreamFeatures;

use super::client_settings::{ClientSettings, TlsMode};
use super::conn::{Incoming, Settle};
use super::sm::Sm;

const NS_CLIENT: &str = "jabber:client";

/// How long the TCP connection, TLS and the login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// SASL mechanisms the link uses, best first (tokio-xmpp picks in this order among
/// those the server offers). Always inside TLS; never ANONYMOUS.
const MECHANISMS: [&str; 3] = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"];

type Stream = XmppStream<Box<dyn AsyncReadAndWrite + Send>>;

/// What the link's stream management carries from one connection to the next.
pub(super) type SmState = Sm<Option<Settle>>;

/// A stream the server may let the next connection resume: its stream management
/// state, and the JID it was bound to (a resumed stream keeps it).
pub(super) struct Resumable {
    sm: SmState,
    jid: FullJid,
}

/// One logged-in client stream.
pub(super) struct ClientConn {
    stream: Stream,
    /// The full JID the server bound.
    pub jid: FullJid,
    /// Stream management, when the server enabled it.
    sm: Option<SmState>,
    /// Whether this stream resumed the previous one (its session goes on).
    pub resumed: bool,
    /// An `<r/>` from the server awaits our `<a/>`.
    ack_owed: bool,
    /// Our `<r/>` is to be sent (acknowledgements are owed for what was sent).
    request_owed: bool,
    /// Stanzas that arrived while the stream was being set up, before stream
    /// management counted (handed out first, not counted).
    early: VecDeque<Stanza>,
    /// Pings sent, for their ids.
    pings: u64,
}

/// Logs in. `carried` is the stream management state of the previous stream: when the
/// server resumes it, it moves into the new stream; when the server refuses, what it
/// held goes to `settled` (acknowledged or not) and a new session is bound. On a
/// connection failure before the server answered, it stays for the next attempt.
pub(super) async fn connect(
    c: &ClientSettings,
    carried: &mut Option<Resumable>,
    settled: &mut Vec<(Settle, bool)>,
) -> Result<ClientConn, String> {
    let (features, mut stream) = tokio::time::timeout(LOGIN_TIMEOUT, login(c))
        .await
        .map_err(|_| format!("no login within {}s", LOGIN_TIMEOUT.as_secs()))??;
    let mut early = VecDeque::new();
    if let Some(previous) = carried.as_ref()
        && let Some(resume) = previous.sm.resume()
        && features.stream_management.is_some()
    {
        send(&mut stream, &XmppStreamElement::SM(Nonza::Resume(resume))).await?;
        match sm_answer(&mut stream, &mut early).await? {
            Nonza::Resumed(r) => {
                let Resumable { mut sm, jid } = carried.take().expect("checked above");
                let done = sm.acked(r.h).map_err(|e| format!("resumption: {e}"))?;
                settled.extend(done.into_iter().flatten().map(|s| (s, true)));
                // What the server did not get, again, in order, before anything new. If
                // this connection fails meanwhile, the stream can still be resumed.
                if let Err(e) = resend(&mut stream, &mut sm).await {
                    *carried = Some(Resumable { sm, jid });
                    return Err(format!("send failed: {e}"));
                }
                tracing::info!(
                    acknowledged = r.h,
                    sent_again = sm.pending(),
                    "XMPP stream resumed (XEP-0198)"
                );
                return Ok(ClientConn::new(stream, jid, Some(sm), true, early));
            }
            Nonza::Failed(f) => {
                let mut sm = carried.take().expect("checked above").sm;
                if let Some(h) = f.h {
                    let done = sm.acked(h).unwrap_or_default();
                    settled.extend(done.into_iter().flatten().map(|s| (s, true)));
                }
                let lost = sm.pending();
                settled.extend(
                    sm.into_unsettled()
                        .into_iter()
                        .flatten()
                        .map(|s| (s, false)),
                );
                tracing::warn!(
                    condition = ?f.error,
                    sent_again_later = lost,
                    "the server cannot resume the XMPP stream: new session; what it had not acknowledged is sent again"
                );
            }
            other => return Err(format!("unexpected answer to <resume/>: {other:?}")),
        }
    } else if let Some(previous) = carried.take() {
        // Not resumable (or the server no longer offers stream management).
        settled.extend(
            previous
                .sm
                .into_unsettled()
                .into_iter()
                .flatten()
                .map(|s| (s, false)),
        );
    }
    let jid = bind(&mut stream, &c.resource, &mut early).await?;
    let sm = if features.stream_management.is_some() {
        let enable = sm::Enable::new().with_resume();
        send(&mut stream, &XmppStreamElement::SM(Nonza::Enable(enable))).await?;
        match sm_answer(&mut stream, &mut early).await? {
            Nonza::Enabled(e) => {
                if !e.resume || e.id.is_none() {
                    tracing::warn!(
                        "the server enables XEP-0198 without resumption: a dropped connection loses what it had not acknowledged, which is sent again on the next session"
                    );
                }
                Some(Sm::enabled(&e))
            }
            Nonza::Failed(f) => {
                tracing::warn!(condition = ?f.error, "the server refused XEP-0198: no acknowledgements on this stream");
                None
            }
            other => return Err(format!("unexpected answer to <enable/>: {other:?}")),
        }
    } else {
        tracing::warn!(
            "the server does not offer XEP-0198 stream management: no acknowledgements on this stream (at most once, as a component)"
        );
        None
    };
    Ok(ClientConn::new(stream, jid, sm, false, early))
}

/// Sends the unacknowledged stanzas of a resumed stream again, with a request for their
/// acknowledgement.
async fn resend(stream: &mut Stream, sm: &mut SmState) -> Result<(), std::io::Error> {
    // A request made on the dead connection will get no answer.
    sm.requested = false;
    for s in sm.unacked() {
        stream.feed(s).await?;
    }
    if sm.pending() > 0 {
        stream
            .feed(&XmppStreamElement::SM(Nonza::Req(sm::R)))
            .await?;
        sm.requested = true;
    }
    <Stream as SinkExt<&Stanza>>::flush(stream).await
}

/// TCP, TLS and SASL: the stream after SASL's restart, and its features.
async fn login(c: &ClientSettings) -> Result<(StreamFeatures, Stream), String> {
    let domain = c.jid.domain().as_str();
    let tcp = TcpStream::connect(&c.server)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", c.server))?;
    let tcp = match c.tls {
        TlsMode::Direct => tcp,
        TlsMode::StartTls => starttls(tcp, domain).await?,
    };
    let name = rustls::pki_types::ServerName::try_from(domain.to_owned())
        .map_err(|e| format!("`{domain}` cannot be a TLS server name: {e}"))?;
    let tls = TlsConnector::from(c.tls_config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let io: Box<dyn AsyncReadAndWrite + Send> = Box::new(BufStream::new(tls));
    let (features, stream) = open(io, domain).await?;
    let offered: BTreeSet<String> = features
        .sasl_mechanisms
        .iter()
        .filter(|m| MECHANISMS.contains(&m.as_str()))
        .cloned()
        .collect();
    if offered.is_empty() {
        return Err(format!(
            "no SASL mechanism in common: the server offers {:?}, the link uses {MECHANISMS:?}",
            features.sasl_mechanisms
        ));
    }
    let creds = Credentials::default()
        .with_username(c.jid.node().map(|n| n.as_str()).unwrap_or_default())
        .with_password(c.password.clone())
        .with_channel_binding(ChannelBinding::None);
    let restarted = tokio_xmpp::client_login(stream, offered, creds)
        .await
        .map_err(|e| format!("login refused: {e}"))?;
    let pending = restarted
        .send_header(header(domain))
        .await
        .map_err(|e| format!("stream restart after login: {e}"))?;
    pending
        .recv_features()
        .await
        .map_err(|e| format!("stream restart after login: {e}"))
}

fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: None,
        id: None,
    }
}

/// Opens a client stream on `io` and reads the server's features.
async fn open<Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin>(
    io: Io,
    domain: &str,
) -> Result<(StreamFeatures, XmppStream<Io>), String> {
    let pending = initiate_stream(io, NS_CLIENT, header(domain), Timeouts::tight())
        .await
        .map_err(|e| format!("cannot open a stream: {e}"))?;
    pending
        .recv_features()
        .await
        .map_err(|e| format!("cannot open a stream: {e}"))
}

/// Upgrades a plain connection with `<starttls/>` (RFC 6120 §5); refuses a server that
/// does not offer it.
async fn starttls(tcp: TcpStream, domain: &str) -> Result<TcpStream, String> {
    let (features, mut stream) = open(BufStream::new(tcp), domain).await?;
    if !features.can_starttls() {
        return Err(
            "the server does not offer STARTTLS (set `tls: direct` if it takes TLS on connect)"
                .into(),
        );
    }
    let request = XmppStreamElement::Starttls(starttls::Nonza::Request(starttls::Request));
    stream
        .send(&request)
        .await
        .map_err(|e| format!("STARTTLS: {e}"))?;
    loop {
        match stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Starttls(
                starttls::Nonza::Proceed(_),
            )))) => break,
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Starttls(_)))) => {
                return Err("the server refused STARTTLS".into());
            }
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Ok(other)) => return Err(format!("STARTTLS: unexpected {other:?}")),
            Some(Err(e)) => return Err(format!("STARTTLS: {e}")),
            None => return Err("STARTTLS: the server closed the connection".into()),
        }
    }
    Ok(stream.into_inner().into_inner())
}

async fn send(stream: &mut Stream, e: &XmppStreamElement) -> Result<(), String> {
    stream
        .send(e)
        .await
        .map_err(|e| format!("send failed: {e}"))
}

/// Binds the resource (RFC 6120 §7); returns the full JID the server chose.
async fn bind(
    stream: &mut Stream,
    resource: &str,
    early: &mut VecDeque<Stanza>,
) -> Result<FullJid, String> {
    const ID: &str = "sb-bind";
    let iq = Iq::from_set(ID, BindQuery::new(Some(resource.to_owned())));
    send(stream, &XmppStreamElement::Stanza(iq.into())).await?;
    loop {
        match read(stream).await? {
            XmppStreamElement::Stanza(Stanza::Iq(Iq::Result {
                id,
                payload: Some(p),
                ..
            })) if id == ID => {
                let bound = BindResponse::try_from(p).map_err(|e| format!("bind: {e}"))?;
                return Ok(bound.into());
            }
            XmppStreamElement::Stanza(Stanza::Iq(Iq::Error { id, error, .. })) if id == ID => {
                return Err(format!(
                    "the server refused to bind resource `{resource}`: {:?}",
                    error.defined_condition
                ));
            }
            XmppStreamElement::Stanza(s) => early.push_back(s),
            other => return Err(format!("bind: unexpected {other:?}")),
        }
    }
}

/// The server's answer to `<enable/>` or `<resume/>` (stanzas before it are kept).
async fn sm_answer(stream: &mut Stream, early: &mut VecDeque<Stanza>) -> Result<Nonza, String> {
    loop {
        match read(stream).await? {
            XmppStreamElement::SM(n) => return Ok(n),
            XmppStreamElement::Stanza(s) => early.push_back(s),
            other => return Err(format!("stream management: unexpected {other:?}")),
        }
    }
}

/// The next stream element while the stream is being set up.
async fn read(stream: &mut Stream) -> Result<XmppStreamElement, String> {
    loop {
        match stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                return Err(format!("the server ended the stream: {}", e.0));
            }
            Some(Ok(FallibleStreamElement::Ok(e))) => return Ok(e),
            // xmpp-parsers 0.23 wants an `h` on <failed/>, which XEP-0198 makes optional
            // and Prosody leaves out when it has no session to resume: still a refusal.
            Some(Ok(FallibleStreamElement::Err(StreamElementError::InvalidNonza {
                qname,
                ..
            }))) if qname.0 == xmpp_parsers::ns::SM && qname.1 == "failed" => {
                let failed = sm::Failed {
                    h: None,
                    error: None,
                };
                return Ok(XmppStreamElement::SM(Nonza::Failed(failed)));
            }
            Some(Ok(FallibleStreamElement::Err(e))) => {
                tracing::warn!(error = %e, "skipped an element the server sent that does not parse");
            }
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(e)) => return Err(format!("read failed: {e}")),
            None => return Err("the server closed the stream".into()),
        }
    }
}

impl ClientConn {
    fn new(
        stream: Stream,
        jid: FullJid,
        sm: Option<SmState>,
        resumed: bool,
        early: VecDeque<Stanza>,
    ) -> Self {
        Self {
            stream,
            jid,
            sm,
            resumed,
            ack_owed: false,
            request_owed: false,
            early,
            pings: 0,
        }
    }

    /// Sends a stanza. With stream management it is kept, and `settle` done, until the
    /// server acknowledges it (also when the write fails: the stream may be resumed);
    /// without, `settle` is done now, as written or not.
    pub async fn send(
        &mut self,
        stanza: Stanza,
        settle: Option<Settle>,
        settled: &mut Vec<(Settle, bool)>,
    ) -> Result<(), tokio_xmpp::Error> {
        let written = self.stream.feed(&stanza).await;
        match &mut self.sm {
            Some(sm) => {
                sm.sent(stanza, settle);
                written?;
                if !sm.requested {
                    sm.requested = true;
                    self.stream
                        .feed(&XmppStreamElement::SM(Nonza::Req(sm::R)))
                        .await?;
                }
            }
            None => {
                if let Some(s) = settle {
                    settled.push((s, written.is_ok()));
                }
                written?;
            }
        }
        Ok(<Stream as SinkExt<&Stanza>>::flush(&mut self.stream).await?)
    }

    /// The next thing from the server; stream management is answered and applied on
    /// the way (acknowledged stanzas go to `settled`). Cancel-safe: a reply owed when
    /// cancelled is sent on the next call.
    pub async fn next(&mut self, settled: &mut Vec<(Settle, bool)>) -> Incoming {
        loop {
            if let Some(s) = self.early.pop_front() {
                return Incoming::Stanza(Box::new(s));
            }
            if let Err(e) = self.owed().await {
                return Incoming::Ended(format!("send failed: {e}"));
            }
            let read = self.stream.next().await;
            let sm = self.sm.as_mut();
            match read {
                Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(s)))) => {
                    if let Some(sm) = sm {
                        sm.received();
                    }
                    return Incoming::Stanza(Box::new(s));
                }
                Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::SM(Nonza::Req(_))))) => {
                    self.ack_owed = sm.is_some();
                }
                Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::SM(Nonza::Ack(a))))) => {
                    let Some(sm) = sm else { continue };
                    sm.requested = false;
                    match sm.acked(a.h) {
                        Ok(done) => {
                            settled.extend(done.into_iter().flatten().map(|s| (s, true)));
                            // Later stanzas need an acknowledgement of their own.
                            self.request_owed = sm.pending() > 0;
                            return Incoming::Acked;
                        }
                        Err(e) => return Incoming::Ended(e),
                    }
                }
                Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                    return Incoming::Ended(format!("stream error from the server: {}", e.0));
                }
                Some(Ok(FallibleStreamElement::Ok(_))) => {
                    return Incoming::Skipped("an element that is not a stanza".into());
                }
                Some(Ok(FallibleStreamElement::Err(e))) => {
                    // A stanza that does not parse is still a stanza the server counts.
                    if let (Some(sm), StreamElementError::InvalidStanza { .. }) = (sm, &e) {
                        sm.received();
                    }
                    return Incoming::Skipped(e.to_string());
                }
                Some(Err(ReadError::SoftTimeout)) => return Incoming::Quiet,
                Some(Err(ReadError::ParseError(e))) => return Incoming::Skipped(e.to_string()),
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    return Incoming::Ended("the server closed the stream".into());
                }
                Some(Err(ReadError::HardError(e))) => {
                    return Incoming::Ended(format!("read failed: {e}"));
                }
            }
        }
    }

    /// Sends the `<a/>` and `<r/>` owed.
    async fn owed(&mut self) -> Result<(), tokio_xmpp::Error> {
        let Some(sm) = self.sm.as_mut() else {
            return Ok(());
        };
        if self.ack_owed {
            let a = sm::A::new(sm.inbound());
            self.stream
                .send(&XmppStreamElement::SM(Nonza::Ack(a)))
                .await?;
            self.ack_owed = false;
        }
        if self.request_owed && !sm.requested {
            self.stream
                .send(&XmppStreamElement::SM(Nonza::Req(sm::R)))
                .await?;
            sm.requested = true;
        }
        self.request_owed = false;
        Ok(())
    }

    /// Something for the server to answer on a quiet stream: an `<r/>`, or a ping to
    /// the server without stream management.
    pub async fn keepalive(&mut self) -> Result<(), tokio_xmpp::Error> {
        if let Some(sm) = self.sm.as_mut() {
            sm.requested = true;
            return Ok(self
                .stream
                .send(&XmppStreamElement::SM(Nonza::Req(sm::R)))
                .await?);
        }
        self.pings += 1;
        let ping = Iq::Get {
            from: None,
            to: Some(Jid::from(self.jid.domain().to_owned())),
            id: format!("sb-keepalive-{}", self.pings),
            payload: tokio_xmpp::minidom::Element::builder("ping", super::iq::NS_PING).build(),
        };
        Ok(self.stream.send(&Stanza::Iq(ping)).await?)
    }

    /// Ends the stream: first asks the server to acknowledge what it has (waiting a
    /// moment), so that what it got is settled and only the rest is sent again later.
    pub async fn close(&mut self, settled: &mut Vec<(Settle, bool)>) {
        let pending = self.sm.as_ref().is_some_and(|sm| sm.pending() > 0);
        if pending {
            let ask = self
                .stream
                .send(&XmppStreamElement::SM(Nonza::Req(sm::R)))
                .await;
            if ask.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        match self.stream.next().await {
                            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::SM(
                                Nonza::Ack(a),
                            )))) => {
                                if let Some(sm) = self.sm.as_mut()
                                    && let Ok(done) = sm.acked(a.h)
                                {
                                    settled.extend(done.into_iter().flatten().map(|s| (s, true)));
                                }
                                break;
                            }
                            // Stanzas now are left unacknowledged: the server deals
                            // with them as for any session that ends.
                            Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
                            _ => break,
                        }
                    }
                })
                .await;
            }
        }
        let _ = self.stream.shutdown().await;
        if let Some(sm) = self.sm.take() {
            settled.extend(
                sm.into_unsettled()
                    .into_iter()
                    .flatten()
                    .map(|s| (s, false)),
            );
        }
    }

    /// The stream management state to carry to the next connection, if the server may
    /// resume this stream; otherwise its unacknowledged stanzas go to `settled`.
    pub fn into_resumable(self, settled: &mut Vec<(Settle, bool)>) -> Option<Resumable> {
        let sm = self.sm?;
        if sm.resumable() {
            return Some(Resumable { sm, jid: self.jid });
        }
        settled.extend(
            sm.into_unsettled()
                .into_iter()
                .flatten()
                .map(|s| (s, false)),
        );
        None
    }
}
