//! The ticket secrets of the current epoch and the one before, in memory that every
//! worker process shares with the arbiter (a `MAP_SHARED` mapping made before the first
//! fork), so that the arbiter's rotation reaches workers already running.
//!
//! One writer (the arbiter; in thread mode the process itself) and any number of readers,
//! in several processes: a sequence lock over atomics — the writer makes the sequence odd,
//! writes, makes it even again; a reader retries while it is odd or has changed.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// One epoch's secret.
pub type Secret = [u8; 32];

/// Reads retried this many times (a write takes nanoseconds) before giving up: a writer
/// that died mid-write must not hang its readers.
const READ_TRIES: u32 = 10_000;

/// The shared record; all-zero bytes are a valid, empty one.
#[repr(C)]
#[derive(Default)]
pub struct Secrets {
    /// Odd while the writer writes.
    seq: AtomicU64,
    /// 0 before the first secret; one more at each rotation.
    epoch: AtomicU64,
    current: [AtomicU64; 4],
    previous: [AtomicU64; 4],
}

/// A consistent copy of [`Secrets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub epoch: u64,
    pub current: Secret,
    /// The secret of `epoch - 1`, if there was one.
    pub previous: Option<Secret>,
}

impl Secrets {
    /// A consistent copy; `None` before the first secret, or if the writer never finishes.
    pub fn read(&self) -> Option<Snapshot> {
        for _ in 0..READ_TRIES {
            let seq = self.seq.load(Ordering::Acquire);
            if seq % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let epoch = self.epoch.load(Ordering::Relaxed);
            let current = load(&self.current);
            let previous = load(&self.previous);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == seq {
                return (epoch > 0).then_some(Snapshot {
                    epoch,
                    current,
                    previous: (epoch > 1).then_some(previous),
                });
            }
        }
        None
    }

    /// Begin the next epoch with `fresh`; the current secret becomes the previous one, and
    /// the one before is overwritten. Only the one writer calls this.
    pub fn rotate(&self, fresh: &Secret) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let current = load(&self.current);
        store(&self.previous, &current);
        store(&self.current, fresh);
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

/// The epoch only: never the secrets.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn load(words: &[AtomicU64; 4]) -> Secret {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
    }
    out
}

fn store(words: &[AtomicU64; 4], secret: &Secret) {
    for (chunk, word) in secret.chunks_exact(8).zip(words) {
        word.store(
            u64::from_ne_bytes(chunk.try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_count_up_and_keep_one_previous_secret() {
        let s = Secrets::default();
        assert_eq!(s.read(), None, "no secret yet");
        s.rotate(&[1; 32]);
        assert_eq!(
            s.read(),
            Some(Snapshot {
                epoch: 1,
                current: [1; 32],
                previous: None
            })
        );
        s.rotate(&[2; 32]);
        s.rotate(&[3; 32]);
        assert_eq!(
            s.read(),
            Some(Snapshot {
                epoch: 3,
                current: [3; 32],
                previous: Some([2; 32])
            })
        );
    }

    #[test]
    fn a_reader_gives_up_on_a_writer_that_never_finishes() {
        let s = Secrets::default();
        s.rotate(&[1; 32]);
        s.seq.fetch_add(1, Ordering::Relaxed); // as if a writer died mid-write
        assert_eq!(s.read(), None);
    }
}
