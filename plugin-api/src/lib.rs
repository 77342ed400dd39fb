//! # sockhost plugin API
//!
//! Write a socket protocol as a plain Rust type; the `sockhost` host does the rest — binding,
//! worker processes, TLS, keep-alive, supervision — and loads your protocol from a dynamic
//! library built against this crate.
//!
//! The API is *sans-IO*: you never touch sockets, buffers or an async runtime. The host calls
//! your [`Consumer`] when bytes arrive and sends whatever you [`Output::write`].
//!
//! * [`Protocol`] — made once per worker from the `--plugin-opt` options; it is the factory
//!   that makes one [`Consumer`] per TCP connection (and per UDP peer).
//! * [`Consumer`] — the per-connection callbacks: made, data, end of stream, lost.
//! * [`export_plugin!`] — exports your protocol as the library's root module.
//!
//! ```
//! use plugin_api::{Consumer, ConnInfo, Options, Output, PluginInfo, Protocol, Transports};
//!
//! /// Answers every chunk with its upper-case version.
//! pub struct Shout;
//!
//! pub struct ShoutConsumer;
//!
//! impl Protocol for Shout {
//!     type Consumer = ShoutConsumer;
//!     const INFO: PluginInfo = PluginInfo::new("shout", "0.1.0", "upper-cases what you send")
//!         .transports(Transports::TCP);
//!
//!     fn new(_options: &Options) -> Result<Self, String> {
//!         Ok(Shout)
//!     }
//!
//!     fn consumer(&self, _info: &ConnInfo) -> ShoutConsumer {
//!         ShoutConsumer
//!     }
//! }
//!
//! impl Consumer for ShoutConsumer {
//!     fn data_received(&mut self, data: &[u8], out: &mut Output) {
//!         out.write(&data.to_ascii_uppercase());
//!     }
//! }
//!
//! plugin_api::export_plugin!(Shout);
//! ```
//!
//! Build it as a `cdylib` and run `sockhost --plugin target/release/libshout.so`.
//! Everything crossing the library boundary is checked by [abi_stable] when the host loads
//! the plugin: a plugin built against an incompatible version of this crate is refused with
//! a message, never run. See `docs/plugin-guide.md` for the consumer lifecycle and the
//! compatibility policy.
//!
//! [abi_stable]: https://docs.rs/abi_stable
#![warn(missing_docs)]
// Windows' `PathBuf` is larger, which pushes `host::LoadError` (it holds the plugin's path)
// over clippy's size threshold for `Result`'s error; a plugin is loaded once, at startup.
#![cfg_attr(windows, allow(clippy::result_large_err))]

use std::net::SocketAddr;

use abi_stable::std_types::{RStr, RVec};
use abi_stable::StableAbi;

#[doc(hidden)]
pub mod abi;
pub mod framing;
#[cfg(any(feature = "host", feature = "testing"))]
pub mod host;
mod logging;
mod panic_hook;
pub mod services;
#[doc(hidden)]
pub mod services_abi;
#[cfg(any(feature = "host", feature = "testing"))]
pub mod session;
#[cfg(feature = "testing")]
pub mod testing;

pub use services::ConnId;

/// The plugin's per-worker object: built once from the options, then asked for one
/// [`Consumer`] per connection (or UDP peer).
///
/// The host calls it from a single thread; it need not be `Send` or `Sync`.
pub trait Protocol: Sized + 'static {
    /// The per-connection state.
    type Consumer: Consumer;

    /// Name, version, description, transports and options, shown by `sockhost inspect`.
    const INFO: PluginInfo;

    /// Build the protocol from the `--plugin-opt` pairs. Unknown keys were already refused by
    /// the host; return `Err(message)` to refuse a value, and the host exits with
    /// `error: plugin <name>: <message>`.
    fn new(options: &Options) -> Result<Self, String>;

    /// Make the consumer for one new connection (or one new UDP peer).
    fn consumer(&self, info: &ConnInfo) -> Self::Consumer;

    /// How often the host calls [`tick`](Protocol::tick); `None` (the default): never. Asked
    /// once, when the worker starts. Needs [`PluginInfo::services`].
    fn tick_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// The periodic tick (a statsd flush, a cache sweep, key expiry): runs on the worker's
    /// loop every [`tick_interval`](Protocol::tick_interval) even when no connection is
    /// active, and may use every [`services`] call.
    fn tick(&self) {}

    /// The worker serves: its sockets are open. Services may be used from here on (open
    /// outbound connections here, for example).
    fn serving(&self) {}

    /// The worker stops accepting and drains (a stop, a reload, `--max-requests`): flush what
    /// must not be lost and close outbound connections once their last bytes are queued; the
    /// host waits for them up to `--graceful-timeout`.
    fn stopping(&self) {}
}

