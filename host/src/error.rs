//! The host's error type. Each variant's text is the part after `error: ` on stderr, and
//! says what failed, where, and (when it is not obvious) what to do.

use std::io;

use plugin_api::host::LoadError;

/// Everything that can stop sockhost from starting (or an arbiter from continuing).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0}")]
    Load(#[from] LoadError),

    #[error("plugin {name}: {message}")]
    PluginRejected { name: String, message: String },

    #[error("plugin {name} does not serve {transport}, but --bind {spec} asks for it")]
    TransportNotServed {
        name: String,
        transport: &'static str,
        spec: String,
    },

    #[error("--bind {spec}: cannot resolve: {reason}")]
    Resolve { spec: String, reason: String },

    /// `spec` names the flag too: `--bind tcp://…` or `--metrics-bind …`.
    #[error("{spec}: {source}")]
    Bind { spec: String, source: io::Error },

    #[error("{0}")]
    Privileges(String),

    /// A worker could not start (its own message: plugin load failure, privileges, ...).
    #[error("{0}")]
    WorkerStartup(String),

    #[error("{0}")]
    Tls(String),

    #[error("socket handoff: {0}")]
    Handoff(String),

    /// A configuration problem (file, line and key where there is a file).
    #[error("{0}")]
    Config(String),

    /// Failure already reported on stderr (by `sockhost check`, one line per problem).
    #[error("")]
    Reported,

    /// An option or mode this platform does not have.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    #[error("{0}")]
    Unsupported(String),

    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

impl HostError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> HostError {
        HostError::Io {
            what: what.into(),
            source,
        }
    }
}
