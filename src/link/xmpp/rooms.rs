//! Group chats (XEP-0045): joining the configured rooms, unlocking a room our join
//! created, staying in them (a self-ping, XEP-0410, every `room_ping` finds out that we
//! were kicked silently or the server restarted, and we join again; a taken nick is
//! retried with a suffix), and the rooms' subjects and occupants' joins and leaves as
//! events.

use tokio_xmpp::Stanza;
use tokio_xmpp::minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::DefinedCondition;

use super::link::LinkCtx;
use super::settings::{Room, XmppLinkSettings};

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// The presence that joins room `r` under its nick, without the room's history: what
/// was said before is not news, and replaying it would re-route old messages. `None`
/// when the room or our JID is not a JID.
pub(super) fn join(settings: &XmppLinkSettings, r: &Room) -> Option<Presence> {
    let (Ok(occupant), Ok(ours)) = (
        format!("{}/{}", r.room, r.nick).parse::<Jid>(),
        r.jid.parse::<Jid>(),
    ) else {
        return None;
    };
    let mut join = Presence::new(PresenceType::None);
    join.from = settings.stamp(&ours);
    join.to = Some(occupant);
    join.payloads.push(
        Element::builder("x", NS_MUC)
            .append(
                Element::builder("history", NS_MUC)
                    .attr(
                        tokio_xmpp::minidom::rxml::xml_ncname!("maxstanzas").into(),
                        "0",
                    )
                    .build(),
            )
            .build(),
    );
    Some(join)
}

/// When our join created a room (status 201), it stays locked until its owner (we)
/// accepts the default configuration: an "instant room" (XEP-0045 §10.1.2).
pub(super) fn instant_room(ctx: &LinkCtx, st: &Rooms, p: &Presence) -> Option<Iq> {
    let from = p.from.as_ref()?;
    let bare = from.to_bare().to_string();
    let nick = st.nick_in(&ctx.settings, &bare)?;
    if from.resource().is_none_or(|n| n.as_str() != nick) {
        return None;
    }
    let room = &ctx.settings.rooms[index(&ctx.settings, &bare)?];
    let created = p.payloads.iter().any(|x| {
        x.is("x", NS_MUC_USER)
            && x.children()
                .any(|c| c.is("status", NS_MUC_USER) && c.attr("code") == Some("201"))
    });
    if !created {
        return None;
    }
    tracing::info!(room = %room.room, "created the room; configuring it as an instant room");
    let form = Element::builder("x", "jabber:x:data")
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("type").into(),
            "submit",
        )
        .build();
    Some(Iq::Set {
        from: room.jid.parse().ok().and_then(|j| ctx.settings.stamp(&j)),
        to: room.room.parse().ok(),
        id: format!("sb-room-{nick}"),
        payload: Element::builder("query", NS_MUC_OWNER).append(form).build(),
    })
}

/// How many suffixed nicks a join tries after a nick conflict (`sb-2` … `sb-6`).
const MAX_NICK_TRIES: u32 = 5;

/// A session's rooms: per configured room (in the order of the settings), the nick in
/// use, whether we are in, and our self-ping (XEP-0410) awaiting its answer.
pub(super) struct Rooms {
    rooms: Vec<RoomState>,
    pings: u64,
    /// When to ping each room again (or rejoin one we are out of).
    pub tick: tokio::time::Interval,
}

struct RoomState {
    nick: String,
    joined: bool,
    /// Nick conflicts since the last successful join.
    conflicts: u32,
    ping: Option<String>,
    /// The occupants' nicks we know, for join and leave events.
    occupants: std::collections::BTreeSet<String>,
}

impl Rooms {
    pub fn new(settings: &XmppLinkSettings) -> Self {
        let period = settings.room_ping;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            rooms: settings
                .rooms
                .iter()
                .map(|r| RoomState {
                    nick: r.nick.clone(),
                    joined: false,
                    conflicts: 0,
                    ping: None,
                    occupants: Default::default(),
                })
                .collect(),
            pings: 0,
            tick,
        }
    }

    /// The nick we use in the configured room `room` (a bare JID), if it is one.
    pub fn nick_in(&self, settings: &XmppLinkSettings, room: &str) -> Option<&str> {
        let i = index(settings, room)?;
        Some(self.rooms[i].nick.as_str())
    }
}

