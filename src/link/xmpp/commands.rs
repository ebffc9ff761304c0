//! Ad-hoc commands (XEP-0050, with XEP-0004 forms) on both link kinds: list the routes,
//! show a queue's depth, subscribe the asking JID to a topic (pushed as presence
//! subscriptions are, [`presence::collect`]) and unsubscribe it.
//!
//! Who may run what: the link's `users` map a bare JID (which the user's server
//! authenticated) to a user of `auth.users`, whose permissions each command checks; a
//! JID not mapped is listed no commands and refused every one (`forbidden`). Commands
//! are stateless on our side: a command that needs input answers `execute` with a form
//! and acts on the submitted form, so a session needs no memory here (its id is echoed).
//! What a user may make the link hold is bounded ([`push_caps`]): over a cap, `subscribe`
//! completes with an error note saying which.

use std::sync::Arc;

use tokio_xmpp::Stanza;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use xmpp_parsers::disco::{DiscoItemsResult, Item};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::link::LinkCtx;
use super::presence;
use super::push_caps;
use super::session::Session;
use crate::auth::{Kind, Principal};
use crate::core::Destination;
use crate::core::pattern::Pattern;

pub(super) const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// The commands: node and name.
const COMMANDS: [(&str, &str); 4] = [
    ("routes", "List the routes"),
    ("queue-depth", "Show a queue's depth"),
    ("subscribe", "Subscribe me to a topic"),
    ("unsubscribe", "Unsubscribe me from a topic"),
];

/// A command's answer: the `<command/>` payload, or an error.
type Answer = Result<Element, (ErrorType, DefinedCondition, String)>;

/// Answers `iq` if it is about commands (the command list, or running one), with
/// stanzas to send after the answer in `also`; `None` leaves it to the other handlers.
pub(super) async fn answer(
    ctx: &Arc<LinkCtx>,
    st: &mut Session,
    iq: &Iq,
    also: &mut Vec<Stanza>,
) -> Option<Iq> {
    let (from, to, id, payload, set) = match iq {
        Iq::Get {
            from: Some(f),
            to: Some(t),
            id,
            payload,
        } => (f, t, id, payload, false),
        Iq::Set {
            from: Some(f),
            to: Some(t),
            id,
            payload,
        } => (f, t, id, payload, true),
        _ => return None,
    };
    let user = user_of(ctx, from);
    let result: Answer = if !set
        && payload.is("query", NS_DISCO_ITEMS)
        && payload.attr("node") == Some(NS_COMMANDS)
    {
        Ok(list(to, user.is_some()).into())
    } else if set && payload.is("command", NS_COMMANDS) {
        match user {
            None => {
                tracing::info!(from = %from, "ad-hoc command refused: this JID maps to no user (links.LINK.users)");
                Err((
                    ErrorType::Auth,
                    DefinedCondition::Forbidden,
                    "this JID may run no commands here".into(),
                ))
            }
            Some(p) => run(ctx, st, (from, to), &p, payload, also).await,
        }
    } else {
        return None;
    };
    Some(match result {
        Ok(payload) => Iq::Result {
            from: Some(to.clone()),
            to: Some(from.clone()),
            id: id.clone(),
            payload: Some(payload),
        },
        Err((kind, condition, text)) => Iq::Error {
            from: Some(to.clone()),
            to: Some(from.clone()),
            id: id.clone(),
            error: StanzaError::new(kind, condition, "en", text),
            payload: None,
        },
    })
}

/// The user whose permissions `from` has, if the link maps its bare JID to one.
fn user_of(ctx: &LinkCtx, from: &Jid) -> Option<Principal> {
    let bare = from.to_bare().to_string().to_lowercase();
    let name = ctx.settings.users.get(&bare)?;
    Principal::of_user(&ctx.auth, name)
}

/// The command list (disco#items of the commands node): every command for a mapped
/// JID, none for others.
fn list(to: &Jid, allowed: bool) -> DiscoItemsResult {
    let items = if allowed {
        COMMANDS
            .iter()
            .map(|(node, name)| Item {
                jid: to.clone(),
                node: Some((*node).into()),
                name: Some((*name).into()),
            })
            .collect()
    } else {
        Vec::new()
    };
    DiscoItemsResult {
        node: Some(NS_COMMANDS.into()),
        items,
        rsm: None,
    }
}

