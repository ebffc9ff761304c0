//! The `connections:` section: admission limits per peer address, on every listener.

use super::raw::RawConnections;
use super::{ConfigError, set_given};
use crate::listener::limit::PeerLimits;

/// Applies `connections:`; a rate must be 0 (no limit) or more, and with a rate the
/// burst must let at least one connection in.
pub(super) fn validate(
    c: RawConnections,
    shown: &str,
    d: &mut PeerLimits,
    errors: &mut Vec<ConfigError>,
) {
    set_given(&mut d.max_per_ip, c.max_per_ip);
    set_given(&mut d.connect_rate, c.connect_rate);
    set_given(&mut d.connect_burst, c.connect_burst);
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
