//! [`Config`]: the command line (and the configuration file, see [`crate::config`]) with
//! defaults applied, as the rest of the host reads it.

use std::path::PathBuf;
use std::time::Duration;

use super::{Concurrency, ServeArgs};
use crate::bind::BindSpec;
use crate::cidr::Cidr;
use crate::log_filter::{LogFilter, LogLevel};
use crate::logging::LogFormat;
use crate::tls::TlsFiles;

/// Validated serving configuration: the process-wide settings and the services.
#[derive(Clone, Debug)]
pub struct Config {
    /// One or more (`[[service]]` blocks); every worker serves every one.
    pub services: Vec<Service>,
    pub backlog: i32,
    pub concurrency: Concurrency,
    pub workers: usize,
    pub timeout: Duration,
    pub graceful_timeout: Duration,
    pub max_requests: u64,
    /// `--max-requests-jitter`: each worker adds a random 0..=N to `max_requests`.
    pub max_requests_jitter: u64,
    pub pid_file: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    /// `--log-filter` / `SOCKHOST_LOG` (over `log_level`).
    pub log_filter: Option<LogFilter>,
    /// `--access-log`, with its format.
    pub access_log: Option<crate::access_log::Destination>,
    pub metrics_bind: Option<std::net::SocketAddr>,
}

/// One service: a plugin, its binds and the settings of its connections.
#[derive(Clone, Debug)]
pub struct Service {
    /// In logs and metrics (`service` label); from `name`, else the plugin file's name.
    pub name: String,
    pub plugin: PathBuf,
    pub binds: Vec<BindSpec>,
    /// `None` = never close idle connections.
    pub keep_alive: Option<Duration>,
    pub plugin_opts: Vec<(String, String)>,
    /// Output bounds of every connection.
    pub limits: crate::tcp::connection::Limits,
    pub max_connections: usize,
    pub max_sessions: usize,
    /// TLS on every TCP (and Unix) bind.
    pub tls: Option<TlsFiles>,
    pub handshake_timeout: Duration,
    pub proxy_protocol: bool,
    /// `--proxy-protocol-from`: the sources PROXY headers are accepted from; empty = any.
    pub proxy_protocol_from: Vec<Cidr>,
}

impl Config {
    /// Every service's binds, in order (the order of the `listening on` lines and of the
    /// sockets handed to workers and successors).
    pub fn binds(&self) -> impl Iterator<Item = &BindSpec> {
        self.services.iter().flat_map(|s| s.binds.iter())
    }
}

/// The default service name for a plugin file: `target/release/libecho.so` → `echo`.
pub fn service_name_for(plugin: &std::path::Path) -> String {
    let stem = plugin
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = stem.strip_prefix("lib").unwrap_or(&stem);
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "service".to_string()
    } else {
        name
    }
}

impl ServeArgs {
    /// Apply defaults: a one-service configuration.
    pub fn into_config(self) -> Result<Config, crate::error::HostError> {
        let binds = if self.bind.is_empty() {
            vec![BindSpec::parse("127.0.0.1:8060").expect("default bind parses")]
        } else {
            self.bind
        };
        let secs = |s: u64| Duration::from_secs(s);
        let plugin = self.plugin.ok_or(crate::error::HostError::NoPlugin)?;
        Ok(Config {
            services: vec![Service {
                name: service_name_for(&plugin),
                plugin,
                binds,
                keep_alive: (self.keep_alive > 0).then(|| secs(self.keep_alive)),
                plugin_opts: self.plugin_opts,
                limits: crate::tcp::connection::Limits {
                    max_pending: usize::try_from(self.max_pending).unwrap_or(usize::MAX),
                    send_timeout: (self.send_timeout > 0).then(|| secs(self.send_timeout)),
                },
                max_connections: self.max_connections as usize,
                max_sessions: self.max_sessions as usize,
                handshake_timeout: secs(self.handshake_timeout.max(1)),
                proxy_protocol: self.proxy_protocol,
                proxy_protocol_from: self.proxy_protocol_from,
                tls: match (self.cert_file, self.key_file) {
                    (Some(cert), Some(key)) => Some(TlsFiles {
                        cert,
                        key,
                        ca: self.ca_file,
                        alpn: self.alpn,
                    }),
                    _ => None,
                },
            }],
            backlog: self.backlog,
            concurrency: self.concurrency,
            workers: self.workers.map(|n| n as usize).unwrap_or_else(num_cpus),
            timeout: secs(self.timeout),
            graceful_timeout: secs(self.graceful_timeout),
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            pid_file: self.pid_file,
            user: self.user,
            group: self.group,
            log_level: self.log_level,
            log_format: self.log_format,
            log_filter: self.log_filter,
            access_log: self.access_log.map(|path| crate::access_log::Destination {
                path,
                format: self.access_log_format.unwrap_or(self.log_format),
            }),
            metrics_bind: self.metrics_bind,
        })
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
