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
//! Datagrams are received with `MSG_TRUNC`, which reports a datagram's real length: one
//! larger than the buffer is dropped with a log line, never delivered as if whole. (Windows
//! reports truncation without the real length: see `truncation_windows.rs`.)

mod receive;
mod sessions;

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use lru::LruCache;
use plugin_api::host::Factory;
use plugin_api::session::{Delivered, Input, Session};
use plugin_api::{ConnId, LostReason, Output};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use self::receive::{receive, Received};
use crate::access_log;
use crate::bind::canonical;
use crate::connections::endpoint::{Event, Inbox, Work};
use crate::connections::Registration;
use crate::logging;
use crate::metrics::Counter;
use crate::shared::Shared;

/// Receive buffer: larger than the largest UDP payload (65,507 bytes over IPv4, 65,527 over
/// IPv6), so truncation means a jumbogram.
const RECV_BUFFER: usize = 65_536;
/// Datagrams handled before yielding to the other tasks of the worker.
const BATCH: usize = 64;

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
    buf: Box<[MaybeUninit<u8>]>,
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
            buf: vec![MaybeUninit::uninit(); RECV_BUFFER].into_boxed_slice(),
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
            tokio::select! {
                ready = self.socket.readable() => {
                    if let Err(e) = ready {
                        tracing::warn!(service = %self.shared.name, local = %self.local, "udp socket: {e}");
                        return;
                    }
                    self.receive_batch();
                    tokio::task::yield_now().await;
                }
                ready = std::future::poll_fn(|cx| {
                    let ready = self.inbox.take_ready(cx.waker());
                    if ready.is_empty() { std::task::Poll::Pending } else { std::task::Poll::Ready(ready) }
                }) => {
                    for id in ready {
                        self.serve_work(id);
                    }
                }
                _ = sweep.tick() => {
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

    /// Handle up to [`BATCH`] waiting datagrams.
    #[allow(unsafe_code)] // FFI boundary: the buffer the kernel fills (recvmsg).
    fn receive_batch(&mut self) {
        let shared = self.shared.clone();
        crate::connections::enter(shared.service);
        // Out of `self` for the batch, so a datagram can be lent to `deliver` without a copy.
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..BATCH {
            match receive(&self.socket, &mut buf) {
                Received::Datagram(peer, len) => {
                    // SAFETY: `receive` saw the kernel initialise the first `len` bytes.
                    let data =
                        unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
                    self.deliver(peer, data, &shared.factory);
                }
                Received::Truncated(peer, len) => {
                    tracing::warn!(service = %self.shared.name, %peer, len, "udp: datagram larger than the {}-byte buffer dropped (truncated)", buf.len());
                }
                Received::Error(e) => {
                    // ICMP errors for earlier sends surface here; they concern one peer.
                    tracing::debug!(local = %self.local, "udp receive: {e}");
                }
                Received::Nothing => break,
            }
        }
        self.buf = buf;
    }

    /// Give one datagram to its peer's session (made on first contact).
    fn deliver(&mut self, peer: SocketAddr, data: &[u8], factory: &Factory) {
        let now = Instant::now();
        if !self.sessions.contains(&peer) && !self.open_session(peer, factory, now) {
            return;
        }
        let session = self.sessions.get_mut(&peer).expect("present");
        session.last_active = now;
        if let Some(r) = &session.registration {
            r.touch();
        }
        if let Some(t) = &mut session.tally {
            t.count(data.len() as u64, 0);
        }
        let result = session.session.deliver(Input::Data(data), &mut self.out);
        self.flush(peer, result);
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

    /// Send one datagram to `peer`; a full send buffer drops it, as the network may.
    fn send(&self, peer: SocketAddr, datagram: &[u8]) {
        match self.socket.try_send_to(datagram, peer) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tracing::debug!(%peer, "udp send buffer full; datagram dropped");
            }
            Err(e) => tracing::debug!(%peer, "udp send: {e}"),
        }
    }

    /// Send what the consumer wrote, one datagram per write, and act on its close request
    /// or panic.
    fn flush(&mut self, peer: SocketAddr, result: Delivered) {
        // The session core discarded what a panicking callback wrote.
        let mut sent = 0;
        for datagram in self.out.written_datagrams() {
            self.send(peer, datagram);
            sent += datagram.len();
        }
        self.count_sent(peer, sent);
        self.out.clear();
        self.out.shrink(2 * RECV_BUFFER);
        let ending = match result {
            Delivered::Panicked(message) => {
                let panics = self.shared.metrics.cell(Counter::PluginPanics);
                logging::plugin_panic(
                    panics,
                    &self.shared.name,
                    peer,
                    "plugin panicked",
                    &message,
                    "ending this peer's session",
                );
                Some(LostReason::Error)
            }
            Delivered::Ran(requests) if requests.close => Some(LostReason::Closed),
            Delivered::Ran(_) | Delivered::Ignored => None,
        };
        if let Some(reason) = ending {
            if let Some(session) = self.sessions.pop(&peer) {
                self.end(peer, session, reason);
            }
        }
    }
}