/// The index of the configured room `room` (a bare JID).
fn index(settings: &XmppLinkSettings, room: &str) -> Option<usize> {
    settings
        .rooms
        .iter()
        .position(|r| r.room.eq_ignore_ascii_case(room))
}

/// The join of room `i` under the nick in use.
fn rejoin(settings: &XmppLinkSettings, st: &Rooms, i: usize) -> Option<Stanza> {
    let r = &settings.rooms[i];
    let r = Room {
        nick: st.rooms[i].nick.clone(),
        ..r.clone()
    };
    join(settings, &r).map(Stanza::Presence)
}

/// Every `room_ping`: a room we are out of is joined again; one whose last self-ping
/// went unanswered too (a server restart, a kick we were not told about); the others
/// are pinged at our occupant JID.
pub(super) fn tick(settings: &XmppLinkSettings, st: &mut Rooms) -> Vec<Stanza> {
    let mut out = Vec::new();
    for i in 0..st.rooms.len() {
        let r = &settings.rooms[i];
        let s = &mut st.rooms[i];
        if !s.joined || s.ping.take().is_some() {
            if s.joined {
                tracing::warn!(room = %r.room, nick = %s.nick, "room self-ping unanswered: joining again");
            } else {
                tracing::info!(room = %r.room, nick = %s.nick, "not in the room: joining again");
            }
            out.extend(rejoin(settings, st, i));
            continue;
        }
        st.pings += 1;
        let id = format!("sb-selfping-{i}-{}", st.pings);
        let (Ok(to), Ok(ours)) = (
            format!("{}/{}", r.room, s.nick).parse::<Jid>(),
            r.jid.parse::<Jid>(),
        ) else {
            continue;
        };
        s.ping = Some(id.clone());
        out.push(Stanza::Iq(Iq::Get {
            from: settings.stamp(&ours),
            to: Some(to),
            id,
            payload: Element::builder("ping", super::iq::NS_PING).build(),
        }));
    }
    out
}

/// The answer to a self-ping, if `iq` is one; what to send then (a join, when the room
/// says we are not in it). `service-unavailable` and `feature-not-implemented` come
/// from our own occupant when the room forwards the ping: we are in (XEP-0410 §4).
pub(super) fn pong(settings: &XmppLinkSettings, st: &mut Rooms, iq: &Iq) -> Option<Vec<Stanza>> {
    let (id, error) = match iq {
        Iq::Result { id, .. } => (id, None),
        Iq::Error { id, error, .. } => (id, Some(error)),
        _ => return None,
    };
    let i = st.rooms.iter().position(|s| s.ping.as_ref() == Some(id))?;
    st.rooms[i].ping = None;
    let in_room = error.is_none_or(|e| {
        matches!(
            e.defined_condition,
            DefinedCondition::ServiceUnavailable | DefinedCondition::FeatureNotImplemented
        )
    });
    if in_room {
        return Some(Vec::new());
    }
    let s = &mut st.rooms[i];
    tracing::warn!(room = %settings.rooms[i].room, nick = %s.nick, condition = ?error.map(|e| &e.defined_condition), "room self-ping: not in the room any more; joining again");
    s.joined = false;
    s.occupants.clear();
    Some(rejoin(settings, st, i).into_iter().collect())
}

/// The status codes of a room presence (XEP-0045 `<x xmlns='…muc#user'><status/>`).
fn status_codes(p: &Presence) -> Vec<String> {
    p.payloads
        .iter()
        .filter(|x| x.is("x", NS_MUC_USER))
        .flat_map(|x| x.children())
        .filter(|c| c.is("status", NS_MUC_USER))
        .filter_map(|c| c.attr("code").map(str::to_owned))
        .collect()
}

