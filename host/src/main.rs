//! `sockhost`: parse the command line, dispatch to the command, and turn any error into one
//! `error:` line.

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
mod civil_date;
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
mod modes;
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
mod shared;
mod sockets;
mod stdout;
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

use crate::cli::{Cli, Command};
use crate::error::HostError;
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
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(HostError::Reported) => ExitCode::FAILURE,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is a broken pipe.
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}
