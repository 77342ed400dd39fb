//! How a worker is told to stop, and the signals it listens to (as mini-redis's
//! `shutdown.rs`: one small type for "why and how we stop").
//!
//! A [`Stop`] reaches the worker from a signal (`TERM`/`INT`: graceful, `QUIT`: at once),
//! from its own `--max-requests` count, or from whoever runs it, on the control channel
//! ([`super::Link::stop`]; thread mode hands over to a successor that way).

use std::fmt;

/// How the worker is to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, let open connections finish for up to `--graceful-timeout`, then
    /// cancel the rest (each consumer hears `connection_lost(Shutdown)`).
    Graceful(StopReason),
    /// `QUIT`: cancel every connection at once.
    Immediate,
}

impl Stop {
    /// Whether, for a worker that is its sockets' last holder, this stop closes them for
    /// good: every graceful stop but a reload's handover (the successor serves them on).
    /// An immediate stop cancels everything at once, the queued connections included.
    pub fn closes_sockets_for_good(self) -> bool {
        matches!(self, Stop::Graceful(reason) if reason != StopReason::HandedOver)
    }
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

// The signals (Unix) or console events (Windows) a worker handles.
#[cfg_attr(unix, path = "signals_unix.rs")]
#[cfg_attr(windows, path = "signals_windows.rs")]
mod signals;
pub use signals::{keep_sigpipe_ignored, Signals};
