//! The delay between a link's connection attempts.

use super::status::now_ms;

/// Capped exponential backoff with jitter: each delay is random between half and all of
/// `min(cap, initial·2^n)`, so many routers restarting together do not stampede, and no
/// delay is ever zero.
#[derive(Debug)]
pub struct Backoff {
    initial: std::time::Duration,
    cap: std::time::Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: std::time::Duration, cap: std::time::Duration) -> Self {
        Self {
            initial,
            cap,
            attempt: 0,
            seed: now_ms() ^ u64::from(std::process::id()).rotate_left(32),
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> std::time::Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac =
            (self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        // Half fixed, half jitter: never zero, never above the ceiling.
        ceiling.mul_f64(0.5 + 0.5 * frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        assert!(d[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