/// The callbacks of one connection (or UDP peer session), in this order:
/// [`connection_made`](Consumer::connection_made) once, then any number of
/// [`data_received`](Consumer::data_received), then at most one
/// [`eof_received`](Consumer::eof_received) (TCP only), and finally
/// [`connection_lost`](Consumer::connection_lost) once, after which the consumer is dropped.
///
/// A panic in any callback is caught at the library boundary: the host logs it and closes
/// this connection only.
pub trait Consumer: 'static {
    /// The connection is open. Write a greeting here if the protocol has one.
    fn connection_made(&mut self, out: &mut Output) {
        let _ = out;
    }

    /// Bytes arrived. Over TCP `data` is whatever one read returned (no framing is
    /// preserved); over UDP it is exactly one datagram.
    fn data_received(&mut self, data: &[u8], out: &mut Output);

    /// The peer shut down its sending side (TCP). Write any last reply here. The default
    /// closes the connection once everything written has been sent; whatever this callback
    /// does, the host ends the connection then ([`LostReason::Closed`]), because nothing
    /// more can be read and no callback can run again.
    fn eof_received(&mut self, out: &mut Output) {
        out.close();
    }

    /// The connection is gone; no more output is possible.
    fn connection_lost(&mut self, reason: LostReason) {
        let _ = reason;
    }

    /// A timer set with [`services::set_timer`] fired; `token` is the one given there.
    fn timer_fired(&mut self, token: u64, out: &mut Output) {
        let _ = (token, out);
    }

    /// A [`services::Waker`] made for this connection was woken (from any thread); `token` is
    /// the one given to [`services::waker`]. Wakes made before this callback runs may be
    /// merged into one call per token.
    fn woken(&mut self, token: u64, out: &mut Output) {
        let _ = (token, out);
    }
}

/// Static facts about a plugin, declared in [`Protocol::INFO`].
#[derive(Clone, Copy, Debug)]
pub struct PluginInfo {
    /// Short name, used in logs and errors (`echo`).
    pub name: &'static str,
    /// The plugin's own version (usually `env!("CARGO_PKG_VERSION")`).
    pub version: &'static str,
    /// One line saying what it does.
    pub description: &'static str,
    /// Which kinds of bind it can serve.
    pub transports: Transports,
    /// The `--plugin-opt` keys it accepts.
    pub options: &'static [OptionSpec],
    /// The host services level the plugin needs (0: none); set by
    /// [`services`](PluginInfo::services).
    pub services_level: u32,
}

impl PluginInfo {
    /// Name, version and description; TCP only and no options until you say otherwise.
    pub const fn new(name: &'static str, version: &'static str, description: &'static str) -> Self {
        PluginInfo {
            name,
            version,
            description,
            transports: Transports::TCP,
            options: &[],
            services_level: 0,
        }
    }

    /// Declare that the plugin uses [`services`] (timers, posts, ticks, wake handles, outbound
    /// connections): a host that cannot offer them refuses to load it, with one line saying
    /// so, rather than running it without them.
    pub const fn services(mut self) -> Self {
        self.services_level = services_abi::SERVICES_LEVEL;
        self
    }

    /// Set the transports served.
    pub const fn transports(mut self, transports: Transports) -> Self {
        self.transports = transports;
        self
    }

    /// Set the accepted options.
    pub const fn options(mut self, options: &'static [OptionSpec]) -> Self {
        self.options = options;
        self
    }
}

/// A set of transports: [`Transports::TCP`], [`Transports::UDP`] or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transports(u8);

impl Transports {
    /// Stream connections (plain or TLS).
    pub const TCP: Transports = Transports(abi::TRANSPORT_TCP);
    /// Datagrams, one consumer per peer address.
    pub const UDP: Transports = Transports(abi::TRANSPORT_UDP);
    /// Both.
    pub const TCP_AND_UDP: Transports = Transports(abi::TRANSPORT_TCP | abi::TRANSPORT_UDP);

    /// Whether `transport` is in the set.
    pub const fn contains(self, transport: Transport) -> bool {
        self.0 & transport.code() != 0
    }

    /// The bits as they cross the ABI.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// From the ABI bits.
    pub const fn from_bits(bits: u8) -> Self {
        Transports(bits)
    }
}

/// The transport of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// A TCP connection (the host may have terminated TLS on it).
    Tcp,
    /// A UDP peer session.
    Udp,
}

