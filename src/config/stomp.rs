//! The `stomp:` section: STOMP session limits and the `stomp-ws` origin policy.

use super::raw::RawStomp;
use super::ws_policy::ws_policy;
use super::{ConfigError, duration_or_off};
use crate::listener::origin::WsPolicy;
use crate::listener::stomp::session::StompSettings;

/// Applies `stomp:` to the STOMP session settings; returns the `stomp-ws` origin policy.
pub(super) fn validate(
    st: RawStomp,
    shown: &str,
    d: &mut StompSettings,
    errors: &mut Vec<ConfigError>,
) -> WsPolicy {
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
    if let Some(t) = duration_or_off(
        st.idle_timeout.as_deref(),
        &format!("{shown}: stomp.idle_timeout"),
        errors,
    ) {
        d.idle_timeout = t;
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
    ws_policy(
        st.ws_allowed_origins,
        st.ws_allow_anonymous_browsers,
        &format!("{shown}: stomp"),
        errors,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Settings;

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
