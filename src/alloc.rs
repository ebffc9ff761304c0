//! The daemon's memory allocator: mimalloc, tuned to give freed memory back when a
//! worker goes idle.
//!
//! A broker's memory is mostly its idle connections, and they arrive in bursts: ten
//! thousand clients connecting at once allocate ten thousand tasks and read buffers,
//! then go idle, and their tasks end (idle MQTT connections wait in one poller, see
//! `listener::mqtt::session::park`). With glibc's allocator the pages those tasks
//! freed stayed resident between the small session objects that outlive them: 2.0 KiB
//! per idle connection. mimalloc keeps objects of one size together, so those pages
//! empty completely and can leave the process.
//!
//! When they leave matters both ways. mimalloc purges an emptied page 10 ms after it
//! empties, but only when the thread next runs the allocator, which for a worker that
//! went idle after a burst may be never; and what another thread freed waits on the
//! owning thread's deferred list until it next allocates. Purging at once instead
//! (`purge_delay` 0) fixed idle memory but made a busy router give pages back and fault
//! them in again thousands of times a second: page faults and TLB shootdowns took 8 %
//! of its CPU in the MQTT QoS 0 1→1 profile. So the delay stays, and
//! [`collect_when_idle`], run as each worker parks, forces a collection of its heap
//! (deferred frees, emptied pages, scheduled purges) at most every [`COLLECT_EVERY`]:
//! 10,000 idle MQTT connections hold 0.88–0.92 KiB each either way, and QoS 0 1→1
//! moves 15–20 % more messages (2026-12-05, docs/benchmarks.md).
//!
//! The binary installs it (`#[global_allocator]` in `main.rs`); tests and embedders
//! keep their own allocator.

/// mimalloc v2's `mi_option_purge_delay`: position 15 of `mi_option_e` in its
/// `mimalloc.h`, which the Rust bindings name no constant for (the test below checks
/// the position against the compiled library's defaults).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps an emptied page before giving it back (its default, set
/// explicitly: the module docs say why it is not 0).
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets mimalloc's options. Call first thing in `main`; harmless when mimalloc is not
/// the global allocator.
pub fn tune() {
    // SAFETY: mi_option_set only stores an option value; any thread may call it.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// How often a worker going idle collects its heap at most. Short, because what a
/// thread frees after its last collection waits for the next one, and after a burst the
/// last park may be the last for a long time: collecting at most once a second left
/// 10,000 idle connections at 1.28 KiB each instead of 0.92 in one run of four. Long
/// enough that a busy worker, which parks thousands of times a second, pays for at most
/// ten collections a second (each visits the thread's pages: microseconds for an idle
/// daemon's heap, about a millisecond for a gigabyte of queued messages).
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Collects this thread's mimalloc heap (its deferred frees, emptied pages) if it has
/// not done so for [`COLLECT_EVERY`]: for a runtime worker about to sleep (tokio's
/// `on_thread_park`), so memory freed meanwhile leaves the process while it idles.
/// Cheap when it has run lately: one clock read. Harmless when mimalloc is not the
/// global allocator.
pub fn collect_when_idle() {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // Forced: also purges the pages emptied less than the purge delay ago, which
        // would otherwise stay until a collection that may not come.
        // SAFETY: mi_collect only walks and frees this thread's own heap (and purges
        // the arenas' expired ranges).
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_where_we_set_it() {
        // SAFETY: reading option values.
        let (eager_commit_delay, purge_delay) = unsafe {
            (
                libmimalloc_sys::mi_option_get(libmimalloc_sys::mi_option_eager_commit_delay),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            )
        };
        // mimalloc's defaults: the option before it is 1, the purge delay 10 ms (or
        // what MIMALLOC_PURGE_DELAY says, which `tune` overrides).
        assert_eq!(
            libmimalloc_sys::mi_option_eager_commit_delay + 1,
            MI_OPTION_PURGE_DELAY
        );
        assert_eq!(eager_commit_delay, 1);
        let want = std::env::var("MIMALLOC_PURGE_DELAY").map_or(10, |v| v.parse().unwrap());
        assert_eq!(purge_delay, want);
        tune();
        // SAFETY: reading an option value.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            PURGE_DELAY_MS
        );
    }
}
