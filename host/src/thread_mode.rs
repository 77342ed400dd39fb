//! `--concurrency thread`: one process that loads the plugin, binds, and serves every
//! socket on its own event loop. HUP hands the sockets to a successor process
//! ([`handoff`]) that loads the plugin as it is now on disk.

use std::os::fd::{AsRawFd, RawFd};

use crate::cli::Config;
use crate::error::HostError;
use crate::handoff;
use crate::notify;
use crate::pid_file::PidFile;
use crate::plugin::Plugin;
use crate::worker;

/// Load, bind, announce, serve until stopped.
pub fn run(config: &Config) -> Result<(), HostError> {
    let plugin = Plugin::load(&config.plugin)?;
    plugin.check_binds(&config.binds)?;
    let tls = config.tls.as_ref().map(|files| files.load()).transpose()?;
    let factory = plugin.factory(&config.plugin_opts, config.log_level)?;
    let bound = crate::bind_all(&config.binds, config.backlog, false)?;
    crate::announce(&bound)?;
    let metrics = match config.metrics_bind {
        None => None,
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| HostError::Bind {
                    spec: format!("--metrics-bind {addr}"),
                    source: e,
                })?;
            let local = listener
                .local_addr()
                .map_err(|e| HostError::io("--metrics-bind", e))?;
            crate::announce_metrics(local)?;
            Some((
                listener,
                (plugin.meta.name.clone(), plugin.meta.version.clone()),
            ))
        }
    };
    let pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    handoff::notify_ready();
    notify::ready();
    let listeners: Vec<RawFd> = bound.iter().map(|b| b.socket.as_raw_fd()).collect();
    let pid_file_fd = pid_file.as_ref().map(PidFile::raw_fd);
    let ready_timeout = config.timeout;
    let hooks = worker::Hooks {
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
        metrics,
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
