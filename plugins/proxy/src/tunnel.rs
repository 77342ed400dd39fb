//! One proxied connection — a *tunnel*: the client's consumer ([`ClientSide`]), the consumer
//! of the upstream connection opened for it ([`UpstreamSide`]), and the state they share.
//!
//! Life of a tunnel ([`Phase`]):
//! 1. **Connecting.** The client's reading is paused at once, so no byte of it can arrive
//!    before the upstream connection (and its PROXY header) exists, and nothing needs to be
//!    buffered across retries. The pool picks an upstream; a failed connect marks it (passive
//!    health) and the next one is tried, up to `retries` more, each a different upstream.
//!    When none is left the client is closed and one (rate-limited) line says why.
//! 2. **Open.** The upstream connected: the PROXY header goes first, the client is resumed,
//!    and each side's consumer posts what it reads to the other side. An upstream that
//!    speaks first (a greeting) is relayed like any other bytes.
//! 3. **Closed.** Either side ended (or both finished): the other is closed once what was
//!    queued for it has been sent.
//!
//! **Flow control** ([`Direction`]), per direction: bytes read on one side are posted to the
//! other, and the post's status says whether the other side is keeping up. `Backlogged` (it
//! holds more than the host's high-water mark, 256 KiB, unsent) pauses reading on this side;
//! while paused, a timer on this side probes the other with an empty post — the cheapest
//! question the host answers, and the only one: there is no "drained" callback — first after
//! 1 ms, then backing off to [`MAX_PROBE`], and reading resumes as soon as the other side is
//! under the mark again. So a tunnel holds at most about 256 KiB plus one read (64 KiB) per
//! direction, however fast one side and slow the other; the rest waits in the kernel's
//! socket buffers and, beyond them, in the fast peer's. Nothing is probed while both sides
//! keep up.
//!
//! **Half-close**: a side's end of stream (`eof_received`) becomes a half-close of the other
//! side once what was posted to it has been sent, and the other direction keeps flowing;
//! when both directions have ended, both connections are closed.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use plugin_api::services::{self, ConnId, PostStatus};
use plugin_api::{ConnInfo, Consumer, LostReason, Output};

use crate::pool::{Change, Pool};
use crate::proxy_header::{self, Version};

/// Timer token: probe whether the other side has drained.
const PROBE: u64 = 1;
/// The first probe of a paused direction.
const FIRST_PROBE: Duration = Duration::from_millis(1);
/// Probes back off (doubling) to this: a peer that reads 1 KiB/s costs 10 probes a second.
pub const MAX_PROBE: Duration = Duration::from_millis(100);

/// What every tunnel of a worker shares: the settings and the upstream pool.
pub struct Shared {
    pub pool: RefCell<Pool>,
    /// Each upstream's address as the connect service takes it (made once).
    pub targets: Vec<String>,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub send_proxy: Option<Version>,
    /// Lines about clients closed for want of an upstream, at most one a second.
    pub refusals: RefCell<Throttle>,
}

impl Shared {
    /// Log a health change of upstream `i`.
    fn log_change(&self, i: usize, change: Option<Change>) {
        let Some(change) = change else { return };
        let pool = self.pool.borrow();
        let name = pool.name(i);
        match change {
            Change::Down { failures, cooldown } => log::warn!(
                "upstream {name} down: {failures} connects in a row failed; skipped for {cooldown:?}"
            ),
            Change::BackUp { after } => log::info!(
                "upstream {name} back up: connected after {:.1} s down",
                after.as_secs_f64()
            ),
        }
    }
}

/// Where a tunnel is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for an upstream connection; the client is paused. `attempts` connects were
    /// started, to the upstreams in `tried` (a bit per pool index).
    Connecting { attempts: u32, tried: u64 },
    /// Bytes flow both ways.
    Open,
    /// Over: the sides are closed or closing.
    Closed,
}

/// One direction of a tunnel: what its reading side is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Reading and posting.
    Flowing,
    /// Reading paused because the other side is backlogged; probed again after `probe`.
    Paused { probe: Duration },
    /// The reading side ended its stream, and that was relayed.
    Ended,
}

/// The two ends of a tunnel. Each reads one direction and writes the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Client,
    Upstream,
}

/// The state both consumers of a tunnel share.
pub struct Tunnel {
    shared: Rc<Shared>,
    client: ConnId,
    peer: SocketAddr,
    local: SocketAddr,
    phase: Cell<Phase>,
    /// The current upstream connection and its pool index (from the first connect on).
    upstream: Cell<ConnId>,
    index: Cell<usize>,
    /// The connect attempt whose consumer speaks for the tunnel (1, 2, …; 0: none). A
    /// connect that `services::connect` refused at once is handled by its caller; its
    /// consumer's later `connection_lost(ConnectFailed)` is then ignored.
    attempt: Cell<u32>,
    /// Client → upstream.
    up: Cell<Direction>,
    /// Upstream → client.
    down: Cell<Direction>,
    /// Bytes relayed each way, for the tunnel's last (debug) line.
    bytes_up: Cell<u64>,
    bytes_down: Cell<u64>,
}

