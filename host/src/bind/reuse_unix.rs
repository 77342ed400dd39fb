//! Address reuse on Unix: TCP listeners set `SO_REUSEADDR` (a restart can bind while old
//! connections linger in TIME_WAIT; Unix never lets it steal a port another socket
//! listens on), and process mode's worker groups set `SO_REUSEPORT`.

use std::io;

use socket2::Socket;

use super::SocketKind;

/// `EAFNOSUPPORT`: this machine has no such address family (no IPv6).
pub const NO_ADDRESS_FAMILY: i32 = nix::libc::EAFNOSUPPORT;

/// Set the reuse options of a socket about to be bound.
pub fn set_reuse(socket: &Socket, transport: SocketKind, reuseport: bool) -> io::Result<()> {
    if transport == SocketKind::Tcp {
        socket.set_reuse_address(true)?;
    }
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    Ok(())
}
