//! The FFI-safe shapes that cross the host/plugin boundary, and the generic glue that
//! turns an author's plain Rust [`Protocol`](crate::Protocol) into them.
//!
//! Nothing here is meant for plugin authors; it is public only so that
//! [`export_plugin!`](crate::export_plugin) can name it from the author's crate.
//!
//! # Compatibility rules (see `docs/plugin-guide.md`)
//! - Every table of functions is an abi_stable *prefix type*: a field may be appended after
//!   the last one, and a host reading an older plugin sees the new field as absent.
//! - Enumerations that may grow (`transport`, lost reasons, output flags) cross as plain
//!   integers, so a new value never fails a layout check; readers treat unknown values as
//!   "other".
//! - Changing or removing an existing field changes the layout: abi_stable refuses the plugin
//!   at load time, and the plugin-api minor version (0.x) must be bumped.

// FFI boundary: the extern fns and tables that plugin and host call each other through.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::marker_type::ErasedObject;
use abi_stable::prefix_type::{PrefixTypeTrait, WithMetadata};
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString};
use abi_stable::{declare_root_module_statics, library::RootModule, package_version_strings};
use abi_stable::{sabi_types::VersionStrings, staticref, StableAbi};

use crate::{ConnInfo, Consumer, LostReason, Options, Output, Protocol, Transport};

/// The result of every call into the plugin: `Err` carries a panic message (or a
/// factory's refusal), never unwinds across the boundary.
pub type CallResult = RResult<(), RString>;

/// Transport bit in [`PluginMod::transports`] and code in [`ConnInfoFields::transport`].
pub const TRANSPORT_TCP: u8 = 1;
/// See [`TRANSPORT_TCP`].
pub const TRANSPORT_UDP: u8 = 2;

/// A socket address in a fixed FFI-safe form.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawAddr {
    /// 0: none, 4: IPv4 (first 4 bytes of `ip`), 6: IPv6.
    pub family: u8,
    /// Port, host byte order.
    pub port: u16,
    /// The address bytes, network order.
    pub ip: [u8; 16],
    /// IPv6 flow info.
    pub flowinfo: u32,
    /// IPv6 scope id.
    pub scope_id: u32,
}

impl From<std::net::SocketAddr> for RawAddr {
    fn from(addr: std::net::SocketAddr) -> Self {
        match addr {
            std::net::SocketAddr::V4(a) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                RawAddr {
                    family: 4,
                    port: a.port(),
                    ip,
                    flowinfo: 0,
                    scope_id: 0,
                }
            }
            std::net::SocketAddr::V6(a) => RawAddr {
                family: 6,
                port: a.port(),
                ip: a.ip().octets(),
                flowinfo: a.flowinfo(),
                scope_id: a.scope_id(),
            },
        }
    }
}

impl RawAddr {
    /// Back to a std address; `None` for an unknown family.
    pub fn to_std(self) -> Option<std::net::SocketAddr> {
        use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
        match self.family {
            4 => {
                let ip = Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]);
                Some(SocketAddrV4::new(ip, self.port).into())
            }
            6 => {
                let ip = Ipv6Addr::from(self.ip);
                Some(SocketAddrV6::new(ip, self.port, self.flowinfo, self.scope_id).into())
            }
            _ => None,
        }
    }
}

/// One `--plugin-opt KEY=VALUE` pair, borrowed for the duration of the factory call.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct OptPair<'a> {
    /// The key.
    pub key: RStr<'a>,
    /// The value.
    pub value: RStr<'a>,
}

/// What the host offers the plugin: today its logger. A prefix type, so host services can be
/// appended without breaking plugins built earlier.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostRef)))]
pub struct HostVTable {
    /// The most verbose level the host will print (a `log::LevelFilter` as usize: 0 off .. 5 trace).
    pub max_level: u8,
    /// Write one log record: level (1 error .. 5 trace), plugin-side target, message.
    #[sabi(last_prefix_field)]
    pub log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
}

