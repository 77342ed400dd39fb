//! The command line (`docs/spec.md`), parsed by clap and validated into a [`Config`].
//!
//! Usage errors (an unknown flag, a malformed number or address) are clap's: exit 2.
//! Everything after this point reports through [`HostError`](crate::error::HostError): exit 1.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bind::BindSpec;
use crate::cidr::Cidr;
use crate::log_filter::LogFilter;
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
    version = crate::version::SHORT,
    long_version = crate::version::long(),
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true
)]
#[command(
    after_help = "Signals to the arbiter: TERM/INT graceful stop, QUIT immediate stop, \
HUP reload (re-read --config, plugins and certificates from disk), TTIN/TTOU one worker \
more/fewer, USR1 reopen the access log.\n\
Example: sockhost --plugin target/release/libecho.so --bind 127.0.0.1:8070"
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
    /// Check a configuration as a real start would (the config file, every plugin loaded in
    /// a child process with its options, certificates, binds), print one line per problem,
    /// serve nothing; exit 0 only if a start would succeed. Same as `-t`.
    Check(Box<ServeArgs>),
    /// Print a plugin's metadata and ABI check result; serve nothing.
    Inspect {
        /// The plugin library (.so / .dylib / .dll).
        path: PathBuf,
        /// Log verbosity (debug shows the full layout report of an incompatible plugin).
        #[arg(long, value_enum, default_value_t = LogLevel::Warn)]
        log_level: LogLevel,
    },
    /// Print a shell completion script to stdout (install: see README, "Install").
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (install: see README, "Install").
    Manpage,
}

/// Log line format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
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
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Read settings from this TOML file: a key per flag, `[[service]]` blocks for several
    /// services (docs/configuration.md). Every flag can also be set by a SOCKHOST_<FLAG>
    /// variable; precedence: defaults < file < variables < flags.
    #[arg(long, value_name = "F")]
    pub config: Option<PathBuf>,

    /// Check the configuration (as `sockhost check`) instead of serving.
    #[arg(short = 't', long)]
    pub check: bool,

    /// The protocol plugin (.so on Linux, .dylib on macOS, .dll on Windows).
    #[arg(long, value_name = "PATH", required_unless_present = "config")]
    pub plugin: Option<PathBuf>,

    /// Where to listen (repeatable; default 127.0.0.1:8060): 127.0.0.1:8070, [::1]:8070,
    /// localhost:8070, :8070 (all interfaces, IPv4 and IPv6), port 0 for a free port; prefix
    /// udp:// for UDP; unix:/PATH[?mode=660&owner=U&group=G] for a Unix-domain socket.
    #[arg(long, value_name = "ADDR", value_parser = BindSpec::parse)]
    pub bind: Vec<BindSpec>,

    /// Listen queue length.
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: i32,

    /// Close a connection (or UDP peer session) idle this long since its last read; 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = whole_number(0))]
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
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = whole_number(0))]
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
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = whole_number(1))]
    pub timeout: u64,

    /// On stop or reload, how long old workers may finish their connections.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = whole_number(0))]
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
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = whole_number(0))]
    pub max_requests: u64,

    /// With --max-requests: each worker recycles after --max-requests plus a random 0..=N
    /// connections, so that workers started together do not all recycle together.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Open connections per worker (of each service); past it, new ones wait in the backlog.
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

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Per-target log levels, RUST_LOG style: `warn,sockhost::tcp=debug,plugin=trace`. A bare
    /// level replaces --log-level as the default; targets are the host's modules
    /// (`sockhost::…`), `plugin` (every plugin record; `plugin::<module>` one plugin's
    /// modules) and libraries (`rustls`).
    #[arg(long, value_name = "FILTER", env = "SOCKHOST_LOG", value_parser = LogFilter::parse)]
    pub log_filter: Option<LogFilter>,

    /// Write one line per finished connection or UDP session to this file (appended,
    /// created 0640), or to stdout with `-`; USR1 reopens it (log rotation).
    #[arg(long, value_name = "PATH|-")]
    pub access_log: Option<PathBuf>,

    /// Access log line format (default: as --log-format).
    #[arg(long, value_enum, value_name = "FORMAT", requires = "access_log")]
    pub access_log_format: Option<LogFormat>,

    /// TCP binds expect a PROXY protocol v1/v2 header first.
    #[arg(long)]
    pub proxy_protocol: bool,

    /// With --proxy-protocol: believe headers only from these sources (address blocks such
    /// as 10.0.0.0/8, or single addresses; comma-separated); connections from anywhere else
    /// are closed. Without it any client that reaches the port can claim any address.
    #[arg(
        long,
        value_name = "CIDR,...",
        value_delimiter = ',',
        value_parser = Cidr::parse,
        requires = "proxy_protocol"
    )]
    pub proxy_protocol_from: Vec<Cidr>,

    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 for a free one).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_bind)]
    pub metrics_bind: Option<std::net::SocketAddr>,
}

