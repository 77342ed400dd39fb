//! The idle timeout: `--keep-alive` closes a connection nothing was read from for that long.
//!
//! One sweeper per worker, not a timer per connection (the coarse-timer approach of nginx
//! and HAProxy): the worker keeps a coarse clock, an *epoch* advanced every tick; a
//! connection stamps the current epoch when it reads — a memory write, no system call, no
//! timer-wheel work — and the sweeper, waking once per tick, cancels every connection whose
//! stamp is too old. So an idle connection holds no timer at all and a busy one pays
//! nothing per read. A connection is closed between `keep_alive` and `keep_alive + tick`
//! after its last activity; the tick is an eighth of the timeout, between 10 ms and 1 s.

use std::rc::Rc;
use std::time::Duration;

use crate::connections::Connections;

/// The sweeper's schedule for one `--keep-alive` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    tick: Duration,
    /// Idle for this many whole ticks means expired.
    ticks: u32,
}

impl KeepAlive {
    /// The schedule for `timeout`; `None` when connections never expire.
    pub fn new(timeout: Option<Duration>) -> Option<KeepAlive> {
        let timeout = timeout?;
        let tick = tick_for(timeout);
        let ticks = (timeout.as_millis().div_ceil(tick.as_millis()) as u32).max(1);
        Some(KeepAlive { tick, ticks })
    }

    /// Advance the clock and close idle connections, forever (the worker aborts it).
    pub async fn sweep(self, connections: Rc<Connections>) {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let expired = connections.advance_and_expire(self.ticks);
            if expired > 0 {
                tracing::debug!(expired, "closed connections idle for the keep-alive period");
            }
        }
    }
}

/// How often idle deadlines are checked for `timeout`: an eighth of it, between 10 ms and
/// 1 s (also used for UDP sessions).
pub fn tick_for(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_an_eighth_of_the_timeout_within_bounds() {
        let ka = |s: u64| KeepAlive::new(Some(Duration::from_secs(s))).unwrap();
        assert_eq!(
            ka(15),
            KeepAlive {
                tick: Duration::from_secs(1),
                ticks: 15
            }
        );
        assert_eq!(
            ka(1),
            KeepAlive {
                tick: Duration::from_millis(125),
                ticks: 8
            }
        );
        assert_eq!(
            KeepAlive::new(Some(Duration::from_millis(20)))
                .unwrap()
                .tick,
            Duration::from_millis(10)
        );
        assert_eq!(KeepAlive::new(None), None);
    }

    #[test]
    fn a_connection_expires_only_after_enough_idle_ticks() {
        let set = Rc::new(Connections::default());
        let busy = set.register();
        let idle = set.register();
        for _ in 0..3 {
            busy.touch();
            assert_eq!(set.advance_and_expire(3), 0);
        }
        // `idle` was stamped at epoch 0; three ticks have passed.
        assert_eq!(set.advance_and_expire(3), 1);
        assert!(idle.expired() && !busy.expired());
    }
}