/// Connection details handed to the factory for every new consumer. A prefix type: fields
/// (more TLS details, say) may be appended; a plugin built earlier simply never reads them.
///
/// Prefix accessors copy their field, so strings are borrowed views. They are `'static` in
/// name only: the host builds this value on its stack for one `make_consumer` call, and the
/// glue copies everything into an owned [`ConnInfo`] before that call returns.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ConnInfoRef)))]
pub struct ConnInfoFields {
    /// [`TRANSPORT_TCP`] or [`TRANSPORT_UDP`].
    pub transport: u8,
    /// The remote end.
    pub peer: RawAddr,
    /// Our end (the listening address for UDP).
    pub local: RawAddr,
    /// TLS server name indication sent by the client.
    pub sni: ROption<RStr<'static>>,
    /// The negotiated ALPN protocol.
    pub alpn: ROption<RSlice<'static, u8>>,
    /// Subject of the verified client certificate (mutual TLS).
    #[sabi(last_prefix_field)]
    pub peer_cert_subject: ROption<RStr<'static>>,
}

/// Per-connection callbacks. Every function catches panics on the plugin side and reports
/// them as `Err(message)`.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ConsumerVTableRef)))]
pub struct ConsumerVTable {
    /// See [`Consumer::connection_made`].
    pub connection_made: unsafe extern "C" fn(*mut ErasedObject, &mut Output) -> CallResult,
    /// See [`Consumer::data_received`].
    pub data_received:
        unsafe extern "C" fn(*mut ErasedObject, RSlice<'_, u8>, &mut Output) -> CallResult,
    /// See [`Consumer::eof_received`].
    pub eof_received: unsafe extern "C" fn(*mut ErasedObject, &mut Output) -> CallResult,
    /// See [`Consumer::connection_lost`]; the argument is a lost-reason code.
    pub connection_lost: unsafe extern "C" fn(*mut ErasedObject, u8) -> CallResult,
    /// Frees the consumer.
    #[sabi(last_prefix_field)]
    pub drop: unsafe extern "C" fn(*mut ErasedObject),
}

/// A consumer owned by the host: an erased pointer and its vtable.
#[repr(C)]
#[derive(StableAbi)]
pub struct ConsumerBox {
    /// The plugin-side `Box<P::Consumer>`.
    pub this: *mut ErasedObject,
    /// Its callbacks.
    pub vtable: ConsumerVTableRef,
}

/// The factory's functions.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FactoryVTableRef)))]
pub struct FactoryVTable {
    /// Make the consumer for one connection (or UDP peer).
    pub make_consumer:
        unsafe extern "C" fn(*const ErasedObject, ConnInfoRef) -> RResult<ConsumerBox, RString>,
    /// Frees the factory.
    #[sabi(last_prefix_field)]
    pub drop: unsafe extern "C" fn(*mut ErasedObject),
}

/// A factory owned by the host.
#[repr(C)]
#[derive(StableAbi)]
pub struct FactoryBox {
    /// The plugin-side `Box<P>`.
    pub this: *mut ErasedObject,
    /// Its functions.
    pub vtable: FactoryVTableRef,
}

/// One declared `--plugin-opt` key, as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct RawOptionSpec {
    /// The key.
    pub name: RStr<'static>,
    /// One line of help.
    pub help: RStr<'static>,
    /// The value used when the key is not given; empty for none.
    pub default: RStr<'static>,
}

/// The root module every plugin exports: its metadata and its factory constructor.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    /// Plugin name, e.g. `echo`.
    pub name: RStr<'static>,
    /// The plugin's own version.
    pub version: RStr<'static>,
    /// One-line description.
    pub description: RStr<'static>,
    /// Bit set of [`TRANSPORT_TCP`] and [`TRANSPORT_UDP`].
    pub transports: u8,
    /// The `--plugin-opt` keys it accepts.
    pub options: RSlice<'static, RawOptionSpec>,
    /// Build a factory from the host services and the option pairs, or refuse with a message.
    #[sabi(last_prefix_field)]
    pub new_factory:
        extern "C" fn(HostRef, RSlice<'_, OptPair<'_>>) -> RResult<FactoryBox, RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "sockhost_plugin";
    const NAME: &'static str = "sockhost plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The name abi_stable's `#[export_root_module]` gives the exported header; the
/// [`export_plugin!`](crate::export_plugin) macro writes it as a literal (a unit test pins it)
/// so that plugin crates need no direct abi_stable dependency.
pub const ROOT_SYMBOL: &str = abi_stable::library::ROOT_MODULE_LOADER_NAME;

