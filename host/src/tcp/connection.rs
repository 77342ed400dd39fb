//! The connection driver: socket → consumer → socket for one TCP connection, plain or TLS
//! (generic over the stream: `TcpStream` or a rustls `TlsStream`).
//!
//! Data flows one way: a read lands in the worker's shared read buffer, the consumer's
//! `data_received` writes into the worker's shared [`Output`], and the driver writes that
//! straight to the stream. Only what the stream does not take at once is copied into the
//! connection's own `pending` buffer. So an idle connection owns no buffer at all, and a
//! steady exchange allocates nothing per read.
//!
//! Backpressure: while more than [`HIGH_WATER`] bytes are pending, the driver stops reading
//! from the peer, so a client that does not read cannot make the worker buffer without bound.
//! Bounds ([`Limits`]): a connection whose unsent output passes `--max-pending` (its own
//! writes and what other consumers [posted](plugin_api::services::post) to it) is closed
//! at once; one that keeps output waiting above [`LOW_WATER`] for `--send-timeout` is closed
//! by the sweeper; the shared output buffer shrinks back after a large callback.
//!
//! The consumer contract (what to do with a callback's output, its requests, a panic,
//! `connection_lost` exactly once) is [`plugin_api::session::Session`]'s; this file is the I/O
//! around it. With host services, each poll also takes what was queued for the connection
//! ([`Endpoint`](crate::connections::endpoint::Endpoint)): posted bytes, timer and wake callbacks,
//! close requests, and whether reading is paused.
//!
//! Lifecycle: open (`connection_made`) → serving (reads and writes) → closing (the consumer
//! asked to close: flush, half-close, linger) → closed (`connection_lost`, on drop).

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use plugin_api::host::Factory;
use plugin_api::session::{Delivered, Input, Session};
use plugin_api::{ConnInfo, LostReason, Output};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::closing::{lost_on, Peer};
pub use super::slot::Slot;
use crate::connections::Connections;
use crate::metrics::Counter;
use crate::{access_log, logging};

/// Stop reading while more than this many bytes wait to be sent.
pub const HIGH_WATER: usize = 256 * 1024;
/// Output waiting above this many bytes for `--send-timeout` closes the connection.
pub const LOW_WATER: usize = 64 * 1024;
/// The shared output buffer is given back after a callback that grew it past this.
pub(super) const SCRATCH_KEEP: usize = 64 * 1024;

/// The worker's bounds on a connection's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `--max-pending`: unsent bytes above this close the connection.
    pub max_pending: usize,
    /// `--send-timeout`: how long output may wait above [`LOW_WATER`].
    pub send_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending: 4 * 1024 * 1024,
            send_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Size of the worker's shared read buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Reads handled in one poll before yielding to other connections (fairness).
const READS_PER_POLL: u32 = 16;
/// After the consumer closes, how long unread input is drained so that the close is a FIN,
/// not a reset that could destroy the response in flight ("lingering close").
pub(super) const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Per-thread buffers shared by every connection of the worker: the read buffer and the
/// consumer's output. Borrowed only inside one poll, never across an await.
pub(super) struct Scratch {
    pub(super) read: Box<[u8]>,
    pub(super) out: Output,
}

thread_local! {
    pub(super) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        read: vec![0; READ_BUFFER].into_boxed_slice(),
        out: Output::for_stream(),
    });
}

/// The sending side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum WriteSide {
    Open,
    /// The consumer asked for a half-close once `pending` is sent.
    ShutdownRequested,
    Shut,
}

/// The receiving side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum ReadSide {
    Open,
    /// The peer sent FIN.
    Eof,
}

/// What ended the main loop.
enum Ending {
    /// Close now, for this reason.
    Now(LostReason),
    /// The consumer closed and everything is sent: linger, then close.
    Graceful,
}

