//! The loading side of the ABI, for the `sockhost` binary (feature `host`; the handles are
//! also built for the test harness, feature `testing`).
//!
//! Everything abi_stable-specific about loading lives here, so the host crate works with
//! plain Rust types: [`Library`] (a checked plugin file), [`Factory`] and [`ConsumerHandle`]
//! (owned handles whose calls return `Err(message)` where the plugin panicked), and
//! [`Backend`] (what a worker implements to serve the plugin's [services](crate::services)
//! calls, installed per thread with [`install_backend`]).

// FFI boundary: loading a plugin library and calling into it through its tables.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::rc::Rc;
#[cfg(feature = "host")]
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

#[cfg(feature = "host")]
use abi_stable::library::{lib_header_from_path, LibraryError, RawLibrary};
#[cfg(feature = "host")]
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};

#[cfg(feature = "host")]
use crate::abi::{self, HostVTable, OptPair, PluginModRef};
use crate::abi::{ConsumerBox, FactoryBox};
use crate::services::{ConnId, ConnectError, PostStatus, TimerId};
use crate::services_abi::{
    self as sabi, ConsumerExt, HostServices, PluginServices, ServiceConsumer,
};
#[cfg(feature = "host")]
use crate::Transports;
use crate::{ConnInfo, LostReason, Output, OUT_CLOSE, OUT_DATAGRAM, OUT_SHUTDOWN_WRITE};

pub use crate::services::backend::Backend;
pub use crate::services_abi::{Wake, SERVICES_LEVEL};

#[cfg(feature = "host")]
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
    /// The plugin needs a higher host services level than this host offers.
    NeedsServices {
        /// The path given.
        path: PathBuf,
        /// The level the plugin needs.
        needs: u32,
        /// The level this host offers.
        offers: u32,
    },
    /// The plugin's root module failed to initialise (it panicked).
    InitFailed {
        /// The path given.
        path: PathBuf,
        /// What it said.
        reason: String,
    },
}

#[cfg(feature = "host")]
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
                    "plugin {}: built against sockhost-plugin-api {plugin_api} (root module ABI {}), this sockhost has {host_api} (root module ABI {}): {summary}; rebuild the plugin against sockhost-plugin-api {host_api}",
                    path.display(),
                    root_module_abi(plugin_api),
                    root_module_abi(host_api),
                )?;
                if summary.contains("layouts differ") {
                    f.write_str(" (--log-level debug shows the full layout difference)")?;
                }
                Ok(())
            }
            LoadError::NeedsServices { path, needs, offers } => write!(
                f,
                "plugin {}: it needs sockhost host services level {needs} and this sockhost offers level {offers}; upgrade sockhost or rebuild the plugin against this sockhost's plugin-api",
                path.display()
            ),
            LoadError::InitFailed { path, reason } => {
                write!(f, "plugin {}: failed to initialise: {reason}", path.display())
            }
        }
    }
}

#[cfg(feature = "host")]
impl std::error::Error for LoadError {}

#[cfg(feature = "host")]
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

#[cfg(feature = "host")]
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
    /// The host services level the plugin needs (0: none); `None` if it predates services
    /// (plugin-api 0.1.0).
    pub services_level: Option<u32>,
}

#[cfg(feature = "host")]
/// A loaded and ABI-checked plugin library. Libraries are never unloaded; a process that
/// needs a new build of the same plugin must be a new process.
#[derive(Clone, Copy)]
pub struct Library {
    module: PluginModRef,
    /// Its slot among [`LOG_SINKS`]: the plugin's log records reach the host through a
    /// function of their own, so the host knows which plugin wrote them.
    log_slot: usize,
    api_version: &'static str,
    /// The plugin's services table, if it was built with services (plugin-api ≥ 0.1.1).
    services: Option<&'static PluginServices>,
}

#[cfg(feature = "host")]
/// The plugin-api version this host was built with.
pub fn host_api_version() -> &'static str {
    abi::API_VERSION
}

#[cfg(feature = "host")]
/// The root module ABI of a plugin-api `version`: what must match for a plugin to load, by
/// abi_stable's semver rule — the minor version while the major is 0 (`0.1.1` → `0.1`), else
/// the major (`1.2.0` → `1`).
pub fn root_module_abi(version: &str) -> String {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some(minor)) => format!("0.{minor}"),
        (Some(major), _) => major.to_string(),
        (None, _) => version.to_string(),
    }
}

