//! The `stomp:` section: STOMP session limits and the `stomp-ws` origin policy.

use super::raw::RawStomp;
use super::ws_policy::ws_policy;
use super::{ConfigError, duration_or_off, set_given};
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
    set_given(&mut d.limits.max_frame_size, st.max_frame_size);
    set_given(&mut d.limits.max_headers, st.max_headers);
    set_given(&mut d.limits.max_header_len, st.max_header_length);
    set_given(&mut d.max_subscriptions, st.max_subscriptions);
    set_given(&mut d.max_connections, st.max_connections);
    set_given(&mut d.default_prefetch, st.prefetch.map(|v| v.max(1)));
    if let Some(t) = duration_or_off(
        st.idle_timeout.as_deref(),
        &format!("{shown}: stomp.idle_timeout"),
        errors,
    ) {
        d.idle_timeout = t;
    }
    set_given(&mut d.max_unacked_bytes, st.max_unacked_bytes);
    set_given(&mut d.max_transaction_bytes, st.max_transaction_bytes);
    set_given(&mut d.max_transactions, st.max_transactions);
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
