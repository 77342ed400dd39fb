//! `sockhost`: parse the command line, dispatch to the command, and turn any error into one
//! `error:` line.

mod access_log;
mod arbiter;
mod bind;
mod check;
mod cidr;
mod civil_date;
mod cli;
mod config;
mod connections;
mod error;
mod handoff;
mod keep_alive;
mod log_filter;
mod logging;
mod metrics;
mod modes;
mod notify;
mod pid_file;
mod plugin;
mod privileges;
mod proc_title;
mod proxy_protocol;
mod rate_limit;
mod services;
mod shared;
mod sockets;
mod stdout;
mod tcp;
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