impl Transport {
    const fn code(self) -> u8 {
        match self {
            Transport::Tcp => abi::TRANSPORT_TCP,
            Transport::Udp => abi::TRANSPORT_UDP,
        }
    }

    fn from_code(code: u8) -> Transport {
        if code == abi::TRANSPORT_UDP {
            Transport::Udp
        } else {
            Transport::Tcp
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

/// Why a connection ended, given to [`Consumer::connection_lost`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The exchange ended normally: the consumer asked to close ([`Output::close`]), or the
    /// peer ended its stream ([`Consumer::eof_received`]), and everything was sent.
    Closed,
    /// The peer reset or closed the connection.
    PeerClosed,
    /// Nothing was read for `--keep-alive` seconds.
    IdleTimeout,
    /// A socket error, or a panic in this consumer.
    Error,
    /// The server is stopping and the graceful period ran out, or a UDP session was evicted.
    Shutdown,
    /// An outbound connection ([`services::connect`]) could not be made: refused,
    /// unreachable, the name did not resolve, or the timeout ran out. Its consumer never saw
    /// `connection_made`.
    ConnectFailed,
}

impl LostReason {
    /// The code that crosses the ABI.
    pub const fn code(self) -> u8 {
        match self {
            LostReason::Closed => 0,
            LostReason::PeerClosed => 1,
            LostReason::IdleTimeout => 2,
            LostReason::Error => 3,
            LostReason::Shutdown => 4,
            LostReason::ConnectFailed => 5,
        }
    }

    /// From the ABI code; unknown codes (a newer host) read as `Error`.
    pub const fn from_code(code: u8) -> LostReason {
        match code {
            0 => LostReason::Closed,
            1 => LostReason::PeerClosed,
            2 => LostReason::IdleTimeout,
            4 => LostReason::Shutdown,
            5 => LostReason::ConnectFailed,
            _ => LostReason::Error,
        }
    }
}

/// What the host knows about a connection when it asks for its consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// TCP or UDP.
    pub transport: Transport,
    /// The remote address (the real client's with `--proxy-protocol`).
    pub peer: SocketAddr,
    /// The local address the connection (or datagram) arrived on.
    pub local: SocketAddr,
    /// TLS: the server name the client asked for (SNI).
    pub sni: Option<String>,
    /// TLS: the negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// TLS with `--ca-file`: the subject of the client's verified certificate.
    pub peer_cert_subject: Option<String>,
    /// This connection's identity in its worker, for [`services`] calls
    /// ([`ConnId::NONE`] when the host offers no services).
    pub id: ConnId,
}

impl ConnInfo {
    /// A plain connection's info (no TLS details).
    pub fn new(transport: Transport, peer: SocketAddr, local: SocketAddr) -> ConnInfo {
        ConnInfo {
            transport,
            peer,
            local,
            sni: None,
            alpn: None,
            peer_cert_subject: None,
            id: ConnId::NONE,
        }
    }
}

/// Where a consumer writes. The host owns it: over TCP the bytes are sent in order after the
/// callback returns; over UDP each [`write`](Output::write) is sent as one datagram to the peer.
///
/// Writing never blocks. If the peer reads slowly the host buffers and stops reading from
/// the peer until the buffer drains (backpressure), so a consumer never needs to.
#[repr(C)]
#[derive(StableAbi)]
pub struct Output {
    buf: RVec<u8>,
    /// Datagram mode: the end offset of each datagram in `buf`.
    bounds: RVec<u32>,
    flags: u32,
}

/// [`Output`] flag: close after everything written has been sent. (The flags and the
/// host's side of [`Output`] are in the `host` module.)
const OUT_CLOSE: u32 = 1;
/// [`Output`] flag: shut down the sending side after everything written has been sent.
const OUT_SHUTDOWN_WRITE: u32 = 2;
/// [`Output`] flag (set by the host): each write is one datagram.
const OUT_DATAGRAM: u32 = 1 << 16;

impl Output {
    /// Queue `data` to be sent (one datagram per call over UDP).
    #[inline]
    pub fn write(&mut self, data: &[u8]) {
        // `extend_from_copy_slice` is a memcpy; abi_stable's `extend_from_slice` pushes byte
        // by byte (measured: 90% of the host's instructions echoing 16 KiB messages).
        self.buf.extend_from_copy_slice(data);
        if self.flags & OUT_DATAGRAM != 0 {
            self.bounds.push(self.buf.len() as u32);
        }
    }

    /// Close the connection once everything written has been sent (UDP: end this peer's
    /// session). Later data from the peer is ignored.
    pub fn close(&mut self) {
        self.flags |= OUT_CLOSE;
    }

