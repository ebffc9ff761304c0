//! Moments a connection keeps, in 8 bytes instead of an `Instant`'s 16.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// A moment as whole milliseconds since the first moment the process took: every
/// connection keeps two (when it last received, when it last had something to do),
/// parked ones too. Millisecond precision is plenty for keep-alive and idle deadlines
/// (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Stamp(u64);

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

impl Stamp {
    pub(super) fn now() -> Self {
        Self::of(Instant::now())
    }

    pub(super) fn of(at: Instant) -> Self {
        Self(at.saturating_duration_since(epoch()).as_millis() as u64)
    }

    /// The moment, to the millisecond below.
    pub(super) fn instant(self) -> Instant {
        epoch() + Duration::from_millis(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_its_moment_to_the_millisecond() {
        let at = Instant::now() + Duration::from_millis(1500);
        let back = Stamp::of(at).instant();
        assert!(
            back <= at && at - back < Duration::from_millis(1),
            "{at:?} {back:?}"
        );
        assert!(Stamp::now() < Stamp::of(at));
    }
}
