//! Users, passwords and per-destination permissions, shared by every listener.
//!
//! Passwords are stored only as argon2 PHC strings (`switchboard passwd` prints one);
//! verification runs on the blocking pool because argon2 is deliberately slow.
//! Permissions are allow-lists of patterns on *internal* names, so one rule covers a
//! destination whichever protocol spells it: `orders.#` allows `/queue/orders.eu` in
//! STOMP and `orders/eu` in MQTT alike. A rule may be restricted to one kind with a
//! `queue:` or `topic:` prefix.
//!
//! On top of the rules, every queue name that belongs to a session, a user, a connection
//! or the router itself ([`owner`]) is reachable only by its owner, whatever the rules
//! say (the built-in allow-all included), and configured rules follow the core's `$`
//! rule: a wildcard first level never covers a name starting with `$`.

pub mod owner;

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::core::pattern::{Level, Pattern};
use crate::core::{Destination, NameError};
use owner::Owner;

/// Which destinations a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Queue,
    Topic,
    Any,
}

/// One allow rule.
#[derive(Debug, Clone)]
pub struct Rule {
    kind: Kind,
    pattern: Pattern,
    /// The built-in allow-all rule: matches `$` names too (a configured `#` does not,
    /// following the MQTT rule that wildcards skip `$SYS`-style names).
    everything: bool,
}

impl Rule {
    /// Parses `PATTERN`, `queue:PATTERN` or `topic:PATTERN`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (kind, p) = if let Some(p) = s.strip_prefix("queue:") {
            (Kind::Queue, p)
        } else if let Some(p) = s.strip_prefix("topic:") {
            (Kind::Topic, p)
        } else {
            (Kind::Any, s)
        };
        Ok(Self {
            kind,
            pattern: Pattern::parse(p)?,
            everything: false,
        })
    }

    fn kind_ok(&self, k: Kind) -> bool {
        self.kind == Kind::Any || self.kind == k
    }

    fn matches(&self, name: &str) -> bool {
        self.everything || self.pattern.matches(name)
    }
}

/// Publish and subscribe allow-lists.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    pub publish: Vec<Rule>,
    pub subscribe: Vec<Rule>,
}

impl Permissions {
    /// Everything allowed.
    pub fn all() -> Self {
        let any = || {
            vec![Rule {
                kind: Kind::Any,
                pattern: Pattern::any(),
                everything: true,
            }]
        };
        Self {
            publish: any(),
            subscribe: any(),
        }
    }
}

fn kind_of(d: &Destination) -> Kind {
    match d {
        Destination::Queue(_) => Kind::Queue,
        Destination::Topic(_) => Kind::Topic,
    }
}

/// Does `allow` match every name `req` can match? As in the core's matcher, a wildcard
/// first level of `allow` does not match names starting with `$`, so it covers no
/// pattern whose first level is such a name (`#` does not cover `$SYS.#`). A wildcard
/// first level of `req` matches no `$` name either, so covering it needs no more.
fn covers(allow: &[Level], req: &[Level]) -> bool {
    if let Some(Level::Literal(first)) = req.first()
        && first.starts_with('$')
        && !matches!(allow.first(), Some(Level::Literal(_)))
    {
        return false;
    }
    covers_levels(allow, req)
}

fn covers_levels(allow: &[Level], req: &[Level]) -> bool {
    match (allow.split_first(), req.split_first()) {
        (None, None) => true,
        (Some((Level::Many, rest)), _) => {
            covers_levels(rest, req) || (!req.is_empty() && covers_levels(allow, &req[1..]))
        }
        (None, Some(_)) | (Some(_), None) => false,
        (Some((a, ar)), Some((r, rr))) => {
            let ok = match (a, r) {
                (Level::One, Level::Many) => false,
                (Level::One, _) => true,
                (Level::Literal(x), Level::Literal(y)) => x == y,
                _ => false,
            };
            ok && covers_levels(ar, rr)
        }
    }
}

/// An authenticated (or anonymous) connection's identity.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` for anonymous.
    /// Shared, not owned: every connection of a user keeps one (8 bytes fewer each).
    pub user: Option<Arc<str>>,
    perms: Arc<Permissions>,
}

