//! The `queues:` section: auto-creation, the defaults of queues and of subscription
//! queues, and named queues.

use super::raw::{RawQueue, RawQueues};
use super::{ConfigError, set_given};
use crate::core::{CoreConfig, Destination, QueueOptions};
use crate::duration::parse_duration;

/// Applies `queues:` to the core's queue settings. Named queues inherit `defaults`.
pub(super) fn validate(
    raw: RawQueues,
    shown: &str,
    core: &mut CoreConfig,
    errors: &mut Vec<ConfigError>,
) {
    set_given(&mut core.auto_create_queues, raw.auto_create);
    core.default_queue = queue_options(
        &raw.defaults,
        &core.default_queue,
        "queues.defaults",
        errors,
    );
    core.default_subscription = queue_options(
        &raw.subscription_defaults,
        &core.default_subscription,
        "queues.subscription_defaults",
        errors,
    );
    for (name, rq) in &raw.named {
        if let Err(e) = crate::core::validate_name(name) {
            errors.push(ConfigError(format!("{shown}: queues.named `{name}`: {e}")));
            continue;
        }
        let o = queue_options(
            rq,
            &core.default_queue,
            &format!("queues.named.{name}"),
            errors,
        );
        core.queues.insert(name.clone(), o);
    }
}

fn queue_options(
    raw: &RawQueue,
    base: &QueueOptions,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> QueueOptions {
    let mut o = base.clone();
    set_given(&mut o.max_length, raw.max_length);
    set_given(&mut o.max_bytes, raw.max_bytes);
    set_given(&mut o.overflow, raw.overflow);
    if let Some(v) = &raw.ttl {
        match parse_duration(v) {
            Ok(d) => o.ttl = Some(d),
            Err(e) => errors.push(ConfigError(format!("{what}.ttl: {e}"))),
        }
    }
    set_given(&mut o.expired, raw.expired);
    if let Some(v) = &raw.dead_letter {
        match Destination::parse(v) {
            Ok(d) => o.dead_letter = Some(d),
            Err(e) => errors.push(ConfigError(format!("{what}.dead_letter `{v}`: {e}"))),
        }
    }
    if let Some(v) = raw.max_deliveries {
        if v == 0 {
            errors.push(ConfigError(format!(
                "{what}.max_deliveries must be at least 1"
            )));
        }
        o.max_deliveries = Some(v);
    }
    if o.max_length == 0 {
        errors.push(ConfigError(format!("{what}.max_length must be at least 1")));
    }
    o
}
