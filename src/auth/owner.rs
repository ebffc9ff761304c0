//! Who owns an internal queue name.
//!
//! The router makes queues for sessions, users and connections: an MQTT session's queue,
//! a shared subscription group's queue, a user's durable STOMP subscription, a STOMP
//! connection's temporary queue, the private queue behind a topic subscription, a link's
//! outbound queue, XMPP push subscriptions. They share the queue namespace with the
//! queues clients name, so without an owner a client allowed `queue:#` (or allowed
//! everything) could consume or write another user's messages by spelling the name.
//!
//! This module is the one place that reads an internal name and says whose it is; the
//! checks of [`super::Principal`] apply it on every path a client names a queue by
//! (subscribe, send, per-delivery read), and the admin API can ask [`is_private`] /
//! [`owner_of`] before listing or browsing. Routes are the operator's and are exempt.
//!
//! | name | owner | subscribe / read | send |
//! |---|---|---|---|
//! | `$sb.tmp.TOKEN.NAME` | its STOMP connection | only through `/temp-queue/NAME` | whoever was handed the address (the token is 128 random bits) |
//! | `$sb.reply.amqp.…`, `$sb.reply.xmpp.…` | a link's reply address | never | under the `publish` rules |
//! | `$sb.…` (subscriptions, links, push) | the router | never | never |
//! | `$mqtt.s.CLIENT`, `$mqtt.share.…` | an MQTT session / shared group | only through the session | never |
//! | `stomp.USER.NAME` | the user USER (escaped) | USER, under the rules | USER, under the rules |

use std::borrow::Cow;

use crate::core::PRIVATE_PREFIX;
use crate::router::{AMQP_REPLY_PREFIX, XMPP_REPLY_PREFIX};
use crate::translate::escape::escape_level;
use crate::translate::mqtt_names::MQTT_QUEUE_PREFIX;
use crate::translate::stomp_names::{DURABLE_PREFIX, TEMP_PREFIX};

/// Whose an internal queue name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner<'a> {
    /// The router's own (subscription queues, link queues, XMPP push queues, MQTT
    /// session and shared-group queues): reached only through the router's own paths,
    /// never by a client naming it.
    Router(Private),
    /// A STOMP connection's temporary queue: consumed only by that connection (through
    /// `/temp-queue/`); anyone who was handed its unguessable address may send to it.
    TempQueue,
    /// A link's reply address: sent to under the `publish` rules, never consumed.
    ReplyAddress,
    /// A user's durable subscription; the user name as it appears in the queue name
    /// (escaped with [`escape_level`]).
    User(Cow<'a, str>),
}

/// What kind of router-owned queue a name is (for logs and the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Private {
    MqttSession,
    MqttSharedGroup,
    /// Anything else under `$sb.`: subscription, link and push queues.
    Router,
    /// `stomp.` followed by no `USER.NAME`: reserved, nobody's.
    Reserved,
}

impl Private {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MqttSession => "mqtt-session",
            Self::MqttSharedGroup => "mqtt-shared-group",
            Self::Router => "router",
            Self::Reserved => "reserved",
        }
    }
}

/// The owner of a queue name, or `None` for an ordinary queue that only the
/// permission rules govern.
pub fn owner_of(name: &str) -> Option<Owner<'_>> {
    if name.starts_with(TEMP_PREFIX) {
        return Some(Owner::TempQueue);
    }
    if name.starts_with(AMQP_REPLY_PREFIX) || name.starts_with(XMPP_REPLY_PREFIX) {
        return Some(Owner::ReplyAddress);
    }
    if name.starts_with(PRIVATE_PREFIX) {
        return Some(Owner::Router(Private::Router));
    }
    if let Some(rest) = name.strip_prefix(MQTT_QUEUE_PREFIX) {
        return Some(Owner::Router(if rest.starts_with("share.") {
            Private::MqttSharedGroup
        } else {
            // `$mqtt.s.CLIENT`, and whatever else the MQTT listener may name there.
            Private::MqttSession
        }));
    }
    if let Some(rest) = name.strip_prefix(DURABLE_PREFIX) {
        return Some(match rest.split_once('.') {
            Some((user, n)) if !user.is_empty() && !n.is_empty() => {
                Owner::User(Cow::Borrowed(user))
            }
            _ => Owner::Router(Private::Reserved),
        });
    }
    None
}

/// Does the name belong to a session, user, connection or the router (anything the
/// admin API must not hand to just anyone)?
pub fn is_private(name: &str) -> bool {
    owner_of(name).is_some()
}

/// Is `user` (a login, or `anonymous`) the owner named by `owner`?
pub fn is_user(owner: &Owner<'_>, user: &str) -> bool {
    matches!(owner, Owner::User(u) if *u == escape_level(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(owner_of("orders.eu"), None);
        assert_eq!(owner_of("$SYS.x"), None);
        assert_eq!(
            owner_of("$mqtt.s.kitchen%2E1"),
            Some(Owner::Router(Private::MqttSession))
        );
        assert_eq!(
            owner_of("$mqtt.share.67.762f23"),
            Some(Owner::Router(Private::MqttSharedGroup))
        );
        assert_eq!(
            owner_of("$sb.link.rabbit"),
            Some(Owner::Router(Private::Router))
        );
        assert_eq!(owner_of("$sb.sub.7"), Some(Owner::Router(Private::Router)));
        assert_eq!(owner_of("$sb.tmp.0af3.answers"), Some(Owner::TempQueue));
        assert_eq!(owner_of("$sb.reply.amqp.l.q"), Some(Owner::ReplyAddress));
        assert_eq!(owner_of("$sb.reply.xmpp.l.u.o"), Some(Owner::ReplyAddress));
        assert_eq!(
            owner_of("stomp.alice.feed.eu"),
            Some(Owner::User(Cow::Borrowed("alice")))
        );
        assert_eq!(
            owner_of("stomp.alice"),
            Some(Owner::Router(Private::Reserved))
        );
        assert!(is_private("stomp.x.y") && !is_private("stompy.x.y"));
    }

    #[test]
    fn user_names_with_dots_cannot_pose_as_others() {
        // `bob.x`'s durable subscription `y` is `stomp.bob%2Ex.y`, not bob's `x.y`.
        let o = owner_of("stomp.bob.x.y").unwrap();
        assert!(is_user(&o, "bob"));
        assert!(!is_user(&o, "bob.x"));
        let o = owner_of("stomp.bob%2Ex.y").unwrap();
        assert!(is_user(&o, "bob.x"));
        assert!(!is_user(&o, "bob"));
    }
}
