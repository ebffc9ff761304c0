//! The connection a session runs on, whichever kind the link is: a component stream
//! ([`super::component`]) or a client stream ([`super::c2s`]). The session and its
//! handlers send and read through [`Conn`] alone.
//!
//! What differs is when a stanza counts as delivered. A stanza that carries something to
//! settle (a message of the link queue, a pushed message) is handed over with its
//! [`Settle`]; the connection says when it is settled, and whether delivered, through
//! [`Conn::take_settled`]: a component as soon as the stanza is written (XEP-0114 has
//! no acknowledgements), a client with stream management once the server's `<a/>`
//! covers it — or never on this stream, when the connection drops: then the settlement
//! waits for the resumed stream, or comes as "not delivered" when the server cannot
//! resume.

use tokio::sync::oneshot;
use tokio_xmpp::Stanza;

use super::c2s::ClientConn;
use super::component::ComponentConn;

/// What reading the connection gave.
pub(super) enum Incoming {
    Stanza(Box<Stanza>),
    /// The server acknowledged stanzas: see [`Conn::take_settled`].
    Acked,
    /// Something arrived that was not a usable stanza; the stream goes on.
    Skipped(String),
    /// Nothing arrived for a while: send something so the server answers.
    Quiet,
    /// The stream is over, and why.
    Ended(String),
}

/// What to do once the server has a stanza (or it is known not to have it).
#[derive(Debug)]
pub(super) enum Settle {
    /// Acknowledge (delivered) or requeue (not) this delivery of the link queue.
    Link(u64),
    /// Tell a push task whether its message was delivered.
    Push(oneshot::Sender<bool>),
}

pub(super) enum Kind {
    Component(ComponentConn),
    Client(ClientConn),
}

/// A connected stream, with the settlements it has decided and not yet handed out.
pub(super) struct Conn {
    kind: Kind,
    settled: Vec<(Settle, bool)>,
}

impl Conn {
    pub fn new(kind: Kind, settled: Vec<(Settle, bool)>) -> Self {
        Self { kind, settled }
    }

    /// A stanza with nothing to settle.
    pub async fn send(&mut self, stanza: Stanza) -> Result<(), tokio_xmpp::Error> {
        self.send_settled(stanza, None).await
    }

    /// A stanza, and what to settle once the server has it.
    pub async fn send_settled(
        &mut self,
        stanza: Stanza,
        settle: Option<Settle>,
    ) -> Result<(), tokio_xmpp::Error> {
        match &mut self.kind {
            Kind::Component(c) => {
                let sent = c.send(stanza).await;
                if let Some(s) = settle {
                    self.settled.push((s, sent.is_ok()));
                }
                sent
            }
            Kind::Client(c) => c.send(stanza, settle, &mut self.settled).await,
        }
    }

    /// The next thing from the server. Cancel-safe.
    pub async fn next(&mut self) -> Incoming {
        match &mut self.kind {
            Kind::Component(c) => c.next().await,
            Kind::Client(c) => c.next(&mut self.settled).await,
        }
    }

    /// Something for the server to answer on a quiet stream.
    pub async fn keepalive(&mut self) -> Result<(), tokio_xmpp::Error> {
        match &mut self.kind {
            Kind::Component(c) => c.keepalive().await,
            Kind::Client(c) => c.keepalive().await,
        }
    }

    /// Settlements decided since the last call: (what, delivered).
    pub fn take_settled(&mut self) -> Vec<(Settle, bool)> {
        std::mem::take(&mut self.settled)
    }

    /// Ends the stream politely (for shutdown, or when the link is handed over).
    pub async fn close(&mut self) {
        match &mut self.kind {
            Kind::Component(c) => c.close().await,
            Kind::Client(c) => c.close(&mut self.settled).await,
        }
    }

    /// The client stream, if this is one.
    pub fn client(&self) -> Option<&ClientConn> {
        match &self.kind {
            Kind::Client(c) => Some(c),
            Kind::Component(_) => None,
        }
    }

    /// Ends the connection object: a client stream the server may resume, if any (what
    /// cannot be resumed is settled as not delivered, in [`Self::take_settled`]).
    pub fn into_parts(self) -> (Option<super::c2s::Resumable>, Vec<(Settle, bool)>) {
        let mut settled = self.settled;
        let resumable = match self.kind {
            Kind::Client(c) => c.into_resumable(&mut settled),
            Kind::Component(_) => None,
        };
        (resumable, settled)
    }
}
