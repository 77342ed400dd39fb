//! `old-host-loader PATH`: load a plugin exactly as sockhost 0.1.0 did — plugin-api 0.1.0's
//! `Library::load`, then its factory with no options — and say whether that worked.
//!
//! It is the "old host" in the compatibility tests: a plugin built against a newer
//! plugin-api that still loads here will load in a deployed 0.1.0 sockhost, and one that
//! needs what 0.1.0 lacks must be refused here with one `error:` line, not crash.
//!
//! Prints `ok NAME VERSION` and exits 0, or prints `error: MESSAGE` to stderr and exits 1
//! (2 for a wrong command line).

use std::path::Path;
use std::process::ExitCode;

use plugin_api::host::{Library, LogLevel, LogSink};

/// The plugin's log records, on stderr, as sockhost 0.1.0 would log them.
fn log_to_stderr(level: LogLevel, target: &str, message: &str) {
    eprintln!("{level:?} {target}: {message}");
}

/// Load `path` and build its factory; `Err` is the one-line message for `error:`.
fn load(path: &Path) -> Result<(String, String), String> {
    let library = Library::load(path).map_err(|e| e.to_string())?;
    let meta = library.meta();
    let sink = LogSink {
        sink: log_to_stderr,
        max_level: LogLevel::Info,
    };
    // As sockhost 0.1.0's worker: the factory is built once, before serving.
    let factory = library
        .factory(&[], sink)
        .map_err(|m| format!("plugin {}: {m}", meta.name))?;
    drop(factory);
    Ok((meta.name, meta.version))
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("error: usage: old-host-loader PATH");
        return ExitCode::from(2);
    };
    match load(Path::new(&path)) {
        Ok((name, version)) => {
            println!("ok {name} {version}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
