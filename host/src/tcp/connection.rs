//! The connection driver: socket → consumer → socket for one TCP connection.
//!
//! Data flows one way: a read lands in the worker's shared read buffer, the consumer's
//! `data_received` writes into the worker's shared [`Output`], and the driver writes that
//! straight to the socket. Only what the socket does not take at once is copied into the
//! connection's own `pending` buffer. So an idle connection owns no buffer at all, and a
//! steady exchange allocates nothing per read.
//!
//! Backpressure: while more than [`HIGH_WATER`] bytes are pending, the driver stops reading
//! from the peer, so a client that does not read cannot make the worker buffer without bound.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;

use plugin_api::host::{ConsumerHandle, Factory};
use plugin_api::{ConnInfo, LostReason, Output, Transport};
use std::task::Poll;
use tokio::net::TcpStream;

use crate::connections::Registration;

/// Stop reading while more than this many bytes wait to be sent.
pub const HIGH_WATER: usize = 256 * 1024;
/// Size of the worker's shared read buffer.
const READ_BUFFER: usize = 64 * 1024;
/// After the consumer closes, how long unread input is drained so that the close is a FIN,
/// not a reset that could destroy the response in flight ("lingering close").
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Per-thread buffers shared by every connection of the worker: the read buffer and the
/// consumer's output. Borrowed only between two awaits, never across one.
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
/// idle stamp) and its `--max-connections` permit, both released when it ends.
pub struct Slot {
    pub registration: Registration,
    pub _permit: tokio::sync::OwnedSemaphorePermit,
}

/// One connection's state. Dropping it (also when the task is cancelled by the keep-alive
/// sweeper or at the end of a graceful stop) reports `connection_lost` to the consumer.
pub struct Connection {
    slot: Slot,
    stream: TcpStream,
    peer: SocketAddr,
    consumer: ConsumerHandle,
    pending: Vec<u8>,
    read: ReadSide,
    write: WriteSide,
    /// The consumer asked to close once `pending` is sent.
    closing: bool,
    /// Told to the consumer on drop; `Shutdown` until the driver knows better.
    reason: LostReason,
}

