//! An XMPP link's validated settings: `links.NAME.xmpp` (a component, XEP-0114) and
//! `links.NAME.xmpp_client` (an ordinary account); `docs/configuration.md#xmpp-links`.
//! Both kinds share one settings type: what differs is their [`Mode`], and the few
//! places where that matters ask it (which `from` they may send, which lease they take).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use xmpp_parsers::jid::{BareJid, Jid};

use super::client_settings::ClientSettings;
use crate::link::SettingsCheck;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawXmppLink {
    /// The server's component port, `HOST:PORT` (XEP-0114; plain TCP).
    pub server: String,
    /// The component's domain, e.g. `bridge.example.org`.
    pub domain: String,
    /// The shared secret, or where to read it (keeps it out of the file).
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    /// Messages held in the core for this link while it is down (default 100000).
    pub max_pending: Option<usize>,
    /// Internal queue for messages that could not be sent (default `dead.LINK`).
    pub dead_letter: Option<String>,
    pub reconnect_initial: Option<String>,
    pub reconnect_max: Option<String>,
    /// Multi-user chat rooms (XEP-0045) to join on every connect.
    #[serde(default)]
    pub rooms: Vec<RawRoom>,
    /// Domains whose users may subscribe to our JIDs' presence (default: any).
    pub subscriptions_from: Option<Vec<String>>,
    /// Who may run ad-hoc commands: a user's bare JID → a user of `auth.users`.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// How often each joined room is pinged (XEP-0410; default 60s).
    pub room_ping: Option<String>,
    /// Topics one user may hold through the `subscribe` command (default 64).
    pub max_command_subscriptions: Option<usize>,
    /// Push subscriptions the link holds for all users together (default 10000).
    pub max_push_subscriptions: Option<usize>,
}