impl Principal {
    /// The configured user `name`, without a login: for an identity another layer
    /// established (an XMPP link maps a bare JID its server authenticated to a user).
    pub fn of_user(auth: &Auth, name: &str) -> Option<Self> {
        auth.users.get(name).map(|u| Principal {
            user: Some(name.into()),
            perms: Arc::clone(&u.perms),
        })
    }

    pub fn name(&self) -> &str {
        self.user.as_deref().unwrap_or("anonymous")
    }

    /// [`Principal::name`], shared: what an edge stamps on every message it publishes.
    pub fn name_shared(&self) -> Arc<str> {
        static ANONYMOUS: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        match &self.user {
            Some(u) => Arc::clone(u),
            None => Arc::clone(ANONYMOUS.get_or_init(|| "anonymous".into())),
        }
    }

    /// Is this principal the user a name of [`owner::Owner::User`] belongs to?
    pub fn owns(&self, o: &Owner<'_>) -> bool {
        owner::is_user(o, self.name())
    }

    /// The identity that owns what this principal creates (durable subscriptions, MQTT
    /// client ids): the login, or `anonymous` (a name no configured user may take).
    pub fn owner_id(&self) -> Arc<str> {
        self.name_shared()
    }

    /// May send to `d`. A queue with an [`owner`] is the router's own (never), a
    /// temporary queue (whoever holds its unguessable address may reply, rules aside),
    /// another user's (never), or the principal's own or a link's reply address (the
    /// rules decide).
    pub fn can_publish(&self, d: &Destination) -> bool {
        if let Destination::Queue(n) = d
            && let Some(o) = owner::owner_of(n)
        {
            match o {
                Owner::TempQueue => return true,
                Owner::Router(_) => return false,
                Owner::User(_) if !self.owns(&o) => return false,
                Owner::User(_) | Owner::ReplyAddress => {}
            }
        }
        let k = kind_of(d);
        self.perms
            .publish
            .iter()
            .any(|r| r.kind_ok(k) && r.matches(d.name()))
    }

    /// May receive a message published to `d` (checked again on every delivery path:
    /// retained and resumed-session messages included). A queue with an [`owner`] is
    /// readable only by the user it belongs to (a durable subscription: whatever the
    /// router put in it); the edges skip this check for the queues they consume on a
    /// client's behalf (a STOMP connection's own temporary queue).
    pub fn can_read(&self, d: &Destination) -> bool {
        if let Destination::Queue(n) = d
            && let Some(o) = owner::owner_of(n)
        {
            return self.owns(&o);
        }
        let k = kind_of(d);
        self.perms
            .subscribe
            .iter()
            .any(|r| r.kind_ok(k) && r.matches(d.name()))
    }

    /// May subscribe to every name `pattern` (internal grammar) can match. A queue with
    /// an [`owner`] only by the user it belongs to, under the rules; the router's own
    /// queues, MQTT sessions' and temporary queues never by name.
    pub fn can_subscribe(&self, kind: Kind, pattern: &Pattern) -> bool {
        if kind == Kind::Queue
            && let Some(o) = owner::owner_of(pattern.as_str())
            && !self.owns(&o)
        {
            return false;
        }
        self.perms.subscribe.iter().any(|r| {
            r.kind_ok(kind) && (r.everything || covers(r.pattern.levels(), pattern.levels()))
        })
    }
}

/// A configured user.
#[derive(Debug, Clone)]
pub struct User {
    pub password_hash: String,
    pub perms: Arc<Permissions>,
}

/// When anonymous clients are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// On listeners bound to a loopback address only (as Mosquitto 2 does by default).
    #[default]
    Loopback,
    Always,
    Never,
}

/// The user store.
#[derive(Debug, Clone)]
pub struct Auth {
    pub users: HashMap<String, User>,
    pub anonymous: Anonymous,
    pub anonymous_perms: Arc<Permissions>,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            users: HashMap::new(),
            anonymous: Anonymous::Loopback,
            anonymous_perms: Arc::new(Permissions::all()),
        }
    }
}

