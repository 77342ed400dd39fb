//! One connection's services state: what other consumers, timers and threads have queued for
//! it, and how to wake the task that drives it. It lives in the connection's entry of
//! [`Connections`](crate::connections::Connections) (boxed, and only for plugins that use
//! services, so a plain plugin's idle connection pays nothing for it).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use plugin_api::ConnId;
use tokio::time::Instant;

/// Something for the driver to do on the consumer's behalf, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A timer fired: `timer_fired(token)`.
    Timer(u64),
    /// A wake handle was woken: `woken(token)`.
    Woken(u64),
    /// `services::close`: close once everything queued is sent.
    Close,
    /// `services::shutdown_write`: half-close once everything queued is sent.
    ShutdownWrite,
    /// A post would have exceeded `--max-pending`: end the connection now.
    Overflow,
    /// The protocol's own idle timeout ran out.
    IdleTimeout,
}

/// What the driver takes from its endpoint on each poll.
#[derive(Default)]
pub struct Work {
    /// Posted bytes, in order (stream), or datagrams (see `bounds`).
    pub posted: Vec<u8>,
    /// Datagram mode: the end offset of each posted datagram.
    pub bounds: Vec<u32>,
    /// Events, in order.
    pub events: VecDeque<Event>,
}

impl Work {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.posted.is_empty() && self.events.is_empty()
    }
}

/// The ready list of a UDP server: which of its sessions have work.
#[derive(Default)]
pub struct Inbox {
    ready: RefCell<Vec<ConnId>>,
    waker: RefCell<Option<Waker>>,
}

impl Inbox {
    /// Take the sessions that have work, registering the server task's waker.
    pub fn take_ready(&self, waker: &Waker) -> Vec<ConnId> {
        let mut w = self.waker.borrow_mut();
        if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *w = Some(waker.clone());
        }
        std::mem::take(&mut *self.ready.borrow_mut())
    }

    fn push(&self, id: ConnId) {
        self.ready.borrow_mut().push(id);
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Who drives the connection.
enum Owner {
    /// Its own task (TCP, inbound or outbound).
    Task(Option<Waker>),
    /// A UDP server, which serves many sessions from one task.
    Server(Rc<Inbox>),
}

/// A connection's services state.
pub struct Endpoint {
    /// Its [`ConnId`]'s generation (set at registration).
    pub generation: u32,
    owner: Owner,
    work: Work,
    /// Unsent bytes the driver holds (published after each write).
    pub pending: usize,
    /// Reading paused by the plugin.
    pub paused: bool,
    /// The protocol's own idle timeout, replacing `--keep-alive` (`Some(None)`: never).
    pub idle_timeout: Option<Option<Duration>>,
    /// When the peer last sent something (for the protocol's idle timeout).
    pub last_read: Instant,
    /// The connection is closing or closed: posts answer `Gone`.
    pub closing: bool,
    /// An outbound connection.
    pub outbound: bool,
    /// Datagram mode: the peer's address.
    pub peer: Option<std::net::SocketAddr>,
    /// Shared with this connection's wake handles (made on the first): cleared when the
    /// connection ends, so a wake from another thread can say it is gone.
    alive: Option<Arc<AtomicBool>>,
}

impl Endpoint {
    /// For a TCP connection driven by its own task.
    pub fn stream(outbound: bool) -> Box<Endpoint> {
        Box::new(Endpoint::new(Owner::Task(None), outbound, None))
    }

    /// For a UDP peer session served by a server task.
    pub fn datagram(inbox: Rc<Inbox>, peer: std::net::SocketAddr) -> Box<Endpoint> {
        Box::new(Endpoint::new(Owner::Server(inbox), false, Some(peer)))
    }

    fn new(owner: Owner, outbound: bool, peer: Option<std::net::SocketAddr>) -> Endpoint {
        Endpoint {
            generation: 0,
            owner,
            work: Work::default(),
            pending: 0,
            paused: false,
            idle_timeout: None,
            last_read: Instant::now(),
            closing: false,
            outbound,
            peer,
            alive: None,
        }
    }

    /// The flag this connection's wake handles check.
    pub fn alive(&mut self) -> Arc<AtomicBool> {
        self.alive
            .get_or_insert_with(|| Arc::new(AtomicBool::new(true)))
            .clone()
    }

    /// Whether the protocol (or being outbound) exempts it from `--keep-alive`.
    pub fn owns_idle_timeout(&self) -> bool {
        self.outbound || self.idle_timeout.is_some()
    }

    /// The peer sent something.
    pub fn touched(&mut self) {
        if self.idle_timeout.is_some() {
            self.last_read = Instant::now();
        }
    }

    /// Bytes posted and not yet taken by the driver.
    pub fn posted_len(&self) -> usize {
        self.work.posted.len()
    }

    /// Queue posted bytes (one datagram in datagram mode) and wake the driver.
    pub fn post(&mut self, data: &[u8], id: ConnId) {
        self.work.posted.extend_from_slice(data);
        if self.peer.is_some() {
            self.work.bounds.push(self.work.posted.len() as u32);
        }
        self.wake(id);
    }

    /// Queue an event and wake the driver. A wake already queued with the same token is not
    /// queued twice (wakes merge).
    pub fn event(&mut self, event: Event, id: ConnId) {
        if matches!(event, Event::Woken(_)) && self.work.events.contains(&event) {
            return;
        }
        self.work.events.push_back(event);
        self.wake(id);
    }

    /// Wake the driver (after a change such as resuming reading).
    pub fn wake(&self, id: ConnId) {
        match &self.owner {
            Owner::Task(Some(w)) => w.wake_by_ref(),
            Owner::Task(None) => {} // not polled yet: it looks at its work on the first poll
            Owner::Server(inbox) => inbox.push(id),
        }
    }

    /// The driver's poll: remember its waker, take the queued work.
    pub fn poll_work(&mut self, waker: &Waker) -> Work {
        if let Owner::Task(w) = &mut self.owner {
            if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *w = Some(waker.clone());
            }
        }
        self.take_work()
    }

    /// Take the queued work.
    pub fn take_work(&mut self) -> Work {
        std::mem::take(&mut self.work)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(alive) = &self.alive {
            alive.store(false, Ordering::Release);
        }
    }
}
