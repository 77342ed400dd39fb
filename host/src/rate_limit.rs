//! A bound on how often one kind of log line is printed, for events a peer or a plugin can
//! repeat at will: plugin panics, `accept` failures (out of descriptors), PROXY headers from
//! untrusted sources. Without it, one client looping on a panicking request, or a worker out
//! of descriptors retrying `accept` every 100 ms, fills the disk behind stderr.
//!
//! Fixed windows, as the kernel's `printk_ratelimit` does: at most `burst` lines per
//! `window`; the rest are counted, and the count is logged as one line (`N more … suppressed`)
//! just before the next line that is let through, in a later window. So a flood costs at
//! most `burst + 1` lines per window, and nothing is lost without a trace. The exact totals
//! are in the metrics (`sockhost_plugin_panics_total`, …), which count every event.
//!
//! One limiter per kind of line per worker (a worker is one thread, so the limiters live in
//! `thread_local!`s beside the code that logs).

use std::time::{Duration, Instant};

use tracing::Level;

/// At most `burst` lines per `window` for one kind of event.
#[derive(Debug)]
pub struct RateLimit {
    /// What the suppressed lines were about, for the summary line ("plugin panics").
    what: &'static str,
    /// The level of the lines, and so of the summary.
    level: Level,
    burst: u32,
    window: Duration,
    /// Start of the current window (`None` before the first event).
    started: Option<Instant>,
    /// Lines let through in the current window.
    passed: u32,
    /// Events not logged since the last summary.
    suppressed: u64,
}

/// What to do with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; first log that `suppressed` earlier events were not (if any).
    Log { suppressed: u64 },
    /// Do not log it (it was counted).
    Suppress,
}

impl RateLimit {
    /// A limiter for events described as `what` (plural, e.g. "plugin panics"), logged at
    /// `level`.
    pub const fn new(what: &'static str, level: Level, burst: u32, window: Duration) -> RateLimit {
        RateLimit {
            what,
            level,
            burst,
            window,
            started: None,
            passed: 0,
            suppressed: 0,
        }
    }

    /// Decide for one event happening at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let expired = match self.started {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= self.window,
        };
        if expired {
            self.started = Some(now);
            self.passed = 0;
        }
        if self.passed < self.burst {
            self.passed += 1;
            Verdict::Log {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Log one event with `line` (a `tracing` call at this limiter's level), unless over
    /// the limit; before it, the summary of what was suppressed since the last line.
    pub fn log(&mut self, line: impl FnOnce()) {
        let Verdict::Log { suppressed } = self.check(Instant::now()) else {
            return;
        };
        if suppressed > 0 {
            let (what, burst, window) = (self.what, self.burst, self.window);
            macro_rules! summary {
                ($event:ident) => {
                    tracing::$event!("{what}: {suppressed} more suppressed (at most {burst} lines per {window:?})")
                };
            }
            match self.level {
                Level::ERROR => summary!(error),
                Level::WARN => summary!(warn),
                Level::INFO => summary!(info),
                Level::DEBUG => summary!(debug),
                _ => summary!(trace),
            }
        }
        line();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_then_silence_then_the_count() {
        let mut limit = RateLimit::new("things", Level::WARN, 3, SECOND);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                limit.check(t0 + Duration::from_millis(i)),
                Verdict::Log { suppressed: 0 }
            );
        }
        for i in 3..1000 {
            assert_eq!(
                limit.check(t0 + Duration::from_millis(i % 999)),
                Verdict::Suppress
            );
        }
        assert_eq!(
            limit.check(t0 + SECOND),
            Verdict::Log { suppressed: 997 },
            "the next window reports what was suppressed"
        );
        assert_eq!(limit.check(t0 + SECOND), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn a_steady_flood_is_bounded_per_window() {
        let mut limit = RateLimit::new("things", Level::WARN, 10, SECOND);
        let t0 = Instant::now();
        // 10,000 events a second for 5 seconds.
        let logged = (0..50_000u64)
            .map(|i| limit.check(t0 + Duration::from_micros(i * 100)))
            .filter(|v| matches!(v, Verdict::Log { .. }))
            .count();
        assert_eq!(logged, 50, "10 per window over 5 windows");
        assert_eq!(
            limit.check(t0 + 5 * SECOND),
            Verdict::Log { suppressed: 9_990 },
            "the count covers what came after the last line (earlier counts were reported)"
        );
    }

    #[test]
    fn events_slower_than_the_limit_are_all_logged() {
        let mut limit = RateLimit::new("things", Level::WARN, 1, SECOND);
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(limit.check(t0 + i * SECOND), Verdict::Log { suppressed: 0 });
        }
    }

    #[test]
    fn a_clock_that_goes_nowhere_does_not_panic() {
        let mut limit = RateLimit::new("things", Level::WARN, 1, SECOND);
        let t0 = Instant::now() + SECOND;
        assert_eq!(limit.check(t0), Verdict::Log { suppressed: 0 });
        // An earlier instant (never from Instant::now, but the type allows it).
        assert_eq!(limit.check(t0 - SECOND), Verdict::Suppress);
    }
}
