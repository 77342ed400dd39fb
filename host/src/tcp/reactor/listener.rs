//! Accepting connections as [`Socket`]s.

// FFI boundary: the listening socket's descriptor registered with tokio.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Socket;

/// A TCP listener whose connections are [`Socket`]s: accepted non-blocking in one system
/// call (`accept4`), never registered with tokio.
pub struct Listener {
    io: AsyncFd<std::net::TcpListener>,
}

impl Listener {
    pub fn new(listener: tokio::net::TcpListener) -> io::Result<Listener> {
        let listener = listener.into_std()?;
        // SAFETY: the descriptor is the listener's own, which the `AsyncFd` owns and never
        // replaces, so it stays open and the same for the `AsyncFd`'s lifetime.
        let io = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }?;
        Ok(Listener { io })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The next connection and its peer's address.
    pub async fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        let flags = nix::libc::SOCK_NONBLOCK | nix::libc::SOCK_CLOEXEC;
        let (socket, peer) = self
            .io
            .async_io(Interest::READABLE, |l| {
                socket2::SockRef::from(l).accept4(flags)
            })
            .await?;
        let peer = peer
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a connection with no IP address"))?;
        Ok((Socket::new(socket.into())?, peer))
    }

    /// A connection already in the accept queue, without waiting (`WouldBlock`: none).
    pub fn try_accept(&self) -> io::Result<(Socket, SocketAddr)> {
        let flags = nix::libc::SOCK_NONBLOCK | nix::libc::SOCK_CLOEXEC;
        let (socket, peer) = socket2::SockRef::from(self.io.get_ref()).accept4(flags)?;
        let peer = peer
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a connection with no IP address"))?;
        Ok((Socket::new(socket.into())?, peer))
    }

    /// Whether a stop marked this socket as closing for good
    /// ([`crate::tcp::refuse`]): its queue is then this worker's to empty.
    pub fn closing_for_good(&self) -> bool {
        crate::tcp::refuse::refuses_new_connections(self.io.get_ref())
    }

    /// Mark this socket as closing for good ([`crate::tcp::refuse`]).
    pub fn refuse_new_connections(&self) -> io::Result<()> {
        crate::tcp::refuse::refuse_new_connections(self.io.get_ref())
    }
}
