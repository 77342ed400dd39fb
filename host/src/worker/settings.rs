//! What a worker takes from the configuration: the process-wide part ([`Settings`]) and
//! each service's ([`ServiceSettings`]).

use std::time::Duration;

use crate::bind::Bound;
use crate::cli::{Config, Service};
use crate::error::HostError;
use crate::plugin::Plugin;
use crate::tls::Tls;

/// What a worker needs to know from the process-wide configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub graceful_timeout: Duration,
    /// 0 = never recycle.
    pub max_requests: u64,
    /// Each worker adds a random 0..=N to `max_requests`.
    pub max_requests_jitter: u64,
    /// `--access-log`, opened (one log for every service; records name their service).
    pub access_log: Option<crate::access_log::Sink>,
}

/// What a worker needs to know of one service's configuration.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    pub keep_alive: Option<Duration>,
    /// Output bounds of every connection.
    pub limits: crate::tcp::connection::Limits,
    pub max_connections: usize,
    /// Terminate TLS on every stream listener.
    pub tls: Option<crate::tls::Tls>,
    /// UDP peer sessions per socket before the least recently used is evicted.
    pub max_sessions: usize,
    /// TCP connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The sources PROXY headers are accepted from (`--proxy-protocol-from`); empty = any.
    pub proxy_protocol_from: Vec<crate::cidr::Cidr>,
    /// Deadline for the PROXY header and the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Config {
    /// The process-wide part of the configuration a worker's event loop needs (with the
    /// opened access log, if any).
    pub fn worker_settings(&self, access_log: Option<crate::access_log::Sink>) -> Settings {
        Settings {
            graceful_timeout: self.graceful_timeout,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            access_log,
        }
    }

    /// Thread mode's services, as its one worker serves them: service `i`'s plugin
    /// (`plugins[plugin_of[i]]`) checks its binds and makes its factory, and it takes its
    /// share of `bound`, in order, with its TLS configuration `tls[i]`.
    pub fn worker_services(
        &self,
        plugins: &[Plugin],
        plugin_of: &[usize],
        tls: &[Option<Tls>],
        bound: Vec<Bound>,
    ) -> Result<Vec<super::Service>, HostError> {
        let many = self.services.len() > 1;
        let mut bound = bound.into_iter();
        let mut services = Vec::new();
        for (i, service) in self.services.iter().enumerate() {
            let plugin = &plugins[plugin_of[i]];
            let named = |e: HostError| e.in_service(&service.name, many);
            plugin.check_binds(&service.binds).map_err(named)?;
            let factory = plugin.factory(&service.plugin_opts).map_err(named)?;
            services.push(super::Service {
                name: service.name.clone(),
                listeners: bound.by_ref().take(service.binds.len()).collect(),
                factory,
                settings: service.worker_settings(tls[i].clone()),
            });
        }
        Ok(services)
    }
}

impl Service {
    /// What a worker's event loop needs of one service (with the TLS configuration built
    /// from its files, if any).
    pub fn worker_settings(&self, tls: Option<crate::tls::Tls>) -> ServiceSettings {
        ServiceSettings {
            tls,
            max_sessions: self.max_sessions,
            proxy_protocol: self.proxy_protocol,
            proxy_protocol_from: self.proxy_protocol_from.clone(),
            handshake_timeout: self.handshake_timeout,
            keep_alive: self.keep_alive,
            max_connections: self.max_connections,
            limits: self.limits,
        }
    }
}
