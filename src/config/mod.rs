//! Daemon settings (listeners, queue policies, links, logging) — not routes.
//!
//! YAML is parsed into the serde mirror in [`raw`] (unknown keys refused), then validated
//! into [`Settings`], collecting every error. Only validated settings reach the runtime.
//! With no file at all, [`Settings::embedded_default`] runs the router on loopback with
//! no external service.

pub mod raw;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Auth, Permissions, Rule, User};
use crate::core::{CoreConfig, Destination, QueueOptions};
use crate::link::amqp::AmqpLinkSettings;
use crate::link::xmpp::XmppLinkSettings;
use crate::listener::mqtt::state::MqttSettings;
use crate::listener::stomp::session::StompSettings;
use crate::routes::{CompileContext, LinkKind};

/// Listener names the daemon knows, with their embedded default addresses.
pub const LISTENERS: &[(&str, &str)] = &[
    ("admin", "127.0.0.1:8161"),
    ("stomp", "127.0.0.1:61613"),
    ("stomp-ws", "127.0.0.1:61614"),
    ("mqtt", "127.0.0.1:1883"),
    ("mqtt-ws", "127.0.0.1:8083"),
];

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
}

/// Where and how persistent messages are kept.
#[derive(Debug, Clone)]
pub struct Durability {
    /// The store's directory; `None` keeps everything in memory (`--data-dir off`).
    pub data_dir: Option<PathBuf>,
    pub fsync: crate::store::FsyncPolicy,
    /// Bytes of queued messages above which publishers are blocked.
    pub memory_high_watermark: u64,
    /// Free bytes on the data directory's disk below which publishers are blocked.
    pub disk_free_limit: u64,
}

/// The data directory used when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "data";

impl Default for Durability {
    fn default() -> Self {
        Self {
            data_dir: Some(PathBuf::from(DEFAULT_DATA_DIR)),
            fsync: crate::store::FsyncPolicy::Always,
            memory_high_watermark: 1024 * 1024 * 1024,
            disk_free_limit: 50 * 1024 * 1024,
        }
    }
}

/// Parses `always` or `interval DURATION`.
pub fn parse_fsync(s: &str) -> Result<crate::store::FsyncPolicy, String> {
    let s = s.trim();
    if s == "always" {
        return Ok(crate::store::FsyncPolicy::Always);
    }
    match s.strip_prefix("interval") {
        Some(d) => {
            let d = parse_duration(d)?;
            if d.is_zero() {
                return Err("fsync interval must be more than 0".into());
            }
            Ok(crate::store::FsyncPolicy::Interval(d))
        }
        None => Err(format!(
            "`{s}`: expected `always` or `interval DURATION` (e.g. interval 10ms)"
        )),
    }
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
        }
    }
}

fn check_listener_name(name: &str) -> Result<(), String> {
    if LISTENERS.iter().any(|(n, _)| *n == name) {
        Ok(())
    } else {
        let known: Vec<&str> = LISTENERS.iter().map(|(n, _)| *n).collect();
        Err(format!(
            "unknown listener `{name}` (known: {})",
            known.join(", ")
        ))
    }
}

pub use crate::duration::parse_duration;

