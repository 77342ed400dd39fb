//! The worker thread's TLS buffers: one receive buffer and one output buffer shared by
//! every TLS connection of the thread and borrowed only inside one poll, so that a
//! connection keeps bytes of its own only while something is left over.

use std::cell::RefCell;

/// The shared receive buffer's size: rustls reassembles a handshake message of up to 64 KiB
/// in place, and a whole record (16 KiB and its overhead) may follow it.
pub(super) const INPUT_MAX: usize = 96 * 1024;
/// Bytes read from the socket at once: records whose plaintext fits the connection
/// driver's 64 KiB read buffer, so that one read is decrypted straight into it.
pub(super) const READ_MAX: usize = 64 * 1024;
/// The largest TLS record on the wire: 16 KiB of payload, TLS 1.3's 256 bytes of expansion
/// and the 5-byte header.
pub(super) const RECORD_MAX: usize = 16 * 1024 + 256 + 5;
/// Plaintext encrypted per `poll_write`: four full records.
pub(super) const WRITE_MAX: usize = 64 * 1024;

/// A byte buffer kept at its full length (zeroed once) with marks for the filled part
/// (`start..len`), so that reading, decrypting or encrypting into it costs no zeroing, and
/// taking bytes from its front no copy.
#[derive(Default)]
pub(super) struct Bytes {
    data: Vec<u8>,
    start: usize,
    pub(super) len: usize,
}

impl Bytes {
    pub(super) fn filled(&self) -> &[u8] {
        &self.data[self.start..self.len]
    }

    pub(super) fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.len]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.len
    }

    pub(super) fn clear(&mut self) {
        self.start = 0;
        self.len = 0;
    }

    /// The unfilled part, at least `n` bytes long; the filled part moves to the front
    /// first if that makes room.
    pub(super) fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.data.len() - self.len < n.max(1) && self.start > 0 {
            self.data.copy_within(self.start..self.len, 0);
            self.len -= self.start;
            self.start = 0;
        }
        if self.data.len() < self.len + n {
            self.data.resize(self.len + n, 0);
        }
        &mut self.data[self.len..]
    }

    pub(super) fn append(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Take the first `n` filled bytes away.
    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.len {
            self.clear();
        }
    }
}

/// The worker thread's TLS buffers, borrowed only inside one poll.
pub(super) struct Scratch {
    /// Received records: the connection's unfinished bytes, then what the socket gave.
    pub(super) input: Bytes,
    /// Records encoded or encrypted by this poll, to be written.
    pub(super) output: Bytes,
}

thread_local! {
    pub(super) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        input: Bytes { data: vec![0; INPUT_MAX], start: 0, len: 0 },
        output: Bytes::default(),
    });
}

#[cfg(test)]
mod tests {
    use super::Bytes;

    #[test]
    fn bytes_take_from_the_front_and_compact_when_short_of_room() {
        let mut b = Bytes {
            data: vec![0; 8],
            start: 0,
            len: 0,
        };
        b.append(b"abcdef");
        b.consume(4);
        assert_eq!(b.filled(), b"ef");
        // 2 bytes free at the end, 4 wanted: "ef" moves to the front, nothing grows.
        assert_eq!(b.spare(4).len(), 6);
        assert_eq!(b.filled(), b"ef");
        assert_eq!(b.data.len(), 8);
        b.consume(2);
        assert!(b.is_empty());
        assert_eq!((b.start, b.len), (0, 0));
    }
}