#[cfg(feature = "host")]
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
        let services = negotiate_services(file);
        if let Some(s) = services {
            if s.needs > sabi::SERVICES_LEVEL {
                return Err(LoadError::NeedsServices {
                    path: owned(),
                    needs: s.needs,
                    offers: sabi::SERVICES_LEVEL,
                });
            }
        }
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
            log_slot: NEXT_LOG_SLOT
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .min(LOG_SLOTS - 1),
            api_version: plugin_api,
            services,
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
            services_level: self.services.map(|s| s.needs),
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
        let _ = LOG_SINKS[self.log_slot].set((log.sink, self.module.name().to_string()));
        let host = HostVTable {
            max_level: log.max_level as u8,
            log: HOST_LOGS[self.log_slot],
        }
        .leak_into_prefix();
        match (self.module.new_factory())(host, RSlice::from_slice(&pairs)) {
            RResult::ROk(raw) => Ok(Factory {
                raw,
                services: self.services,
            }),
            RResult::RErr(message) => Err(message.into()),
        }
    }
}

/// Offer the plugin in `file` this host's services, before its root module is initialised
/// (a plugin that needs services checks for them there). `None` if the plugin predates
/// services.
#[cfg(feature = "host")]
fn negotiate_services(file: &Path) -> Option<&'static PluginServices> {
    // The library is already open (dlopen returns the same handle) and is never unloaded.
    let lib = RawLibrary::load_at(file).ok()?;
    let lib: &'static RawLibrary = Box::leak(Box::new(lib));
    // SAFETY: the symbol, when present, is the `sockhost_services_v1` function that
    // `export_plugin!` writes, with exactly this signature.
    let negotiate = unsafe { lib.get::<sabi::ServicesFn>(sabi::SERVICES_SYMBOL) }.ok()?;
    // SAFETY: `HOST_SERVICES` is a static; the plugin returns a pointer to its own static.
    let table = unsafe { (*negotiate)(&HOST_SERVICES) };
    // SAFETY: a non-null result points to the plugin's `'static` table.
    let table: &'static PluginServices = unsafe { table.as_ref()? };
    // The fields this host reads must be there (a table only ever grows).
    sabi::has::<u64>(table.size, std::mem::offset_of!(PluginServices, lifecycle)).then_some(table)
}

#[cfg(feature = "host")]
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

#[cfg(feature = "host")]
/// Plugin log records, forwarded to the host's logger.
#[derive(Clone, Copy)]
pub struct LogSink {
    /// Called for each record: the plugin's name, level, plugin-side target (module
    /// path), message.
    pub sink: fn(&str, LogLevel, &str, &str),
    /// The most verbose level worth sending.
    pub max_level: LogLevel,
}

#[cfg(feature = "host")]
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

/// Libraries whose log records can be told apart (a process loads a handful; any beyond
/// share the last slot).
#[cfg(feature = "host")]
const LOG_SLOTS: usize = 16;

/// What [`LogSink::sink`] is.
#[cfg(feature = "host")]
type SinkFn = fn(&str, LogLevel, &str, &str);

/// Each library's sink and plugin name, by slot.
#[cfg(feature = "host")]
static LOG_SINKS: [OnceLock<(SinkFn, String)>; LOG_SLOTS] = [const { OnceLock::new() }; LOG_SLOTS];

#[cfg(feature = "host")]
static NEXT_LOG_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(feature = "host")]
type HostLogFn = extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>);

/// One log function per slot: a plugin keeps the function it was given, and so says which
/// library it is.
#[cfg(feature = "host")]
const HOST_LOGS: [HostLogFn; LOG_SLOTS] = [
    host_log::<0>,
    host_log::<1>,
    host_log::<2>,
    host_log::<3>,
    host_log::<4>,
    host_log::<5>,
    host_log::<6>,
    host_log::<7>,
    host_log::<8>,
    host_log::<9>,
    host_log::<10>,
    host_log::<11>,
    host_log::<12>,
    host_log::<13>,
    host_log::<14>,
    host_log::<15>,
];

