//! Logs go to stderr through tracing, as text or JSON (`--log-format`), filtered by
//! `--log-level` and `--log-filter` ([`LogFilter`]). Plugin log records arrive through the
//! ABI and are printed here too, tagged with the plugin's name, under the target `plugin`.
//!
//! Nothing a peer sends may turn into a log line at the default level per connection, or
//! into more than one line per event:
//! - `log` records (rustls's, from its `logging` feature) come through [`LogBridge`], which
//!   demotes rustls's to debug: rustls warns about what a peer controls (a bad SNI name, an
//!   unexpected message, a warning alert), once per connection;
//! - plugin panics are logged through [`plugin_panic`]: one line, escaped, rate-limited;
//! - text from outside (panic messages, plugin log records) is [`escape`]d, so it cannot
//!   start a forged line of its own.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::time::Duration;

use clap::ValueEnum;
use plugin_api::host::{LogLevel as PluginLevel, LogSink};
use tracing::level_filters::LevelFilter;
use tracing::Level;

use crate::log_filter::LogFilter;
use crate::rate_limit::RateLimit;

/// Log line format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the stderr subscriber (once per process): `format`, filtered by `filter` (see
/// [`LogFilter`]), and the `log` bridge.
pub fn init(filter: LogFilter, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let targets = filter.for_subscriber();
    let log_max = match filter.max_level().into_level() {
        None => log::LevelFilter::Off,
        Some(Level::ERROR) => log::LevelFilter::Error,
        Some(Level::WARN) => log::LevelFilter::Warn,
        Some(Level::INFO) => log::LevelFilter::Info,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(_) => log::LevelFilter::Trace,
    };
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
    let subscriber = tracing_subscriber::registry().with(layer);
    // Not `try_init`: it would install tracing-log's own bridge instead of ours.
    if tracing::subscriber::set_global_default(subscriber).is_ok()
        && log::set_logger(&LogBridge).is_ok()
    {
        // The bridge's first cut; the subscriber's filter judges each record's target.
        log::set_max_level(log_max);
    }
}

/// Crates whose `log` records are about what a peer did, logged at most at debug level.
const PEER_DRIVEN: &[&str] = &["rustls"];

/// `log` records into tracing (what `tracing_log::LogTracer` does), with the records of
/// [`PEER_DRIVEN`] crates demoted to debug: rustls `warn!`s "Illegal SNI hostname received",
/// "Received a … message while expecting …" and "TLS alert warning received" for input
/// any client can send, and its `error!` only for a connection it is closing. The host
/// reports each failed handshake at debug itself (and counts it in the metrics).
struct LogBridge;

impl LogBridge {
    fn level(metadata: &log::Metadata<'_>) -> log::Level {
        let target = metadata.target();
        let peer_driven = PEER_DRIVEN.iter().any(|c| {
            target
                .strip_prefix(c)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        });
        if peer_driven {
            metadata.level().max(log::Level::Debug)
        } else {
            metadata.level()
        }
    }
}

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        LogBridge::level(metadata) <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = LogBridge::level(record.metadata());
        if level > log::max_level() {
            return;
        }
        let _ = tracing_log::format_trace(
            &log::Record::builder()
                .level(level)
                .target(record.target())
                .args(*record.args())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {}
}

/// `text` made safe for one log line: control characters (newlines, carriage returns,
/// escape sequences), Unicode line separators and bidirectional overrides as `\n`, `\r`,
/// `\t` or `\u{…}`, and backslashes doubled so that an escape cannot be forged either.
pub fn escape(text: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.contains(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Plugin panic lines per second per worker; past it they are counted, then summarised.
const PANIC_LINES_PER_SECOND: u32 = 10;

thread_local! {
    static PANIC_LINES: RefCell<RateLimit> = const {
        RefCell::new(RateLimit::new("plugin panics", Level::ERROR, PANIC_LINES_PER_SECOND, Duration::from_secs(1)))
    };
}

/// A panic caught at the plugin boundary: counted in `panics` (the worker's
/// `plugin_panics` metric) and logged as one error line (a plugin bug), `{what}: {message}; {outcome}`,
/// with the message escaped, at most [`PANIC_LINES_PER_SECOND`] a second per worker.
///
/// plugin-api's glue silences the plugin's own panic hook, so this is the only line.
pub fn plugin_panic(
    panics: &Cell<u64>,
    service: &str,
    peer: impl std::fmt::Display,
    what: &str,
    message: &str,
    outcome: &str,
) {
    crate::metrics::bump(panics, 1);
    PANIC_LINES.with_borrow_mut(|limit| {
        limit.log(|| tracing::error!(%service, %peer, "{what}: {}; {outcome}", escape(message)))
    });
}

/// As [`plugin_panic`], for a protocol-level callback (no connection): `plugin panicked in
/// {callback}: {message}`. The protocol itself lives on.
pub fn protocol_panic(panics: &Cell<u64>, service: &str, callback: &str, message: &str) {
    crate::metrics::bump(panics, 1);
    PANIC_LINES.with_borrow_mut(|limit| {
        limit
            .log(|| tracing::error!(%service, "plugin panicked in {callback}: {}", escape(message)))
    });
}

/// The filter in force, for plugin records.
static FILTER: OnceLock<LogFilter> = OnceLock::new();

/// The sink handed to a plugin: its records become tracing events with `plugin=<name>`
/// (each library's own name, also when a worker loads several), those the filter lets
/// through (the plugin is told the most verbose level that can pass).
pub fn plugin_sink() -> LogSink {
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

fn plugin_record(plugin: &str, level: PluginLevel, target: &str, message: &str) {
    let passes = |l: Level| FILTER.get().is_none_or(|f| f.allows_plugin(target, l));
    let message = escape(message);
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

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_keeps_a_record_on_one_line() {
        assert_eq!(
            escape("plain text, unicode ok: é ✓"),
            "plain text, unicode ok: é ✓"
        );
        assert_eq!(
            escape("one\ntwo\r\n2026-01-01T00:00:00Z ERROR forged"),
            "one\\ntwo\\r\\n2026-01-01T00:00:00Z ERROR forged"
        );
        assert_eq!(escape("tab\there"), "tab\\there");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("a\u{2028}b\u{202e}c"), "a\\u{2028}b\\u{202e}c");
        // A literal backslash-n in the input cannot pass for an escaped newline.
        assert_eq!(escape("not\\n a newline"), "not\\\\n a newline");
        assert!(!escape("\u{85}\u{0}x").chars().any(char::is_control));
    }
}
