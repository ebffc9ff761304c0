//! Cross-site checks on HTTP requests: the `Origin` of a WebSocket upgrade (any web
//! page can open a WebSocket to any address, and the browser sends the page's origin)
//! and the `Host` a request was sent to (DNS rebinding: a hostile name that resolves to
//! 127.0.0.1 makes a page same-origin with a loopback listener; the `Host` still names
//! the hostile site).

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::{IntoResponse, Response};

/// A WebSocket listener's origin policy (`stomp.ws_allowed_origins`,
/// `stomp.ws_allow_anonymous_browsers`, and the same under `mqtt`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WsPolicy {
    /// Origins accepted besides the listener's own, normalised (lower case,
    /// `scheme://host:port`); `*` accepts any.
    pub allowed_origins: Vec<String>,
    /// Clients whose upgrade carried an `Origin` (browsers) may connect anonymously
    /// under `auth.anonymous: loopback`.
    pub anonymous_browsers: bool,
}

/// What the upgrade request says about its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// No `Origin`, or the listener's own (what non-browser WebSocket libraries such as
    /// paho and websocket-client send): not a web page, since the listener serves none.
    NotBrowser,
    /// A page of another origin, accepted by `ws_allowed_origins`.
    Browser,
}

impl WsPolicy {
    /// Checks an upgrade request: `Err` carries the refused origin. `loopback`: the
    /// listener is bound to loopback, where the `Host` must name this machine for the
    /// own-origin rule (else a DNS-rebinding page would be its own origin).
    pub fn check(&self, headers: &HeaderMap, loopback: bool) -> Result<Client, String> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(Client::NotBrowser);
        };
        let origin = origin.to_str().unwrap_or("").trim();
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if same_origin(origin, host) && (!loopback || host_is_loopback_name(host)) {
            return Ok(Client::NotBrowser);
        }
        let allowed = self
            .allowed_origins
            .iter()
            .any(|a| a == "*" || normalise_origin(origin).is_some_and(|o| o == *a));
        if allowed {
            Ok(Client::Browser)
        } else {
            Err(origin.chars().take(200).collect())
        }
    }
}

/// `scheme://host:port` in lower case, the port made explicit; `None` when `origin`
/// is not of that form (`null`, a path, garbage).
pub fn normalise_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let default = match scheme {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_port(authority);
    Some(format!("{scheme}://{host}:{}", port.unwrap_or(default)))
}

/// Splits `host[:port]` (IPv6 in brackets).
fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => match authority[i + 1..].parse() {
            Ok(p) => (&authority[..i], Some(p)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// Does `origin` name the host and port the request was sent to (`Host`)?
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some(o) = normalise_origin(origin) else {
        return false;
    };
    let (scheme, authority) = o.split_once("://").unwrap_or_default();
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() {
        return false;
    }
    let (h, port) = split_port(&host);
    let default = if matches!(scheme, "https" | "wss") {
        443
    } else {
        80
    };
    authority == format!("{h}:{}", port.unwrap_or(default))
}

/// Is the `Host` header's name one that can only mean this machine (`localhost`,
/// `127.0.0.1`, `[::1]`, any port)? Accepted on loopback listeners; any other name may
/// be a rebinding one.
pub fn host_is_loopback_name(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let (h, _) = split_port(&host);
    matches!(h, "localhost" | "127.0.0.1" | "[::1]")
}

/// Refuses an upgrade from an origin the listener does not accept: 403, counted and
/// logged by the listener's gate.
pub fn refuse(gate: &super::limit::Gate, peer: std::net::SocketAddr, origin: &str) -> Response {
    gate.origin_refused(peer, origin);
    (
        axum::http::StatusCode::FORBIDDEN,
        "origin not allowed on this WebSocket listener\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            normalise_origin("HTTP://Example.com").as_deref(),
            Some("http://example.com:80")
        );
        assert_eq!(
            normalise_origin("https://[::1]:8443/").as_deref(),
            Some("https://[::1]:8443")
        );
        assert_eq!(normalise_origin("null"), None);
        assert_eq!(normalise_origin("file://"), None);
        assert!(same_origin("http://127.0.0.1:8083", "127.0.0.1:8083"));
        assert!(same_origin("http://localhost", "LOCALHOST:80"));
        assert!(!same_origin("http://127.0.0.1:9999", "127.0.0.1:8083"));
        assert!(!same_origin("http://evil.example:8083", "127.0.0.1:8083"));
        assert!(!same_origin("null", "127.0.0.1:8083"));
        assert!(host_is_loopback_name("localhost:8161"));
        assert!(host_is_loopback_name("[::1]:8161"));
        assert!(host_is_loopback_name("127.0.0.1"));
        assert!(!host_is_loopback_name("evil.example:8161"));
        assert!(!host_is_loopback_name("127.0.0.1.evil.example"));
    }

    #[test]
    fn policy() {
        let mut h = HeaderMap::new();
        h.insert(HOST, "127.0.0.1:8083".parse().unwrap());
        let p = WsPolicy::default();
        assert_eq!(p.check(&h, true), Ok(Client::NotBrowser));
        h.insert(ORIGIN, "http://127.0.0.1:8083".parse().unwrap());
        assert_eq!(p.check(&h, true), Ok(Client::NotBrowser), "own origin");
        let mut rebound = HeaderMap::new();
        rebound.insert(HOST, "evil.example:8083".parse().unwrap());
        rebound.insert(ORIGIN, "http://evil.example:8083".parse().unwrap());
        assert!(p.check(&rebound, true).is_err(), "DNS rebinding");
        assert_eq!(p.check(&rebound, false), Ok(Client::NotBrowser));
        h.insert(ORIGIN, "https://app.example".parse().unwrap());
        assert!(p.check(&h, true).is_err());
        let p = WsPolicy {
            allowed_origins: vec!["https://app.example:443".into()],
            anonymous_browsers: false,
        };
        assert_eq!(p.check(&h, true), Ok(Client::Browser));
        let any = WsPolicy {
            allowed_origins: vec!["*".into()],
            anonymous_browsers: false,
        };
        h.insert(ORIGIN, "null".parse().unwrap());
        assert_eq!(any.check(&h, true), Ok(Client::Browser));
    }
}
