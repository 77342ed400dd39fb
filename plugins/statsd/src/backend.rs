//! Getting flushes to the Graphite backend: one outbound TCP connection, opened through the
//! host ([`services::connect`]), a bounded queue for the flushes it cannot take yet, and
//! reconnection with back-off.
//!
//! [`Shipper`] is the state and its transitions, free of side effects (unit-tested as
//! such); [`Backend`] drives it — it makes the services calls each transition asks for and
//! logs what happened — and [`BackendConnection`] is the outbound connection's consumer.
//!
//! # What is kept, what may be lost
//!
//! * A flush made while no connection is up (never connected yet, connecting, the backend
//!   down or refusing) is **queued**, and the queue is sent, oldest first, as soon as a
//!   connection is made. The queue keeps the newest `max-queued-flushes` flushes: when a
//!   new flush finds it full, the **oldest** queued flush is dropped (and logged, with the
//!   number dropped so far), so what reaches Graphite after an outage is the most recent
//!   stretch, without gaps inside it.
//! * A flush made while connected is handed to the host at once ([`services::post`]) and
//!   is not kept by the plugin: Graphite's plaintext protocol has no acknowledgement, so
//!   bytes the host had queued, or the kernel had not delivered, when the connection
//!   breaks are lost. If the host refuses a post (the backend is so slow that the host's
//!   `--max-pending` bound is reached, or the connection just ended), the flush goes back
//!   to the front of the queue and is sent on the next connection.
//!
//! # When it connects
//!
//! On demand: when the worker starts serving, and at a flush when no connection is up.
//! After a failed attempt (refused, unreachable, unresolvable, or not accepted within
//! [`CONNECT_TIMEOUT`]) the next one waits 1, 2, 4, … flush intervals, at most
//! [`MAX_BACKOFF`] (and at least one interval); a connection that was up and ended is
//! retried at the next flush. At stop, one last attempt is made whatever the back-off.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use plugin_api::services::{self, PostStatus};
use plugin_api::{ConnId, Consumer, LostReason, Output};

use crate::aggregate::Flush;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The connection to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// None; the next attempt at flush number `retry_at` (or at stop).
    Down {
        /// The flush count from which to try again.
        retry_at: u64,
    },
    /// An attempt is under way.
    Connecting(ConnId),
    /// Connected: flushes are posted as they come.
    Up(ConnId),
    /// Stopped: the final flush was handed over (or could not be), and the connection is
    /// closing or gone. Nothing more is sent.
    Done,
}

/// What the driver must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing now.
    Wait,
    /// Open a connection.
    Connect,
    /// Post the front of the queue on this connection.
    Post(ConnId),
    /// Stopping and everything is handed over: close this connection.
    Close(ConnId),
}

/// The link, the queue, and the counts that drive back-off.
#[derive(Debug)]
pub struct Shipper {
    link: Link,
    queue: VecDeque<Flush>,
    max_queued: usize,
    /// Back-off cap, in flushes.
    max_backoff: u64,
    /// Flushes made so far (the clock of the back-off).
    flushes: u64,
    /// Failed attempts since the last connection.
    failures: u32,
    stopping: bool,
    /// Flushes dropped from a full queue, ever.
    dropped: u64,
}

impl Shipper {
    /// Not connected; keeps at most `max_queued` flushes; waits at most `max_backoff`
    /// flushes between attempts.
    pub fn new(max_queued: usize, max_backoff: u64) -> Shipper {
        Shipper {
            link: Link::Down { retry_at: 0 },
            queue: VecDeque::new(),
            max_queued: max_queued.max(1),
            max_backoff: max_backoff.max(1),
            flushes: 0,
            failures: 0,
            stopping: false,
            dropped: 0,
        }
    }

    /// The connection's state.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Flushes waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Flushes dropped from a full queue so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether the final flush has been made.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// A new flush; the oldest queued one if the queue was full and it was dropped.
    pub fn push(&mut self, flush: Flush) -> Option<Flush> {
        self.flushes += 1;
        let dropped = (self.queue.len() >= self.max_queued).then(|| {
            self.dropped += 1;
            self.queue.pop_front()
        });
        self.queue.push_back(flush);
        dropped.flatten()
    }

    /// The final flush (at stop): queued like any other, and a connection is tried at once.
    pub fn push_final(&mut self, flush: Flush) -> Option<Flush> {
        self.stopping = true;
        self.push(flush)
    }