fn queue_options(
    raw: &raw::RawQueue,
    base: &QueueOptions,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> QueueOptions {
    let mut o = base.clone();
    if let Some(v) = raw.max_length {
        o.max_length = v;
    }
    if let Some(v) = raw.max_bytes {
        o.max_bytes = v;
    }
    if let Some(v) = raw.overflow {
        o.overflow = v;
    }
    if let Some(v) = &raw.ttl {
        match parse_duration(v) {
            Ok(d) => o.ttl = Some(d),
            Err(e) => errors.push(ConfigError(format!("{what}.ttl: {e}"))),
        }
    }
    if let Some(v) = raw.expired {
        o.expired = v;
    }
    if let Some(v) = &raw.dead_letter {
        match Destination::parse(v) {
            Ok(d) => o.dead_letter = Some(d),
            Err(e) => errors.push(ConfigError(format!("{what}.dead_letter `{v}`: {e}"))),
        }
    }
    if let Some(v) = raw.max_deliveries {
        if v == 0 {
            errors.push(ConfigError(format!(
                "{what}.max_deliveries must be at least 1"
            )));
        }
        o.max_deliveries = Some(v);
    }
    if o.max_length == 0 {
        errors.push(ConfigError(format!("{what}.max_length must be at least 1")));
    }
    o
}

/// A WebSocket listener's origin policy from `ws_allowed_origins` and
/// `ws_allow_anonymous_browsers` under `what` (`stomp` or `mqtt`).
fn ws_policy(
    origins: Option<Vec<String>>,
    anonymous_browsers: Option<bool>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> crate::listener::origin::WsPolicy {
    let mut allowed = Vec::new();
    for o in origins.into_iter().flatten() {
        if o.trim() == "*" {
            allowed.push("*".to_owned());
            continue;
        }
        match crate::listener::origin::normalise_origin(&o) {
            Some(n) => allowed.push(n),
            None => errors.push(ConfigError(format!(
                "{what}.ws_allowed_origins: `{o}` is not an origin (`https://host[:port]`, or `*`)"
            ))),
        }
    }
    crate::listener::origin::WsPolicy {
        allowed_origins: allowed,
        anonymous_browsers: anonymous_browsers.unwrap_or(false),
    }
}

fn validate(raw: raw::RawSettings, shown: &str, base: &Path) -> Result<Settings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut s = Settings::embedded_default();
    if let Some(dir) = raw.routes_dir {
        s.routes_dir = base.join(dir);
    }
    for (name, addr) in raw.listeners {
        if let Err(e) = check_listener_name(&name) {
            errors.push(ConfigError(format!("{shown}: listeners: {e}")));
            continue;
        }
        match addr.as_deref() {
            None | Some("off") => {
                s.listeners.remove(&name);
            }
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(a) => {
                    s.listeners.insert(name, a);
                }
                Err(e) => errors.push(ConfigError(format!(
                    "{shown}: listeners.{name}: `{a}` is not HOST:PORT ({e})"
                ))),
            },
        }
    }
    if let Some(d) = raw.durability {
        if let Some(f) = &d.fsync {
            match parse_fsync(f) {
                Ok(p) => s.durability.fsync = p,
                Err(e) => errors.push(ConfigError(format!("{shown}: durability.fsync: {e}"))),
            }
        }
        if let Some(v) = d.memory_high_watermark {
            s.durability.memory_high_watermark = v;
        }
        if let Some(v) = d.disk_free_limit {
            s.durability.disk_free_limit = v;
        }
    }
    let q = raw.queues;
    if let Some(v) = q.auto_create {
        s.core.auto_create_queues = v;
    }
    s.core.default_queue = queue_options(
        &q.defaults,
        &s.core.default_queue,
        "queues.defaults",
        &mut errors,
    );
    s.core.default_subscription = queue_options(
        &q.subscription_defaults,
        &s.core.default_subscription,
        "queues.subscription_defaults",
        &mut errors,
    );
    for (name, rq) in &q.named {
        if let Err(e) = crate::core::validate_name(name) {
            errors.push(ConfigError(format!("{shown}: queues.named `{name}`: {e}")));
            continue;
        }
        let o = queue_options(
            rq,
            &s.core.default_queue,
            &format!("queues.named.{name}"),
            &mut errors,
        );
        s.core.queues.insert(name.clone(), o);
    }
    for (name, link) in raw.links {
        if let Err(e) = crate::link::amqp::settings::check_link_name(&name) {
            errors.push(ConfigError(format!("{shown}: links: {e}")));
            continue;
        }
        let kind =
            match link {
                raw::RawLink::Amqp(a) => {
                    let env = |k: &str| std::env::var(k).ok();
                    match AmqpLinkSettings::from_raw(&name, *a, base, &env) {
                        Ok(a) => s.amqp_links.push(a),
                        Err(es) => errors
                            .extend(es.into_iter().map(|e| ConfigError(format!("{shown}: {e}")))),
                    }
                    LinkKind::Amqp
                }
                raw::RawLink::Xmpp(x) => {
                    let env = |k: &str| std::env::var(k).ok();
                    match XmppLinkSettings::from_raw(&name, *x, base, &env) {
                        Ok(x) => s.xmpp_links.push(x),
                        Err(es) => errors
                            .extend(es.into_iter().map(|e| ConfigError(format!("{shown}: {e}")))),
                    }
                    LinkKind::Xmpp
                }
            };
        s.links.insert(name, kind);
    }
    if let Some(a) = raw.auth {
        let mut auth = Auth::default();
        if let Some(anon) = a.anonymous {
            auth.anonymous = anon;
        }
        let rules = |list: &Option<Vec<String>>,
                     what: &str,
                     errors: &mut Vec<ConfigError>|
         -> Option<Vec<Rule>> {
            list.as_ref().map(|l| {
                l.iter()
                    .filter_map(|r| match Rule::parse(r) {
                        Ok(rule) => Some(rule),
                        Err(e) => {
                            errors.push(ConfigError(format!("{shown}: {what}: `{r}`: {e}")));
                            None
                        }
                    })
                    .collect()
            })
        };
        let all = Permissions::all();
        auth.anonymous_perms = Arc::new(Permissions {
            publish: rules(&a.anonymous_publish, "auth.anonymous_publish", &mut errors)
                .unwrap_or(all.publish.clone()),
            subscribe: rules(
                &a.anonymous_subscribe,
                "auth.anonymous_subscribe",
                &mut errors,
            )
            .unwrap_or(all.subscribe.clone()),
        });
        for (name, u) in a.users {
            // What anonymous clients own (durable subscriptions, MQTT client ids) is
            // owned as `anonymous`: a user of that name would own it too.
            if name == "anonymous" {
                errors.push(ConfigError(format!(
                    "{shown}: auth.users.anonymous: the name `anonymous` is reserved for clients without a login"
                )));
                continue;
            }
            if !u.password_hash.starts_with("$argon2") {
                errors.push(ConfigError(format!(
                    "{shown}: auth.users.{name}.password_hash: not an argon2 hash (make one with `switchboard passwd`)"
                )));
                continue;
            }
            let perms = Permissions {
                publish: rules(
                    &u.publish,
                    &format!("auth.users.{name}.publish"),
                    &mut errors,
                )
                .unwrap_or(all.publish.clone()),
                subscribe: rules(
                    &u.subscribe,
                    &format!("auth.users.{name}.subscribe"),
                    &mut errors,
                )
                .unwrap_or(all.subscribe.clone()),
            };
            if u.admin == Some(true) {
                s.admin.users.insert(name.clone());
            }
            auth.users.insert(
                name,
                User {
                    password_hash: u.password_hash,
                    perms: Arc::new(perms),
                },
            );
        }
        for t in a.admin_tokens.iter().flatten() {
            match crate::admin::parse_token_digest(t) {
                Ok(d) => s.admin.tokens.push(d),
                Err(e) => errors.push(ConfigError(format!("{shown}: auth.admin_tokens: {e}"))),
            }
        }
        s.auth = Arc::new(auth);
    }
    for (name, t) in raw.tls {
        match name.as_str() {
            "stomp" | "stomp-ws" | "mqtt" | "mqtt-ws" => match crate::tls::acceptor(&base.join(&t.cert), &base.join(&t.key)) {
                Ok(a) => {
                    s.tls.insert(name, crate::tls::Tls(a));
                }
                Err(e) => errors.push(ConfigError(format!("{shown}: tls.{name}: {e}"))),
            },
            other => errors.push(ConfigError(format!(
                "{shown}: tls.{other}: TLS is available on the stomp, stomp-ws, mqtt and mqtt-ws listeners; terminate TLS for the admin API in front of the router"
            ))),
        }
    }
    if let Some(st) = raw.stomp {
        let d = &mut s.stomp;
        if let Some(hb) = st.heart_beat {
            match hb
                .split_once(',')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
            {
                Some(v) => d.heart_beat = v,
                None => errors.push(ConfigError(format!(
                    "{shown}: stomp.heart_beat: expected `SEND_MS,RECEIVE_MS`, e.g. `10000,10000`"
                ))),
            }
        }
        if let Some(v) = st.max_frame_size {
            d.limits.max_frame_size = v;
        }
        if let Some(v) = st.max_headers {
            d.limits.max_headers = v;
        }
        if let Some(v) = st.max_header_length {
            d.limits.max_header_len = v;
        }
        if let Some(v) = st.max_subscriptions {
            d.max_subscriptions = v;
        }
        if let Some(v) = st.max_connections {
            d.max_connections = v;
        }
        if let Some(v) = st.prefetch {
            d.default_prefetch = v.max(1);
        }
        match st.idle_timeout.as_deref().map(str::trim) {
            None => {}
            Some("off") => d.idle_timeout = None,
            Some(v) => match parse_duration(v) {
                Ok(t) if !t.is_zero() => d.idle_timeout = Some(t),
                Ok(_) => errors.push(ConfigError(format!(
                    "{shown}: stomp.idle_timeout must be more than 0 (or `off`)"
                ))),
                Err(e) => errors.push(ConfigError(format!("{shown}: stomp.idle_timeout: {e}"))),
            },
        }
        if let Some(v) = st.max_unacked_bytes {
            d.max_unacked_bytes = v;
        }
        if let Some(v) = st.max_transaction_bytes {
            d.max_transaction_bytes = v;
        }
        if let Some(v) = st.max_transactions {
            d.max_transactions = v;
        }
        s.stomp_ws = ws_policy(
            st.ws_allowed_origins,
            st.ws_allow_anonymous_browsers,
            &format!("{shown}: stomp"),
            &mut errors,
        );
    }
    if let Some(m) = raw.mqtt {
        let d = &mut s.mqtt;
        if let Some(v) = m.max_packet_size {
            d.max_packet_size = v;
        }
        if let Some(v) = m.max_inflight {
            d.max_inflight = v.max(1);
        }
        if let Some(v) = m.max_queued {
            d.max_queued = v.max(1);
        }
        if let Some(v) = m.max_retained {
            d.max_retained = v;
        }
        if let Some(v) = m.max_retained_bytes {
            d.max_retained_bytes = v;
        }
        if let Some(v) = m.max_connections {
            d.max_connections = v;
        }
        if let Some(v) = m.max_keep_alive {
            d.max_keep_alive = v;
        }
        match m.park_idle_after.as_deref().map(str::trim) {
            None => {}
            Some("off") => d.park_idle_after = None,
            Some(v) => match parse_duration(v) {
                Ok(t) if !t.is_zero() => d.park_idle_after = Some(t),
                Ok(_) => errors.push(ConfigError(format!(
                    "{shown}: mqtt.park_idle_after must be more than 0 (or `off`)"
                ))),
                Err(e) => errors.push(ConfigError(format!("{shown}: mqtt.park_idle_after: {e}"))),
            },
        }
        s.mqtt_ws = ws_policy(
            m.ws_allowed_origins,
            m.ws_allow_anonymous_browsers,
            &format!("{shown}: mqtt"),
            &mut errors,
        );
    }
    if let Some(c) = raw.connections {
        let d = &mut s.connections;
        if let Some(v) = c.max_per_ip {
            d.max_per_ip = v;
        }
        if let Some(v) = c.connect_rate {
            d.connect_rate = v;
        }
        if let Some(v) = c.connect_burst {
            d.connect_burst = v;
        }
        if !(d.connect_rate >= 0.0 && d.connect_rate.is_finite()) {
            errors.push(ConfigError(format!(
                "{shown}: connections.connect_rate must be 0 (no limit) or more"
            )));
        }
        if d.connect_rate > 0.0 && !(d.connect_burst >= 1.0 && d.connect_burst.is_finite()) {
            errors.push(ConfigError(format!(
                "{shown}: connections.connect_burst must be at least 1"
            )));
        }
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
    fn anonymous_is_no_user_name() {
        let yaml = "auth:\n  users:\n    anonymous:\n      password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$4WXl1W4Jq2Sx6hG1lqyHOFQbFR9S2FqKjPAc4Mk3dPw\"\n";
        let errors = Settings::from_yaml(yaml, "t.yaml", Path::new(".")).unwrap_err();
        assert!(
            errors[0].to_string().contains("`anonymous` is reserved"),
            "{errors:?}"
        );
    }

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
    fn park_idle_after_is_a_duration_or_off() {
        let parse = |v: &str| {
            Settings::from_yaml(
                &format!("mqtt:\n  park_idle_after: {v}\n"),
                "t.yaml",
                Path::new("."),
            )
        };
        let park = |v: &str| parse(v).unwrap().mqtt.park_idle_after;
        assert_eq!(park("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(park("off"), None);
        for bad in ["0s", "soon"] {
            let errs = parse(bad).unwrap_err();
            assert!(
                errs[0].0.contains("mqtt.park_idle_after"),
                "{bad}: {errs:?}"
            );
        }
    }

    #[test]
    fn stomp_idle_timeout_is_on_by_default_a_duration_or_off() {
        let parse = |v: &str| {
            Settings::from_yaml(
                &format!("stomp:\n  idle_timeout: {v}\n"),
                "t.yaml",
                Path::new("."),
            )
        };
        let idle = |v: &str| parse(v).unwrap().stomp.idle_timeout;
        assert_eq!(
            Settings::from_yaml("{}", "t.yaml", Path::new("."))
                .unwrap()
                .stomp
                .idle_timeout,
            Some(Duration::from_secs(300))
        );
        assert_eq!(idle("30s"), Some(Duration::from_secs(30)));
        assert_eq!(idle("off"), None);
        for bad in ["0s", "soon"] {
            let errs = parse(bad).unwrap_err();
            assert!(errs[0].0.contains("stomp.idle_timeout"), "{bad}: {errs:?}");
        }
    }
}
