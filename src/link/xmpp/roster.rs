//! A bot's roster (RFC 6121 §2): the answer to the roster request each new session
//! starts with, and the roster pushes of the account's server.
//!
//! The roster is where the server keeps who is subscribed to the bot (items with
//! subscription `from` or `both`), across restarts of the router. Push subscriptions
//! of presence subscribers live in the link's memory ([`super::link::LinkCtx::subs`]);
//! so each login rebuilds those the roster has and memory lacks, as a `subscribe` from
//! that user would ([`super::presence`]): a router restarted alone pushes its
//! subscribers again without them doing anything. Command subscriptions
//! (`subscribe` command) are not in the roster and stay in memory alone.

use tokio_xmpp::minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;

use super::link::{LinkCtx, lock};
use super::session::{NS_ROSTER, ROSTER_ID};
use super::{presence, push_caps};
use crate::core::Destination;

/// Handles the roster traffic of a client link: the answer to the session's roster
/// request rebuilds the push subscriptions; a roster push from the account's server
/// (no `from`, or the account's bare JID) gets the acknowledgement the server expects.
/// `None` for an `iq` that is neither; otherwise the answer to send, if any.
pub(super) async fn handle(ctx: &LinkCtx, account: &BareJid, iq: &Iq) -> Option<Option<Iq>> {
    match iq {
        Iq::Result {
            id,
            payload: Some(p),
            ..
        } if id == ROSTER_ID => {
            let contacts = p.children().filter(|c| c.name() == "item").count();
            tracing::info!(contacts, "roster received");
            rebuild(ctx, account, &subscribers(p)).await;
            Some(None)
        }
        Iq::Set {
            from, id, payload, ..
        } if payload.is("query", NS_ROSTER)
            && from
                .as_ref()
                .is_none_or(|f| f.resource().is_none() && f.to_bare() == *account) =>
        {
            Some(Some(Iq::Result {
                from: None,
                to: None,
                id: id.clone(),
                payload: None,
            }))
        }
        _ => None,
    }
}

/// The bare JIDs of a roster's users who are subscribed to the account (`from`,
/// `both`), as the link keys subscriptions.
fn subscribers(query: &Element) -> Vec<String> {
    query
        .children()
        .filter(|c| c.is("item", NS_ROSTER))
        .filter(|c| matches!(c.attr("subscription"), Some("from" | "both")))
        .filter_map(|c| c.attr("jid")?.parse::<BareJid>().ok())
        .filter(|j| j.node().is_some())
        .map(|j| j.to_string())
        .collect()
}

/// Creates the push subscriptions of the roster's subscribers that the link does not
/// hold — the ones a `subscribe` from each would have made: the topic the account's
/// JID routes to (nothing when it routes to a queue or nowhere).
async fn rebuild(ctx: &LinkCtx, account: &BareJid, users: &[String]) {
    if users.is_empty() {
        return;
    }
    let ours = account.to_string();
    let Some(Destination::Topic(topic)) = ctx
        .router
        .table()
        .xmpp_destination(&ctx.settings.name, &ours)
    else {
        tracing::debug!(
            subscribers = users.len(),
            "the account's JID routes to no topic: nothing to push to the roster's subscribers"
        );
        return;
    };
    let mut rebuilt = 0;
    for user in users {
        if lock(&ctx.subs).contains_key(&(user.clone(), ours.clone())) {
            continue;
        }
        if push_caps::check(ctx, user, &ours).is_err() {
            continue;
        }
        match presence::collect(ctx, user, &ours, &topic).await {
            Ok(()) => rebuilt += 1,
            Err(e) => tracing::warn!(user, error = %e, "cannot subscribe for push"),
        }
    }
    if rebuilt > 0 {
        tracing::info!(
            rebuilt,
            topic = %topic,
            "push subscriptions rebuilt from the roster's subscribers"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_are_the_items_subscribed_to_the_account() {
        let q: Element = format!(
            "<query xmlns='{NS_ROSTER}'>\
             <item jid='Al@X' subscription='both'/>\
             <item jid='bo@x' subscription='from'/>\
             <item jid='cy@x' subscription='to'/>\
             <item jid='di@x' subscription='none' ask='subscribe'/>\
             <item jid='ed@x'/>\
             <item jid='conference.x' subscription='both'/>\
             </query>"
        )
        .parse()
        .unwrap();
        assert_eq!(subscribers(&q), ["al@x", "bo@x"]);
    }
}
