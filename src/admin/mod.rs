//! The admin HTTP API: health, route table and reload status, queue statistics.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/health` | `ok` while the daemon runs (always open: a health check) |
//! | GET | `/health/live`, `/health/ready` | liveness; readiness with its checks, 503 when one fails (always open; [`health`]) |
//! | GET | `/metrics` | Prometheus text exposition; `?per_object=1` for per-queue series ([`metrics`]) |
//! | GET | `/routes` | reload status (version, route count, last errors) and the routes in force |
//! | POST | `/routes/reload` | reload now; 200 with the status, or 422 with the errors (in cluster mode: why it is refused) |
//! | GET | `/queues` | per-queue counters (names owned by clients redacted unless the caller is an admin) |
//! | GET | `/links` | each link's state (connected, retrying, blocked…), last error, topology errors by route, counters |
//! | GET | `/loss` | fields dropped, encoded or rejected at each edge |
//! | GET | `/mqtt` | MQTT: connections parked in the idle-connection poller, deliveries over a client's Maximum Packet Size not sent, bytes saved by outbound topic aliases |
//! | GET | `/memory` | bytes the memory watermark counts, by kind, and how often each limit was hit |
//! | GET | `/limits` | each listener's admissions and refusals (per peer address, connect rate) |
//! | GET | `/cluster` | cluster mode: this node, the routers seen, the route table each runs, JetStream's figures; 404 on a router running alone |
//!
//! Access ([`guard`]): with an admin user (`admin: true`) or an admin token configured,
//! every request but the health checks needs HTTP Basic credentials of an admin user or a
//! bearer token. Without either, the API answers only on a loopback listener to loopback
//! peers, and those unauthenticated callers see client-owned queue names redacted.
//! On a loopback listener the `Host` must name this machine (DNS rebinding), and a
//! state-changing request must not come from another site (`Origin`, `Sec-Fetch-Site`).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router as Http};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::Auth;
use crate::core::Core;
use crate::link::Links;
use crate::listener::limit::{Gates, LogEvery};
use crate::listener::origin::{host_is_loopback_name, same_origin};
use crate::routes::reload::LiveRoutes;
use crate::store::FileJournal;

mod health;
mod metrics;
mod process;
mod totals;

pub use health::Startup;

/// Who may use the admin API.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// Users (of `auth.users`) with `admin: true`.
    pub users: BTreeSet<String>,
    /// SHA-256 digests of the bearer tokens (`auth.admin_tokens`).
    pub tokens: Vec<[u8; 32]>,
}

impl AdminAccess {
    /// Is any admin configured? If not, the API answers on loopback only.
    pub fn configured(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }
}