    /// What to do now.
    pub fn next(&self) -> Action {
        match self.link {
            Link::Up(id) if !self.queue.is_empty() => Action::Post(id),
            Link::Up(id) if self.stopping => Action::Close(id),
            Link::Down { retry_at } if self.stopping || self.flushes >= retry_at => Action::Connect,
            _ => Action::Wait,
        }
    }

    /// An attempt is about to start (its id is not known yet).
    pub fn attempt(&mut self) {
        self.link = Link::Connecting(ConnId::NONE);
    }

    /// The attempt started, as connection `id`.
    pub fn connecting(&mut self, id: ConnId) {
        if matches!(self.link, Link::Connecting(_)) {
            self.link = Link::Connecting(id);
        }
    }

    /// The attempt failed (or could not start); returns how many flushes until the next
    /// (0 when stopping: no next). `None` if no attempt was under way: a failure reported
    /// twice (by the consumer and by `connect`'s error) counts once.
    pub fn failed(&mut self) -> Option<u64> {
        if !matches!(self.link, Link::Connecting(_)) {
            return None;
        }
        self.failures += 1;
        if self.stopping {
            self.link = Link::Done;
            return Some(0);
        }
        let wait = 1u64
            .checked_shl(self.failures - 1)
            .unwrap_or(u64::MAX)
            .min(self.max_backoff);
        self.link = Link::Down {
            retry_at: self.flushes + wait,
        };
        Some(wait)
    }

    /// The attempt succeeded: everything queued is to be written now (returned, oldest
    /// first), and whether to close right after (stopping).
    pub fn connected(&mut self) -> (Vec<Flush>, bool) {
        let Link::Connecting(id) = self.link else {
            return (Vec::new(), false);
        };
        self.failures = 0;
        self.link = if self.stopping {
            Link::Done
        } else {
            Link::Up(id)
        };
        (self.queue.drain(..).collect(), self.stopping)
    }

    /// The front of the queue, to post.
    pub fn take_front(&mut self) -> Option<Flush> {
        self.queue.pop_front()
    }

    /// A post was refused: the flush goes back to the front.
    pub fn refused(&mut self, flush: Flush) {
        self.queue.push_front(flush);
    }

    /// The connection was closed at stop.
    pub fn closed(&mut self) {
        self.link = Link::Done;
    }

    /// The connection that was up ended: try again at the next flush.
    pub fn lost(&mut self) {
        self.link = if self.stopping {
            Link::Done
        } else {
            Link::Down {
                retry_at: self.flushes + 1,
            }
        };
    }
}

/// The shipper and the services calls it asks for; shared by the protocol and the
/// outbound connection's consumer.
#[derive(Clone)]
pub struct Backend {
    shipper: Rc<RefCell<Shipper>>,
    /// `HOST:PORT`.
    target: Rc<str>,
}

impl Backend {
    /// A backend at `target` (`HOST:PORT`), not connected yet.
    pub fn new(target: &str, shipper: Shipper) -> Backend {
        Backend {
            shipper: Rc::new(RefCell::new(shipper)),
            target: target.into(),
        }
    }

    /// The worker serves: connect.
    pub fn start(&self) {
        self.pump();
    }

    /// A periodic flush.
    pub fn ship(&self, flush: Flush) {
        let dropped = self.shipper.borrow_mut().push(flush);
        if let Some(old) = dropped {
            let s = self.shipper.borrow();
            log::warn!(
                "backend {}: queue full ({} flushes): dropped the flush of {}; {} dropped so far",
                self.target,
                s.max_queued,
                old.timestamp,
                s.dropped()
            );
        }
        self.pump();
    }

    /// The worker stops: queue the final flush, connect if need be, and close the
    /// connection once everything is handed over (so the host need not wait for it).
    pub fn stop(&self, flush: Flush) {
        if self.shipper.borrow().is_stopping() {
            return;
        }
        let dropped = self.shipper.borrow_mut().push_final(flush);
        if dropped.is_some() {
            log::warn!(
                "backend {}: queue full: dropped the oldest flush for the final one",
                self.target
            );
        }
        self.pump();
    }

    /// Whether the final flush has been made (ticks after it are ignored).
    pub fn is_stopping(&self) -> bool {
        self.shipper.borrow().is_stopping()
    }

