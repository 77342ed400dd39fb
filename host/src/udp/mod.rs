//! UDP: a datagram server with one consumer per peer (source address).
//!
//! One task per UDP socket owns that socket's sessions. A peer's first datagram makes its
//! consumer; every datagram is delivered whole, as one `data_received`; every
//! [`Output::write`] of the consumer goes back to that peer as one datagram. A session ends
//! when the consumer closes it, after `--keep-alive` without a datagram from the peer, when
//! it is evicted, or when the worker stops.
//!
//! Bounds: at most `--max-sessions` sessions per socket. They are kept in least-recently-used
//! order (an O(1) LRU), so a flood from many (possibly spoofed) sources evicts the idlest
//! session per new peer, in constant time, and expiring idle sessions only walks the stale
//! end. Evictions are counted and logged once per second. A burst of datagrams is handled
//! at most [`BATCH`] at a time before yielding, so TCP connections in the same worker are
//! not starved.
//!
//! On Linux datagrams are received and sent in batches (`recvmmsg`/`sendmmsg`, up to 32 per
//! call: `batch_linux.rs`); elsewhere one at a time (`batch_other.rs`). Per received batch
//! the clock is read once, a run of consecutive datagrams from one peer looks its session up
//! once, and the replies the consumers write are queued in order and sent together at the
//! end ([`outbox`], which also says what a full send buffer does).
//!
//! Datagrams are received with `MSG_TRUNC`, which reports a datagram's real length: one
//! larger than the buffer is dropped with a log line, never delivered as if whole. (Windows
//! reports truncation without the real length: see `truncation_windows.rs`.)

#[cfg_attr(target_os = "linux", path = "batch_linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "batch_other.rs")]
mod batch;
mod outbox;
#[cfg(not(target_os = "linux"))]
mod receive;
mod sessions;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use lru::LruCache;
use plugin_api::host::Factory;
use plugin_api::session::{Delivered, Input, Session};
use plugin_api::{ConnId, LostReason, Output};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use self::batch::Receiver;
use self::outbox::Outbox;
use crate::access_log;
use crate::bind::canonical;
use crate::connections::endpoint::{Event, Inbox, Work};
use crate::connections::Registration;
use crate::logging;
use crate::metrics::Counter;
use crate::shared::Shared;

/// The largest UDP payload is under this (65,507 bytes over IPv4, 65,527 over IPv6).
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams handled before yielding to the other tasks of the worker.
const BATCH: usize = 64;

/// One received datagram, as the platform's `Receiver` reports it.
#[derive(Debug)]
enum Datagram<'a> {
    /// All of it, from this peer.
    Whole(SocketAddr, &'a [u8]),
    /// It did not fit and was cut: its real length (drop it).
    Truncated(SocketAddr, usize),
    /// From a non-IP address (not expected on an IP socket).
    Unaddressed,
}

/// One peer's session.
struct Peer {
    session: Session,
    last_active: Instant,
    /// Its services identity, for plugins that use services.
    registration: Option<Registration>,
    /// With the access log on: what its record will say.
    tally: Option<Box<access_log::Tally>>,
}

/// The sessions of one UDP socket.
pub struct UdpServer {
    /// The worker's factory and counters.
    shared: Rc<Shared>,
    socket: UdpSocket,
    local: SocketAddr,
    sessions: LruCache<SocketAddr, Peer>,
    /// Sessions with work queued by host services.
    inbox: Rc<Inbox>,
    max_sessions: usize,
    keep_alive: Option<Duration>,
    evicted: u64,
    /// Out of `self` (`None`) while its datagrams are being delivered.
    receiver: Option<Receiver>,
    /// Datagrams written by the consumers, not sent yet.
    outbox: Outbox,
    out: Output,
}

impl UdpServer {
    pub fn new(
        shared: Rc<Shared>,
        socket: UdpSocket,
        max_sessions: usize,
        keep_alive: Option<Duration>,
    ) -> io::Result<UdpServer> {
        let local = canonical(socket.local_addr()?);
        Ok(UdpServer {
            shared,
            socket,
            local,
            sessions: LruCache::unbounded(),
            inbox: Rc::new(Inbox::default()),
            max_sessions: max_sessions.max(1),
            keep_alive,
            evicted: 0,
            receiver: Some(Receiver::new()?),
            outbox: Outbox::default(),
            out: Output::for_datagrams(),
        })
    }