    /// Shut down the sending side once everything written has been sent (TCP half-close);
    /// the consumer keeps receiving until the peer closes.
    pub fn shutdown_write(&mut self) {
        self.flags |= OUT_SHUTDOWN_WRITE;
    }

    /// Whether [`close`](Output::close) was called during this callback.
    pub fn is_closing(&self) -> bool {
        self.flags & OUT_CLOSE != 0
    }

    /// Bytes written during this callback.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written during this callback.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// One `--plugin-opt` key a plugin accepts, declared in [`PluginInfo::options`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec(abi::RawOptionSpec);

impl OptionSpec {
    /// A key with one line of help and no default.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        OptionSpec(abi::RawOptionSpec {
            name: RStr::from_str(name),
            help: RStr::from_str(help),
            default: RStr::from_str(""),
        })
    }

    /// The value [`Options::get`] returns when the key is not given.
    pub const fn default_value(mut self, default: &'static str) -> Self {
        self.0.default = RStr::from_str(default);
        self
    }

    /// The key.
    pub fn name(&self) -> &'static str {
        self.0.name.as_str()
    }

    /// The help line.
    pub fn help(&self) -> &'static str {
        self.0.help.as_str()
    }

    /// The default, if declared.
    pub fn default(&self) -> Option<&'static str> {
        Some(self.0.default.as_str()).filter(|d| !d.is_empty())
    }

    #[allow(unsafe_code)] // FFI boundary: the option table as it crosses.
    pub(crate) fn as_raw_slice(specs: &'static [OptionSpec]) -> &'static [abi::RawOptionSpec] {
        // SAFETY: `OptionSpec` is `repr(transparent)` over `RawOptionSpec`.
        unsafe { std::slice::from_raw_parts(specs.as_ptr().cast(), specs.len()) }
    }
}

/// The `--plugin-opt` values given to [`Protocol::new`], with declared defaults filled in.
#[derive(Clone, Debug, Default)]
pub struct Options {
    given: Vec<(String, String)>,
    specs: &'static [OptionSpec],
}

impl Options {
    /// Options from explicit pairs (what the host passes; also handy in tests).
    pub fn new<'a>(
        specs: &'static [OptionSpec],
        pairs: impl IntoIterator<Item = impl OptionPair<'a>>,
    ) -> Options {
        let given = pairs
            .into_iter()
            .map(|p| {
                let (k, v) = p.pair();
                (k.to_string(), v.to_string())
            })
            .collect();
        Options { given, specs }
    }

    /// The value for `key`: the last one given, else the declared default.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.given
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .or_else(|| {
                self.specs
                    .iter()
                    .find(|s| s.name() == key)
                    .and_then(|s| s.default())
            })
    }

    /// The value for `key` parsed as `T`; an error message names the key and the value.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, String>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| format!("option {key}: invalid value {v:?}: {e}")),
        }
    }

    /// Every pair as given, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.given.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Something that reads as a key/value pair; lets [`Options::new`] take tuples or ABI pairs.
pub trait OptionPair<'a> {
    /// The key and value.
    fn pair(&self) -> (&str, &str);
}

impl<'a> OptionPair<'a> for (&'a str, &'a str) {
    fn pair(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> OptionPair<'a> for &abi::OptPair<'a> {
    fn pair(&self) -> (&str, &str) {
        (self.key.as_str(), self.value.as_str())
    }
}

/// Exports a [`Protocol`] type as this library's sockhost plugin.
///
/// Use it once, at the crate root of a `cdylib` crate:
///
/// ```ignore
/// plugin_api::export_plugin!(MyProtocol);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($protocol:ty) => {
        #[doc(hidden)]
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn __sockhost_root_module() -> $crate::__private::RootModuleResult {
                $crate::__private::__call_root_module_loader(
                    $crate::abi::Glue::<$protocol>::root_module,
                )
            }
            // SAFETY: the constructor returns the root module of type `PluginModRef`.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::abi::PluginModRef>(
                    __sockhost_root_module,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };

        /// The services handshake (see `plugin_api::services_abi`), looked up by name.
        #[doc(hidden)]
        #[no_mangle]
        pub unsafe extern "C" fn sockhost_services_v1(
            host: *const $crate::services_abi::HostServices,
        ) -> *const $crate::services_abi::PluginServices {
            // SAFETY: the host passes a table that lives as long as the process.
            unsafe { $crate::services_abi::negotiate::<$protocol>(host) }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
}

#[doc(hidden)]
pub const __ROOT_SYMBOL_LITERAL: &str = "_1as_0lib_1header_0root_bmodule_bloader";