    /// The shipper, read-only (tests).
    #[cfg(test)]
    pub fn shipper(&self) -> std::cell::Ref<'_, Shipper> {
        self.shipper.borrow()
    }

    /// Do what the shipper asks until it waits.
    fn pump(&self) {
        loop {
            // Each step borrows only for the decision: no services call is made while the
            // shipper is borrowed.
            let action = self.shipper.borrow().next();
            match action {
                Action::Wait => return,
                Action::Connect => {
                    self.connect();
                    return;
                }
                Action::Post(id) => {
                    let Some(flush) = self.shipper.borrow_mut().take_front() else {
                        return;
                    };
                    let status = services::post(id, &flush.text);
                    if !status.is_queued() {
                        log::warn!(
                            "backend {}: the host refused a flush ({status:?}); kept for the next connection",
                            self.target
                        );
                        self.shipper.borrow_mut().refused(flush);
                        return;
                    }
                    if status == PostStatus::Backlogged {
                        log::debug!("backend {}: slow to read; flushes pile up", self.target);
                    }
                }
                Action::Close(id) => {
                    services::close(id);
                    self.shipper.borrow_mut().closed();
                    log::info!("backend {}: final flush handed over; closing", self.target);
                    return;
                }
            }
        }
    }

    fn connect(&self) {
        let consumer = BackendConnection {
            backend: self.clone(),
        };
        self.shipper.borrow_mut().attempt();
        match services::connect(&self.target, CONNECT_TIMEOUT, consumer) {
            Ok(id) => self.shipper.borrow_mut().connecting(id),
            Err(e) => {
                log::warn!("backend {}: cannot connect: {e}", self.target);
                self.failed();
            }
        }
    }

    fn failed(&self) {
        let mut s = self.shipper.borrow_mut();
        let Some(wait) = s.failed() else {
            return;
        };
        if s.link() == Link::Done {
            log::error!(
                "backend {}: unreachable at stop: {} flushes (the final one included) not delivered",
                self.target,
                s.queued()
            );
        } else {
            log::warn!(
                "backend {}: unreachable; {} flushes queued; next attempt in {wait} flush intervals",
                self.target,
                s.queued()
            );
        }
    }
}

/// The outbound connection's consumer: writes what was queued while connecting, and tells
/// the shipper when the connection ends.
pub struct BackendConnection {
    backend: Backend,
}

impl Consumer for BackendConnection {
    fn connection_made(&mut self, out: &mut Output) {
        let (queued, close) = self.backend.shipper.borrow_mut().connected();
        log::info!(
            "backend {}: connected; sending {} queued flushes",
            self.backend.target,
            queued.len()
        );
        for flush in &queued {
            out.write(&flush.text);
        }
        if close {
            log::info!(
                "backend {}: final flush handed over; closing",
                self.backend.target
            );
            out.close();
        }
    }

    fn data_received(&mut self, _data: &[u8], _out: &mut Output) {
        // Graphite's plaintext receiver sends nothing; ignore anything it does send.
    }

