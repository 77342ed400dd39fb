//! The host's error types. Each variant's text is the part after `error: ` on stderr, and
//! says what failed, where, and (when it is not obvious) what to do. The text is part of
//! the contract (tests match it), so a variant's `#[error]` is its one spelling.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(target_os = "linux")]
use nix::unistd::{Gid, Uid};
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

    #[error(transparent)]
    #[cfg(target_os = "linux")]
    Privileges(#[from] PrivilegeError),

    /// A worker could not start. Its message is the worker's own error line, which reached
    /// the arbiter as text over the status pipe (the worker is another process).
    #[error("{0}")]
    WorkerStartup(String),

    #[error(transparent)]
    Tls(#[from] TlsError),

    #[error("socket handoff: {0}")]
    Handoff(#[from] HandoffError),

    /// A configuration problem (file, line and key where there is a file).
    #[error("{0}")]
    Config(#[from] Problem),

    /// The arguments this process was started with no longer parse (on reload: a
    /// `SOCKHOST_*` variable cannot change, so this is the command line itself).
    #[error("{}", first_line(&.0.to_string()))]
    Arguments(#[from] clap::Error),

    /// Neither `--plugin` nor the file's `plugin` key.
    #[error("no plugin: give --plugin PATH (or `plugin` in the --config file)")]
    NoPlugin,

    /// A reload found other services or binds than the running ones.
    #[error(
        "the services or their binds changed in the configuration; a reload keeps the \
         listening sockets, so restart sockhost to apply that"
    )]
    BindsChanged,

    /// One service's problem, when there are several services.
    #[error("service {service}: {source}")]
    InService {
        service: String,
        source: Box<HostError>,
    },

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

    /// This error, named for service `service` when `many` services run (one service
    /// needs no name).
    pub fn in_service(self, service: &str, many: bool) -> HostError {
        match many {
            true => HostError::InService {
                service: service.to_string(),
                source: Box::new(self),
            },
            false => self,
        }
    }
}

/// The exit status of a command, and its error (if any) as one `error:` line on stderr;
/// [`HostError::Reported`] was reported already.
pub fn exit_code(done: Result<(), HostError>) -> ExitCode {
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(HostError::Reported) => ExitCode::FAILURE,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is a broken pipe.
            let _ = writeln!(io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--user` / `--group`: a name that does not resolve, or a switch that fails (Linux only;
/// elsewhere the flags are refused).
#[cfg(target_os = "linux")]
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `flag` is `--user` or `--group`.
    #[error("{flag} {name}: {source}")]
    Lookup {
        flag: &'static str,
        name: String,
        source: nix::Error,
    },
    #[error("--user {0}: no such user")]
    NoSuchUser(String),
    #[error("--group {0}: no such group")]
    NoSuchGroup(String),
    #[error("cannot drop supplementary groups: {0}")]
    DropGroups(nix::Error),
    #[error("cannot switch to group {gid}: {source}")]
    SetGroup { gid: Gid, source: nix::Error },
    #[error("cannot switch to user {name} ({uid}): {source}")]
    SetUser {
        name: String,
        uid: Uid,
        source: nix::Error,
    },
    #[error("still root after switching to {0}; refusing to serve")]
    StillRoot(String),
}

/// The TLS files: unreadable, not PEM, or not a usable certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `flag` is `--cert-file`, `--key-file` or `--ca-file`.
    #[error("{flag} {}: cannot read: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{flag} {}: bad PEM: {source}", path.display())]
    BadPem {
        flag: &'static str,
        path: PathBuf,
        source: pki_types::pem::Error,
    },
    #[error("{flag} {}: no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)", path.display())]
    NoCertificate { flag: &'static str, path: PathBuf },
    #[error("--key-file {}: no private key found (expected a PKCS#8, PKCS#1 RSA or SEC1 EC key in PEM)", .0.display())]
    NoKey(PathBuf),
    /// A CA certificate rustls refuses, or a client verifier it cannot build from them.
    #[error("--ca-file {}: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("--key-file {} does not match the certificate in --cert-file {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("--cert-file {} / --key-file {}: {source}", cert.display(), key.display())]
    CertKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS versions: {0}")]
    Versions(rustls::Error),
    #[error("session tickets: cannot map their shared secrets or draw one")]
    SessionTickets,
}

/// A socket inherited from a predecessor (`LISTEN_FDS`) that cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("inherited socket {name}: {problem}")]
pub struct HandoffError {
    pub name: String,
    pub problem: HandoffProblem,
}

/// What is wrong with an inherited socket.
#[derive(Debug, thiserror::Error)]
pub enum HandoffProblem {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("neither an IP socket nor a Unix socket with a path")]
    NoAddress,
    #[error("neither a stream nor a datagram socket")]
    NotStreamOrDatagram,
    #[error("a stream socket that is not listening")]
    NotListening,
    #[error("a Unix datagram socket (not supported)")]
    UnixDatagram,
}

/// One problem with a configuration, as one line: `FILE:LINE: KEY: what`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// The key's path: `keep-alive`, `service[2].cert-file`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
            }
            f.write_str(" ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

/// The first line of a clap error, without its `error: ` prefix.
pub fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}