/// The plugin-api version a plugin was built with, as recorded in its root module.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

// ---------------------------------------------------------------------------------------------
// Generic glue: instantiated once per plugin type by `export_plugin!`.

/// Turns a panic payload into a message for the host's log.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> RString {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    };
    RString::from(text)
}

/// Runs `f`, turning a panic into `Err(message)` so that it never unwinds into the host.
fn guarded(f: impl FnOnce()) -> CallResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => RResult::ROk(()),
        Err(payload) => RResult::RErr(panic_message(payload)),
    }
}

/// The vtables and entry points for one [`Protocol`] type.
pub struct Glue<P>(PhantomData<P>);

impl<P: Protocol> Glue<P> {
    staticref!(
        /// The factory's functions (the test harness builds a factory in-process with them).
        pub(crate) const FACTORY_VT: WithMetadata<FactoryVTable> = WithMetadata::new(
        FactoryVTable {
            make_consumer: make_consumer::<P>,
            drop: drop_box::<P>,
        }
    ));

    /// Builds (once per process; abi_stable caches it) the root module of plugin `P`, or
    /// refuses to when `P` needs host services the host did not offer (see
    /// [`crate::services_abi`]).
    pub fn root_module() -> Result<PluginModRef, abi_stable::std_types::RBoxError> {
        crate::services_abi::check_host::<P>()
            .map_err(|m| abi_stable::std_types::RBoxError::from_fmt(&m))?;
        let info = P::INFO;
        Ok(PluginMod {
            name: RStr::from_str(info.name),
            version: RStr::from_str(info.version),
            description: RStr::from_str(info.description),
            transports: info.transports.bits(),
            options: RSlice::from_slice(crate::OptionSpec::as_raw_slice(info.options)),
            new_factory: new_factory::<P>,
        }
        .leak_into_prefix())
    }
}

extern "C" fn new_factory<P: Protocol>(
    host: HostRef,
    pairs: RSlice<'_, OptPair<'_>>,
) -> RResult<FactoryBox, RString> {
    let made = catch_unwind(AssertUnwindSafe(|| {
        crate::logging::install(host);
        crate::panic_hook::install();
        let options = Options::new(P::INFO.options, pairs.as_slice());
        P::new(&options)
    }));
    match made {
        Ok(Ok(protocol)) => RResult::ROk(FactoryBox {
            this: Box::into_raw(Box::new(protocol)).cast(),
            vtable: FactoryVTableRef(Glue::<P>::FACTORY_VT.as_prefix()),
        }),
        Ok(Err(message)) => RResult::RErr(RString::from(message)),
        Err(payload) => RResult::RErr(panic_message(payload)),
    }
}

unsafe extern "C" fn make_consumer<P: Protocol>(
    this: *const ErasedObject,
    info: ConnInfoRef,
) -> RResult<ConsumerBox, RString> {
    // SAFETY: `this` is the `Box<P>` made by `new_factory::<P>`, alive until `drop_box::<P>`.
    let protocol = unsafe { &*this.cast::<P>() };
    match catch_unwind(AssertUnwindSafe(|| {
        protocol.consumer(&ConnInfo::from_raw(info))
    })) {
        Ok(consumer) => RResult::ROk(ConsumerBox {
            this: Box::into_raw(Box::new(consumer)).cast(),
            vtable: ConsumerVTableRef(
                crate::services_abi::ConsumerGlue::<P::Consumer>::VTABLE.as_prefix(),
            ),
        }),
        Err(payload) => RResult::RErr(panic_message(payload)),
    }
}

/// Recovers the consumer behind an erased pointer.
///
/// # Safety
/// `this` must be a live `Box<C>` made by `make_consumer`, not aliased for the call.
unsafe fn consumer<'a, C>(this: *mut ErasedObject) -> &'a mut C {
    // SAFETY: guaranteed by the caller (the host calls one callback at a time per consumer).
    unsafe { &mut *this.cast::<C>() }
}

pub(crate) unsafe extern "C" fn connection_made<C: Consumer>(
    this: *mut ErasedObject,
    out: &mut Output,
) -> CallResult {
    // SAFETY: the host passes the pointer it got from `make_consumer`.
    let c = unsafe { consumer::<C>(this) };
    guarded(|| c.connection_made(out))
}

