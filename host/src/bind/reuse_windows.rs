//! Address reuse on Windows. `SO_REUSEADDR` there lets another process bind a port we
//! listen on and steal its traffic, so it is never set; every socket sets
//! `SO_EXCLUSIVEADDRUSE` instead (no other socket may bind our address at all, and a
//! restart can still bind while old connections linger in TIME_WAIT). There are no
//! `SO_REUSEPORT` groups: Windows serves in thread mode only.

// FFI boundary: SO_EXCLUSIVEADDRUSE through Winsock's setsockopt (socket2 has no call for it).
#![allow(unsafe_code)]

use std::io;
use std::os::windows::io::AsRawSocket;

use socket2::Socket;
use windows_sys::Win32::Networking::WinSock::{setsockopt, SOL_SOCKET, SO_EXCLUSIVEADDRUSE};

use super::SocketKind;

/// `WSAEAFNOSUPPORT`: this machine has no such address family (no IPv6).
pub const NO_ADDRESS_FAMILY: i32 = 10047;

/// Set the reuse options of a socket about to be bound.
pub fn set_reuse(socket: &Socket, _transport: SocketKind, reuseport: bool) -> io::Result<()> {
    if reuseport {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT worker groups are Unix-only (use --concurrency thread)",
        ));
    }
    let on: i32 = 1;
    // SAFETY: FFI call on a socket we own, with a pointer to a live i32 and its size.
    let rc = unsafe {
        setsockopt(
            socket.as_raw_socket() as _,
            SOL_SOCKET,
            SO_EXCLUSIVEADDRUSE,
            (&on as *const i32).cast(),
            std::mem::size_of::<i32>() as i32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