/// The command line as parsed: every serving flag also read from `SOCKHOST_<FLAG>`
/// (`--keep-alive` from `SOCKHOST_KEEP_ALIVE`) when not given.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
        .mut_args(with_env)
        .mut_subcommand("check", |c| c.mut_args(with_env))
}

/// The serving flags alone (the configuration file's keys are replayed through it).
pub fn serve_command() -> clap::Command {
    ServeArgs::augment_args(clap::Command::new("sockhost").no_binary_name(false)).mut_args(with_env)
}

/// The environment variable of a flag: `keep-alive` → `SOCKHOST_KEEP_ALIVE`.
pub fn env_name(long: &str) -> String {
    format!("SOCKHOST_{}", long.to_ascii_uppercase().replace('-', "_"))
}

fn with_env(arg: clap::Arg) -> clap::Arg {
    match arg.get_long() {
        Some(long) if arg.get_env().is_none() && !matches!(long, "check" | "help" | "version") => {
            // Leaked: a handful of short names, once per command built.
            let name: &'static str = Box::leak(env_name(long).into_boxed_str());
            arg.env(name)
        }
        _ => arg,
    }
}

fn parse_metrics_bind(s: &str) -> Result<std::net::SocketAddr, String> {
    let spec = BindSpec::parse(s)?;
    if spec.transport != crate::bind::Transport::Tcp {
        return Err("the metrics endpoint is HTTP over TCP".to_string());
    }
    // Clap names the flag; the resolver's own message would name --bind.
    spec.resolve().map_err(|e| match e {
        crate::error::HostError::Resolve { reason, .. } => format!("cannot resolve: {reason}"),
        other => other.to_string(),
    })
}

/// A value parser for a whole number of at least `min` (seconds, counts), whose error says
/// so in words: with negative numbers allowed as values (see [`Cli`]), `--keep-alive -1`
/// reaches it, instead of `-1` being taken for an unknown flag.
fn whole_number(min: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| format!("expected a whole number, {min} or more"))
    }
}

fn parse_plugin_opt(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

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
        let plugin = self.plugin.ok_or_else(|| {
            crate::error::HostError::Config(
                "no plugin: give --plugin PATH (or `plugin` in the --config file)".to_string(),
            )
        })?;
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

/// `sockhost completions SHELL`: the completion script, from the clap definition.
pub fn print_completions(shell: clap_complete::Shell) -> Result<(), crate::error::HostError> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sockhost", &mut out);
    crate::stdout::print_bytes(&out)
}

/// `sockhost manpage`: sockhost(1) in roff, from the clap definition.
pub fn print_manpage() -> Result<(), crate::error::HostError> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| crate::error::HostError::io("rendering the man page", e))?;
    crate::stdout::print_bytes(&out)
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
    fn plugin_is_required_unless_inspecting_or_configured() {
        assert!(Cli::try_parse_from(["sockhost"]).is_err());
        assert!(Cli::try_parse_from(["sockhost", "--config", "x.toml"]).is_ok());
        assert!(Cli::try_parse_from(["sockhost", "check", "--config", "x.toml"]).is_ok());
        let cli = Cli::try_parse_from(["sockhost", "inspect", "x.so"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Inspect { .. })));
    }

    #[test]
    fn defaults_follow_the_spec() {
        let cli = Cli::try_parse_from(["sockhost", "--plugin", "x.so"]).unwrap();
        let c = cli.serve.into_config().unwrap();
        let s = &c.services[0];
        assert_eq!(s.binds[0].to_string(), "tcp://127.0.0.1:8060");
        assert_eq!(s.name, "x");
        assert_eq!(c.backlog, 2048);
        assert_eq!(s.keep_alive, Some(Duration::from_secs(15)));
        assert_eq!(c.concurrency, Concurrency::Process);
        assert_eq!(s.max_connections, 10000);
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
    fn access_log_format_follows_log_format_unless_given() {
        let parse = |args: &[&str]| {
            let mut all = vec!["sockhost", "--plugin", "x"];
            all.extend(args);
            Cli::try_parse_from(all)
                .unwrap()
                .serve
                .into_config()
                .unwrap()
        };
        assert!(parse(&[]).access_log.is_none());
        let json = parse(&["--log-format", "json", "--access-log", "-"]);
        assert_eq!(json.access_log.unwrap().format, LogFormat::Json);
        let text = parse(&[
            "--log-format",
            "json",
            "--access-log",
            "a.log",
            "--access-log-format",
            "text",
        ]);
        assert_eq!(text.access_log.unwrap().format, LogFormat::Text);
        assert!(
            Cli::try_parse_from(["sockhost", "--plugin", "x", "--access-log-format", "json"])
                .is_err()
        );
    }

    #[test]
    fn a_bad_log_filter_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["sockhost", "--plugin", "x", "--log-filter", "sockhost=loud"])
                .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn keep_alive_zero_means_never() {
        let cli = Cli::try_parse_from(["sockhost", "--plugin", "x", "--keep-alive", "0"]).unwrap();
        assert_eq!(
            cli.serve.into_config().unwrap().services[0].keep_alive,
            None
        );
    }
}