/// A presence from a configured room: our join (or its refusal: another nick on a
/// conflict), occupants joining and leaving (events); `None` when `p` is not from a
/// configured room, or is an error other than a nick conflict (the presence handler
/// logs those). Returns what to send and the events to publish.
pub(super) fn presence(
    settings: &XmppLinkSettings,
    st: &mut Rooms,
    p: &Presence,
) -> Option<(Vec<Stanza>, Vec<serde_json::Value>)> {
    let from = p.from.as_ref()?;
    let room = from.to_bare().to_string();
    let i = index(settings, &room)?;
    let nick = from.resource().map(|r| r.to_string()).unwrap_or_default();
    let codes = status_codes(p);
    let s = &mut st.rooms[i];
    let ours = nick == s.nick || codes.iter().any(|c| c == "110");
    match p.type_ {
        PresenceType::Error => {
            let conflict = p.payloads.iter().any(|e| {
                e.name() == "error"
                    && e.children()
                        .any(|c| c.name() == "conflict" && c.ns() == NS_STANZAS)
            });
            if !conflict {
                return None;
            }
            s.conflicts += 1;
            if s.conflicts > MAX_NICK_TRIES {
                tracing::warn!(room, nick = %s.nick, "nick taken in the room, and the suffixed ones too: not joining until the next ping");
                s.conflicts = 0;
                s.nick = settings.rooms[i].nick.clone();
                return Some((Vec::new(), Vec::new()));
            }
            let taken = std::mem::replace(
                &mut s.nick,
                format!("{}-{}", settings.rooms[i].nick, s.conflicts + 1),
            );
            tracing::info!(room, taken, nick = %s.nick, "nick taken in the room: joining with another");
            Some((rejoin(settings, st, i).into_iter().collect(), Vec::new()))
        }
        PresenceType::None => {
            let mut events = Vec::new();
            if ours && !s.joined {
                s.joined = true;
                s.conflicts = 0;
                tracing::info!(room, nick = %s.nick, "in the room");
            }
            if s.occupants.insert(nick.clone()) {
                events.push(serde_json::json!({
                    "event": "joined", "room": room, "nick": nick, "self": ours,
                    "jid": real_jid(p),
                }));
            }
            Some((Vec::new(), events))
        }
        PresenceType::Unavailable => {
            let mut events = Vec::new();
            if s.occupants.remove(&nick) || ours {
                events.push(serde_json::json!({
                    "event": "left", "room": room, "nick": nick, "self": ours,
                    "jid": real_jid(p), "codes": codes,
                }));
            }
            // 303: a nick change, which the next presence completes.
            if ours && !codes.iter().any(|c| c == "303") {
                tracing::warn!(room, nick = %s.nick, ?codes, "out of the room (kicked, banned, or the room closed): joining again at the next ping");
                s.joined = false;
                s.occupants.clear();
            }
            Some((Vec::new(), events))
        }
        _ => Some((Vec::new(), Vec::new())),
    }
}

/// The occupant's real JID, when the room shows it.
fn real_jid(p: &Presence) -> Option<String> {
    p.payloads
        .iter()
        .filter(|x| x.is("x", NS_MUC_USER))
        .flat_map(|x| x.children())
        .find(|c| c.is("item", NS_MUC_USER))
        .and_then(|c| c.attr("jid").map(str::to_owned))
}

/// The subject of a configured room, from a message that sets it (or repeats it, at the
/// end of our join), as an event.
pub(super) fn subject(settings: &XmppLinkSettings, m: &Message) -> Option<serde_json::Value> {
    let from = m.from.as_ref()?;
    let room = from.to_bare().to_string();
    index(settings, &room)?;
    if m.type_ != MessageType::Groupchat || !m.bodies.is_empty() {
        return None;
    }
    let subject = m.subjects.values().next().cloned()?;
    Some(serde_json::json!({
        "event": "subject", "room": room,
        "nick": from.resource().map(|r| r.to_string()),
        "subject": subject,
    }))
}