async fn run(
    ctx: &Arc<LinkCtx>,
    st: &mut Session,
    (from, to): (&Jid, &Jid),
    p: &Principal,
    cmd: &Element,
    also: &mut Vec<Stanza>,
) -> Answer {
    let node = cmd.attr("node").unwrap_or_default();
    let session = match cmd.attr("sessionid") {
        Some(s) => s.to_owned(),
        None => crate::random::hex_token(8).unwrap_or_else(|_| "sb".into()),
    };
    let reply = |status: &str| Reply {
        node: node.to_owned(),
        session: session.clone(),
        status: status.to_owned(),
    };
    if cmd.attr("action") == Some("cancel") {
        return Ok(reply("canceled").build(None, None));
    }
    let submitted = cmd
        .get_child("x", "jabber:x:data")
        .and_then(|x| DataForm::try_from(x.clone()).ok())
        .filter(|f| f.type_ == DataFormType::Submit);
    let value = |var: &str| {
        submitted.as_ref().and_then(|f| {
            f.fields
                .iter()
                .find(|x| x.var.as_deref() == Some(var))
                .and_then(|x| x.values.first())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
    };
    let user = from.to_bare().to_string();
    let ours = to.to_bare().to_string();
    match node {
        "routes" => {
            let table = ctx.router.table();
            let lines: Vec<String> = table
                .routes
                .iter()
                .map(|r| format!("{}: {}", r.name, r.source_text))
                .collect();
            let mut field = Field::new("routes", FieldType::TextMulti);
            field.label = Some("Routes".into());
            field.values = lines;
            let note = format!("{} routes", table.routes.len());
            Ok(reply("completed").build(Some(result(vec![field])), Some(("info", &note))))
        }
        "queue-depth" => {
            let Some(q) = value("queue") else {
                return Ok(reply("executing").build(Some(ask("queue", "Queue")), None));
            };
            if !p.can_read(&Destination::queue(&q)) {
                return Err(forbidden(p, &format!("may not read queue {q}")));
            }
            let Some(queue) = ctx.router.core().queue(&q) else {
                let note = format!("there is no queue {q}");
                return Ok(reply("completed").build(None, Some(("error", &note))));
            };
            let s = queue.stats();
            let fields = vec![
                Field::text_single("queue", &q),
                Field::text_single("ready", &s.ready.to_string()),
                Field::text_single("unacked", &s.unacked.to_string()),
                Field::text_single("consumers", &s.consumers.to_string()),
            ];
            let note = format!("{q}: {} ready, {} unacked", s.ready, s.unacked);
            Ok(reply("completed").build(Some(result(fields)), Some(("info", &note))))
        }
        "subscribe" => {
            let Some(t) = value("topic") else {
                return Ok(reply("executing").build(Some(ask("topic", "Topic")), None));
            };
            let pattern = Pattern::parse(&t).map_err(|e| {
                (
                    ErrorType::Modify,
                    DefinedCondition::BadRequest,
                    format!("{t}: {e}"),
                )
            })?;
            if !p.can_subscribe(Kind::Topic, &pattern) {
                return Err(forbidden(p, &format!("may not subscribe to topic {t}")));
            }
            let key = format!("{ours}/{t}");
            if let Err(note) = push_caps::check(ctx, &user, &key) {
                return Ok(reply("completed").build(None, Some(("error", &note))));
            }
            presence::collect(ctx, &user, &key, &t)
                .await
                .map_err(|e| (ErrorType::Wait, DefinedCondition::InternalServerError, e))?;
            // They are online (they are asking): push from now on. Their presence, once
            // they accept ours in return, stops and restarts it as for any subscription.
            presence::start_pushes(ctx, st, &user);
            let mut ask = Presence::new(PresenceType::Subscribe);
            ask.from = ctx.settings.stamp(&to.to_bare().into());
            ask.to = Some(from.to_bare().into());
            also.push(Stanza::Presence(ask));
            let note = format!("subscribed to topic {t}");
            Ok(reply("completed").build(None, Some(("info", &note))))
        }
        "unsubscribe" => {
            let Some(t) = value("topic") else {
                return Ok(reply("executing").build(Some(ask("topic", "Topic")), None));
            };
            let key = format!("{ours}/{t}");
            let note = if presence::unsubscribe(ctx, st, &user, &key) {
                format!("unsubscribed from topic {t}")
            } else {
                format!("you were not subscribed to topic {t}")
            };
            Ok(reply("completed").build(None, Some(("info", &note))))
        }
        _ => Err((
            ErrorType::Cancel,
            DefinedCondition::ItemNotFound,
            format!("no command {node}"),
        )),
    }
}

fn forbidden(p: &Principal, what: &str) -> (ErrorType, DefinedCondition, String) {
    tracing::info!(user = p.name(), what, "ad-hoc command refused");
    (
        ErrorType::Auth,
        DefinedCondition::Forbidden,
        format!("{} {what}", p.name()),
    )
}

/// A form asking for one required text value.
fn ask(var: &str, label: &str) -> DataForm {
    let mut f = Field::new(var, FieldType::TextSingle);
    f.label = Some(label.into());
    f.required = true;
    DataForm {
        type_: DataFormType::Form,
        title: None,
        instructions: None,
        fields: vec![f],
    }
}

fn result(fields: Vec<Field>) -> DataForm {
    DataForm {
        type_: DataFormType::Result_,
        title: None,
        instructions: None,
        fields,
    }
}

/// The `<command/>` of an answer.
struct Reply {
    node: String,
    session: String,
    status: String,
}

impl Reply {
    /// With a form (and, while executing, the one action that completes it) and a note
    /// (`type`, text).
    fn build(self, form: Option<DataForm>, note: Option<(&str, &str)>) -> Element {
        let executing = self.status == "executing";
        let mut b = Element::builder("command", NS_COMMANDS)
            .attr(xml_ncname!("node").into(), self.node)
            .attr(xml_ncname!("sessionid").into(), self.session)
            .attr(xml_ncname!("status").into(), self.status);
        if executing {
            b = b.append(
                Element::builder("actions", NS_COMMANDS)
                    .attr(xml_ncname!("execute").into(), "complete")
                    .append(Element::builder("complete", NS_COMMANDS).build())
                    .build(),
            );
        }
        if let Some((kind, text)) = note {
            b = b.append(
                Element::builder("note", NS_COMMANDS)
                    .attr(xml_ncname!("type").into(), kind)
                    .append(text)
                    .build(),
            );
        }
        if let Some(f) = form {
            b = b.append(Element::from(f));
        }
        b.build()
    }
}
