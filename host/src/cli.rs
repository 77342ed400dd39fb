//! The command line (`../shared/SPEC.md`), parsed by clap and validated into a [`Config`].
//!
//! Usage errors (an unknown flag, a malformed number or address) are clap's: exit 2.
//! Everything after this point reports through [`HostError`](crate::error::HostError): exit 1.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bind::BindSpec;
use crate::tls::TlsFiles;

/// sockhost: a socket server that loads its protocol from a plugin.
///
/// Binds the sockets, pre-forks worker processes, terminates TLS, times out idle
/// connections and supervises the workers; the protocol itself comes from a dynamic
/// library built against the plugin-api crate (one consumer per TCP connection and per
/// UDP peer).
#[derive(Parser, Debug)]
#[command(
    name = "sockhost",
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
#[command(
    after_help = "Signals to the arbiter: TERM/INT graceful stop, QUIT immediate stop, \
HUP reload the plugin from disk, TTIN/TTOU one worker more/fewer.\n\
Example: sockhost --plugin target/release/libecho.so --bind :8070"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a plugin's metadata and ABI check result; serve nothing.
    Inspect {
        /// The plugin library (.so / .dylib / .dll).
        path: PathBuf,
        /// Log verbosity (debug shows the full layout report of an incompatible plugin).
        #[arg(long, value_enum, default_value_t = LogLevel::Warn)]
        log_level: LogLevel,
    },
}

/// How requests are spread over CPUs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Pre-forked worker processes sharing the listening sockets (default; Linux only).
    Process,
    /// One process serving every socket on its own event loop (default elsewhere).
    Thread,
}

impl Concurrency {
    /// Process mode on Linux; thread mode elsewhere (Windows, macOS).
    pub const DEFAULT: Concurrency = if cfg!(target_os = "linux") {
        Concurrency::Process
    } else {
        Concurrency::Thread
    };
}

/// Log verbosity.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Lifecycle events (default).
    Info,
    /// Per-connection events.
    Debug,
    /// Everything.
    Trace,
}

/// Flags of the serving command.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The protocol plugin (.so on Linux, .dylib on macOS, .dll on Windows).
    #[arg(long, value_name = "PATH", required = true)]
    pub plugin: Option<PathBuf>,

    /// Where to listen (repeatable): 127.0.0.1:8070, [::1]:8070, localhost:8070, :8070 (all
    /// interfaces, IPv4 and IPv6), port 0 for a free port; prefix udp:// for UDP.
    #[arg(long, value_name = "ADDR", value_parser = BindSpec::parse)]
    pub bind: Vec<BindSpec>,

    /// Listen queue length.
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: i32,

    /// Close a connection (or UDP peer session) idle this long since its last read; 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub keep_alive: u64,

    /// PEM certificate chain: serve TCP binds over TLS.
    #[arg(long, value_name = "F", requires = "key_file")]
    pub cert_file: Option<PathBuf>,

    /// PEM private key for --cert-file.
    #[arg(long, value_name = "F", requires = "cert_file")]
    pub key_file: Option<PathBuf>,

    /// With TLS: require client certificates signed by these CAs.
    #[arg(long, value_name = "F", requires = "cert_file")]
    pub ca_file: Option<PathBuf>,

    /// With TLS: ALPN protocols offered, in order of preference (comma-separated).
    #[arg(
        long,
        value_name = "P,...",
        value_delimiter = ',',
        requires = "cert_file"
    )]
    pub alpn: Vec<String>,

    /// With TLS: close a connection whose handshake has not finished after this long.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Pre-forked worker processes, or one process serving on its own event loop.
    #[arg(long, value_enum, default_value_t = Concurrency::DEFAULT)]
    pub concurrency: Concurrency,

    /// Worker processes (process mode); default: the number of CPUs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,

    /// KEY=VALUE handed to the plugin's factory (repeatable).
    #[arg(long = "plugin-opt", value_name = "KEY=VALUE", value_parser = parse_plugin_opt)]
    pub plugin_opts: Vec<(String, String)>,

    /// A worker whose event loop has not reported alive for this long is killed and replaced
    /// (new connections avoid it after 1.5 s already; thread mode: the process logs it and
    /// exits with status 70, for a service manager to restart it).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// On stop or reload, how long old workers may finish their connections.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub graceful_timeout: u64,

    /// Close a connection whose unsent output (its consumer's writes and bytes other
    /// consumers posted to it) would exceed this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_pending: u64,

    /// Close a connection that holds more than 64 KiB of unsent output for this long (a
    /// peer that stops reading or reads a trickle); 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub send_timeout: u64,

    /// A worker that has accepted N connections is recycled; 0 = off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_requests: u64,

    /// Open connections per worker; past it, new ones wait in the backlog.
    #[arg(long, value_name = "N", default_value_t = 10000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// UDP peer sessions per worker; past it, the least recently used is evicted.
    #[arg(long, value_name = "N", default_value_t = 10000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: u32,

    /// Write the arbiter's pid here after binding, locked for its life (a second instance
    /// with the same file, or a symlink here, is refused); removed at exit.
    #[arg(long, value_name = "F")]
    pub pid_file: Option<PathBuf>,

    /// Drop to this user after the sockets are bound, before loading the plugin (process
    /// mode: the workers; thread mode: the process).
    #[arg(long, value_name = "U")]
    pub user: Option<String>,

    /// Drop to this group after the sockets are bound (as --user does).
    #[arg(long, value_name = "G")]
    pub group: Option<String>,

    /// Log verbosity.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// TCP binds expect a PROXY protocol v1/v2 header first.
    #[arg(long)]
    pub proxy_protocol: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 for a free one).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_bind)]
    pub metrics_bind: Option<std::net::SocketAddr>,
}

