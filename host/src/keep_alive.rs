//! The idle timer: `--keep-alive` closes a connection (or UDP session) nothing was read from
//! for that long.
//!
//! Reads only stamp an `Instant`; the timer itself is armed once and re-armed only when it
//! fires early (the deadline moved). So a busy connection pays no timer-wheel work per read,
//! and a connection with `--keep-alive 0` holds no timer at all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// One connection's idle deadline.
pub struct KeepAlive {
    timeout: Option<Duration>,
    last_activity: Instant,
    /// Created on first wait, so that a connection closed at once never registers a timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl KeepAlive {
    /// `None` = never expire.
    pub fn new(timeout: Option<Duration>) -> KeepAlive {
        KeepAlive {
            timeout,
            last_activity: Instant::now(),
            sleep: None,
        }
    }

    /// Something was read (or progress was made): push the deadline back.
    #[inline]
    pub fn touch(&mut self) {
        if self.timeout.is_some() {
            self.last_activity = Instant::now();
        }
    }

    /// Resolves once the connection has been idle for the whole timeout. Cancel-safe: the
    /// timer survives being dropped from a `select!`.
    pub fn expired(&mut self) -> Expired<'_> {
        Expired { keep_alive: self }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        loop {
            let deadline = self.last_activity + timeout;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline && sleep.is_elapsed() {
                // Fired for an old deadline: activity since then moved it.
                sleep.as_mut().reset(deadline);
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) if Instant::now() >= self.last_activity + timeout => {
                    return Poll::Ready(())
                }
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Future returned by [`KeepAlive::expired`].
pub struct Expired<'a> {
    keep_alive: &'a mut KeepAlive,
}

impl Future for Expired<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().keep_alive.poll_expired(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_after_idle_period_only() {
        let mut ka = KeepAlive::new(Some(Duration::from_secs(10)));
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(6)).await;
        ka.touch();
        ka.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(16));
    }

    #[tokio::test(start_paused = true)]
    async fn never_expires_when_disabled() {
        let mut ka = KeepAlive::new(None);
        let r = tokio::time::timeout(Duration::from_secs(3600), ka.expired()).await;
        assert!(r.is_err());
    }
}
