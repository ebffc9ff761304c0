//! Group chats (XEP-0045): joining the configured rooms, and unlocking a room our join
//! created.

use tokio_xmpp::minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::presence::{Presence, Type as PresenceType};

use super::link::LinkCtx;
use super::settings::{Room, XmppLinkSettings};

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

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
pub(super) fn instant_room(ctx: &LinkCtx, p: &Presence) -> Option<Iq> {
    let from = p.from.as_ref()?;
    let room = ctx.settings.rooms.iter().find(|r| {
        r.room.eq_ignore_ascii_case(&from.to_bare().to_string())
            && from.resource().is_some_and(|n| n.as_str() == r.nick)
    })?;
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
        id: format!("sb-room-{}", room.nick),
        payload: Element::builder("query", NS_MUC_OWNER).append(form).build(),
    })
}