/// Parses an `auth.admin_tokens` entry: `sha256:` and 64 hex digits.
pub fn parse_token_digest(s: &str) -> Result<[u8; 32], String> {
    let hex = s.trim().strip_prefix("sha256:").ok_or_else(|| {
        format!(
            "`{}…`: expected `sha256:HEX` (the token's SHA-256 digest, never the token)",
            s.chars().take(8).collect::<String>()
        )
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a sha256 digest is 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The `auth.admin_tokens` entry for `token`.
pub fn token_digest(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Who is calling, once the guard let the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// An admin user or token.
    Admin,
    /// Unauthenticated, on loopback, with no admin configured.
    Local,
}

/// How long a verified Basic password is remembered (argon2 is deliberately slow; a
/// script polling the API would otherwise spend a core on it).
const VERIFIED_FOR: Duration = Duration::from_secs(60);

/// user → (SHA-256 of the user and password verified, when).
type Verified = HashMap<String, ([u8; 32], Instant)>;

#[derive(Clone)]
struct AdminState {
    core: Core,
    routes: Arc<LiveRoutes>,
    links: Links,
    gates: Arc<Gates>,
    auth: Arc<Auth>,
    access: Arc<AdminAccess>,
    /// The listener's own address.
    local: SocketAddr,
    verified: Arc<Mutex<Verified>>,
    logs: Arc<[LogEvery; 3]>,
    journal: Option<Arc<FileJournal>>,
    watermarks: crate::watermark::Watermarks,
    startup: Arc<Startup>,
    totals: Arc<Mutex<totals::QueueTotals>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// What the admin API needs.
pub struct AdminDeps {
    pub core: Core,
    pub routes: Arc<LiveRoutes>,
    pub links: Links,
    pub gates: Arc<Gates>,
    pub auth: Arc<Auth>,
    pub access: AdminAccess,
    /// The address the admin listener is bound to.
    pub local: SocketAddr,
    /// The message store, when there is a data directory.
    pub journal: Option<Arc<FileJournal>>,
    pub watermarks: crate::watermark::Watermarks,
    /// Told when every listener is bound (readiness).
    pub startup: Arc<Startup>,
    /// This router's membership of a cluster, in cluster mode.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Builds the admin API.
pub fn router(d: AdminDeps) -> Http {
    let state = AdminState {
        core: d.core,
        routes: d.routes,
        links: d.links,
        gates: d.gates,
        auth: d.auth,
        access: Arc::new(d.access),
        local: d.local,
        verified: Arc::default(),
        logs: Arc::new(Default::default()),
        journal: d.journal,
        watermarks: d.watermarks,
        startup: d.startup,
        totals: Arc::default(),
        cluster: d.cluster,
    };
    Http::new()
        .route("/health", get(|| async { "ok" }))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/routes", get(routes_status))
        .route("/routes/reload", post(reload))
        .route("/queues", get(queues))
        .route("/memory", get(memory))
        .route("/links", get(links_status))
        .route(
            "/loss",
            get(|| async { Json(crate::translate::loss::snapshot()) }),
        )
        .route(
            "/mqtt",
            get(|| async {
                use crate::listener::mqtt::session as mqtt;
                Json(json!({
                    "parked": mqtt::park::parked_now(),
                    "oversize_dropped": mqtt::oversize_dropped(),
                    "topic_alias_bytes_saved": mqtt::alias::bytes_saved(),
                }))
            }),
        )
        .route("/limits", get(limits))
        .route("/cluster", get(cluster_status))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Refusal causes, each logged at most once per second.
#[derive(Clone, Copy)]
enum Cause {
    Host = 0,
    CrossSite = 1,
    Access = 2,
}

fn refuse(
    s: &AdminState,
    cause: Cause,
    peer: SocketAddr,
    status: StatusCode,
    why: &str,
) -> Response {
    if let Some(count) = s.logs[cause as usize].hit() {
        tracing::warn!(%peer, status = status.as_u16(), count, reason = why, "admin API request refused (count: since the last such line)");
    }
    let mut r = (status, format!("{why}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Basic realm=\"switchboard admin\", Bearer"),
        );
    }
    r
}

/// Health checks, open to anyone who reaches the listener (probes rarely carry
/// credentials); they show states and names, never addresses or error texts.
const OPEN: &[&str] = &["/health", "/health/live", "/health/ready"];

/// Access control in front of every route but the [`OPEN`] ones (see the module docs).
async fn guard(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    if OPEN.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if s.local.ip().is_loopback() && !host_is_loopback_name(host) {
        return refuse(
            &s,
            Cause::Host,
            peer,
            StatusCode::MISDIRECTED_REQUEST,
            "the Host header must be localhost, 127.0.0.1 or [::1] on a loopback listener",
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && let Err(why) = same_site(headers, host)
    {
        return refuse(&s, Cause::CrossSite, peer, StatusCode::FORBIDDEN, why);
    }
    let caller = if s.access.configured() {
        match authenticate(&s, headers).await {
            Ok(()) => Caller::Admin,
            Err((status, why)) => return refuse(&s, Cause::Access, peer, status, why),
        }
    } else if s.local.ip().is_loopback() && peer.ip().is_loopback() {
        Caller::Local
    } else {
        return refuse(
            &s,
            Cause::Access,
            peer,
            StatusCode::FORBIDDEN,
            "no admin user or token is configured: the admin API answers on loopback only",
        );
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// A state-changing request must come from this site or from no site: its `Origin`
/// (when sent) names the host it was sent to, and its `Sec-Fetch-Site` (when sent) is
/// `same-origin` or `none` (typed by the user).
fn same_site(headers: &HeaderMap, host: &str) -> Result<(), &'static str> {
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !same_origin(origin, host) {
            return Err("cross-site request refused: the Origin does not match the Host");
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Err("cross-site request refused (Sec-Fetch-Site)");
        }
    }
    Ok(())
}

/// Checks the caller's credentials: an admin user's password (HTTP Basic) or a token
/// (`Authorization: Bearer`).
async fn authenticate(
    s: &AdminState,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    const NEED: (StatusCode, &str) = (
        StatusCode::UNAUTHORIZED,
        "admin credentials needed (HTTP Basic of an admin user, or a bearer token)",
    );
    const BAD: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "bad credentials");
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(NEED)?
        .trim();
    let (scheme, rest) = value.split_once(' ').ok_or(BAD)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        let d: [u8; 32] = Sha256::digest(rest.as_bytes()).into();
        // Digests of a secret: comparing them leaks nothing about the token.
        return if s.access.tokens.contains(&d) {
            Ok(())
        } else {
            Err(BAD)
        };
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BAD);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .map_err(|_| BAD)?;
    let decoded = String::from_utf8(decoded).map_err(|_| BAD)?;
    let (user, password) = decoded.split_once(':').ok_or(BAD)?;
    let digest: [u8; 32] = Sha256::digest(format!("{user}\0{password}").as_bytes()).into();
    let remembered = s
        .verified
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(user)
        .is_some_and(|(d, at)| *d == digest && at.elapsed() < VERIFIED_FOR);
    if !remembered {
        let hash = s.auth.users.get(user).map(|u| u.password_hash.clone());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(h) => crate::auth::verify(&h, &password),
            None => {
                // Spend the same time as a real check so user names cannot be probed.
                let _ = crate::auth::verify(DUMMY_HASH, &password);
                false
            }
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(BAD);
        }
        s.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_owned(), (digest, Instant::now()));
    }
    if s.access.users.contains(user) {
        Ok(())
    } else {
        Err((StatusCode::FORBIDDEN, "this user is not an admin"))
    }
}

const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$4WXl1W4Jq2Sx6hG1lqyHOFQbFR9S2FqKjPAc4Mk3dPw";

async fn routes_status(State(s): State<AdminState>) -> impl IntoResponse {
    let table = s.routes.table().load_full();
    let routes: Vec<_> = table
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "file": r.file,
                "line": r.line,
                "from": r.source_text,
                "targets": r.targets.len(),
                "passthrough": r.passthrough,
            })
        })
        .collect();
    Json(json!({ "status": s.routes.status(), "routes": routes }))
}

