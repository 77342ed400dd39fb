//! Restart back-off for one slot.
//!
//! A worker that dies young (within [`YOUNG`] of starting), fails to start, or cannot even be
//! forked (`EAGAIN`/`ENOMEM`: out of processes or memory) counts as a failure; each failure
//! doubles the pause before the slot's next attempt, up to [`MAX`]. A worker that lived
//! longer than [`YOUNG`] clears the count. Other slots are not affected: they keep serving.

use std::time::{Duration, Instant};

/// A worker that exits sooner than this after starting counts as a failure.
pub const YOUNG: Duration = Duration::from_secs(5);
/// The first pause.
const FIRST: Duration = Duration::from_millis(100);
/// The longest pause between two attempts.
pub const MAX: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Backoff {
    failures: u32,
    not_before: Instant,
}

impl Backoff {
    pub fn new(now: Instant) -> Backoff {
        Backoff {
            failures: 0,
            not_before: now,
        }
    }

    /// Whether the slot may start a worker at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        now >= self.not_before
    }

    /// An attempt failed at `now`: returns the pause before the next one.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.failures += 1;
        let delay = (FIRST * 2u32.pow(self.failures.min(8) - 1)).min(MAX);
        self.not_before = now + delay;
        delay
    }

    /// How many attempts in a row have failed.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A worker of this slot exited after living `lived`: a failure if it died young
    /// (returns the pause), else the count starts over.
    pub fn exited(&mut self, lived: Duration, now: Instant) -> Option<Duration> {
        if lived < YOUNG {
            Some(self.failed(now))
        } else {
            self.failures = 0;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_maximum_and_reset_after_a_long_life() {
        let t0 = Instant::now();
        let mut b = Backoff::new(t0);
        assert!(b.ready(t0));
        let pauses: Vec<Duration> = (0..9).map(|_| b.failed(t0)).collect();
        let ms: Vec<u128> = pauses.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert!(!b.ready(t0 + Duration::from_secs(9)));
        assert!(b.ready(t0 + MAX));
        assert_eq!(
            b.exited(YOUNG, t0),
            None,
            "a worker that lived long resets it"
        );
        assert_eq!(b.failures(), 0);
        assert_eq!(b.exited(Duration::from_secs(1), t0), Some(FIRST));
    }
}
