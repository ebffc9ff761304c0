//! The `mqtt:` section: MQTT session limits and the `mqtt-ws` origin policy.

use super::raw::RawMqtt;
use super::ws_policy::ws_policy;
use super::{ConfigError, duration_or_off, set_given};
use crate::listener::mqtt::state::MqttSettings;
use crate::listener::origin::WsPolicy;

/// Applies `mqtt:` to the MQTT session settings; returns the `mqtt-ws` origin policy.
pub(super) fn validate(
    m: RawMqtt,
    shown: &str,
    d: &mut MqttSettings,
    errors: &mut Vec<ConfigError>,
) -> WsPolicy {
    set_given(&mut d.max_packet_size, m.max_packet_size);
    set_given(&mut d.max_inflight, m.max_inflight.map(|v| v.max(1)));
    set_given(&mut d.max_queued, m.max_queued.map(|v| v.max(1)));
    set_given(&mut d.max_retained, m.max_retained);
    set_given(&mut d.max_retained_bytes, m.max_retained_bytes);
    set_given(
        &mut d.max_subscriptions,
        m.max_subscriptions.map(|v| v.max(1)),
    );
    set_given(&mut d.max_connections, m.max_connections);
    set_given(&mut d.max_keep_alive, m.max_keep_alive);
    if let Some(t) = duration_or_off(
        m.park_idle_after.as_deref(),
        &format!("{shown}: mqtt.park_idle_after"),
        errors,
    ) {
        d.park_idle_after = t;
    }
    ws_policy(
        m.ws_allowed_origins,
        m.ws_allow_anonymous_browsers,
        &format!("{shown}: mqtt"),
        errors,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Settings;

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
}
