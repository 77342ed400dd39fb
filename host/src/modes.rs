//! The commands that read a configuration (from flags, `SOCKHOST_*` variables and
//! `--config`): `check` (or `--check`), and serving it in the concurrency mode it names.

use std::ffi::OsString;

use clap::ArgMatches;

use crate::cli::{Concurrency, ServeArgs};
use crate::config::Given;
use crate::error::HostError;
use crate::log_filter::LogFilter;

/// `sockhost check …`: the serving flags after the subcommand's name.
pub fn check(mut args: ServeArgs, matches: &ArgMatches) -> Result<(), HostError> {
    args.check = true;
    let matches = matches
        .subcommand_matches("check")
        .expect("parsed as check");
    let tokens = std::env::args_os().skip(2).collect();
    run(&Given {
        args: &args,
        matches,
        tokens,
    })
}

/// `sockhost [FLAGS]`: serve (or, with `--check`, check) the configuration.
pub fn serve_or_check(args: ServeArgs, matches: &ArgMatches) -> Result<(), HostError> {
    let tokens: Vec<OsString> = std::env::args_os().skip(1).collect();
    run(&Given {
        args: &args,
        matches,
        tokens,
    })
}

/// Check the configuration, or load it, start logging and serve it in its concurrency mode.
fn run(given: &Given<'_>) -> Result<(), HostError> {
    if given.args.check {
        return crate::check::run(given);
    }
    let config = match crate::config::load(given) {
        Ok((config, _)) => config,
        Err(mut problems) => return Err(HostError::Config(problems.swap_remove(0))),
    };
    crate::logging::init(
        LogFilter::effective(config.log_filter.as_ref(), config.log_level),
        config.log_format,
    );
    match config.concurrency {
        Concurrency::Thread => crate::thread_mode::run(&config),
        Concurrency::Process => crate::arbiter::run(&config),
    }
}
