//! The services extension of the plugin boundary, as it crosses: plain `#[repr(C)]` tables
//! exchanged through one extra exported function, [`SERVICES_SYMBOL`], that the host looks up
//! by name before it initialises the plugin's root module.
//!
//! Why not more fields in the abi_stable root module: abi_stable refuses a plugin whose
//! prefix types have *fewer* fields than the host's ("too many fields (expected 3, found
//! 2)"), so appending to `HostVTable`/`ConsumerVTable` would have refused every plugin built
//! for plugin-api 0.1.0. The root module therefore stays exactly as in 0.1.0, forever, and
//! everything new goes through these tables.
//!
//! # Compatibility rules (tested by `tests/tests/abi_compat.rs` and the `next` fixture)
//! - Every table starts with its own `size` in bytes; a field may only be **appended**, and a
//!   reader uses a field only if the writer's `size` covers it (see [`has`]). So a newer host
//!   serves an older plugin (it simply never calls what the plugin lacks) and a newer plugin
//!   runs on an older host (it never calls what the host lacks) — unless the plugin *needs*
//!   it:
//! - [`PluginServices::needs`] is the services level the plugin requires; the host refuses
//!   the plugin with one line when it offers less ([`SERVICES_LEVEL`]). A host that predates
//!   services never calls [`SERVICES_SYMBOL`]; a plugin that declared services notices that in
//!   its root-module constructor and refuses to initialise, with a message naming the level.
//! - Existing fields never change type or meaning; a change that cannot be an append is a new
//!   symbol (`sockhost_services_v2`).

// FFI boundary: the services tables as they cross, and the extern fns behind them.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use abi_stable::marker_type::ErasedObject;
use abi_stable::prefix_type::WithMetadata;
use abi_stable::staticref;
use abi_stable::std_types::{RResult, RSlice, RStr, RString};

use crate::abi::{CallResult, ConnInfoRef, ConsumerBox, ConsumerVTable, ConsumerVTableRef};
use crate::{ConnInfo, Consumer, Output, Protocol};

/// The exported function's name (NUL-terminated for the loader).
pub const SERVICES_SYMBOL: &[u8] = b"sockhost_services_v1\0";

/// The services level this plugin-api offers (host side) and declares (plugin side).
/// Level 1: post, close, timers, tick, lifecycle, wake handles, outbound TCP, pause/resume,
/// idle timeout.
pub const SERVICES_LEVEL: u32 = 1;

/// The signature of [`SERVICES_SYMBOL`]: the host hands its table and gets the plugin's.
pub type ServicesFn = unsafe extern "C" fn(host: *const HostServices) -> *const PluginServices;

/// [`crate::services::PostStatus`] codes.
pub const POST_QUEUED: u8 = 0;
/// See [`POST_QUEUED`].
pub const POST_BACKLOGGED: u8 = 1;
/// See [`POST_QUEUED`].
pub const POST_OVERFLOW: u8 = 2;
/// See [`POST_QUEUED`].
pub const POST_GONE: u8 = 3;

/// [`PluginServices::lifecycle`] event: the worker serves (its sockets are open).
pub const LIFECYCLE_SERVING: u8 = 1;
/// [`PluginServices::lifecycle`] event: the worker stops accepting and drains.
pub const LIFECYCLE_STOPPING: u8 = 2;

/// Durations cross as microseconds; this value means "none".
pub const NO_DURATION: u64 = u64::MAX;

/// A duration (or none) as it crosses.
pub fn micros(d: Option<Duration>) -> u64 {
    match d {
        None => NO_DURATION,
        Some(d) => u64::try_from(d.as_micros()).unwrap_or(NO_DURATION - 1),
    }
}

/// Back from [`micros`].
pub fn from_micros(us: u64) -> Option<Duration> {
    (us != NO_DURATION).then(|| Duration::from_micros(us))
}

/// Whether a table whose writer's size is `size` holds the field at `offset` of type `T`.
pub const fn has<T>(size: u32, offset: usize) -> bool {
    offset + std::mem::size_of::<T>() <= size as usize
}

