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
//! debug log line and the rest go on. What still waits for a full send buffer when the
//! worker stops is dropped with the server.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::batch::Sender;

/// Queued bytes at which the server sends at once rather than at the end of its batch, so a
/// batch of consumers that write a lot does not hold it all.
pub const FLUSH_AT: usize = 256 * 1024;
/// The queue's buffer is cut back to this once sent.
const KEEP: usize = 64 * 1024;
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
        let mut sender = std::mem::take(&mut self.sender);
        self.flush_with(|batch| sender.send(socket, batch));
        self.sender = sender;
    }

    /// [`flush`](Outbox::flush) through `send`, which sends datagrams from the front of the
    /// batch it is given and says how many, as `Sender::send` does.
    fn flush_with(
        &mut self,
        mut send: impl FnMut(&mut dyn Iterator<Item = (SocketAddr, &[u8])>) -> io::Result<usize>,
    ) {
        self.blocked = false;
        while self.head < self.queued.len() {
            let mut start = self.sent_bytes();
            let mut batch = self.queued[self.head..].iter().map(|&(peer, end)| {
                let datagram = &self.bytes[start..end];
                start = end;
                (peer, datagram)
            });
            match send(&mut batch) {
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
        // Large datagrams grew it: give that back (a batch of 32 replies of 1,400 bytes fits).
        self.bytes.shrink_to(KEEP);
    }

    /// Bytes of the datagrams already sent (the start of the first unsent one).
    fn sent_bytes(&self) -> usize {
        match self.head {
            0 => 0,
            h => self.queued[h - 1].1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A send that answers with `results` in turn (`Ok(n)`: sends up to `n` datagrams), then
    /// sends everything; what it sent goes to `sent`.
    fn sending<'a>(
        sent: &'a mut Vec<(SocketAddr, Vec<u8>)>,
        mut results: Vec<io::Result<usize>>,
    ) -> impl FnMut(&mut dyn Iterator<Item = (SocketAddr, &[u8])>) -> io::Result<usize> + 'a {
        results.reverse();
        move |batch| {
            let result = results.pop().unwrap_or(Ok(usize::MAX));
            if let Ok(n) = result {
                let before = sent.len();
                sent.extend(batch.take(n).map(|(p, d)| (p, d.to_vec())));
                return Ok(sent.len() - before);
            }
            result
        }
    }

    #[test]
    fn a_full_send_buffer_keeps_the_rest_in_order_until_writable() {
        let mut outbox = Outbox::default();
        for i in 0..5u8 {
            assert!(outbox.push(peer(1 + u16::from(i % 2)), &[i; 3]));
        }
        let mut sent = Vec::new();
        // The kernel takes two, then its buffer is full.
        outbox.flush_with(sending(
            &mut sent,
            vec![Ok(2), Err(io::ErrorKind::WouldBlock.into())],
        ));
        assert!(outbox.is_blocked());
        assert_eq!(sent.len(), 2);
        assert!(outbox.push(peer(1), &[9; 3]), "queued behind the rest");
        // Writable again: everything else goes, in the order written.
        outbox.flush_with(sending(&mut sent, vec![]));
        assert!(!outbox.is_blocked());
        let order: Vec<(u16, u8)> = sent.iter().map(|(p, d)| (p.port(), d[0])).collect();
        assert_eq!(order, [(1, 0), (2, 1), (1, 2), (2, 3), (1, 4), (1, 9)]);
        assert!(outbox.queued.is_empty() && outbox.bytes.is_empty());
    }

    #[test]
    fn a_datagram_the_kernel_refuses_is_dropped_and_the_rest_go() {
        let mut outbox = Outbox::default();
        for i in 0..3u8 {
            outbox.push(peer(1), &[i]);
        }
        let mut sent = Vec::new();
        let refused = io::Error::other("message too long");
        outbox.flush_with(sending(&mut sent, vec![Ok(1), Err(refused)]));
        assert!(!outbox.is_blocked());
        let data: Vec<u8> = sent.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(data, [0, 2]);
    }

    #[test]
    fn while_blocked_the_queue_is_bounded() {
        let mut outbox = Outbox::default();
        outbox.push(peer(1), &[0; 1000]);
        let mut sent = Vec::new();
        outbox.flush_with(sending(
            &mut sent,
            vec![Err(io::ErrorKind::WouldBlock.into())],
        ));
        let big = vec![1u8; 60_000];
        let mut accepted = 0;
        while outbox.push(peer(1), &big) {
            accepted += 1;
            assert!(accepted < 100, "the queue never refuses");
        }
        assert!(
            outbox.bytes.len() <= LIMIT,
            "{} bytes queued",
            outbox.bytes.len()
        );
        assert_eq!(accepted, (LIMIT - 1000) / big.len());
    }
}