fn parse_metrics_bind(s: &str) -> Result<std::net::SocketAddr, String> {
    let spec = BindSpec::parse(s)?;
    if spec.transport != crate::bind::Transport::Tcp {
        return Err("the metrics endpoint is HTTP over TCP".to_string());
    }
    spec.resolve().map_err(|e| e.to_string())
}

fn parse_plugin_opt(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Validated serving configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub plugin: PathBuf,
    pub binds: Vec<BindSpec>,
    pub backlog: i32,
    /// `None` = never close idle connections.
    pub keep_alive: Option<Duration>,
    pub concurrency: Concurrency,
    pub workers: usize,
    pub plugin_opts: Vec<(String, String)>,
    pub timeout: Duration,
    pub graceful_timeout: Duration,
    /// Output bounds of every connection.
    pub limits: crate::tcp::connection::Limits,
    pub max_requests: u64,
    pub max_connections: usize,
    pub max_sessions: usize,
    pub pid_file: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub log_level: LogLevel,
    /// TLS on every TCP bind.
    pub tls: Option<TlsFiles>,
    pub handshake_timeout: Duration,
    pub proxy_protocol: bool,
    pub metrics_bind: Option<std::net::SocketAddr>,
}

impl ServeArgs {
    /// Apply defaults and refuse what this build cannot do yet.
    pub fn into_config(self) -> Result<Config, crate::error::HostError> {
        let binds = if self.bind.is_empty() {
            vec![BindSpec::parse("127.0.0.1:8060").expect("default bind parses")]
        } else {
            self.bind
        };
        let secs = |s: u64| Duration::from_secs(s);
        Ok(Config {
            plugin: self.plugin.expect("clap requires --plugin"),
            binds,
            backlog: self.backlog,
            keep_alive: (self.keep_alive > 0).then(|| secs(self.keep_alive)),
            concurrency: self.concurrency,
            workers: self.workers.map(|n| n as usize).unwrap_or_else(num_cpus),
            plugin_opts: self.plugin_opts,
            timeout: secs(self.timeout),
            graceful_timeout: secs(self.graceful_timeout),
            limits: crate::tcp::connection::Limits {
                max_pending: usize::try_from(self.max_pending).unwrap_or(usize::MAX),
                send_timeout: (self.send_timeout > 0).then(|| secs(self.send_timeout)),
            },
            max_requests: self.max_requests,
            max_connections: self.max_connections as usize,
            max_sessions: self.max_sessions as usize,
            pid_file: self.pid_file,
            user: self.user,
            group: self.group,
            log_level: self.log_level,
            handshake_timeout: secs(self.handshake_timeout.max(1)),
            proxy_protocol: self.proxy_protocol,
            metrics_bind: self.metrics_bind,
            tls: match (self.cert_file, self.key_file) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert,
                    key,
                    ca: self.ca_file,
                    alpn: self.alpn,
                }),
                _ => None,
            },
        })
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plugin_is_required_unless_inspecting() {
        assert!(Cli::try_parse_from(["sockhost"]).is_err());
        let cli = Cli::try_parse_from(["sockhost", "inspect", "x.so"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Inspect { .. })));
    }

    #[test]
    fn defaults_follow_the_spec() {
        let cli = Cli::try_parse_from(["sockhost", "--plugin", "x.so"]).unwrap();
        let c = cli.serve.into_config().unwrap();
        assert_eq!(c.binds[0].to_string(), "tcp://127.0.0.1:8060");
        assert_eq!(c.backlog, 2048);
        assert_eq!(c.keep_alive, Some(Duration::from_secs(15)));
        assert_eq!(c.concurrency, Concurrency::Process);
        assert_eq!(c.max_connections, 10000);
    }

    #[test]
    fn plugin_opts_need_an_equals_sign() {
        assert!(
            Cli::try_parse_from(["sockhost", "--plugin", "x", "--plugin-opt", "novalue"]).is_err()
        );
        let cli =
            Cli::try_parse_from(["sockhost", "--plugin", "x", "--plugin-opt", "a=b=c"]).unwrap();
        assert_eq!(
            cli.serve.plugin_opts,
            vec![("a".to_string(), "b=c".to_string())]
        );
    }

    #[test]
    fn keep_alive_zero_means_never() {
        let cli = Cli::try_parse_from(["sockhost", "--plugin", "x", "--keep-alive", "0"]).unwrap();
        assert_eq!(cli.serve.into_config().unwrap().keep_alive, None);
    }
}
