//! An XMPP link's validated settings (`links.NAME.xmpp`; `docs/configuration.md#xmpp-links`).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoom {
    /// The room's bare JID, e.g. `ops@conference.example.org`.
    pub room: String,
    /// The nickname to join with.
    pub nick: String,
    /// The JID of ours that joins (default `NICK@DOMAIN`): the room's messages arrive
    /// addressed to it, so routes take them with `jid: <this JID>`.
    pub jid: Option<String>,
}

/// A room to join.
#[derive(Debug, Clone)]
pub struct Room {
    pub room: String,
    pub nick: String,
    pub jid: String,
}

#[derive(Clone)]
pub struct XmppLinkSettings {
    pub name: String,
    pub server: String,
    pub domain: String,
    pub secret: String,
    pub max_pending: usize,
    pub dead_letter: String,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub rooms: Vec<Room>,
    /// Lowercased; `None` accepts subscriptions from any domain.
    pub subscriptions_from: Option<Vec<String>>,
}

impl XmppLinkSettings {
    /// Whether a user of `domain` may subscribe to our presence.
    pub fn accepts_subscription_from(&self, domain: &str) -> bool {
        self.subscriptions_from
            .as_ref()
            .is_none_or(|list| list.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }
}

impl std::fmt::Debug for XmppLinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppLinkSettings")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("domain", &self.domain)
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
        let max_pending = check.count("max_pending", raw.max_pending, 100_000);
        let (reconnect_initial, reconnect_max) =
            check.reconnect(raw.reconnect_initial, raw.reconnect_max);
        let dead_letter = check.dead_letter(name, raw.dead_letter);
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

        let mut rooms = Vec::new();
        for r in raw.rooms {
            let jid = r
                .jid
                .unwrap_or_else(|| format!("{}@{}", r.nick.to_lowercase(), raw.domain));
            let in_domain = jid
                .split_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&raw.domain));
            if !r.room.contains('@') || r.room.contains('/') || r.nick.is_empty() || !in_domain {
                errors.push(format!(
                    "{here}.rooms: `{}` as `{}` from `{jid}`: give a room's bare JID, a nickname, and a JID in {}",
                    r.room, r.nick, raw.domain
                ));
                continue;
            }
            rooms.push(Room {
                room: r.room,
                nick: r.nick,
                jid,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            rooms,
            subscriptions_from: raw
                .subscriptions_from
                .map(|l| l.into_iter().map(|d| d.to_lowercase()).collect()),
            name: name.to_owned(),
            server: raw.server,
            domain: raw.domain,
            secret,
            max_pending,
            dead_letter,
            reconnect_initial,
            reconnect_max,
        })
    }
}
