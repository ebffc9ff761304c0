//! An AMQP link's validated settings (`links.NAME.amqp` in the settings file; see
//! `docs/configuration.md#amqp-links`).

use std::path::Path;
use std::time::Duration;

use lapin::uri::AMQPUri;
use serde::Deserialize;

use crate::link::SettingsCheck;

/// The settings file's form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpLink {
    /// `amqp://HOST:PORT/VHOST` or `amqps://…` (vhost `/` is written `%2f`). May carry
    /// `user:password@`, though `username` with `password_env` / `password_file` keeps
    /// the secret out of the file.
    pub uri: String,
    pub username: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored); relative to the settings file.
    pub password_file: Option<String>,
    /// Heartbeat interval, seconds (0 disables; default 30).
    pub heartbeat: Option<u16>,
    /// Unacknowledged messages RabbitMQ may push per consumed source (default
    /// [`DEFAULT_PREFETCH`]).
    pub prefetch: Option<u16>,
    /// Publishes awaiting a confirm at once (default [`DEFAULT_PUBLISH_WINDOW`]).
    pub publish_window: Option<usize>,
    /// Messages held in the core for this link while it is down or slow (default
    /// 100000); publishers beyond that wait.
    pub max_pending: Option<usize>,
    /// Attempts for a publish that RabbitMQ nacks or returns unroutable (default 3).
    pub publish_attempts: Option<u32>,
    /// Internal queue for messages that could not be published (default `dead.LINK`).
    pub dead_letter: Option<String>,
    /// First reconnect delay (default `200ms`) and the cap (default `30s`).
    pub reconnect_initial: Option<String>,
    pub reconnect_max: Option<String>,
    /// How long a request waits for its reply through direct reply-to (default `5m`).
    pub reply_timeout: Option<String>,
    /// PEM file of CA certificates to trust for `amqps://` (default: the system's).
    pub ca_file: Option<String>,
}

/// Default `prefetch` and `publish_window`: 1,000, as RabbitMQ's own shovel prefetches.
/// Moving 100,000 persistent 256 B messages queue → queue (`scripts/bench amqp`, against
/// the shovel), 256 for both moved 0.85× the shovel's msgs/s and 1,000 0.94× (issue 26):
/// with 256 the link waited on RabbitMQ's round trips (deliveries and confirms) more
/// often than RabbitMQ waited on the link. A window holds at most this many messages
/// per source and per link in memory.
pub const DEFAULT_PREFETCH: u16 = 1000;
pub const DEFAULT_PUBLISH_WINDOW: usize = 1000;

/// Validated.
#[derive(Clone)]
pub struct AmqpLinkSettings {
    pub name: String,
    pub uri: AMQPUri,
    pub prefetch: u16,
    pub publish_window: usize,
    pub max_pending: usize,
    pub publish_attempts: u32,
    pub dead_letter: String,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub reply_timeout: Duration,
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for AmqpLinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("AmqpLinkSettings")
            .field("name", &self.name)
            .field("uri", &self.shown_uri())
            .field("prefetch", &self.prefetch)
            .field("publish_window", &self.publish_window)
            .finish_non_exhaustive()
    }
}

impl AmqpLinkSettings {
    /// The URI without credentials, for logs and the admin API.
    pub fn shown_uri(&self) -> String {
        let u = &self.uri;
        let scheme = match u.scheme {
            lapin::uri::AMQPScheme::AMQP => "amqp",
            lapin::uri::AMQPScheme::AMQPS => "amqps",
        };
        format!(
            "{scheme}://{}@{}:{}/{}",
            u.authority.userinfo.username,
            u.authority.host,
            u.authority.port,
            u.vhost.replace('/', "%2f")
        )
    }

