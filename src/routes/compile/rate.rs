//! A route's `rate_limit`: checked with the table; the limiter it builds starts with full
//! buckets, and a reload that keeps the route's name and limit keeps the old one
//! ([`RouteTable::adopt_state`](crate::routes::RouteTable::adopt_state)).

use std::sync::Arc;

use serde_saphyr::Spanned;

use super::Compiler;
use crate::routes::rate::{Limit, RateLimiter};
use crate::routes::spec::RateLimitSpec;

/// Highest `rate` and `burst` accepted: far above what one route carries, low enough that
/// the bucket arithmetic stays exact.
const MAX_RATE: f64 = 1e9;

impl Compiler<'_> {
    pub(super) fn rate_limit(
        &mut self,
        file: &str,
        route: &str,
        spec: &Spanned<RateLimitSpec>,
    ) -> Option<Arc<RateLimiter>> {
        let s = &spec.value;
        let rate = s.rate.value;
        let mut ok = true;
        if !(rate > 0.0 && rate <= MAX_RATE) {
            let msg = format!(
                "`rate` is messages per second: more than 0, at most {MAX_RATE}, not {rate}"
            );
            self.err(file, s.rate.referenced, route, msg);
            ok = false;
        }
        let burst = match &s.burst {
            Some(b) if !(b.value >= 1.0 && b.value <= MAX_RATE) => {
                let msg = format!("`burst` must be between 1 and {MAX_RATE}, not {}", b.value);
                self.err(file, b.referenced, route, msg);
                ok = false;
                1.0
            }
            Some(b) => b.value,
            None => rate.max(1.0),
        };
        ok.then(|| {
            Arc::new(RateLimiter::new(Limit {
                rate,
                burst,
                per: s.per,
                over: s.over,
            }))
        })
    }
}
