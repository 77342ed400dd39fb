//! `sockhost`: parse the command line, run, and turn any error into one `error:` line.

// Outside Linux sockhost serves in thread mode only: process mode's shared pieces (metrics
// snapshots, the arbiter's endpoint, QUIT, reload) are compiled but unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

// Process mode (fork, SO_REUSEPORT balancing, Linux process APIs) is Linux only:
// elsewhere `arbiter_other.rs` refuses it.
#[cfg_attr(not(target_os = "linux"), path = "arbiter_other.rs")]
mod arbiter;
mod bind;
mod cli;
mod connections;
mod error;
// Socket inheritance (systemd, a reload's predecessor) is Linux only.
#[cfg_attr(not(target_os = "linux"), path = "handoff_other.rs")]
mod handoff;
mod keep_alive;
mod logging;
mod metrics;
// Linux only: systemd notification, pid files, privilege drop.
#[cfg(target_os = "linux")]
mod notify;
#[cfg(target_os = "linux")]
mod pid_file;
mod plugin;
#[cfg(target_os = "linux")]
mod privileges;
mod proxy_protocol;
mod services;
mod tcp;
mod thread_mode;
mod tls;
mod udp;
mod worker;

use std::io::Write;

use std::process::ExitCode;

use clap::Parser;

use crate::bind::Bound;
use crate::cli::{Cli, Command, Concurrency, Config};
use crate::error::HostError;

fn main() -> ExitCode {
    // Usage errors exit 2 (clap).
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is a broken pipe.
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), HostError> {
    if let Some(Command::Inspect { path, log_level }) = cli.command {
        logging::init(log_level);
        return plugin::inspect(&path);
    }
    let config = cli.serve.into_config()?;
    logging::init(config.log_level);
    match config.concurrency {
        Concurrency::Thread => thread_mode::run(&config),
        Concurrency::Process => arbiter::run(&config),
    }
}

/// Every `--bind`'s socket: inherited (systemd socket activation, or a thread-mode
/// predecessor) where one was handed over, else bound here.
fn bind_all(
    binds: &[bind::BindSpec],
    backlog: i32,
    reuseport: bool,
) -> Result<Vec<Bound>, HostError> {
    let inherited =
        handoff::inherited(binds)?.unwrap_or_else(|| binds.iter().map(|_| None).collect());
    binds
        .iter()
        .zip(inherited)
        .map(|(spec, inherited)| match inherited {
            Some(bound) => Ok(bound),
            None => Bound::bind(spec, backlog, reuseport),
        })
        .collect()
}

/// Print the `listening on` lines (SPEC.md) and flush them, once every socket is bound.
fn announce(bound: &[Bound]) -> Result<(), HostError> {
    print_flushed(bound.iter().map(Bound::listening_line))
}

/// Print the `metrics on http://ADDR/metrics` line.
fn announce_metrics(addr: std::net::SocketAddr) -> Result<(), HostError> {
    print_flushed([format!("metrics on http://{addr}/metrics")])
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
    /// The part of the configuration a worker's event loop needs (with the TLS
    /// configuration built from the files, if any).
    fn worker_settings(&self, tls: Option<tls::Tls>) -> worker::Settings {
        worker::Settings {
            tls,
            max_sessions: self.max_sessions,
            proxy_protocol: self.proxy_protocol,
            handshake_timeout: self.handshake_timeout,
            keep_alive: self.keep_alive,
            max_connections: self.max_connections,
            graceful_timeout: self.graceful_timeout,
            limits: self.limits,
            max_requests: self.max_requests,
        }
    }
}