/// The settings both link kinds have (each raw form lists them itself: serde's
/// `flatten` would lose `deny_unknown_fields`).
#[derive(Debug)]
pub struct RawCommon {
    /// Messages held in the core for this link while it is down (default 100000).
    pub max_pending: Option<usize>,
    /// Internal queue for messages that could not be sent (default `dead.LINK`).
    pub dead_letter: Option<String>,
    pub reconnect_initial: Option<String>,
    pub reconnect_max: Option<String>,
    /// Multi-user chat rooms (XEP-0045) to join on every connect.
    pub rooms: Vec<RawRoom>,
    /// Domains whose users may subscribe to our JIDs' presence (default: any).
    pub subscriptions_from: Option<Vec<String>>,
    pub users: BTreeMap<String, String>,
    pub room_ping: Option<String>,
    pub max_command_subscriptions: Option<usize>,
    pub max_push_subscriptions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoom {
    /// The room's bare JID, e.g. `ops@conference.example.org`.
    pub room: String,
    /// The nickname to join with.
    pub nick: String,
    /// The JID of ours that joins (component: default `NICK@DOMAIN`; a client joins as
    /// its own account): the room's messages arrive addressed to it, so routes take
    /// them with `jid: <this JID>`.
    pub jid: Option<String>,
}

/// A room to join.
#[derive(Debug, Clone)]
pub struct Room {
    pub room: String,
    pub nick: String,
    pub jid: String,
}

/// What the link connects as.
#[derive(Clone)]
pub enum Mode {
    /// An external component serving a domain (XEP-0114).
    Component {
        /// The component port, `IP:PORT`.
        server: String,
        domain: String,
        secret: String,
    },
    /// An ordinary account (c2s).
    Client(ClientSettings),
}

#[derive(Clone)]
pub struct XmppLinkSettings {
    pub name: String,
    pub mode: Mode,
    pub max_pending: usize,
    pub dead_letter: String,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub rooms: Vec<Room>,
    /// Lowercased; `None` accepts subscriptions from any domain.
    pub subscriptions_from: Option<Vec<String>>,
    /// A bare JID (lowercased) → the user of `auth.users` whose permissions its ad-hoc
    /// commands have; a JID not listed may run none.
    pub users: BTreeMap<String, String>,
    /// How often each joined room is pinged (XEP-0410).
    pub room_ping: Duration,
    /// Topics one user (bare JID) may hold through the `subscribe` command: what a
    /// user can make the link keep (a durable subscription each) is bounded.
    pub max_command_subscriptions: usize,
    /// Push subscriptions (presence and command ones) the link holds in all.
    pub max_push_subscriptions: usize,
}

impl XmppLinkSettings {
    /// Whether a user of `domain` may subscribe to our presence.
    pub fn accepts_subscription_from(&self, domain: &str) -> bool {
        self.subscriptions_from
            .as_ref()
            .is_none_or(|list| list.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }

    pub fn is_client(&self) -> bool {
        matches!(self.mode, Mode::Client(_))
    }

    /// The account of a client link.
    pub fn account(&self) -> Option<&BareJid> {
        match &self.mode {
            Mode::Client(c) => Some(&c.jid),
            Mode::Component { .. } => None,
        }
    }

    /// The JID messages come from when a route names none: the component's domain, or
    /// the account.
    pub fn default_from(&self) -> String {
        match &self.mode {
            Mode::Component { domain, .. } => domain.clone(),
            Mode::Client(c) => c.jid.to_string(),
        }
    }

    /// Why the link cannot send from `from`, if it cannot: a component sends from any
    /// JID of its domain, a client only from its own account.
    pub fn refuses_from(&self, from: &str) -> Option<String> {
        let jid = from.parse::<Jid>().ok();
        match &self.mode {
            Mode::Component { domain, .. } => {
                let ok = jid.is_some_and(|j| j.domain().as_str().eq_ignore_ascii_case(domain));
                (!ok).then(|| format!("`from` {from} is outside the component's domain {domain}"))
            }
            Mode::Client(c) => {
                let ok = jid.is_some_and(|j| j.to_bare() == c.jid);
                (!ok).then(|| format!("`from` {from} is not the link's account {}", c.jid))
            }
        }
    }

    /// The `from` to put on a stanza sent as `jid`: a component must say which of its
    /// JIDs sends; a client's server stamps the account's full JID itself.
    pub fn stamp(&self, jid: &Jid) -> Option<Jid> {
        (!self.is_client()).then(|| jid.clone())
    }

    /// The cluster lease of the connection (`GET /cluster` lists it): a server takes one
    /// component connection per domain, and one session per account and resource.
    pub fn lease_name(&self) -> String {
        match &self.mode {
            Mode::Component { domain, .. } => format!("xmpp:{}", domain.to_ascii_lowercase()),
            Mode::Client(c) => format!("xmpp_client:{}", c.jid),
        }
    }

    /// The peer as logs and `GET /links` show it (no secret).
    pub fn peer(&self) -> String {
        match &self.mode {
            Mode::Component { server, domain, .. } => {
                format!("xmpp-component://{domain}@{server}")
            }
            Mode::Client(c) => format!("xmpp-client://{}@{}", c.jid, c.server),
        }
    }

    /// The link's kind in `GET /links`.
    pub fn kind(&self) -> &'static str {
        match self.mode {
            Mode::Component { .. } => "xmpp",
            Mode::Client(_) => "xmpp_client",
        }
    }
}

impl std::fmt::Debug for XmppLinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppLinkSettings")
            .field("name", &self.name)
            .field("peer", &self.peer())
            .finish_non_exhaustive()
    }
}

