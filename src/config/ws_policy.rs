//! The WebSocket listeners' origin policy, read from the `stomp:` and `mqtt:` sections.

use super::ConfigError;
use crate::listener::origin::{WsPolicy, normalise_origin};

/// A WebSocket listener's origin policy from `ws_allowed_origins` and
/// `ws_allow_anonymous_browsers` under `what` (`stomp` or `mqtt`).
pub(super) fn ws_policy(
    origins: Option<Vec<String>>,
    anonymous_browsers: Option<bool>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> WsPolicy {
    let mut allowed = Vec::new();
    for o in origins.into_iter().flatten() {
        if o.trim() == "*" {
            allowed.push("*".to_owned());
            continue;
        }
        match normalise_origin(&o) {
            Some(n) => allowed.push(n),
            None => errors.push(ConfigError(format!(
                "{what}.ws_allowed_origins: `{o}` is not an origin (`https://host[:port]`, or `*`)"
            ))),
        }
    }
    WsPolicy {
        allowed_origins: allowed,
        anonymous_browsers: anonymous_browsers.unwrap_or(false),
    }
}
