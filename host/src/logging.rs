//! Logs go to stderr through tracing, as text or JSON (`--log-format`), filtered by
//! `--log-level` and `--log-filter` ([`LogFilter`]). Plugin log records arrive through the
//! ABI and are printed here too, tagged with the plugin's name, under the target `plugin`.

use std::sync::OnceLock;

use plugin_api::host::{LogLevel as PluginLevel, LogSink};
use tracing::level_filters::LevelFilter;
use tracing::Level;

use crate::cli::LogFormat;
use crate::log_filter::LogFilter;

/// Install the stderr subscriber (once per process): `format`, filtered by `filter` (see
/// [`LogFilter`]).
pub fn init(filter: LogFilter, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let targets = filter.for_subscriber();
    let _ = FILTER.set(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // A failed log write (stderr's reader is gone: EPIPE) is dropped; by default it is
        // reported with `eprintln!`, which panics on the same broken stderr.
        .log_internal_errors(false);
    let layer = match format {
        LogFormat::Text => layer
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(targets)
            .boxed(),
        // One object per line, the event's fields beside time, level and target.
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(targets)
            .boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The filter in force, for plugin records.
static FILTER: OnceLock<LogFilter> = OnceLock::new();

static PLUGIN_NAME: OnceLock<String> = OnceLock::new();

/// The sink handed to the plugin: its records become tracing events with `plugin=<name>`,
/// those the filter lets through (the plugin is told the most verbose level that can pass).
pub fn plugin_sink(plugin_name: &str) -> LogSink {
    let _ = PLUGIN_NAME.set(plugin_name.to_string());
    let max = FILTER
        .get()
        .map_or(LevelFilter::INFO, LogFilter::plugin_max);
    let max_level = match max.into_level() {
        None => PluginLevel::Off,
        Some(Level::ERROR) => PluginLevel::Error,
        Some(Level::WARN) => PluginLevel::Warn,
        Some(Level::INFO) => PluginLevel::Info,
        Some(Level::DEBUG) => PluginLevel::Debug,
        Some(_) => PluginLevel::Trace,
    };
    LogSink {
        sink: plugin_record,
        max_level,
    }
}

fn plugin_record(level: PluginLevel, target: &str, message: &str) {
    let plugin = PLUGIN_NAME.get().map(String::as_str).unwrap_or("?");
    let passes = |l: Level| FILTER.get().is_none_or(|f| f.allows_plugin(target, l));
    match level {
        PluginLevel::Off => {}
        PluginLevel::Error if passes(Level::ERROR) => {
            tracing::error!(target: "plugin", plugin = %plugin, module = %target, "{message}")
        }
        PluginLevel::Warn if passes(Level::WARN) => {
            tracing::warn!(target: "plugin", plugin = %plugin, module = %target, "{message}")
        }
        PluginLevel::Info if passes(Level::INFO) => {
            tracing::info!(target: "plugin", plugin = %plugin, module = %target, "{message}")
        }
        PluginLevel::Debug if passes(Level::DEBUG) => {
            tracing::debug!(target: "plugin", plugin = %plugin, module = %target, "{message}")
        }
        PluginLevel::Trace if passes(Level::TRACE) => {
            tracing::trace!(target: "plugin", plugin = %plugin, module = %target, "{message}")
        }
        _ => {}
    }
}
