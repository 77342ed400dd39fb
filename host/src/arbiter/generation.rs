//! A generation: one set of workers running the same configuration, plugin snapshots and
//! TLS configurations, as they were on disk when it was prepared (at startup or a reload).

use crate::cli::Config;
use crate::error::HostError;
use crate::tls::Tls;

use super::snapshot::Snapshot;

/// One set of workers running the same configuration (re-read from the file at each
/// reload), plugin snapshots and TLS configurations (certificates re-read at each reload).
pub struct Generation {
    pub(super) id: u64,
    pub config: Config,
    /// One snapshot per distinct plugin file: two services of one plugin share a library
    /// in each worker (two factories).
    pub snapshots: Vec<Snapshot>,
    /// Each service's index in `snapshots`.
    pub plugin_of: Vec<usize>,
    /// Each service's TLS configuration.
    pub tls: Vec<Option<Tls>>,
}

impl Generation {
    /// Snapshot the plugins and read the certificates, as they are on disk now. Any
    /// service's failure fails the whole generation.
    pub(crate) fn prepare(id: u64, config: Config) -> Result<Generation, HostError> {
        let mut tls = Vec::new();
        let mut snapshots: Vec<Snapshot> = Vec::new();
        let mut plugin_of = Vec::new();
        let many = config.services.len() > 1;
        for service in &config.services {
            let named = |e: HostError| e.in_service(&service.name, many);
            tls.push(
                service
                    .tls
                    .as_ref()
                    .map(|files| files.load(&service.name))
                    .transpose()
                    .map_err(named)?,
            );
            match snapshots.iter().position(|s| s.path == service.plugin) {
                Some(i) => plugin_of.push(i),
                None => {
                    snapshots.push(Snapshot::take(&service.plugin).map_err(named)?);
                    plugin_of.push(snapshots.len() - 1);
                }
            }
        }
        Ok(Generation {
            id,
            config,
            snapshots,
            plugin_of,
            tls,
        })
    }
}

/// A reload keeps the listening sockets: the re-read configuration must have the same
/// services with the same binds (a change to them needs a restart).
pub(super) fn same_sockets(running: &Config, reread: &Config) -> Result<(), HostError> {
    let shape = |c: &Config| -> Vec<(String, Vec<String>)> {
        c.services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.binds.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    };
    let process_wide = |c: &Config| {
        format!(
            "{:?}",
            (
                c.backlog,
                c.concurrency,
                c.workers,
                c.timeout,
                c.graceful_timeout,
                c.max_requests,
                &c.pid_file,
                &c.user,
                &c.group,
                c.log_level,
                c.metrics_bind,
            )
        )
    };
    if process_wide(running) != process_wide(reread) {
        tracing::warn!("reload: process-wide settings changed in the configuration (workers, user, pid-file, ...); they take effect at the next start");
    }
    if shape(running) != shape(reread) {
        return Err(HostError::BindsChanged);
    }
    Ok(())
}
