//! Host services: what a plugin can ask of the host besides answering — write to another
//! connection, keep timers, be woken from another thread, open outbound connections, and
//! flow-control its connections.
//!
//! Every service is a request to the worker that runs the plugin: **nothing a service call
//! raises runs inside the calling callback**. A [`post`] queues bytes on the target and returns
//! at once; the target sends them when its task next runs (in the same pass of the event
//! loop). A timer fires, a [`Waker`] wakes, an outbound connection connects — each as a later
//! callback on the worker's single thread. So a consumer is never re-entered, and a plugin
//! needs no locks for state shared by the consumers of one worker (`Rc<RefCell<…>>` is enough).
//!
//! A plugin that uses services declares it with [`PluginInfo::services`]. A host that cannot
//! offer them (sockhost before plugin-api 0.1.1) then refuses to load the plugin with one
//! error line instead of running it without them. Calling a service where none is offered
//! panics with a message saying so (the host catches the panic and closes that connection).
//!
//! Identities: each consumer's [`ConnInfo::id`] is a [`ConnId`] valid within its worker; the
//! ids of closed connections are never reused for a new one (a post to one answers
//! [`PostStatus::Gone`]).
//!
//! ```
//! use std::cell::RefCell;
//! use std::collections::BTreeMap;
//! use std::rc::Rc;
//! use std::time::Duration;
//! use plugin_api::services::{self, ConnId};
//! use plugin_api::{ConnInfo, Consumer, LostReason, Options, Output, PluginInfo, Protocol};
//!
//! /// Every line a client sends reaches every other client of the worker.
//! struct Broadcast(Rc<RefCell<BTreeMap<ConnId, ()>>>);
//! struct Member { id: ConnId, all: Rc<RefCell<BTreeMap<ConnId, ()>>> }
//!
//! impl Protocol for Broadcast {
//!     type Consumer = Member;
//!     const INFO: PluginInfo = PluginInfo::new("broadcast", "0.1.0", "fan-out").services();
//!     fn new(_: &Options) -> Result<Self, String> { Ok(Broadcast(Default::default())) }
//!     fn consumer(&self, info: &ConnInfo) -> Member {
//!         self.0.borrow_mut().insert(info.id, ());
//!         Member { id: info.id, all: self.0.clone() }
//!     }
//! }
//!
//! impl Consumer for Member {
//!     fn connection_made(&mut self, _out: &mut Output) {
//!         // Say goodbye after a minute: `timer_fired` runs then.
//!         services::set_timer(self.id, Duration::from_secs(60), 0);
//!     }
//!     fn data_received(&mut self, data: &[u8], _out: &mut Output) {
//!         for &other in self.all.borrow().keys().filter(|&&o| o != self.id) {
//!             services::post(other, data);
//!         }
//!     }
//!     fn timer_fired(&mut self, _token: u64, out: &mut Output) {
//!         out.write(b"bye\n");
//!         out.close();
//!     }
//!     fn connection_lost(&mut self, _: LostReason) {
//!         self.all.borrow_mut().remove(&self.id);
//!     }
//! }
//!
//! # use plugin_api::testing::Harness;
//! let h = Harness::<Broadcast>::new();
//! let mut a = h.connect().unwrap();
//! let mut b = h.connect().unwrap();
//! a.send(b"hi\n").unwrap();
//! h.run_until_idle();
//! assert_eq!(b.take_text(), "hi\n");
//! h.advance(Duration::from_secs(60));
//! assert_eq!(a.take_text(), "bye\n");
//! assert!(!a.is_open());
//! ```
//!
//! [`PluginInfo::services`]: crate::PluginInfo::services
//! [`ConnInfo::id`]: crate::ConnInfo::id

// FFI boundary: service handles are raw pointers into the host's tables, sent across threads.
#![allow(unsafe_code)]

use std::time::Duration;

use crate::services_abi::{self as sabi, RawWaker};
use crate::Consumer;

/// A connection's (or UDP peer session's, or outbound connection's) identity within its
/// worker. Copy it freely; it never refers to a different connection later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// No connection: what [`ConnInfo::id`](crate::ConnInfo::id) holds when the plugin was
    /// loaded by a host without services.
    pub const NONE: ConnId = ConnId(0);

    /// The raw value as it crosses the ABI.
    pub const fn to_raw(self) -> u64 {
        self.0
    }

    /// From the raw value.
    pub const fn from_raw(raw: u64) -> ConnId {
        ConnId(raw)
    }
}

