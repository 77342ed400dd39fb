//! `sockhost`: parse the command line, dispatch to the command, and turn any error into one
//! `error:` line ([`error::exit_code`]).

// Outside Linux sockhost serves in thread mode only: process mode's shared pieces (metrics
// snapshots, the arbiter's endpoint, QUIT, reload) are compiled but unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]
// Windows' `PathBuf` is larger, which pushes `HostError` (it holds a plugin's path) over
// clippy's size threshold for `Result`'s error; the size does not matter on a startup path.
#![cfg_attr(windows, allow(clippy::result_large_err))]

mod access_log;
#[cfg_attr(not(target_os = "linux"), path = "arbiter_other.rs")]
mod arbiter;
mod bind;
#[cfg_attr(windows, path = "check_windows.rs")]
mod check;
mod cidr;
mod civil_date;
mod cli;
mod config;
mod connections;
mod error;
#[cfg_attr(not(target_os = "linux"), path = "handoff_other.rs")]
mod handoff;
mod keep_alive;
mod log_filter;
mod logging;
mod metrics;
mod modes;
#[cfg(target_os = "linux")]
mod notify;
#[cfg(target_os = "linux")]
mod pid_file;
mod plugin;
#[cfg_attr(not(target_os = "linux"), path = "privileges_other.rs")]
mod privileges;
#[cfg(target_os = "linux")]
mod proc_title;
mod proxy_protocol;
mod rate_limit;
mod services;
mod shared;
mod sockets;
mod stdout;
mod tcp;
#[cfg_attr(not(target_os = "linux"), path = "thread_mode_other.rs")]
mod thread_mode;
mod tls;
mod udp;
mod version;
mod worker;

use std::process::ExitCode;

use clap::FromArgMatches;

use crate::cli::{Cli, Command};
use crate::log_filter::LogFilter;
use crate::logging::LogFormat;

fn main() -> ExitCode {
    // Usage errors exit 2 (clap).
    let matches = cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let done = match cli.command {
        Some(Command::Inspect { path, log_level }) => {
            logging::init(LogFilter::effective(None, log_level), LogFormat::Text);
            plugin::inspect(&path)
        }
        Some(Command::Completions { shell }) => cli::print_completions(shell),
        Some(Command::Manpage) => cli::print_manpage(),
        Some(Command::Check(args)) => modes::check(*args, &matches),
        None => modes::serve_or_check(cli.serve, &matches),
    };
    error::exit_code(done)
}
