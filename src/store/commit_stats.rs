//! What the writer's group commits cost, for `/metrics`: how many there were, how long
//! their fsyncs took and how many records each wrote. The writer thread records once
//! per batch into fixed buckets of plain atomics, so recording takes no lock and the
//! store needs nothing outside itself; readers take a [`HistogramSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fsync latency buckets, in microseconds (100 µs to 1 s).
pub const FSYNC_BOUNDS_MICROS: [u64; 13] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Upper bounds of the batch size buckets, in records (powers of two up to the writer's
/// largest batch).
pub const BATCH_BOUNDS_RECORDS: [u64; 14] = [
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192,
];

/// A histogram of integer observations over fixed upper bounds.
#[derive(Debug)]
pub(super) struct Histogram {
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative), the last one above every bound.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn record(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds (inclusive) of the buckets.
    pub bounds: &'static [u64],
    /// Observations per bucket, not cumulative: one per bound, then those above them all.
    pub buckets: Vec<u64>,
    /// Sum of the observations.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Observations in all (the buckets' total, so it always agrees with them).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The writer's figures, shared with the journal's readers.
#[derive(Debug)]
pub(super) struct CommitStats {
    /// Batches written so far.
    commits: AtomicU64,
    /// Each fsync of written batches, in microseconds.
    fsync: Histogram,
    /// Records written per batch.
    batch: Histogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        Self {
            commits: AtomicU64::new(0),
            fsync: Histogram::new(&FSYNC_BOUNDS_MICROS),
            batch: Histogram::new(&BATCH_BOUNDS_RECORDS),
        }
    }
}

impl CommitStats {
    /// One batch of `records` written (whether or not the write succeeded).
    pub(super) fn commit(&self, records: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.batch.record(records as u64);
    }

    /// One successful fsync that took `took`.
    pub(super) fn fsync(&self, took: Duration) {
        self.fsync
            .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub(super) fn fsync_micros(&self) -> HistogramSnapshot {
        self.fsync.snapshot()
    }

    pub(super) fn batch_records(&self) -> HistogramSnapshot {
        self.batch.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let s = CommitStats::default();
        for records in [1, 2, 3, 8192, 9000] {
            s.commit(records);
        }
        let b = s.batch_records();
        assert_eq!((b.count(), b.sum, s.commits()), (5, 17198, 5));
        // Bounds 1, 2, 4, …: 1 → le 1, 2 → le 2, 3 → le 4, 8192 → le 8192, 9000 above all.
        assert_eq!(&b.buckets[..3], &[1, 1, 1]);
        assert_eq!(&b.buckets[13..], &[1, 1]);
        s.fsync(Duration::from_micros(700));
        let f = s.fsync_micros();
        assert_eq!((f.count(), f.sum, f.buckets[3]), (1, 700, 1));
    }
}