/// A timer set with [`set_timer`]; cancel it with [`cancel_timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

impl TimerId {
    /// The raw value as it crosses the ABI.
    pub const fn to_raw(self) -> u64 {
        self.0
    }

    /// From the raw value.
    pub const fn from_raw(raw: u64) -> TimerId {
        TimerId(raw)
    }
}

/// What became of bytes given to [`post`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostStatus {
    /// Queued; the target is draining normally.
    Queued,
    /// Queued, but the target already holds more than its high-water mark of unsent bytes:
    /// it reads slowly (or not at all). Sending more only grows its backlog — the slow-reader
    /// signal: a fan-out plugin typically drops or disconnects such a subscriber.
    Backlogged,
    /// Not queued: the target would exceed the host's `--max-pending` bound; the host closes
    /// it ([`LostReason::Error`](crate::LostReason::Error)) so it costs no more memory.
    Overflow,
    /// Not queued: the target is closed or closing, or never existed in this worker.
    Gone,
}

impl PostStatus {
    pub(crate) fn from_code(code: u8) -> PostStatus {
        match code {
            sabi::POST_QUEUED => PostStatus::Queued,
            sabi::POST_BACKLOGGED => PostStatus::Backlogged,
            sabi::POST_OVERFLOW => PostStatus::Overflow,
            _ => PostStatus::Gone,
        }
    }

    /// The code that crosses the ABI.
    pub fn code(self) -> u8 {
        match self {
            PostStatus::Queued => sabi::POST_QUEUED,
            PostStatus::Backlogged => sabi::POST_BACKLOGGED,
            PostStatus::Overflow => sabi::POST_OVERFLOW,
            PostStatus::Gone => sabi::POST_GONE,
        }
    }

    /// Whether the bytes were queued ([`Queued`](PostStatus::Queued) or
    /// [`Backlogged`](PostStatus::Backlogged)).
    pub fn is_queued(self) -> bool {
        matches!(self, PostStatus::Queued | PostStatus::Backlogged)
    }
}

/// Why [`connect`] could not even start. Failures after it started (refused, timed out,
/// unresolvable name) reach the outbound consumer as
/// [`connection_lost(ConnectFailed)`](crate::LostReason::ConnectFailed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectError(pub String);

/// The port of a [`connect`] target, or the error [`connect`] answers for a target without
/// one: `HOST:PORT`, `IP:PORT` and `[IPv6]:PORT` have a non-empty host and a numeric port.
/// Nothing is resolved here.
///
/// ```
/// use plugin_api::services::target_port;
///
/// assert_eq!(target_port("127.0.0.1:6379"), Ok(6379));
/// assert_eq!(target_port("[::1]:80"), Ok(80));
/// assert_eq!(target_port("localhost:2003"), Ok(2003));
/// assert!(target_port("localhost").is_err());
/// assert!(target_port(":80").is_err());
/// assert!(target_port("host:99999").is_err());
/// ```
pub fn target_port(target: &str) -> Result<u16, ConnectError> {
    target
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| {
            ConnectError(format!(
                "connect {target:?}: expected HOST:PORT, IP:PORT or [IPv6]:PORT"
            ))
        })
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

/// Queue `data` on connection `to` (any connection of this worker, including the caller's
/// own), after whatever it already has to send. Over UDP it is one datagram to that peer.
///
/// The bytes count against the target's bound: see [`PostStatus`].
pub fn post(to: ConnId, data: &[u8]) -> PostStatus {
    backend::with(|b| b.post(to, data))
}

/// Close connection `id` once everything queued on it has been sent (as
/// [`Output::close`](crate::Output::close) does from its own callbacks). Its consumer hears
/// `connection_lost(Closed)`.
pub fn close(id: ConnId) {
    backend::with(|b| b.close(id))
}

/// Shut down connection `id`'s sending side once everything queued on it has been sent (a
/// TCP half-close, as [`Output::shutdown_write`](crate::Output::shutdown_write) does from its
/// own callbacks): a proxy relays its client's end of stream to the upstream this way. The
/// connection keeps receiving.
pub fn shutdown_write(id: ConnId) {
    backend::with(|b| b.shutdown_write(id))
}

