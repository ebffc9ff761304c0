//! Daemon settings (listeners, queue policies, links, logging) — not routes.
//!
//! YAML is parsed into the serde mirror in [`raw`] (unknown keys refused), then validated
//! into [`Settings`], collecting every error. Only validated settings reach the runtime.
//! With no file at all, [`Settings::embedded_default`] runs the router on loopback with
//! no external service.

mod auth;
mod cluster;
mod connections;
mod durability;
mod links;
mod listeners;
mod mqtt;
mod queues;
pub mod raw;
mod stomp;
mod ws_policy;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::core::CoreConfig;
pub use crate::duration::parse_duration;
use crate::link::amqp::AmqpLinkSettings;
use crate::link::xmpp::XmppLinkSettings;
use crate::listener::mqtt::state::MqttSettings;
use crate::listener::stomp::session::StompSettings;
use crate::routes::{CompileContext, LinkKind};
pub use cluster::{ClusterSettings, check_node, parse_servers};
pub use durability::{DEFAULT_DATA_DIR, Durability, parse_fsync};
pub use listeners::LISTENERS;
use listeners::check_listener_name;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub routes_dir: PathBuf,
    /// Enabled listeners by name (port 0 = any free port).
    pub listeners: BTreeMap<String, SocketAddr>,
    pub core: CoreConfig,
    pub links: BTreeMap<String, LinkKind>,
    /// The AMQP links' settings.
    pub amqp_links: Vec<AmqpLinkSettings>,
    /// The XMPP links' settings.
    pub xmpp_links: Vec<XmppLinkSettings>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Start a W3C trace (a `traceparent` header) for every message published without a
    /// valid one (`log.start_traces`, off by default; docs/operations.md, "Tracing").
    pub start_traces: bool,
    /// How often expired messages are swept out of queues.
    pub sweep_interval: Duration,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: Duration,
    /// Debounce of the routes-directory watcher.
    pub reload_debounce: Duration,
    /// Users, passwords, permissions, anonymous policy (all listeners).
    pub auth: Arc<Auth>,
    pub stomp: StompSettings,
    pub mqtt: MqttSettings,
    /// TLS acceptors by listener name.
    pub tls: BTreeMap<String, crate::tls::Tls>,
    pub durability: Durability,
    /// Most legs one publish may turn into through the route table, worst case
    /// (`routes.max_fanout`; 0: no limit).
    pub max_fanout: u64,
    /// Per-peer-address admission limits, on every listener.
    pub connections: crate::listener::limit::PeerLimits,
    /// Who may use the admin API (admin users, bearer-token digests).
    pub admin: crate::admin::AdminAccess,
    /// Origin policy of the `stomp-ws` listener.
    pub stomp_ws: crate::listener::origin::WsPolicy,
    /// Origin policy of the `mqtt-ws` listener.
    pub mqtt_ws: crate::listener::origin::WsPolicy,
    /// The NATS JetStream cluster this router joins; `None`: it runs alone.
    pub cluster: Option<ClusterSettings>,
}

