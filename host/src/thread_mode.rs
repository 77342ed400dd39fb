//! `--concurrency thread`: one process that binds, drops privileges, loads the plugin and
//! serves every socket on its own event loop. HUP hands the sockets to a successor process
//! ([`handoff`]) that loads the plugin as it is now on disk.
//!
//! Startup runs in this order, so that plugin code never runs with root's rights and
//! nothing is announced until startup can no longer fail:
//! 1. resolve `--user`/`--group` (a typo is an `error:` before anything else);
//! 2. copy the plugin into a sealed memfd ([`Snapshot`], as process mode does), read the
//!    certificates, bind (or take over inherited sockets), write `--pid-file`;
//! 3. drop privileges;
//! 4. arm the [`watchdog`], load the plugin from the copy (then close the copy) and build
//!    its factory;
//! 5. start the event loop and its signal handlers, then print the `listening on` lines
//!    and tell the predecessor / systemd we are ready (a signal sent on reading them must
//!    find the handlers in place).
//!
//! A successor started on reload runs the same steps as the user it was started as (the
//! predecessor's, after its privilege drop): it needs read access to the plugin and
//! certificate files, and write access to the pid file's directory.

mod watchdog;

use std::os::fd::{AsRawFd, RawFd};

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

/// Bind, drop privileges, load, announce, serve until stopped.
pub fn run(config: &Config) -> Result<(), HostError> {
    let identity = Identity::resolve(config.user.as_deref(), config.group.as_deref())?;
    let access_log = config
        .access_log
        .as_ref()
        .map(|d| d.open(identity.as_ref()))
        .transpose()?;
    let snapshot = Snapshot::take(&config.plugin)?;
    let tls = config.tls.as_ref().map(|files| files.load()).transpose()?;
    let bound = crate::bind_all(&config.binds, config.backlog, false)?;
    let metrics_listener = config.metrics_bind.map(bind_metrics).transpose()?;
    let pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    if let Some(identity) = &identity {
        identity.apply().map_err(HostError::Privileges)?;
    }

    let watchdog = std::rc::Rc::new(watchdog::Watchdog::arm(config.timeout)?);
    let plugin = Plugin::load_snapshot(&snapshot.path, &snapshot.load_path())?;
    drop(snapshot); // mapped: the descriptor is no longer needed
    plugin.check_binds(&config.binds)?;
    let factory = plugin.factory(&config.plugin_opts)?;

    let listening: Vec<String> = bound.iter().map(Bound::listening_line).collect();
    let metrics_addr = metrics_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()
        .map_err(|e| HostError::io("--metrics-bind", e))?;
    let metrics = metrics_listener.map(|listener| {
        let plugin = (plugin.meta.name.clone(), plugin.meta.version.clone());
        (listener, plugin)
    });
    let listeners: Vec<RawFd> = bound.iter().map(|b| b.socket.as_raw_fd()).collect();
    let pid_file_fd = pid_file.as_ref().map(PidFile::raw_fd);
    let ready_timeout = config.timeout;
    let hooks = worker::Hooks {
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
        metrics,
        // Announced once the event loop handles its signals: whoever reads `listening on`
        // or `READY=1` may signal us at once.
        serving: Some(Box::new(move || {
            watchdog.tick();
            crate::print_flushed(listening)?;
            if let Some(addr) = metrics_addr {
                crate::announce_metrics(addr)?;
            }
            handoff::notify_ready();
            notify::ready();
            Ok(())
        })),
        ..Default::default()
    };
    tracing::info!(
        plugin = %plugin.meta.name,
        version = %plugin.meta.version,
        "serving in thread mode (pid {})",
        std::process::id()
    );
    worker::run(
        bound,
        factory,
        config.worker_settings(tls, access_log),
        hooks,
    )?;
    tracing::info!("stopped");
    Ok(())
}

/// The `--metrics-bind` listener (served from the event loop).
fn bind_metrics(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, HostError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| HostError::Bind {
            spec: format!("--metrics-bind {addr}"),
            source: e,
        })
}
