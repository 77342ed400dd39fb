//! `sockhost`: parse the command line, run, and turn any error into one `error:` line.

// Outside Linux sockhost serves in thread mode only: process mode's shared pieces (metrics
// snapshots, the arbiter's endpoint, QUIT, reload) are compiled but unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]
// Windows' `PathBuf` is larger, which pushes `HostError` (it holds a plugin's path) over
// clippy's size threshold for `Result`'s error; the size does not matter on a startup path.
#![cfg_attr(windows, allow(clippy::result_large_err))]

mod access_log;
// Process mode (fork, SO_REUSEPORT balancing, Linux process APIs) is Linux only:
// elsewhere `arbiter_other.rs` refuses it.
#[cfg_attr(not(target_os = "linux"), path = "arbiter_other.rs")]
mod arbiter;
mod bind;
// `sockhost check` loads plugins in a forked child: Unix only.
#[cfg_attr(windows, path = "check_windows.rs")]
mod check;
mod cidr;
mod cli;
mod config;
mod connections;
mod error;
// Socket inheritance (systemd, a reload's predecessor) is Linux only.
#[cfg_attr(not(target_os = "linux"), path = "handoff_other.rs")]
mod handoff;
mod keep_alive;
mod log_filter;
mod logging;
mod metrics;
// Linux only: systemd notification, pid files, privilege drop.
#[cfg(target_os = "linux")]
mod notify;
#[cfg(target_os = "linux")]
mod pid_file;
mod plugin;
// Outside Linux `--user`/`--group` are refused.
#[cfg_attr(not(target_os = "linux"), path = "privileges_other.rs")]
mod privileges;
// Worker titles: process mode's, Linux only.
#[cfg(target_os = "linux")]
mod proc_title;
mod proxy_protocol;
mod rate_limit;
mod services;
mod tcp;
// Thread mode outside Linux: no privilege drop, pid file, reload or watchdog.
#[cfg_attr(not(target_os = "linux"), path = "thread_mode_other.rs")]
mod thread_mode;
mod tls;
mod udp;
mod version;
mod worker;

use std::io::Write;

use std::process::ExitCode;

use clap::FromArgMatches;

use crate::bind::Bound;
use crate::cli::{Cli, Command, Concurrency, Config, LogFormat};
use crate::error::HostError;
use crate::log_filter::LogFilter;

fn main() -> ExitCode {
    // Usage errors exit 2 (clap).
    let matches = cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(HostError::Reported) => ExitCode::FAILURE,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is a broken pipe.
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<(), HostError> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (args, matches, tokens) = match cli.command {
        Some(Command::Inspect { path, log_level }) => {
            logging::init(LogFilter::effective(None, log_level), LogFormat::Text);
            return plugin::inspect(&path);
        }
        Some(Command::Completions { shell }) => return cli::print_completions(shell),
        Some(Command::Manpage) => return cli::print_manpage(),
        Some(Command::Check(mut args)) => {
            args.check = true;
            let sub = matches
                .subcommand_matches("check")
                .expect("parsed as check");
            (*args, sub, argv[1..].to_vec())
        }
        None => (cli.serve, matches, argv),
    };
    let given = config::Given {
        args: &args,
        matches,
        tokens,
    };
    if args.check {
        return check::run(&given);
    }
    let config = match config::load(&given) {
        Ok((config, _)) => config,
        Err(problems) => return Err(HostError::Config(problems[0].to_string())),
    };
    logging::init(
        LogFilter::effective(config.log_filter.as_ref(), config.log_level),
        config.log_format,
    );
    match config.concurrency {
        Concurrency::Thread => thread_mode::run(&config),
        Concurrency::Process => arbiter::run(&config),
    }
}

/// Every `--bind`'s socket: inherited (systemd socket activation, or a thread-mode
/// predecessor) where one was handed over, else bound here; and the Unix socket files this
/// process is to remove at exit: those it bound and those a predecessor handed over, never
/// systemd's (its socket unit owns the file).
fn bind_all(
    binds: &[bind::BindSpec],
    backlog: i32,
    reuseport: bool,
) -> Result<(Vec<Bound>, bind::UnixFiles), HostError> {
    let from_predecessor = handoff::from_predecessor();
    let inherited =
        handoff::inherited(binds)?.unwrap_or_else(|| binds.iter().map(|_| None).collect());
    let mut ours = Vec::new();
    let bound = binds
        .iter()
        .zip(inherited)
        .map(|(spec, inherited)| match inherited {
            Some(bound) => {
                ours.push(from_predecessor);
                Ok(bound)
            }
            None => {
                ours.push(true);
                Bound::bind(spec, backlog, reuseport)
            }
        })
        .collect::<Result<Vec<Bound>, HostError>>()?;
    let files = bind::UnixFiles::of(bound.iter().zip(ours).filter(|(_, o)| *o).map(|(b, _)| b));
    Ok((bound, files))
}

/// Print the `listening on` lines (SPEC.md) and flush them, once every socket is bound.
fn announce(bound: &[Bound]) -> Result<(), HostError> {
    print_flushed(bound.iter().map(Bound::listening_line))
}

/// Print the `metrics on http://ADDR/metrics` line.
fn announce_metrics(addr: std::net::SocketAddr) -> Result<(), HostError> {
    print_flushed([format!("metrics on http://{addr}/metrics")])
}

/// Write bytes to stdout and flush them.
fn print_bytes(bytes: &[u8]) -> Result<(), HostError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| HostError::io("writing to stdout", e))
}

/// Print lines to stdout and flush them (scripts and tests wait for them).
fn print_flushed(lines: impl IntoIterator<Item = String>) -> Result<(), HostError> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}").map_err(|e| HostError::io("writing to stdout", e))?;
    }
    out.flush()
        .map_err(|e| HostError::io("writing to stdout", e))
}

impl Config {
    /// The process-wide part of the configuration a worker's event loop needs (with the
    /// opened access log, if any).
    fn worker_settings(&self, access_log: Option<access_log::Sink>) -> worker::Settings {
        worker::Settings {
            graceful_timeout: self.graceful_timeout,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            access_log,
        }
    }
}

impl cli::Service {
    /// What a worker's event loop needs of one service (with the TLS configuration built
    /// from its files, if any).
    fn worker_settings(&self, tls: Option<tls::Tls>) -> worker::ServiceSettings {
        worker::ServiceSettings {
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
