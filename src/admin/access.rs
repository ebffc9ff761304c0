//! Who may use the admin API, checked in front of every route: admin users (HTTP Basic)
//! and bearer tokens, the loopback-only default, the `Host` check against DNS rebinding
//! and the cross-site check for state-changing requests (see the module docs of
//! [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::AdminState;
use crate::listener::origin::{host_is_loopback_name, same_origin};

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
pub(super) enum Caller {
    /// An admin user or token.
    Admin,
    /// Unauthenticated, on loopback, with no admin configured.
    Local,
}

/// How long a verified Basic password is remembered (argon2 is deliberately slow; a
/// script polling the API would otherwise spend a core on it).
pub(super) const VERIFIED_FOR: Duration = Duration::from_secs(60);

/// user → (SHA-256 of the user and password verified, when).
pub(super) type Verified = HashMap<String, ([u8; 32], Instant)>;

/// Refusal causes, each logged at most once per second.
#[derive(Clone, Copy)]
pub(super) enum Cause {
    Host = 0,
    CrossSite = 1,
    Access = 2,
}

pub(super) fn refuse(
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
pub(super) const OPEN: &[&str] = &["/health", "/health/live", "/health/ready"];

/// Access control in front of every route but the [`OPEN`] ones (see the module docs).
pub(super) async fn guard(
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
pub(super) fn same_site(headers: &HeaderMap, host: &str) -> Result<(), &'static str> {
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
pub(super) async fn authenticate(
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

pub(super) const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$4WXl1W4Jq2Sx6hG1lqyHOFQbFR9S2FqKjPAc4Mk3dPw";

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