/// Why a login was refused. The text is sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("bad credentials")]
    BadCredentials,
    #[error("anonymous access is not allowed on this listener")]
    AnonymousRefused,
}

impl Auth {
    /// Checks credentials. `loopback` tells whether the listener is bound to loopback.
    ///
    /// Credentials sent to a router that has no users at all (the embedded default) are
    /// accepted as anonymous on a loopback listener where anonymous clients are welcome:
    /// RabbitMQ tutorials and client defaults send guest/guest, and refusing them there
    /// protects nothing (a client without them gets in). Logged at INFO, once per login.
    pub async fn login(
        &self,
        login: Option<&str>,
        passcode: Option<&str>,
        loopback: bool,
    ) -> Result<Principal, AuthError> {
        let login = login.filter(|l| !l.is_empty());
        let anonymous_ok = match self.anonymous {
            Anonymous::Always => true,
            Anonymous::Never => false,
            Anonymous::Loopback => loopback,
        };
        let anonymous = || Principal {
            user: None,
            perms: Arc::clone(&self.anonymous_perms),
        };
        let Some(login) = login else {
            return if anonymous_ok {
                Ok(anonymous())
            } else {
                Err(AuthError::AnonymousRefused)
            };
        };
        if self.users.is_empty() && loopback && anonymous_ok {
            tracing::info!(
                %login,
                "no users are configured: credentials ignored, accepted as anonymous on a loopback listener"
            );
            return Ok(anonymous());
        }
        let Some(user) = self.users.get(login) else {
            // Spend the same time as a real check so user names cannot be probed.
            let _ = verify_blocking(DUMMY_HASH.to_owned(), passcode.unwrap_or("").to_owned()).await;
            return Err(AuthError::BadCredentials);
        };
        if verify_blocking(
            user.password_hash.clone(),
            passcode.unwrap_or("").to_owned(),
        )
        .await
        {
            Ok(Principal {
                user: Some(login.into()),
                perms: Arc::clone(&user.perms),
            })
        } else {
            Err(AuthError::BadCredentials)
        }
    }
}

const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$4WXl1W4Jq2Sx6hG1lqyHOFQbFR9S2FqKjPAc4Mk3dPw";

async fn verify_blocking(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&hash, &password))
        .await
        .unwrap_or(false)
}