    /// Serve until cancelled (the worker aborts the task at stop; dropping the server tells
    /// every remaining consumer `connection_lost(Shutdown)`).
    pub async fn serve_sessions(mut self) {
        let tick = self.keep_alive.map(crate::keep_alive::tick_for);
        let mut sweep = tokio::time::interval(tick.unwrap_or(Duration::from_secs(1)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // While replies wait for a full send buffer to drain, nothing is received (see
            // `outbox`): the socket's receive buffer holds what arrives meanwhile.
            let blocked = self.outbox.is_blocked();
            tokio::select! {
                ready = self.socket.readable(), if !blocked => {
                    if let Err(e) = ready {
                        tracing::warn!(service = %self.shared.name, local = %self.local, "udp socket: {e}");
                        return;
                    }
                    self.receive_batch();
                    tokio::task::yield_now().await;
                }
                ready = self.socket.writable(), if blocked => {
                    if let Err(e) = ready {
                        tracing::warn!(service = %self.shared.name, local = %self.local, "udp socket: {e}");
                        return;
                    }
                    self.outbox.flush(&self.socket);
                }
                ready = std::future::poll_fn(|cx| {
                    let ready = self.inbox.take_ready(cx.waker());
                    if ready.is_empty() { std::task::Poll::Pending } else { std::task::Poll::Ready(ready) }
                }) => {
                    for id in ready {
                        self.serve_work(id);
                    }
                    self.outbox.flush(&self.socket);
                }
                _ = sweep.tick() => {
                    if let Some(receiver) = &mut self.receiver {
                        receiver.release();
                    }
                    self.expire_idle();
                    if self.evicted > 0 {
                        tracing::warn!(service = %self.shared.name, local = %self.local,
                            evicted = self.evicted,
                            "udp: evicted the least recently used sessions (--max-sessions {} reached)",
                            self.max_sessions
                        );
                        self.evicted = 0;
                    }
                }
            }
        }
    }

    /// Handle up to [`BATCH`] waiting datagrams, in batches as large as the platform
    /// receives at once, sending each batch's replies together at its end.
    fn receive_batch(&mut self) {
        let shared = self.shared.clone();
        crate::connections::enter(shared.service);
        // Out of `self` for the batch, so its datagrams can be lent to `deliver` without a
        // copy.
        let mut receiver = self.receiver.take().expect("not receiving already");
        let mut handled = 0;
        while handled < BATCH && !self.outbox.is_blocked() {
            let asked = (BATCH - handled).min(receiver.slots());
            let got = match receiver.receive(&self.socket, asked) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) => {
                    // ICMP errors for earlier sends surface here; they concern one peer.
                    tracing::debug!(local = %self.local, "udp receive: {e}");
                    handled += 1;
                    continue;
                }
            };
            handled += got;
            let now = Instant::now();
            let mut i = 0;
            while i < got {
                match receiver.datagram(i) {
                    Datagram::Whole(peer, _) => {
                        // The run of datagrams from this peer that starts here. (`fuse`:
                        // `map_while` would go on past the first from another peer.)
                        let run = (i..got)
                            .map_while(|j| match receiver.datagram(j) {
                                Datagram::Whole(p, data) if p == peer => Some(data),
                                _ => None,
                            })
                            .fuse();
                        i += self.deliver(peer, run, &shared.factory, now);
                        continue;
                    }
                    Datagram::Truncated(peer, len) => {
                        tracing::warn!(service = %self.shared.name, %peer, len, "udp: datagram larger than the {}-byte buffer dropped (truncated)", receiver.slot_len());
                    }
                    Datagram::Unaddressed => {
                        tracing::debug!(local = %self.local, "udp receive: datagram from a non-IP address");
                    }
                }
                i += 1;
            }
            self.outbox.flush(&self.socket);
            if got < asked {
                break; // the socket's queue is empty
            }
        }
        self.receiver = Some(receiver);
    }

    /// Give a run of datagrams from one peer to its session (made on first contact): the
    /// session is looked up once for the run, unless one of them ends it. Returns how many
    /// datagrams the run had.
    fn deliver<'d>(
        &mut self,
        peer: SocketAddr,
        run: impl Iterator<Item = &'d [u8]>,
        factory: &Factory,
        now: Instant,
    ) -> usize {
        let mut run = run.peekable();
        let mut count = 0;
        while run.peek().is_some() {
            let Some(session) = self.sessions.get_mut(&peer) else {
                if !self.open_session(peer, factory, now) {
                    // The plugin panicked making a consumer: this datagram is dropped.
                    run.next();
                    count += 1;
                }
                continue;
            };
            session.last_active = now;
            if let Some(r) = &session.registration {
                r.touch();
            }
            let mut ending = None;
            for data in run.by_ref() {
                count += 1;
                if let Some(t) = &mut session.tally {
                    t.count(data.len() as u64, 0);
                }
                let result = session.session.deliver(Input::Data(data), &mut self.out);
                let sent = queue_output(&mut self.out, &mut self.outbox, peer);
                if let (Some(t), true) = (&mut session.tally, sent > 0) {
                    t.count(0, sent as u64);
                }
                ending = ending_of(&self.shared, peer, result);
                if ending.is_some() || self.outbox.is_full() {
                    break;
                }
            }
            if let Some(reason) = ending {
                if let Some(session) = self.sessions.pop(&peer) {
                    self.end(peer, session, reason);
                }
            } else if self.outbox.is_full() {
                self.outbox.flush(&self.socket);
            }
        }
        count
    }

    /// Do what host services queued for session `id`: send posted datagrams, run timer and
    /// wake callbacks, close.
    fn serve_work(&mut self, id: ConnId) {
        crate::connections::enter(self.shared.service);
        let connections = &self.shared.connections;
        let Some((Some(peer), work)) =
            connections.with_endpoint(id, |ep| (ep.peer, ep.take_work()))
        else {
            return;
        };
        let Work {
            posted,
            bounds,
            events,
        } = work;
        let mut start = 0;
        for end in bounds {
            self.send(peer, &posted[start..end as usize]);
            start = end as usize;
        }
        self.count_sent(peer, start);
        for event in events {
            let Some(p) = self.sessions.peek_mut(&peer) else {
                return;
            };
            let ending = match event {
                Event::Timer(token) => {
                    let result = p.session.deliver(Input::Timer(token), &mut self.out);
                    self.flush(peer, result);
                    None
                }
                Event::Woken(token) => {
                    let result = p.session.deliver(Input::Woken(token), &mut self.out);
                    self.flush(peer, result);
                    None
                }
                Event::Close => Some(LostReason::Closed),
                // A datagram session has no half-close.
                Event::ShutdownWrite => None,
                Event::Overflow => Some(LostReason::Error),
                Event::IdleTimeout => Some(LostReason::IdleTimeout),
            };
            if let Some(reason) = ending {
                if let Some(session) = self.sessions.pop(&peer) {
                    self.end(peer, session, reason);
                }
                return;
            }
        }
    }

    /// Queue one datagram to `peer` (sent at the end of the batch or round of work).
    fn send(&mut self, peer: SocketAddr, datagram: &[u8]) {
        self.outbox.push(peer, datagram);
    }

    /// Queue what the consumer wrote, one datagram per write, and act on its close request
    /// or panic.
    fn flush(&mut self, peer: SocketAddr, result: Delivered) {
        let sent = queue_output(&mut self.out, &mut self.outbox, peer);
        self.count_sent(peer, sent);
        if let Some(reason) = ending_of(&self.shared, peer, result) {
            if let Some(session) = self.sessions.pop(&peer) {
                self.end(peer, session, reason);
            }
        }
        if self.outbox.is_full() {
            self.outbox.flush(&self.socket);
        }
    }
}

/// Queue what a callback wrote into `out` (one datagram per write) for `peer` and empty
/// `out` for the next callback; the bytes queued. (The session core discarded what a
/// panicking callback wrote.)
fn queue_output(out: &mut Output, outbox: &mut Outbox, peer: SocketAddr) -> usize {
    let mut sent = 0;
    for datagram in out.written_datagrams() {
        outbox.push(peer, datagram);
        sent += datagram.len();
    }
    out.clear();
    out.shrink(2 * MAX_DATAGRAM);
    sent
}

/// Whether a callback's result ends its session, and why; logs a panic.
fn ending_of(shared: &Shared, peer: SocketAddr, result: Delivered) -> Option<LostReason> {
    match result {
        Delivered::Panicked(message) => {
            let panics = shared.metrics.cell(Counter::PluginPanics);
            logging::plugin_panic(
                panics,
                &shared.name,
                peer,
                "plugin panicked",
                &message,
                "ending this peer's session",
            );
            Some(LostReason::Error)
        }
        Delivered::Ran(requests) if requests.close => Some(LostReason::Closed),
        Delivered::Ran(_) | Delivered::Ignored => None,
    }
}