    fn connection_lost(&mut self, reason: LostReason) {
        let b = &self.backend;
        if reason == LostReason::ConnectFailed {
            b.failed();
            return;
        }
        let was = b.shipper.borrow().link();
        b.shipper.borrow_mut().lost();
        if matches!(was, Link::Up(_)) {
            log::warn!(
                "backend {}: connection ended ({reason:?}); reconnecting at the next flush",
                b.target
            );
        } else {
            log::debug!("backend {}: connection ended ({reason:?})", b.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush(t: u64) -> Flush {
        Flush {
            timestamp: t,
            text: format!("x 1 {t}\n").into_bytes(),
        }
    }

    fn stamps(flushes: &[Flush]) -> Vec<u64> {
        flushes.iter().map(|f| f.timestamp).collect()
    }

    const A: ConnId = ConnId::from_raw(7);
    const B: ConnId = ConnId::from_raw(8);

    #[test]
    fn connects_at_start_then_posts_each_flush() {
        let mut s = Shipper::new(3, 8);
        assert_eq!(s.next(), Action::Connect);
        s.attempt();
        s.connecting(A);
        assert_eq!(s.next(), Action::Wait);
        s.push(flush(1));
        assert_eq!(s.next(), Action::Wait, "still connecting: queued");
        let (queued, close) = s.connected();
        assert_eq!((stamps(&queued), close), (vec![1], false));
        assert_eq!(s.link(), Link::Up(A));
        s.push(flush(2));
        assert_eq!(s.next(), Action::Post(A));
        assert_eq!(s.take_front(), Some(flush(2)));
        assert_eq!(s.next(), Action::Wait);
    }

    #[test]
    fn back_off_doubles_up_to_the_cap_and_resets_on_success() {
        let mut s = Shipper::new(100, 4);
        let mut waits = Vec::new();
        let mut attempts_at = Vec::new();
        for t in 0..40 {
            if t > 0 {
                s.push(flush(t));
            }
            if s.next() == Action::Connect {
                attempts_at.push(t);
                s.attempt();
                s.connecting(A);
                waits.push(s.failed().unwrap());
            }
        }
        assert_eq!(attempts_at, [0, 1, 3, 7, 11, 15, 19, 23, 27, 31, 35, 39]);
        assert_eq!(waits[..5], [1, 2, 4, 4, 4]);
        assert_eq!(s.queued(), 39, "nothing dropped below the bound");
        // Up again: everything queued goes out, oldest first; failures start over.
        while s.next() != Action::Connect {
            s.push(flush(0));
        }
        s.attempt();
        s.connecting(B);
        let (queued, _) = s.connected();
        assert_eq!(stamps(&queued[..3]), [1, 2, 3]);
        s.lost();
        assert_eq!(s.next(), Action::Wait, "retried at the next flush");
        s.push(flush(100));
        assert_eq!(s.next(), Action::Connect);
        s.attempt();
        assert_eq!(
            s.failed(),
            Some(1),
            "back-off starts over after a connection"
        );
        assert_eq!(s.failed(), None, "one failure reported twice counts once");
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut s = Shipper::new(2, 8);
        s.attempt();
        s.connecting(A);
        assert_eq!(s.push(flush(1)), None);
        assert_eq!(s.push(flush(2)), None);
        assert_eq!(s.push(flush(3)), Some(flush(1)));
        assert_eq!(s.push(flush(4)), Some(flush(2)));
        assert_eq!(s.dropped(), 2);
        let (queued, _) = s.connected();
        assert_eq!(stamps(&queued), [3, 4], "the newest are kept, in order");
    }

    #[test]
    fn a_refused_post_is_kept_for_the_next_connection() {
        let mut s = Shipper::new(4, 8);
        s.attempt();
        s.connecting(A);
        s.connected();
        s.push(flush(1));
        s.push(flush(2));
        let f = s.take_front().unwrap();
        s.refused(f);
        s.lost();
        s.push(flush(3));
        assert_eq!(s.next(), Action::Connect);
        s.attempt();
        s.connecting(B);
        let (queued, _) = s.connected();
        assert_eq!(stamps(&queued), [1, 2, 3]);
    }

    #[test]
    fn stop_while_up_posts_then_closes() {
        let mut s = Shipper::new(4, 8);
        s.attempt();
        s.connecting(A);
        s.connected();
        s.push_final(flush(9));
        assert_eq!(s.next(), Action::Post(A));
        s.take_front();
        assert_eq!(s.next(), Action::Close(A));
        s.closed();
        assert_eq!(s.next(), Action::Wait);
        assert_eq!(s.link(), Link::Done);
    }

    #[test]
    fn stop_while_down_tries_once_whatever_the_back_off() {
        let mut s = Shipper::new(4, 8);
        s.attempt();
        s.connecting(A);
        s.failed();
        s.attempt();
        s.connecting(A);
        s.failed();
        assert_eq!(s.next(), Action::Wait, "backing off");
        s.push_final(flush(9));
        assert_eq!(s.next(), Action::Connect);
        s.attempt();
        s.connecting(B);
        let (queued, close) = s.connected();
        assert_eq!((stamps(&queued), close), (vec![9], true));
        assert_eq!(s.link(), Link::Done);

        // The same, unreachable: given up, not retried.
        let mut s = Shipper::new(4, 8);
        s.push_final(flush(9));
        s.attempt();
        s.connecting(A);
        s.failed();
        assert_eq!(s.link(), Link::Done);
        assert_eq!(s.next(), Action::Wait);
        assert_eq!(s.queued(), 1);
    }
}
