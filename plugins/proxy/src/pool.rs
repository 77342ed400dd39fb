//! A worker's upstreams: which one the next client goes to (balancing), which ones are
//! skipped (passive health), and the counters that are logged.
//!
//! Sans-IO and clock-free: every method that depends on time takes `now`, and health changes
//! come back as [`Change`]s for the caller to log — so the unit tests below drive it through
//! failures and cool-downs without a socket or a sleep.
//!
//! Each worker process has its own pool: with several workers, each learns an upstream's
//! health from its own connects (and logs its own `down` / `back up` lines).

use std::time::{Duration, Instant};

use crate::config::{UpstreamSpec, MAX_UPSTREAMS};

/// How the next upstream is chosen among those not down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// In turn, in the order given.
    RoundRobin,
    /// The one with the fewest open (and opening) connections from this worker; ties in turn.
    LeastConn,
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastConn => "least-conn",
        })
    }
}

/// An upstream's passive health, learned from this worker's connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    /// Used; the last `failures` connects failed (fewer than the threshold).
    Up { failures: u32 },
    /// `threshold` connects in a row failed at `since`: skipped until `retry_at`, when one
    /// client is sent to try it (and `retry_at` moves a cool-down on, so others are not).
    Down { since: Instant, retry_at: Instant },
}

/// One upstream's counters. The host offers plugins no metrics API, so these go to the log
/// (see [`Pool::stats_lines`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connect attempts.
    pub connects: u64,
    /// Connect attempts that failed (refused, unreachable, timed out).
    pub failures: u64,
    /// Connections open or opening now.
    pub active: u32,
    /// Bytes relayed from clients to the upstream.
    pub bytes_up: u64,
    /// Bytes relayed from the upstream to clients.
    pub bytes_down: u64,
}

/// A health change, for one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `failures` connects in a row failed: skipped for the cool-down.
    Down { failures: u32, cooldown: Duration },
    /// A connect succeeded after being down for `after`.
    BackUp { after: Duration },
}

struct Upstream {
    spec: UpstreamSpec,
    health: Health,
    counters: Counters,
    /// The counters as last logged (a stats line is written only when they changed).
    logged: Counters,
}

/// The upstreams of one worker.
pub struct Pool {
    upstreams: Vec<Upstream>,
    balance: Balance,
    /// Where the next turn starts.
    next: usize,
    threshold: u32,
    cooldown: Duration,
}

impl Pool {
    pub fn new(
        specs: &[UpstreamSpec],
        balance: Balance,
        threshold: u32,
        cooldown: Duration,
    ) -> Pool {
        assert!(!specs.is_empty() && specs.len() <= MAX_UPSTREAMS);
        Pool {
            upstreams: specs
                .iter()
                .map(|spec| Upstream {
                    spec: spec.clone(),
                    health: Health::Up { failures: 0 },
                    counters: Counters::default(),
                    logged: Counters::default(),
                })
                .collect(),
            balance,
            next: 0,
            threshold,
            cooldown,
        }
    }

    /// The names of the upstreams in `set` (a bit per index), in order.
    pub fn names(&self, set: u64) -> Vec<&str> {
        (0..self.upstreams.len())
            .filter(|i| set & (1 << i) != 0)
            .map(|i| self.name(i))
            .collect()
    }