/// What the host offers: its service functions. Append-only (see the module docs).
#[repr(C)]
pub struct HostServices {
    /// `size_of::<HostServices>()` as the host was built.
    pub size: u32,
    /// The services level the host offers.
    pub level: u32,
    /// Queue bytes on a connection; a `POST_*` code.
    pub post: extern "C" fn(to: u64, data: RSlice<'_, u8>) -> u8,
    /// Close a connection once its queued bytes are sent.
    pub close: extern "C" fn(id: u64),
    /// Set a timer (`after` in µs); returns the timer id, 0 if the connection is gone.
    pub set_timer: extern "C" fn(id: u64, after_us: u64, token: u64) -> u64,
    /// Cancel a timer.
    pub cancel_timer: extern "C" fn(timer: u64) -> bool,
    /// Pause (`true`) or resume reading.
    pub pause_reading: extern "C" fn(id: u64, paused: bool),
    /// The protocol's idle timeout in µs, [`NO_DURATION`] for none.
    pub set_idle_timeout: extern "C" fn(id: u64, timeout_us: u64),
    /// A wake handle; null `data` if the connection is gone.
    pub waker: extern "C" fn(id: u64, token: u64) -> RawWaker,
    /// Open an outbound connection driven by `consumer` (the host owns it from now on, also
    /// on failure); returns its id, or 0 with a message in `error`.
    pub connect: extern "C" fn(
        target: RStr<'_>,
        timeout_us: u64,
        consumer: ServiceConsumer,
        error: &mut RString,
    ) -> u64,
    /// Shut down a connection's sending side once its queued bytes are sent.
    pub shutdown_write: extern "C" fn(id: u64),
}

/// A thread-safe wake handle as it crosses: an opaque reference and its functions.
#[repr(C)]
pub struct RawWaker {
    /// Opaque, owned by this handle; null for "no waker".
    pub data: *const c_void,
    /// Its functions (callable from any thread).
    pub vtable: *const RawWakerVTable,
}

/// The functions of a [`RawWaker`].
#[repr(C)]
pub struct RawWakerVTable {
    /// `size_of::<RawWakerVTable>()` as the writer was built.
    pub size: u32,
    /// Schedule the callback; `false` if the target is gone.
    pub wake: unsafe extern "C" fn(data: *const c_void) -> bool,
    /// A new reference to the same target.
    pub clone: unsafe extern "C" fn(data: *const c_void) -> *const c_void,
    /// Release this reference.
    pub drop: unsafe extern "C" fn(data: *const c_void),
}

/// What the plugin offers beyond its 0.1.0 root module. Append-only (see the module docs).
#[repr(C)]
pub struct PluginServices {
    /// `size_of::<PluginServices>()` as the plugin was built.
    pub size: u32,
    /// The services level the plugin requires (0: it uses none).
    pub needs: u32,
    /// Make a consumer that knows its connection id (replaces the root module's
    /// `make_consumer` for this plugin).
    pub make_consumer: unsafe extern "C" fn(
        factory: *const ErasedObject,
        info: ConnInfoRef,
        id: u64,
    ) -> RResult<ServiceConsumer, RString>,
    /// The protocol's tick period in µs ([`NO_DURATION`]: no tick).
    pub tick_interval: unsafe extern "C" fn(factory: *const ErasedObject) -> u64,
    /// The periodic tick.
    pub tick: unsafe extern "C" fn(factory: *const ErasedObject) -> CallResult,
    /// A worker lifecycle event (`LIFECYCLE_*`).
    pub lifecycle: unsafe extern "C" fn(factory: *const ErasedObject, event: u8) -> CallResult,
}

/// A consumer with its services callbacks.
#[repr(C)]
pub struct ServiceConsumer {
    /// The consumer and its 0.1.0 callbacks.
    pub consumer: ConsumerBox,
    /// Its services callbacks.
    pub ext: *const ConsumerExt,
}

/// The services callbacks of one consumer type. Append-only.
#[repr(C)]
pub struct ConsumerExt {
    /// `size_of::<ConsumerExt>()` as the plugin was built.
    pub size: u32,
    /// See [`Consumer::timer_fired`].
    pub timer_fired:
        unsafe extern "C" fn(this: *mut ErasedObject, token: u64, out: &mut Output) -> CallResult,
    /// See [`Consumer::woken`].
    pub woken:
        unsafe extern "C" fn(this: *mut ErasedObject, token: u64, out: &mut Output) -> CallResult,
}

// ---------------------------------------------------------------------------------------------
// Plugin side.

/// The host's table, once the host called [`SERVICES_SYMBOL`]. One host per process.
static HOST: AtomicPtr<HostServices> = AtomicPtr::new(std::ptr::null_mut());

/// The host's table, if this process's host offers services.
pub(crate) fn host_services() -> Option<&'static HostServices> {
    let p = HOST.load(Ordering::Acquire);
    // SAFETY: set only from a `&'static HostServices` handed over by the host.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The services level the host offered (0 if none).
pub fn host_level() -> u32 {
    host_services().map_or(0, |h| h.level)
}

/// The body of the exported [`SERVICES_SYMBOL`] for plugin `P` (written by
/// [`export_plugin!`](crate::export_plugin)).
///
/// # Safety
/// `host` is null or a table that stays valid for the life of the process.
pub unsafe fn negotiate<P: Protocol>(host: *const HostServices) -> *const PluginServices {
    if !host.is_null() {
        HOST.store(host.cast_mut(), Ordering::Release);
    }
    ServicesGlue::<P>::TABLE
}

/// The services tables of plugin `P`.
pub struct ServicesGlue<P>(PhantomData<P>);

impl<P: Protocol> ServicesGlue<P> {
    /// Its table.
    pub const TABLE: &'static PluginServices = &PluginServices {
        size: std::mem::size_of::<PluginServices>() as u32,
        needs: P::INFO.services_level,
        make_consumer: make_consumer::<P>,
        tick_interval: tick_interval::<P>,
        tick: tick::<P>,
        lifecycle: lifecycle::<P>,
    };
}

