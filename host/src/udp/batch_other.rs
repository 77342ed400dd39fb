//! Outside Linux: one datagram per system call each way, with the same interface as
//! `batch_linux.rs` (a "batch" here is one datagram).

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::receive::{receive, Received};
use super::Datagram;

/// The receive buffer: larger than the largest UDP payload (65,507 bytes over IPv4, 65,527
/// over IPv6), so truncation means a jumbogram.
const RECV_BUFFER: usize = 65_536;

/// Receives one datagram per call into one buffer.
pub struct Receiver {
    buf: Box<[MaybeUninit<u8>]>,
    last: Option<Received>,
}

impl Receiver {
    pub fn new() -> io::Result<Receiver> {
        Ok(Receiver {
            buf: vec![MaybeUninit::uninit(); RECV_BUFFER].into_boxed_slice(),
            last: None,
        })
    }

    /// How many datagrams one call can receive.
    pub fn slots(&self) -> usize {
        1
    }

    /// The size of the buffer: a longer datagram is reported truncated.
    pub fn slot_len(&self) -> usize {
        self.buf.len()
    }

    /// Receive one waiting datagram (if `max` > 0): `Ok(1)`, or `Ok(0)` when none is.
    pub fn receive(&mut self, socket: &UdpSocket, max: usize) -> io::Result<usize> {
        self.last = None;
        if max == 0 {
            return Ok(0);
        }
        match receive(socket, &mut self.buf) {
            Received::Nothing => Ok(0),
            Received::Error(e) => Err(e),
            got => {
                self.last = Some(got);
                Ok(1)
            }
        }
    }

    /// The datagram of the last [`receive`](Receiver::receive) (`i` is 0).
    #[allow(unsafe_code)] // FFI boundary: the buffer the kernel fills (recvmsg).
    pub fn datagram(&self, i: usize) -> Datagram<'_> {
        debug_assert_eq!(i, 0);
        match self.last {
            Some(Received::Datagram(peer, len)) => {
                // SAFETY: `receive` saw the kernel initialise the first `len` bytes.
                let data =
                    unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), len) };
                Datagram::Whole(peer, data)
            }
            Some(Received::Truncated(peer, len)) => Datagram::Truncated(peer, len),
            _ => Datagram::Unaddressed,
        }
    }

    /// Nothing to give back: the one buffer stays.
    pub fn release(&mut self) {}
}

/// Sends queued datagrams one per system call.
#[derive(Default)]
pub struct Sender;

impl Sender {
    /// The most datagrams [`send`](Sender::send) takes at once.
    pub const MAX: usize = 1;

    /// Send the first datagram: `Ok(1)`; `WouldBlock` for a full send buffer (write
    /// readiness is cleared then), another error if it failed otherwise.
    pub fn send<'a>(
        &mut self,
        socket: &UdpSocket,
        mut datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    ) -> io::Result<usize> {
        match datagrams.next() {
            Some((peer, data)) => socket.try_send_to(data, peer).map(|_| 1),
            None => Ok(0),
        }
    }
}
