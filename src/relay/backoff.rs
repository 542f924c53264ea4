//! Restart delays of a failing output: exponential backoff with jitter, reset
//! once the output has proven good. Sans-IO: the caller passes the times.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// First delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest delay: a destination that is gone for hours is retried twice a minute.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An output that ran this long before failing starts again from [`BACKOFF_MIN`].
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Each delay is the nominal one times a factor in `1 - JITTER ..= 1 + JITTER`,
/// so outputs that failed together (a switcher rebooted) do not retry in lockstep.
pub const JITTER: f64 = 0.2;

/// Call order: [`Backoff::failed`] each time the output fails, with how long it
/// had been running; sleep the returned delay; start it again.
#[derive(Debug)]
pub struct Backoff {
    /// Nominal delay for the next failure.
    next: Duration,
    min: Duration,
    max: Duration,
    reset_after: Duration,
    rng: SmallRng,
}

impl Backoff {
    /// The relay's policy ([`BACKOFF_MIN`] .. [`BACKOFF_MAX`]), jitter seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_limits(BACKOFF_MIN, BACKOFF_MAX, BACKOFF_RESET_AFTER, seed)
    }

    pub fn with_limits(min: Duration, max: Duration, reset_after: Duration, seed: u64) -> Self {
        Self {
            next: min,
            min,
            max,
            reset_after,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The output failed after running `ran_for`: how long to wait before the
    /// next attempt.
    pub fn failed(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.next = self.min;
        }
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let f = self.rng.gen_range(1.0 - JITTER..=1.0 + JITTER);
        nominal.mul_f64(f).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter_and_resets_after_a_good_run() {
        let mut b = Backoff::new(7);
        let quick = Duration::from_millis(100);
        let delays: Vec<Duration> = (0..10).map(|_| b.failed(quick)).collect();
        let nominal = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0];
        for (d, n) in delays.iter().zip(nominal) {
            let s = d.as_secs_f64();
            assert!(s >= n * (1.0 - JITTER) - 1e-9, "{delays:?}");
            assert!(s <= (n * (1.0 + JITTER)).min(30.0) + 1e-9, "{delays:?}");
        }
        // Jitter really varies the delays.
        assert!(delays[7..].windows(2).any(|w| w[0] != w[1]), "{delays:?}");
        // A run shorter than the reset time keeps growing; a long one resets.
        let d = b.failed(BACKOFF_RESET_AFTER - Duration::from_millis(1));
        assert!(d >= Duration::from_secs(24), "{d:?}");
        let d = b.failed(BACKOFF_RESET_AFTER);
        assert!(d <= Duration::from_millis(600), "{d:?}");
        assert!(b.failed(quick) >= Duration::from_millis(800));
    }

    #[test]
    fn same_seed_same_delays() {
        let mut a = Backoff::new(1);
        let mut b = Backoff::new(1);
        for _ in 0..8 {
            assert_eq!(a.failed(Duration::ZERO), b.failed(Duration::ZERO));
        }
    }
}
