//! The replies of one UDP socket waiting to be sent, in the order the consumers wrote them.
//!
//! The server queues every datagram its consumers write while it handles a batch of received
//! ones (or a round of host-service work) and sends the queue at the end with as few system
//! calls as the platform allows (`sendmmsg` on Linux: up to 32 datagrams per call). Replies
//! to one peer therefore leave in the order they were written, and so do replies to
//! different peers.
//!
//! **A full send buffer.** When the kernel takes only part of the queue (`EAGAIN`), the rest
//! stays queued, the server stops receiving, and it sends the rest when the socket is
//! writable again: nothing already queued is dropped for a full buffer. Meanwhile new
//! datagrams queue behind it (only host services' timers and posts can write then, since
//! nothing is received) up to [`LIMIT`] bytes; beyond that a new datagram is dropped, as the
//! network may drop it, with a debug log line. Received datagrams wait in the socket's
//! receive buffer meanwhile, where the kernel drops what does not fit, as UDP does. A
//! datagram the kernel refuses for another reason (too large, no route) is dropped with a
//! debug log line and the rest go on.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::batch::Sender;

/// Queued bytes at which the server sends at once rather than at the end of its batch, so a
/// batch of consumers that write a lot does not hold it all.
pub const FLUSH_AT: usize = 256 * 1024;
/// Queued bytes beyond which, while the socket cannot send, new datagrams are dropped.
pub const LIMIT: usize = 1024 * 1024;

/// Datagrams waiting to be sent (see the module comment).
#[derive(Default)]
pub struct Outbox {
    /// The queued datagrams' bytes, back to back.
    bytes: Vec<u8>,
    /// Per datagram: its peer and where its bytes end in `bytes`.
    queued: Vec<(SocketAddr, usize)>,
    /// The first datagram not sent yet.
    head: usize,
    /// Whether the kernel last refused for a full send buffer (wait for writability).
    blocked: bool,
    sender: Sender,
}

impl Outbox {
    /// Queue one datagram to `peer`; `false` if it was dropped (see [`LIMIT`]).
    pub fn push(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool {
        if self.blocked && self.bytes.len() - self.sent_bytes() + datagram.len() > LIMIT {
            tracing::debug!(%peer, "udp send buffer full; datagram dropped");
            return false;
        }
        self.bytes.extend_from_slice(datagram);
        self.queued.push((peer, self.bytes.len()));
        true
    }

    /// Whether enough is queued to send before the batch ends.
    pub fn is_full(&self) -> bool {
        !self.blocked && self.bytes.len() >= FLUSH_AT
    }

    /// Whether queued datagrams wait for the socket to become writable.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Send what is queued until it is all sent or the send buffer is full.
    pub fn flush(&mut self, socket: &UdpSocket) {
        self.blocked = false;
        while self.head < self.queued.len() {
            let mut start = self.sent_bytes();
            let batch = self.queued[self.head..].iter().map(|&(peer, end)| {
                let datagram = &self.bytes[start..end];
                start = end;
                (peer, datagram)
            });
            match self.sender.send(socket, batch) {
                // (Never 0 for a batch that is not empty; `max` keeps the loop finite anyway.)
                Ok(sent) => self.head += sent.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return;
                }
                Err(e) => {
                    let (peer, _) = self.queued[self.head];
                    tracing::debug!(%peer, "udp send: {e}");
                    self.head += 1;
                }
            }
        }
        self.head = 0;
        self.queued.clear();
        self.bytes.clear();
        if self.bytes.capacity() > 2 * FLUSH_AT {
            self.bytes = Vec::new();
        }
    }

    /// Bytes of the datagrams already sent (the start of the first unsent one).
    fn sent_bytes(&self) -> usize {
        match self.head {
            0 => 0,
            h => self.queued[h - 1].1,
        }
    }
}