/// Call `timer_fired(token)` on connection `id`'s consumer once, `after` from now. A consumer
/// may have any number of timers; they end with the connection. Re-arm by cancelling and
/// setting again (or by setting a new one from `timer_fired`).
///
/// Returns `None` if the connection is gone.
pub fn set_timer(id: ConnId, after: Duration, token: u64) -> Option<TimerId> {
    backend::with(|b| b.set_timer(id, after, token))
}

/// Cancel a timer; `false` if it already fired, was cancelled, or its connection ended.
pub fn cancel_timer(timer: TimerId) -> bool {
    backend::with(|b| b.cancel_timer(timer))
}

/// Stop reading from connection `id` (TCP): its peer's bytes wait in the kernel (and then
/// the peer's send buffer) until [`resume_reading`]. Flow control between two connections —
/// a proxy pauses its fast side while its slow side drains.
pub fn pause_reading(id: ConnId) {
    backend::with(|b| b.pause_reading(id, true))
}

/// Start reading from connection `id` again after [`pause_reading`].
pub fn resume_reading(id: ConnId) {
    backend::with(|b| b.pause_reading(id, false))
}

/// Replace the host's `--keep-alive` for connection `id` with the protocol's own idle
/// timeout: `Some(d)` ends it with [`LostReason::IdleTimeout`](crate::LostReason::IdleTimeout)
/// after `d` without a byte from the peer; `None` never ends it for idleness.
pub fn set_idle_timeout(id: ConnId, timeout: Option<Duration>) {
    backend::with(|b| b.set_idle_timeout(id, timeout))
}

/// A handle that another thread can use to wake connection `id`: its consumer's
/// `woken(token)` then runs on the worker's thread. For work done off the loop — blocking
/// DNS, disk, a database driver: the thread keeps the result somewhere shared (a
/// `Mutex`/channel), and calls [`Waker::wake`]; the callback picks it up.
///
/// `None` if the connection is gone.
pub fn waker(id: ConnId, token: u64) -> Option<Waker> {
    backend::with(|b| b.waker(id, token))
}

/// Open an outbound TCP connection to `target` (`IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`;
/// names are resolved off the worker's loop), driven by `consumer` exactly as the host drives
/// an accepted connection: `connection_made` once connected, then data, and
/// `connection_lost` once. If the connection cannot be made within `timeout` (refused,
/// unreachable, name not found, the peer never accepting), the consumer hears only
/// `connection_lost(`[`ConnectFailed`](crate::LostReason::ConnectFailed)`)`.
///
/// The id is valid at once: bytes [`post`]ed to it before it connects are sent once it does.
/// Outbound connections are not subject to `--keep-alive`. At a graceful stop the host waits
/// for them like any other connection: close them in
/// [`Protocol::stopping`](crate::Protocol::stopping) once their last bytes are queued.
pub fn connect<C: Consumer>(
    target: &str,
    timeout: Duration,
    consumer: C,
) -> Result<ConnId, ConnectError> {
    let raw = sabi::service_consumer(consumer);
    // The harness reads outbound consumers back as their concrete type: tell it which.
    #[cfg(feature = "testing")]
    crate::testing::note_outbound_type::<C>();
    backend::with(|b| b.connect(target, timeout, raw))
}

/// Whether this process's host offers services (always, for a plugin that declared
/// [`PluginInfo::services`](crate::PluginInfo::services), once it is loaded).
pub fn available() -> bool {
    backend::available()
}

/// Wakes one connection's consumer from any thread; see [`waker`]. Cheap to clone; waking a
/// connection that has ended does nothing and returns `false`.
pub struct Waker {
    raw: RawWaker,
}

// SAFETY: the host builds wakers only from thread-safe parts (`RawWakerVTable` docs: every
// function may be called from any thread).
unsafe impl Send for Waker {}
// SAFETY: as above; `wake` takes `&self` and the host's implementation is thread-safe.
unsafe impl Sync for Waker {}

impl Waker {
    pub(crate) fn from_raw(raw: RawWaker) -> Option<Waker> {
        (!raw.data.is_null()).then_some(Waker { raw })
    }

    /// Schedule `woken(token)` on the consumer's worker; `false` if the connection (or the
    /// worker) is gone.
    pub fn wake(&self) -> bool {
        // SAFETY: `data` and the vtable come from the host and stay valid until `drop`.
        unsafe { ((*self.raw.vtable).wake)(self.raw.data) }
    }
}

