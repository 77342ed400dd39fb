//! `--concurrency thread`: one process that loads the plugin, binds, and serves every
//! socket on its own event loop. HUP hands the sockets to a successor process
//! ([`handoff`]) that loads the plugin as it is now on disk.

use std::os::fd::{AsRawFd, RawFd};

use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::handoff;
use crate::pid_file::PidFile;
use crate::plugin::Plugin;
use crate::worker;

/// Load, bind, announce, serve until stopped.
pub fn run(config: &Config) -> Result<(), HostError> {
    let plugin = Plugin::load(&config.plugin)?;
    plugin.check_binds(&config.binds)?;
    let tls = config.tls.as_ref().map(|files| files.load()).transpose()?;
    let factory = plugin.factory(&config.plugin_opts, config.log_level)?;
    let bound = match handoff::inherited(&config.binds)? {
        Some(inherited) => inherited,
        None => config
            .binds
            .iter()
            .map(|spec| Bound::bind(spec, config.backlog, false))
            .collect::<Result<Vec<_>, _>>()?,
    };
    crate::announce(&bound)?;
    let _pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    handoff::notify_ready();
    let listeners: Vec<RawFd> = bound.iter().map(|b| b.socket.as_raw_fd()).collect();
    let ready_timeout = config.timeout;
    let hooks = worker::Hooks {
        reload: Some(Box::new(move || {
            let listeners = listeners.clone();
            Box::pin(async move {
                handoff::start_successor(&listeners)?
                    .ready(ready_timeout)
                    .await
            })
        })),
        ..Default::default()
    };
    tracing::info!(
        plugin = %plugin.meta.name,
        version = %plugin.meta.version,
        "serving in thread mode (pid {})",
        std::process::id()
    );
    worker::run(bound, factory, config.worker_settings(tls), hooks)?;
    tracing::info!("stopped");
    Ok(())
}