/// Publishes a room event through the `presence` routes whose pattern matches the
/// room's bare JID.
pub(super) async fn event(ctx: &LinkCtx, e: serde_json::Value) {
    let room = e["room"].as_str().unwrap_or_default().to_owned();
    let occupant = match e["nick"].as_str() {
        Some(n) => format!("{room}/{n}"),
        None => room.clone(),
    };
    let mut m = crate::core::Message::new(e.to_string()).with_content_type("application/json");
    m.origin = crate::core::Origin::new("xmpp", &occupant);
    m.headers
        .set(super::convert::FROM_HEADER, occupant.as_str());
    let payload = m.body.len();
    match ctx
        .router
        .publish_from_xmpp(&ctx.settings.name, &room, true, m)
        .await
    {
        Ok(Some(_)) => ctx.status.received(payload),
        Ok(None) => {}
        Err(e) => tracing::warn!(room, error = %e, "cannot publish a room event"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use xmpp_parsers::stanza_error::{ErrorType, StanzaError};

    use super::*;

    fn settings() -> XmppLinkSettings {
        let raw = serde_json::from_value(serde_json::json!({
            "jid": "bot@example.org", "password": "pw", "room_ping": "1s",
            "rooms": [{"room": "ops@conference.example.org", "nick": "sb"}]}))
        .unwrap();
        XmppLinkSettings::from_raw_client("bot", raw, Path::new("."), &|_| None).unwrap()
    }

    fn from_room(nick: &str, t: PresenceType, payload: Option<Element>) -> Presence {
        let mut p = Presence::new(t);
        p.from = Some(
            format!("ops@conference.example.org/{nick}")
                .parse()
                .unwrap(),
        );
        p.payloads.extend(payload);
        p
    }

    /// The joins among `out`, as the occupant JIDs they go to.
    fn joins(out: &[Stanza]) -> Vec<String> {
        out.iter()
            .filter_map(|s| match s {
                Stanza::Presence(p) => p.to.as_ref().map(ToString::to_string),
                _ => None,
            })
            .collect()
    }

    fn ping_id(out: &[Stanza]) -> String {
        match out {
            [Stanza::Iq(Iq::Get { id, to, .. })] => {
                assert_eq!(
                    to.as_ref().unwrap().to_string(),
                    "ops@conference.example.org/sb"
                );
                id.clone()
            }
            other => panic!("not one ping: {other:?}"),
        }
    }

    fn error(id: &str, c: DefinedCondition) -> Iq {
        Iq::Error {
            from: None,
            to: None,
            id: id.into(),
            error: StanzaError::new(ErrorType::Cancel, c, "en", ""),
            payload: None,
        }
    }

    #[tokio::test]
    async fn a_self_ping_unanswered_or_refused_rejoins_and_a_taken_nick_gets_a_suffix() {
        let s = settings();
        let mut st = Rooms::new(&s);
        // Not in yet: the tick joins.
        assert_eq!(joins(&tick(&s, &mut st)), ["ops@conference.example.org/sb"]);
        let (out, events) =
            presence(&s, &mut st, &from_room("sb", PresenceType::None, None)).unwrap();
        assert!(out.is_empty());
        assert_eq!(events[0]["event"], "joined");
        assert_eq!(events[0]["self"], true);
        // In: pinged; answered "service-unavailable" by our own occupant: still in.
        let id = ping_id(&tick(&s, &mut st));
        let ok = pong(
            &s,
            &mut st,
            &error(&id, DefinedCondition::ServiceUnavailable),
        )
        .unwrap();
        assert!(ok.is_empty());
        // Unanswered until the next tick: joined again.
        let _ = ping_id(&tick(&s, &mut st));
        assert_eq!(joins(&tick(&s, &mut st)), ["ops@conference.example.org/sb"]);
        // "not-acceptable": not in the room any more, joined again at once.
        let _ = presence(&s, &mut st, &from_room("sb", PresenceType::None, None));
        let id = ping_id(&tick(&s, &mut st));
        let again = pong(&s, &mut st, &error(&id, DefinedCondition::NotAcceptable)).unwrap();
        assert_eq!(joins(&again), ["ops@conference.example.org/sb"]);
        // Someone else's iq is not ours.
        assert!(
            pong(
                &s,
                &mut st,
                &error("other", DefinedCondition::NotAcceptable)
            )
            .is_none()
        );
        // The nick is taken: the join is retried as sb-2, which the echo check then uses.
        let conflict = Element::builder("error", "jabber:client")
            .append(Element::builder("conflict", NS_STANZAS).build())
            .build();
        let (out, _) = presence(
            &s,
            &mut st,
            &from_room("sb", PresenceType::Error, Some(conflict)),
        )
        .unwrap();
        assert_eq!(joins(&out), ["ops@conference.example.org/sb-2"]);
        assert_eq!(st.nick_in(&s, "ops@conference.example.org"), Some("sb-2"));
    }
}