/// 200 with the status, or 422 with the status and this reload's errors. They are the
/// status's own after a failed reload; a clustered router refuses without touching its
/// status, so the errors say why (the table comes from `switchboard routes push`).
async fn reload(State(s): State<AdminState>) -> impl IntoResponse {
    let routes = Arc::clone(&s.routes);
    let result = tokio::task::spawn_blocking(move || routes.reload("admin api")).await;
    let mut status = json!(s.routes.status());
    match result {
        Ok(Ok(_)) => (StatusCode::OK, Json(status)),
        Ok(Err(errors)) => {
            status["ok"] = json!(false);
            status["errors"] = json!(errors.iter().map(ToString::to_string).collect::<Vec<_>>());
            (StatusCode::UNPROCESSABLE_ENTITY, Json(status))
        }
        Err(_) => (StatusCode::UNPROCESSABLE_ENTITY, Json(status)),
    }
}

/// Prefixes of queue names that carry a client's identity after them: MQTT client ids
/// and shared groups, temporary queues, subscription and reply queues, STOMP durable
/// subscriptions (`stomp.USER.NAME`).
const OWNED_PREFIXES: &[&str] = &[
    "$mqtt.s.",
    "$mqtt.share.",
    "$sb.tmp.",
    "$sb.sub.",
    "$sb.reply.",
    "$sb.push.",
    "stomp.",
];

