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

/// The sweeper's schedule for one `--keep-alive` value (and `--send-timeout`, which rides
/// on the same coarse clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    tick: Duration,
    /// Idle for this many whole ticks means expired.
    ticks: Option<u32>,
    /// Output waiting for this many whole ticks means stalled.
    send_ticks: Option<u32>,
}

impl KeepAlive {
    /// The schedule for `timeout`; `None` when connections never expire.
    #[cfg(test)]
    pub fn new(timeout: Option<Duration>) -> Option<KeepAlive> {
        KeepAlive::with_send_timeout(timeout, None)
    }

    /// The schedule for an idle `timeout` and a `send_timeout`; `None` when neither is set.
    pub fn with_send_timeout(
        timeout: Option<Duration>,
        send_timeout: Option<Duration>,
    ) -> Option<KeepAlive> {
        let tick = [timeout, send_timeout]
            .into_iter()
            .flatten()
            .map(tick_for)
            .min()?;
        let ticks_of = |t: Duration| (t.as_millis().div_ceil(tick.as_millis()) as u32).max(1);
        Some(KeepAlive {
            tick,
            ticks: timeout.map(ticks_of),
            send_ticks: send_timeout.map(ticks_of),
        })
    }

    /// Advance the clock and close idle connections, forever (the worker aborts it).
    pub async fn sweep(self, connections: Rc<Connections>) {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let swept = connections.advance_and_expire(self.ticks, self.send_ticks);
            if swept.idle > 0 || swept.stalled > 0 {
                tracing::debug!(
                    idle = swept.idle,
                    stalled = swept.stalled,
                    "closed connections idle for the keep-alive period or stalled past --send-timeout"
                );
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
                ticks: Some(15),
                send_ticks: None,
            }
        );
        assert_eq!(
            ka(1),
            KeepAlive {
                tick: Duration::from_millis(125),
                ticks: Some(8),
                send_ticks: None,
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
            assert_eq!(set.advance_and_expire(Some(3), None).idle, 0);
        }
        // `idle` was stamped at epoch 0; three ticks have passed.
        assert_eq!(set.advance_and_expire(Some(3), None).idle, 1);
        assert!(idle.expired().is_some() && busy.expired().is_none());
    }
}
