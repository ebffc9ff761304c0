//! The settings of a client (bot) link, `links.NAME.xmpp_client`
//! (`docs/configuration.md#xmpp-client-links`): an ordinary account that logs in with
//! SASL over TLS.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use xmpp_parsers::jid::BareJid;

use super::client_tls;
use super::settings::{Mode, RawCommon, RawRoom, XmppLinkSettings};
use crate::link::SettingsCheck;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawXmppClientLink {
    /// The account, a bare JID (`bot@example.org`).
    pub jid: String,
    /// The password, or where to read it (keeps it out of the file).
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    /// The resource to bind (default `switchboard`).
    pub resource: Option<String>,
    /// `HOST:PORT` to connect to (default: the JID's domain, port 5222, or 5223 with
    /// direct TLS). No SRV lookup.
    pub server: Option<String>,
    /// `starttls` (default) or `direct` (XEP-0368).
    pub tls: Option<String>,
    /// PEM file of certificates to trust instead of the system's; a self-signed server
    /// certificate listed there is trusted as it is.
    pub ca_file: Option<String>,
    pub max_pending: Option<usize>,
    pub dead_letter: Option<String>,
    pub reconnect_initial: Option<String>,
    pub reconnect_max: Option<String>,
    #[serde(default)]
    pub rooms: Vec<RawRoom>,
    pub subscriptions_from: Option<Vec<String>>,
    #[serde(default)]
    pub users: std::collections::BTreeMap<String, String>,
    pub room_ping: Option<String>,
    pub max_command_subscriptions: Option<usize>,
    pub max_push_subscriptions: Option<usize>,
}

/// How the connection is encrypted. There is no plain-text mode: the password (or its
/// SCRAM proof) only ever travels inside TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP, then `<starttls/>` before anything else (the server must offer it).
    StartTls,
    /// TLS from the first byte (XEP-0368).
    Direct,
}

#[derive(Clone)]
pub struct ClientSettings {
    pub jid: BareJid,
    pub resource: String,
    pub password: String,
    /// `HOST:PORT`.
    pub server: String,
    pub tls: TlsMode,
    pub tls_config: Arc<rustls::ClientConfig>,
}

impl XmppLinkSettings {
    pub fn from_raw_client(
        name: &str,
        raw: RawXmppClientLink,
        base: &Path,
        lookup_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let here = format!("links.{name}.xmpp_client");
        let mut errors = Vec::new();
        let mut check = SettingsCheck {
            here: here.clone(),
            errors: &mut errors,
        };
        const EXACTLY_ONE: &str = "give exactly one of password, password_env, password_file";
        if raw.password.is_none() && raw.password_env.is_none() && raw.password_file.is_none() {
            check.errors.push(format!("{here}: {EXACTLY_ONE}"));
        }
        let password = check
            .secret(
                ["password_env", "password_file"],
                (raw.password, raw.password_env, raw.password_file),
                base,
                lookup_env,
                EXACTLY_ONE,
            )
            .unwrap_or_default();
        let jid = match raw.jid.parse::<BareJid>() {
            Ok(j) if j.node().is_some() => j,
            _ => {
                errors.push(format!(
                    "{here}.jid: `{}` is not an account's bare JID (user@domain)",
                    raw.jid
                ));
                "invalid@invalid".parse().expect("a JID")
            }
        };
        let tls = match raw.tls.as_deref() {
            None | Some("starttls") => TlsMode::StartTls,
            Some("direct") => TlsMode::Direct,
            Some(other) => {
                errors.push(format!(
                    "{here}.tls: `{other}`: use starttls or direct (there is no plain-text mode)"
                ));
                TlsMode::StartTls
            }
        };
        let port = if tls == TlsMode::Direct { 5223 } else { 5222 };
        let server = raw
            .server
            .unwrap_or_else(|| format!("{}:{port}", jid.domain()));
        let has_port = server
            .rsplit_once(':')
            .is_some_and(|(host, p)| !host.is_empty() && p.parse::<u16>().is_ok());
        if !has_port {
            errors.push(format!("{here}.server: `{server}` is not HOST:PORT"));
        }
        let resource = raw.resource.unwrap_or_else(|| "switchboard".into());
        if resource.is_empty() || resource.contains('/') {
            errors.push(format!("{here}.resource: `{resource}` is not a resource"));
        }
        let ca = raw
            .ca_file
            .and_then(|f| match std::fs::read_to_string(base.join(&f)) {
                Ok(pem) => Some((f, pem)),
                Err(e) => {
                    errors.push(format!("{here}.ca_file: cannot read `{f}`: {e}"));
                    None
                }
            });
        let tls_config = match client_tls::config(ca.as_ref().map(|(_, pem)| pem.as_str())) {
            Ok(c) => Some(c),
            Err(e) => {
                let what = ca.map_or_else(|| "the system's certificates".into(), |(f, _)| f);
                errors.push(format!("{here}.ca_file: {what}: {e}"));
                None
            }
        };
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
        // The account joins rooms as itself: room messages arrive addressed to it.
        let rooms = common
            .rooms
            .iter()
            .map(|r| match &r.jid {
                Some(j) if j.parse::<BareJid>().ok().as_ref() != Some(&jid) => {
                    Err(format!("no `jid` but the account's ({jid})"))
                }
                _ => Ok(jid.to_string()),
            })
            .collect();
        let Some(tls_config) = tls_config else {
            return Err(errors);
        };
        let mode = Mode::Client(ClientSettings {
            jid,
            resource,
            password,
            server,
            tls,
            tls_config,
        });
        XmppLinkSettings::with_common(name, &here, mode, common, rooms, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: serde_json::Value) -> RawXmppClientLink {
        serde_json::from_value(v).unwrap()
    }

    fn errors(v: serde_json::Value) -> Vec<String> {
        XmppLinkSettings::from_raw_client("bot", raw(v), Path::new("."), &|_| None).unwrap_err()
    }

    #[test]
    fn defaults_follow_the_account() {
        let s = XmppLinkSettings::from_raw_client(
            "bot",
            raw(
                serde_json::json!({"jid": "Bot@Example.org", "password": "pw",
                "rooms": [{"room": "ops@conference.example.org", "nick": "sb"}]}),
            ),
            Path::new("."),
            &|_| None,
        )
        .unwrap();
        let Mode::Client(c) = &s.mode else {
            panic!("not a client")
        };
        assert_eq!(c.server, "example.org:5222");
        assert_eq!(c.resource, "switchboard");
        assert_eq!(c.tls, TlsMode::StartTls);
        assert_eq!(s.rooms[0].jid, "bot@example.org");
        assert_eq!(s.lease_name(), "xmpp_client:bot@example.org");
        assert_eq!(s.default_from(), "bot@example.org");
        assert!(s.refuses_from("bot@example.org").is_none());
        assert!(s.refuses_from("other@example.org").is_some());
        assert!(s.stamp(&"bot@example.org".parse().unwrap()).is_none());
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let e = errors(serde_json::json!({"jid": "example.org", "tls": "none",
            "server": "nohost", "rooms": [{"room": "ops@c.example.org", "nick": "n", "jid": "x@y"}]}));
        let text = e.join("\n");
        for part in [
            "links.bot.xmpp_client: give exactly one of password",
            "links.bot.xmpp_client.jid: `example.org` is not an account's bare JID",
            "links.bot.xmpp_client.tls: `none`",
            "links.bot.xmpp_client.server: `nohost` is not HOST:PORT",
            "links.bot.xmpp_client.rooms: `ops@c.example.org` as `n`",
        ] {
            assert!(text.contains(part), "{part} not in:\n{text}");
        }
    }
}
