//! Counted, rate-limited log lines for events that can happen once per message: drops,
//! refusals and limit hits. A flood of them (a subscriber overflowing under load, a
//! hostile client hammering a limit) must not become a flood of log lines, yet none may
//! go uncounted.
//!
//! Each cause is a `static` [`Cause`]: [`Cause::hit`] counts every occurrence and says
//! when a line is due — the first occurrence, then at most one line per [`EVERY`] —
//! with how many occurred since the previous line. Use it through [`rate_warn!`] /
//! [`rate_info!`], which add `cause` and `count` fields. The totals of every cause hit
//! so far are listed by [`snapshot`] (admin API `GET /memory`, under `limits`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per cause this often.
pub const EVERY: Duration = Duration::from_secs(1);

/// One cause of counted, rate-limited log lines. See the module docs.
#[derive(Debug)]
pub struct Cause {
    name: &'static str,
    total: AtomicU64,
    /// Occurrences since the last line.
    unlogged: AtomicU64,
    /// Milliseconds since [`epoch`] of the last line, plus one (0: never logged).
    last_line: AtomicU64,
    registered: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn registry() -> &'static Mutex<Vec<&'static Cause>> {
    static CAUSES: Mutex<Vec<&'static Cause>> = Mutex::new(Vec::new());
    &CAUSES
}

impl Cause {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            total: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            last_line: AtomicU64::new(0),
            registered: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Occurrences so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts one occurrence; `Some(n)` when a line is due, `n` being the occurrences
    /// since the previous line (this one included).
    pub fn hit(&'static self) -> Option<u64> {
        self.hit_at(epoch().elapsed())
    }

    fn hit_at(&'static self, now: Duration) -> Option<u64> {
        if !self.registered.swap(true, Ordering::Relaxed) {
            registry()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now_ms = now.as_millis() as u64 + 1;
        let last = self.last_line.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= EVERY.as_millis() as u64;
        // One thread wins the line; the others' occurrences go into the next one.
        if due
            && self
                .last_line
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.unlogged.swap(0, Ordering::Relaxed).max(1))
        } else {
            None
        }
    }
}

/// Totals of every cause hit since the process started, by name.
pub fn snapshot() -> BTreeMap<&'static str, u64> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|c| (c.name, c.total()))
        .collect()
}

/// `tracing::warn!` at most once per second per cause, with `cause` and `count`
/// (occurrences since the previous line) added: `rate_warn!(CAUSE, field = …, "text")`.
#[macro_export]
macro_rules! rate_warn {
    ($cause:expr, $($rest:tt)+) => {
        if let Some(count) = $cause.hit() {
            tracing::warn!(cause = $cause.name(), count, $($rest)+);
        }
    };
}

/// As [`rate_warn!`] at info level.
#[macro_export]
macro_rules! rate_info {
    ($cause:expr, $($rest:tt)+) => {
        if let Some(count) = $cause.hit() {
            tracing::info!(cause = $cause.name(), count, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second_with_the_count_of_what_it_stands_for() {
        static C: Cause = Cause::new("test.cause");
        let at = |ms: u64| C.hit_at(Duration::from_millis(ms));
        assert_eq!(at(0), Some(1), "the first occurrence is logged");
        assert_eq!(at(10), None);
        assert_eq!(at(500), None);
        assert_eq!(at(999), None);
        assert_eq!(
            at(1000),
            Some(4),
            "a second later: this one and the three before"
        );
        assert_eq!(at(1001), None);
        assert_eq!(at(5000), Some(2));
        assert_eq!(C.total(), 7);
        assert_eq!(snapshot().get("test.cause"), Some(&7));
    }
}
