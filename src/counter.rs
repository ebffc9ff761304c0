//! Counters that hot paths bump from every worker thread at once: per-protocol traffic
//! (`translate::traffic`) and per-route matches (`routes::RouteCounters`).
//!
//! One `AtomicU64` bumped by every worker is one cache line that the cores pass back and
//! forth on every message, and each bump is a locked read-modify-write. Two ways out:
//!
//! - [`PerThread`], for a fixed set of counters declared once (a `static`): each thread
//!   that counts owns a row of them and is its only writer, so a bump is a plain load and
//!   store (no locked instruction, no shared line). A thread's row is registered once;
//!   when the thread ends, its row (and its counts) goes to the next thread that starts
//!   counting. Reading sums the rows.
//! - [`Sharded`], for counters made at run time (one set per route): a row per shard,
//!   each shard on its own cache lines, a thread always on the same shard (threads get
//!   shards in turn), bumped with a relaxed atomic add. There are twice as many shards as
//!   hardware threads (a power of two, 2 to 64), so the few threads that count (the
//!   runtime's workers, a blocking thread now and then) rarely share one; when they do,
//!   the counts stay exact, only the line is shared.
//!
//! `benches/core.rs` measures the three (shared atomic, sharded, per thread) on one and
//! two threads; docs/benchmarks.md ("Cost of the metrics") has the figures.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Two cache lines: some CPUs fetch lines in pairs (adjacent-line prefetch), which makes
/// neighbours on one 64-byte line's twin share as well.
#[repr(align(128))]
#[derive(Debug)]
struct Shard<const W: usize>([AtomicU64; W]);

/// `W` counters, sharded. See the module docs.
#[derive(Debug)]
pub struct Sharded<const W: usize> {
    shards: Box<[Shard<W>]>,
}

impl<const W: usize> Default for Sharded<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize> Sharded<W> {
    pub fn new() -> Self {
        let shards = (0..shard_count())
            .map(|_| Shard(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Self { shards }
    }

    /// Adds `n` to counter `i` (relaxed: a count, ordering nothing).
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        let shard = &self.shards[this_thread() & (self.shards.len() - 1)];
        shard.0[i].fetch_add(n, Ordering::Relaxed);
    }

    /// Counter `i` summed over the shards.
    pub fn get(&self, i: usize) -> u64 {
        self.shards.iter().fold(0u64, |sum, s| {
            sum.wrapping_add(s.0[i].load(Ordering::Relaxed))
        })
    }
}

/// `W` counters with one row per counting thread, each row written by its thread only.
/// See the module docs. Declare it `static` with a `thread_local!` [`Row`] handle:
///
/// ```
/// use switchboard::counter::{PerThread, Row};
/// static COUNTS: PerThread<2> = PerThread::new();
/// thread_local! { static MINE: Row<2> = COUNTS.row(); }
/// MINE.with(|r| r.add(0, 1));
/// assert_eq!(COUNTS.get(0), 1);
/// ```
#[derive(Debug)]
pub struct PerThread<const W: usize> {
    /// Every row ever handed out (threads that ended included: their counts stay).
    rows: Mutex<Vec<Arc<Shard<W>>>>,
    /// Rows of threads that ended, for the next threads to take over.
    spare: Mutex<Vec<Arc<Shard<W>>>>,
}

impl<const W: usize> Default for PerThread<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize> PerThread<W> {
    pub const fn new() -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// A row for the calling thread: a spare one, or a new one registered for reading.
    pub fn row(&'static self) -> Row<W> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let shard = spare.unwrap_or_else(|| {
            let shard = Arc::new(Shard(std::array::from_fn(|_| AtomicU64::new(0))));
            self.rows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(&shard));
            shard
        });
        Row { shard, owner: self }
    }

    /// Counter `i` summed over the rows.
    pub fn get(&self, i: usize) -> u64 {
        self.rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .fold(0u64, |sum, r| {
                sum.wrapping_add(r.0[i].load(Ordering::Relaxed))
            })
    }
}

/// One thread's row of a [`PerThread`]; dropped with the thread, it goes back to the
/// spares (its counts stay in the sums).
#[derive(Debug)]
pub struct Row<const W: usize> {
    shard: Arc<Shard<W>>,
    owner: &'static PerThread<W>,
}

impl<const W: usize> Row<W> {
    /// Adds `n` to counter `i`: a plain load and store, as this thread is the row's only
    /// writer (the atomics are for the readers). Wrapping: `n.wrapping_neg()` takes back.
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        let c = &self.shard.0[i];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

impl<const W: usize> Drop for Row<W> {
    fn drop(&mut self) {
        // The mutex orders this thread's last stores before the next owner's loads.
        self.owner
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&self.shard));
    }
}

/// Shards per counter: twice the hardware threads, a power of two, 2 to 64.
fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        (threads * 2).next_power_of_two().clamp(2, 64)
    })
}

/// This thread's shard number (before masking): threads take numbers in turn.
#[inline]
fn this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_threads() {
        let c = std::sync::Arc::new(Sharded::<2>::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(0, 1);
                        c.add(1, 3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((c.get(0), c.get(1)), (8000, 24_000));
    }

    static PER_THREAD: PerThread<2> = PerThread::new();
    thread_local! { static ROW: Row<2> = PER_THREAD.row(); }

    #[test]
    fn per_thread_rows_sum_and_outlive_their_threads() {
        let spawn = |adds: u64| {
            std::thread::spawn(move || {
                for _ in 0..adds {
                    ROW.with(|r| {
                        r.add(0, 1);
                        r.add(1, 10);
                    });
                }
            })
        };
        let first: Vec<_> = (0..4).map(|_| spawn(1000)).collect();
        for t in first {
            t.join().unwrap();
        }
        assert_eq!((PER_THREAD.get(0), PER_THREAD.get(1)), (4000, 40_000));
        let rows = PER_THREAD.rows.lock().unwrap().len();
        // Threads started after those ended take their rows over: no new ones.
        spawn(5).join().unwrap();
        ROW.with(|r| r.add(1, 7u64.wrapping_neg()));
        assert_eq!((PER_THREAD.get(0), PER_THREAD.get(1)), (4005, 40_043));
        assert_eq!(PER_THREAD.rows.lock().unwrap().len(), rows);
    }

    #[test]
    fn shards_are_a_power_of_two_on_their_own_lines() {
        let n = shard_count();
        assert!(n.is_power_of_two() && (2..=64).contains(&n));
        assert_eq!(std::mem::align_of::<Shard<1>>(), 128);
        assert_eq!(std::mem::size_of::<Shard<16>>(), 128);
    }
}
