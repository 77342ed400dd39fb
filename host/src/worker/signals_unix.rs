//! The worker's signals on Unix: TERM/INT stop gracefully, QUIT at once, HUP asks for a
//! reload; TTIN/TTOU belong to the arbiter and are swallowed so that a worker is not
//! suspended by their default action; USR1 reopens the access log.

// FFI boundary: signal dispositions in the worker.
#![allow(unsafe_code)]

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{Signalled, Stop, StopReason};
use crate::error::HostError;

/// Every signal a worker handles, installed together before it announces that it serves
/// (a signal sent on reading `listening on` must not meet its default action).
pub struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    ttin: Signal,
    ttou: Signal,
    usr1: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals, HostError> {
        let listen = |kind: SignalKind| {
            signal(kind).map_err(|e| HostError::io("installing signal handlers", e))
        };
        Ok(Signals {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
            quit: listen(SignalKind::quit())?,
            // HUP reloads in thread mode; in process mode it and TTIN/TTOU belong to the
            // arbiter, and a worker must not die or be suspended by them (their default
            // actions).
            hup: listen(SignalKind::hangup())?,
            ttin: listen(SignalKind::from_raw(nix::libc::SIGTTIN))?,
            ttou: listen(SignalKind::from_raw(nix::libc::SIGTTOU))?,
            // Thread mode's access log rotation; in process mode the arbiter flags its
            // workers through the board, and a USR1 sent to a worker itself (`pkill -USR1`)
            // does the same.
            usr1: listen(SignalKind::user_defined1())?,
        })
    }

    /// The next signal that asks for a stop or a reload; the others are handled here.
    /// Cancel-safe (every branch is).
    pub async fn next(&mut self) -> Signalled {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Signalled::Stop(Stop::Graceful(StopReason::Terminate)),
                _ = self.int.recv() => return Signalled::Stop(Stop::Graceful(StopReason::Interrupt)),
                _ = self.quit.recv() => return Signalled::Stop(Stop::Immediate),
                _ = self.hup.recv() => return Signalled::Hangup,
                _ = self.ttin.recv() => tracing::debug!("SIGTTIN ignored by this worker"),
                _ = self.ttou.recv() => tracing::debug!("SIGTTOU ignored by this worker"),
                _ = self.usr1.recv() => crate::access_log::reopen(),
            }
        }
    }
}

/// SIGPIPE must stay ignored in every serving process (both modes): a write to a socket
/// that the peer reset, or that we shut down ourselves, then fails with EPIPE and ends that
/// connection only. Rust's runtime ignores it at startup and forked workers keep that
/// (`arbiter::signals::reset_in_child`), but the plugin just loaded may have changed it.
pub fn keep_sigpipe_ignored() -> Result<(), HostError> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN installs no handler code, so no async-signal-safety requirement.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map(drop)
        .map_err(|e| HostError::io("ignoring SIGPIPE", e.into()))
}
