//! One connected session of an XMPP link: rooms joined, subscribers probed, then one
//! loop that reads stanzas, sends what the core has for XMPP, settles receipts and keeps
//! a quiet stream alive.

use std::collections::HashMap;
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
use super::inbound::{Confirming, incoming, settle_receipt};
use super::iq::NS_PING;
use super::link::{LinkCtx, lock};
use super::outbound::outgoing;
use super::rooms;
use super::stream::{self, Incoming};
use crate::core::ConsumeOptions;
use crate::link::link_queue;

/// One connected session's state.
pub(super) struct Session {
    /// Users with at least one available resource, and their resources.
    pub presence: Availability,
    /// Running pushes by (user, our JID).
    pub pushes: HashMap<(String, String), CancellationToken>,
    pub out: mpsc::Sender<(Stanza, oneshot::Sender<bool>)>,
    pub cancel: CancellationToken,
    /// Receipts of accepted chats waiting for their messages to be durable; the session
    /// loop sends them as they resolve and keeps reading meanwhile.
    pub confirming: FuturesUnordered<Confirming>,
}

/// The session's connection, which its handlers write to.
pub(super) type Sink = stream::Conn;

/// One connected session; returns why it ended, and who was online then.
pub(super) async fn session(
    ctx: &Arc<LinkCtx>,
    mut conn: stream::Conn,
    cancel: &CancellationToken,
    presence: Availability,
) -> (String, Availability) {
    let (out_tx, mut out_rx) = mpsc::channel::<(Stanza, oneshot::Sender<bool>)>(64);
    let mut st = Session {
        presence,
        pushes: HashMap::new(),
        out: out_tx,
        cancel: cancel.child_token(),
        confirming: FuturesUnordered::new(),
    };
    let reason = session_loop(ctx, &mut conn, &mut out_rx, &mut st, cancel).await;
    st.cancel.cancel();
    (reason, st.presence)
}

async fn session_loop(
    ctx: &Arc<LinkCtx>,
    sink: &mut Sink,
    out_rx: &mut mpsc::Receiver<(Stanza, oneshot::Sender<bool>)>,
    st: &mut Session,
    cancel: &CancellationToken,
) -> String {
    // Join the configured rooms (again, after a reconnect).
    for r in &ctx.settings.rooms {
        let Some(join) = rooms::join(r) else {
            continue;
        };
        if let Err(e) = sink.send(Stanza::Presence(join)).await {
            return format!("send failed: {e}");
        }
        tracing::info!(room = %r.room, nick = %r.nick, "joining room");
    }
    // After a (re)connect, ask every subscribed user's server for their presence: the
    // answers restart the pushes of those who are online.
    let subs: Vec<(String, String)> = lock(&ctx.subs).keys().cloned().collect();
    for (user, ours) in subs {
        if let (Ok(user), Ok(ours)) = (user.parse::<Jid>(), ours.parse::<Jid>()) {
            let mut probe = Presence::new(PresenceType::Probe);
            probe.from = Some(ours);
            probe.to = Some(user);
            if let Err(e) = sink.send(Stanza::Presence(probe)).await {
                return format!("send failed: {e}");
            }
        }
    }
    let consumer = match ctx
        .router
        .core()
        .consume(&link_queue(&ctx.settings.name), ConsumeOptions::manual(256))
    {
        Ok(c) => c,
        Err(e) => return format!("cannot consume the link queue: {e}"),
    };
    let domain: Option<Jid> = ctx.settings.domain.parse().ok();
    let mut pings = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = sink.close().await;
                return "shutdown".into();
            }
            Some(done) = st.confirming.next(), if !st.confirming.is_empty() => {
                if let Err(e) = settle_receipt(ctx, sink, done).await {
                    return format!("send failed: {e}");
                }
            }
            pushed = out_rx.recv() => {
                if let Some((stanza, ack)) = pushed {
                    let sent = sink.send(stanza).await;
                    let _ = ack.send(sent.is_ok());
                    if let Err(e) = sent {
                        return format!("send failed: {e}");
                    }
                }
            }
            read = sink.next() => match read {
                Incoming::Stanza(stanza) => {
                    if let Err(e) = incoming(ctx, sink, st, *stanza).await {
                        return format!("send failed: {e}");
                    }
                }
                Incoming::Skipped(why) => {
                    tracing::warn!(reason = %why, "skipped something the server sent that is not a usable stanza");
                }
                Incoming::Quiet => {
                    // A quiet stream: a ping to our own domain comes back through the
                    // server, so the stream hears something before it times out.
                    pings += 1;
                    let ping = Iq::Get {
                        from: domain.clone(),
                        to: domain.clone(),
                        id: format!("sb-keepalive-{pings}"),
                        payload: Element::builder("ping", NS_PING).build(),
                    };
                    if let Err(e) = sink.send(Stanza::Iq(ping)).await {
                        return format!("send failed: {e}");
                    }
                }
                Incoming::Ended(reason) => return reason,
            },
            d = consumer.recv() => match d {
                Some(d) => {
                    let tag = d.tag;
                    match outgoing(ctx, sink, d).await {
                        Ok(true) => {
                            consumer.ack(tag);
                        }
                        Ok(false) => {
                            consumer.nack(tag, true);
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                        Err(e) => {
                            consumer.nack(tag, true);
                            return format!("send failed: {e}");
                        }
                    }
                }
                None => return "the link queue was closed".into(),
            },
        }
    }
}
