//! A bot's roster (RFC 6121 §2): the answer to the roster request each new session
//! starts with, and the roster pushes of the account's server.
//!
//! The roster is where the server keeps who is subscribed to the bot (items with
//! subscription `from` or `both`), across restarts of the router. The link's push
//! subscriptions ([`super::link::LinkCtx::subs`]) are kept by the router when it has a
//! store or a cluster ([`super::link::LinkCtx::kept_subs`]), and in memory alone with
//! `--data-dir off`; so each login rebuilds those the roster has and the link lacks, as
//! a `subscribe` from that user would ([`super::presence`]): even a router without a
//! store pushes its subscribers again after a restart without them doing anything.
//! Command subscriptions (`subscribe` command) are not in the roster: only a kept copy
//! brings them back.
//!
//! While the bot is online the roster can change without the contact saying anything
//! to the bot: the admin, or another client of the account, removes the contact or
//! cancels their subscription. The server tells every session with a roster push
//! (§2.1.6), which the link follows as it follows the contact's own presence
//! subscription: a contact no longer subscribed to the bot loses every push from it
//! (as an `unsubscribe` from them would end it), one newly subscribed gains the push
//! the rebuild at login would have made.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_xmpp::minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};

use super::link::{LinkCtx, lock};
use super::session::{NS_ROSTER, ROSTER_ID, Session};
use super::{presence, push_caps};
use crate::core::Destination;

/// Handles the roster traffic of a client link: the answer to the session's roster
/// request rebuilds the push subscriptions; a roster push from the account's server
/// is applied ([`push`]) and gets the empty result the server expects; one from
/// anyone else is ignored. `None` for an `iq` that is neither; otherwise the answer to
/// send, if any.
pub(super) async fn handle(
    ctx: &Arc<LinkCtx>,
    st: &mut Session,
    account: &BareJid,
    iq: &Iq,
) -> Option<Option<Iq>> {
    match iq {
        Iq::Result {
            id,
            payload: Some(p),
            ..
        } if id == ROSTER_ID => {
            let contacts = p.children().filter(|c| c.name() == "item").count();
            tracing::info!(contacts, "roster received");
            let subscribers = subscribers(p);
            rebuild(ctx, account, &subscribers).await;
            st.roster = subscribers.into_iter().collect();
            Some(None)
        }
        Iq::Set {
            from, id, payload, ..
        } if payload.is("query", NS_ROSTER) => {
            if !from_the_account(from.as_ref(), account) {
                // RFC 6121 §2.1.6: anyone else could forge one; no answer either.
                tracing::warn!(
                    from = from.as_ref().map(ToString::to_string),
                    "roster push from someone other than the account's server: ignored"
                );
                return Some(None);
            }
            push(ctx, st, account, payload).await;
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

/// Whether a roster push comes from the account's server: no `from` (the account
/// implicitly), or the account's bare JID (RFC 6121 §2.1.6).
fn from_the_account(from: Option<&Jid>, account: &BareJid) -> bool {
    from.is_none_or(|f| f.resource().is_none() && f.to_bare() == *account)
}

/// What a roster push changes for the link, given the contacts the roster had
/// subscribed to the account (`known`, updated): the bare JIDs of its users now
/// subscribed (`from`, `both`), and of those no longer — removed from the roster, or
/// `none` or `to` after being subscribed. (A `none` for a contact who was not
/// subscribed is no loss: the bot asking a user for their presence, after an ad-hoc
/// command subscription, adds them so; their command subscription stays.)
fn changes(query: &Element, known: &mut HashSet<String>) -> (Vec<String>, Vec<String>) {
    let (mut gained, mut lost) = (Vec::new(), Vec::new());
    for item in query.children().filter(|c| c.is("item", NS_ROSTER)) {
        let Some(jid) = item.attr("jid").and_then(|j| j.parse::<BareJid>().ok()) else {
            continue;
        };
        if jid.node().is_none() {
            continue;
        }
        let jid = jid.to_string();
        match item.attr("subscription") {
            Some("from" | "both") => {
                known.insert(jid.clone());
                gained.push(jid);
            }
            Some("remove") => {
                known.remove(&jid);
                lost.push(jid);
            }
            // No `subscription` is `none` (RFC 6121 §2.1.2.5).
            Some("none" | "to") | None => {
                if known.remove(&jid) {
                    lost.push(jid);
                }
            }
            Some(_) => {}
        }
    }
    (gained, lost)
}

/// Applies a roster push: a contact no longer subscribed to the account loses every
/// push from it, command subscriptions included (as their `unsubscribe` would end
/// them); one subscribed gets the push the rebuild at login makes, if the link lacks
/// it, started at once if they are online.
async fn push(ctx: &Arc<LinkCtx>, st: &mut Session, account: &BareJid, query: &Element) {
    let (gained, lost) = changes(query, &mut st.roster);
    let ours = account.to_string();
    for user in &lost {
        let ended = presence::unsubscribe_all(ctx, st, user, &ours);
        if ended > 0 {
            tracing::info!(
                user,
                ended,
                "roster push: the contact is no longer subscribed to the bot; their pushes end"
            );
        }
    }
    if gained.is_empty() {
        return;
    }
    rebuild(ctx, account, &gained).await;
    for user in &gained {
        if st.presence.is_online(user) {
            presence::start_pushes(ctx, st, user);
        }
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

    #[test]
    fn a_push_gains_the_subscribed_and_loses_those_no_longer() {
        let q: Element = format!(
            "<query xmlns='{NS_ROSTER}'>\
             <item jid='al@x' subscription='both'/>\
             <item jid='bo@x' subscription='remove'/>\
             <item jid='cy@x' subscription='to'/>\
             <item jid='di@x' subscription='none' ask='subscribe'/>\
             <item jid='ed@x'/>\
             <item jid='fa@x' subscription='from'/>\
             <item jid='gu@x' subscription='none' ask='subscribe'/>\
             <item jid='conference.x' subscription='remove'/>\
             </query>"
        )
        .parse()
        .unwrap();
        let mut known: HashSet<String> = ["bo@x", "cy@x", "di@x", "ed@x", "fa@x"]
            .map(String::from)
            .into();
        let (gained, lost) = changes(&q, &mut known);
        assert_eq!(gained, ["al@x", "fa@x"]);
        // gu@x was never subscribed (the bot asking them): no loss.
        assert_eq!(lost, ["bo@x", "cy@x", "di@x", "ed@x"]);
        let mut known: Vec<_> = known.into_iter().collect();
        known.sort();
        assert_eq!(known, ["al@x", "fa@x"]);
    }

    #[test]
    fn only_the_account_may_push_its_roster() {
        let account: BareJid = "bot@x".parse().unwrap();
        let jid = |s: &str| s.parse::<Jid>().unwrap();
        assert!(from_the_account(None, &account));
        assert!(from_the_account(Some(&jid("bot@x")), &account));
        assert!(!from_the_account(Some(&jid("bot@x/pc")), &account));
        assert!(!from_the_account(Some(&jid("x")), &account));
        assert!(!from_the_account(Some(&jid("eve@x")), &account));
    }
}
