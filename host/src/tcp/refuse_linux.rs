//! A stop that refuses instead of resetting: a listening socket about to close for good
//! first stops taking new connections, so that its worker can accept and serve every
//! connection already in its queue before closing it.
//!
//! Closing a listening socket resets the connections waiting in its accept queue: the
//! kernel finished their handshakes, so their peers (a load balancer among them) took them
//! as accepted and may have sent a request already; they see the reset instead of an
//! answer, and cannot retry elsewhere. A socket has no "stop listening but keep the queue"
//! call, so the stop attaches a socket filter that drops new connection attempts (bare
//! SYNs; every other segment, handshakes in flight included, passes). A dropped SYN is
//! retransmitted by its peer (after 1 s), by when the socket is closed and the attempt is
//! refused: a load balancer tries another server.
//!
//! Only a full stop marks its sockets (a reloaded or recycled worker's socket stays open
//! for its successor, and so does a socket systemd holds): in process mode the arbiter
//! marks them before signalling its workers; in thread mode the worker, their last
//! holder, marks them itself ([`crate::worker`]). A worker that finds its listener marked
//! empties the queue before closing it ([`crate::tcp::accept`]).

// FFI boundary: attaching and reading a socket's classic-BPF filter.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use nix::libc;

/// The filter: drop a segment whose SYN is set and ACK clear (a new connection attempt),
/// pass anything else. A socket filter on TCP sees the segment from its TCP header on;
/// the flags are byte 13.
const DROP_NEW_CONNECTIONS: [libc::sock_filter; 5] = [
    // ldb [13]
    insn(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 13),
    // and #(SYN | ACK)
    insn(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, 0x12),
    // jeq #SYN: drop, else pass
    insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, 0x02),
    insn(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    insn(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
];

const fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Make the TCP listening socket `socket` take no new connections (their attempts are
/// dropped, then refused once it closes); connections already queued stay.
pub fn refuse_new_connections(socket: &impl AsRawFd) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: DROP_NEW_CONNECTIONS.len() as libc::c_ushort,
        filter: DROP_NEW_CONNECTIONS.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at a static program the kernel only reads (and copies); the
    // descriptor is borrowed for the call only.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `socket` has a filter attached: for a listener, that a stop marked it with
/// [`refuse_new_connections`] (sockhost attaches no other filter to listeners).
pub fn refuses_new_connections(socket: &impl AsRawFd) -> bool {
    // With a zero length the kernel answers the filter's length in instructions (0: none).
    let mut len: libc::socklen_t = 0;
    // SAFETY: a zero `len` asks only for the length, written to `len`; no buffer is read
    // or written; the descriptor is borrowed for the call only.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    rc == 0 && len > 0
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_marked_listener_keeps_its_queue_and_takes_no_new_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(!refuses_new_connections(&listener));
        let queued = TcpStream::connect(addr).unwrap();
        refuse_new_connections(&listener).unwrap();
        assert!(refuses_new_connections(&listener));
        // A new attempt is dropped: it neither connects nor is refused while we listen.
        let late = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(
            late.as_ref().is_err_and(
                |e| e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock
            ),
            "a new connection attempt was not dropped: {late:?}"
        );
        // The queued one is still there, and its traffic passes.
        let (mut accepted, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut &queued, b"x").unwrap();
        let mut b = [0u8; 1];
        std::io::Read::read_exact(&mut accepted, &mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}
