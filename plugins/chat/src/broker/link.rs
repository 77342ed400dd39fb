//! One outbound connection to the broker as an explicit state, with the back-off between
//! attempts. Free of side effects: [`Broker`](super::Broker) makes the services calls each
//! transition asks for, and these tests check the transitions alone.
//!
//! Time is counted in broker ticks ([`TICK`](super::TICK)): the plugin's periodic
//! [`Protocol::tick`](plugin_api::Protocol::tick), which the harness's fake clock drives too.
//!
//! Every attempt has a number. Events of an older attempt (a connection that was replaced,
//! or given up at stop) are ignored, so a late `connection_lost` cannot undo a newer link.

use plugin_api::ConnId;

/// Where one link stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection; the next attempt at tick `retry_at`.
    Down {
        /// The tick from which to try again.
        retry_at: u64,
    },
    /// An attempt is under way (its id is `NONE` until `connect` returns).
    Connecting(ConnId),
    /// Connected, not usable yet (the subscriber link waits for its subscription to be
    /// confirmed).
    Open(ConnId),
    /// Usable.
    Ready(ConnId),
    /// The worker stops: no more attempts.
    Stopped,
}

/// One link: its state, its attempt number, its failures in a row, and the heartbeats
/// it has let pass without a word from Redis.
#[derive(Debug)]
pub struct Link {
    state: LinkState,
    attempt: u64,
    failures: u32,
    silent_beats: u32,
}

/// What a heartbeat asks of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// No connection: nothing.
    Idle,
    /// Send `PING` on this connection.
    Ping(ConnId),
    /// Nothing was heard on this connection for two whole periods (not the answer to its
    /// opening command, nor to the `PING` of the last period): drop it.
    Silent(ConnId),
}

impl Default for Link {
    fn default() -> Self {
        Link::new()
    }
}

impl Link {
    /// Down, to be tried at once.
    pub fn new() -> Link {
        Link {
            state: LinkState::Down { retry_at: 0 },
            attempt: 0,
            failures: 0,
            silent_beats: 0,
        }
    }

    /// The state.
    #[cfg(test)]
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The current attempt's number.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// Whether it is usable.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, LinkState::Ready(_))
    }

    /// The connection, while there is one (connecting, open or ready).
    pub fn id(&self) -> Option<ConnId> {
        match self.state {
            LinkState::Connecting(id) | LinkState::Open(id) | LinkState::Ready(id)
                if id != ConnId::NONE =>
            {
                Some(id)
            }
            _ => None,
        }
    }

    /// The connection of attempt `attempt` if it is the current one and connected (open or
    /// ready): what it says counts; otherwise it is stale.
    pub fn connected(&self, attempt: u64) -> Option<ConnId> {
        match self.state {
            LinkState::Open(id) | LinkState::Ready(id) if attempt == self.attempt => Some(id),
            _ => None,
        }
    }

    /// A heartbeat period began: ping the connection, or give it up if nothing was heard
    /// from it during the last whole period.
    pub fn heartbeat(&mut self) -> Heartbeat {
        let (LinkState::Open(id) | LinkState::Ready(id)) = self.state else {
            return Heartbeat::Idle;
        };
        if id == ConnId::NONE {
            return Heartbeat::Idle;
        }
        self.silent_beats += 1;
        if self.silent_beats >= 2 {
            Heartbeat::Silent(id)
        } else {
            Heartbeat::Ping(id)
        }
    }

    /// Redis said something on the connection of attempt `attempt`: it is alive.
    pub fn heard(&mut self, attempt: u64) {
        if self.connected(attempt).is_some() {
            self.silent_beats = 0;
        }
    }

    /// Whether an attempt is due at tick `now`.
    pub fn is_due(&self, now: u64) -> bool {
        matches!(self.state, LinkState::Down { retry_at } if now >= retry_at)
    }

    /// Start an attempt; its number.
    pub fn start(&mut self) -> u64 {
        self.attempt += 1;
        self.state = LinkState::Connecting(ConnId::NONE);
        self.attempt
    }

    /// The attempt's connection id is known.
    pub fn started(&mut self, attempt: u64, id: ConnId) {
        if attempt == self.attempt && self.state == LinkState::Connecting(ConnId::NONE) {
            self.state = LinkState::Connecting(id);
        }
    }

    /// The attempt connected; `false` if it is stale (then close it).
    pub fn opened(&mut self, attempt: u64) -> bool {
        match self.state {
            LinkState::Connecting(id) if attempt == self.attempt => {
                self.state = LinkState::Open(id);
                self.failures = 0;
                self.silent_beats = 0;
                true
            }
            _ => false,
        }
    }

    /// The open link is usable; `false` if it is stale or was not open.
    pub fn ready(&mut self, attempt: u64) -> bool {
        match self.state {
            LinkState::Open(id) if attempt == self.attempt => {
                self.state = LinkState::Ready(id);
                true
            }
            _ => false,
        }
    }

    /// The attempt failed (refused, unreachable, timed out, or `connect` refused it):
    /// the next one waits `backoff`'s answer. Returns the wait in ticks, or `None` if the
    /// event is stale (or the attempt's failure was already counted).
    pub fn failed(&mut self, attempt: u64, now: u64, backoff: &mut Backoff) -> Option<u64> {
        if attempt != self.attempt || !matches!(self.state, LinkState::Connecting(_)) {
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        let wait = backoff.wait(self.failures);
        self.state = LinkState::Down {
            retry_at: now + wait,
        };
        Some(wait)
    }

    /// The connection ended (or is being dropped) after it connected: retry at the next
    /// tick (the back-off starts over). Returns whether it was ready; `None` if stale or
    /// not connected.
    pub fn lost(&mut self, attempt: u64, now: u64) -> Option<bool> {
        if attempt != self.attempt {
            return None;
        }
        let was_ready = match self.state {
            LinkState::Open(_) => false,
            LinkState::Ready(_) => true,
            _ => return None,
        };
        self.state = LinkState::Down { retry_at: now + 1 };
        Some(was_ready)
    }

    /// The worker stops: no more attempts; the connection to close, if any.
    pub fn stop(&mut self) -> Option<ConnId> {
        let id = self.id();
        self.state = LinkState::Stopped;
        id
    }
}

