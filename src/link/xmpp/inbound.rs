//! Stanzas from XMPP: each goes to its handler, and a chat message to the core — answered
//! with a receipt once it is stored, or with an error stanza when it cannot be routed.

use std::sync::Arc;

use futures::StreamExt;
use tokio_xmpp::Stanza;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Message as XMessage, MessageType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::link::LinkCtx;
use super::session::{Session, Sink};
use super::{convert, iq, presence, pubsub, pubsub_events, rooms};
use crate::link::LinkStatus;
use crate::router::{RouterError, xmpp_reply_address};

/// How long a message from XMPP may wait for room in a full destination.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A deferred receipt: what to send once the message is durable, or instead if it
/// could not be stored.
pub(super) type Confirming = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Option<XMessage>,
                    Option<XMessage>,
                    Result<(), crate::core::PublishError>,
                ),
            > + Send,
    >,
>;

/// Sends a deferred receipt (or the refusal, when the store failed).
pub(super) async fn settle_receipt(
    ctx: &LinkCtx,
    sink: &mut Sink,
    (receipt, refusal, r): (
        Option<XMessage>,
        Option<XMessage>,
        Result<(), crate::core::PublishError>,
    ),
) -> Result<(), tokio_xmpp::Error> {
    let reply = match r {
        Ok(()) => receipt,
        Err(e) => {
            LinkStatus::bump(&ctx.status.counters.rejected);
            tracing::warn!(error = %e, "accepted chat could not be stored: refused");
            refusal
        }
    };
    match reply {
        Some(m) => sink.send(Stanza::Message(m)).await,
        None => Ok(()),
    }
}

/// A stanza from the server.
pub(super) async fn incoming(
    ctx: &Arc<LinkCtx>,
    sink: &mut Sink,
    st: &mut Session,
    stanza: Stanza,
) -> Result<(), tokio_xmpp::Error> {
    match stanza {
        Stanza::Message(m) => {
            if let Some(e) = rooms::subject(&ctx.settings, &m) {
                rooms::event(ctx, e).await;
            }
            message(ctx, sink, st, m).await
        }
        Stanza::Presence(p) => {
            if let Some(unlock) = rooms::instant_room(ctx, &st.rooms, &p) {
                sink.send(Stanza::Iq(unlock)).await?;
            }
            match rooms::presence(&ctx.settings, &mut st.rooms, &p) {
                Some((send, events)) => {
                    for s in send {
                        sink.send(s).await?;
                    }
                    for e in events {
                        rooms::event(ctx, e).await;
                    }
                    Ok(())
                }
                None => presence::handle(ctx, sink, st, p).await,
            }
        }
        Stanza::Iq(q) if pubsub::answer(ctx, &q).await => Ok(()),
        Stanza::Iq(q) => iq::handle(ctx, sink, st, q).await,
    }
}

