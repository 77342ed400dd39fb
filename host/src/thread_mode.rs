//! `--concurrency thread`: one process that loads the plugin, binds, and serves every
//! socket on its own event loop.

use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::pid_file::PidFile;
use crate::plugin::Plugin;
use crate::worker;

/// Load, bind, announce, serve until stopped.
pub fn run(config: &Config) -> Result<(), HostError> {
    let plugin = Plugin::load(&config.plugin)?;
    plugin.check_binds(&config.binds)?;
    let factory = plugin.factory(&config.plugin_opts, config.log_level)?;
    let bound = config
        .binds
        .iter()
        .map(|spec| Bound::bind(spec, config.backlog, false))
        .collect::<Result<Vec<_>, _>>()?;
    crate::announce(&bound)?;
    let _pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    tracing::info!(
        plugin = %plugin.meta.name,
        version = %plugin.meta.version,
        "serving in thread mode (pid {})",
        std::process::id()
    );
    worker::run(
        bound,
        factory,
        config.worker_settings(),
        worker::Hooks::default(),
    )?;
    tracing::info!("stopped");
    Ok(())
}
