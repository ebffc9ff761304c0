//! Messages for XMPP: from the link queue to stanzas, or to the dead-letter queue when
//! they cannot be one.

use tokio_xmpp::Stanza;

use super::conn::Settle;
use super::convert;
use super::link::LinkCtx;
use super::session::Sink;
use crate::core::{Delivery, Destination, Loss};
use crate::link::{LinkStatus, link_queue};
use crate::router::LINK_TARGET_HEADER;
use crate::translate::loss;
use crate::translate::trace;

/// What became of a message of the link queue.
pub(super) enum Outcome {
    /// Handed to the connection with its delivery tag: the connection settles it
    /// ([`super::conn::Conn::take_settled`]).
    Sent,
    /// In the dead-letter queue: done with.
    DeadLettered,
    /// Neither sent nor dead-lettered: it goes back to the link queue.
    Stuck,
}

fn given_up(dead_lettered: bool) -> Outcome {
    if dead_lettered {
        Outcome::DeadLettered
    } else {
        Outcome::Stuck
    }
}

/// A message for XMPP: stanza out, or the dead-letter queue if it cannot be one.
pub(super) async fn outgoing(
    ctx: &LinkCtx,
    sink: &mut Sink,
    d: Delivery,
) -> Result<Outcome, tokio_xmpp::Error> {
    let m = &d.message;
    let target = m
        .headers
        .get(LINK_TARGET_HEADER)
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
    let field = |k: &str| {
        target
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    if let Some(p) = target.as_ref().and_then(|v| v.get("pubsub")) {
        return super::pubsub::publish(ctx, sink, d, p).await;
    }
    let (Some(to), from, kind) = (field("to"), field("from"), field("type")) else {
        let why = "no XMPP address on the message";
        return Ok(given_up(dead_letter(ctx, &d, "bad-target", why).await));
    };
    let from = from.unwrap_or_else(|| ctx.settings.default_from());
    if let Some(why) = ctx.settings.refuses_from(&from) {
        return Ok(given_up(dead_letter(ctx, &d, "bad-target", &why).await));
    }
    let kind = kind.unwrap_or_else(|| "chat".into());
    // Fields a stanza cannot carry, as the route's loss policy says.
    let lost = loss::lost_to_xmpp(m);
    let encoded;
    let m = if lost.is_empty() {
        m
    } else {
        loss::record(loss::Edge::Xmpp, lost, m.loss);
        match m.loss {
            Loss::Drop => m,
            Loss::Encode => {
                let mut c = (**m).clone();
                for (k, v) in loss::as_headers(m, lost, ToString::to_string) {
                    c.headers.append(&k, &v);
                }
                encoded = c;
                &encoded
            }
            Loss::Reject => {
                let why = format!(
                    "a stanza cannot carry its {}; its route says `loss: reject`",
                    lost.names()
                );
                return Ok(given_up(dead_letter(ctx, &d, "untranslatable", &why).await));
            }
        }
    };
    match convert::to_stanza(m, &to, &from, &kind, |k| k == LINK_TARGET_HEADER) {
        Ok(mut s) => {
            s.from = s.from.and_then(|f| ctx.settings.stamp(&f));
            let size = m.body.len();
            sink.send_settled(Stanza::Message(s), Some(Settle::Link(d.tag)))
                .await?;
            ctx.status.published(size);
            Ok(Outcome::Sent)
        }
        Err(e) => Ok(given_up(
            dead_letter(ctx, &d, "untranslatable", &e.to_string()).await,
        )),
    }
}

/// Gives up on a message; `false` if even that failed (then it stays in the link queue).
async fn dead_letter(ctx: &LinkCtx, d: &Delivery, reason: &str, detail: &str) -> bool {
    dead_letter_message(ctx, &d.message, reason, detail).await
}

/// [`dead_letter`] for a message no longer in the link queue (a PubSub publish the
/// service refused after it was sent).
pub(super) async fn dead_letter_message(
    ctx: &LinkCtx,
    message: &crate::core::Message,
    reason: &str,
    detail: &str,
) -> bool {
    let s = &ctx.settings;
    tracing::warn!(reason, detail, trace_id = trace::trace_id(&message.headers).map(tracing::field::display), dead_letter = %s.dead_letter, "XMPP send given up: message sent to the dead-letter queue");
    let mut m = message.clone();
    m.headers.remove(LINK_TARGET_HEADER);
    m.headers.set("x-death-reason", reason);
    m.headers.set("x-death-queue", link_queue(&s.name));
    m.headers.set("x-death-detail", detail);
    m.expiry = None;
    if let Err(e) = ctx
        .router
        .core()
        .publish(&Destination::queue(&s.dead_letter), m)
        .await
    {
        tracing::error!(error = %e, "cannot dead-letter an XMPP message; it stays in the link queue");
        false
    } else {
        LinkStatus::bump(&ctx.status.counters.dead_lettered);
        true
    }
}
