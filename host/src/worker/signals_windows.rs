//! The worker's console events on Windows: Ctrl-C, Ctrl-Break and closing the console
//! window stop gracefully (Windows gives a closing console a few seconds, so the drain is
//! cut short by the system if `--graceful-timeout` is longer). Running as a Windows service
//! (SCM stop requests) is not supported. There is no reload: no HUP, no successor.

use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, CtrlBreak, CtrlC, CtrlClose};

use super::StopSignal;
use crate::error::HostError;

/// The installed console handlers.
pub struct StopSignals {
    c: CtrlC,
    brk: CtrlBreak,
    close: CtrlClose,
}

impl StopSignals {
    pub fn install() -> Result<StopSignals, HostError> {
        let fail = |e| HostError::io("installing console handlers", e);
        Ok(StopSignals {
            c: ctrl_c().map_err(fail)?,
            brk: ctrl_break().map_err(fail)?,
            close: ctrl_close().map_err(fail)?,
        })
    }

    /// The next console event (each one stops the worker).
    pub async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.c.recv() => StopSignal::Graceful("Ctrl-C"),
            _ = self.brk.recv() => StopSignal::Graceful("Ctrl-Break"),
            _ = self.close.recv() => StopSignal::Graceful("console closed"),
        }
    }
}

/// Windows has no SIGPIPE: a write to a reset socket fails with an error.
pub fn keep_sigpipe_ignored() -> Result<(), HostError> {
    Ok(())
}
