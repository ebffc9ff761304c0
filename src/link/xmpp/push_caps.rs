//! Bounds on what users can make the link hold. Every push subscription is a durable
//! subscription in the core (a queue that collects while the user is away), and users
//! create them at will — with the `subscribe` command, one per topic, and by subscribing
//! to presence. So a user may hold at most `max_command_subscriptions` command
//! subscriptions, and the link at most `max_push_subscriptions` in all; beyond, a
//! subscription is refused (the command says why in an error note) and logged once per
//! user until that user is served again, so a user retrying in a loop does not flood
//! the log. What exists already is never taken away: others keep being served.

use super::link::{LinkCtx, lock};

/// Most users remembered as refused ([`check`]'s log-once set).
const MAX_REMEMBERED: usize = 4096;

/// Whether a push subscription's key (the "our JID" half) is a command's: `BARE/TOPIC`
/// (a bare JID has no `/`).
pub(super) fn is_command(ours: &str) -> bool {
    ours.contains('/')
}

/// Whether `user` may hold the push subscription `ours` too: `Err` with the reason to
/// tell them when a cap is reached. One they hold already only replaces itself.
pub(super) fn check(ctx: &LinkCtx, user: &str, ours: &str) -> Result<(), String> {
    let full = {
        let subs = lock(&ctx.subs);
        if subs.contains_key(&(user.to_owned(), ours.to_owned())) {
            None
        } else {
            let s = &ctx.settings;
            let theirs = || {
                subs.keys()
                    .filter(|(u, o)| u == user && is_command(o))
                    .count()
            };
            if is_command(ours) && theirs() >= s.max_command_subscriptions {
                Some(format!(
                    "you hold {} topic subscriptions here, the most one user may: unsubscribe from one first",
                    s.max_command_subscriptions
                ))
            } else if subs.len() >= s.max_push_subscriptions {
                Some(format!(
                    "this link holds {} push subscriptions, the most it may: try again later",
                    s.max_push_subscriptions
                ))
            } else {
                None
            }
        }
    };
    let Some(reason) = full else {
        served(ctx, user);
        return Ok(());
    };
    let first = {
        let mut over = lock(&ctx.over_cap);
        // Users refused are remembered only to log once per episode: any number of
        // JIDs may be refused, so the set is bounded (forgetting costs a repeated line).
        if over.len() >= MAX_REMEMBERED && !over.contains(user) {
            over.clear();
        }
        over.insert(user.to_owned())
    };
    if first {
        tracing::warn!(
            user,
            jid = ours,
            reason,
            "push subscription refused: over a cap (max_command_subscriptions, max_push_subscriptions); logged once until this user is served again"
        );
    }
    Err(reason)
}

/// The user was served (a subscription made or ended): a later refusal is logged again.
pub(super) fn served(ctx: &LinkCtx, user: &str) {
    lock(&ctx.over_cap).remove(user);
}
