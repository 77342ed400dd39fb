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
//! ([`Endpoint`](crate::services::endpoint::Endpoint)): posted bytes, timer and wake callbacks,
//! close requests, and whether reading is paused.
//!
//! Lifecycle: open (`connection_made`) → serving (reads and writes) → closing (the consumer
//! asked to close: flush, half-close, linger) → closed (`connection_lost`, on drop).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use plugin_api::host::Factory;
use plugin_api::session::{Delivered, Input, Session};
use plugin_api::{ConnInfo, LostReason, Output};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connections::{Expiry, Registration};
use crate::services::endpoint::{Event, Work};
use crate::{access_log, logging, metrics};

/// Stop reading while more than this many bytes wait to be sent.
pub const HIGH_WATER: usize = 256 * 1024;
/// Output waiting above this many bytes for `--send-timeout` closes the connection.
pub const LOW_WATER: usize = 64 * 1024;
/// The shared output buffer is given back after a callback that grew it past this.
const SCRATCH_KEEP: usize = 64 * 1024;

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
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Per-thread buffers shared by every connection of the worker: the read buffer and the
/// consumer's output. Borrowed only inside one poll, never across an await.
struct Scratch {
    read: Box<[u8]>,
    out: Output,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        read: vec![0; READ_BUFFER].into_boxed_slice(),
        out: Output::for_stream(),
    });
}

/// The sending side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WriteSide {
    Open,
    /// The consumer asked for a half-close once `pending` is sent.
    ShutdownRequested,
    Shut,
}

/// The receiving side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReadSide {
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

/// What a connection holds in its worker: its entry in the connection set (cancel handle,
/// idle stamp) and its `--max-connections` permit, both released when it ends — and then
/// its access log record is written (with the access log on, accepted connections have a
/// tally keyed by their entry, from accept to here, so the connection itself does not
/// grow).
pub struct Slot {
    pub registration: Registration,
    pub _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Slot {
    /// Bytes read from the peer: counted for the worker and the connection.
    #[inline]
    fn received(&self, n: usize) {
        metrics::bump(&self.registration.metrics().bytes_in, n as u64);
        access_log::with_open(self.registration.log_key(), |t| t.count(n as u64, 0));
    }

    /// Bytes written to the peer: counted for the worker and the connection.
    #[inline]
    fn sent(&self, n: usize) {
        metrics::bump(&self.registration.metrics().bytes_out, n as u64);
        access_log::with_open(self.registration.log_key(), |t| t.count(0, n as u64));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        access_log::closed(self.registration.log_key());
    }
}

/// One connection's state. Dropping it (also when the task is cancelled by the keep-alive
/// sweeper or at the end of a graceful stop) reports `connection_lost` to the consumer.
pub struct Connection<S> {
    slot: Slot,
    stream: S,
    peer: Peer,
    session: Session,
    pending: Vec<u8>,
    read: ReadSide,
    write: WriteSide,
    /// Told to the consumer on drop; `Shutdown` until the driver knows better.
    reason: LostReason,
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
                let panics = &slot.registration.metrics().plugin_panics;
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

    /// Drive the connection until it ends.
    ///
    /// A plain function returning an `async move` block rather than an `async fn`: the
    /// arguments of an `async fn` are stored twice in its future (rust-lang/rust#62958), and
    /// every idle connection would carry the copy.
    #[allow(clippy::manual_async_fn)] // deliberate, see above
    pub fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            crate::services::enter(self.slot.registration.service());
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
    fn end(&mut self, reason: LostReason) {
        self.reason = reason;
    }

