//! Logs go to stderr through tracing, filtered by `--log-level`. Plugin log records arrive
//! through the ABI and are printed here too, tagged with the plugin's name.

use std::sync::OnceLock;

use plugin_api::host::{LogLevel as PluginLevel, LogSink};
use tracing::Level;

use crate::cli::LogLevel;

fn level(l: LogLevel) -> Level {
    match l {
        LogLevel::Error => Level::ERROR,
        LogLevel::Warn => Level::WARN,
        LogLevel::Info => Level::INFO,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Trace => Level::TRACE,
    }
}

/// Install the stderr subscriber (once per process).
pub fn init(log_level: LogLevel) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level(log_level))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A failed log write (stderr's reader is gone: EPIPE) is dropped; by default it is
        // reported with `eprintln!`, which panics on the same broken stderr.
        .log_internal_errors(false)
        .try_init();
}

static PLUGIN_NAME: OnceLock<String> = OnceLock::new();

/// The sink handed to the plugin: its records become tracing events with `plugin=<name>`.
pub fn plugin_sink(plugin_name: &str, log_level: LogLevel) -> LogSink {
    let _ = PLUGIN_NAME.set(plugin_name.to_string());
    let max_level = match log_level {
        LogLevel::Error => PluginLevel::Error,
        LogLevel::Warn => PluginLevel::Warn,
        LogLevel::Info => PluginLevel::Info,
        LogLevel::Debug => PluginLevel::Debug,
        LogLevel::Trace => PluginLevel::Trace,
    };
    LogSink {
        sink: plugin_record,
        max_level,
    }
}

fn plugin_record(level: PluginLevel, target: &str, message: &str) {
    let plugin = PLUGIN_NAME.get().map(String::as_str).unwrap_or("?");
    match level {
        PluginLevel::Off => {}
        PluginLevel::Error => tracing::error!(plugin = %plugin, module = %target, "{message}"),
        PluginLevel::Warn => tracing::warn!(plugin = %plugin, module = %target, "{message}"),
        PluginLevel::Info => tracing::info!(plugin = %plugin, module = %target, "{message}"),
        PluginLevel::Debug => tracing::debug!(plugin = %plugin, module = %target, "{message}"),
        PluginLevel::Trace => tracing::trace!(plugin = %plugin, module = %target, "{message}"),
    }
}
