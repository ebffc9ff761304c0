//! The `links:` section: outbound AMQP and XMPP (component or client) links, by name.

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
        let env = |k: &str| std::env::var(k).ok();
        let kind = match link {
            RawLink::Amqp(a) => {
                match AmqpLinkSettings::from_raw(&name, *a, base, &env) {
                    Ok(a) => s.amqp_links.push(a),
                    Err(es) => errors.extend(in_file(shown, es)),
                }
                LinkKind::Amqp
            }
            RawLink::Xmpp(x) => {
                match XmppLinkSettings::from_raw(&name, *x, base, &env) {
                    Ok(x) => s.xmpp_links.push(x),
                    Err(es) => errors.extend(in_file(shown, es)),
                }
                LinkKind::Xmpp
            }
            RawLink::XmppClient(x) => {
                match XmppLinkSettings::from_raw_client(&name, *x, base, &env) {
                    Ok(x) => s.xmpp_links.push(x),
                    Err(es) => errors.extend(in_file(shown, es)),
                }
                // Routes name it as any XMPP link (`xmpp: {link: NAME, …}`).
                LinkKind::Xmpp
            }
        };
        s.links.insert(name, kind);
    }
}

/// A link's own errors, prefixed with the settings file they are in.
fn in_file(shown: &str, errors: Vec<String>) -> impl Iterator<Item = ConfigError> + '_ {
    errors
        .into_iter()
        .map(move |e| ConfigError(format!("{shown}: {e}")))
}