/// One connection's state. Dropping it (also when the task is cancelled by the keep-alive
/// sweeper or at the end of a graceful stop) reports `connection_lost` to the consumer.
pub struct Connection<S> {
    pub(super) slot: Slot,
    pub(super) stream: S,
    pub(super) peer: Peer,
    pub(super) session: Session,
    pub(super) pending: Vec<u8>,
    pub(super) read: ReadSide,
    pub(super) write: WriteSide,
    /// Told to the consumer on drop; `Shutdown` until the driver knows better.
    pub(super) reason: LostReason,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Ask the factory for a consumer; `None` (logged) if the plugin panicked.
    pub fn open(
        slot: Slot,
        stream: S,
        info: &ConnInfo,
        factory: &Factory,
    ) -> Option<Connection<S>> {
        match factory.consumer(info, slot.registration.id()) {
            Ok(consumer) => Some(Connection::with_session(
                slot,
                stream,
                info.peer,
                Session::new(consumer),
            )),
            Err(message) => {
                access_log::with_open(slot.registration.log_key(), |t| t.set_reason("error"));
                let panics = slot.registration.metrics().cell(Counter::PluginPanics);
                logging::plugin_panic(
                    panics,
                    slot.registration.service_name(),
                    info.peer,
                    "plugin panicked making a consumer",
                    &message,
                    "connection closed",
                );
                None
            }
        }
    }

    /// A connection around a consumer that already exists (an outbound connection's).
    pub fn with_session(
        slot: Slot,
        stream: S,
        peer: std::net::SocketAddr,
        session: Session,
    ) -> Connection<S> {
        Connection {
            slot,
            stream,
            peer: Peer::from(peer),
            session,
            pending: Vec::new(),
            read: ReadSide::Open,
            write: WriteSide::Open,
            reason: LostReason::Shutdown,
        }
    }

    /// Drive the connection in a task of its own, which becomes the one its entry in
    /// `connections` cancels (idle timeout, graceful stop). For a connection opened inside
    /// another task, after a TLS handshake or a PROXY header: that task's future is sized for
    /// the handshake (4.9 KB with TLS), and an idle connection awaited in it would keep all
    /// of it; its own task is the size of [`Connection::run`]'s future (1.4 KB with TLS).
    pub fn spawn(self, connections: &Connections)
    where
        S: 'static,
    {
        let key = self.slot.registration.key();
        let task = tokio::task::spawn_local(self.run());
        connections.attach(key, task.abort_handle());
    }