#[cfg(feature = "host")]
extern "C" fn host_log<const SLOT: usize>(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let level = match level {
        1 => LogLevel::Error,
        2 => LogLevel::Warn,
        3 => LogLevel::Info,
        4 => LogLevel::Debug,
        _ => LogLevel::Trace,
    };
    if let Some((sink, plugin)) = LOG_SINKS[SLOT].get() {
        // A panicking sink must not unwind into the plugin.
        let _ = std::panic::catch_unwind(|| sink(plugin, level, target.as_str(), message.as_str()));
    }
}

/// The plugin's factory: makes one consumer per connection.
pub struct Factory {
    raw: FactoryBox,
    services: Option<&'static PluginServices>,
}

impl Factory {
    /// A factory from its FFI parts (the harness builds one in-process).
    #[cfg(feature = "testing")]
    pub(crate) fn from_raw(raw: FactoryBox, services: &'static PluginServices) -> Factory {
        Factory {
            raw,
            services: Some(services),
        }
    }

    /// Whether the plugin declared that it uses host services: then every connection gets
    /// an id the worker must serve service calls for.
    pub fn uses_services(&self) -> bool {
        self.services.is_some_and(|s| s.needs > 0)
    }

    /// Make the consumer for a new connection; `Err` carries the plugin's panic message.
    /// `id` is the connection's services identity ([`ConnId::NONE`] for none).
    pub fn consumer(&self, info: &ConnInfo, id: ConnId) -> Result<ConsumerHandle, String> {
        if let Some(services) = self.services {
            let made = info.with_raw(|raw_info| {
                // SAFETY: the factory pointer with the plugin's own services table.
                unsafe { (services.make_consumer)(self.raw.this, raw_info, id.to_raw()) }
            });
            return match made {
                RResult::ROk(raw) => Ok(ConsumerHandle::from_service(raw)),
                RResult::RErr(message) => Err(message.into()),
            };
        }
        let made = info.with_raw(|raw_info| {
            // SAFETY: `this` is the factory pointer with its own vtable, alive while `self` is.
            unsafe { (self.raw.vtable.make_consumer())(self.raw.this, raw_info) }
        });
        match made {
            RResult::ROk(raw) => Ok(ConsumerHandle { raw, ext: None }),
            RResult::RErr(message) => Err(message.into()),
        }
    }

    /// The protocol's tick period, if it has one.
    pub fn tick_interval(&self) -> Option<std::time::Duration> {
        let s = self.services?;
        // SAFETY: the factory pointer with the plugin's own services table.
        sabi::from_micros(unsafe { (s.tick_interval)(self.raw.this) })
    }

    /// The periodic tick; `Err` carries a panic message.
    pub fn tick(&self) -> Result<(), String> {
        match self.services {
            // SAFETY: as in `tick_interval`.
            Some(s) => call_result(unsafe { (s.tick)(self.raw.this) }),
            None => Ok(()),
        }
    }

    /// The worker serves.
    pub fn serving(&self) -> Result<(), String> {
        self.lifecycle(sabi::LIFECYCLE_SERVING)
    }

    /// The worker stops accepting and drains.
    pub fn stopping(&self) -> Result<(), String> {
        self.lifecycle(sabi::LIFECYCLE_STOPPING)
    }

    fn lifecycle(&self, event: u8) -> Result<(), String> {
        match self.services {
            // SAFETY: as in `tick_interval`.
            Some(s) => call_result(unsafe { (s.lifecycle)(self.raw.this, event) }),
            None => Ok(()),
        }
    }
}

