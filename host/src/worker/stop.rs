//! How a worker is told to stop, and the signals it listens to (as mini-redis's
//! `shutdown.rs`: one small type for "why and how we stop").
//!
//! A [`Stop`] reaches the worker from a signal (`TERM`/`INT`: graceful, `QUIT`: at once),
//! from its own `--max-requests` count, or from whoever runs it, on the control channel
//! ([`super::Link::stop`]; thread mode hands over to a successor that way).

use std::fmt;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::error::HostError;

/// How the worker is to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, let open connections finish for up to `--graceful-timeout`, then
    /// cancel the rest (each consumer hears `connection_lost(Shutdown)`).
    Graceful(StopReason),
    /// `QUIT`: cancel every connection at once.
    Immediate,
}

/// Why a worker stops gracefully.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `SIGTERM`.
    Terminate,
    /// `SIGINT`.
    Interrupt,
    /// `--max-requests` connections accepted: the worker retires on its own.
    MaxRequests,
    /// Thread mode: a successor serves the sockets now.
    HandedOver,
}

impl fmt::Display for StopReason {
    /// The text that opens the worker's "no longer accepting" log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Terminate => "SIGTERM",
            StopReason::Interrupt => "SIGINT",
            StopReason::MaxRequests => "--max-requests reached",
            StopReason::HandedOver => "reloaded",
        })
    }
}

/// What a signal asks of the worker.
pub enum Signalled {
    Stop(Stop),
    /// `HUP`: a reload (thread mode's business; in process mode the arbiter's).
    Hangup,
}

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
