//! What steering asks of the kernel: attach a program to a group, whether a shut-down
//! listener's queue moves to its group, and how many connections wait in a queue.

// FFI boundary: attaching the classic-BPF steering program to the sockets.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use nix::libc;

use super::bpf::Insn;

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the libc crate does not define it).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attach `program` to the SO_REUSEPORT group `socket` belongs to (replacing the group's
/// previous program).
pub fn attach(socket: &impl AsRawFd, program: &[Insn]) -> std::io::Result<()> {
    let mut filters: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filters.len() as libc::c_ushort,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `filters`, which outlives the call; the kernel copies the
    // program and validates it; the descriptor is borrowed for the call only.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether shutting a listening socket down moves its queued connections to the other
/// listeners of its SO_REUSEPORT group (`net.ipv4.tcp_migrate_req`, per network namespace,
/// Linux ≥ 5.14) rather than resetting them.
pub fn kernel_migrates_queues() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

/// How many established connections wait in a TCP listener's accept queue (0 if unknown).
pub fn queued(listener: &impl AsRawFd) -> u32 {
    // SAFETY: `tcp_info` is plain data, valid zeroed; the kernel writes at most `len` bytes.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        // For a listener the kernel reports its accept queue's length as `unacked`.
        if rc == 0 {
            info.tcpi_unacked
        } else {
            0
        }
    }
}