/// `name` with the part after an owned prefix replaced by a keyed hash (stable while
/// the daemon runs, so entries can be told apart and followed; not reversible), or
/// `None` when the name is nobody's.
fn redacted(name: &str) -> Option<String> {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let prefix = OWNED_PREFIXES.iter().find(|p| name.starts_with(**p))?;
    let h = KEY.get_or_init(Default::default).hash_one(name);
    Some(format!("{prefix}~{h:016x}"))
}

async fn queues(State(s): State<AdminState>, Extension(caller): Extension<Caller>) -> Response {
    let mut v = json!(s.core.stats());
    if caller != Caller::Admin
        && let Some(qs) = v.get_mut("queues").and_then(|q| q.as_array_mut())
    {
        for q in qs {
            let Some(name) = q.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            if let Some(r) = redacted(name) {
                q["name"] = json!(r);
                q["redacted"] = json!(true);
            }
        }
    }
    Json(v).into_response()
}

/// What the memory watermark counts, by kind, and the counters of drops, refusals and
/// limit hits (the causes of [`crate::ratelog`]).
async fn memory(State(s): State<AdminState>) -> impl IntoResponse {
    use std::sync::atomic::Ordering;
    let (ready, unacked) = s.core.queue_bytes();
    let held = s.core.held();
    let retained = held.retained.load(Ordering::Relaxed);
    let transactions = held.transactions.load(Ordering::Relaxed);
    Json(json!({
        "held": {
            "ready": ready,
            "unacked": unacked,
            "retained": retained,
            "transactions": transactions,
            "total": ready + unacked + retained + transactions,
        },
        "publishers_blocked": s.core.flow().blocked(),
        "limits": crate::ratelog::snapshot(),
    }))
}

async fn links_status(State(s): State<AdminState>) -> impl IntoResponse {
    Json(s.links.to_json())
}

async fn cluster_status(State(s): State<AdminState>) -> Response {
    match &s.cluster {
        Some(c) => Json(c.status(&s.routes).await).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "this router runs alone (no --cluster)" })),
        )
            .into_response(),
    }
}

async fn limits(State(s): State<AdminState>) -> impl IntoResponse {
    Json(s.gates.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_digests() {
        let line = token_digest("s3cret-token");
        assert_eq!(
            parse_token_digest(&line).unwrap(),
            <[u8; 32]>::from(Sha256::digest(b"s3cret-token"))
        );
        assert!(parse_token_digest("s3cret-token").is_err());
        assert!(parse_token_digest("sha256:abc").is_err());
    }

    #[test]
    fn owned_names_are_redacted() {
        let r = redacted("$mqtt.s.alice-phone").unwrap();
        assert!(r.starts_with("$mqtt.s.~") && !r.contains("alice"), "{r}");
        assert_eq!(redacted("$mqtt.s.alice-phone").unwrap(), r, "stable");
        assert_ne!(redacted("$mqtt.s.bob").unwrap(), r);
        assert!(redacted("stomp.alice.feed").is_some());
        assert!(redacted("$sb.tmp.x").is_some());
        assert_eq!(redacted("orders"), None);
        assert_eq!(redacted("$sb.link.rabbit"), None);
    }

    #[test]
    fn cross_site_checks() {
        let mut h = HeaderMap::new();
        assert!(same_site(&h, "127.0.0.1:8161").is_ok());
        h.insert(ORIGIN, "http://127.0.0.1:8161".parse().unwrap());
        assert!(same_site(&h, "127.0.0.1:8161").is_ok());
        assert!(same_site(&h, "localhost:8161").is_err());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(same_site(&h, "127.0.0.1:8161").is_err());
        h.remove(ORIGIN);
        h.insert("sec-fetch-site", "none".parse().unwrap());
        assert!(same_site(&h, "127.0.0.1:8161").is_ok());
    }
}
