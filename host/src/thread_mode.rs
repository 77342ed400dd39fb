//! `--concurrency thread`: one process that binds, drops privileges, loads the plugin and
//! serves every socket on its own event loop. HUP hands the sockets to a successor process
//! (`handoff.rs`) that loads the plugin as it is now on disk.
//!
//! Startup runs in this order, so that plugin code never runs with root's rights and
//! nothing is announced until startup can no longer fail:
//! 1. resolve `--user`/`--group` (a typo is an `error:` before anything else);
//! 2. copy the plugin into a sealed memfd (`Snapshot`, as process mode does), read the
//!    certificates, bind (or take over inherited sockets), write `--pid-file`;
//! 3. drop privileges;
//! 4. arm the [`watchdog`], load the plugin from the copy (then close the copy) and build
//!    its factory;
//! 5. start the event loop and its signal handlers, then print the `listening on` lines
//!    and tell the predecessor / systemd we are ready (a signal sent on reading them must
//!    find the handlers in place).
//!
//! The platform's parts of these steps live in `thread_mode/lifecycle_linux.rs`; elsewhere
//! (Windows, macOS) only steps 4 (without the watchdog) and 5 apply: see
//! `lifecycle_other.rs`.
//!
//! A successor started on reload runs the same steps as the user it was started as (the
//! predecessor's, after its privilege drop): it needs read access to the plugin and
//! certificate files, and write access to the pid file's directory.

#[cfg_attr(target_os = "linux", path = "thread_mode/lifecycle_linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "thread_mode/lifecycle_other.rs")]
mod lifecycle;
#[cfg(target_os = "linux")]
mod watchdog;

use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::worker;

/// Bind, drop privileges, load, announce, serve until stopped.
pub fn run(config: &Config) -> Result<(), HostError> {
    let startup = lifecycle::Startup::begin(config)?;
    let tls = config.tls.as_ref().map(|files| files.load()).transpose()?;
    let bound = crate::bind_all(&config.binds, config.backlog, false)?;
    let metrics_listener = config.metrics_bind.map(bind_metrics).transpose()?;
    let mut lifecycle = startup.bound(config, &bound)?;

    let plugin = lifecycle.load_plugin()?;
    plugin.check_binds(&config.binds)?;
    let factory = plugin.factory(&config.plugin_opts, config.log_level)?;

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
    let announce = Box::new(move || {
        crate::print_flushed(listening)?;
        if let Some(addr) = metrics_addr {
            crate::announce_metrics(addr)?;
        }
        Ok(())
    });
    let hooks = worker::Hooks {
        metrics,
        ..lifecycle.hooks(config, announce)
    };
    tracing::info!(
        plugin = %plugin.meta.name,
        version = %plugin.meta.version,
        "serving in thread mode (pid {})",
        std::process::id()
    );
    worker::run(bound, factory, config.worker_settings(tls), hooks)?;
    tracing::info!("stopped");
    drop(lifecycle); // the pid file stays until the end
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