impl XmppLinkSettings {
    pub fn from_raw(
        name: &str,
        raw: RawXmppLink,
        base: &Path,
        lookup_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let here = format!("links.{name}.xmpp");
        let mut errors = Vec::new();
        let mut check = SettingsCheck {
            here: here.clone(),
            errors: &mut errors,
        };
        const EXACTLY_ONE: &str = "give exactly one of secret, secret_env, secret_file";
        if raw.secret.is_none() && raw.secret_env.is_none() && raw.secret_file.is_none() {
            check.errors.push(format!("{here}: {EXACTLY_ONE}"));
        }
        let secret = check.secret(
            ["secret_env", "secret_file"],
            (raw.secret, raw.secret_env, raw.secret_file),
            base,
            lookup_env,
            EXACTLY_ONE,
        );
        let secret = secret.unwrap_or_default();
        if raw.domain.is_empty() || raw.domain.contains(['@', '/', '*']) {
            errors.push(format!("{here}.domain: `{}` is not a domain", raw.domain));
        }
        // A socket address, as documented: the component port is on loopback or a
        // private network, and the link resolves no host name for it.
        if raw.server.parse::<std::net::SocketAddr>().is_err() {
            errors.push(format!(
                "{here}.server: `{}` is not IP:PORT (a host name is not resolved here)",
                raw.server
            ));
        }
        let common = RawCommon {
            max_pending: raw.max_pending,
            dead_letter: raw.dead_letter,
            reconnect_initial: raw.reconnect_initial,
            reconnect_max: raw.reconnect_max,
            rooms: raw.rooms,
            subscriptions_from: raw.subscriptions_from,
            users: raw.users,
            room_ping: raw.room_ping,
            max_command_subscriptions: raw.max_command_subscriptions,
            max_push_subscriptions: raw.max_push_subscriptions,
        };
        let domain = raw.domain.clone();
        let rooms = common.rooms.iter().map(|r| {
            let jid = r
                .jid
                .clone()
                .unwrap_or_else(|| format!("{}@{}", r.nick.to_lowercase(), domain));
            let in_domain = jid
                .split_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&domain));
            in_domain.then_some(jid).ok_or(format!("a JID in {domain}"))
        });
        let rooms: Vec<_> = rooms.collect();
        let mode = Mode::Component {
            server: raw.server,
            domain: raw.domain,
            secret,
        };
        Self::with_common(name, &here, mode, common, rooms, errors)
    }

    /// Checks the settings both kinds share; `room_jids` says, for each room, the JID
    /// that joins it or what it should have been.
    pub(super) fn with_common(
        name: &str,
        here: &str,
        mode: Mode,
        raw: RawCommon,
        room_jids: Vec<Result<String, String>>,
        mut errors: Vec<String>,
    ) -> Result<Self, Vec<String>> {
        let mut check = SettingsCheck {
            here: here.to_owned(),
            errors: &mut errors,
        };
        let max_pending = check.count("max_pending", raw.max_pending, 100_000);
        let (reconnect_initial, reconnect_max) =
            check.reconnect(raw.reconnect_initial, raw.reconnect_max);
        let dead_letter = check.dead_letter(name, raw.dead_letter);
        let max_command_subscriptions = check.count(
            "max_command_subscriptions",
            raw.max_command_subscriptions,
            64,
        );
        let max_push_subscriptions =
            check.count("max_push_subscriptions", raw.max_push_subscriptions, 10_000);
        if max_command_subscriptions > max_push_subscriptions {
            errors.push(format!(
                "{here}.max_command_subscriptions: {max_command_subscriptions} is more than max_push_subscriptions ({max_push_subscriptions}), which bounds all users together"
            ));
        }
        let room_ping = match raw
            .room_ping
            .as_deref()
            .map(crate::duration::parse_duration)
        {
            None => Duration::from_secs(60),
            Some(Ok(d)) if !d.is_zero() => d,
            Some(_) => {
                errors.push(format!(
                    "{here}.room_ping: a duration more than 0, e.g. 60s"
                ));
                Duration::from_secs(60)
            }
        };
        let mut users = BTreeMap::new();
        for (jid, user) in raw.users {
            match jid.parse::<BareJid>() {
                Ok(j) if j.node().is_some() => {
                    users.insert(j.to_string().to_lowercase(), user);
                }
                _ => errors.push(format!(
                    "{here}.users: `{jid}` is not a user's bare JID (user@domain)"
                )),
            }
        }
        let mut rooms = Vec::new();
        for (r, jid) in raw.rooms.into_iter().zip(room_jids) {
            let room_ok = r.room.parse::<BareJid>().is_ok_and(|j| j.node().is_some());
            match jid {
                Ok(jid) if room_ok && !r.nick.is_empty() => rooms.push(Room {
                    room: r.room,
                    nick: r.nick,
                    jid,
                }),
                jid => errors.push(format!(
                    "{here}.rooms: `{}` as `{}`: give a room's bare JID, a nickname{}",
                    r.room,
                    r.nick,
                    jid.err().map(|e| format!(", and {e}")).unwrap_or_default()
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            name: name.to_owned(),
            mode,
            rooms,
            subscriptions_from: raw
                .subscriptions_from
                .map(|l| l.into_iter().map(|d| d.to_lowercase()).collect()),
            max_pending,
            dead_letter,
            reconnect_initial,
            reconnect_max,
            users,
            room_ping,
            max_command_subscriptions,
            max_push_subscriptions,
        })
    }
}