    pub fn username(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// Validates `raw`; `lookup_env` reads environment variables (tests pass their own).
    pub fn from_raw(
        name: &str,
        raw: RawAmqpLink,
        base: &Path,
        lookup_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let here = format!("links.{name}.amqp");
        let mut uri: AMQPUri = match raw.uri.parse() {
            Ok(u) => u,
            Err(e) => {
                // The parser's message does not echo the URI (which may hold a password).
                return Err(vec![format!("{here}.uri: not an AMQP URI: {e}")]);
            }
        };
        if let Some(u) = raw.username {
            uri.authority.userinfo.username = u;
        }
        let mut check = SettingsCheck {
            here: here.clone(),
            errors: &mut errors,
        };
        if let Some(p) = check.secret(
            ["password_env", "password_file"],
            (None, raw.password_env, raw.password_file),
            base,
            lookup_env,
            "give password_env or password_file, not both",
        ) {
            uri.authority.userinfo.password = p;
        }
        uri.query.heartbeat = Some(raw.heartbeat.unwrap_or(30));
        let (reconnect_initial, reconnect_max) =
            check.reconnect(raw.reconnect_initial, raw.reconnect_max);
        let reply_timeout =
            check.duration("reply_timeout", raw.reply_timeout, Duration::from_secs(300));
        let dead_letter = check.dead_letter(name, raw.dead_letter);
        let publish_window =
            check.count("publish_window", raw.publish_window, DEFAULT_PUBLISH_WINDOW);
        let max_pending = check.count("max_pending", raw.max_pending, 100_000);
        let prefetch = check.count(
            "prefetch",
            raw.prefetch.map(usize::from),
            usize::from(DEFAULT_PREFETCH),
        ) as u16;
        let publish_attempts = check.count(
            "publish_attempts",
            raw.publish_attempts.map(|a| a as usize),
            3,
        ) as u32;
        let ca_pem = raw
            .ca_file
            .and_then(|f| match std::fs::read_to_string(base.join(&f)) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(format!("{here}.ca_file: cannot read `{f}`: {e}"));
                    None
                }
            });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            name: name.to_owned(),
            uri,
            prefetch,
            publish_window,
            max_pending,
            publish_attempts,
            dead_letter,
            reconnect_initial,
            reconnect_max,
            reply_timeout,
            ca_pem,
        })
    }
}

/// Link names become part of internal queue names and reply addresses.
pub fn check_link_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "link name `{name}`: use letters, digits, `-` and `_` only"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(uri: &str) -> RawAmqpLink {
        serde_json::from_value(serde_json::json!({ "uri": uri })).unwrap()
    }

    #[test]
    fn password_from_env_is_used_and_never_shown() {
        let mut r = raw("amqp://127.0.0.1:5672/%2f");
        r.username = Some("svc".into());
        r.password_env = Some("PW".into());
        let s = AmqpLinkSettings::from_raw("rabbit", r, Path::new("."), &|k| {
            (k == "PW").then(|| "s3cret".to_owned())
        })
        .unwrap();
        assert_eq!(s.uri.authority.userinfo.password, "s3cret");
        assert_eq!(s.uri.vhost, "/");
        assert_eq!(s.shown_uri(), "amqp://svc@127.0.0.1:5672/%2f");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn missing_env_and_bad_values_are_reported() {
        let mut r = raw("amqp://h/%2f");
        r.password_env = Some("NOPE".into());
        r.prefetch = Some(0);
        let e = AmqpLinkSettings::from_raw("l", r, Path::new("."), &|_| None).unwrap_err();
        assert!(e.iter().any(|e| e.contains("NOPE")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("prefetch")), "{e:?}");
        let e = AmqpLinkSettings::from_raw("l", raw("http://x"), Path::new("."), &|_| None)
            .unwrap_err();
        assert!(e[0].contains("not an AMQP URI"), "{e:?}");
    }

    #[test]
    fn link_names_are_restricted() {
        assert!(check_link_name("rabbit-1").is_ok());
        assert!(check_link_name("a.b").is_err());
        assert!(check_link_name("").is_err());
    }
}
