//! Thread mode's Linux lifecycle around the event loop: `--user`/`--group`, the plugin's
//! sealed snapshot, `--pid-file`, the [`watchdog`](super::watchdog), the HUP reload that
//! hands the sockets to a successor ([`handoff`]) and systemd's readiness protocol
//! ([`notify`]).

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use crate::arbiter::snapshot::Snapshot;
use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::handoff;
use crate::notify;
use crate::pid_file::PidFile;
use crate::plugin::Plugin;
use crate::privileges::Identity;
use crate::worker;

use super::watchdog::Watchdog;

/// What is settled before binding: the identity to drop to (a typo is an `error:` before
/// anything else) and the plugin's snapshot.
pub struct Startup {
    identity: Option<Identity>,
    snapshot: Snapshot,
}

impl Startup {
    /// Resolve `--user`/`--group`, then copy the plugin into a sealed memfd ([`Snapshot`],
    /// as process mode does).
    pub fn begin(config: &Config) -> Result<Startup, HostError> {
        let identity = Identity::resolve(config.user.as_deref(), config.group.as_deref())?;
        let snapshot = Snapshot::take(&config.plugin)?;
        Ok(Startup { identity, snapshot })
    }

    /// Once every socket is bound: write `--pid-file`, drop privileges, arm the watchdog.
    pub fn bound(self, config: &Config, bound: &[Bound]) -> Result<Lifecycle, HostError> {
        let pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
        if let Some(identity) = &self.identity {
            identity.apply().map_err(HostError::Privileges)?;
        }
        let watchdog = Rc::new(Watchdog::arm(config.timeout)?);
        Ok(Lifecycle {
            snapshot: Some(self.snapshot),
            pid_file,
            watchdog,
            listeners: bound.iter().map(|b| b.socket.as_raw_fd()).collect(),
        })
    }
}

/// The serving process's own state: held until the event loop has stopped.
pub struct Lifecycle {
    snapshot: Option<Snapshot>,
    pid_file: Option<PidFile>,
    watchdog: Rc<Watchdog>,
    listeners: Vec<RawFd>,
}

impl Lifecycle {
    /// Load the plugin from the snapshot (then close the copy: it is mapped).
    pub fn load_plugin(&mut self) -> Result<Plugin, HostError> {
        let snapshot = self.snapshot.take().expect("the plugin is loaded once");
        Plugin::load_snapshot(&snapshot.path, &snapshot.load_path())
    }

    /// The event loop's hooks: the watchdog's ticks, reload, `STOPPING=1`, and `announce`
    /// (the `listening on` lines) followed by the readiness notifications.
    pub fn hooks(
        &self,
        config: &Config,
        announce: Box<dyn FnOnce() -> Result<(), HostError>>,
    ) -> worker::Hooks {
        let listeners = self.listeners.clone();
        let pid_file_fd = self.pid_file.as_ref().map(PidFile::raw_fd);
        let ready_timeout = config.timeout;
        let watchdog = self.watchdog.clone();
        worker::Hooks {
            // The event loop's proof of life (twice a second) feeds the watchdog.
            heartbeat: Some(Box::new({
                let watchdog = watchdog.clone();
                move |_| watchdog.tick()
            })),
            reload: Some(Box::new(move || {
                let listeners = listeners.clone();
                notify::reloading();
                Box::pin(async move {
                    let successor = match handoff::start_successor(&listeners, pid_file_fd) {
                        Ok(s) => s.ready(ready_timeout).await,
                        Err(e) => Err(e),
                    };
                    if successor.is_err() {
                        notify::ready(); // still us
                    }
                    successor
                })
            })),
            stopping: Some(Box::new(|handed_over| {
                if !handed_over {
                    notify::stopping();
                }
            })),
            // Announced once the event loop handles its signals: whoever reads
            // `listening on` or `READY=1` may signal us at once.
            serving: Some(Box::new(move || {
                watchdog.tick();
                announce()?;
                handoff::notify_ready();
                notify::ready();
                Ok(())
            })),
            ..Default::default()
        }
    }
}