/// A configuration error, with the file position when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Settings {
    /// Everything on its default: routes in `./routes`, admin API on 127.0.0.1:8161.
    pub fn embedded_default() -> Self {
        Self {
            routes_dir: PathBuf::from("routes"),
            listeners: LISTENERS
                .iter()
                .filter_map(|(n, a)| a.parse().ok().map(|a| ((*n).to_owned(), a)))
                .collect(),
            core: CoreConfig::default(),
            links: BTreeMap::new(),
            amqp_links: Vec::new(),
            xmpp_links: Vec::new(),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            start_traces: false,
            sweep_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            reload_debounce: Duration::from_millis(200),
            auth: Arc::new(Auth::default()),
            stomp: StompSettings::default(),
            mqtt: MqttSettings::default(),
            tls: BTreeMap::new(),
            durability: Durability::default(),
            max_fanout: crate::routes::DEFAULT_MAX_FANOUT,
            connections: Default::default(),
            admin: Default::default(),
            stomp_ws: Default::default(),
            mqtt_ws: Default::default(),
            cluster: None,
        }
    }

    /// Loads and validates a settings file. Relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Self, Vec<ConfigError>> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![ConfigError(format!("{shown}: cannot read: {e}"))])?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, &shown, base)
    }

    /// Parses and validates settings text (`shown` names it in errors).
    pub fn from_yaml(text: &str, shown: &str, base: &Path) -> Result<Self, Vec<ConfigError>> {
        let raw: raw::RawSettings = match serde_saphyr::from_str::<Option<raw::RawSettings>>(text) {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                let loc = e.location();
                let text = e.without_snippet().to_string();
                let message = text
                    .rfind(" at line ")
                    .map_or(text.as_str(), |i| &text[..i]);
                return Err(vec![ConfigError(format!(
                    "{shown}:{}:{}: {message}",
                    loc.map_or(0, |l| l.line()),
                    loc.map_or(0, |l| l.column()),
                ))]);
            }
        };
        validate(raw, shown, base)
    }

    /// Applies `--listen NAME=HOST:PORT` overrides (`NAME=off` disables one).
    pub fn override_listener(&mut self, spec: &str) -> Result<(), ConfigError> {
        let (name, addr) = spec
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("--listen `{spec}`: expected NAME=HOST:PORT")))?;
        check_listener_name(name).map_err(ConfigError)?;
        if addr == "off" {
            self.listeners.remove(name);
            return Ok(());
        }
        let a: SocketAddr = addr.parse().map_err(|e| {
            ConfigError(format!("--listen {name}: `{addr}` is not HOST:PORT ({e})"))
        })?;
        self.listeners.insert(name.to_owned(), a);
        Ok(())
    }

    /// What the route compiler needs to know about these settings.
    pub fn compile_context(&self) -> CompileContext {
        CompileContext {
            links: self.links.clone(),
            known_queues: (!self.core.auto_create_queues)
                .then(|| self.core.queues.keys().cloned().collect::<BTreeSet<_>>()),
            max_fanout: self.max_fanout,
            // Set by whoever reads a routes directory (`load_dir`, `LiveRoutes::load`).
            schema_dir: None,
        }
    }
}

/// A setting the file gives replaces the default in `slot`.
fn set_given<T>(slot: &mut T, given: Option<T>) {
    if let Some(v) = given {
        *slot = v;
    }
}

