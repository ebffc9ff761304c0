//! The management console: a page at `GET /` of the admin listener and its script and
//! style, compiled into the binary (`include_str!`: no build step, nothing fetched at
//! run time). The page is a shell with no data in it, so it is served without the
//! [`super::access::guard`]; everything it shows comes from the JSON API, which the
//! guard keeps behind the admin login (see `docs/operations.md`, "The console").
//!
//! The login: the page asks for an admin user's name and password (or a token) and keeps
//! the `Authorization` value in the tab's `sessionStorage`, sending it on every request
//! with `credentials: "omit"`. The browser therefore never holds ambient credentials for
//! the listener (no cookie, no cached Basic login), so another site cannot make it send
//! them; the guard's `Origin`/`Sec-Fetch-Site` check stays as the second line. Closing
//! the tab or "Log out" forgets them.
//!
//! Served with a strict Content-Security-Policy: scripts and styles only from these
//! files (no inline script, no `eval`), requests only to this origin, never framed.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// What the page may load and do.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The console's routes, for merging after the guard's layer.
pub(super) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // A new binary may bring a new console: never run a stale script against it.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}
