//! The arbiter's signals, delivered through a self-pipe so the supervision loop can `poll`
//! for them together with the workers' status pipes.
//!
//! The handler only writes the signal number to a non-blocking pipe (async-signal-safe);
//! everything else happens in the loop. Forked workers must call [`reset_in_child`] first
//! thing, so that a signal meant for a worker never lands in the arbiter's pipe.

// FFI boundary: signal handlers, masks and the self-pipe (sigaction, sigprocmask).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The signals the arbiter acts on.
pub const HANDLED: [Signal; 9] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCHLD,
    Signal::SIGPIPE,
    Signal::SIGUSR1,
];

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signo: nix::libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signo as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored around it so
        // the interrupted code does not see it change. A full pipe drops the byte, which is
        // fine: a pending byte for the same signal is already queued.
        unsafe {
            let saved = *nix::libc::__errno_location();
            nix::libc::write(fd, (&byte as *const u8).cast(), 1);
            *nix::libc::__errno_location() = saved;
        }
    }
}

/// The read end of the self-pipe.
pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Signals {
    /// Install the handlers.
    pub fn install() -> std::io::Result<Signals> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        for sig in HANDLED {
            let handler = if sig == Signal::SIGPIPE {
                SigHandler::SigIgn
            } else {
                SigHandler::Handler(on_signal)
            };
            let flags = SaFlags::SA_RESTART
                | if sig == Signal::SIGCHLD {
                    SaFlags::SA_NOCLDSTOP
                } else {
                    SaFlags::empty()
                };
            // SAFETY: the handler only calls write(2) on a descriptor that stays open for the
            // life of the process (`Signals` lives until the arbiter exits).
            unsafe { sigaction(sig, &SigAction::new(handler, flags, SigSet::empty())) }?;
        }
        Ok(Signals {
            read,
            _write: write,
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Signals received since the last call, in arrival order.
    pub fn drain(&self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        while let Ok(n @ 1..) = nix::unistd::read(&self.read, &mut buf) {
            out.extend(
                buf[..n]
                    .iter()
                    .filter_map(|&b| Signal::try_from(b as i32).ok()),
            );
        }
        out
    }
}

/// Blocks the arbiter's signals for the duration of a fork, so that a signal meant for the
/// new child can never run the inherited handler (which would write into the arbiter's
/// pipe, as if the arbiter itself had been signalled). Dropping it unblocks them in the
/// parent; the child calls [`reset_in_child`] instead.
pub struct ForkGuard {
    previous: SigSet,
}

impl ForkGuard {
    pub fn block() -> ForkGuard {
        let mut set = SigSet::empty();
        for sig in HANDLED {
            set.add(sig);
        }
        let previous = set
            .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
            .unwrap_or_else(|_| SigSet::empty());
        ForkGuard { previous }
    }
}

impl Drop for ForkGuard {
    fn drop(&mut self) {
        let _ = self.previous.thread_set_mask();
    }
}

/// In a freshly forked worker (signals still blocked by the [`ForkGuard`]): default
/// dispositions, then an empty mask, so a signal sent meanwhile takes its default action
/// (or the worker's own handler, once installed) and nothing reaches the arbiter's pipe.
/// SIGPIPE stays ignored: a write to a socket that is shut down must fail with EPIPE, not
/// kill the worker (not every writer can pass `MSG_NOSIGNAL`; tokio-rustls' `writev` does
/// not). SIGUSR1 is ignored until the worker's event loop handles it: `systemctl kill -s USR1`
/// and `pkill -USR1 sockhost` reach workers too, and its default action would end them.
pub fn reset_in_child(guard: ForkGuard) {
    WRITE_FD.store(-1, Ordering::Relaxed);
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe {
        sigaction(
            Signal::SIGUSR1,
            &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()),
        )
    };
    for sig in HANDLED
        .into_iter()
        .filter(|s| !matches!(s, Signal::SIGPIPE | Signal::SIGUSR1))
    {
        // SAFETY: restoring the default disposition has no preconditions.
        let _ = unsafe {
            sigaction(
                sig,
                &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
            )
        };
    }
    std::mem::forget(guard);
    let _ = SigSet::empty().thread_set_mask();
}