    /// The upstream a client should try next, none of `tried` (a bit per index); `None` when
    /// every untried upstream is down. A down upstream whose cool-down has passed is
    /// eligible for one client: picking it starts another cool-down.
    pub fn pick(&mut self, tried: u64, now: Instant) -> Option<usize> {
        let n = self.upstreams.len();
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            if tried & (1 << i) != 0 || !self.eligible(i, now) {
                continue;
            }
            match self.balance {
                Balance::RoundRobin => {
                    best = Some(i);
                    break;
                }
                Balance::LeastConn => {
                    let fewer = match best {
                        None => true,
                        Some(b) => {
                            self.upstreams[i].counters.active < self.upstreams[b].counters.active
                        }
                    };
                    if fewer {
                        best = Some(i);
                    }
                }
            }
        }
        let i = best?;
        self.next = (i + 1) % n;
        if let Health::Down { retry_at, .. } = &mut self.upstreams[i].health {
            *retry_at = now + self.cooldown;
        }
        Some(i)
    }

    fn eligible(&self, i: usize, now: Instant) -> bool {
        match self.upstreams[i].health {
            Health::Up { .. } => true,
            Health::Down { retry_at, .. } => now >= retry_at,
        }
    }

    /// When the first down upstream may be tried again (for the log line of a client that
    /// found them all down).
    pub fn next_retry(&self, now: Instant) -> Option<Duration> {
        self.upstreams
            .iter()
            .filter_map(|u| match u.health {
                Health::Down { retry_at, .. } => Some(retry_at.saturating_duration_since(now)),
                Health::Up { .. } => None,
            })
            .min()
    }

    /// A connect to `i` starts.
    pub fn connect_started(&mut self, i: usize) {
        let c = &mut self.upstreams[i].counters;
        c.connects += 1;
        c.active += 1;
    }

    /// A connect to `i` succeeded.
    pub fn connected(&mut self, i: usize, now: Instant) -> Option<Change> {
        let u = &mut self.upstreams[i];
        let change = match u.health {
            Health::Down { since, .. } => Some(Change::BackUp {
                after: now.saturating_duration_since(since),
            }),
            Health::Up { .. } => None,
        };
        u.health = Health::Up { failures: 0 };
        change
    }

    /// A connect to `i` failed (its connection is over: no [`finished`](Pool::finished)).
    pub fn connect_failed(&mut self, i: usize, now: Instant) -> Option<Change> {
        let (threshold, cooldown) = (self.threshold, self.cooldown);
        let u = &mut self.upstreams[i];
        u.counters.failures += 1;
        u.counters.active -= 1;
        match &mut u.health {
            Health::Up { failures } => {
                *failures += 1;
                if *failures < threshold {
                    return None;
                }
                let failures = *failures;
                u.health = Health::Down {
                    since: now,
                    retry_at: now + cooldown,
                };
                Some(Change::Down { failures, cooldown })
            }
            // A trial failed, or a connect started before it went down: still down.
            Health::Down { retry_at, .. } => {
                *retry_at = (*retry_at).max(now + cooldown);
                None
            }
        }
    }

    /// A connection to `i` that was made has ended.
    pub fn finished(&mut self, i: usize) {
        self.upstreams[i].counters.active -= 1;
    }

    /// Count bytes relayed to (`up`) and from (`down`) upstream `i`.
    #[inline]
    pub fn relayed(&mut self, i: usize, up: usize, down: usize) {
        let c = &mut self.upstreams[i].counters;
        c.bytes_up += up as u64;
        c.bytes_down += down as u64;
    }

    pub fn name(&self, i: usize) -> &str {
        &self.upstreams[i].spec.name
    }

    pub fn target(&self, i: usize) -> std::net::SocketAddr {
        self.upstreams[i].spec.addr
    }

    pub fn counters(&self, i: usize) -> Counters {
        self.upstreams[i].counters
    }

    /// One line per upstream whose counters changed since the last call (every upstream
    /// with `all`), in a `key=value` form that is easy to grep and parse.
    pub fn stats_lines(&mut self, all: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for u in &mut self.upstreams {
            if !all && u.counters == u.logged {
                continue;
            }
            u.logged = u.counters;
            let c = u.counters;
            let state = match u.health {
                Health::Up { .. } => "up",
                Health::Down { .. } => "down",
            };
            lines.push(format!(
                "upstream stats: upstream={} state={state} active={} connects={} failures={} bytes_up={} bytes_down={}",
                u.spec.name, c.active, c.connects, c.failures, c.bytes_up, c.bytes_down
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, balance: Balance) -> Pool {
        let specs: Vec<UpstreamSpec> = (0..n)
            .map(|i| UpstreamSpec {
                name: format!("u{i}"),
                addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
            })
            .collect();
        Pool::new(&specs, balance, 2, Duration::from_secs(10))
    }

    /// Pick, and count the connect as started.
    fn start(p: &mut Pool, tried: u64, now: Instant) -> Option<usize> {
        let i = p.pick(tried, now)?;
        p.connect_started(i);
        Some(i)
    }

    #[test]
    fn round_robin_takes_turns_and_skips_tried() {
        let mut p = pool(3, Balance::RoundRobin);
        let now = Instant::now();
        let picks: Vec<_> = (0..4).map(|_| p.pick(0, now).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
        // Upstream 1 is next, but this client already tried it.
        assert_eq!(p.pick(1 << 1, now), Some(2));
        assert_eq!(p.pick(0b111, now), None);
    }

    #[test]
    fn least_conn_prefers_the_least_busy_and_rotates_ties() {
        let mut p = pool(3, Balance::LeastConn);
        let now = Instant::now();
        assert_eq!(start(&mut p, 0, now), Some(0));
        assert_eq!(start(&mut p, 0, now), Some(1));
        assert_eq!(start(&mut p, 0, now), Some(2));
        // All have one; 1 finishes: it has the fewest.
        assert!(p.connected(1, now).is_none());
        p.finished(1);
        assert_eq!(start(&mut p, 0, now), Some(1));
        // All have one again: ties go in turn from after the last pick.
        assert_eq!(start(&mut p, 0, now), Some(2));
        assert_eq!(p.counters(2).active, 2);
    }

    #[test]
    fn health_cycle_down_trial_and_back_up() {
        let mut p = pool(2, Balance::RoundRobin);
        let t0 = Instant::now();
        for _ in 0..2 {
            while p.pick(0, t0) != Some(0) {}
            p.connect_started(0);
            let change = p.connect_failed(0, t0);
            if p.counters(0).failures == 2 {
                assert_eq!(
                    change,
                    Some(Change::Down {
                        failures: 2,
                        cooldown: Duration::from_secs(10)
                    })
                );
            } else {
                assert_eq!(change, None);
            }
        }
        // Down: every pick is 1, and nothing is left for a client that tried 1.
        for _ in 0..4 {
            assert_eq!(p.pick(0, t0), Some(1));
        }
        assert_eq!(p.pick(1 << 1, t0), None);
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(p.next_retry(t5), Some(Duration::from_secs(5)));
        // After the cool-down one client may try it; the next one may not.
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(p.pick(1 << 1, t10), Some(0));
        assert_eq!(p.pick(1 << 1, t10), None);
        // That trial fails: still down, no second `down` line, another cool-down.
        p.connect_started(0);
        assert_eq!(p.connect_failed(0, t10), None);
        assert_eq!(p.pick(1 << 1, t10 + Duration::from_secs(9)), None);
        // The next trial connects: back up, logged once.
        let t20 = t10 + Duration::from_secs(10);
        assert_eq!(p.pick(1 << 1, t20), Some(0));
        p.connect_started(0);
        assert_eq!(
            p.connected(0, t20),
            Some(Change::BackUp {
                after: Duration::from_secs(20)
            })
        );
        assert_eq!(p.connected(0, t20), None);
        assert_eq!(p.next_retry(t20), None);
        let c = p.counters(0);
        assert_eq!((c.connects, c.failures, c.active), (4, 3, 1));
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let mut p = pool(1, Balance::RoundRobin);
        let now = Instant::now();
        for _ in 0..5 {
            start(&mut p, 0, now);
            assert_eq!(p.connect_failed(0, now), None);
            start(&mut p, 0, now);
            assert_eq!(p.connected(0, now), None);
            p.finished(0);
        }
        assert_eq!(p.pick(0, now), Some(0));
    }

    #[test]
    fn stats_lines_only_when_changed() {
        let mut p = pool(2, Balance::RoundRobin);
        let now = Instant::now();
        assert!(p.stats_lines(false).is_empty());
        assert_eq!(p.stats_lines(true).len(), 2);
        start(&mut p, 0, now);
        p.connected(0, now);
        p.relayed(0, 10, 20);
        assert_eq!(
            p.stats_lines(false),
            ["upstream stats: upstream=u0 state=up active=1 connects=1 failures=0 bytes_up=10 bytes_down=20"]
        );
        assert!(p.stats_lines(false).is_empty());
    }
}
