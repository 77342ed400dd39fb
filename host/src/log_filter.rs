//! `--log-filter` / `SOCKHOST_LOG`: per-target log levels in `RUST_LOG` syntax
//! (`warn,sockhost::tcp=debug,plugin::kv=trace`), over `--log-level`.
//!
//! Targets are prefixes of where an event comes from: the host's modules (`sockhost`,
//! `sockhost::tcp::connection`, …), libraries logging through `log` (`rustls`), and plugin
//! records, which are `plugin::<the plugin's log target>` (`plugin::kv`, `plugin::kv::store`):
//! `plugin=debug` turns on every plugin's debug records, `plugin::kv=debug` only kv's.
//!
//! Plugin records all reach tracing under the one static target `plugin` (a tracing event's
//! target is fixed where it is written), so they are judged here, by their full target,
//! before they are emitted ([`LogFilter::allows_plugin`]), and the subscriber lets `plugin`
//! through. That also tells each plugin the most verbose level anything would show
//! ([`LogFilter::plugin_max`]), so records nobody wants are not even formatted.

use std::str::FromStr;

use clap::ValueEnum;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;

/// Log verbosity.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Lifecycle events (default).
    Info,
    /// Per-connection events.
    Debug,
    /// Everything.
    Trace,
}

/// The target every plugin record is emitted under.
pub const PLUGIN_TARGET: &str = "plugin";

/// A parsed `--log-filter`.
#[derive(Clone, Debug)]
pub struct LogFilter {
    targets: Targets,
}

impl LogFilter {
    /// Parse `RUST_LOG`-style directives: `LEVEL` or `TARGET=LEVEL`, comma-separated;
    /// levels are off, error, warn, info, debug, trace.
    pub fn parse(s: &str) -> Result<LogFilter, String> {
        Targets::from_str(s)
            .map(|targets| LogFilter { targets })
            .map_err(|e| format!("{e} (expected LEVEL or TARGET=LEVEL, comma-separated, as in warn,sockhost::tcp=debug)"))
    }

    /// The filter in force: `filter`'s directives over `--log-level` (a bare level in the
    /// filter replaces it).
    pub fn effective(filter: Option<&LogFilter>, log_level: LogLevel) -> LogFilter {
        let default = level(log_level);
        let targets = match filter {
            Some(f) if f.targets.default_level().is_some() => f.targets.clone(),
            Some(f) => f.targets.clone().with_default(default),
            None => Targets::new().with_default(default),
        };
        LogFilter { targets }
    }

    /// What the subscriber filters with: these directives, and every plugin record (judged
    /// already by [`allows_plugin`](LogFilter::allows_plugin)).
    pub fn for_subscriber(&self) -> Targets {
        self.targets
            .clone()
            .with_target(PLUGIN_TARGET, LevelFilter::TRACE)
    }

    /// Whether a plugin record with the plugin's log target `module` passes.
    pub fn allows_plugin(&self, module: &str, level: tracing::Level) -> bool {
        self.targets
            .would_enable(&format!("{PLUGIN_TARGET}::{module}"), &level)
    }

    /// The most verbose level anything could pass at.
    pub fn max_level(&self) -> LevelFilter {
        let default = self.targets.default_level().unwrap_or(LevelFilter::OFF);
        self.targets
            .iter()
            .map(|(_, level)| level)
            .fold(default, std::cmp::max)
    }

    /// The most verbose level any plugin record could pass at.
    pub fn plugin_max(&self) -> LevelFilter {
        let default = self.targets.default_level().unwrap_or(LevelFilter::OFF);
        self.targets
            .iter()
            .filter(|(target, _)| {
                target.starts_with(PLUGIN_TARGET) || "plugin::".starts_with(*target)
            })
            .map(|(_, level)| level)
            .fold(default, std::cmp::max)
    }
}

/// `--log-level` as a tracing level.
pub fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn effective(filter: &str, log_level: LogLevel) -> LogFilter {
        LogFilter::effective(Some(&LogFilter::parse(filter).unwrap()), log_level)
    }

    #[test]
    fn directives_refine_the_log_level() {
        let f = effective("sockhost::tcp=debug", LogLevel::Warn);
        let t = f.for_subscriber();
        assert!(t.would_enable("sockhost::tcp::connection", &Level::DEBUG));
        assert!(!t.would_enable("sockhost::arbiter", &Level::INFO));
        assert!(t.would_enable("sockhost::arbiter", &Level::WARN));
    }

    #[test]
    fn a_bare_level_replaces_the_log_level() {
        let f = effective("error,rustls=debug", LogLevel::Trace);
        let t = f.for_subscriber();
        assert!(!t.would_enable("sockhost::worker", &Level::WARN));
        assert!(t.would_enable("rustls::server", &Level::DEBUG));
    }

    #[test]
    fn plugin_records_are_judged_by_their_module() {
        let f = effective("info,plugin::kv=debug", LogLevel::Info);
        assert!(f.allows_plugin("kv::store", Level::DEBUG));
        assert!(!f.allows_plugin("echo", Level::DEBUG));
        assert!(f.allows_plugin("echo", Level::INFO));
        assert_eq!(f.plugin_max(), LevelFilter::DEBUG);
        // Everything under `plugin` reaches the judge above.
        assert!(f
            .for_subscriber()
            .would_enable(PLUGIN_TARGET, &Level::TRACE));
        let quiet = effective("warn,plugin=error", LogLevel::Info);
        assert_eq!(quiet.plugin_max(), LevelFilter::WARN);
        assert!(!quiet.allows_plugin("kv", Level::WARN));
        assert_eq!(
            effective("off", LogLevel::Info).plugin_max(),
            LevelFilter::OFF
        );
    }

    #[test]
    fn a_bad_level_is_refused_with_the_syntax() {
        let err = LogFilter::parse("sockhost=loud").unwrap_err();
        assert!(err.contains("TARGET=LEVEL"), "{err}");
    }
}
