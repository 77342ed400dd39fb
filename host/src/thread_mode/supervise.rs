//! Thread mode's reaction to its worker's events: announce once it serves, feed the
//! watchdog, and reload on `HUP` — start a successor process on the same sockets
//! ([`handoff`]) and, once it is ready, stop this worker gracefully (it drains while the
//! successor serves). A successor that fails or is not ready in time aborts the reload:
//! this process keeps serving.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use super::watchdog::Watchdog;
use crate::bind::UnixFiles;
use crate::error::HostError;
use crate::handoff;
use crate::notify;
use crate::worker::{Link, Stop, StopReason, WorkerEvent};

/// What the thread-mode process needs to react to its worker's events.
pub struct Supervisor<'a> {
    /// The `listening on` lines, printed once the worker serves.
    pub listening: Vec<String>,
    /// The `--metrics-bind` address, announced with them.
    pub metrics: Option<std::net::SocketAddr>,
    /// The listening sockets, handed to a successor in this order.
    pub listeners: Vec<RawFd>,
    /// The locked `--pid-file`, handed to a successor.
    pub pid_file: Option<RawFd>,
    /// How long a successor has to say it is ready (`--timeout`).
    pub ready_timeout: Duration,
    pub watchdog: &'a Watchdog,
    /// The Unix socket files removed at exit (kept when a successor serves them).
    pub unix_files: &'a mut UnixFiles,
    /// The worker's "last holder of its sockets" ([`crate::worker::Worker::last_holder_of_its_sockets`]),
    /// which the worker clears on `HUP`; set again to `sockets_ours` when that reload is
    /// aborted (its successor is gone then).
    pub last_holder: Rc<Cell<bool>>,
    /// The sockets are this process's to close for good (not systemd's).
    pub sockets_ours: bool,
}

/// A successor starting up: its pid once it serves, or why it does not.
type Starting = Pin<Box<dyn Future<Output = Result<u32, String>>>>;

impl Supervisor<'_> {
    /// React to the worker's events until it has stopped.
    pub async fn supervise(self, mut link: Link) -> Result<(), HostError> {
        let mut successor: Option<Starting> = None;
        // The successor serving, until this process has stopped accepting.
        let mut handed_to: Option<u32> = None;
        loop {
            tokio::select! {
                event = link.events.recv() => match event {
                    None => return Ok(()),
                    Some(WorkerEvent::Serving) => self.announce()?,
                    Some(WorkerEvent::Heartbeat(_)) => {
                        self.watchdog.tick();
                        // This process draws its own session-ticket secrets.
                        crate::tls::tickets::rotate_if_due();
                    }
                    Some(WorkerEvent::ReloadAsked) if successor.is_some() => {
                        tracing::info!("SIGHUP: a reload is already in progress");
                    }
                    Some(WorkerEvent::ReloadAsked) => {
                        tracing::info!("reload started: starting a new process with the plugin as it is on disk");
                        successor = Some(self.start_successor());
                    }
                    Some(WorkerEvent::Stopping(stop)) => {
                        // Stopping for another reason gives up a reload in progress.
                        successor = None;
                        if stop == Stop::Graceful(StopReason::HandedOver) {
                            // The successor serves the Unix sockets: their files stay.
                            self.unix_files.keep();
                        } else {
                            notify::stopping();
                        }
                    }
                    Some(WorkerEvent::Draining) => {
                        // Said only once this process accepts no more: whoever reads the
                        // line and connects reaches the new process.
                        if let Some(pid) = handed_to.take() {
                            tracing::info!(successor = pid, "reload finished: the new process serves; this one drains");
                        }
                    }
                },
                done = async { successor.as_mut().expect("guarded").await }, if successor.is_some() => {
                    successor = None;
                    match done {
                        Ok(pid) => {
                            handed_to = Some(pid);
                            let _ = link.stop.send(Stop::Graceful(StopReason::HandedOver));
                        }
                        Err(why) => {
                            // The successor has exited or was killed: the sockets are ours again.
                            self.last_holder.set(self.sockets_ours);
                            tracing::error!("reload aborted: {why}; this process keeps serving");
                        }
                    }
                }
            }
        }
    }

    /// The worker serves and handles its signals: whoever reads `listening on` or `READY=1`
    /// may signal us at once.
    fn announce(&self) -> Result<(), HostError> {
        self.watchdog.tick();
        crate::stdout::print_flushed(self.listening.iter().cloned())?;
        if let Some(addr) = self.metrics {
            crate::stdout::announce_metrics(addr)?;
        }
        handoff::notify_ready();
        notify::ready();
        Ok(())
    }

    /// Start a successor on the same sockets and wait (on the event loop) until it is ready.
    fn start_successor(&self) -> Starting {
        notify::reloading();
        let started = handoff::start_successor(&self.listeners, self.pid_file);
        let ready_timeout = self.ready_timeout;
        Box::pin(async move {
            let successor = match started {
                Ok(s) => s.ready(ready_timeout).await,
                Err(e) => Err(e),
            };
            if successor.is_err() {
                notify::ready(); // still us
            }
            successor
        })
    }
}