    /// Drive the connection until it ends.
    ///
    /// A plain function returning an `async move` block rather than an `async fn`: the
    /// arguments of an `async fn` are stored twice in its future (rust-lang/rust#62958), and
    /// every idle connection would carry the copy.
    #[allow(clippy::manual_async_fn)] // deliberate, see above
    pub fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            crate::connections::enter(self.slot.registration.service());
            let ending = match self.call(Input::Made) {
                Err(reason) => Ending::Now(reason),
                Ok(()) => std::future::poll_fn(|cx| self.poll_serve(cx)).await,
            };
            let reason = match ending {
                Ending::Now(reason) => reason,
                // Both directions already closed: nothing to send (no TLS close_notify
                // either, it went with the shutdown) and nothing to drain.
                Ending::Graceful if self.read == ReadSide::Eof && self.write == WriteSide::Shut => {
                    LostReason::Closed
                }
                Ending::Graceful => {
                    // Boxed: its timer is needed only while closing, and inline it would make
                    // every connection's future that much larger.
                    Box::pin(self.linger()).await;
                    LostReason::Closed
                }
            };
            self.end(reason);
        }
    }

    /// Record why the connection ended; dropping it reports that to the consumer.
    pub(super) fn end(&mut self, reason: LostReason) {
        self.reason = reason;
    }

    /// The serving loop as one poll function: the stream's own registration holds the
    /// wakers, so an idle connection's future holds no readiness future and no timer (the
    /// keep-alive sweeper cancels this task if it stays idle).
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        crate::connections::enter(self.slot.registration.service());
        let mut reads = 0;
        loop {
            let paused = match self.poll_services(cx) {
                Ok(paused) => paused,
                Err(reason) => return Poll::Ready(Ending::Now(reason)),
            };
            if let Err(reason) = self.send_pending(cx) {
                return Poll::Ready(Ending::Now(reason));
            }
            // Encrypted bytes a TLS stream still holds count as unsent too.
            let flushed = match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.pending.is_empty(),
                Poll::Ready(Err(e)) => return Poll::Ready(Ending::Now(lost_on(e))),
                Poll::Pending => false,
            };
            if flushed {
                if self.session.is_closing() {
                    return Poll::Ready(Ending::Graceful);
                }
                if self.write == WriteSide::ShutdownRequested {
                    match Pin::new(&mut self.stream).poll_shutdown(cx) {
                        Poll::Ready(_) => self.write = WriteSide::Shut,
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            let want_read = self.read == ReadSide::Open
                && !self.session.is_closing()
                && self.pending.len() < HIGH_WATER;
            if !want_read || paused {
                if flushed && !paused && !self.slot.registration.has_endpoint() {
                    // Peer done sending and nothing left to send: no callback can ever
                    // produce more output, so the exchange is over.
                    return Poll::Ready(Ending::Now(LostReason::Closed));
                }
                return Poll::Pending; // woken when the stream can take more
            }
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            match self.read_once(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(reason)) => return Poll::Ready(Ending::Now(reason)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// One read, handed to the consumer; its output is written at once.
    fn read_once(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LostReason>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let Scratch { read, out } = scratch;
            let mut buf = ReadBuf::new(read);
            let result = match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(lost_on(e))),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    self.read = ReadSide::Eof;
                    self.session.deliver(Input::Eof, out)
                }
                Poll::Ready(Ok(())) => {
                    self.slot.registration.touch();
                    self.slot.received(buf.filled().len());
                    self.session.deliver(Input::Data(buf.filled()), out)
                }
            };
            let absorbed = self.absorb(result, out, cx);
            out.clear();
            out.shrink(SCRATCH_KEEP);
            Poll::Ready(absorbed)
        })
    }

    /// Run one callback outside a read (`connection_made`, a timer, a wake) and send what it
    /// wrote (now, or from `pending` on the next poll).
    pub(super) fn call(&mut self, input: Input<'_>) -> Result<(), LostReason> {
        SCRATCH.with_borrow_mut(|scratch| {
            let out = &mut scratch.out;
            let result = self.session.deliver(input, out);
            let absorbed = match result {
                Delivered::Ran(requests) => {
                    self.take_requests(requests.shutdown_write);
                    self.queue(out.written())
                }
                Delivered::Ignored => Ok(()),
                Delivered::Panicked(message) => Err(self.panicked(&message)),
            };
            out.clear();
            out.shrink(SCRATCH_KEEP);
            absorbed
        })
    }
}

/// The per-connection footprint, held at compile time: every idle plain connection is one
/// of these inside its task's future (see the test below for the future), and tokio's task
/// cell grows by 128 bytes at once (256 B for futures up to 152 B, 384 B from 168 B on).
/// Grow it only with a `bench/idle-memory.sh` measurement.
const _: () = assert!(std::mem::size_of::<Connection<super::reactor::Socket>>() <= 128);

#[cfg(test)]
mod tests {
    use super::Connection;
    use crate::tcp::reactor::Socket;
    use tokio::net::TcpStream;

    fn future_size<S, F: std::future::Future>(_run: fn(Connection<S>) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle connection is one tokio task holding this future: a few bytes more can
    /// move the task into a larger allocation class (measured: 8 bytes more cost 136 bytes
    /// per idle connection in bench/idle-memory.sh). Grow it only with a measurement.
    #[test]
    fn the_connection_future_stays_small() {
        // Accepted connections (`Socket`) and outbound ones (tokio's `TcpStream`).
        for size in [
            future_size(Connection::<Socket>::run),
            future_size(Connection::<TcpStream>::run),
        ] {
            assert!(
                size <= 152,
                "the connection future grew to {size} bytes: run bench/idle-memory.sh before accepting"
            );
        }
    }
}
