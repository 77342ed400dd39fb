//! The command line (`docs/spec.md`), parsed by clap and validated into a [`Config`].
//!
//! Usage errors (an unknown flag, a malformed number or address) are clap's: exit 2.
//! Everything after this point reports through [`HostError`](crate::error::HostError): exit 1.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bind::BindSpec;
use crate::cidr::Cidr;
use crate::log_filter::{LogFilter, LogLevel};
use crate::logging::LogFormat;
use parsers::{parse_metrics_bind, parse_plugin_opt, whole_number};
pub use validated::{Config, Service};

mod parsers;
mod validated;

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

#[cfg(test)]
mod tests;