    /// The serving loop as one poll function: the stream's own registration holds the
    /// wakers, so an idle connection's future holds no readiness future and no timer (the
    /// keep-alive sweeper cancels this task if it stays idle).
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        crate::services::enter(self.slot.registration.service());
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
            out.reset();
            out.shrink(SCRATCH_KEEP);
            Poll::Ready(absorbed)
        })
    }

    /// Run one callback outside a read (`connection_made`, a timer, a wake) and send what it
    /// wrote (now, or from `pending` on the next poll).
    fn call(&mut self, input: Input<'_>) -> Result<(), LostReason> {
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
            out.reset();
            out.shrink(SCRATCH_KEEP);
            absorbed
        })
    }

    /// Take what was queued for the connection by host services: posted bytes go after what
    /// is pending, timer and wake callbacks run now. Returns whether reading is paused.
    fn poll_services(&mut self, cx: &mut Context<'_>) -> Result<bool, LostReason> {
        let Some((work, paused)) = self
            .slot
            .registration
            .with_endpoint(|ep| (ep.poll_work(cx.waker()), ep.paused))
        else {
            return Ok(false);
        };
        if !work.is_empty() {
            self.take_work(work)?;
        }
        Ok(paused)
    }

    fn take_work(&mut self, work: Work) -> Result<(), LostReason> {
        if !work.posted.is_empty() {
            if self.write != WriteSide::Open {
                tracing::debug!(peer = %self.peer, "bytes posted after the sending side shut down; dropped");
            } else if self.pending.is_empty() {
                self.pending = work.posted;
            } else {
                self.queue(&work.posted)?;
            }
            // Publish what is now unsent, so that the next post compares with it.
            self.slot
                .registration
                .pending(self.pending.len(), LOW_WATER);
        }
        for event in work.events {
            match event {
                Event::Timer(token) => self.call(Input::Timer(token))?,
                Event::Woken(token) => self.call(Input::Woken(token))?,
                // As if the consumer had called `Output::close`.
                Event::Close => self.session.close(),
                Event::ShutdownWrite => self.take_requests(true),
                Event::Overflow => return Err(self.over_limit("posts")),
                Event::IdleTimeout => return Err(LostReason::IdleTimeout),
            }
        }
        Ok(())
    }

    /// Append to `pending`, within `--max-pending`.
    fn queue(&mut self, data: &[u8]) -> Result<(), LostReason> {
        if data.is_empty() {
            return Ok(());
        }
        if self.write != WriteSide::Open {
            tracing::debug!(peer = %self.peer, "consumer wrote after shutting down its side; dropped");
            return Ok(());
        }
        if self.pending.len() + data.len() > self.slot.registration.max_pending() {
            return Err(self.over_limit("output"));
        }
        self.pending.extend_from_slice(data);
        // Published at each change, so a post to this connection sees its real backlog.
        self.slot
            .registration
            .pending(self.pending.len(), LOW_WATER);
        Ok(())
    }

    /// The connection's unsent output passed `--max-pending`: it ends now.
    fn over_limit(&self, what: &str) -> LostReason {
        metrics::bump(&self.slot.registration.metrics().output_limit_closes, 1);
        tracing::debug!(peer = %self.peer, "unsent {what} above --max-pending ({} bytes); closed", self.slot.registration.max_pending());
        LostReason::Error
    }

    fn panicked(&self, message: &str) -> LostReason {
        let panics = &self.slot.registration.metrics().plugin_panics;
        logging::plugin_panic(
            panics,
            self.slot.registration.service_name(),
            self.peer,
            "plugin panicked",
            message,
            "closing this connection",
        );
        LostReason::Error
    }

    /// Take a read callback's output and requests: write what the stream accepts now, keep
    /// the rest in `pending`.
    fn absorb(
        &mut self,
        result: Delivered,
        out: &mut Output,
        cx: &mut Context<'_>,
    ) -> Result<(), LostReason> {
        let shutdown = match result {
            Delivered::Ran(requests) => requests.shutdown_write,
            Delivered::Ignored => return Ok(()),
            Delivered::Panicked(message) => return Err(self.panicked(&message)),
        };
        let mut data = out.written();
        if !data.is_empty() && self.write == WriteSide::Open && self.pending.is_empty() {
            while !data.is_empty() {
                match Pin::new(&mut self.stream).poll_write(cx, data) {
                    Poll::Ready(Ok(0)) => return Err(LostReason::PeerClosed),
                    Poll::Ready(Ok(n)) => {
                        self.slot.sent(n);
                        data = &data[n..];
                    }
                    Poll::Ready(Err(e)) => return Err(lost_on(e)),
                    Poll::Pending => break,
                }
            }
        }
        self.queue(data)?;
        self.take_requests(shutdown);
        Ok(())
    }

    fn take_requests(&mut self, shutdown_write: bool) {
        if shutdown_write && self.write == WriteSide::Open {
            self.write = WriteSide::ShutdownRequested;
        }
    }

    /// Write pending bytes until the stream would block (its waker then registered).
    fn send_pending(&mut self, cx: &mut Context<'_>) -> Result<(), LostReason> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut sent = 0;
        while sent < self.pending.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.pending[sent..]) {
                Poll::Ready(Ok(0)) => return Err(LostReason::PeerClosed),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => return Err(lost_on(e)),
                Poll::Pending => break,
            }
        }
        if sent > 0 {
            self.slot.registration.touch();
            self.slot.sent(sent);
        }
        if sent == self.pending.len() {
            // Give the memory back: an idle connection holds no buffer.
            self.pending = Vec::new();
        } else {
            self.pending.drain(..sent);
        }
        if sent > 0 {
            self.slot
                .registration
                .pending(self.pending.len(), LOW_WATER);
        }
        Ok(())
    }

    /// Half-close (TLS: close_notify first), then discard input until the peer closes
    /// (bounded), so that closing with unread input does not reset the connection and
    /// destroy the reply in flight.
    async fn linger(&mut self) {
        let drain = async {
            if self.write != WriteSide::Shut {
                if std::future::poll_fn(|cx| Pin::new(&mut self.stream).poll_shutdown(cx))
                    .await
                    .is_err()
                {
                    return;
                }
                self.write = WriteSide::Shut;
            }
            if self.read == ReadSide::Eof {
                return;
            }
            // Discarded input goes to the worker's shared read buffer.
            std::future::poll_fn(|cx| {
                SCRATCH.with_borrow_mut(|s| loop {
                    let mut buf = ReadBuf::new(&mut s.read);
                    match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                        Poll::Ready(_) => return Poll::Ready(()),
                        Poll::Pending => return Poll::Pending,
                    }
                })
            })
            .await;
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

impl<S> Drop for Connection<S> {
    fn drop(&mut self) {
        match self.slot.registration.expired() {
            Some(Expiry::Idle) => {
                tracing::debug!(peer = %self.peer, "idle for the keep-alive period; closed");
                self.reason = LostReason::IdleTimeout;
            }
            Some(Expiry::SendTimeout) => {
                metrics::bump(&self.slot.registration.metrics().output_limit_closes, 1);
                tracing::debug!(peer = %self.peer, "output waited longer than --send-timeout; closed");
                self.reason = LostReason::Error;
            }
            None => {}
        }
        self.slot.registration.with_endpoint(|ep| ep.closing = true);
        let metrics = self.slot.registration.metrics();
        // A panicked session has already ended (with Error) and is counted as such.
        let ended = self.session.lost_reason().unwrap_or(self.reason);
        metrics.closed(ended);
        // `--log-level debug`: one line per connection (the access log has the figures).
        tracing::debug!(peer = %self.peer, reason = %access_log::reason(ended), service = %self.slot.registration.service_name(), "connection closed");
        access_log::with_open(self.slot.registration.log_key(), |t| {
            t.set_reason(access_log::reason(ended))
        });
        if let Err(message) = self.session.lose(self.reason) {
            let panics = &metrics.plugin_panics;
            logging::plugin_panic(
                panics,
                self.slot.registration.service_name(),
                self.peer,
                "plugin panicked in connection_lost",
                &message,
                "closed",
            );
        }
    }
}

/// The peer's address for log lines, in 20 bytes instead of a `SocketAddr`'s 32 (every idle
/// connection carries it; an IPv6 scope id is not worth 12 bytes each).
#[derive(Clone, Copy)]
struct Peer {
    ip: std::net::IpAddr,
    port: u16,
}

impl From<std::net::SocketAddr> for Peer {
    fn from(a: std::net::SocketAddr) -> Peer {
        Peer {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::net::SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// How a stream error ends the connection.
fn lost_on(e: io::Error) -> LostReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => LostReason::PeerClosed,
        _ => {
            tracing::debug!("connection error: {e}");
            LostReason::Error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Connection;
    use tokio::net::TcpStream;

    fn future_size<S, F: std::future::Future>(_run: fn(Connection<S>) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle connection is one tokio task holding this future: a few bytes more can
    /// move the task into a larger allocation class (measured: 8 bytes more cost 136 bytes
    /// per idle connection in bench/idle-memory.sh). Grow it only with a measurement.
    #[test]
    fn the_connection_future_stays_small() {
        let size = future_size(Connection::<TcpStream>::run);
        assert!(
            size <= 152,
            "the connection future grew to {size} bytes: run bench/idle-memory.sh before accepting"
        );
    }
}
