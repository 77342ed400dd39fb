//! The worker's console events on Windows: Ctrl-C (logged as `SIGINT`), Ctrl-Break and
//! closing the console window (logged as `SIGTERM`) stop gracefully; Windows gives a closing
//! console a few seconds, so the drain is cut short by the system if `--graceful-timeout` is
//! longer. Running as a Windows service (SCM stop requests) is not supported. There is no
//! reload (no HUP) and no access log reopening (no USR1).

use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, CtrlBreak, CtrlC, CtrlClose};

use super::{Signalled, Stop, StopReason};
use crate::error::HostError;

/// The installed console handlers.
pub struct Signals {
    c: CtrlC,
    brk: CtrlBreak,
    close: CtrlClose,
}

impl Signals {
    pub fn install() -> Result<Signals, HostError> {
        let fail = |e| HostError::io("installing console handlers", e);
        Ok(Signals {
            c: ctrl_c().map_err(fail)?,
            brk: ctrl_break().map_err(fail)?,
            close: ctrl_close().map_err(fail)?,
        })
    }

    /// The next console event (each one stops the worker). Cancel-safe.
    pub async fn next(&mut self) -> Signalled {
        let graceful = |why| Signalled::Stop(Stop::Graceful(why));
        tokio::select! {
            _ = self.c.recv() => graceful(StopReason::Interrupt),
            _ = self.brk.recv() => graceful(StopReason::Terminate),
            _ = self.close.recv() => graceful(StopReason::Terminate),
        }
    }
}

/// Windows has no SIGPIPE: a write to a reset socket fails with an error.
pub fn keep_sigpipe_ignored() -> Result<(), HostError> {
    Ok(())
}