/// Exponential back-off with jitter: after the n-th failure in a row, wait about
/// 2^(n-1) ticks, at most `max` — a uniformly random wait between half of that and all of
/// it, so the workers of every instance do not reconnect to a restarted broker in step.
#[derive(Debug)]
pub struct Backoff {
    max: u64,
    /// xorshift64 state (never 0).
    rng: u64,
}

impl Backoff {
    /// At most `max` ticks (at least 1), jitter from `seed`.
    pub fn new(max: u64, seed: u64) -> Backoff {
        Backoff {
            max: max.max(1),
            rng: seed | 1,
        }
    }

    /// Seeded from the process and the time (different per worker).
    pub fn seeded(max: u64) -> Backoff {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Backoff::new(max, (u64::from(std::process::id()) << 32) ^ nanos)
    }

    /// The wait in ticks after failure number `failures` (1 for the first) in a row.
    pub fn wait(&mut self, failures: u32) -> u64 {
        let full = 1u64
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u64::MAX)
            .min(self.max);
        full - self.next() % (full / 2 + 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ConnId = ConnId::from_raw(7);

    #[test]
    fn connect_open_ready_lost_and_again() {
        let mut backoff = Backoff::new(30, 1);
        let mut l = Link::new();
        assert!(l.is_due(0));
        let n = l.start();
        assert_eq!(l.id(), None, "id unknown until connect returns");
        l.started(n, A);
        assert_eq!(l.state(), LinkState::Connecting(A));
        assert!(!l.is_due(100));
        assert!(l.opened(n));
        assert!(!l.is_ready());
        assert!(l.ready(n));
        assert_eq!(l.id(), Some(A));
        assert_eq!(l.lost(n, 10), Some(true));
        assert_eq!(l.state(), LinkState::Down { retry_at: 11 });
        assert_eq!(l.lost(n, 10), None, "counted once");
        assert_eq!(l.failed(n, 10, &mut backoff), None);
        assert!(!l.is_due(10) && l.is_due(11));
    }

    #[test]
    fn a_link_heard_from_in_no_whole_period_is_given_up() {
        let mut l = Link::new();
        assert_eq!(l.heartbeat(), Heartbeat::Idle);
        let n = l.start();
        l.started(n, A);
        assert_eq!(l.heartbeat(), Heartbeat::Idle, "not connected yet");
        l.opened(n);
        assert_eq!(l.connected(n), Some(A));
        assert_eq!(l.connected(n + 1), None);
        assert_eq!(
            l.heartbeat(),
            Heartbeat::Ping(A),
            "opened just before: one more period"
        );
        l.heard(n);
        assert_eq!(l.heartbeat(), Heartbeat::Ping(A), "heard: pinged again");
        l.heard(n + 1);
        assert_eq!(
            l.heartbeat(),
            Heartbeat::Silent(A),
            "a stale answer counts for nothing"
        );
        l.lost(n, 0);
        let n = l.start();
        l.started(n, A);
        l.opened(n);
        assert_eq!(
            l.heartbeat(),
            Heartbeat::Ping(A),
            "a new connection starts afresh"
        );
    }

    #[test]
    fn stale_events_are_ignored() {
        let mut backoff = Backoff::new(30, 1);
        let mut l = Link::new();
        let old = l.start();
        l.started(old, A);
        assert!(l.opened(old));
        l.lost(old, 0);
        let new = l.start();
        assert!(!l.opened(old), "the old attempt connecting late");
        assert_eq!(l.lost(old, 5), None);
        assert_eq!(l.failed(old, 5, &mut backoff), None);
        assert!(l.opened(new));
        assert_eq!(l.stop(), None, "id never given: nothing to close");
        assert!(!l.ready(new));
        assert!(!l.is_due(u64::MAX));
    }

    #[test]
    fn failures_back_off_with_jitter_up_to_the_cap_and_start_over() {
        let mut backoff = Backoff::new(30, 42);
        let mut l = Link::new();
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            assert!(l.is_due(now));
            let n = l.start();
            let wait = l.failed(n, now, &mut backoff).unwrap();
            waits.push(wait);
            now += wait;
            assert!(!l.is_due(now - 1));
        }
        for (i, &w) in waits.iter().enumerate() {
            let full = (1u64 << i).min(30);
            assert!(
                (full - full / 2..=full).contains(&w),
                "wait {i}: {w} not within [{}, {full}]",
                full - full / 2
            );
        }
        // Over many draws the jitter spreads the capped wait over [15, 30].
        let spread: std::collections::BTreeSet<u64> = (0..200).map(|_| backoff.wait(20)).collect();
        assert!(spread.len() > 10, "{spread:?}");
        assert!(spread.iter().all(|w| (15..=30).contains(w)));
        // A success starts the count over.
        let n = l.start();
        assert!(l.opened(n));
        l.lost(n, now);
        let n = l.start();
        assert_eq!(l.failed(n, now, &mut backoff), Some(1));
    }
}