#[cfg(any(feature = "host", feature = "testing"))]
impl Waker {
    /// A waker that calls `target` (the host and the harness make them).
    pub fn new(target: std::sync::Arc<dyn sabi::Wake>) -> Waker {
        Waker {
            raw: sabi::raw_waker(target),
        }
    }

    /// Hand the reference over the ABI.
    pub(crate) fn into_raw(self) -> RawWaker {
        let raw = RawWaker {
            data: self.raw.data,
            vtable: self.raw.vtable,
        };
        std::mem::forget(self);
        raw
    }
}

impl Clone for Waker {
    fn clone(&self) -> Waker {
        // SAFETY: as in `wake`.
        let data = unsafe { ((*self.raw.vtable).clone)(self.raw.data) };
        Waker {
            raw: RawWaker {
                data,
                vtable: self.raw.vtable,
            },
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: as in `wake`; this handle's reference is released exactly once.
        unsafe { ((*self.raw.vtable).drop)(self.raw.data) }
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

/// Where service calls go: the host's table (a loaded plugin), or the test harness's fake
/// worker on this thread (feature `testing`).
pub(crate) mod backend {
    use super::*;

    /// What a worker implements to serve the plugin's services calls (the host's worker,
    /// and the test harness's fake one). Each method is the service of the same name in
    /// [`crate::services`]; none may call back into a consumer (queue the effect instead).
    #[cfg(any(feature = "host", feature = "testing"))]
    pub trait Backend {
        /// See [`post`](crate::services::post).
        fn post(&self, to: ConnId, data: &[u8]) -> PostStatus;
        /// See [`close`](crate::services::close).
        fn close(&self, id: ConnId);
        /// See [`shutdown_write`](crate::services::shutdown_write).
        fn shutdown_write(&self, id: ConnId);
        /// See [`set_timer`](crate::services::set_timer).
        fn set_timer(&self, id: ConnId, after: Duration, token: u64) -> Option<TimerId>;
        /// See [`cancel_timer`](crate::services::cancel_timer).
        fn cancel_timer(&self, timer: TimerId) -> bool;
        /// See [`pause_reading`](crate::services::pause_reading).
        fn pause_reading(&self, id: ConnId, paused: bool);
        /// See [`set_idle_timeout`](crate::services::set_idle_timeout).
        fn set_idle_timeout(&self, id: ConnId, timeout: Option<Duration>);
        /// See [`waker`](crate::services::waker).
        fn waker(&self, id: ConnId, token: u64) -> Option<Waker>;
        /// See [`connect`](crate::services::connect); the consumer is the host's from now on.
        fn connect(
            &self,
            target: &str,
            timeout: Duration,
            consumer: crate::host::ConsumerHandle,
        ) -> Result<ConnId, ConnectError>;
    }

    #[cfg(feature = "testing")]
    thread_local! {
        static LOCAL: std::cell::RefCell<Option<std::rc::Rc<dyn Backend>>> = const { std::cell::RefCell::new(None) };
    }

    /// Make `backend` this thread's services for the duration of `f` (the harness does this
    /// around every callback it drives).
    #[cfg(feature = "testing")]
    #[allow(dead_code)] // used by the harness
    pub(crate) fn scoped<R>(backend: std::rc::Rc<dyn Backend>, f: impl FnOnce() -> R) -> R {
        let previous = LOCAL.with(|l| l.borrow_mut().replace(backend));
        struct Restore(Option<std::rc::Rc<dyn Backend>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                LOCAL.with(|l| *l.borrow_mut() = previous);
            }
        }
        let _restore = Restore(previous);
        f()
    }

    pub(crate) fn available() -> bool {
        #[cfg(feature = "testing")]
        if LOCAL.with(|l| l.borrow().is_some()) {
            return true;
        }
        sabi::host_services().is_some()
    }

    pub(crate) fn with<R>(f: impl FnOnce(&dyn Api) -> R) -> R {
        #[cfg(feature = "testing")]
        {
            let local = LOCAL.with(|l| l.borrow().clone());
            if let Some(local) = local {
                return f(&Local(local));
            }
        }
        match sabi::host_services() {
            Some(host) => f(&Ffi(host)),
            None => panic!(
                "sockhost host services are not available: declare them with PluginInfo::services() and run on a sockhost that offers them (plugin-api 0.1.1 or newer)"
            ),
        }
    }

    /// The plugin-side view of a backend (the consumer crosses as its FFI form).
    pub(crate) trait Api {
        fn post(&self, to: ConnId, data: &[u8]) -> PostStatus;
        fn close(&self, id: ConnId);
        fn shutdown_write(&self, id: ConnId);
        fn set_timer(&self, id: ConnId, after: Duration, token: u64) -> Option<TimerId>;
        fn cancel_timer(&self, timer: TimerId) -> bool;
        fn pause_reading(&self, id: ConnId, paused: bool);
        fn set_idle_timeout(&self, id: ConnId, timeout: Option<Duration>);
        fn waker(&self, id: ConnId, token: u64) -> Option<Waker>;
        fn connect(
            &self,
            target: &str,
            timeout: Duration,
            consumer: sabi::ServiceConsumer,
        ) -> Result<ConnId, ConnectError>;
    }

    struct Ffi(&'static sabi::HostServices);

    impl Api for Ffi {
        fn post(&self, to: ConnId, data: &[u8]) -> PostStatus {
            PostStatus::from_code((self.0.post)(to.0, data.into()))
        }
        fn close(&self, id: ConnId) {
            (self.0.close)(id.0)
        }
        fn shutdown_write(&self, id: ConnId) {
            // Present in every host with services level 1 (appended before 0.1.1 shipped).
            if sabi::has::<u64>(
                self.0.size,
                std::mem::offset_of!(sabi::HostServices, shutdown_write),
            ) {
                (self.0.shutdown_write)(id.0)
            }
        }
        fn set_timer(&self, id: ConnId, after: Duration, token: u64) -> Option<TimerId> {
            let t = (self.0.set_timer)(id.0, sabi::micros(Some(after)), token);
            (t != 0).then_some(TimerId(t))
        }
        fn cancel_timer(&self, timer: TimerId) -> bool {
            (self.0.cancel_timer)(timer.0)
        }
        fn pause_reading(&self, id: ConnId, paused: bool) {
            (self.0.pause_reading)(id.0, paused)
        }
        fn set_idle_timeout(&self, id: ConnId, timeout: Option<Duration>) {
            (self.0.set_idle_timeout)(id.0, sabi::micros(timeout))
        }
        fn waker(&self, id: ConnId, token: u64) -> Option<Waker> {
            Waker::from_raw((self.0.waker)(id.0, token))
        }
        fn connect(
            &self,
            target: &str,
            timeout: Duration,
            consumer: sabi::ServiceConsumer,
        ) -> Result<ConnId, ConnectError> {
            let mut error = abi_stable::std_types::RString::new();
            let id = (self.0.connect)(
                target.into(),
                sabi::micros(Some(timeout)),
                consumer,
                &mut error,
            );
            if id == 0 {
                Err(ConnectError(error.into()))
            } else {
                Ok(ConnId(id))
            }
        }
    }

    #[cfg(feature = "testing")]
    struct Local(std::rc::Rc<dyn Backend>);

    #[cfg(feature = "testing")]
    impl Api for Local {
        fn post(&self, to: ConnId, data: &[u8]) -> PostStatus {
            self.0.post(to, data)
        }
        fn close(&self, id: ConnId) {
            self.0.close(id)
        }
        fn shutdown_write(&self, id: ConnId) {
            self.0.shutdown_write(id)
        }
        fn set_timer(&self, id: ConnId, after: Duration, token: u64) -> Option<TimerId> {
            self.0.set_timer(id, after, token)
        }
        fn cancel_timer(&self, timer: TimerId) -> bool {
            self.0.cancel_timer(timer)
        }
        fn pause_reading(&self, id: ConnId, paused: bool) {
            self.0.pause_reading(id, paused)
        }
        fn set_idle_timeout(&self, id: ConnId, timeout: Option<Duration>) {
            self.0.set_idle_timeout(id, timeout)
        }
        fn waker(&self, id: ConnId, token: u64) -> Option<Waker> {
            self.0.waker(id, token)
        }
        fn connect(
            &self,
            target: &str,
            timeout: Duration,
            consumer: sabi::ServiceConsumer,
        ) -> Result<ConnId, ConnectError> {
            self.0.connect(
                target,
                timeout,
                crate::host::ConsumerHandle::from_service(consumer),
            )
        }
    }
}
