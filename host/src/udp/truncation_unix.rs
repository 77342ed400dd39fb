//! Receiving a datagram on Unix with `MSG_TRUNC`, which makes the kernel report its real
//! length even when it did not fit.

use std::io;
use std::mem::MaybeUninit;

use socket2::{SockAddr, SockRef};

/// Receive one datagram into `buf`; a length above `buf.len()` means it was truncated
/// (and is the datagram's real length).
pub fn recv_from(
    socket: SockRef<'_>,
    buf: &mut [MaybeUninit<u8>],
) -> io::Result<(usize, SockAddr)> {
    socket.recv_from_with_flags(buf, nix::libc::MSG_TRUNC)
}
