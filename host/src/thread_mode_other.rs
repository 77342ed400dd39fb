//! `--concurrency thread` outside Linux (Windows; macOS, type-checked only): one process
//! binds, loads each service's plugin (`name.dll`, `libname.dylib`) where it lies, and
//! serves every socket on its own event loop until a stop signal (Windows: Ctrl-C,
//! Ctrl-Break, console close). The Linux-only parts are refused with one `error:` line
//! each: `--user`/`--group` (privilege drop) and `--pid-file`; there is no reload (no
//! socket handoff), no `--timeout` watchdog, no systemd notification, and on Windows no
//! USR1 to reopen `--access-log` (the file is opened once, for appending).

use crate::cli::Config;
use crate::error::HostError;
use crate::plugin::Plugin;
use crate::sockets::bind_metrics;
use crate::tls::Tls;
use crate::worker::{Link, MetricsEndpoint, Worker, WorkerEvent};

/// Bind, load, announce, serve until stopped.
pub fn run(config: &Config) -> Result<(), HostError> {
    crate::privileges::Identity::resolve(config.user.as_deref(), config.group.as_deref())?;
    if config.pid_file.is_some() {
        return Err(HostError::Unsupported(
            "--pid-file is supported on Linux only".into(),
        ));
    }
    let access_log = config
        .access_log
        .as_ref()
        .map(|d| d.open(None))
        .transpose()?;
    let Prepared {
        plugins,
        plugin_of,
        tls,
    } = prepare(config)?;
    let binds: Vec<_> = config.binds().cloned().collect();
    let (bound, _unix_files) = crate::sockets::bind_all(&binds, config.backlog, false)?;
    let metrics_listener = config.metrics_bind.map(bind_metrics).transpose()?;
    let services = config.worker_services(&plugins, &plugin_of, &tls, bound)?;
    let listening: Vec<String> = services
        .iter()
        .flat_map(|s| s.listeners.iter())
        .map(|b| b.listening_line())
        .collect();
    let metrics_addr = metrics_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()
        .map_err(|e| HostError::io("--metrics-bind", e))?;
    let running: Vec<crate::metrics::PluginId> =
        plugin_of.iter().map(|&p| plugins[p].id()).collect();
    let metrics = metrics_listener.map(|listener| MetricsEndpoint {
        listener,
        plugins: running.clone(),
    });
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
        .run(|link| supervise(link, listening, metrics_addr))?;
    tracing::info!("stopped");
    Ok(())
}

/// Every service's plugin and certificates, as they lie on disk (process mode's
/// `Generation` without the snapshots).
struct Prepared {
    /// One library per distinct plugin file (two services of one plugin: two factories);
    /// kept loaded while the worker serves.
    plugins: Vec<Plugin>,
    /// Each service's library, an index in `plugins`.
    plugin_of: Vec<usize>,
    /// Each service's TLS configuration.
    tls: Vec<Option<Tls>>,
}

/// Load every service's plugin and certificates.
fn prepare(config: &Config) -> Result<Prepared, HostError> {
    let many = config.services.len() > 1;
    let mut paths = Vec::new();
    let mut plugins: Vec<Plugin> = Vec::new();
    let mut plugin_of = Vec::new();
    let mut tls = Vec::new();
    for service in &config.services {
        let named = |e: HostError| e.in_service(&service.name, many);
        let files = service.tls.as_ref();
        tls.push(
            files
                .map(|f| f.load(&service.name))
                .transpose()
                .map_err(named)?,
        );
        match paths.iter().position(|p| *p == &service.plugin) {
            Some(i) => plugin_of.push(i),
            None => {
                paths.push(&service.plugin);
                plugins.push(Plugin::load(&service.plugin).map_err(named)?);
                plugin_of.push(plugins.len() - 1);
            }
        }
    }
    Ok(Prepared {
        plugins,
        plugin_of,
        tls,
    })
}

/// React to the worker's events until it has stopped: announce once it serves (its stop
/// handlers are in place then).
async fn supervise(
    mut link: Link,
    listening: Vec<String>,
    metrics: Option<std::net::SocketAddr>,
) -> Result<(), HostError> {
    while let Some(event) = link.events.recv().await {
        // This process draws its own session-ticket secrets.
        crate::tls::tickets::rotate_if_due();
        if let WorkerEvent::Serving = event {
            crate::stdout::print_flushed(listening.iter().cloned())?;
            if let Some(addr) = metrics {
                crate::stdout::announce_metrics(addr)?;
            }
        }
    }
    Ok(())
}