/// A duration setting that may be `off`. `None`: absent, or refused (the error is
/// recorded under `what`), so the default stays; `Some(None)`: off.
fn duration_or_off(
    v: Option<&str>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Option<Duration>> {
    match v.map(str::trim)? {
        "off" => Some(None),
        v => match parse_duration(v) {
            Ok(t) if !t.is_zero() => Some(Some(t)),
            Ok(_) => {
                errors.push(ConfigError(format!(
                    "{what} must be more than 0 (or `off`)"
                )));
                None
            }
            Err(e) => {
                errors.push(ConfigError(format!("{what}: {e}")));
                None
            }
        },
    }
}

/// Raw settings → typed, section by section over the embedded defaults, collecting every
/// error (in the order of the sections below).
fn validate(raw: raw::RawSettings, shown: &str, base: &Path) -> Result<Settings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut s = Settings::embedded_default();
    if let Some(dir) = raw.routes_dir {
        s.routes_dir = base.join(dir);
    }
    listeners::validate(raw.listeners, shown, &mut s.listeners, &mut errors);
    if let Some(d) = raw.durability {
        durability::validate(d, shown, &mut s.durability, &mut errors);
    }
    queues::validate(raw.queues, shown, &mut s.core, &mut errors);
    links::validate(raw.links, shown, base, &mut s, &mut errors);
    if let Some(a) = raw.auth {
        s.auth = Arc::new(auth::validate(a, shown, &mut s.admin, &mut errors));
    }
    // An XMPP link's `users` name users of `auth.users`: a JID mapped to nobody would
    // silently have no commands.
    for x in &s.xmpp_links {
        for (jid, user) in &x.users {
            if !s.auth.users.contains_key(user) {
                errors.push(ConfigError(format!(
                    "{shown}: links.{}: users: `{jid}` maps to `{user}`, who is not in auth.users",
                    x.name
                )));
            }
        }
    }
    s.tls = listeners::tls(raw.tls, shown, base, &mut errors);
    if let Some(st) = raw.stomp {
        s.stomp_ws = stomp::validate(st, shown, &mut s.stomp, &mut errors);
    }
    if let Some(m) = raw.mqtt {
        s.mqtt_ws = mqtt::validate(m, shown, &mut s.mqtt, &mut errors);
    }
    if let Some(c) = raw.connections {
        connections::validate(c, shown, &mut s.connections, &mut errors);
    }
    if let Some(c) = raw.cluster {
        s.cluster = Some(cluster::validate(c, shown, &mut errors));
    }
    if let Some(r) = raw.routes
        && let Some(v) = r.max_fanout
    {
        s.max_fanout = v;
    }
    if let Some(l) = raw.log {
        if let Some(f) = l.format {
            s.log_format = f;
        }
        if let Some(level) = l.level {
            s.log_level = level;
        }
        set_given(&mut s.start_traces, l.start_traces);
    }
    if let Some(v) = raw.sweep_interval {
        match parse_duration(&v) {
            Ok(d) if !d.is_zero() => s.sweep_interval = d,
            Ok(_) => errors.push(ConfigError(format!(
                "{shown}: sweep_interval must be more than 0"
            ))),
            Err(e) => errors.push(ConfigError(format!("{shown}: sweep_interval: {e}"))),
        }
    }
    if let Some(v) = raw.shutdown_grace {
        match parse_duration(&v) {
            Ok(d) => s.shutdown_grace = d,
            Err(e) => errors.push(ConfigError(format!("{shown}: shutdown_grace: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(s)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn settings_validate_everything() {
        let yaml = "listeners:\n  admin: 127.0.0.1:0\nqueues:\n  defaults:\n    ttl: 30s\n    dead_letter: queue:dlq\n  named:\n    orders:\n      max_length: 10\n      overflow: reject-publish\n";
        let s = Settings::from_yaml(yaml, "t.yaml", Path::new(".")).unwrap();
        assert_eq!(s.core.default_queue.ttl, Some(Duration::from_secs(30)));
        assert_eq!(s.core.queues["orders"].max_length, 10);
        assert_eq!(
            s.core.queues["orders"].ttl,
            Some(Duration::from_secs(30)),
            "named queues inherit defaults"
        );
        let bad = "listeners:\n  nope: 1.2.3.4:5\nqueues:\n  defaults:\n    ttl: soon\n    dead_letter: dlq\n";
        let errs = Settings::from_yaml(bad, "t.yaml", Path::new(".")).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        let unknown = Settings::from_yaml("colour: blue\n", "t.yaml", Path::new(".")).unwrap_err();
        assert!(
            unknown[0]
                .0
                .starts_with("t.yaml:1:1: unknown field `colour`"),
            "{}",
            unknown[0]
        );
    }

    #[test]
    fn an_xmpp_links_users_must_be_users_of_auth() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$4WXl1W4Jq2Sx6hG1lqyHOFQbFR9S2FqKjPAc4Mk3dPw";
        let yaml = format!(
            "links:\n  im:\n    xmpp_client:\n      jid: bot@example.org\n      password: pw\n      room_ping: 0s\n      max_command_subscriptions: 65\n      max_push_subscriptions: 64\n      users: {{\"Alice@Example.org\": alice, \"bob@example.org\": bob, \"example.org\": alice}}\nauth:\n  users:\n    alice: {{password_hash: \"{hash}\"}}\n"
        );
        let e = Settings::from_yaml(&yaml, "t.yaml", Path::new("."))
            .unwrap_err()
            .iter()
            .map(|e| e.0.clone())
            .collect::<Vec<_>>()
            .join("\n");
        for part in [
            "links.im.xmpp_client.room_ping: a duration more than 0",
            "links.im.xmpp_client.users: `example.org` is not a user's bare JID",
            "links.im.xmpp_client.max_command_subscriptions: 65 is more than max_push_subscriptions (64)",
        ] {
            assert!(e.contains(part), "{part} not in:\n{e}");
        }
        let yaml = yaml
            .replace("room_ping: 0s", "room_ping: 2s")
            .replace(
                "max_command_subscriptions: 65",
                "max_command_subscriptions: 64",
            )
            .replace(", \"example.org\": alice", "");
        let e = Settings::from_yaml(&yaml, "t.yaml", Path::new("."))
            .unwrap_err()
            .iter()
            .map(|e| e.0.clone())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            e.contains(
                "links.im: users: `bob@example.org` maps to `bob`, who is not in auth.users"
            ),
            "{e}"
        );
        let yaml = yaml.replace(", \"bob@example.org\": bob", "");
        let s = Settings::from_yaml(&yaml, "t.yaml", Path::new(".")).unwrap();
        let x = &s.xmpp_links[0];
        assert_eq!(x.users["alice@example.org"], "alice");
        assert_eq!(x.room_ping, Duration::from_secs(2));
        assert_eq!(
            (x.max_command_subscriptions, x.max_push_subscriptions),
            (64, 64)
        );
    }
}
