//! One session of an XMPP link: set up (rooms joined; a component probes its
//! subscribers, a client fetches its roster and sends its presence), then one loop that
//! reads stanzas, sends what the core has for XMPP, settles receipts and what the
//! server acknowledged, and keeps a quiet stream alive.
//!
//! A component's session lasts as long as its connection. A client's session can
//! outlive one: when the connection drops and the server may resume the stream
//! (XEP-0198), the [`Session`] — who is online, the pushes, the deliveries of the link
//! queue still unacknowledged — waits for the next connection, which resumes it without
//! setting anything up again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::presence::{Presence, Type as PresenceType};

use super::availability::Availability;
use super::conn::{Conn, Incoming, Settle};
use super::inbound::{Confirming, incoming, settle_receipt};
use super::link::{LinkCtx, lock};
use super::outbound::{Outcome, outgoing};
use super::{presence, rooms};
use crate::core::{ConsumeOptions, Consumer};
use crate::link::link_queue;

/// The roster (RFC 6121 §2) namespace.
pub(super) const NS_ROSTER: &str = "jabber:iq:roster";
/// The id of the roster request a client session starts with.
pub(super) const ROSTER_ID: &str = "sb-roster";

/// One session's state.
pub(super) struct Session {
    /// Users with at least one available resource, and their resources.
    pub presence: Availability,
    /// The contacts the account's roster has subscribed to it (`from`, `both`), as
    /// the roster request and pushes said ([`super::roster`]).
    pub roster: HashSet<String>,
    /// Running pushes by (user, our JID).
    pub pushes: HashMap<(String, String), CancellationToken>,
    pub out: mpsc::Sender<(Stanza, oneshot::Sender<bool>)>,
    out_rx: mpsc::Receiver<(Stanza, oneshot::Sender<bool>)>,
    pub cancel: CancellationToken,
    /// Receipts of accepted chats waiting for their messages to be durable; the session
    /// loop sends them as they resolve and keeps reading meanwhile.
    pub confirming: FuturesUnordered<Confirming>,
    /// The link queue's messages for XMPP.
    consumer: Consumer,
    /// The rooms we are in, and their self-pings.
    pub rooms: rooms::Rooms,
}

/// The session's connection, which its handlers write to.
pub(super) type Sink = Conn;

impl Session {
    /// A new session, following `presence` from the previous one; its pushes stop with
    /// `cancel`.
    pub fn new(
        ctx: &LinkCtx,
        presence: Availability,
        cancel: &CancellationToken,
    ) -> Result<Self, String> {
        let consumer = ctx
            .router
            .core()
            .consume(&link_queue(&ctx.settings.name), ConsumeOptions::manual(256))
            .map_err(|e| format!("cannot consume the link queue: {e}"))?;
        let (out, out_rx) = mpsc::channel(64);
        Ok(Self {
            presence,
            roster: HashSet::new(),
            pushes: HashMap::new(),
            out,
            out_rx,
            cancel: cancel.child_token(),
            confirming: FuturesUnordered::new(),
            consumer,
            rooms: rooms::Rooms::new(&ctx.settings),
        })
    }

    /// Applies what the connection settled: a delivered message of the link queue is
    /// acknowledged, one that was not goes back to the queue; a push learns its fate.
    pub fn settle(&self, done: Vec<(Settle, bool)>) {
        for (what, delivered) in done {
            match what {
                Settle::Link(tag) if delivered => {
                    self.consumer.ack(tag);
                }
                Settle::Link(tag) => {
                    self.consumer.nack(tag, true);
                }
                Settle::Push(tx) => {
                    let _ = tx.send(delivered);
                }
            }
        }
    }

    /// Ends the session: pushes stop, unsettled deliveries go back to the link queue;
    /// returns who was online.
    pub fn end(self) -> Availability {
        self.cancel.cancel();
        self.presence
    }
}

/// Runs a session on `conn` until the connection ends (the reason) or `cancel`.
/// `fresh`: a new session on the server, to set up; otherwise a resumed one.
pub(super) async fn run(
    ctx: &Arc<LinkCtx>,
    conn: &mut Conn,
    st: &mut Session,
    cancel: &CancellationToken,
    fresh: bool,
) -> String {
    if fresh {
        super::pubsub::follow_routes(ctx, st);
    }
    let reason = if fresh {
        set_up(ctx, conn, &st.presence)
            .await
            .err()
            .map(|e| format!("send failed: {e}"))
    } else {
        None
    };
    let reason = match reason {
        Some(r) => r,
        None => session_loop(ctx, conn, st, cancel).await,
    };
    st.settle(conn.take_settled());
    reason
}