async fn message(
    ctx: &LinkCtx,
    sink: &mut Sink,
    st: &mut Session,
    s: XMessage,
) -> Result<(), tokio_xmpp::Error> {
    if s.type_ == MessageType::Error {
        tracing::info!(from = ?s.from.as_ref().map(ToString::to_string), "error stanza received");
        return Ok(());
    }
    if pubsub_events::is_event(&s) {
        pubsub_events::received(ctx, &s).await;
        return Ok(());
    }
    let (Some(from), Some(to)) = (s.from.clone(), s.to.clone()) else {
        return Ok(());
    };
    // A client's messages come to its full JID; routes name the account.
    let to: Jid = if ctx.settings.is_client() {
        to.to_bare().into()
    } else {
        to
    };
    // Chat states ("typing…"), receipts for what we sent, read markers: no body, no
    // JSON payload — nothing to route. Routing them would fill queues with empty messages.
    if s.bodies.is_empty() && !s.payloads.iter().any(|p| p.is("json", convert::NS_JSON)) {
        tracing::debug!(from = ?s.from.as_ref().map(ToString::to_string), "message without content (chat state, receipt, marker) not routed");
        return Ok(());
    }
    let groupchat = s.type_ == MessageType::Groupchat;
    if groupchat {
        let room = from.to_bare().to_string();
        let nick = from.resource().map(|r| r.to_string()).unwrap_or_default();
        match st.rooms.nick_in(&ctx.settings, &room) {
            // The room reflects what we said back to us: routing it again would loop.
            Some(ours) if ours == nick => return Ok(()),
            // The room's subject, and messages from the room itself, are not chat.
            _ if nick.is_empty() || s.bodies.is_empty() => return Ok(()),
            _ => {}
        }
    }
    let link = ctx.settings.name.as_str();
    let c = &ctx.status.counters;
    let mut m = convert::from_stanza(&s);
    m.reply_to = Some(xmpp_reply_address(link, &from.to_string(), &to.to_string()));
    let payload = m.body.len();
    // A full destination makes the publish wait; the link must not stall for long (it
    // also sends, pings and pushes), so the sender is told to try again later instead.
    let to_text = to.to_string();
    let publish = ctx
        .router
        .publish_from_xmpp_unconfirmed(link, &to_text, false, m);
    tokio::pin!(publish);
    let routed = match futures::poll!(&mut publish) {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => {
            // Held back (a full destination, a watermark): settle the receipts already
            // owed first, so earlier senders are not kept waiting behind this one.
            while let Some(done) = st.confirming.next().await {
                settle_receipt(ctx, sink, done).await?;
            }
            tokio::time::timeout(PUBLISH_WAIT, publish).await
        }
    };
    let Ok(routed) = routed else {
        LinkStatus::bump(&c.rejected);
        tracing::warn!(from = %from, to = %to, "destination full: message refused with resource-constraint");
        if !groupchat {
            let mut e = XMessage::new_with_type(MessageType::Error, Some(from));
            e.from = Some(to);
            e.id = s.id.clone();
            e.payloads.push(
                StanzaError::new(
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                    "en",
                    "the destination is full; try again later",
                )
                .into(),
            );
            sink.send(Stanza::Message(e)).await?;
        }
        return Ok(());
    };
    let mut confirmation = None;
    let refused = match routed {
        Ok(Some((n, c))) if n > 0 => {
            confirmation = Some(c);
            None
        }
        Ok(Some(_)) => Some((
            DefinedCondition::NotAcceptable,
            format!("no route for {to} accepted this message"),
        )),
        Ok(None) => Some((
            DefinedCondition::ItemNotFound,
            format!("{to} routes nowhere: no route of this bridge serves that address"),
        )),
        Err(RouterError::Routing(e)) => Some((DefinedCondition::BadRequest, e.to_string())),
        Err(RouterError::Publish(e)) => Some((
            DefinedCondition::ServiceUnavailable,
            format!("the destination refused the message: {e}"),
        )),
    };
    match refused {
        None => {
            ctx.status.received(payload);
            let receipt = (!groupchat && convert::wants_receipt(&s))
                .then(|| convert::receipt(&s))
                .flatten();
            let confirmation = confirmation.unwrap_or_default();
            if confirmation.is_ready() {
                if let Some(r) = receipt {
                    sink.send(Stanza::Message(r)).await?;
                }
            } else {
                let refusal = (!groupchat).then(|| {
                    let mut e = XMessage::new_with_type(MessageType::Error, Some(from.clone()));
                    e.from = Some(to.clone());
                    e.id = s.id.clone();
                    e.payloads.push(
                        StanzaError::new(
                            ErrorType::Wait,
                            DefinedCondition::ServiceUnavailable,
                            "en",
                            "the message could not be stored; try again later",
                        )
                        .into(),
                    );
                    e
                });
                st.confirming.push(Box::pin(async move {
                    (receipt, refusal, confirmation.wait().await)
                }));
            }
        }
        Some((_, text)) if groupchat => {
            // Never answer a room with errors: everyone would see them.
            LinkStatus::bump(&c.rejected);
            tracing::info!(from = %from, to = %to, reason = %text, "room message not routed");
        }
        Some((condition, text)) => {
            LinkStatus::bump(&c.rejected);
            tracing::info!(from = %from, to = %to, reason = %text, "message refused with an error stanza");
            let mut e = XMessage::new_with_type(MessageType::Error, Some(from));
            e.from = Some(to);
            e.id = s.id.clone();
            e.payloads
                .push(StanzaError::new(ErrorType::Cancel, condition, "en", text).into());
            sink.send(Stanza::Message(e)).await?;
        }
    }
    Ok(())
}
