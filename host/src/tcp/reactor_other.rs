//! Accepted TCP connections outside Linux: tokio's own registration per connection (the
//! worker's `epoll` set of `reactor.rs`, which makes an idle connection smaller, is Linux
//! only). Same interface: [`Listener`] accepts [`Socket`]s.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// An accepted TCP connection (boxed: a connection's footprint stays within the size the
/// Linux build holds it to).
pub struct Socket(Box<TcpStream>);

impl Socket {
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.set_nodelay(on)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections are [`Socket`]s.
pub struct Listener(TcpListener);

impl Listener {
    pub fn new(listener: TcpListener) -> io::Result<Listener> {
        Ok(Listener(listener))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// The next connection and its peer's address.
    pub async fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((Socket(Box::new(stream)), peer))
    }

    /// Connections are only accepted by [`Listener::accept`] here.
    pub fn try_accept(&self) -> io::Result<(Socket, SocketAddr)> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Stops do not mark sockets outside Linux.
    pub fn closing_for_good(&self) -> bool {
        false
    }

    /// No socket filters outside Linux: a stop closes the socket, resetting its queue.
    pub fn refuse_new_connections(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}
