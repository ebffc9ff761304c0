//! Requests (`iq`) to the component: service discovery and pings are answered, anything
//! else is refused with an error.

use std::sync::Arc;

use tokio_xmpp::Stanza;
use tokio_xmpp::minidom::Element;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::link::LinkCtx;
use super::session::{Session, Sink};
use super::{commands, convert};

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub(super) const NS_PING: &str = "urn:xmpp:ping";

pub(super) async fn handle(
    ctx: &Arc<LinkCtx>,
    sink: &mut Sink,
    st: &mut Session,
    iq: Iq,
) -> Result<(), tokio_xmpp::Error> {
    if let Some(send) = super::rooms::pong(&ctx.settings, &mut st.rooms, &iq) {
        for s in send {
            sink.send(s).await?;
        }
        return Ok(());
    }
    if super::presence::resource_answer(ctx, st, &iq).await {
        return Ok(());
    }
    let mut also = Vec::new();
    if let Some(reply) = commands::answer(ctx, st, &iq, &mut also).await {
        sink.send(Stanza::Iq(reply)).await?;
        for s in also {
            sink.send(s).await?;
        }
        return Ok(());
    }
    if let Some(account) = ctx.settings.account()
        && let Some(reply) = super::roster::handle(ctx, st, account, &iq).await
    {
        return match reply {
            Some(r) => sink.send(Stanza::Iq(r)).await,
            None => Ok(()),
        };
    }
    let (from, to, id, payload, is_get) = match iq {
        Iq::Get {
            from,
            to,
            id,
            payload,
        } => (from, to, id, payload, true),
        Iq::Set {
            from,
            to,
            id,
            payload,
        } => (from, to, id, payload, false),
        _ => return Ok(()),
    };
    let (Some(from), Some(to)) = (from, to) else {
        return Ok(());
    };
    let result: Result<Option<Element>, (DefinedCondition, &str)> = if !is_get {
        Err((
            DefinedCondition::ServiceUnavailable,
            "nothing here accepts iq set",
        ))
    } else if payload.is("query", NS_DISCO_INFO) {
        Ok(Some(disco_info(ctx, &to).into()))
    } else if payload.is("query", NS_DISCO_ITEMS) {
        Ok(Some(disco_items(ctx, &to).into()))
    } else if payload.is("ping", NS_PING) {
        Ok(None)
    } else {
        Err((DefinedCondition::ServiceUnavailable, "unsupported request"))
    };
    let reply = match result {
        Ok(payload) => Iq::Result {
            from: Some(to),
            to: Some(from),
            id,
            payload,
        },
        Err((condition, text)) => Iq::Error {
            from: Some(to),
            to: Some(from),
            id,
            error: StanzaError::new(ErrorType::Cancel, condition, "en", text),
            payload: None,
        },
    };
    sink.send(Stanza::Iq(reply)).await
}

fn disco_info(ctx: &LinkCtx, to: &Jid) -> DiscoInfoResult {
    let identity = if ctx.settings.is_client() {
        Identity::new("client", "bot", "en", "Switchboard message router")
    } else if to.node().is_none() {
        Identity::new("gateway", "switchboard", "en", "Switchboard message router")
    } else {
        Identity::new("component", "generic", "en", to.to_string())
    };
    DiscoInfoResult {
        node: None,
        identities: vec![identity],
        features: [
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            convert::NS_RECEIPTS,
            convert::NS_SHIM,
            convert::NS_JSON,
            NS_PING,
            commands::NS_COMMANDS,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
        extensions: Vec::new(),
    }
}

fn disco_items(ctx: &LinkCtx, to: &Jid) -> DiscoItemsResult {
    let items = if to.node().is_none() {
        ctx.router
            .table()
            .xmpp_jids(&ctx.settings.name)
            .into_iter()
            .filter_map(|j| j.parse::<Jid>().ok())
            .map(|jid| Item {
                jid,
                node: None,
                name: None,
            })
            .collect()
    } else {
        Vec::new()
    };
    DiscoItemsResult {
        node: None,
        items,
        rsm: None,
    }
}
