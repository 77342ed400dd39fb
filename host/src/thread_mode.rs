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
//!
//! Linux; elsewhere `thread_mode_other.rs` serves without privilege drop, pid file, reload
//! or watchdog.

mod supervise;
mod watchdog;

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use self::supervise::Supervisor;
use crate::arbiter::Generation;
use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::pid_file::PidFile;
use crate::plugin::Plugin;
use crate::privileges::Identity;
use crate::sockets::bind_metrics;
use crate::worker::{self, MetricsEndpoint, Worker};

/// Bind, drop privileges, load, announce, serve until stopped.
pub fn run(config: &Config) -> Result<(), HostError> {
    let identity = Identity::resolve(config.user.as_deref(), config.group.as_deref())?;
    let access_log = config
        .access_log
        .as_ref()
        .map(|d| d.open(identity.as_ref()))
        .transpose()?;
    // Plugins and certificates of every service, as process mode prepares a generation.
    let generation = Generation::prepare(1, config.clone())?;
    let binds: Vec<_> = config.binds().cloned().collect();
    // The Unix socket files are removed at exit, unless handed over to a successor.
    let (bound, mut unix_files) = crate::sockets::bind_all(&binds, config.backlog, false)?;
    let metrics_listener = config.metrics_bind.map(bind_metrics).transpose()?;
    let pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    if let Some(identity) = &identity {
        identity.apply().map_err(HostError::Privileges)?;
    }

    let watchdog = watchdog::Watchdog::arm(config.timeout)?;
    let Loaded {
        _plugins,
        services,
        running,
    } = load(config, generation, bound)?;
    let bound: Vec<&Bound> = services.iter().flat_map(|s| s.listeners.iter()).collect();

    let listening: Vec<String> = bound.iter().map(|b| b.listening_line()).collect();
    let metrics_addr = metrics_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()
        .map_err(|e| HostError::io("--metrics-bind", e))?;
    let metrics = metrics_listener.map(|listener| MetricsEndpoint {
        listener,
        plugins: running.clone(),
    });
    // This process is its sockets' last holder, unless systemd holds them too; a reload
    // hands them over instead.
    let sockets_ours = !crate::handoff::systemd_holds_sockets();
    let last_holder = Rc::new(Cell::new(sockets_ours));
    let supervisor = Supervisor {
        listening,
        metrics: metrics_addr,
        listeners: bound.iter().map(|b| b.socket.as_raw_fd()).collect(),
        pid_file: pid_file.as_ref().map(PidFile::raw_fd),
        ready_timeout: config.timeout,
        watchdog: &watchdog,
        unix_files: &mut unix_files,
        last_holder: last_holder.clone(),
        sockets_ours,
    };
    for (service, plugin) in config.services.iter().zip(&running) {
        tracing::info!(
            service = %service.name,
            plugin = %plugin.name,
            version = %plugin.version,
            "serving in thread mode (pid {})",
            std::process::id()
        );
    }
    Worker::new(services, config.worker_settings(access_log))
        .with_metrics(metrics)
        .last_holder_of_its_sockets(last_holder)
        .run(|link| supervisor.supervise(link))?;
    tracing::info!("stopped");
    Ok(())
}

/// Every service's plugin, loaded, and what the worker serves with it.
struct Loaded {
    /// Kept mapped while the worker serves.
    _plugins: Vec<Plugin>,
    services: Vec<worker::Service>,
    /// Each service's plugin name and version.
    running: Vec<crate::metrics::PluginId>,
}

/// Load every service's plugin from the generation's snapshots and make its factory; each
/// service takes its share of `bound`, in order.
fn load(config: &Config, generation: Generation, bound: Vec<Bound>) -> Result<Loaded, HostError> {
    let Generation {
        snapshots,
        plugin_of,
        tls,
        ..
    } = generation;
    let mut plugins = Vec::new();
    for snapshot in snapshots {
        plugins.push(Plugin::load_snapshot(
            &snapshot.path,
            &snapshot.load_path(),
        )?);
        // Mapped: the descriptor is no longer needed.
    }
    let services = config.worker_services(&plugins, &plugin_of, &tls, bound)?;
    let running = plugin_of.iter().map(|&p| plugins[p].id()).collect();
    Ok(Loaded {
        _plugins: plugins,
        services,
        running,
    })
}
