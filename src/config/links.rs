//! The `links:` section: outbound AMQP and XMPP links, by name.

use std::collections::BTreeMap;
use std::path::Path;

use super::raw::RawLink;
use super::{ConfigError, Settings};
use crate::link::amqp::AmqpLinkSettings;
use crate::link::xmpp::XmppLinkSettings;
use crate::routes::LinkKind;

/// Fills the link names and kinds the route compiler checks routes against, and each
/// protocol's link settings. Secrets may come from the environment; paths are relative
/// to `base`.
pub(super) fn validate(
    raw: BTreeMap<String, RawLink>,
    shown: &str,
    base: &Path,
    s: &mut Settings,
    errors: &mut Vec<ConfigError>,
) {
    for (name, link) in raw {
        if let Err(e) = crate::link::amqp::settings::check_link_name(&name) {
            errors.push(ConfigError(format!("{shown}: links: {e}")));
            continue;
        }
        let kind =
            match link {
                RawLink::Amqp(a) => {
                    let env = |k: &str| std::env::var(k).ok();
                    match AmqpLinkSettings::from_raw(&name, *a, base, &env) {
                        Ok(a) => s.amqp_links.push(a),
                        Err(es) => errors
                            .extend(es.into_iter().map(|e| ConfigError(format!("{shown}: {e}")))),
                    }
                    LinkKind::Amqp
                }
                RawLink::Xmpp(x) => {
                    let env = |k: &str| std::env::var(k).ok();
                    match XmppLinkSettings::from_raw(&name, *x, base, &env) {
                        Ok(x) => s.xmpp_links.push(x),
                        Err(es) => errors
                            .extend(es.into_iter().map(|e| ConfigError(format!("{shown}: {e}")))),
                    }
                    LinkKind::Xmpp
                }
            };
        s.links.insert(name, kind);
    }
}