/// What a new session sends first. `presence`: who the link knows as online, from the
/// sessions before.
async fn set_up(
    ctx: &Arc<LinkCtx>,
    sink: &mut Sink,
    presence: &Availability,
) -> Result<(), tokio_xmpp::Error> {
    if ctx.settings.is_client() {
        // The roster first, then presence (RFC 6121 §2.1.3): the server then sends the
        // presence of the contacts we are subscribed to, and roster changes.
        let roster = Iq::Get {
            from: None,
            to: None,
            id: ROSTER_ID.into(),
            payload: Element::builder("query", NS_ROSTER).build(),
        };
        sink.send(Stanza::Iq(roster)).await?;
        sink.send(Stanza::Presence(Presence::new(PresenceType::None)))
            .await?;
        // The server then sends the presence of the contacts who are online, and
        // nothing about those who are not: a contact who was online when the previous
        // session ended and left meanwhile would never be "offline". So each is
        // probed — their server may answer for them with an unavailable presence (RFC
        // 6121 §4.3.2; Prosody does, ejabberd does not) — and each of their resources
        // pinged: the server answers for a resource that is gone with an error (RFC 6121
        // §8.5.3.2.1), and a resource still there is online, its presence the answer to
        // the probe, sent before. Either way their "offline" event comes
        // ([`presence::resource_answer`]).
        let asked: Vec<(Jid, Vec<Jid>)> = presence
            .unconfirmed()
            .filter_map(|(user, resources)| {
                let resources = resources.iter().filter_map(|r| r.parse().ok()).collect();
                Some((user.parse().ok()?, resources))
            })
            .collect();
        if !asked.is_empty() {
            tracing::info!(
                contacts = asked.len(),
                "probing the contacts who were online before this new session"
            );
        }
        for (n, (user, resources)) in asked.into_iter().enumerate() {
            sink.send(Stanza::Presence(probe(None, user))).await?;
            for (m, resource) in resources.into_iter().enumerate() {
                let ping = presence::resource_ping(resource, &format!("{n}-{m}"));
                sink.send(Stanza::Iq(ping)).await?;
            }
        }
    }
    // Join the configured rooms (again, after a reconnect).
    for r in &ctx.settings.rooms {
        let Some(join) = rooms::join(&ctx.settings, r) else {
            continue;
        };
        sink.send(Stanza::Presence(join)).await?;
        tracing::info!(room = %r.room, nick = %r.nick, "joining room");
    }
    if !ctx.settings.is_client() {
        // After a (re)connect, ask every subscribed user's server for their presence:
        // the answers restart the pushes of those who are online. (A client's server
        // does this itself when the client sends its presence.)
        let subs: Vec<(String, String)> = lock(&ctx.subs).keys().cloned().collect();
        for (user, ours) in subs {
            if let (Ok(user), Ok(ours)) = (user.parse::<Jid>(), ours.parse::<Jid>()) {
                sink.send(Stanza::Presence(probe(Some(ours), user))).await?;
            }
        }
    }
    Ok(())
}

/// A presence probe (RFC 6121 §4.3) to `to`, from `from` (a component's JID; a
/// client's server stamps the session's).
fn probe(from: Option<Jid>, to: Jid) -> Presence {
    let mut probe = Presence::new(PresenceType::Probe);
    probe.from = from;
    probe.to = Some(to);
    probe
}

async fn session_loop(
    ctx: &Arc<LinkCtx>,
    sink: &mut Sink,
    st: &mut Session,
    cancel: &CancellationToken,
) -> String {
    loop {
        let ended = tokio::select! {
            _ = cancel.cancelled() => {
                sink.close().await;
                Some("shutdown".to_owned())
            }
            Some(done) = st.confirming.next(), if !st.confirming.is_empty() => {
                settle_receipt(ctx, sink, done).await.err().map(|e| format!("send failed: {e}"))
            }
            _ = st.rooms.tick.tick(), if !ctx.settings.rooms.is_empty() => {
                let mut failed = None;
                for s in rooms::tick(&ctx.settings, &mut st.rooms) {
                    if let Err(e) = sink.send(s).await {
                        failed = Some(format!("send failed: {e}"));
                        break;
                    }
                }
                failed
            }
            pushed = st.out_rx.recv() => match pushed {
                Some((stanza, ack)) => sink
                    .send_settled(stanza, Some(Settle::Push(ack)))
                    .await
                    .err()
                    .map(|e| format!("send failed: {e}")),
                None => None,
            },
            read = sink.next() => match read {
                Incoming::Stanza(stanza) => {
                    incoming(ctx, sink, st, *stanza).await.err().map(|e| format!("send failed: {e}"))
                }
                Incoming::Acked => None,
                Incoming::Skipped(why) => {
                    tracing::warn!(reason = %why, "skipped something the server sent that is not a usable stanza");
                    None
                }
                Incoming::Quiet => sink.keepalive().await.err().map(|e| format!("send failed: {e}")),
                Incoming::Ended(reason) => Some(reason),
            },
            d = st.consumer.recv() => match d {
                Some(d) => {
                    let tag = d.tag;
                    match outgoing(ctx, sink, d).await {
                        Ok(Outcome::Sent) => None,
                        Ok(Outcome::DeadLettered) => {
                            st.consumer.ack(tag);
                            None
                        }
                        Ok(Outcome::Stuck) => {
                            st.consumer.nack(tag, true);
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            None
                        }
                        Err(e) => Some(format!("send failed: {e}")),
                    }
                }
                None => Some("the link queue was closed".into()),
            },
        };
        st.settle(sink.take_settled());
        if let Some(reason) = ended {
            return reason;
        }
    }
}
