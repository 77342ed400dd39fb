//! The loading side of the ABI, for the `sockhost` binary (feature `host`).
//!
//! Everything abi_stable-specific about loading lives here, so the host crate works with
//! plain Rust types: [`Library`] (a checked plugin file), [`Factory`] and [`ConsumerHandle`]
//! (owned handles whose calls return `Err(message)` where the plugin panicked).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RResult, RSlice, RStr};

use crate::abi::{self, ConsumerBox, FactoryBox, HostVTable, OptPair, PluginModRef};
use crate::{ConnInfo, LostReason, Output, Transports};

/// Why a plugin file could not be used. Every variant's text names the file and says what
/// to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// No file at the path.
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The dynamic loader refused the file (not a shared library, wrong architecture,
    /// missing dependency).
    NotALibrary {
        /// The path given.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// A shared library, but it exports no sockhost root module.
    NotAPlugin {
        /// The path given.
        path: PathBuf,
    },
    /// Built against a plugin-api this host cannot use.
    Incompatible {
        /// The path given.
        path: PathBuf,
        /// The plugin-api version recorded in the plugin.
        plugin_api: String,
        /// The plugin-api version of this host.
        host_api: String,
        /// What differs, in one line.
        summary: String,
        /// The full layout report from abi_stable (long; log it at debug level).
        detail: String,
    },
    /// The plugin's root module failed to initialise (it panicked).
    InitFailed {
        /// The path given.
        path: PathBuf,
        /// What it said.
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { path } => {
                write!(f, "plugin {}: no such file (build it, e.g. `cargo build --release`, or fix the path)", path.display())
            }
            LoadError::NotALibrary { path, reason } => write!(
                f,
                "plugin {}: not a loadable shared library ({reason})",
                path.display()
            ),
            LoadError::NotAPlugin { path } => write!(
                f,
                "plugin {}: not a sockhost plugin (it exports no plugin root module; a plugin crate calls plugin_api::export_plugin!)",
                path.display()
            ),
            LoadError::Incompatible { path, plugin_api, host_api, summary, .. } => {
                write!(
                    f,
                    "plugin {}: built against plugin-api {plugin_api}, incompatible with this sockhost's plugin-api {host_api}: {summary}; rebuild the plugin against plugin-api {host_api}",
                    path.display()
                )?;
                if summary.contains("layouts differ") {
                    f.write_str(" (--log-level debug shows the full layout difference)")?;
                }
                Ok(())
            }
            LoadError::InitFailed { path, reason } => {
                write!(f, "plugin {}: failed to initialise: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// One declared plugin option, as `sockhost inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionMeta {
    /// The key.
    pub name: String,
    /// The help line.
    pub help: String,
    /// The declared default.
    pub default: Option<String>,
}

/// A plugin's metadata.
#[derive(Clone, Debug)]
pub struct PluginMeta {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One-line description.
    pub description: String,
    /// Transports served.
    pub transports: Transports,
    /// Accepted options.
    pub options: Vec<OptionMeta>,
    /// The plugin-api version the plugin was built against.
    pub api_version: String,
}

/// A loaded and ABI-checked plugin library. Libraries are never unloaded; a process that
/// needs a new build of the same plugin must be a new process.
#[derive(Clone, Copy)]
pub struct Library {
    module: PluginModRef,
    api_version: &'static str,
}

/// The plugin-api version this host was built with.
pub fn host_api_version() -> &'static str {
    abi::API_VERSION
}

impl Library {
    /// Load the plugin at `path` and check that its ABI matches this host's.
    ///
    /// This bypasses abi_stable's one-module-per-process cache, so a process can load a
    /// plugin from any path, but glibc still returns the already-loaded library for a path
    /// it has opened before.
    pub fn load(path: &Path) -> Result<Library, LoadError> {
        if !path.exists() {
            return Err(LoadError::NotFound {
                path: path.to_path_buf(),
            });
        }
        // An absolute path: `dlopen` searches the library path for a name without a slash,
        // and resolving symlinks gives each build behind a swapped link its own identity.
        let absolute = std::fs::canonicalize(path).map_err(|e| LoadError::NotALibrary {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Library::load_file(path, &absolute)
    }

    /// Load the library at `file` (for example a `/proc/self/fd/N` snapshot of the plugin),
    /// naming it `path` in errors.
    pub fn load_file(path: &Path, file: &Path) -> Result<Library, LoadError> {
        let owned = || path.to_path_buf();
        let header = lib_header_from_path(file).map_err(|e| match e {
            LibraryError::OpenError { err, .. } => {
                // The loader's message names the file it was given; name the plugin instead.
                let reason = err
                    .to_string()
                    .replace(&format!("{}: ", file.display()), "");
                LoadError::NotALibrary {
                    path: owned(),
                    reason,
                }
            }
            LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path: owned() },
            other => LoadError::NotALibrary {
                path: owned(),
                reason: other.to_string(),
            },
        })?;
        let plugin_api = header.version_strings().version.as_str();
        let incompatible = |summary: String, detail: String| LoadError::Incompatible {
            path: owned(),
            plugin_api: plugin_api.to_string(),
            host_api: abi::API_VERSION.to_string(),
            summary,
            detail,
        };
        let module = header
            .init_root_module::<PluginModRef>()
            .map_err(|e| match e {
                LibraryError::IncompatibleVersionNumber { .. }
                | LibraryError::ParseVersionError(_) => {
                    incompatible("the versions are not compatible".to_string(), e.to_string())
                }
                LibraryError::AbiInstability(report) => {
                    let detail = report.to_string();
                    incompatible(summarise_layout_report(&detail), detail)
                }
                LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
                    incompatible(
                        "it was built with an incompatible abi_stable or compiler ABI".to_string(),
                        e.to_string(),
                    )
                }
                LibraryError::RootModule { err, .. } => LoadError::InitFailed {
                    path: owned(),
                    reason: err.to_string(),
                },
                other => LoadError::NotALibrary {
                    path: owned(),
                    reason: other.to_string(),
                },
            })?;
        Ok(Library {
            module,
            api_version: plugin_api,
        })
    }

    /// Name, version, description, transports and options.
    pub fn meta(&self) -> PluginMeta {
        let m = self.module;
        PluginMeta {
            name: m.name().to_string(),
            version: m.version().to_string(),
            description: m.description().to_string(),
            transports: Transports::from_bits(m.transports()),
            options: m
                .options()
                .iter()
                .map(|o| OptionMeta {
                    name: o.name.to_string(),
                    help: o.help.to_string(),
                    default: Some(o.default.to_string()).filter(|d| !d.is_empty()),
                })
                .collect(),
            api_version: self.api_version.to_string(),
        }
    }

    /// Build the plugin's factory from `--plugin-opt` pairs. `Err` is the plugin's own
    /// message (or its panic message).
    pub fn factory(&self, options: &[(String, String)], log: LogSink) -> Result<Factory, String> {
        let pairs: Vec<OptPair<'_>> = options
            .iter()
            .map(|(k, v)| OptPair {
                key: RStr::from_str(k),
                value: RStr::from_str(v),
            })
            .collect();
        let _ = LOG_SINK.set(log.sink);
        let host = HostVTable {
            max_level: log.max_level as u8,
            log: host_log,
        }
        .leak_into_prefix();
        match (self.module.new_factory())(host, RSlice::from_slice(&pairs)) {
            RResult::ROk(raw) => Ok(Factory { raw }),
            RResult::RErr(message) => Err(message.into()),
        }
    }
}

/// Condenses abi_stable's long layout report to its first error, e.g.
/// `mismatched field type (expected RStr<'static>, found u64)`.
fn summarise_layout_report(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let Some(at) = lines.iter().position(|l| l.starts_with("Error:")) else {
        return "their type layouts differ".to_string();
    };
    let what = lines[at].trim_start_matches("Error:").trim();
    let value_after = |label: &str| {
        lines[at..]
            .iter()
            .position(|l| *l == label)
            .and_then(|i| lines[at + i + 1..].iter().find(|l| !l.is_empty()))
            .copied()
    };
    match (value_after("Expected:"), value_after("Found:")) {
        (Some(e), Some(f)) => {
            format!("their type layouts differ: {what} (expected {e}, found {f})")
        }
        _ => format!("their type layouts differ: {what}"),
    }
}

/// Plugin log records, forwarded to the host's logger.
#[derive(Clone, Copy)]
pub struct LogSink {
    /// Called for each record: level, plugin-side target (module path), message.
    pub sink: fn(LogLevel, &str, &str),
    /// The most verbose level worth sending.
    pub max_level: LogLevel,
}

/// A plugin log record's level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    /// Nothing at all (only as `max_level`).
    Off = 0,
    /// Errors.
    Error = 1,
    /// Warnings.
    Warn = 2,
    /// Information.
    Info = 3,
    /// Debugging detail.
    Debug = 4,
    /// Tracing detail.
    Trace = 5,
}

static LOG_SINK: OnceLock<fn(LogLevel, &str, &str)> = OnceLock::new();

extern "C" fn host_log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let level = match level {
        1 => LogLevel::Error,
        2 => LogLevel::Warn,
        3 => LogLevel::Info,
        4 => LogLevel::Debug,
        _ => LogLevel::Trace,
    };
    if let Some(sink) = LOG_SINK.get() {
        // A panicking sink must not unwind into the plugin.
        let _ = std::panic::catch_unwind(|| sink(level, target.as_str(), message.as_str()));
    }
}

/// The plugin's factory: makes one consumer per connection.
pub struct Factory {
    raw: FactoryBox,
}

impl Factory {
    /// Make the consumer for a new connection; `Err` carries the plugin's panic message.
    pub fn consumer(&self, info: &ConnInfo) -> Result<ConsumerHandle, String> {
        let made = info.with_raw(|raw_info| {
            // SAFETY: `this` is the factory pointer with its own vtable, alive while `self` is.
            unsafe { (self.raw.vtable.make_consumer())(self.raw.this, raw_info) }
        });
        match made {
            RResult::ROk(raw) => Ok(ConsumerHandle { raw }),
            RResult::RErr(message) => Err(message.into()),
        }
    }
}

impl Drop for Factory {
    fn drop(&mut self) {
        // SAFETY: the pointer came from the plugin's factory constructor and is freed once.
        unsafe { (self.raw.vtable.drop())(self.raw.this) }
    }
}

/// One connection's consumer, owned by the host. Each call returns `Err(panic message)` if
/// the plugin panicked; the host then closes the connection.
pub struct ConsumerHandle {
    raw: ConsumerBox,
}

macro_rules! consumer_call {
    ($self:ident, $field:ident $(, $arg:expr)*) => {{
        // SAFETY: `this` came from this vtable's factory, is alive until drop, and `&mut self`
        // guarantees one call at a time.
        match unsafe { ($self.raw.vtable.$field())($self.raw.this $(, $arg)*) } {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(message) => Err(String::from(message)),
        }
    }};
}

impl ConsumerHandle {
    /// See [`Consumer::connection_made`](crate::Consumer::connection_made).
    pub fn connection_made(&mut self, out: &mut Output) -> Result<(), String> {
        consumer_call!(self, connection_made, out)
    }

    /// See [`Consumer::data_received`](crate::Consumer::data_received).
    #[inline]
    pub fn data_received(&mut self, data: &[u8], out: &mut Output) -> Result<(), String> {
        consumer_call!(self, data_received, RSlice::from_slice(data), out)
    }

    /// See [`Consumer::eof_received`](crate::Consumer::eof_received).
    pub fn eof_received(&mut self, out: &mut Output) -> Result<(), String> {
        consumer_call!(self, eof_received, out)
    }

    /// See [`Consumer::connection_lost`](crate::Consumer::connection_lost).
    pub fn connection_lost(&mut self, reason: LostReason) -> Result<(), String> {
        consumer_call!(self, connection_lost, reason.code())
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `make_consumer` and is freed exactly once.
        unsafe { (self.raw.vtable.drop())(self.raw.this) }
    }
}

/// Host-side view of an [`Output`].
impl Output {
    /// An output for a stream connection.
    pub fn for_stream() -> Output {
        Output::new(false)
    }

    /// An output for a UDP session: each write is one datagram.
    pub fn for_datagrams() -> Output {
        Output::new(true)
    }

    /// Everything written since the last [`reset`](Output::reset).
    pub fn written(&self) -> &[u8] {
        self.bytes()
    }

    /// The datagrams written since the last reset (datagram mode).
    pub fn written_datagrams(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.datagrams()
    }

    /// Whether the consumer asked to close; clears the request.
    pub fn take_close_request(&mut self) -> bool {
        self.take_close()
    }

    /// Whether the consumer asked to half-close; clears the request.
    pub fn take_shutdown_request(&mut self) -> bool {
        self.take_shutdown_write()
    }

    /// Forget what was written and the requests, keeping the allocation.
    pub fn reset(&mut self) {
        self.clear()
    }
}

#[cfg(test)]
mod tests {
    use super::summarise_layout_report;

    #[test]
    fn layout_report_summary_names_the_difference() {
        let report = "Layout of expected type:\n  blah\n\nError:mismatched package\nExpected:\n    sockhost-plugin-api\nFound:\n    other\n";
        assert_eq!(
            summarise_layout_report(report),
            "their type layouts differ: mismatched package (expected sockhost-plugin-api, found other)"
        );
        assert_eq!(
            summarise_layout_report("nothing useful"),
            "their type layouts differ"
        );
    }
}
