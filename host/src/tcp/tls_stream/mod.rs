//! TLS over an accepted stream through rustls's *unbuffered* API
//! ([`UnbufferedServerConnection`]), so that an idle TLS connection holds no record buffer.
//!
//! Why not tokio-rustls: it drives rustls's buffered `ServerConnection`, which grows a 4 KiB
//! receive buffer before every read and never gives it back — half of what an idle TLS
//! connection cost (docs/performance.md, Idle memory). Here the host owns the buffers, the
//! way [`super::connection`] does for plain connections: records are read into a buffer
//! shared by the worker thread and processed there, and a connection keeps bytes of its own
//! only while there is something to keep — the start of a record a read left unfinished,
//! decrypted bytes its reader had no room for, encrypted bytes its socket would not take.
//! Each of those is freed as soon as it is empty. rustls still holds the connection's state
//! and keys.
//!
//! The protocol is rustls's: this file only does what rustls's state machine asks, in its
//! order — records out as soon as they are encoded (handshake flights, session tickets, a
//! key update, an alert), records in until the handshake ends or the reader has data. TLS
//! 1.2 and 1.3; a peer's key-update request is answered with the next write (as rustls's
//! buffered API does); the peer's close_notify is the end of the stream; ours is sent by
//! `poll_shutdown`. A TCP end of stream without close_notify is an error
//! (`UnexpectedEof`), as tokio-rustls reports it. Early data is never enabled.
//!
//! Layout: this file is the stream (the handshake, the socket writes, the tokio traits);
//! [`records`] drives rustls over received and outgoing records; [`buffers`] holds the
//! worker thread's shared buffers.

mod buffers;
mod records;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use self::buffers::{SCRATCH, WRITE_MAX};
use self::records::{tls_error, Step, Want};

/// A server-side TLS stream over `S` (an accepted socket, or one behind a PROXY header).
pub struct TlsStream<S> {
    io: S,
    conn: UnbufferedServerConnection,
    /// Received bytes not processed yet: the start of a record a read left unfinished, or
    /// records left for the next read when the reader's buffer filled. Unallocated when empty.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader had no room for yet. Unallocated when empty.
    plaintext: Vec<u8>,
    /// Encrypted bytes the socket did not take yet, sent before anything else. Unallocated
    /// when empty.
    outgoing: Vec<u8>,
    /// The peer's close_notify came: after `plaintext`, the stream is at its end.
    peer_closed: bool,
    /// Ours went (into `outgoing` at least).
    close_notify_sent: bool,
    /// `outgoing` holds the records that ended the handshake (the session tickets; TLS
    /// 1.2's last flight) and waits for the first write, to go out with it in one segment
    /// (one system call and one wake-up of the peer fewer per connection), or for the
    /// first read that finds nothing to read.
    held: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// Complete a TLS handshake on `io`. Also returns the name the client asked for (SNI):
    /// rustls 0.23's unbuffered connection does not keep it for us (see
    /// [`crate::tls::take_server_name`]).
    pub async fn accept(
        io: S,
        config: Arc<ServerConfig>,
    ) -> io::Result<(TlsStream<S>, Option<String>)> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            io,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            peer_closed: false,
            close_notify_sent: false,
            held: false,
        };
        let mut sni = None;
        std::future::poll_fn(|cx| stream.poll_handshake(cx, &mut sni)).await?;
        Ok((stream, sni))
    }

    /// The negotiated session: version, ALPN, the client's certificates.
    pub fn session(&self) -> &rustls::CommonState {
        &self.conn
    }

    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
        sni: &mut Option<String>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_send_outgoing(cx))?;
            crate::tls::take_server_name();
            let step = self.poll_records(cx, &mut Want::Handshake);
            if let Some(name) = crate::tls::take_server_name() {
                *sni = Some(name);
            }
            // Anything but "done" while rustls still handshakes is the peer's doing.
            let step = ready!(step)?;
            if step != Step::NeedData && self.conn.is_handshaking() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("TLS handshake ended early ({step:?})"),
                )));
            }
        }
    }

    /// Write `bytes` after whatever is waiting; what the socket does not take now waits in
    /// `outgoing` (and its waker is registered).
    fn send(&mut self, bytes: &[u8], cx: &mut Context<'_>) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.outgoing.is_empty() {
            self.outgoing.extend_from_slice(bytes);
            return match self.poll_send_outgoing(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => Ok(()),
            };
        }
        let mut sent = 0;
        while sent < bytes.len() {
            match Pin::new(&mut self.io).poll_write(cx, &bytes[sent..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        self.outgoing.extend_from_slice(&bytes[sent..]);
        Ok(())
    }

    /// Write `outgoing` until it is empty (then freed) or the socket would block.
    fn poll_send_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.outgoing.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.outgoing[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if sent == self.outgoing.len() {
            self.outgoing = Vec::new();
        } else {
            self.outgoing.drain(..sent);
        }
        result
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Records still waiting to go out go first (a caller may read without flushing;
        // if the socket is full, its waker is registered and the read goes on) — but for
        // held ones, which wait for a write or for a read that would wait.
        if !this.held {
            if let Poll::Ready(Err(e)) = this.poll_send_outgoing(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if !this.plaintext.is_empty() {
            let n = this.plaintext.len().min(buf.remaining());
            buf.put_slice(&this.plaintext[..n]);
            if n == this.plaintext.len() {
                this.plaintext = Vec::new();
            } else {
                this.plaintext.drain(..n);
            }
            return Poll::Ready(Ok(()));
        }
        if this.peer_closed || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // `Data`, or the end of the stream (nothing filled).
        let read = this.poll_records(cx, &mut Want::Read(buf));
        if read.is_pending() && std::mem::take(&mut this.held) {
            if let Poll::Ready(Err(e)) = this.poll_send_outgoing(cx) {
                return Poll::Ready(Err(e));
            }
        }
        ready!(read)?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Earlier records first; while the socket does not take them, the caller keeps its
        // data (backpressure). Held records go out with this write instead (below).
        if !std::mem::take(&mut this.held) {
            ready!(this.poll_send_outgoing(cx))?;
        }
        if data.is_empty() {
            ready!(this.poll_send_outgoing(cx))?;
            return Poll::Ready(Ok(0));
        }
        if this.close_notify_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after TLS close_notify",
            )));
        }
        let data = &data[..data.len().min(WRITE_MAX)];
        Poll::Ready(SCRATCH.with_borrow_mut(|s| {
            s.output.clear();
            this.encrypt(&mut Want::Write(data), &mut s.output)?;
            this.send(s.output.filled(), cx)?;
            Ok(data.len())
        }))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.held = false;
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// close_notify, then the socket's half-close.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.held = false;
        if !this.close_notify_sent {
            this.close_notify_sent = true;
            let queued = SCRATCH.with_borrow_mut(|s| {
                s.output.clear();
                // A connection rustls has already failed has nothing to say.
                let _ = this.encrypt(&mut Want::CloseNotify, &mut s.output);
                this.send(s.output.filled(), cx)
            });
            queued?;
        }
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