/// The vtables of one consumer type `C` (inbound or outbound).
pub struct ConsumerGlue<C>(PhantomData<C>);

impl<C: Consumer> ConsumerGlue<C> {
    staticref!(
        /// Its 0.1.0 callbacks.
        pub const VTABLE: WithMetadata<ConsumerVTable> = WithMetadata::new(
            ConsumerVTable {
                connection_made: crate::abi::connection_made::<C>,
                data_received: crate::abi::data_received::<C>,
                eof_received: crate::abi::eof_received::<C>,
                connection_lost: crate::abi::connection_lost::<C>,
                drop: crate::abi::drop_box::<C>,
            }
        )
    );

    /// Its services callbacks.
    pub const EXT: &'static ConsumerExt = &ConsumerExt {
        size: std::mem::size_of::<ConsumerExt>() as u32,
        timer_fired: timer_fired::<C>,
        woken: woken::<C>,
    };

    /// Box `consumer` for the host.
    pub fn boxed(consumer: C) -> ServiceConsumer {
        ServiceConsumer {
            consumer: ConsumerBox {
                this: Box::into_raw(Box::new(consumer)).cast(),
                vtable: ConsumerVTableRef(Self::VTABLE.as_prefix()),
            },
            ext: Self::EXT,
        }
    }
}

/// Box any consumer for the host.
pub(crate) fn service_consumer<C: Consumer>(consumer: C) -> ServiceConsumer {
    ConsumerGlue::<C>::boxed(consumer)
}

fn guarded(f: impl FnOnce()) -> CallResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => RResult::ROk(()),
        Err(payload) => RResult::RErr(crate::abi::panic_message(payload)),
    }
}

/// # Safety
/// `this` is the plugin's `Box<P>`.
unsafe fn protocol<'a, P>(this: *const ErasedObject) -> &'a P {
    // SAFETY: guaranteed by the caller.
    unsafe { &*this.cast::<P>() }
}

unsafe extern "C" fn make_consumer<P: Protocol>(
    this: *const ErasedObject,
    info: ConnInfoRef,
    id: u64,
) -> RResult<ServiceConsumer, RString> {
    // SAFETY: the host passes the factory pointer made by `new_factory::<P>`.
    let p = unsafe { protocol::<P>(this) };
    match catch_unwind(AssertUnwindSafe(|| {
        let mut info = ConnInfo::from_raw(info);
        info.id = crate::services::ConnId::from_raw(id);
        p.consumer(&info)
    })) {
        Ok(consumer) => RResult::ROk(ConsumerGlue::<P::Consumer>::boxed(consumer)),
        Err(payload) => RResult::RErr(crate::abi::panic_message(payload)),
    }
}

unsafe extern "C" fn tick_interval<P: Protocol>(this: *const ErasedObject) -> u64 {
    // SAFETY: as in `make_consumer`.
    let p = unsafe { protocol::<P>(this) };
    catch_unwind(AssertUnwindSafe(|| micros(p.tick_interval()))).unwrap_or(NO_DURATION)
}

unsafe extern "C" fn tick<P: Protocol>(this: *const ErasedObject) -> CallResult {
    // SAFETY: as in `make_consumer`.
    let p = unsafe { protocol::<P>(this) };
    guarded(|| p.tick())
}

unsafe extern "C" fn lifecycle<P: Protocol>(this: *const ErasedObject, event: u8) -> CallResult {
    // SAFETY: as in `make_consumer`.
    let p = unsafe { protocol::<P>(this) };
    guarded(|| match event {
        LIFECYCLE_SERVING => p.serving(),
        LIFECYCLE_STOPPING => p.stopping(),
        _ => {}
    })
}

unsafe extern "C" fn timer_fired<C: Consumer>(
    this: *mut ErasedObject,
    token: u64,
    out: &mut Output,
) -> CallResult {
    // SAFETY: the host passes the consumer pointer it got with this table.
    let c = unsafe { &mut *this.cast::<C>() };
    guarded(|| c.timer_fired(token, out))
}

