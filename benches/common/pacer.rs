//! A fixed rate for the load generators, message by message.
//!
//! tokio's timers tick in milliseconds, so a generator that sleeps with them can only
//! send 5,000 messages a second as bursts of ten every 2 ms, written together: a client
//! that batches. A fixed rate means one message every 200 µs. The pacer's thread sleeps
//! to each tick itself (`clock_nanosleep` with the timer slack cut to 1 ns) and wakes the
//! generator's task; the task sends what is due by then: one message per tick when the
//! tick is the interval, a few when the interval is shorter than [`MIN_TICK`] (50,000/s:
//! five every 100 µs), more only when the machine delayed a wake-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The shortest sleep between wake-ups: ticks closer than this would spend the
/// generator's CPU on wake-ups (the machine has two cores for both sides).
pub const MIN_TICK: Duration = Duration::from_micros(100);

/// Paces messages at `rate` per second from `start`: message `i` is due at
/// `start + i / rate`. Its thread stops when the pacer is dropped.
pub struct Pacer {
    start: Instant,
    interval: Duration,
    tick: Arc<Notify>,
    stop: Arc<AtomicBool>,
}

impl Pacer {
    pub fn new(rate: u64, start: Instant) -> Pacer {
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let every = interval.max(MIN_TICK);
        let tick = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (tick, stop) = (tick.clone(), stop.clone());
            std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || {
                    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer
                    // slack (50 µs by default: every sleep would end up to 50 µs late).
                    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64) };
                    let mut k = 1u32;
                    while !stop.load(Ordering::Relaxed) {
                        let at = start + every * k;
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        tick.notify_one();
                        k += 1;
                    }
                })
                .expect("pacer thread");
        }
        Pacer {
            start,
            interval,
            tick,
            stop,
        }
    }

    /// How many messages are due by now (message 0 is due at once).
    fn due(&self) -> u64 {
        (self.start.elapsed().as_nanos() / self.interval.as_nanos()) as u64 + 1
    }

    /// Waits until message `i` is due. True when `i` is the last message due now (the
    /// moment to write what was fed).
    pub async fn wait(&self, i: u64) -> bool {
        loop {
            let due = self.due();
            if i < due {
                return i + 1 == due;
            }
            self.tick.notified().await;
        }
    }
}

/// Waits until message `i` is due when paced (`None`: at once, never caught up). True
/// when `i` is the last message due now (the moment to write what was fed).
pub async fn wait(pacer: Option<&Pacer>, i: usize) -> bool {
    match pacer {
        Some(p) => p.wait(i as u64).await,
        None => false,
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
