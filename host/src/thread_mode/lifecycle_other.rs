//! Thread mode's lifecycle outside Linux (Windows; macOS, type-checked only): the plugin
//! (`name.dll`, `libname.dylib`) is loaded where it lies, and the process stops on the
//! worker's stop signals (Windows: Ctrl-C, Ctrl-Break, console close). The Linux-only parts
//! are refused with one `error:` line each: `--user`/`--group` (privilege drop),
//! `--pid-file`; there is no reload (no socket handoff), no `--timeout` watchdog and no
//! systemd notification.

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
    /// Refuse the Linux-only options.
    pub fn begin(config: &Config) -> Result<Startup, HostError> {
        let unix_only = [
            ("--user", config.user.is_some()),
            ("--group", config.group.is_some()),
            ("--pid-file", config.pid_file.is_some()),
        ];
        if let Some((flag, _)) = unix_only.iter().find(|(_, given)| *given) {
            return Err(HostError::Unsupported(format!(
                "{flag} is supported on Linux only"
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
    /// Load the plugin from its path.
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
