//! Thread mode's Windows lifecycle around the event loop: the plugin `.dll` is loaded
//! where it lies, and the process stops on Ctrl-C, Ctrl-Break or console close. The
//! Unix-only parts are refused with one `error:` line each: `--user`/`--group` (no
//! privilege drop), `--pid-file`; there is no reload (no HUP, no socket handoff), no
//! `--timeout` watchdog (it is `SIGALRM`), and no systemd notification.

use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::plugin::Plugin;
use crate::worker;

/// What is settled before binding.
pub struct Startup {
    plugin: std::path::PathBuf,
}

impl Startup {
    /// Refuse the options that have no meaning on Windows.
    pub fn begin(config: &Config) -> Result<Startup, HostError> {
        let unix_only = [
            ("--user", config.user.is_some()),
            ("--group", config.group.is_some()),
            ("--pid-file", config.pid_file.is_some()),
        ];
        if let Some((flag, _)) = unix_only.iter().find(|(_, given)| *given) {
            return Err(HostError::Unsupported(format!(
                "{flag} is not supported on Windows (Unix only)"
            )));
        }
        Ok(Startup {
            plugin: config.plugin.clone(),
        })
    }

    /// Once every socket is bound: nothing more to set up.
    pub fn bound(self, _config: &Config, _bound: &[Bound]) -> Result<Lifecycle, HostError> {
        Ok(Lifecycle {
            plugin: self.plugin,
        })
    }
}

/// The serving process's own state.
pub struct Lifecycle {
    plugin: std::path::PathBuf,
}

impl Lifecycle {
    /// Load the plugin `.dll` from its path.
    pub fn load_plugin(&mut self) -> Result<Plugin, HostError> {
        Plugin::load(&self.plugin)
    }

    /// The event loop's hooks: `announce` (the `listening on` lines) once it serves.
    pub fn hooks(
        &self,
        _config: &Config,
        announce: Box<dyn FnOnce() -> Result<(), HostError>>,
    ) -> worker::Hooks {
        worker::Hooks {
            serving: Some(announce),
            ..Default::default()
        }
    }
}
