//! A connection served through the worker's [`Reactor`]: its reads and writes, which run
//! while the connection's slot says ready and register the task's waker once they would
//! block.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Reactor, Readiness, NOT_DRAINED_BY_SHORT_READ, READ, WRITE};

/// An accepted TCP connection served through the worker's [`Reactor`].
pub struct Socket {
    io: std::net::TcpStream,
    key: u32,
    reactor: Rc<Reactor>,
}

impl Socket {
    /// Serve `io` (non-blocking) through this thread's reactor.
    pub fn new(io: std::net::TcpStream) -> io::Result<Socket> {
        let reactor = Reactor::current()?;
        let key = reactor.register(&io)?;
        Ok(Socket { io, key, reactor })
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io.set_nodelay(on)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Whether `bit` is set; if not, `waker` is woken when it is.
    fn ready(&self, bit: u8, waker: &Waker) -> bool {
        let mut table = self.reactor.slots.borrow_mut();
        let slot = &mut table.slots[self.key as usize];
        if slot.ready & bit != 0 {
            return true;
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            slot.waker = Some(waker.clone());
        }
        false
    }

    fn clear(&self, bit: u8) {
        self.reactor.slots.borrow_mut().slots[self.key as usize].ready &= !bit;
    }

    /// A read returned fewer bytes than asked for: the receive queue was empty when the
    /// kernel copied them, so the socket would block now — unless the peer's close (or an
    /// error, or urgent data) was reported, which a short read does not consume. Clearing
    /// READ here saves the read that would only say `EAGAIN` (one system call per request;
    /// nginx does the same with `EPOLLRDHUP`, tokio's own sockets too). Safe with the
    /// edge-triggered set: bytes that arrive after the read queue a new event, which the
    /// driver takes only after this (one thread), and which sets READ again.
    fn drained(&self) {
        let mut table = self.reactor.slots.borrow_mut();
        let slot = &mut table.slots[self.key as usize];
        if slot.ready & NOT_DRAINED_BY_SHORT_READ == 0 {
            slot.ready &= !READ;
        }
    }

    /// Run `op` while the socket is ready for `bit`; `Pending` (the task's waker kept) once
    /// it would block.
    fn poll_io<R>(
        &self,
        bit: u8,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&std::net::TcpStream) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            if !self.ready(bit, cx.waker()) {
                return Poll::Pending;
            }
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear(bit),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Closing the descriptor (after this) takes it out of the epoll set.
        let mut table = self.reactor.slots.borrow_mut();
        table.slots[self.key as usize] = Readiness::default();
        table.free.push(self.key);
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        let asked = unfilled.len();
        let n = std::task::ready!(self.poll_io(READ, cx, |mut io| io.read(unfilled)))?;
        if n > 0 && n < asked {
            self.drained();
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(WRITE, cx, |mut io| io.write(buf))
    }

    /// One `writev` for all of `bufs` (the default would write only the first per system
    /// call).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(WRITE, cx, |mut io| io.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.shutdown(Shutdown::Write))
    }
}
