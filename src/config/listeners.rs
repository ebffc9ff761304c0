//! The `listeners:` and `tls:` sections: which listeners run, on which address, and
//! which of them speak TLS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use super::ConfigError;
use super::raw::RawTls;

/// Listener names the daemon knows, with their embedded default addresses.
pub const LISTENERS: &[(&str, &str)] = &[
    ("admin", "127.0.0.1:8161"),
    ("stomp", "127.0.0.1:61613"),
    ("stomp-ws", "127.0.0.1:61614"),
    ("mqtt", "127.0.0.1:1883"),
    ("mqtt-ws", "127.0.0.1:8083"),
];

pub(super) fn check_listener_name(name: &str) -> Result<(), String> {
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

/// Applies `listeners:` to the enabled listeners (`off` or no address disables one).
pub(super) fn validate(
    raw: BTreeMap<String, Option<String>>,
    shown: &str,
    listeners: &mut BTreeMap<String, SocketAddr>,
    errors: &mut Vec<ConfigError>,
) {
    for (name, addr) in raw {
        if let Err(e) = check_listener_name(&name) {
            errors.push(ConfigError(format!("{shown}: listeners: {e}")));
            continue;
        }
        match addr.as_deref() {
            None | Some("off") => {
                listeners.remove(&name);
            }
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(a) => {
                    listeners.insert(name, a);
                }
                Err(e) => errors.push(ConfigError(format!(
                    "{shown}: listeners.{name}: `{a}` is not HOST:PORT ({e})"
                ))),
            },
        }
    }
}

/// The TLS acceptors of `tls:`, by listener name; certificate and key paths are relative
/// to `base`.
pub(super) fn tls(
    raw: BTreeMap<String, RawTls>,
    shown: &str,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, crate::tls::Tls> {
    let mut tls = BTreeMap::new();
    for (name, t) in raw {
        match name.as_str() {
            "stomp" | "stomp-ws" | "mqtt" | "mqtt-ws" => match crate::tls::acceptor(&base.join(&t.cert), &base.join(&t.key)) {
                Ok(a) => {
                    tls.insert(name, crate::tls::Tls(a));
                }
                Err(e) => errors.push(ConfigError(format!("{shown}: tls.{name}: {e}"))),
            },
            other => errors.push(ConfigError(format!(
                "{shown}: tls.{other}: TLS is available on the stomp, stomp-ws, mqtt and mqtt-ws listeners; terminate TLS for the admin API in front of the router"
            ))),
        }
    }
    tls
}