pub(crate) unsafe extern "C" fn data_received<C: Consumer>(
    this: *mut ErasedObject,
    data: RSlice<'_, u8>,
    out: &mut Output,
) -> CallResult {
    // SAFETY: the host passes the pointer it got from `make_consumer`.
    let c = unsafe { consumer::<C>(this) };
    guarded(|| c.data_received(data.as_slice(), out))
}

pub(crate) unsafe extern "C" fn eof_received<C: Consumer>(
    this: *mut ErasedObject,
    out: &mut Output,
) -> CallResult {
    // SAFETY: the host passes the pointer it got from `make_consumer`.
    let c = unsafe { consumer::<C>(this) };
    guarded(|| c.eof_received(out))
}

pub(crate) unsafe extern "C" fn connection_lost<C: Consumer>(
    this: *mut ErasedObject,
    reason: u8,
) -> CallResult {
    // SAFETY: the host passes the pointer it got from `make_consumer`.
    let c = unsafe { consumer::<C>(this) };
    guarded(|| c.connection_lost(LostReason::from_code(reason)))
}

pub(crate) unsafe extern "C" fn drop_box<T>(this: *mut ErasedObject) {
    // A panicking destructor must not unwind into the host either; it is reported nowhere
    // because the object is gone, but the process survives.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `this` came from `Box::<T>::into_raw` and the host frees it exactly once.
        drop(unsafe { Box::from_raw(this.cast::<T>()) });
    }));
}

impl ConnInfo {
    /// Reads the FFI form; fields a host did not send stay `None`.
    pub(crate) fn from_raw(raw: ConnInfoRef) -> ConnInfo {
        let unknown = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        ConnInfo {
            transport: Transport::from_code(raw.transport()),
            peer: raw.peer().to_std().unwrap_or(unknown),
            local: raw.local().to_std().unwrap_or(unknown),
            sni: raw.sni().into_option().map(|s| s.as_str().to_string()),
            alpn: raw.alpn().into_option().map(|v| v.to_vec()),
            peer_cert_subject: raw
                .peer_cert_subject()
                .into_option()
                .map(|s| s.as_str().to_string()),
            id: crate::services::ConnId::NONE,
        }
    }

    /// Builds the FFI form and lends it to `f`.
    #[cfg(any(feature = "host", feature = "testing"))]
    pub(crate) fn with_raw<R>(&self, f: impl FnOnce(ConnInfoRef) -> R) -> R {
        /// Extends a borrow of `self` to the `'static` the prefix type's fields are declared with.
        fn lend(s: &str) -> RStr<'static> {
            // SAFETY: see `ConnInfoFields`: the view is read only while `self` is borrowed by
            // this function, and copied before `make_consumer` returns.
            RStr::from_str(unsafe { &*(s as *const str) })
        }
        let fields = WithMetadata::new(ConnInfoFields {
            transport: self.transport.code(),
            peer: self.peer.into(),
            local: self.local.into(),
            sni: self.sni.as_deref().map(lend).into(),
            // SAFETY: as for `lend`.
            alpn: self
                .alpn
                .as_deref()
                .map(|a| RSlice::from_slice(unsafe { &*(a as *const [u8]) }))
                .into(),
            peer_cert_subject: self.peer_cert_subject.as_deref().map(lend).into(),
        });
        // SAFETY: `fields` outlives the call to `f`, and the plugin only reads it during the
        // `make_consumer` call (it copies what it keeps into a plain `ConnInfo`).
        let raw = ConnInfoRef(unsafe { abi_stable::prefix_type::PrefixRef::from_raw(&fields) });
        f(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_symbol_is_the_literal_the_macro_writes() {
        assert_eq!(ROOT_SYMBOL, crate::__ROOT_SYMBOL_LITERAL);
    }

    #[test]
    fn raw_addr_round_trips() {
        for s in ["127.0.0.1:80", "[::1]:8070", "[fe80::1%2]:9"] {
            let a: std::net::SocketAddr = s.parse().unwrap();
            assert_eq!(RawAddr::from(a).to_std(), Some(a));
        }
        assert_eq!(RawAddr::default().to_std(), None);
    }
}