impl Tunnel {
    /// Start the next connect attempt, or give up and close the client.
    fn connect_next(self: &Rc<Self>) {
        let Phase::Connecting {
            mut attempts,
            mut tried,
        } = self.phase.get()
        else {
            return;
        };
        let shared = &self.shared;
        let now = Instant::now();
        while attempts <= shared.retries {
            let Some(i) = shared.pool.borrow_mut().pick(tried, now) else {
                break;
            };
            shared.pool.borrow_mut().connect_started(i);
            attempts += 1;
            tried |= 1 << i;
            self.phase.set(Phase::Connecting { attempts, tried });
            self.index.set(i);
            let upstream = UpstreamSide {
                tunnel: self.clone(),
                index: i,
                attempt: attempts,
            };
            let started = services::connect(&shared.targets[i], shared.connect_timeout, upstream);
            match started {
                Ok(id) => {
                    self.upstream.set(id);
                    self.attempt.set(attempts);
                    return;
                }
                Err(e) => {
                    log::debug!("connect to {}: {e}", shared.targets[i]);
                    let change = shared.pool.borrow_mut().connect_failed(i, now);
                    shared.log_change(i, change);
                }
            }
        }
        self.give_up(attempts, tried, now);
    }

    /// No upstream left to try: close the client, with one line (rate-limited).
    fn give_up(&self, attempts: u32, tried: u64, now: Instant) {
        self.phase.set(Phase::Closed);
        services::close(self.client);
        let Some(suppressed) = self.shared.refusals.borrow_mut().allow(now) else {
            return;
        };
        let also = match suppressed {
            0 => String::new(),
            n => format!(" ({n} more clients closed the same way since the last such line)"),
        };
        let pool = self.shared.pool.borrow();
        if attempts == 0 {
            let retry = pool
                .next_retry(now)
                .map(|d| format!("; the first is tried again in {:.1} s", d.as_secs_f64()))
                .unwrap_or_default();
            log::warn!(
                "client {} closed: every upstream is down{retry}{also}",
                self.peer
            );
        } else {
            let names = pool.names(tried);
            log::warn!(
                "client {} closed: no upstream could be reached (tried {}){also}",
                self.peer,
                names.join(", ")
            );
        }
    }

    /// The upstream connected.
    fn opened(&self, out: &mut Output) {
        self.phase.set(Phase::Open);
        if let Some(version) = self.shared.send_proxy {
            out.write(&proxy_header::encode(version, self.peer, self.local));
        }
        services::resume_reading(self.client);
    }

    /// `end`'s connection and the other end's.
    fn ids(&self, end: End) -> (ConnId, ConnId) {
        match end {
            End::Client => (self.client, self.upstream.get()),
            End::Upstream => (self.upstream.get(), self.client),
        }
    }

    /// The direction `end` reads, and the other one.
    fn directions(&self, end: End) -> (&Cell<Direction>, &Cell<Direction>) {
        match end {
            End::Client => (&self.up, &self.down),
            End::Upstream => (&self.down, &self.up),
        }
    }

    /// `end` read `data`: count it and post it to the other end; pause `end` if the other
    /// end is backlogged.
    fn received(&self, end: End, data: &[u8], out: &mut Output) {
        if self.phase.get() != Phase::Open {
            // Reading is paused until the upstream connects and stops when the tunnel
            // closes, so this is a read that was already under way: nowhere to send it.
            return;
        }
        let n = data.len();
        let (up, down) = match end {
            End::Client => (n, 0),
            End::Upstream => (0, n),
        };
        self.bytes_up.set(self.bytes_up.get() + up as u64);
        self.bytes_down.set(self.bytes_down.get() + down as u64);
        self.shared
            .pool
            .borrow_mut()
            .relayed(self.index.get(), up, down);
        let (from, to) = self.ids(end);
        let (dir, _) = self.directions(end);
        match services::post(to, data) {
            PostStatus::Queued => {}
            // (Already paused: a read that was under way when the pause came; its probe
            // is armed.)
            PostStatus::Backlogged if dir.get() == Direction::Flowing => {
                services::pause_reading(from);
                dir.set(Direction::Paused { probe: FIRST_PROBE });
                services::set_timer(from, FIRST_PROBE, PROBE);
            }
            PostStatus::Backlogged => {}
            // The other end is gone (or was closed for exceeding --max-pending): so is this one.
            _ => out.close(),
        }
    }

    /// A timer of `end` fired.
    fn timer(&self, end: End, token: u64, out: &mut Output) {
        if token == PROBE {
            self.probe(end, out);
        }
    }

    /// `end` is paused: resume it if the other end has drained below the mark, else probe
    /// again later.
    fn probe(&self, end: End, out: &mut Output) {
        let (from, to) = self.ids(end);
        let (dir, _) = self.directions(end);
        let Direction::Paused { probe } = dir.get() else {
            return;
        };
        match services::post(to, b"") {
            PostStatus::Queued => {
                dir.set(Direction::Flowing);
                services::resume_reading(from);
            }
            PostStatus::Backlogged => {
                let probe = (probe * 2).min(MAX_PROBE);
                dir.set(Direction::Paused { probe });
                services::set_timer(from, probe, PROBE);
            }
            _ => out.close(),
        }
    }

