//! Receiving a datagram on Windows, where a datagram that did not fit fails with
//! `WSAEMSGSIZE` (socket2 reports it as a truncated receive). Windows does not say how long
//! the datagram really was.

use std::io;
use std::mem::MaybeUninit;

use socket2::{MaybeUninitSlice, SockAddr, SockRef};

/// Receive one datagram into `buf`; a length above `buf.len()` means it was truncated (on
/// Windows always `buf.len() + 1`: the real length is unknown).
pub fn recv_from(
    socket: SockRef<'_>,
    buf: &mut [MaybeUninit<u8>],
) -> io::Result<(usize, SockAddr)> {
    let capacity = buf.len();
    let (len, flags, from) = socket.recv_from_vectored(&mut [MaybeUninitSlice::new(buf)])?;
    Ok((
        if flags.is_truncated() {
            capacity + 1
        } else {
            len
        },
        from,
    ))
}
