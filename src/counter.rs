//! Counters that hot paths bump from every worker thread at once: per-protocol traffic
//! (`translate::traffic`) and per-route matches (`routes::RouteCounters`).
//!
//! One `AtomicU64` bumped by every worker is one cache line that the cores pass back and
//! forth on every message. [`Sharded`] keeps a row of counters per shard, each shard on
//! its own cache lines, and a thread always bumps the same shard (threads get shards in
//! turn, the first time they count), so the tokio workers each write their own lines and
//! the bump is an uncontended relaxed add. Reading sums the shards: scrapes are rare.
//!
//! There are twice as many shards as the machine has hardware threads (a power of two,
//! at most 64), so the few threads that count (the runtime's workers, a blocking thread
//! now and then) rarely share one; when they do, the counts stay exact, only the line is
//! shared. `benches/core.rs` measures a shared atomic against this under two threads.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

    /// Takes back `n` from counter `i` (a count that turned out wrong). The shards wrap,
    /// their sum does not go below what was added.
    pub fn sub(&self, i: usize, n: u64) {
        let shard = &self.shards[this_thread() & (self.shards.len() - 1)];
        shard.0[i].fetch_sub(n, Ordering::Relaxed);
    }

    /// Counter `i` summed over the shards.
    pub fn get(&self, i: usize) -> u64 {
        self.shards.iter().fold(0u64, |sum, s| {
            sum.wrapping_add(s.0[i].load(Ordering::Relaxed))
        })
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
    fn sums_over_threads_and_takes_back() {
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
        // Taken back on another thread than the one that added: the sum is right.
        std::thread::spawn({
            let c = std::sync::Arc::clone(&c);
            move || c.sub(1, 5)
        })
        .join()
        .unwrap();
        assert_eq!(c.get(1), 23_995);
    }

    #[test]
    fn shards_are_a_power_of_two_on_their_own_lines() {
        let n = shard_count();
        assert!(n.is_power_of_two() && (2..=64).contains(&n));
        assert_eq!(std::mem::align_of::<Shard<1>>(), 128);
        assert_eq!(std::mem::size_of::<Shard<16>>(), 128);
    }
}