fn call_result(r: RResult<(), RString>) -> Result<(), String> {
    match r {
        RResult::ROk(()) => Ok(()),
        RResult::RErr(message) => Err(message.into()),
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
    /// Its services callbacks, if the plugin has them.
    ext: Option<&'static ConsumerExt>,
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
    /// From the form a services plugin hands over.
    pub(crate) fn from_service(raw: ServiceConsumer) -> ConsumerHandle {
        // SAFETY: the plugin's `ConsumerExt` is a `'static` of its glue (null: none).
        let ext = unsafe { raw.ext.as_ref() };
        ConsumerHandle {
            raw: raw.consumer,
            ext: ext.filter(|e| sabi::has::<u64>(e.size, std::mem::offset_of!(ConsumerExt, woken))),
        }
    }

    /// The plugin-side object (the harness reads it back as its concrete type).
    #[cfg(feature = "testing")]
    pub(crate) fn object(&self) -> *mut abi_stable::marker_type::ErasedObject {
        self.raw.this
    }

    /// See [`Consumer::timer_fired`](crate::Consumer::timer_fired); nothing for a consumer
    /// without services callbacks.
    pub fn timer_fired(&mut self, token: u64, out: &mut Output) -> Result<(), String> {
        match self.ext {
            // SAFETY: as for the 0.1.0 callbacks (see `consumer_call!`).
            Some(ext) => call_result(unsafe { (ext.timer_fired)(self.raw.this, token, out) }),
            None => Ok(()),
        }
    }

    /// See [`Consumer::woken`](crate::Consumer::woken).
    pub fn woken(&mut self, token: u64, out: &mut Output) -> Result<(), String> {
        match self.ext {
            // SAFETY: as for the 0.1.0 callbacks (see `consumer_call!`).
            Some(ext) => call_result(unsafe { (ext.woken)(self.raw.this, token, out) }),
            None => Ok(()),
        }
    }

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

/// The host's side of an [`Output`]: make one, read what a callback wrote, [`clear`] it
/// for the next callback. (One vocabulary: `written`, `take_*_request`, `clear`.)
///
/// [`clear`]: Output::clear
impl Output {
    /// An output for a stream connection.
    pub fn for_stream() -> Output {
        Output::new(false)
    }

    /// An output for a UDP session: each write is one datagram.
    pub fn for_datagrams() -> Output {
        Output::new(true)
    }

    pub(crate) fn new(datagram: bool) -> Output {
        Output {
            buf: RVec::with_capacity(if datagram { 2048 } else { 16 * 1024 }),
            bounds: RVec::new(),
            flags: if datagram { OUT_DATAGRAM } else { 0 },
        }
    }

    /// Whether each write is one datagram.
    pub(crate) fn is_datagram(&self) -> bool {
        self.flags & OUT_DATAGRAM != 0
    }

    /// Bytes held by the buffers.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity() + self.bounds.capacity() * 4
    }

    /// Everything written since the last [`clear`](Output::clear).
    pub fn written(&self) -> &[u8] {
        &self.buf
    }

    /// The datagrams written since the last [`clear`](Output::clear) (datagram mode).
    pub fn written_datagrams(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0usize;
        self.bounds.iter().map(move |&end| {
            let d = &self.buf[start..end as usize];
            start = end as usize;
            d
        })
    }

    /// Whether the consumer asked to close; clears the request.
    pub fn take_close_request(&mut self) -> bool {
        self.take_flag(OUT_CLOSE)
    }

    /// Whether the consumer asked to half-close; clears the request.
    pub fn take_shutdown_request(&mut self) -> bool {
        self.take_flag(OUT_SHUTDOWN_WRITE)
    }

    fn take_flag(&mut self, flag: u32) -> bool {
        let set = self.flags & flag != 0;
        self.flags &= !flag;
        set
    }

    /// Forget what was written and the requests, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.bounds.clear();
        self.flags &= OUT_DATAGRAM;
    }

    /// The former name of [`clear`](Output::clear).
    #[deprecated(note = "renamed to `clear`")]
    pub fn reset(&mut self) {
        self.clear()
    }

    /// Give back the memory of a large callback: if the buffer grew past `keep` bytes, start
    /// again at the default size (call after [`clear`](Output::clear)).
    pub fn shrink(&mut self, keep: usize) {
        if self.capacity() > keep {
            *self = Output::new(self.is_datagram());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{root_module_abi, summarise_layout_report};

    #[test]
    fn the_root_module_abi_is_the_semver_compatible_part() {
        assert_eq!(root_module_abi("0.1.1"), "0.1");
        assert_eq!(root_module_abi("0.2.0"), "0.2");
        assert_eq!(root_module_abi("1.4.2"), "1");
    }

    #[test]
    fn an_output_shrinks_back_after_a_large_callback() {
        let mut out = crate::Output::for_stream();
        let small = out.capacity();
        out.write(&vec![0u8; 4 << 20]);
        out.clear();
        out.shrink(64 * 1024);
        assert_eq!(out.capacity(), small, "back to the default size");
        out.write(&[1, 2, 3]);
        out.clear();
        out.shrink(64 * 1024);
        assert_eq!(out.capacity(), small, "a small one is kept as it is");
    }

    #[test]
    #[allow(deprecated)]
    fn the_old_name_reset_still_clears() {
        let mut out = crate::Output::for_datagrams();
        out.write(b"a");
        out.close();
        out.reset();
        assert!(out.written().is_empty() && out.written_datagrams().next().is_none());
        assert!(!out.take_close_request());
        out.write(b"b");
        assert_eq!(out.written_datagrams().collect::<Vec<_>>(), [b"b"]);
    }

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

// ---------------------------------------------------------------------------------------------
// Services: the host's table, forwarding each call to this thread's worker. (Built for the
// harness too, which serves the calls without it.)

thread_local! {
    static BACKEND: RefCell<Option<Rc<dyn Backend>>> = const { RefCell::new(None) };
}

/// Serve the plugin's services calls made on this thread with `backend` (each worker installs
/// itself on its thread; `None` removes it). Calls made on a thread with no backend fail
/// softly: a post answers [`PostStatus::Gone`], a timer is not set.
#[cfg_attr(not(feature = "host"), allow(dead_code))]
pub fn install_backend(backend: Option<Rc<dyn Backend>>) {
    BACKEND.with(|b| *b.borrow_mut() = backend);
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
fn with_backend<R>(default: R, f: impl FnOnce(&dyn Backend) -> R) -> R {
    let backend = BACKEND.with(|b| b.borrow().clone());
    match backend {
        // A panic must not unwind into the plugin.
        Some(b) => {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&*b))).unwrap_or(default)
        }
        None => default,
    }
}

/// The table handed to every services plugin.
#[cfg_attr(not(feature = "host"), allow(dead_code))]
static HOST_SERVICES: HostServices = HostServices {
    size: std::mem::size_of::<HostServices>() as u32,
    level: sabi::SERVICES_LEVEL,
    post: host_post,
    close: host_close,
    set_timer: host_set_timer,
    cancel_timer: host_cancel_timer,
    pause_reading: host_pause_reading,
    set_idle_timeout: host_set_idle_timeout,
    waker: host_waker,
    connect: host_connect,
    shutdown_write: host_shutdown_write,
};

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_shutdown_write(id: u64) {
    with_backend((), |b| b.shutdown_write(ConnId::from_raw(id)))
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_post(to: u64, data: RSlice<'_, u8>) -> u8 {
    with_backend(PostStatus::Gone, |b| {
        b.post(ConnId::from_raw(to), data.as_slice())
    })
    .code()
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_close(id: u64) {
    with_backend((), |b| b.close(ConnId::from_raw(id)))
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_set_timer(id: u64, after_us: u64, token: u64) -> u64 {
    let after = sabi::from_micros(after_us).unwrap_or(std::time::Duration::MAX);
    with_backend(None, |b| b.set_timer(ConnId::from_raw(id), after, token))
        .map_or(0, TimerId::to_raw)
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_cancel_timer(timer: u64) -> bool {
    with_backend(false, |b| b.cancel_timer(TimerId::from_raw(timer)))
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_pause_reading(id: u64, paused: bool) {
    with_backend((), |b| b.pause_reading(ConnId::from_raw(id), paused))
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_set_idle_timeout(id: u64, timeout_us: u64) {
    with_backend((), |b| {
        b.set_idle_timeout(ConnId::from_raw(id), sabi::from_micros(timeout_us))
    })
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_waker(id: u64, token: u64) -> sabi::RawWaker {
    match with_backend(None, |b| b.waker(ConnId::from_raw(id), token)) {
        Some(w) => w.into_raw(),
        None => sabi::NO_WAKER,
    }
}

#[cfg_attr(not(feature = "host"), allow(dead_code))]
extern "C" fn host_connect(
    target: RStr<'_>,
    timeout_us: u64,
    consumer: ServiceConsumer,
    error: &mut RString,
) -> u64 {
    let consumer = ConsumerHandle::from_service(consumer);
    let timeout = sabi::from_micros(timeout_us).unwrap_or(std::time::Duration::MAX);
    let result = with_backend(
        Err(ConnectError("no worker on this thread".to_string())),
        |b| b.connect(target.as_str(), timeout, consumer),
    );
    match result {
        Ok(id) => id.to_raw(),
        Err(e) => {
            *error = RString::from(e.0);
            0
        }
    }
}