/// Verifies a password against a PHC string.
pub fn verify(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashes a password (argon2id, random salt) into a PHC string.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn coverage() {
        assert!(covers(p("#").levels(), p("a.*.#").levels()));
        assert!(covers(p("a.#").levels(), p("a.b.*").levels()));
        assert!(!covers(p("a.*").levels(), p("a.#").levels()));
        assert!(covers(p("a.*").levels(), p("a.*").levels()));
        assert!(!covers(p("a.b").levels(), p("a.*").levels()));
    }

    #[test]
    fn configured_wildcards_do_not_cover_dollar_names() {
        assert!(!covers(p("#").levels(), p("$SYS.#").levels()));
        assert!(!covers(p("*.#").levels(), p("$SYS.load").levels()));
        assert!(covers(p("$SYS.#").levels(), p("$SYS.*").levels()));
        // A wildcard first level of the subscription matches no `$` name anyway.
        assert!(covers(p("#").levels(), p("*.load").levels()));
        let mut auth = Auth::default();
        assert!(auth.users.is_empty());
        auth.anonymous_perms = Arc::new(Permissions {
            publish: vec![Rule::parse("#").unwrap()],
            subscribe: vec![Rule::parse("#").unwrap()],
        });
        let anon = Principal {
            user: None,
            perms: Arc::clone(&auth.anonymous_perms),
        };
        assert!(!anon.can_subscribe(Kind::Topic, &p("$SYS.#")));
        assert!(!anon.can_read(&Destination::topic("$SYS.load")));
        assert!(anon.can_read(&Destination::topic("a.load")));
    }

    #[test]
    fn owned_names_only_for_their_owner() {
        let everything = |user: &str| Principal {
            user: Some(user.into()),
            perms: Arc::new(Permissions::all()),
        };
        let (alice, root) = (everything("alice"), everything("root"));
        for name in [
            "$mqtt.s.victim",
            "$mqtt.share.67.23",
            "$sb.link.rabbit",
            "$sb.sub.1",
            "$sb.tmp.00ff.answers",
            "$sb.reply.amqp.l.q",
        ] {
            assert!(!root.can_subscribe(Kind::Queue, &p(name)), "{name}");
            assert!(!root.can_read(&Destination::queue(name)), "{name}");
        }
        for name in ["$mqtt.s.victim", "$sb.link.rabbit", "$sb.sub.1"] {
            assert!(!root.can_publish(&Destination::queue(name)), "{name}");
        }
        // Replies: a temporary queue by its address, a link's reply address by the rules.
        assert!(root.can_publish(&Destination::queue("$sb.tmp.00ff.answers")));
        assert!(root.can_publish(&Destination::queue("$sb.reply.amqp.l.q")));
        let durable = "stomp.alice.feed";
        assert!(alice.can_subscribe(Kind::Queue, &p(durable)));
        assert!(alice.can_publish(&Destination::queue(durable)));
        assert!(alice.can_read(&Destination::queue(durable)));
        assert!(!root.can_subscribe(Kind::Queue, &p(durable)));
        assert!(!root.can_publish(&Destination::queue(durable)));
        assert!(!root.can_read(&Destination::queue(durable)));
        // Topics have no owners.
        assert!(root.can_subscribe(Kind::Topic, &p("$mqtt.s.victim")));
    }

    #[test]
    fn hash_and_verify() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "nope"));
        assert!(!verify("garbage", "s3cret"));
    }

    #[tokio::test]
    async fn anonymous_policy_and_permissions() {
        let mut auth = Auth::default();
        assert!(auth.login(None, None, true).await.is_ok());
        assert_eq!(
            auth.login(None, None, false).await.unwrap_err(),
            AuthError::AnonymousRefused
        );
        auth.users.insert(
            "alice".into(),
            User {
                password_hash: hash("pw").unwrap(),
                perms: Arc::new(Permissions {
                    publish: vec![Rule::parse("queue:orders.#").unwrap()],
                    subscribe: vec![Rule::parse("topic:news.*").unwrap()],
                }),
            },
        );
        let a = auth.login(Some("alice"), Some("pw"), false).await.unwrap();
        assert!(a.can_publish(&Destination::queue("orders.eu")));
        assert!(!a.can_publish(&Destination::topic("orders.eu")));
        assert!(a.can_subscribe(Kind::Topic, &p("news.*")));
        assert!(!a.can_subscribe(Kind::Topic, &p("news.#")));
        assert_eq!(
            auth.login(Some("alice"), Some("x"), true)
                .await
                .unwrap_err(),
            AuthError::BadCredentials
        );
        assert_eq!(
            auth.login(Some("bob"), Some("pw"), true).await.unwrap_err(),
            AuthError::BadCredentials
        );
    }

    #[tokio::test]
    async fn credentials_without_users_are_anonymous_on_loopback_only() {
        let mut auth = Auth::default();
        let guest = auth
            .login(Some("guest"), Some("guest"), true)
            .await
            .unwrap();
        assert_eq!(guest.name(), "anonymous");
        assert!(guest.user.is_none());
        // Not on loopback: nothing changes.
        assert_eq!(
            auth.login(Some("guest"), Some("guest"), false)
                .await
                .unwrap_err(),
            AuthError::BadCredentials
        );
        // Where anonymous clients are refused, so are credentials nobody can check.
        auth.anonymous = Anonymous::Never;
        assert_eq!(
            auth.login(Some("guest"), Some("guest"), true)
                .await
                .unwrap_err(),
            AuthError::BadCredentials
        );
        // `always` does not extend it beyond loopback.
        auth.anonymous = Anonymous::Always;
        assert!(auth.login(Some("guest"), None, true).await.is_ok());
        assert_eq!(
            auth.login(Some("guest"), Some("guest"), false)
                .await
                .unwrap_err(),
            AuthError::BadCredentials
        );
    }
}