unsafe extern "C" fn woken<C: Consumer>(
    this: *mut ErasedObject,
    token: u64,
    out: &mut Output,
) -> CallResult {
    // SAFETY: the host passes the consumer pointer it got with this table.
    let c = unsafe { &mut *this.cast::<C>() };
    guarded(|| c.woken(token, out))
}

/// The root module constructor's check: a plugin that needs services refuses to initialise
/// on a host that did not offer them (one that predates services never calls
/// [`SERVICES_SYMBOL`]).
pub fn check_host<P: Protocol>() -> Result<(), String> {
    let needs = P::INFO.services_level;
    let offered = host_level();
    if needs > offered {
        let offered = if offered == 0 {
            "none".to_string()
        } else {
            format!("level {offered}")
        };
        return Err(format!(
            "it needs sockhost host services level {needs} (plugin-api 0.1.1 or newer) and this sockhost offers {offered}; upgrade sockhost"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Host side (and the harness): wake handles made from Rust closures.

/// What a wake handle calls.
#[cfg(any(feature = "host", feature = "testing"))]
pub trait Wake: Send + Sync + 'static {
    /// Schedule the callback; `false` if the target is gone.
    fn wake(&self) -> bool;
}

#[cfg(any(feature = "host", feature = "testing"))]
type WakeArc = std::sync::Arc<dyn Wake>;

/// A [`RawWaker`] over an `Arc<dyn Wake>`.
#[cfg(any(feature = "host", feature = "testing"))]
pub fn raw_waker(target: std::sync::Arc<dyn Wake>) -> RawWaker {
    RawWaker {
        data: Box::into_raw(Box::new(target))
            .cast::<c_void>()
            .cast_const(),
        vtable: &ARC_WAKER,
    }
}

/// "No waker".
pub const NO_WAKER: RawWaker = RawWaker {
    data: std::ptr::null(),
    vtable: std::ptr::null(),
};

#[cfg(any(feature = "host", feature = "testing"))]
static ARC_WAKER: RawWakerVTable = RawWakerVTable {
    size: std::mem::size_of::<RawWakerVTable>() as u32,
    wake: arc_wake,
    clone: arc_clone,
    drop: arc_drop,
};

#[cfg(any(feature = "host", feature = "testing"))]
unsafe extern "C" fn arc_wake(data: *const c_void) -> bool {
    // SAFETY: `data` is a live `Box<WakeArc>` made by `raw_waker`/`arc_clone`.
    let target = unsafe { &*data.cast::<WakeArc>() };
    catch_unwind(AssertUnwindSafe(|| target.wake())).unwrap_or(false)
}

#[cfg(any(feature = "host", feature = "testing"))]
unsafe extern "C" fn arc_clone(data: *const c_void) -> *const c_void {
    // SAFETY: as in `arc_wake`.
    let target = unsafe { &*data.cast::<WakeArc>() };
    Box::into_raw(Box::new(target.clone()))
        .cast::<c_void>()
        .cast_const()
}

#[cfg(any(feature = "host", feature = "testing"))]
unsafe extern "C" fn arc_drop(data: *const c_void) {
    // SAFETY: as in `arc_wake`; each reference is dropped once.
    drop(unsafe { Box::from_raw(data.cast::<WakeArc>().cast_mut()) });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The tables are append-only: these offsets may never change (a new field goes after
    /// the last one, and this test gains a line).
    #[test]
    fn table_layouts_are_pinned() {
        let p = std::mem::size_of::<usize>();
        assert_eq!(offset_of!(HostServices, size), 0);
        assert_eq!(offset_of!(HostServices, level), 4);
        assert_eq!(offset_of!(HostServices, post), 8);
        assert_eq!(offset_of!(HostServices, close), 8 + p);
        assert_eq!(offset_of!(HostServices, connect), 8 + 7 * p);
        assert_eq!(offset_of!(HostServices, shutdown_write), 8 + 8 * p);
        assert_eq!(offset_of!(PluginServices, needs), 4);
        assert_eq!(offset_of!(PluginServices, make_consumer), 8);
        assert_eq!(offset_of!(PluginServices, lifecycle), 8 + 3 * p);
        assert_eq!(offset_of!(ConsumerExt, timer_fired), p);
        assert_eq!(offset_of!(ConsumerExt, woken), 2 * p);
        assert_eq!(offset_of!(RawWakerVTable, drop), 3 * p);
    }

    #[test]
    fn durations_cross_as_micros() {
        assert_eq!(from_micros(micros(None)), None);
        let d = Duration::from_millis(1500);
        assert_eq!(from_micros(micros(Some(d))), Some(d));
        assert!(has::<u64>(16, 8));
        assert!(!has::<u64>(12, 8));
    }
}
