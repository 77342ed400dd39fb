//! The worker's own readiness for accepted TCP connections: one `epoll` set per worker
//! thread, registered once with tokio, instead of a tokio I/O registration per connection.
//!
//! Why: tokio's registration of a socket is a `ScheduledIo` in an `Arc`, aligned to 128 bytes
//! (256 bytes, and glibc's `posix_memalign` wastes about as much again around each one). An
//! idle keep-alive connection kept nothing else that large but its task, so this is half of
//! what made sockhost's idle connections larger than nginx's. Here a connection is a
//! [`Socket`] (its descriptor and a key, 16 bytes) and a 24-byte [`Readiness`] in the worker's
//! table: readiness bits and the waker of the task that drives it.
//!
//! How: every accepted socket is added to the worker's set once, edge-triggered, for input,
//! output and the peer's close (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`); the set itself
//! is an [`AsyncFd`] in tokio's reactor. When tokio reports the set readable, the driver task
//! ([`Reactor::drive`]) takes the ready events (`epoll_wait`, no timeout) and wakes each
//! connection's task, which then reads or writes until the socket would block — exactly
//! tokio's own readiness protocol, one level down (a read shorter than its buffer counts as
//! "would block", as with tokio's sockets, unless the peer's close was reported). The system
//! calls per request are those of tokio's sockets (one `recv` and one `send` for a request
//! and its answer; no `epoll_ctl` per read or write; one `epoll_ctl` per connection, and
//! none at close: closing the descriptor leaves the set); one `epoll_wait` more per pass of
//! the event loop that has connection events, whatever their number — and fewer than that
//! when busy, since a pass that woke several connections looks again after they ran
//! instead of waiting through tokio first.
//!
//! This file holds the set, its table and its driver task; a connection's reads and writes
//! are in [`socket`], accepting connections into the set in [`listener`].

// FFI boundary: the epoll descriptor registered with tokio.
#![allow(unsafe_code)]

mod listener;
mod socket;

pub use listener::Listener;
pub use socket::Socket;

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Readiness bits of a [`Readiness`] entry.
const READ: u8 = 1;
const WRITE: u8 = 2;
/// Sticky: the peer's close (`EPOLLRDHUP`), a hang-up or error, or urgent data was reported.
/// A short read is then no proof that the socket is drained (the close or the rest may
/// already have been reported and consumed), so reading goes on until it would block or
/// reads 0 bytes.
const NOT_DRAINED_BY_SHORT_READ: u8 = 4;
/// Events taken per `epoll_wait`.
const BATCH: usize = 256;
/// A pass that woke at least this many connections looks for more right after they ran
/// (see [`Reactor::drive`]).
const BUSY: usize = 2;

/// Pending once (the task woken at once, so queued behind the tasks already woken), then
/// ready.
#[derive(Default)]
struct Behind(bool);

impl std::future::Future for Behind {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// One connection's state in the worker's table: 24 bytes (a test holds it there).
#[derive(Default)]
struct Readiness {
    /// The task to wake on the next readiness (its driver registers it when it would block).
    waker: Option<Waker>,
    /// `READ` / `WRITE`: the socket may read / write without blocking.
    ready: u8,
}

/// The worker thread's epoll set and its table of connections.
pub struct Reactor {
    epoll: AsyncFd<EpollFd>,
    slots: RefCell<Table>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Readiness>,
    free: Vec<u32>,
}

/// The epoll descriptor, for [`AsyncFd`].
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

thread_local! {
    /// This thread's reactor, made on its first connection (inside the worker's runtime);
    /// cleared when its driver task is dropped with the runtime.
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// Clears [`CURRENT`] when the driver task ends (a new runtime on this thread makes a new
/// reactor).
struct Current;

impl Drop for Current {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.borrow_mut().take());
    }
}

impl Reactor {
    /// This thread's reactor; the first call starts its driver task on the current
    /// `LocalSet`.
    fn current() -> io::Result<Rc<Reactor>> {
        if let Some(r) = CURRENT.with_borrow(|c| c.clone()) {
            return Ok(r);
        }
        let epoll = EpollFd(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?);
        // SAFETY: the descriptor is the `OwnedFd` inside `epoll`, which the `AsyncFd` owns
        // and never replaces, so it stays open and the same for the `AsyncFd`'s lifetime.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }?;
        let reactor = Rc::new(Reactor {
            epoll,
            slots: RefCell::default(),
        });
        CURRENT.set(Some(reactor.clone()));
        tokio::task::spawn_local(Reactor::drive(reactor.clone(), Current));
        Ok(reactor)
    }

    /// Take ready events and wake their tasks, for as long as the runtime runs.
    async fn drive(r: Rc<Reactor>, _current: Current) {
        let mut events = vec![EpollEvent::empty(); BATCH];
        loop {
            let mut guard = match r.epoll.readable().await {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::error!("connection readiness: {e}");
                    return;
                }
            };
            let mut fired = 0;
            loop {
                let n = match r.epoll.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
                    Ok(n) => n,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!("connection readiness: epoll_wait: {e}");
                        return;
                    }
                };
                let mut table = r.slots.borrow_mut();
                for ev in &events[..n] {
                    table.fire(ev.data() as usize, ev.events());
                }
                fired += n;
                if n < BATCH {
                    break;
                }
            }
            if fired < BUSY {
                guard.clear_ready();
                continue;
            }
            // Busy: by the time the tasks just woken have run, their peers have likely
            // answered. Look again then (queued behind them), without tokio's `epoll_wait`
            // first: the readiness is kept, so the next `readable()` is at once. A look that
            // finds fewer than `BUSY` events goes back to waiting through tokio. The
            // `LocalSet` still hands over to tokio's driver every 61 tasks (timers, accepts).
            drop(guard);
            Behind::default().await;
        }
    }

    /// Add `socket` to the set; its key in the table.
    fn register(&self, socket: &std::net::TcpStream) -> io::Result<u32> {
        let mut table = self.slots.borrow_mut();
        let key = match table.free.pop() {
            Some(k) => k,
            None => {
                table.slots.push(Readiness::default());
                (table.slots.len() - 1) as u32
            }
        };
        // Ready for both until the socket says otherwise (a first read may find data).
        table.slots[key as usize] = Readiness {
            waker: None,
            ready: READ | WRITE,
        };
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if let Err(e) = self
            .epoll
            .get_ref()
            .0
            .add(socket.as_fd(), EpollEvent::new(flags, key.into()))
        {
            table.free.push(key);
            return Err(e.into());
        }
        Ok(key)
    }
}

impl Table {
    /// Readiness for `key`: set its bits, wake its task.
    fn fire(&mut self, key: usize, events: EpollFlags) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let closed = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
        if events.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLPRI | closed) {
            slot.ready |= NOT_DRAINED_BY_SHORT_READ;
        }
        if events.intersects(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLPRI | closed,
        ) {
            slot.ready |= READ;
        }
        if events.intersects(EpollFlags::EPOLLOUT | closed) {
            slot.ready |= WRITE;
        }
        if let Some(w) = slot.waker.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_readiness_entry_is_24_bytes() {
        // Every connection pays for its slot (and for the table's spare capacity).
        assert_eq!(std::mem::size_of::<super::Readiness>(), 24);
    }
}
