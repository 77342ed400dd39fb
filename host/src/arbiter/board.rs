//! The board: a page of shared memory, mapped before any fork, where each worker posts
//! its heartbeat and counters without a system call. The arbiter reads it to find stuck
//! workers (`--timeout`) and to report per-worker figures.

// Fork boundary: the shared-memory board, mapped before fork and written by both sides.
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::time::{clock_gettime, ClockId};

use crate::config::MAX_SERVICES;
use crate::metrics::{Counters, COUNTERS};

/// One worker's posted figures (named apart from `std::cell::Cell`: it is a cell of the
/// board, shared between processes, not an interior-mutability type).
#[repr(C)]
pub struct WorkerCell {
    /// CLOCK_MONOTONIC milliseconds of the last heartbeat from inside the event loop.
    pub heartbeat_ms: AtomicU64,
    /// Bumped by the arbiter on USR1: the worker reopens its access log when it sees a
    /// value it has not acted on (0 at start).
    pub reopen: AtomicU64,
    /// The worker's [`Counters`] per service, in [`Counters::to_array`] order (2 KiB; only
    /// the cells of live workers are ever touched, so only their pages are resident).
    counters: [[AtomicU64; COUNTERS]; MAX_SERVICES],
}

impl WorkerCell {
    /// Start a worker's cell fresh: counters at zero, heartbeat now.
    pub fn reset(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        self.reopen.store(0, Ordering::Relaxed);
        self.post(&[Counters::default(); MAX_SERVICES]);
    }

    /// Post the worker's figures, one [`Counters`] per service (from the worker).
    pub fn post(&self, per_service: &[Counters]) {
        for (cells, counters) in self.counters.iter().zip(per_service) {
            for (slot, value) in cells.iter().zip(counters.to_array()) {
                slot.store(value, Ordering::Relaxed);
            }
        }
    }

    /// The last posted figures of service `service` (from the arbiter).
    pub fn counters(&self, service: usize) -> Counters {
        Counters::from_array(std::array::from_fn(|i| {
            self.counters[service][i].load(Ordering::Relaxed)
        }))
    }
}

/// A fixed array of [`WorkerCell`]s in `MAP_SHARED` memory, inherited by every forked worker.
pub struct Board {
    cells: NonNull<WorkerCell>,
    len: usize,
}

impl Board {
    /// Map room for `len` workers (live and retiring together).
    pub fn new(len: usize) -> io::Result<Board> {
        let bytes =
            NonZeroUsize::new(len * std::mem::size_of::<WorkerCell>()).expect("non-empty board");
        // SAFETY: a fresh anonymous mapping aliases nothing; zeroed memory is a valid array of
        // `WorkerCell` (all atomics at 0).
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(Board {
            cells: ptr.cast(),
            len,
        })
    }

    /// Cell `i`.
    pub fn cell(&self, i: usize) -> &WorkerCell {
        assert!(i < self.len, "board cell {i} out of range");
        // SAFETY: in bounds; the mapping lives as long as `self`; `WorkerCell` holds only atomics,
        // so shared access across processes is sound.
        unsafe { &*self.cells.as_ptr().add(i) }
    }

    /// How many cells.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length and is unmapped once.
        let _ = unsafe {
            munmap(
                self.cells.cast(),
                self.len * std::mem::size_of::<WorkerCell>(),
            )
        };
    }
}

/// CLOCK_MONOTONIC in milliseconds: the same clock in every process of the machine.
pub fn now_ms() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counter;

    #[test]
    fn cells_start_at_zero_and_reset_stamps_now() {
        let board = Board::new(4).unwrap();
        assert_eq!(board.cell(3).counters(0), Counters::default());
        let mut seven = Counters::default();
        seven[Counter::Accepted] = 7;
        board.cell(3).post(&[Counters::default(), seven]);
        assert_eq!(board.cell(3).counters(1)[Counter::Accepted], 7);
        assert_eq!(board.cell(3).counters(0)[Counter::Accepted], 0);
        board.cell(3).reset();
        assert!(now_ms() - board.cell(3).heartbeat_ms.load(Ordering::Relaxed) < 1000);
    }
}
