//! Linux: datagrams in batches, with `recvmmsg` and `sendmmsg` — one system call for up to
//! [`SLOTS`] datagrams each way instead of one per datagram. Every socket-level `unsafe` of
//! the UDP server is here.
//!
//! **Receiving.** [`Receiver`] keeps [`SLOTS`] slots, each large enough for the largest UDP
//! payload, so any datagram up to 65,536 bytes arrives whole in one call. The slots are one
//! anonymous private mapping (32 × 64 KiB = 2 MiB of address space per socket), which the
//! kernel backs with memory only where it writes: a datagram of `n` bytes makes
//! `ceil(n / 4 KiB)` pages of its slot resident. With datagrams up to 4 KiB a socket holds at
//! most 32 pages (128 KiB) — the one 64 KiB buffer it replaced held 4 KiB to 64 KiB. After
//! larger datagrams [`Receiver::release`] (called from the server's once-a-tick sweep) gives
//! the pages back with one `madvise(MADV_DONTNEED)`, so a burst of jumbo datagrams costs at
//! most 2 MiB per socket until the next tick. Slots of the real maximum size were chosen over
//! small slots sharing one overflow buffer: with the latter, two large datagrams in one batch
//! would overwrite each other, and a datagram cannot be received twice.
//!
//! Each datagram is received with `MSG_TRUNC`, so the kernel reports its real length and sets
//! `MSG_TRUNC` in that datagram's own `msg_flags` when it did not fit: truncation is still
//! detected per datagram (only an IPv6 jumbogram can be larger than a slot).
//!
//! **Sending.** [`Sender`] hands up to [`SLOTS`] queued replies to one `sendmmsg`. The kernel
//! sends them in order and stops at the first it cannot send; the caller (`Outbox`) keeps the
//! rest queued (see there for a full send buffer).

// FFI boundary: recvmmsg, sendmmsg and the mapping their buffers live in.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::ptr;

use nix::libc;
use socket2::SockAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::Datagram;
use crate::bind::canonical;

/// Datagrams per system call, each way.
pub const SLOTS: usize = 32;
/// A receive slot: larger than the largest UDP payload (65,507 bytes over IPv4, 65,527 over
/// IPv6), so truncation means a jumbogram.
pub const SLOT_LEN: usize = 65_536;
/// A datagram longer than this touched more than the first page of its slot.
const PAGE: usize = 4096;

/// Receives up to [`SLOTS`] datagrams per `recvmmsg` (see the module comment).
pub struct Receiver {
    slots: Slots,
    /// One header per slot, pointing at its iovec and its address. Boxed slices, so the
    /// pointers stay valid when the `Receiver` moves.
    headers: Box<[libc::mmsghdr]>,
    _iovecs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    /// What the last call received: per slot, the sender and the datagram's real length.
    received: Vec<(Option<SocketAddr>, usize, bool)>,
    /// Whether a datagram since the last [`release`](Receiver::release) went past its
    /// slot's first page.
    deep: bool,
}

impl Receiver {
    /// [`SLOTS`] slots of [`SLOT_LEN`] bytes.
    pub fn new() -> io::Result<Receiver> {
        Receiver::with_slots(SLOTS, SLOT_LEN)
    }

    /// `count` slots of `len` bytes each (the tests use small ones to see truncation).
    pub fn with_slots(count: usize, len: usize) -> io::Result<Receiver> {
        let slots = Slots::map(count, len)?;
        let mut iovecs: Box<[libc::iovec]> = (0..count)
            .map(|i| libc::iovec {
                iov_base: slots.slot_ptr(i).cast(),
                iov_len: len,
            })
            .collect();
        // SAFETY: `sockaddr_storage` is plain integers; all zeros is a valid value.
        let mut names: Box<[libc::sockaddr_storage]> =
            (0..count).map(|_| unsafe { zeroed() }).collect();
        let headers = (0..count)
            .map(|i| {
                // SAFETY: `mmsghdr` is plain integers and pointers; all zeros (null pointers,
                // zero lengths) is a valid value.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_iov = &mut iovecs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                h
            })
            .collect();
        Ok(Receiver {
            slots,
            headers,
            _iovecs: iovecs,
            names,
            received: Vec::with_capacity(count),
            deep: false,
        })
    }

    /// How many datagrams one call can receive.
    pub fn slots(&self) -> usize {
        self.headers.len()
    }

    /// The size of a slot: a longer datagram is reported truncated.
    pub fn slot_len(&self) -> usize {
        self.slots.len
    }