impl Connection {
    /// Ask the factory for a consumer; `None` (logged) if the plugin panicked.
    pub fn open(
        slot: Slot,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        factory: &Factory,
    ) -> Option<Connection> {
        let info = ConnInfo::new(Transport::Tcp, peer, local);
        match factory.consumer(&info) {
            Ok(consumer) => Some(Connection {
                slot,
                stream,
                peer,
                consumer,
                pending: Vec::new(),
                read: ReadSide::Open,
                write: WriteSide::Open,
                closing: false,
                reason: LostReason::Shutdown,
            }),
            Err(message) => {
                tracing::warn!(%peer, "plugin panicked making a consumer: {message}; connection closed");
                None
            }
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
            let ending = match self.call(|c, out| c.connection_made(out)) {
                Err(reason) => Ending::Now(reason),
                Ok(()) => self.serve().await,
            };
            let reason = match ending {
                Ending::Now(reason) => reason,
                Ending::Graceful => {
                    // Boxed: its timer and readiness state are needed only while closing,
                    // and inline they would make every connection's future that much larger.
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

    async fn serve(&mut self) -> Ending {
        loop {
            if self.pending.is_empty() {
                if self.closing {
                    return Ending::Graceful;
                }
                if self.write == WriteSide::ShutdownRequested {
                    let _ = self.shutdown_write();
                    self.write = WriteSide::Shut;
                }
            }
            let want_read =
                self.read == ReadSide::Open && !self.closing && self.pending.len() < HIGH_WATER;
            let want_write = !self.pending.is_empty();
            if !want_read && !want_write {
                // Peer done sending and nothing left to send: no callback can ever produce
                // more output, so the exchange is over.
                return Ending::Now(LostReason::Closed);
            }
            // Wait with the poll API: the waker lives in the socket's registration, so an
            // idle connection's future holds no readiness future. No timer either: the
            // keep-alive sweeper cancels this task if it stays idle.
            let ready = std::future::poll_fn(|cx| {
                let writable = want_write && self.stream.poll_write_ready(cx).is_ready();
                let readable = want_read && self.stream.poll_read_ready(cx).is_ready();
                if writable || readable {
                    Poll::Ready((readable, writable))
                } else {
                    Poll::Pending
                }
            })
            .await;
            // Errors (and EOF) surface from the read or write that follows.
            let (readable, writable) = ready;
            let mut step = Ok(());
            if writable {
                step = self.flush().map(|progressed| {
                    if progressed {
                        self.slot.registration.touch();
                    }
                });
            }
            if step.is_ok() && readable {
                step = self.read_once();
            }
            if let Err(reason) = step {
                return Ending::Now(reason);
            }
        }
    }

    /// One read, handed to the consumer; its output is written at once.
    fn read_once(&mut self) -> Result<(), LostReason> {
        SCRATCH.with_borrow_mut(|scratch| {
            let Scratch { read, out } = scratch;
            let result = match self.stream.try_read(read) {
                Ok(0) => {
                    self.read = ReadSide::Eof;
                    self.consumer.eof_received(out)
                }
                Ok(n) => {
                    self.slot.registration.touch();
                    self.consumer.data_received(&read[..n], out)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(lost_on(e)),
            };
            let absorbed = match result {
                Ok(()) => self.absorb(out),
                Err(message) => {
                    tracing::warn!(peer = %self.peer, "plugin panicked: {message}; closing this connection");
                    Err(LostReason::Error)
                }
            };
            out.reset();
            absorbed
        })
    }

    /// Run a consumer callback against the shared output and absorb what it wrote.
    fn call(
        &mut self,
        f: impl FnOnce(&mut ConsumerHandle, &mut Output) -> Result<(), String>,
    ) -> Result<(), LostReason> {
        SCRATCH.with_borrow_mut(|scratch| {
            let out = &mut scratch.out;
            let absorbed = match f(&mut self.consumer, out) {
                Ok(()) => self.absorb(out),
                Err(message) => {
                    tracing::warn!(peer = %self.peer, "plugin panicked: {message}; closing this connection");
                    Err(LostReason::Error)
                }
            };
            out.reset();
            absorbed
        })
    }

    /// Take the consumer's output and requests: write what the socket accepts now, keep the
    /// rest in `pending`.
    fn absorb(&mut self, out: &mut Output) -> Result<(), LostReason> {
        let mut data = out.written();
        if !data.is_empty() {
            if self.write != WriteSide::Open {
                tracing::debug!(peer = %self.peer, "consumer wrote after shutting down its side; dropped");
            } else if self.pending.is_empty() {
                while !data.is_empty() {
                    match self.stream.try_write(data) {
                        Ok(n) => data = &data[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(lost_on(e)),
                    }
                }
                self.pending.extend_from_slice(data);
            } else {
                self.pending.extend_from_slice(data);
            }
        }
        if out.take_close_request() {
            self.closing = true;
        }
        if out.take_shutdown_request() && self.write == WriteSide::Open {
            self.write = WriteSide::ShutdownRequested;
        }
        Ok(())
    }

    /// Write pending bytes until the socket would block; whether any were written.
    fn flush(&mut self) -> Result<bool, LostReason> {
        let mut sent = 0;
        while sent < self.pending.len() {
            match self.stream.try_write(&self.pending[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(lost_on(e)),
            }
        }
        if sent == self.pending.len() {
            // Give the memory back: an idle connection holds no buffer.
            self.pending = Vec::new();
        } else {
            self.pending.drain(..sent);
        }
        Ok(sent > 0)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Write)
    }

    /// Half-close, then discard input until the peer closes (bounded), so that closing
    /// with unread input does not reset the connection and destroy the reply in flight.
    async fn linger(&mut self) {
        if self.read == ReadSide::Eof {
            return;
        }
        if self.write != WriteSide::Shut && self.shutdown_write().is_err() {
            return;
        }
        // Discarded input goes to the worker's shared read buffer (a buffer local to this
        // future would make every connection's future that much bigger).
        let drain = async {
            loop {
                if self.stream.readable().await.is_err() {
                    return;
                }
                let read = SCRATCH.with_borrow_mut(|s| self.stream.try_read(&mut s.read));
                match read {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.slot.registration.expired() {
            tracing::debug!(peer = %self.peer, "idle for the keep-alive period; closed");
            self.reason = LostReason::IdleTimeout;
        }
        if let Err(message) = self.consumer.connection_lost(self.reason) {
            tracing::warn!(peer = %self.peer, "plugin panicked in connection_lost: {message}");
        }
    }
}

/// How a socket error ends the connection.
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