    /// `end` ended its stream: half-close the other end, or, if the other direction has
    /// ended too, close both.
    fn ended(&self, end: End, out: &mut Output) {
        let (_, to) = self.ids(end);
        let (dir, other) = self.directions(end);
        dir.set(Direction::Ended);
        if other.get() == Direction::Ended || self.phase.get() != Phase::Open {
            self.phase.set(Phase::Closed);
            out.close();
            services::close(to);
        } else {
            // After what was already posted to it: the rest of this end's stream.
            services::shutdown_write(to);
        }
    }

    /// The client's connection is gone: so is the upstream's (after what it was sent).
    fn client_lost(&self, reason: LostReason) {
        match self.phase.replace(Phase::Closed) {
            Phase::Connecting { attempts, .. } if attempts > 0 => {
                services::close(self.upstream.get())
            }
            Phase::Open => services::close(self.upstream.get()),
            _ => {}
        }
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "client {} ended ({reason:?}); {} bytes relayed up, {} down",
                self.peer,
                self.bytes_up.get(),
                self.bytes_down.get()
            );
        }
    }
}

/// The consumer of a client's connection.
pub struct ClientSide {
    tunnel: Rc<Tunnel>,
}

impl ClientSide {
    pub fn new(shared: Rc<Shared>, info: &ConnInfo) -> ClientSide {
        ClientSide {
            tunnel: Rc::new(Tunnel {
                shared,
                client: info.id,
                peer: info.peer,
                local: info.local,
                phase: Cell::new(Phase::Connecting {
                    attempts: 0,
                    tried: 0,
                }),
                upstream: Cell::new(ConnId::NONE),
                index: Cell::new(0),
                attempt: Cell::new(0),
                up: Cell::new(Direction::Flowing),
                down: Cell::new(Direction::Flowing),
                bytes_up: Cell::new(0),
                bytes_down: Cell::new(0),
            }),
        }
    }
}

impl Consumer for ClientSide {
    fn connection_made(&mut self, _out: &mut Output) {
        // Nothing is read from the client until its upstream is connected.
        services::pause_reading(self.tunnel.client);
        self.tunnel.connect_next();
    }

    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        self.tunnel.received(End::Client, data, out);
    }

    fn eof_received(&mut self, out: &mut Output) {
        self.tunnel.ended(End::Client, out);
    }

    fn timer_fired(&mut self, token: u64, out: &mut Output) {
        self.tunnel.timer(End::Client, token, out);
    }

    fn connection_lost(&mut self, reason: LostReason) {
        self.tunnel.client_lost(reason);
    }
}

/// The consumer of one upstream connection (one connect attempt) of a tunnel.
pub struct UpstreamSide {
    tunnel: Rc<Tunnel>,
    /// Its upstream's index in the pool.
    index: usize,
    /// Which connect attempt of the tunnel it is (see [`Tunnel::attempt`]).
    attempt: u32,
}

impl Consumer for UpstreamSide {
    fn connection_made(&mut self, out: &mut Output) {
        let t = &*self.tunnel;
        let change = t
            .shared
            .pool
            .borrow_mut()
            .connected(self.index, Instant::now());
        t.shared.log_change(self.index, change);
        if t.phase.get() == Phase::Closed {
            // The client left while this connect was under way.
            out.close();
            return;
        }
        t.opened(out);
    }

    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        self.tunnel.received(End::Upstream, data, out);
    }

    fn eof_received(&mut self, out: &mut Output) {
        self.tunnel.ended(End::Upstream, out);
    }

    fn timer_fired(&mut self, token: u64, out: &mut Output) {
        self.tunnel.timer(End::Upstream, token, out);
    }

    fn connection_lost(&mut self, reason: LostReason) {
        let t = &self.tunnel;
        let shared = &t.shared;
        if reason != LostReason::ConnectFailed {
            shared.pool.borrow_mut().finished(self.index);
            // The upstream ended (or was closed with the client): the client follows, after
            // what was already queued for it.
            if t.phase.replace(Phase::Closed) != Phase::Closed {
                services::close(t.client);
            }
            return;
        }
        if t.attempt.get() != self.attempt {
            return; // refused by `services::connect` itself: `connect_next` handled it
        }
        let change = shared
            .pool
            .borrow_mut()
            .connect_failed(self.index, Instant::now());
        shared.log_change(self.index, change);
        log::debug!(
            "client {}: connect to {} failed",
            t.peer,
            shared.pool.borrow().name(self.index)
        );
        t.connect_next();
    }
}

/// At most one line a second; counts the lines it held back.
#[derive(Default)]
pub struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(lines held back since the last one)` if a line may be written at `now`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_allows_one_line_a_second_and_counts_the_rest() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(t.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(t.allow(t0 + Duration::from_secs(3)), Some(0));
    }
}