    /// Receive what is waiting, up to `max` datagrams (and at most one per slot), without
    /// blocking; `Ok(0)` when nothing is. Fewer than asked for means the socket's queue is
    /// empty, and its readiness is cleared then (no second call to find that out): the
    /// kernel only stops a non-blocking `recvmmsg` early at `EAGAIN` or an error, and an
    /// unconnected UDP socket without `IP_RECVERR` (ours) is not given asynchronous errors.
    pub fn receive(&mut self, socket: &UdpSocket, max: usize) -> io::Result<usize> {
        let want = max.min(self.headers.len());
        self.received.clear();
        if want == 0 {
            return Ok(0);
        }
        for h in &mut self.headers[..want] {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let fd = socket.as_raw_fd();
        let headers = &mut self.headers;
        let mut got = 0;
        let result = socket.try_io(Interest::READABLE, || {
            // SAFETY: `headers[..want]` are initialised `mmsghdr`s whose iovecs point into
            // `self.slots` (mapped, `iov_len` bytes each, written only by the kernel here) and
            // whose names point at `self.names` (as large as `msg_namelen` says); all of them
            // live in `self` and outlive the call, and nothing else uses them meanwhile.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    headers.as_mut_ptr(),
                    want as libc::c_uint,
                    libc::MSG_TRUNC,
                    ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            got = n as usize;
            if got < want {
                // Drained: let tokio clear the readiness (see above).
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match result {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        for i in 0..got {
            let h = &self.headers[i];
            let len = h.msg_len as usize;
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.slots.len;
            self.deep |= len > PAGE;
            let peer = peer_of(&self.names[i], h.msg_hdr.msg_namelen).map(canonical);
            self.received.push((peer, len, truncated));
        }
        Ok(got)
    }

    /// The `i`-th datagram of the last [`receive`](Receiver::receive).
    pub fn datagram(&self, i: usize) -> Datagram<'_> {
        let (peer, len, truncated) = self.received[i];
        match peer {
            None => Datagram::Unaddressed,
            Some(peer) if truncated => Datagram::Truncated(peer, len),
            // SAFETY: slot `i` is mapped for `slots.len` bytes, of which the kernel wrote the
            // first `len` (≤ `slots.len`, or it would be truncated) in the last call; the rest
            // of a mapping reads as zeros, never as uninitialised memory.
            Some(peer) => Datagram::Whole(peer, unsafe {
                std::slice::from_raw_parts(self.slots.slot_ptr(i), len)
            }),
        }
    }

    /// Give back the pages that datagrams larger than a page made resident since the last
    /// call (one `madvise`, only if there were any); the slots stay mapped.
    pub fn release(&mut self) {
        if std::mem::take(&mut self.deep) {
            self.slots.release();
        }
    }
}

/// The sender's address as the kernel wrote it (`None` for a non-IP address).
fn peer_of(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which it is large
            // and aligned enough for.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, a `sockaddr_in6`.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The receive slots: one anonymous private mapping of `count × len` bytes.
struct Slots {
    base: *mut u8,
    count: usize,
    len: usize,
}

impl Slots {
    fn map(count: usize, len: usize) -> io::Result<Slots> {
        let bytes = count.checked_mul(len).filter(|b| *b > 0).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "udp receive slots: bad size")
        })?;
        // SAFETY: a new anonymous mapping, not fixed: it cannot overlap memory in use.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Slots {
            base: base.cast(),
            count,
            len,
        })
    }

    fn slot_ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.count);
        // SAFETY: `i < count`, so the offset stays inside the mapping.
        unsafe { self.base.add(i * self.len) }
    }

    fn release(&self) {
        // SAFETY: the range is exactly our private anonymous mapping; `MADV_DONTNEED` only
        // drops its pages (they read as zeros again), and no slice into it outlives the
        // `&mut Receiver` that calls this.
        let done =
            unsafe { libc::madvise(self.base.cast(), self.count * self.len, libc::MADV_DONTNEED) };
        if done != 0 {
            tracing::debug!(
                "udp: madvise(MADV_DONTNEED) on the receive slots: {}",
                io::Error::last_os_error()
            );
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which nothing uses any more.
        unsafe { libc::munmap(self.base.cast(), self.count * self.len) };
    }
}

/// Sends queued datagrams with `sendmmsg` (see the module comment).
#[derive(Default)]
pub struct Sender {
    /// Rebuilt for every call (their pointers are only valid during it); kept for their
    /// capacity.
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<SockAddr>,
}

impl Sender {
    /// The most datagrams [`send`](Sender::send) takes at once.
    pub const MAX: usize = SLOTS;

    /// Send the datagrams in order, at most [`Sender::MAX`]: how many went, at least one;
    /// `WouldBlock` if the first could not be sent for a full send buffer (write readiness
    /// is cleared then), another error if the first failed otherwise.
    pub fn send<'a>(
        &mut self,
        socket: &UdpSocket,
        datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    ) -> io::Result<usize> {
        self.names.clear();
        self.iovecs.clear();
        self.headers.clear();
        for (peer, data) in datagrams.take(Self::MAX) {
            self.names.push(SockAddr::from(peer));
            self.iovecs.push(libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: data.len(),
            });
        }
        // The pointers are taken once both vectors are full, so no push moves them.
        for (name, iovec) in self.names.iter().zip(self.iovecs.iter_mut()) {
            // SAFETY: `mmsghdr` is plain integers and pointers; all zeros is a valid value.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_namelen = name.len();
            h.msg_hdr.msg_iov = iovec;
            h.msg_hdr.msg_iovlen = 1;
            self.headers.push(h);
        }
        if self.headers.is_empty() {
            return Ok(0);
        }
        let fd = socket.as_raw_fd();
        let headers = &mut self.headers;
        socket.try_io(Interest::WRITABLE, || {
            // SAFETY: every header points at an address in `self.names` and an iovec in
            // `self.iovecs`, which point at the caller's datagrams; all are borrowed for this
            // call and unchanged during it, and `sendmmsg` only reads them (and writes each
            // header's `msg_len`).
            let n = unsafe {
                libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, 0)
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }
}

// A module loaded by `path` (this one, by platform) finds its children beside it, so the
// path names the directory.
#[cfg(test)]
#[path = "batch_linux/tests.rs"]
mod tests;
