//! A sans-IO test harness for plugin authors (feature `testing`): drive a [`Consumer`]
//! exactly as the host would, without sockets, processes or a runtime.
//!
//! * [`Harness`] is one worker: the protocol built from `--plugin-opt` pairs the way
//!   `sockhost` builds it (unknown keys refused with the host's message, declared defaults
//!   filled in), a fake clock, and the worker's [host services](crate::services). Every
//!   [`Connection`] it opens shares that protocol, as the connections of one worker do.
//! * [`Connection`] is one client: [`send`](Connection::send) bytes (one call is one read
//!   over TCP, one datagram over UDP), read what the consumer wrote with
//!   [`take_output`](Connection::take_output) / [`take_text`](Connection::take_text) /
//!   [`take_datagrams`](Connection::take_datagrams), end the stream with
//!   [`eof`](Connection::eof), or end the connection from the host's side with
//!   [`idle_timeout`](Connection::idle_timeout), [`stop`](Connection::stop),
//!   [`peer_reset`](Connection::peer_reset) or [`lose`](Connection::lose).
//! * [`ConnSpec`] describes the connection the consumer is told about ([`ConnInfo`]):
//!   transport, addresses, TLS details.
//!
//! # The consumer contract
//!
//! The harness drives every consumer through the host's own session core
//! ([`crate::session::Session`]) and the same FFI glue a loaded plugin goes through, so it
//! behaves like the host by construction: `connection_made` when the connection opens;
//! `data_received` per read; after the callback that asks to close, the connection ends with
//! `connection_lost(Closed)` and later input is discarded; after [`Output::shutdown_write`]
//! later writes are dropped; after `eof_received` the connection ends with
//! `connection_lost(Closed)` (nothing can write any more); a panic in a callback is caught,
//! its output discarded, and the connection ends with `connection_lost(Error)` — the harness
//! returns it as `Err(`[`Panicked`]`)`. Every consumer hears `connection_lost` exactly once
//! and is dropped right after, as in the host; a [`Connection`] dropped while still open
//! reports [`LostReason::Shutdown`].
//!
//! Output a consumer writes is "sent" at once: it waits in the connection until the test
//! takes it. Bytes the test has not taken count as the connection's *pending* bytes, which
//! is what [`services::post`](crate::services::post) compares with the host's bounds
//! ([`HIGH_WATER`], [`MAX_PENDING`]). The harness never stops reading because of them:
//! [`send`](Connection::send) always delivers (unless the plugin paused reading), and a
//! consumer's own writes are never cut off (the host's `--max-pending` and `--send-timeout`
//! also end a connection whose *own* unsent output grows past them; the harness leaves that
//! to black-box tests).
//!
//! # Services
//!
//! A plugin that declares [`PluginInfo::services`](crate::PluginInfo::services) gets a fake
//! worker: every connection has a [`ConnId`] in [`ConnInfo::id`], and every callback the
//! harness drives can call the [services](crate::services). As in the host, nothing a
//! service call raises runs inside the calling callback: posts, closes, wakes and due timers
//! are queued and delivered afterwards, in order, until nothing is left
//! ([`run_until_idle`](Harness::run_until_idle)). Every harness operation (`connect`,
//! `send`, `eof`, `advance`, ...) runs until idle before it returns, so a test rarely calls
//! it itself.
//!
//! | service | in the harness |
//! |---|---|
//! | [`post`](crate::services::post) | appended to the target's output after the callback; `Gone`, `Backlogged` and `Overflow` as in the host, against the target's [pending](Connection::pending) bytes |
//! | [`close`](crate::services::close) | the target ends with `Closed` after the callback |
//! | [`shutdown_write`](crate::services::shutdown_write) | the target's later output is dropped ([`shutdown_requested`](Connection::shutdown_requested)); it keeps receiving |
//! | [`set_timer`](crate::services::set_timer), [`cancel_timer`](crate::services::cancel_timer) | fire on the fake clock: [`advance`](Harness::advance) |
//! | [`Protocol::tick`] | every `tick_interval` of the fake clock |
//! | [`set_idle_timeout`](crate::services::set_idle_timeout) | ends the connection with `IdleTimeout` when the fake clock passes it without a [`send`](Connection::send) |
//! | [`pause_reading`](crate::services::pause_reading), [`resume_reading`](crate::services::resume_reading) | [`send`](Connection::send) and [`eof`](Connection::eof) on a paused connection are held, and delivered in order on resume ([`is_paused`](Connection::is_paused)) |
//! | [`waker`](crate::services::waker) | a real, thread-safe [`Waker`]; wakes are delivered on the test's thread by the next harness operation, or by [`wait_for_wakes`](Harness::wait_for_wakes) |
//! | [`connect`](crate::services::connect) | the test plays the server: [`outbound`](Harness::outbound), [`accept_outbound`](Harness::accept_outbound), [`refuse_outbound`](Harness::refuse_outbound); the timeout runs on the fake clock |
//! | [`Protocol::serving`], [`Protocol::stopping`] | [`Harness::serving`], [`Harness::stopping`] |
//!
//! The fake clock drives only the harness's timers, ticks and timeouts; plugin code that
//! reads `std::time::Instant` sees real time. A plugin that did not declare services gets
//! [`ConnId::NONE`] in its [`ConnInfo`], as from the host, and a service call from it panics
//! with a message saying to declare them (the harness reports the panic as the host would).
//!
//! What the plugin logs with the `log` crate goes to whatever logger the test installed
//! (none by default); the harness installs none, and never goes through the host's bridge.
//!
//! # Example
//!
//! Add the harness to the plugin's dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! sockhost-plugin-api = { path = "../plugin-api", features = ["testing"] }
//! ```
//!
//! and test the protocol like this:
//!
//! ```
//! use plugin_api::testing::{ConnSpec, Harness, Panicked};
//! use plugin_api::{ConnInfo, Consumer, LostReason, OptionSpec, Options, Output, PluginInfo, Protocol};
//!
//! /// Greets, then answers each chunk with `<prefix><chunk>`; `bye` closes.
//! struct Prefix(String);
//! struct PrefixConsumer(String);
//!
//! impl Protocol for Prefix {
//!     type Consumer = PrefixConsumer;
//!     const INFO: PluginInfo = PluginInfo::new("prefix", "0.1.0", "prefixes what you send")
//!         .options(&[OptionSpec::new("prefix", "text put before each reply").default_value("> ")]);
//!
//!     fn new(options: &Options) -> Result<Self, String> {
//!         Ok(Prefix(options.get("prefix").unwrap_or_default().to_string()))
//!     }
//!
//!     fn consumer(&self, _info: &ConnInfo) -> PrefixConsumer {
//!         PrefixConsumer(self.0.clone())
//!     }
//! }
//!
//! impl Consumer for PrefixConsumer {
//!     fn connection_made(&mut self, out: &mut Output) {
//!         out.write(b"hello\n");
//!     }
//!
//!     fn data_received(&mut self, data: &[u8], out: &mut Output) {
//!         if data == b"bye" {
//!             out.close();
//!         } else if data == b"boom" {
//!             panic!("asked to explode");
//!         } else {
//!             out.write(self.0.as_bytes());
//!             out.write(data);
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Panicked> {
//! // Declared defaults apply when an option is not given.
//! let harness = Harness::<Prefix>::new();
//! let mut conn = harness.connect()?;
//! assert_eq!(conn.take_text(), "hello\n"); // written by connection_made
//! assert_eq!(conn.round_trip(b"hi")?, b"> hi");
//! conn.send(b"bye")?;
//! assert_eq!(conn.lost_reason(), Some(LostReason::Closed));
//!
//! // Options are checked the way sockhost checks them.
//! let harness = Harness::<Prefix>::with_options([("prefix", "=> ")]).unwrap();
//! let mut conn = harness.open(ConnSpec::tcp().sni("example.com"))?;
//! conn.take_output();
//! assert_eq!(conn.round_trip_text("hi")?, "=> hi");
//! let refused = Harness::<Prefix>::with_options([("colour", "blue")]).err().unwrap();
//! assert_eq!(refused, r#"plugin prefix: unknown option "colour" (accepted: prefix)"#);
//!
//! // A panic ends only that connection, with `connection_lost(Error)`.
//! let err = conn.send(b"boom").unwrap_err();
//! assert_eq!(err.message, "asked to explode");
//! assert_eq!(conn.lost_reason(), Some(LostReason::Error));
//! # Ok(())
//! # }
//! ```
//!
//! # Example with services
//!
//! A relay: each client connection opens an outbound connection to a backend, forwards what
//! it reads there, and gives up on a backend that stays silent for five seconds. The test
//! plays the backend.
//!
//! ```
//! use std::time::Duration;
//! use plugin_api::services::{self, ConnId};
//! use plugin_api::testing::Harness;
//! use plugin_api::{ConnInfo, Consumer, LostReason, Options, Output, PluginInfo, Protocol};
//!
//! struct Relay;
//! struct Client { id: ConnId, upstream: Option<ConnId> }
//! /// The outbound side: hands the backend's bytes to its client.
//! struct Upstream { client: ConnId }
//!
//! impl Protocol for Relay {
//!     type Consumer = Client;
//!     const INFO: PluginInfo = PluginInfo::new("relay", "0.1.0", "relays").services();
//!     fn new(_: &Options) -> Result<Self, String> { Ok(Relay) }
//!     fn consumer(&self, info: &ConnInfo) -> Client { Client { id: info.id, upstream: None } }
//! }
//!
//! impl Consumer for Client {
//!     fn connection_made(&mut self, _out: &mut Output) {
//!         let up = Upstream { client: self.id };
//!         self.upstream = services::connect("192.0.2.1:7000", Duration::from_secs(2), up).ok();
//!         services::set_timer(self.id, Duration::from_secs(5), 0);
//!     }
//!     fn data_received(&mut self, data: &[u8], _out: &mut Output) {
//!         if let Some(up) = self.upstream {
//!             services::post(up, data); // sent once it has connected
//!         }
//!     }
//!     fn timer_fired(&mut self, _token: u64, out: &mut Output) {
//!         out.write(b"backend too slow\n");
//!         out.close();
//!     }
//! }
//!
//! impl Consumer for Upstream {
//!     fn data_received(&mut self, data: &[u8], _out: &mut Output) {
//!         services::post(self.client, data);
//!     }
//!     fn connection_lost(&mut self, reason: LostReason) {
//!         if reason == LostReason::ConnectFailed {
//!             services::post(self.client, b"backend down\n");
//!             services::close(self.client);
//!         }
//!     }
//! }
//!
//! let h = Harness::<Relay>::new();
//! let mut client = h.connect().unwrap();
//! client.send(b"GET\n").unwrap();
//! let (id, target) = h.outbound().pop().unwrap();
//! assert_eq!(target, "192.0.2.1:7000");
//! let mut backend = h.accept_outbound::<Upstream>(id).unwrap();
//! assert_eq!(backend.take_text(), "GET\n"); // posted before it connected
//! backend.send(b"VALUE 1\n").unwrap();
//! assert_eq!(client.take_text(), "VALUE 1\n");
//!
//! // A second client whose backend never answers the connect: the 2 s timeout runs out first.
//! let mut late = h.connect().unwrap();
//! h.advance(Duration::from_secs(2));
//! assert_eq!(late.take_text(), "backend down\n");
//! assert_eq!(late.lost_reason(), Some(LostReason::Closed));
//!
//! // Three more seconds: the first client's timer fires.
//! h.advance(Duration::from_secs(3));
//! assert_eq!(client.take_text(), "backend too slow\n");
//! assert!(!client.is_open());
//! ```

// FFI boundary: the harness drives a plugin through the same tables the host does.
#![allow(unsafe_code)]

//!
//! # Black-box tests
//! [`server::Sockhost`] starts the real `sockhost` binary on the library your crate built, for
//! integration tests over loopback.

pub mod server;

use std::any::TypeId;
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::abi::{FactoryBox, FactoryVTableRef, Glue};
use crate::host::{ConsumerHandle, Factory};
use crate::services::backend::{self, Backend};
use crate::services::{ConnId, ConnectError, PostStatus, TimerId, Waker};
use crate::services_abi::{ServicesGlue, Wake};
use crate::session::{Delivered, Input, Session};
use crate::{ConnInfo, Consumer, LostReason, Options, Output, Protocol, Transport};

/// The peer address [`Harness::connect`] gives its first connection; each further
/// connection of the same harness gets the next port.
pub const DEFAULT_PEER: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40000));

/// The local address connections are given unless a [`ConnSpec`] says otherwise
/// (sockhost's default bind).
pub const DEFAULT_LOCAL: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8060));

/// A connection's high-water mark, as in the host: a [`post`](crate::services::post) that
/// leaves the target with more [pending](Connection::pending) bytes than this answers
/// [`PostStatus::Backlogged`].
///
/// ```
/// assert_eq!(plugin_api::testing::HIGH_WATER, 256 * 1024);
/// ```
pub const HIGH_WATER: usize = 256 * 1024;

/// The default bound on a connection's [pending](Connection::pending) bytes (sockhost's
/// `--max-pending` default): a [`post`](crate::services::post) that would exceed it answers
/// [`PostStatus::Overflow`] and the target ends with [`LostReason::Error`]. Change it with
/// [`Harness::set_max_pending`].
///
/// ```
/// assert_eq!(plugin_api::testing::MAX_PENDING, 4 * 1024 * 1024);
/// ```
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

/// How many events and callbacks one harness operation may deliver before it gives up: more
/// means the plugin keeps itself busy (a zero-delay timer re-armed from `timer_fired`, a
/// consumer posting to itself on every post, ...), which would spin the host's worker too.
const MAX_STEPS: usize = 1_000_000;

/// A tick period of zero would tick forever at one instant; the harness ticks at most this
/// often.
const MIN_TICK: Duration = Duration::from_millis(1);

const BUSY: &str = "the harness is busy: a Ref from Connection::consumer()/consumer_mut() is still held (drop it before driving the harness), or a harness operation was called from inside a plugin callback";

/// A panic caught in one of the plugin's callbacks. The host logs it and closes the
/// connection; the harness has ended the connection with [`LostReason::Error`] (or, for a
/// panic in [`Protocol::consumer`], never opened it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panicked {
    /// Which callback panicked: `consumer`, `connection_made`, `data_received`,
    /// `eof_received`, `timer_fired`, `woken`, `connection_lost`, or the protocol's `tick`,
    /// `serving` or `stopping`.
    pub callback: &'static str,
    /// The panic message (`panic with a non-string payload` when it had none).
    pub message: String,
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin panicked in {}: {}", self.callback, self.message)
    }
}

impl std::error::Error for Panicked {}

impl Panicked {
    fn lost(message: String) -> Panicked {
        Panicked {
            callback: "connection_lost",
            message,
        }
    }
}

/// Runs `f` as the ABI glue does: a panic becomes its message.
fn guarded<R>(callback: &'static str, f: impl FnOnce() -> R) -> Result<R, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Panicked {
        callback,
        message: crate::abi::panic_message(payload).into(),
    })
}

/// The callback an input runs.
fn callback_name(input: Input<'_>) -> &'static str {
    match input {
        Input::Made => "connection_made",
        Input::Data(_) => "data_received",
        Input::Eof => "eof_received",
        Input::Timer(_) => "timer_fired",
        Input::Woken(_) => "woken",
    }
}

thread_local! {
    /// The type of the consumer [`services::connect`](crate::services::connect) is handing
    /// over on this thread, so that [`Harness::accept_outbound`] can check it.
    static OUTBOUND_TYPE: Cell<Option<(TypeId, &'static str)>> = const { Cell::new(None) };
}

/// Called by [`services::connect`](crate::services::connect) just before the consumer
/// crosses to the backend as an erased handle.
pub(crate) fn note_outbound_type<C: 'static>() {
    OUTBOUND_TYPE.with(|t| t.set(Some((TypeId::of::<C>(), std::any::type_name::<C>()))));
}

/// One worker's instance of protocol `P`, built from options as `sockhost` builds it, with
/// the worker's services and a fake clock.
///
/// Connections opened from the same harness share the protocol value (and whatever state it
/// shares with its consumers), like the connections served by one worker process. A
/// [`Connection`] keeps the worker alive: it stays usable after the harness value is dropped.
pub struct Harness<P> {
    world: Rc<World>,
    /// The protocol inside the factory that `world` owns.
    protocol: *const P,
    _protocol: PhantomData<P>,
}

impl<P: Protocol> Default for Harness<P> {
    /// Same as [`Harness::new`].
    fn default() -> Self {
        Harness::new()
    }
}

impl<P: Protocol> Harness<P> {
    /// The protocol with no `--plugin-opt` given: declared defaults only.
    ///
    /// # Panics
    /// If [`Protocol::new`] refuses the defaults (or panics), with the message `sockhost`
    /// would print; use [`with_options`](Harness::with_options) to test refusals.
    pub fn new() -> Self {
        match Harness::with_options(std::iter::empty::<(&str, &str)>()) {
            Ok(harness) => harness,
            Err(message) => panic!("{message}"),
        }
    }

    /// The protocol built from `--plugin-opt KEY=VALUE` pairs, in the order given.
    ///
    /// As in `sockhost`, a key the plugin did not declare in [`PluginInfo::options`] is
    /// refused before [`Protocol::new`] runs, declared defaults fill in keys not given, and
    /// the last value given for a key wins. `Err` is exactly the text `sockhost` prints after
    /// `error: `, e.g. `plugin kv: unknown option "colour" (accepted: max-line, max-keys)` or
    /// `plugin kv: option max-line: invalid value "many": invalid digit found in string`.
    ///
    /// [`PluginInfo::options`]: crate::PluginInfo::options
    pub fn with_options<I, K, V>(pairs: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let info = P::INFO;
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        for (key, _) in &pairs {
            let key = key.as_ref();
            if !info.options.iter().any(|o| o.name() == key) {
                let accepted = if info.options.is_empty() {
                    "it accepts no options".to_string()
                } else {
                    let names: Vec<&str> = info.options.iter().map(|o| o.name()).collect();
                    format!("accepted: {}", names.join(", "))
                };
                return Err(format!(
                    "plugin {}: unknown option {key:?} ({accepted})",
                    info.name
                ));
            }
        }
        let options = Options::new(
            info.options,
            pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        );
        match guarded("new", || P::new(&options)) {
            Ok(Ok(protocol)) => Ok(Harness::from_protocol(protocol)),
            Ok(Err(message)) => Err(format!("plugin {}: {message}", info.name)),
            Err(panicked) => Err(format!("plugin {}: {}", info.name, panicked.message)),
        }
    }

    /// A harness around a protocol value you built yourself (skipping option handling).
    ///
    /// The protocol becomes the worker's factory exactly as a loaded plugin's does (through
    /// the plugin's FFI tables); its [`tick_interval`](Protocol::tick_interval) is asked
    /// now, and the first tick is due one interval from now on the fake clock.
    pub fn from_protocol(protocol: P) -> Self {
        let this = Box::into_raw(Box::new(protocol));
        let raw = FactoryBox {
            this: this.cast(),
            vtable: FactoryVTableRef(Glue::<P>::FACTORY_VT.as_prefix()),
        };
        let factory = Factory::from_raw(raw, ServicesGlue::<P>::TABLE);
        let world = Rc::new(World {
            services: factory.uses_services(),
            factory: Some(factory),
            state: RefCell::new(State::default()),
            wakes: Arc::default(),
        });
        let every = world.scope(|| world.factory().tick_interval());
        world.state().tick = every.map(|every| {
            let every = every.max(MIN_TICK);
            Tick { every, next: every }
        });
        Harness {
            world,
            protocol: this,
            _protocol: PhantomData,
        }
    }

    /// The protocol value, for assertions on shared state.
    pub fn protocol(&self) -> &P {
        // SAFETY: `protocol` is the `Box<P>` inside the factory that `self.world` owns and
        // frees only when the world is dropped, which `self` prevents; the host's factory
        // calls take `&P` too, so shared references may coexist.
        unsafe { &*self.protocol }
    }

    /// Open a plain TCP connection from [`DEFAULT_PEER`] (the next port for each call) to
    /// [`DEFAULT_LOCAL`]; see [`open`](Harness::open).
    pub fn connect(&self) -> Result<Connection<P::Consumer>, Panicked> {
        let port = {
            let mut st = self.world.state();
            let port = st.next_peer_port;
            st.next_peer_port = port.wrapping_add(1);
            port
        };
        let mut peer = DEFAULT_PEER;
        peer.set_port(port);
        self.open(ConnSpec::tcp().peer(peer))
    }

    /// Open a connection (or UDP peer session) described by `info`: the factory's
    /// [`Protocol::consumer`] makes its consumer, then
    /// [`Consumer::connection_made`] runs; whatever it writes is ready in
    /// [`take_output`](Connection::take_output). With services, the connection gets the
    /// next [`ConnId`] (never reused) in [`ConnInfo::id`].
    ///
    /// `Err` if either panicked: the host drops such a connection (after
    /// `connection_lost(Error)` when the consumer had been made).
    ///
    /// # Panics
    /// If the plugin does not declare `info`'s transport in [`PluginInfo::transports`]
    /// (sockhost would refuse to bind it).
    ///
    /// [`PluginInfo::transports`]: crate::PluginInfo::transports
    pub fn open(&self, info: impl Into<ConnInfo>) -> Result<Connection<P::Consumer>, Panicked> {
        let mut info = info.into();
        assert!(
            P::INFO.transports.contains(info.transport),
            "plugin {} does not serve {} (see PluginInfo::transports)",
            P::INFO.name,
            info.transport
        );
        let w = &self.world;
        let id = w.state().next_id();
        info.id = if w.services { id } else { ConnId::NONE };
        // The slot exists before the consumer does, so `Protocol::consumer` may already use
        // services for the new id (set a timer, post a greeting).
        w.state()
            .conns
            .insert(id, Slot::new(info.clone(), None, Stage::Open, true));
        w.wakes.born(id);
        let made = w.scope(|| w.factory().consumer(&info, info.id));
        let conn = Connection {
            world: w.clone(),
            id,
            info,
            _consumer: PhantomData,
        };
        match made {
            Ok(consumer) => {
                if let Some(slot) = w.state().conns.get_mut(&id) {
                    slot.session = Some(Session::new(consumer));
                }
                let made = w.deliver(id, Input::Made);
                w.run_until_idle();
                made.map(|()| conn)
            }
            Err(message) => {
                // Never opened: nothing to tell a consumer that does not exist.
                let mut st = w.state();
                st.forget(id);
                st.conns.remove(&id);
                drop(st);
                w.wakes.died(id);
                w.run_until_idle();
                Err(Panicked {
                    callback: "consumer",
                    message,
                })
            }
        }
    }

    /// Deliver everything queued — posts, closes, wakes from other threads, timers already
    /// due — until nothing is left. Harness operations do this themselves before they
    /// return; call it after waking a consumer from another thread, for example.
    ///
    /// # Panics
    /// If it is still busy after a million deliveries: the plugin keeps itself busy (a
    /// zero-delay timer re-armed from `timer_fired`, say), which would spin the host too.
    ///
    /// ```
    /// # use std::cell::RefCell;
    /// # use std::rc::Rc;
    /// # use plugin_api::services::{self, Waker};
    /// # use plugin_api::testing::Harness;
    /// # use plugin_api::{ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct P(Rc<RefCell<Option<Waker>>>); struct C;
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P(Rc::default())) }
    /// #   fn consumer(&self, i: &ConnInfo) -> C { *self.0.borrow_mut() = services::waker(i.id, 7); C } }
    /// # impl Consumer for C { fn data_received(&mut self, _: &[u8], _: &mut Output) {}
    /// #   fn woken(&mut self, token: u64, out: &mut Output) { out.write(format!("woken {token}").as_bytes()) } }
    /// let h = Harness::<P>::new();
    /// let mut c = h.connect().unwrap(); // the protocol keeps a waker for it, token 7
    /// let waker = h.protocol().0.borrow_mut().take().unwrap();
    /// std::thread::spawn(move || waker.wake()).join().unwrap();
    /// assert_eq!(c.take_text(), "", "queued, not yet delivered");
    /// h.run_until_idle();
    /// assert_eq!(c.take_text(), "woken 7");
    /// ```
    pub fn run_until_idle(&self) {
        self.world.run_until_idle();
    }

    /// Move the fake clock forward by `by`, firing what falls due on the way in deadline
    /// order — timers (each a `timer_fired(token)`), [ticks](Protocol::tick), protocol idle
    /// timeouts, outbound connect timeouts — and running until idle after each.
    ///
    /// # Panics
    /// As [`run_until_idle`](Harness::run_until_idle), per instant of the fake clock; and if
    /// things fall due at more than a million instants on the way (a 1 µs timer re-armed
    /// over an hour, say).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use plugin_api::services::{self, ConnId};
    /// # use plugin_api::testing::Harness;
    /// # use plugin_api::{ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C(ConnId);
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) } fn consumer(&self, i: &ConnInfo) -> C { C(i.id) } }
    /// /// Pings every 10 seconds.
    /// impl Consumer for C {
    ///     fn connection_made(&mut self, _: &mut Output) {
    ///         services::set_timer(self.0, Duration::from_secs(10), 0);
    ///     }
    ///     fn data_received(&mut self, _: &[u8], _: &mut Output) {}
    ///     fn timer_fired(&mut self, _: u64, out: &mut Output) {
    ///         out.write(b"PING\n");
    ///         services::set_timer(self.0, Duration::from_secs(10), 0);
    ///     }
    /// }
    ///
    /// let h = Harness::<P>::new();
    /// let mut c = h.connect().unwrap();
    /// h.advance(Duration::from_secs(9));
    /// assert_eq!(c.take_text(), "");
    /// h.advance(Duration::from_secs(21));
    /// assert_eq!(c.take_text(), "PING\nPING\nPING\n");
    /// assert_eq!(h.now(), Duration::from_secs(30));
    /// ```
    pub fn advance(&self, by: Duration) {
        let w = &self.world;
        let until = w.state().now.saturating_add(by);
        w.run_until_idle();
        for _ in 0..MAX_STEPS {
            let next = w.state().next_due().map(|(at, _)| at);
            match next {
                Some(at) if at <= until => {
                    {
                        let mut st = w.state();
                        st.now = st.now.max(at);
                    }
                    w.run_until_idle();
                }
                _ => {
                    w.state().now = until;
                    w.run_until_idle();
                    return;
                }
            }
        }
        panic!(
            "advance({by:?}): still firing after {MAX_STEPS} instants of the fake clock (at {:?}): the plugin re-arms a timer that is much shorter than the time advanced",
            w.state().now
        );
    }

    /// The fake clock: the time [`advance`](Harness::advance)d since the harness was made.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let h = plugin_api::testing::Harness::<Nothing>::new();
    /// # struct Nothing; struct Nobody;
    /// # impl plugin_api::Protocol for Nothing { type Consumer = Nobody; const INFO: plugin_api::PluginInfo = plugin_api::PluginInfo::new("n", "0", "");
    /// #   fn new(_: &plugin_api::Options) -> Result<Self, String> { Ok(Nothing) } fn consumer(&self, _: &plugin_api::ConnInfo) -> Nobody { Nobody } }
    /// # impl plugin_api::Consumer for Nobody { fn data_received(&mut self, _: &[u8], _: &mut plugin_api::Output) {} }
    /// assert_eq!(h.now(), Duration::ZERO);
    /// h.advance(Duration::from_millis(1500));
    /// assert_eq!(h.now(), Duration::from_millis(1500));
    /// ```
    pub fn now(&self) -> Duration {
        self.world.state().now
    }

    /// For tests with real threads: wait (really, up to `timeout`) until a `woken` callback
    /// has run since the last call (or since the harness was made), delivering wakes from
    /// other threads as they arrive, as [`run_until_idle`](Harness::run_until_idle) does.
    /// Returns how many `woken` callbacks ran since the last call — wakes delivered by other
    /// harness operations in between count too, so a thread that is quicker than the test
    /// does not make it wait — or 0 if none ran in time. Several wakes of one token before
    /// delivery make one call, as in the host.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use std::sync::{Arc, Mutex};
    /// # use plugin_api::services::{self, ConnId};
    /// # use plugin_api::testing::Harness;
    /// # use plugin_api::{ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C { id: ConnId, result: Arc<Mutex<Option<String>>> }
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) }
    /// #   fn consumer(&self, i: &ConnInfo) -> C { C { id: i.id, result: Arc::default() } } }
    /// /// Resolves a name off the loop, then answers.
    /// impl Consumer for C {
    ///     fn data_received(&mut self, name: &[u8], _: &mut Output) {
    ///         let waker = services::waker(self.id, 0).unwrap();
    ///         let (name, result) = (String::from_utf8_lossy(name).into_owned(), self.result.clone());
    ///         std::thread::spawn(move || {
    ///             std::thread::sleep(Duration::from_millis(20)); // slow work
    ///             *result.lock().unwrap() = Some(format!("{name} is 192.0.2.1\n"));
    ///             waker.wake();
    ///         });
    ///     }
    ///     fn woken(&mut self, _: u64, out: &mut Output) {
    ///         out.write(self.result.lock().unwrap().take().unwrap().as_bytes());
    ///     }
    /// }
    ///
    /// let h = Harness::<P>::new();
    /// let mut c = h.connect().unwrap();
    /// c.send(b"example.org").unwrap();
    /// assert_eq!(h.wait_for_wakes(Duration::from_secs(10)), 1);
    /// assert_eq!(c.take_text(), "example.org is 192.0.2.1\n");
    /// ```
    pub fn wait_for_wakes(&self, timeout: Duration) -> usize {
        let w = &self.world;
        let deadline = Instant::now() + timeout;
        loop {
            w.run_until_idle();
            let left = deadline.saturating_duration_since(Instant::now());
            let st = w.state();
            if st.woken_ran > st.woken_reported || left.is_zero() {
                break;
            }
            drop(st);
            w.wakes.wait(left);
        }
        let mut st = w.state();
        let ran = st.woken_ran - st.woken_reported;
        st.woken_reported = st.woken_ran;
        ran
    }

    /// The outbound connections the plugin asked for with
    /// [`services::connect`](crate::services::connect) that the test has not answered yet,
    /// oldest first: their id and the target as the plugin wrote it. Answer each with
    /// [`accept_outbound`](Harness::accept_outbound) or
    /// [`refuse_outbound`](Harness::refuse_outbound) (or let its timeout pass with
    /// [`advance`](Harness::advance)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use plugin_api::{services, testing::Harness, ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C; struct Up;
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) } fn consumer(&self, _: &ConnInfo) -> C { C } }
    /// # impl Consumer for C {
    /// #   fn connection_made(&mut self, _: &mut Output) { services::connect("db.internal:5432", Duration::from_secs(1), Up).unwrap(); }
    /// #   fn data_received(&mut self, _: &[u8], _: &mut Output) {} }
    /// # impl Consumer for Up { fn data_received(&mut self, _: &[u8], _: &mut Output) {} }
    /// let h = Harness::<P>::new();
    /// let _client = h.connect().unwrap(); // connects to db.internal:5432 in connection_made
    /// let pending = h.outbound();
    /// assert_eq!(pending.len(), 1);
    /// assert_eq!(pending[0].1, "db.internal:5432");
    /// ```
    pub fn outbound(&self) -> Vec<(ConnId, String)> {
        self.world
            .state()
            .conns
            .iter()
            .filter(|(_, slot)| slot.lost.is_none())
            .filter_map(|(&id, slot)| match &slot.stage {
                Stage::Connecting { target, .. } => Some((id, target.clone())),
                Stage::Open => None,
            })
            .collect()
    }

    /// The test accepts pending outbound connection `id` and plays the server: the
    /// consumer's `connection_made` runs, and the returned [`Connection`] is the server's
    /// end — [`send`](Connection::send) what the server says, [`take_output`](Connection::take_output)
    /// what the plugin sent (bytes it posted before the connection was made come first),
    /// [`eof`](Connection::eof) when the server closes. Timers that fell due and wakes that
    /// arrived while it was connecting are delivered right after `connection_made`.
    ///
    /// `C` is the consumer type the plugin gave to
    /// [`services::connect`](crate::services::connect). `Err` if `connection_made` panicked.
    ///
    /// # Panics
    /// If `id` is not a pending outbound connection (see [`outbound`](Harness::outbound)),
    /// or if its consumer is not a `C`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use plugin_api::{services, testing::Harness, ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C; struct Up { greeting: Vec<u8> }
    /// # impl Consumer for C { fn data_received(&mut self, _: &[u8], _: &mut Output) {} }
    /// impl Protocol for P {
    /// #   type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) } fn consumer(&self, _: &ConnInfo) -> C { C }
    ///     // ...
    ///     fn serving(&self) {
    ///         let smtp = Up { greeting: Vec::new() };
    ///         services::connect("127.0.0.1:25", Duration::from_secs(5), smtp).unwrap();
    ///     }
    /// }
    /// /// A server-first upstream: it reads the greeting, then says hello.
    /// impl Consumer for Up {
    ///     fn data_received(&mut self, data: &[u8], out: &mut Output) {
    ///         self.greeting.extend_from_slice(data);
    ///         out.write(b"EHLO sockhost\r\n");
    ///     }
    /// }
    ///
    /// let h = Harness::<P>::new();
    /// h.serving().unwrap();
    /// let (id, _) = h.outbound()[0];
    /// let mut server = h.accept_outbound::<Up>(id).unwrap();
    /// server.send(b"220 mail.example ESMTP\r\n").unwrap();
    /// assert_eq!(server.take_text(), "EHLO sockhost\r\n");
    /// assert_eq!(server.consumer().unwrap().greeting, b"220 mail.example ESMTP\r\n");
    /// ```
    pub fn accept_outbound<C: Consumer>(&self, id: ConnId) -> Result<Connection<C>, Panicked> {
        let w = &self.world;
        let (info, deferred, close_after) = {
            let mut st = w.state();
            let now = st.now;
            let slot = st
                .conns
                .get_mut(&id)
                .filter(|s| s.lost.is_none() && matches!(s.stage, Stage::Connecting { .. }))
                .unwrap_or_else(|| {
                    panic!("accept_outbound({id:?}): no pending outbound connection with that id (see Harness::outbound)")
                });
            match slot.kind {
                Some((kind, _)) if kind == TypeId::of::<C>() => {}
                Some((_, name)) => panic!(
                    "accept_outbound({id:?}): its consumer is a {name}, not a {}",
                    std::any::type_name::<C>()
                ),
                None => panic!("accept_outbound({id:?}): its consumer's type is unknown"),
            }
            let Stage::Connecting { close_after, .. } =
                std::mem::replace(&mut slot.stage, Stage::Open)
            else {
                unreachable!("checked above")
            };
            slot.handle = true;
            slot.idle_since = now;
            (
                slot.info.clone(),
                std::mem::take(&mut slot.deferred),
                close_after,
            )
        };
        let conn = Connection {
            world: w.clone(),
            id,
            info,
            _consumer: PhantomData,
        };
        let made = w.deliver(id, Input::Made);
        if made.is_ok() {
            for input in deferred {
                let delivered = match input {
                    Deferred::Timer(token) => w.deliver(id, Input::Timer(token)),
                    Deferred::Woken(token) => w.deliver(id, Input::Woken(token)),
                    Deferred::ShutdownWrite => {
                        w.shut_write(id);
                        Ok(())
                    }
                };
                w.record(delivered);
            }
            if close_after {
                let ended = w.end(id, LostReason::Closed);
                w.record(ended);
            }
        }
        w.run_until_idle();
        made.map(|()| conn)
    }

    /// The test refuses pending outbound connection `id` (the port is closed, the name does
    /// not resolve, ...): its consumer hears only
    /// `connection_lost(`[`ConnectFailed`](LostReason::ConnectFailed)`)`. `Err` if that
    /// panicked.
    ///
    /// # Panics
    /// If `id` is not a pending outbound connection (see [`outbound`](Harness::outbound)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use std::cell::Cell;
    /// # use std::rc::Rc;
    /// # use plugin_api::{services, testing::Harness, ConnInfo, Consumer, LostReason, Options, Output, PluginInfo, Protocol};
    /// # struct P(Rc<Cell<Option<LostReason>>>); struct C; struct Up(Rc<Cell<Option<LostReason>>>);
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P(Rc::default())) } fn consumer(&self, _: &ConnInfo) -> C { C }
    /// #   fn serving(&self) { services::connect("127.0.0.1:9", Duration::from_secs(1), Up(self.0.clone())).unwrap(); } }
    /// # impl Consumer for C { fn data_received(&mut self, _: &[u8], _: &mut Output) {} }
    /// # impl Consumer for Up { fn data_received(&mut self, _: &[u8], _: &mut Output) {}
    /// #   fn connection_lost(&mut self, r: LostReason) { self.0.set(Some(r)) } }
    /// let h = Harness::<P>::new();
    /// h.serving().unwrap(); // connects to 127.0.0.1:9
    /// let (id, _) = h.outbound()[0];
    /// h.refuse_outbound(id).unwrap();
    /// assert_eq!(h.protocol().0.get(), Some(LostReason::ConnectFailed));
    /// assert!(h.outbound().is_empty());
    /// ```
    pub fn refuse_outbound(&self, id: ConnId) -> Result<(), Panicked> {
        let w = &self.world;
        let pending = w
            .state()
            .conns
            .get(&id)
            .is_some_and(|s| s.lost.is_none() && matches!(s.stage, Stage::Connecting { .. }));
        assert!(
            pending,
            "refuse_outbound({id:?}): no pending outbound connection with that id (see Harness::outbound)"
        );
        let ended = w.end(id, LostReason::ConnectFailed);
        w.run_until_idle();
        ended
    }

    /// The worker serves: [`Protocol::serving`] runs (then everything it queued).
    /// The harness never calls it by itself.
    ///
    /// ```
    /// # use std::cell::Cell;
    /// # use plugin_api::{testing::Harness, ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct C;
    /// # impl Consumer for C { fn data_received(&mut self, _: &[u8], _: &mut Output) {} }
    /// struct P { state: Cell<&'static str> }
    /// impl Protocol for P {
    /// #   type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P { state: Cell::new("new") }) } fn consumer(&self, _: &ConnInfo) -> C { C }
    ///     // ...
    ///     fn serving(&self) { self.state.set("serving") }
    ///     fn stopping(&self) { self.state.set("flushed") }
    /// }
    ///
    /// let h = Harness::<P>::new();
    /// h.serving().unwrap();
    /// assert_eq!(h.protocol().state.get(), "serving");
    /// h.stopping().unwrap();
    /// assert_eq!(h.protocol().state.get(), "flushed");
    /// ```
    pub fn serving(&self) -> Result<(), Panicked> {
        self.lifecycle("serving", Factory::serving)
    }

    /// The worker stops accepting and drains: [`Protocol::stopping`] runs (then everything
    /// it queued, such as the last bytes posted to an outbound connection and its close).
    /// The connections stay open, as in the host until they finish or the graceful period
    /// runs out ([`Connection::stop`]). Example: [`serving`](Harness::serving).
    pub fn stopping(&self) -> Result<(), Panicked> {
        self.lifecycle("stopping", Factory::stopping)
    }

    fn lifecycle(
        &self,
        callback: &'static str,
        f: fn(&Factory) -> Result<(), String>,
    ) -> Result<(), Panicked> {
        let w = &self.world;
        let result = w.scope(|| f(w.factory()));
        w.run_until_idle();
        result.map_err(|message| Panicked { callback, message })
    }

    /// Bound every connection's [pending](Connection::pending) bytes to `bytes` instead of
    /// [`MAX_PENDING`] (sockhost's `--max-pending`): a post beyond it answers
    /// [`PostStatus::Overflow`] and ends the target with [`LostReason::Error`].
    ///
    /// ```
    /// # use plugin_api::services::{self, ConnId, PostStatus};
    /// # use plugin_api::testing::Harness;
    /// # use plugin_api::{ConnInfo, Consumer, LostReason, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C(ConnId);
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) } fn consumer(&self, i: &ConnInfo) -> C { C(i.id) } }
    /// /// Sends each chunk to connection 1 and says how that went.
    /// impl Consumer for C {
    ///     fn data_received(&mut self, data: &[u8], out: &mut Output) {
    ///         let status = services::post(ConnId::from_raw(1), data);
    ///         out.write(format!("{status:?}").as_bytes());
    ///     }
    /// }
    ///
    /// let h = Harness::<P>::new();
    /// h.set_max_pending(10);
    /// let subscriber = h.connect().unwrap(); // connection 1, never reads
    /// let mut publisher = h.connect().unwrap();
    /// assert_eq!(publisher.round_trip_text("12345678").unwrap(), "Queued");
    /// assert_eq!(publisher.round_trip_text("9AB").unwrap(), "Overflow");
    /// assert_eq!(subscriber.lost_reason(), Some(LostReason::Error));
    /// assert_eq!(publisher.round_trip_text("C").unwrap(), "Gone");
    /// ```
    pub fn set_max_pending(&self, bytes: usize) {
        self.world.state().max_pending = bytes;
    }

    /// The panics caught in callbacks the harness ran on its own — timers, wakes, ticks,
    /// `connection_lost` of connections ended by a post's overflow, a close or a timeout,
    /// callbacks of *other* connections during an operation — since the last call. (A
    /// panic in the callback an operation itself ran, say `data_received` for
    /// [`send`](Connection::send), is that operation's `Err` instead.) The connections
    /// concerned have ended with [`LostReason::Error`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use plugin_api::services::{self, ConnId};
    /// # use plugin_api::testing::Harness;
    /// # use plugin_api::{ConnInfo, Consumer, LostReason, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C(ConnId);
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) } fn consumer(&self, i: &ConnInfo) -> C { C(i.id) } }
    /// impl Consumer for C {
    ///     fn connection_made(&mut self, _: &mut Output) {
    ///         services::set_timer(self.0, Duration::from_secs(1), 0);
    ///     }
    ///     fn data_received(&mut self, _: &[u8], _: &mut Output) {}
    ///     fn timer_fired(&mut self, _: u64, _: &mut Output) {
    ///         panic!("timer bug");
    ///     }
    /// }
    ///
    /// let h = Harness::<P>::new();
    /// let c = h.connect().unwrap();
    /// h.advance(Duration::from_secs(1));
    /// let panics = h.take_panics();
    /// assert_eq!(panics[0].to_string(), "plugin panicked in timer_fired: timer bug");
    /// assert_eq!(c.lost_reason(), Some(LostReason::Error));
    /// ```
    pub fn take_panics(&self) -> Vec<Panicked> {
        std::mem::take(&mut self.world.state().panics)
    }
}

impl<P> fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.world.state.try_borrow();
        let mut d = f.debug_struct("Harness");
        if let Ok(st) = st {
            d.field("now", &st.now)
                .field("connections", &st.conns.len())
                .field("queued", &st.events.len());
        }
        d.finish_non_exhaustive()
    }
}

/// Describes a connection for [`Harness::open`]: the [`ConnInfo`] its consumer is made with.
///
/// ```
/// use plugin_api::testing::ConnSpec;
/// use plugin_api::{ConnInfo, Transport};
///
/// let info: ConnInfo = ConnSpec::tcp()
///     .peer(([192, 0, 2, 7], 51000))
///     .sni("example.com")
///     .alpn(b"h2")
///     .peer_cert_subject("CN=client")
///     .into();
/// assert_eq!(info.transport, Transport::Tcp);
/// assert_eq!(info.peer.to_string(), "192.0.2.7:51000");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnSpec {
    info: ConnInfo,
}

impl ConnSpec {
    /// A plain TCP connection from [`DEFAULT_PEER`] to [`DEFAULT_LOCAL`], no TLS details.
    pub fn tcp() -> ConnSpec {
        ConnSpec {
            info: ConnInfo::new(Transport::Tcp, DEFAULT_PEER, DEFAULT_LOCAL),
        }
    }

    /// A UDP peer session from [`DEFAULT_PEER`] to [`DEFAULT_LOCAL`]: each
    /// [`send`](Connection::send) is one datagram, each write one reply datagram.
    pub fn udp() -> ConnSpec {
        ConnSpec {
            info: ConnInfo::new(Transport::Udp, DEFAULT_PEER, DEFAULT_LOCAL),
        }
    }

    /// The remote address (with `--proxy-protocol`, the client's address from the header).
    pub fn peer(mut self, addr: impl Into<SocketAddr>) -> ConnSpec {
        self.info.peer = addr.into();
        self
    }

    /// The local address the connection arrived on.
    pub fn local(mut self, addr: impl Into<SocketAddr>) -> ConnSpec {
        self.info.local = addr.into();
        self
    }

    /// TLS: the server name the client asked for.
    pub fn sni(mut self, name: impl Into<String>) -> ConnSpec {
        self.info.sni = Some(name.into());
        self
    }

    /// TLS: the negotiated ALPN protocol.
    pub fn alpn(mut self, protocol: impl Into<Vec<u8>>) -> ConnSpec {
        self.info.alpn = Some(protocol.into());
        self
    }

    /// TLS with client certificates: the verified certificate's subject.
    pub fn peer_cert_subject(mut self, subject: impl Into<String>) -> ConnSpec {
        self.info.peer_cert_subject = Some(subject.into());
        self
    }

    /// The info as built so far.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl From<ConnSpec> for ConnInfo {
    fn from(spec: ConnSpec) -> ConnInfo {
        spec.info
    }
}

/// One connection (or UDP peer session) driven by the test, opened by [`Harness::open`]
/// (or, for an outbound connection the plugin made, [`Harness::accept_outbound`]: then the
/// test is the server).
///
/// The connection is *open* until the consumer closes it, the stream ends
/// ([`eof`](Connection::eof)), a callback panics, a service ends it, or the test ends it
/// from the host's side; then [`Consumer::connection_lost`] has run, the consumer is dropped,
/// and [`lost_reason`](Connection::lost_reason) says why. Output stays readable after that.
pub struct Connection<C: Consumer> {
    world: Rc<World>,
    id: ConnId,
    info: ConnInfo,
    _consumer: PhantomData<fn() -> C>,
}

impl<C: Consumer> Connection<C> {
    /// Deliver one read (TCP) or one datagram (UDP) to
    /// [`data_received`](Consumer::data_received). Split a message over several calls to
    /// test partial input, or join several into one to test pipelining: over TCP the host
    /// promises no framing.
    ///
    /// Once the connection has ended, data is discarded without a call, as the host discards
    /// input after a close (over UDP the host would make a new session, with a new consumer,
    /// for the peer's next datagram: [`open`](Harness::open) another connection to test
    /// that). While the plugin has paused reading the connection
    /// ([`is_paused`](Connection::is_paused)) the data is held, as the kernel holds it, and
    /// delivered in order when it resumes. `Err` if the callback panicked (the connection
    /// has then ended with [`LostReason::Error`]).
    ///
    /// # Panics
    /// After [`eof`](Connection::eof): a peer cannot send after ending its stream.
    pub fn send(&mut self, data: &[u8]) -> Result<(), Panicked> {
        let w = &self.world;
        {
            let mut st = w.state();
            let now = st.now;
            let slot = st.slot(self.id);
            assert!(
                slot.read == ReadSide::Open,
                "send after eof: the peer already ended its stream"
            );
            if slot.lost.is_some() {
                return Ok(());
            }
            if slot.hold(Held::Data(data.to_vec())) {
                drop(st);
                w.run_until_idle();
                return Ok(());
            }
            slot.idle_since = now;
        }
        let delivered = w.deliver(self.id, Input::Data(data));
        w.run_until_idle();
        delivered
    }

    /// [`send`](Connection::send), then [`take_output`](Connection::take_output).
    pub fn round_trip(&mut self, data: &[u8]) -> Result<Vec<u8>, Panicked> {
        self.send(data)?;
        Ok(self.take_output())
    }

    /// [`send`](Connection::send) `text`, then [`take_text`](Connection::take_text): handy
    /// for line protocols, and assertion failures show text instead of byte arrays.
    pub fn round_trip_text(&mut self, text: &str) -> Result<String, Panicked> {
        self.send(text.as_bytes())?;
        Ok(self.take_text())
    }

    /// The peer ends its stream (TCP FIN): [`eof_received`](Consumer::eof_received) runs,
    /// and then, as in the host, the connection ends with [`LostReason::Closed`] once what
    /// was written is sent, whether the consumer closed, half-closed or did nothing — no
    /// callback could write any more. (While reading is paused, the end of stream waits
    /// behind the held data.)
    ///
    /// Does nothing if the connection has already ended.
    ///
    /// # Panics
    /// On a UDP session (datagrams have no end of stream), or if called twice.
    pub fn eof(&mut self) -> Result<(), Panicked> {
        assert!(
            self.info.transport != Transport::Udp,
            "eof on a UDP session: datagrams have no end of stream"
        );
        let w = &self.world;
        {
            let mut st = w.state();
            let slot = st.slot(self.id);
            assert!(slot.read == ReadSide::Open, "eof called twice");
            if slot.lost.is_some() {
                return Ok(());
            }
            slot.read = ReadSide::Eof;
            if slot.hold(Held::Eof) {
                drop(st);
                w.run_until_idle();
                return Ok(());
            }
        }
        let ended = w.deliver_eof(self.id);
        w.run_until_idle();
        ended
    }

    /// The host ends the connection for `reason`: [`connection_lost`](Consumer::connection_lost)
    /// runs and the consumer is dropped. Does nothing if the connection has already ended.
    /// `Err` if `connection_lost` panicked (the host logs it; the connection is gone anyway).
    pub fn lose(&mut self, reason: LostReason) -> Result<(), Panicked> {
        let ended = self.world.end(self.id, reason);
        self.world.run_until_idle();
        ended
    }

    /// Nothing was read for `--keep-alive` seconds: `connection_lost(IdleTimeout)`.
    pub fn idle_timeout(&mut self) -> Result<(), Panicked> {
        self.lose(LostReason::IdleTimeout)
    }

    /// The server stopped and the graceful period ran out (or, for UDP, the session was
    /// evicted): `connection_lost(Shutdown)`.
    pub fn stop(&mut self) -> Result<(), Panicked> {
        self.lose(LostReason::Shutdown)
    }

    /// The peer reset the connection: `connection_lost(PeerClosed)`.
    pub fn peer_reset(&mut self) -> Result<(), Panicked> {
        self.lose(LostReason::PeerClosed)
    }

    /// Everything the consumer wrote (and what was [posted](crate::services::post) to the
    /// connection) since the last take, in order (UDP: the datagrams joined; see
    /// [`take_datagrams`](Connection::take_datagrams)).
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut st = self.world.state();
        let slot = st.slot(self.id);
        slot.bounds.clear();
        std::mem::take(&mut slot.written)
    }

    /// [`take_output`](Connection::take_output) as text (invalid UTF-8 replaced by `�`).
    pub fn take_text(&mut self) -> String {
        String::from_utf8_lossy(&self.take_output()).into_owned()
    }

    /// A copy of what the consumer wrote since the last take, without taking it (it stays
    /// [pending](Connection::pending)).
    pub fn output(&self) -> Vec<u8> {
        self.world.state().slot(self.id).written.clone()
    }

    /// UDP: the datagrams the consumer sent since the last take, one `Vec` per
    /// [`Output::write`] (or post).
    ///
    /// # Panics
    /// On a TCP connection, whose output is a byte stream: use
    /// [`take_output`](Connection::take_output).
    pub fn take_datagrams(&mut self) -> Vec<Vec<u8>> {
        assert!(
            self.info.transport == Transport::Udp,
            "take_datagrams on a TCP connection: its output is a byte stream (use take_output)"
        );
        let mut st = self.world.state();
        let slot = st.slot(self.id);
        let written = std::mem::take(&mut slot.written);
        let mut start = 0;
        slot.bounds
            .drain(..)
            .map(|end| {
                let d = written[start..end].to_vec();
                start = end;
                d
            })
            .collect()
    }

    /// The connection's pending bytes: what it was sent (written by its consumer, or posted
    /// to it) that the test has not taken yet, plus posts not yet delivered. This is what a
    /// [`post`](crate::services::post) to it is measured against ([`HIGH_WATER`],
    /// [`Harness::set_max_pending`]); taking the output drains it, as a reading client
    /// drains a socket.
    ///
    /// ```
    /// # use plugin_api::services::{self, ConnId};
    /// # use plugin_api::testing::Harness;
    /// # use plugin_api::{ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C;
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) } fn consumer(&self, _: &ConnInfo) -> C { C } }
    /// # impl Consumer for C { fn data_received(&mut self, d: &[u8], out: &mut Output) { out.write(d) } }
    /// let h = Harness::<P>::new();
    /// let mut c = h.connect().unwrap();
    /// c.send(b"12345").unwrap();
    /// assert_eq!(c.pending(), 5);
    /// c.take_output();
    /// assert_eq!(c.pending(), 0);
    /// ```
    pub fn pending(&self) -> usize {
        self.world.state().slot(self.id).pending()
    }

    /// Whether the plugin paused reading this connection
    /// ([`services::pause_reading`](crate::services::pause_reading)): then
    /// [`send`](Connection::send) and [`eof`](Connection::eof) are held until it resumes.
    ///
    /// ```
    /// # use plugin_api::services::{self, ConnId};
    /// # use plugin_api::testing::Harness;
    /// # use plugin_api::{ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C(ConnId);
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) } fn consumer(&self, i: &ConnInfo) -> C { C(i.id) } }
    /// /// Reads one chunk, then waits for `go` on another connection.
    /// impl Consumer for C {
    ///     fn data_received(&mut self, data: &[u8], out: &mut Output) {
    ///         if data == b"go" {
    ///             services::resume_reading(ConnId::from_raw(1));
    ///         } else {
    ///             out.write(data);
    ///             services::pause_reading(self.0);
    ///         }
    ///     }
    /// }
    ///
    /// let h = Harness::<P>::new();
    /// let mut slow = h.connect().unwrap(); // connection 1
    /// let mut control = h.connect().unwrap();
    /// slow.send(b"a").unwrap();
    /// assert!(slow.is_paused());
    /// slow.send(b"b").unwrap(); // held
    /// assert_eq!(slow.take_text(), "a");
    /// control.send(b"go").unwrap();
    /// assert_eq!(slow.take_text(), "b");
    /// assert!(slow.is_paused(), "paused again after reading b");
    /// ```
    pub fn is_paused(&self) -> bool {
        self.world.state().slot(self.id).paused
    }

    /// Whether the connection is still open (no `connection_lost` yet).
    pub fn is_open(&self) -> bool {
        self.lost_reason().is_none()
    }

    /// Why the connection ended, once it has: the reason given to `connection_lost`.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.world.state().slot(self.id).lost
    }

    /// Whether the consumer called [`Output::close`].
    pub fn close_requested(&self) -> bool {
        self.world.state().slot(self.id).close_requested
    }

    /// Whether the consumer called [`Output::shutdown_write`] (TCP half-close): writes from
    /// later callbacks are dropped, as the host drops them.
    pub fn shutdown_requested(&self) -> bool {
        self.world.state().slot(self.id).shutdown_requested
    }

    /// The info the consumer was made with (for an outbound connection: the target as
    /// `peer` when it is an `IP:PORT`).
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// This connection's identity in the harness's worker: the [`ConnId`] other consumers
    /// [`post`](crate::services::post) to. It is also in [`ConnInfo::id`] when the plugin
    /// declared services (otherwise the consumer was given [`ConnId::NONE`], as by the host).
    ///
    /// ```
    /// # use plugin_api::{testing::Harness, ConnInfo, ConnId, Consumer, Options, Output, PluginInfo, Protocol};
    /// # struct P; struct C;
    /// # impl Protocol for P { type Consumer = C; const INFO: PluginInfo = PluginInfo::new("p", "0", "").services();
    /// #   fn new(_: &Options) -> Result<Self, String> { Ok(P) } fn consumer(&self, _: &ConnInfo) -> C { C } }
    /// # impl Consumer for C { fn data_received(&mut self, _: &[u8], _: &mut Output) {} }
    /// let h = Harness::<P>::new();
    /// let (a, b) = (h.connect().unwrap(), h.connect().unwrap());
    /// assert_ne!(a.id(), b.id());
    /// assert_eq!(a.info().id, a.id());
    /// ```
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The consumer, for white-box assertions; `None` once the connection has ended.
    ///
    /// The guard borrows the harness: drop it before driving the harness again (a
    /// harness operation panics while one is held).
    pub fn consumer(&self) -> Option<Ref<'_, C>> {
        let st = self.world.state.try_borrow().ok()?;
        Ref::filter_map(st, |st| {
            let session = st.conns.get(&self.id)?.session.as_ref()?;
            let object = session.consumer().object().cast::<C>();
            // SAFETY: the object is the plugin-side `Box<C>` of this connection's consumer: an
            // inbound consumer was made by `P`'s factory and `C` is `P::Consumer`, an outbound
            // one's type was checked by `accept_outbound`. It lives while the session does,
            // which the borrow of the state keeps in its slot; a callback (the only mutable
            // use) needs the state mutably to take the session out, so it cannot run while
            // this shared borrow lives.
            Some(unsafe { &*object })
        })
        .ok()
    }

    /// The consumer, mutably; `None` once the connection has ended. As
    /// [`consumer`](Connection::consumer), the guard borrows the harness.
    pub fn consumer_mut(&mut self) -> Option<RefMut<'_, C>> {
        let st = self.world.state.try_borrow_mut().ok()?;
        RefMut::filter_map(st, |st| {
            let session = st.conns.get_mut(&self.id)?.session.as_mut()?;
            let object = session.consumer().object().cast::<C>();
            // SAFETY: as in `consumer`; the exclusive borrow of the state excludes every
            // other reference to the consumer for the guard's life.
            Some(unsafe { &mut *object })
        })
        .ok()
    }
}

impl<C: Consumer> Drop for Connection<C> {
    /// A connection still open when the test drops it ends as at a server stop.
    fn drop(&mut self) {
        let w = &self.world;
        if w.state.try_borrow_mut().is_err() {
            // A guard is held while unwinding: the worker ends the connection when it goes.
            return;
        }
        let ended = w.end(self.id, LostReason::Shutdown);
        if let Ok(mut st) = w.state.try_borrow_mut() {
            st.conns.remove(&self.id);
        }
        if !std::thread::panicking() {
            w.record(ended);
            w.run_until_idle();
        }
    }
}

impl<C: Consumer> fmt::Debug for Connection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Connection");
        d.field("id", &self.id).field("info", &self.info);
        if let Ok(st) = self.world.state.try_borrow() {
            if let Some(slot) = st.conns.get(&self.id) {
                d.field("pending_output", &String::from_utf8_lossy(&slot.written))
                    .field("close_requested", &slot.close_requested)
                    .field("shutdown_requested", &slot.shutdown_requested)
                    .field("eof", &(slot.read == ReadSide::Eof))
                    .field("paused", &slot.paused)
                    .field("lost", &slot.lost);
            }
        }
        d.finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The fake worker: connection slots, the fake clock, the event queue, and the services
// backend every callback runs with.

/// The receiving side, as in the host's driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadSide {
    Open,
    /// [`Connection::eof`] was called.
    Eof,
}

/// Where a connection is in its life (apart from having ended: [`Slot::lost`]).
enum Stage {
    /// An outbound connection waiting for the test to accept or refuse it.
    Connecting {
        target: String,
        /// When it fails for the timeout; `None`: never.
        deadline: Option<Duration>,
        /// `services::close` while connecting: close once connected and flushed.
        close_after: bool,
    },
    Open,
}

/// Input the peer sent while the plugin had paused reading.
enum Held {
    Data(Vec<u8>),
    Eof,
}

/// Work for an outbound connection that arrived before it was connected.
enum Deferred {
    Timer(u64),
    Woken(u64),
    ShutdownWrite,
}

/// One connection as the fake worker holds it.
struct Slot {
    /// `None` while one of its callbacks runs (taken out), and once it has ended.
    session: Option<Session>,
    /// Handed to each callback (taken out with the session).
    out: Option<Output>,
    info: ConnInfo,
    stage: Stage,
    /// Set once `connection_lost` has run (or is running).
    lost: Option<LostReason>,
    /// Sent and not yet taken by the test.
    written: Vec<u8>,
    /// UDP: the end offset in `written` of each datagram not yet taken.
    bounds: Vec<usize>,
    /// Bytes posted to it and not yet delivered.
    posted: usize,
    read: ReadSide,
    close_requested: bool,
    shutdown_requested: bool,
    /// A service closes it (`close`, an overflow): later posts are `Gone`.
    closing: bool,
    paused: bool,
    held: VecDeque<Held>,
    /// The protocol's idle timeout, and since when it counts.
    idle: Option<Duration>,
    idle_since: Duration,
    /// The test holds a [`Connection`] for it; a slot without one goes when it ends.
    handle: bool,
    /// An outbound consumer's type.
    kind: Option<(TypeId, &'static str)>,
    deferred: Vec<Deferred>,
}

impl Slot {
    fn new(info: ConnInfo, session: Option<Session>, stage: Stage, handle: bool) -> Slot {
        let datagram = info.transport == Transport::Udp;
        Slot {
            session,
            out: Some(Output::new(datagram)),
            info,
            stage,
            lost: None,
            written: Vec::new(),
            bounds: Vec::new(),
            posted: 0,
            read: ReadSide::Open,
            close_requested: false,
            shutdown_requested: false,
            closing: false,
            paused: false,
            held: VecDeque::new(),
            idle: None,
            idle_since: Duration::ZERO,
            handle,
            kind: None,
            deferred: Vec::new(),
        }
    }

    fn pending(&self) -> usize {
        self.written.len() + self.posted
    }

    fn is_datagram(&self) -> bool {
        self.info.transport == Transport::Udp
    }

    /// "Send" bytes: they wait for the test (one datagram over UDP).
    fn send(&mut self, data: &[u8]) {
        self.written.extend_from_slice(data);
        if self.is_datagram() {
            self.bounds.push(self.written.len());
        }
    }

    /// Keep input while reading is paused (or earlier input is still held); `false`: deliver
    /// it now.
    fn hold(&mut self, input: Held) -> bool {
        if self.paused || !self.held.is_empty() {
            self.held.push_back(input);
            return true;
        }
        false
    }

    /// As in the host, a post is `Gone` only for a connection that is closing or has ended
    /// (to a half-closed one it is queued, and dropped when it would be sent).
    fn accepts_posts(&self) -> bool {
        self.lost.is_none() && !self.closing && !self.close_requested
    }
}

/// A queued effect of a service call, delivered after the calling callback returns.
enum Event {
    Post(ConnId, Vec<u8>),
    Close(ConnId),
    ShutdownWrite(ConnId),
    /// A post would have exceeded the bound: end the target with `Error`.
    Overflow(ConnId),
    /// Reading resumed: deliver the next held input.
    Resume(ConnId),
    Woken(ConnId, u64),
}

/// Something that falls due on the fake clock, in the order fired at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Timer { timer: u64 },
    Tick,
    Idle(ConnId),
    ConnectTimeout(ConnId),
}

/// A timer set with `services::set_timer`.
struct Armed {
    conn: ConnId,
    token: u64,
}

/// The protocol's tick.
struct Tick {
    every: Duration,
    next: Duration,
}

/// The fake worker's state.
struct State {
    now: Duration,
    last_id: u64,
    last_timer: u64,
    next_peer_port: u16,
    max_pending: usize,
    /// By id, which is also the order they were made in.
    conns: BTreeMap<ConnId, Slot>,
    /// By deadline, then timer id (the order they were set in).
    timers: BTreeMap<(Duration, u64), Armed>,
    timer_deadlines: HashMap<u64, Duration>,
    events: VecDeque<Event>,
    tick: Option<Tick>,
    /// `woken` callbacks that ran, and how many `wait_for_wakes` has reported.
    woken_ran: usize,
    woken_reported: usize,
    panics: Vec<Panicked>,
}

impl Default for State {
    fn default() -> State {
        State {
            now: Duration::ZERO,
            last_id: 0,
            last_timer: 0,
            next_peer_port: DEFAULT_PEER.port(),
            max_pending: MAX_PENDING,
            conns: BTreeMap::new(),
            timers: BTreeMap::new(),
            timer_deadlines: HashMap::new(),
            events: VecDeque::new(),
            tick: None,
            woken_ran: 0,
            woken_reported: 0,
            panics: Vec::new(),
        }
    }
}

impl State {
    /// A new connection id: never one used before.
    fn next_id(&mut self) -> ConnId {
        self.last_id += 1;
        ConnId::from_raw(self.last_id)
    }

    /// The slot of a connection the test holds.
    fn slot(&mut self, id: ConnId) -> &mut Slot {
        self.conns
            .get_mut(&id)
            .expect("a connection's slot lives as long as its handle")
    }

    /// Forget a connection's timers and queued input once it has ended.
    fn forget(&mut self, id: ConnId) {
        let timers: Vec<(Duration, u64)> = self
            .timers
            .iter()
            .filter(|(_, armed)| armed.conn == id)
            .map(|(&key, _)| key)
            .collect();
        for key in timers {
            self.timers.remove(&key);
            self.timer_deadlines.remove(&key.1);
        }
        if let Some(slot) = self.conns.get_mut(&id) {
            slot.held.clear();
            slot.deferred.clear();
        }
    }

    /// The earliest thing to fire on the fake clock.
    fn next_due(&self) -> Option<(Duration, Due)> {
        let timer = self
            .timers
            .keys()
            .next()
            .map(|&(at, timer)| (at, Due::Timer { timer }));
        let tick = self.tick.as_ref().map(|t| (t.next, Due::Tick));
        let conns = self
            .conns
            .iter()
            .filter(|(_, slot)| slot.lost.is_none())
            .filter_map(|(&id, slot)| match slot.stage {
                Stage::Open => slot
                    .idle
                    .map(|idle| (slot.idle_since.saturating_add(idle), Due::Idle(id))),
                Stage::Connecting { deadline, .. } => {
                    deadline.map(|at| (at, Due::ConnectTimeout(id)))
                }
            });
        timer.into_iter().chain(tick).chain(conns).min()
    }
}

/// One worker: the plugin's factory, its connections, and the services they call.
struct World {
    state: RefCell<State>,
    /// `Some` until the world is dropped (after the consumers, as in the host).
    factory: Option<Factory>,
    /// The plugin declared services: callbacks run with this world as their backend.
    services: bool,
    wakes: Arc<Wakes>,
}

impl World {
    fn state(&self) -> RefMut<'_, State> {
        self.state.try_borrow_mut().expect(BUSY)
    }

    fn factory(&self) -> &Factory {
        self.factory
            .as_ref()
            .expect("the factory lives as long as the world")
    }

    /// Run plugin code with this world as the thread's services (for a plugin that declared
    /// them; another one finds none, as on a host without services).
    fn scope<R>(self: &Rc<Self>, f: impl FnOnce() -> R) -> R {
        if self.services {
            backend::scoped(self.clone() as Rc<dyn Backend>, f)
        } else {
            f()
        }
    }

    /// Keep a panic the test did not get as an operation's `Err`.
    fn record(&self, result: Result<(), Panicked>) {
        if let Err(panicked) = result {
            self.state().panics.push(panicked);
        }
    }

    /// Run one callback on connection `id` through its session, as the host's driver does:
    /// what it wrote is sent (appended to what the test can take), then its close request
    /// is honoured — at once, since everything is sent at once.
    fn deliver(self: &Rc<Self>, id: ConnId, input: Input<'_>) -> Result<(), Panicked> {
        let (mut session, mut out) = {
            let mut st = self.state();
            let Some(slot) = st.conns.get_mut(&id) else {
                return Ok(());
            };
            if slot.lost.is_some() {
                return Ok(());
            }
            if let Stage::Connecting { .. } = slot.stage {
                match input {
                    Input::Timer(token) => slot.deferred.push(Deferred::Timer(token)),
                    Input::Woken(token) => slot.deferred.push(Deferred::Woken(token)),
                    Input::Made | Input::Data(_) | Input::Eof => {}
                }
                return Ok(());
            }
            match (slot.session.take(), slot.out.take()) {
                (Some(session), Some(out)) => (session, out),
                (session, out) => {
                    slot.session = session;
                    slot.out = out;
                    return Ok(());
                }
            }
        };
        let delivered = self.scope(|| session.deliver(input, &mut out));
        let mut st = self.state();
        let Some(slot) = st.conns.get_mut(&id) else {
            // Its handle was dropped by the callback itself: it ends as at a server stop.
            drop(st);
            self.scope(|| drop(session));
            return Ok(());
        };
        match delivered {
            Delivered::Ran(requests) => {
                if out.is_datagram() {
                    for datagram in out.written_datagrams() {
                        slot.send(datagram);
                    }
                } else if !slot.shutdown_requested {
                    // (The session drops writes after its own consumer's half-close; this
                    // also covers a half-close by `services::shutdown_write`.)
                    slot.send(out.written());
                }
                out.clear();
                slot.out = Some(out);
                slot.session = Some(session);
                slot.close_requested |= requests.close;
                slot.shutdown_requested |= requests.shutdown_write;
                if let Input::Woken(_) = input {
                    st.woken_ran += 1;
                }
                drop(st);
                if requests.close {
                    return self.end(id, LostReason::Closed);
                }
                Ok(())
            }
            Delivered::Ignored => {
                slot.out = Some(out);
                slot.session = Some(session);
                Ok(())
            }
            Delivered::Panicked(message) => {
                // The session has already run `connection_lost(Error)`.
                out.clear();
                slot.out = Some(out);
                slot.lost = Some(LostReason::Error);
                st.forget(id);
                drop(st);
                self.wakes.died(id);
                self.scope(|| drop(session));
                self.reap(id);
                Err(Panicked {
                    callback: callback_name(input),
                    message,
                })
            }
        }
    }

    /// The peer's end of stream: `eof_received`; then, as in the host, a plugin without
    /// services has nothing more that could run and the connection ends (`Closed`), while a
    /// services plugin's connection stays open until it closes it (a timer, a wake or a post
    /// may still write — a proxy relays the rest of its upstream's answer).
    fn deliver_eof(self: &Rc<Self>, id: ConnId) -> Result<(), Panicked> {
        self.deliver(id, Input::Eof)?;
        if self.services {
            return Ok(());
        }
        self.end(id, LostReason::Closed)
    }

    /// End connection `id` for `reason`: `connection_lost`, then the consumer is dropped.
    /// Nothing if it has already ended.
    fn end(self: &Rc<Self>, id: ConnId, reason: LostReason) -> Result<(), Panicked> {
        let session = {
            let mut st = self.state();
            let Some(slot) = st.conns.get_mut(&id) else {
                return Ok(());
            };
            if slot.lost.is_some() {
                return Ok(());
            }
            slot.lost = Some(reason);
            let session = slot.session.take();
            st.forget(id);
            session
        };
        self.wakes.died(id);
        let result = match session {
            Some(mut session) => self.scope(|| {
                let lost = session.lose(reason);
                drop(session);
                lost
            }),
            None => Ok(()),
        };
        self.reap(id);
        result.map_err(Panicked::lost)
    }

    /// Forget an ended connection the test holds no handle for.
    fn reap(&self, id: ConnId) {
        let mut st = self.state();
        if st
            .conns
            .get(&id)
            .is_some_and(|slot| slot.lost.is_some() && !slot.handle)
        {
            st.conns.remove(&id);
        }
    }

    /// Deliver everything queued and everything already due, until nothing is left.
    fn run_until_idle(self: &Rc<Self>) {
        for _ in 0..MAX_STEPS {
            if !self.step() {
                return;
            }
        }
        panic!(
            "the harness is still busy after {MAX_STEPS} deliveries at {:?} on the fake clock: the plugin keeps itself busy (a zero-delay timer re-armed from timer_fired, posts answering posts, ...)",
            self.state().now
        );
    }

    /// Deliver one queued event or due item; `false` if there is none.
    fn step(self: &Rc<Self>) -> bool {
        let event = self.state().events.pop_front();
        if let Some(event) = event {
            self.handle(event);
            return true;
        }
        let woken = self.wakes.take();
        if !woken.is_empty() {
            let mut st = self.state();
            st.events
                .extend(woken.into_iter().map(|(id, token)| Event::Woken(id, token)));
            return true;
        }
        let due = {
            let st = self.state();
            st.next_due().filter(|&(at, _)| at <= st.now)
        };
        match due {
            Some((_, due)) => {
                self.fire(due);
                true
            }
            None => false,
        }
    }

    fn handle(self: &Rc<Self>, event: Event) {
        match event {
            Event::Post(to, data) => {
                let mut st = self.state();
                if let Some(slot) = st.conns.get_mut(&to) {
                    slot.posted -= data.len();
                    if slot.lost.is_none() && !slot.shutdown_requested {
                        slot.send(&data);
                    }
                }
            }
            Event::Close(id) => {
                let connecting = {
                    let mut st = self.state();
                    match st.conns.get_mut(&id).map(|slot| &mut slot.stage) {
                        Some(Stage::Connecting { close_after, .. }) => {
                            *close_after = true;
                            true
                        }
                        _ => false,
                    }
                };
                if !connecting {
                    let ended = self.end(id, LostReason::Closed);
                    self.record(ended);
                }
            }
            Event::ShutdownWrite(id) => self.shut_write(id),
            Event::Overflow(id) => {
                let ended = self.end(id, LostReason::Error);
                self.record(ended);
            }
            Event::Resume(id) => {
                let next = {
                    let mut st = self.state();
                    let now = st.now;
                    match st.conns.get_mut(&id) {
                        Some(slot) if slot.lost.is_none() && !slot.paused => {
                            let next = slot.held.pop_front();
                            if let Some(Held::Data(_)) = next {
                                slot.idle_since = now;
                            }
                            next
                        }
                        _ => None,
                    }
                };
                let delivered = match next {
                    Some(Held::Data(data)) => self.deliver(id, Input::Data(&data)),
                    Some(Held::Eof) => self.deliver_eof(id),
                    None => return,
                };
                self.record(delivered);
                // One read per step, so what it raised is delivered before the next.
                let mut st = self.state();
                if st.conns.get(&id).is_some_and(|slot| !slot.held.is_empty()) {
                    st.events.push_back(Event::Resume(id));
                }
            }
            Event::Woken(id, token) => {
                let delivered = self.deliver(id, Input::Woken(token));
                self.record(delivered);
            }
        }
    }

    /// `services::shutdown_write`, after what was queued before it: later output is dropped
    /// (a datagram session has no half-close).
    fn shut_write(&self, id: ConnId) {
        let mut st = self.state();
        let Some(slot) = st.conns.get_mut(&id) else {
            return;
        };
        match slot.stage {
            Stage::Connecting { .. } => slot.deferred.push(Deferred::ShutdownWrite),
            Stage::Open if slot.lost.is_none() && !slot.is_datagram() => {
                slot.shutdown_requested = true;
            }
            Stage::Open => {}
        }
    }

    fn fire(self: &Rc<Self>, due: Due) {
        match due {
            Due::Timer { timer } => {
                let armed = {
                    let mut st = self.state();
                    let at = st.timer_deadlines.remove(&timer);
                    at.and_then(|at| st.timers.remove(&(at, timer)))
                };
                if let Some(Armed { conn, token }) = armed {
                    let delivered = self.deliver(conn, Input::Timer(token));
                    self.record(delivered);
                }
            }
            Due::Tick => {
                if let Some(tick) = self.state().tick.as_mut() {
                    tick.next = tick.next.saturating_add(tick.every);
                }
                let ticked = self.scope(|| self.factory().tick());
                self.record(ticked.map_err(|message| Panicked {
                    callback: "tick",
                    message,
                }));
            }
            Due::Idle(id) => {
                let ended = self.end(id, LostReason::IdleTimeout);
                self.record(ended);
            }
            Due::ConnectTimeout(id) => {
                let ended = self.end(id, LostReason::ConnectFailed);
                self.record(ended);
            }
        }
    }
}

impl Backend for World {
    fn post(&self, to: ConnId, data: &[u8]) -> PostStatus {
        let mut st = self.state();
        let max_pending = st.max_pending;
        let Some(slot) = st.conns.get_mut(&to) else {
            return PostStatus::Gone;
        };
        if !slot.accepts_posts() {
            return PostStatus::Gone;
        }
        let pending = slot.pending() + data.len();
        if pending > max_pending {
            slot.closing = true;
            st.events.push_back(Event::Overflow(to));
            return PostStatus::Overflow;
        }
        slot.posted += data.len();
        st.events.push_back(Event::Post(to, data.to_vec()));
        if pending > HIGH_WATER {
            PostStatus::Backlogged
        } else {
            PostStatus::Queued
        }
    }

    fn close(&self, id: ConnId) {
        let mut st = self.state();
        if let Some(slot) = st.conns.get_mut(&id) {
            if slot.lost.is_none() && !slot.closing {
                slot.closing = true;
                st.events.push_back(Event::Close(id));
            }
        }
    }

    fn shutdown_write(&self, id: ConnId) {
        let mut st = self.state();
        if matches!(st.conns.get(&id), Some(slot) if slot.lost.is_none() && !slot.closing) {
            st.events.push_back(Event::ShutdownWrite(id));
        }
    }

    fn set_timer(&self, id: ConnId, after: Duration, token: u64) -> Option<TimerId> {
        let mut st = self.state();
        if !matches!(st.conns.get(&id), Some(slot) if slot.lost.is_none()) {
            return None;
        }
        st.last_timer += 1;
        let timer = st.last_timer;
        let at = st.now.saturating_add(after);
        st.timers.insert((at, timer), Armed { conn: id, token });
        st.timer_deadlines.insert(timer, at);
        Some(TimerId::from_raw(timer))
    }

    fn cancel_timer(&self, timer: TimerId) -> bool {
        let mut st = self.state();
        let timer = timer.to_raw();
        match st.timer_deadlines.remove(&timer) {
            Some(at) => st.timers.remove(&(at, timer)).is_some(),
            None => false,
        }
    }

    fn pause_reading(&self, id: ConnId, paused: bool) {
        let mut st = self.state();
        if let Some(slot) = st.conns.get_mut(&id) {
            let resumed = slot.paused && !paused;
            slot.paused = paused;
            if resumed && !slot.held.is_empty() {
                st.events.push_back(Event::Resume(id));
            }
        }
    }

    fn set_idle_timeout(&self, id: ConnId, timeout: Option<Duration>) {
        let mut st = self.state();
        let now = st.now;
        if let Some(slot) = st.conns.get_mut(&id) {
            slot.idle = timeout;
            // Counted from the last byte read, or from now if that was longer ago: setting a
            // timeout never ends a connection on the spot.
            slot.idle_since = slot.idle_since.max(now);
        }
    }

    fn waker(&self, id: ConnId, token: u64) -> Option<Waker> {
        let alive = self
            .state()
            .conns
            .get(&id)
            .is_some_and(|slot| slot.lost.is_none());
        alive.then(|| {
            Waker::new(Arc::new(WakeTarget {
                wakes: self.wakes.clone(),
                id,
                token,
            }))
        })
    }

    fn connect(
        &self,
        target: &str,
        timeout: Duration,
        consumer: ConsumerHandle,
    ) -> Result<ConnId, ConnectError> {
        let kind = OUTBOUND_TYPE.with(Cell::take);
        let mut session = Session::new(consumer);
        let port = match crate::services::target_port(target) {
            Ok(port) => port,
            Err(e) => {
                // As the host: the consumer hears that it never connected, and the caller why.
                let _ = session.lose(LostReason::ConnectFailed);
                return Err(e);
            }
        };
        let peer = target
            .parse::<SocketAddr>()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
        let mut st = self.state();
        let id = st.next_id();
        let mut info = ConnInfo::new(
            Transport::Tcp,
            peer,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        );
        info.id = id;
        let stage = Stage::Connecting {
            target: target.to_string(),
            deadline: st.now.checked_add(timeout),
            close_after: false,
        };
        let mut slot = Slot::new(info, Some(session), stage, false);
        slot.kind = kind;
        st.conns.insert(id, slot);
        drop(st);
        self.wakes.born(id);
        Ok(id)
    }
}

impl Drop for World {
    /// The worker goes (the last handle on it was dropped): the connections still open end
    /// as at a server stop, then the factory goes, as in the host.
    fn drop(&mut self) {
        self.wakes.close();
        let st = self.state.get_mut();
        let conns = std::mem::take(&mut st.conns);
        st.events.clear();
        let factory = self.factory.take();
        let end_all = move || {
            for (_, mut slot) in conns {
                if let Some(mut session) = slot.session.take() {
                    let _ = session.lose(LostReason::Shutdown);
                }
            }
            drop(factory);
        };
        if self.services {
            // Services called from here find the worker gone.
            backend::scoped(Rc::new(Stopped), end_all);
        } else {
            end_all();
        }
    }
}

/// The services of a worker that has gone: every target is gone.
struct Stopped;

impl Backend for Stopped {
    fn post(&self, _: ConnId, _: &[u8]) -> PostStatus {
        PostStatus::Gone
    }
    fn close(&self, _: ConnId) {}
    fn shutdown_write(&self, _: ConnId) {}
    fn set_timer(&self, _: ConnId, _: Duration, _: u64) -> Option<TimerId> {
        None
    }
    fn cancel_timer(&self, _: TimerId) -> bool {
        false
    }
    fn pause_reading(&self, _: ConnId, _: bool) {}
    fn set_idle_timeout(&self, _: ConnId, _: Option<Duration>) {}
    fn waker(&self, _: ConnId, _: u64) -> Option<Waker> {
        None
    }
    fn connect(&self, _: &str, _: Duration, _: ConsumerHandle) -> Result<ConnId, ConnectError> {
        Err(ConnectError("the worker is stopping".to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Wakes: the only part other threads touch.

/// Wakes from any thread, queued for the harness's thread.
#[derive(Default)]
struct Wakes {
    state: Mutex<WakeState>,
    arrived: Condvar,
}

#[derive(Default)]
struct WakeState {
    /// In arrival order; one entry per (connection, token) until delivered.
    queue: Vec<(ConnId, u64)>,
    queued: HashSet<(ConnId, u64)>,
    /// Connections that can be woken.
    alive: HashSet<ConnId>,
    /// The worker has gone.
    closed: bool,
}

impl Wakes {
    fn lock(&self) -> MutexGuard<'_, WakeState> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn born(&self, id: ConnId) {
        self.lock().alive.insert(id);
    }

    fn died(&self, id: ConnId) {
        self.lock().alive.remove(&id);
    }

    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.alive.clear();
    }

    /// From any thread: queue `woken(token)` for `id`; `false` if it has ended.
    fn wake(&self, id: ConnId, token: u64) -> bool {
        let mut st = self.lock();
        if st.closed || !st.alive.contains(&id) {
            return false;
        }
        if st.queued.insert((id, token)) {
            st.queue.push((id, token));
        }
        self.arrived.notify_all();
        true
    }

    /// Everything queued so far.
    fn take(&self) -> Vec<(ConnId, u64)> {
        let mut st = self.lock();
        st.queued.clear();
        std::mem::take(&mut st.queue)
    }

    /// Block up to `timeout` until something is queued.
    fn wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while st.queue.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            st = self
                .arrived
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What one [`Waker`] made by the harness wakes.
struct WakeTarget {
    wakes: Arc<Wakes>,
    id: ConnId,
    token: u64,
}

impl Wake for WakeTarget {
    fn wake(&self) -> bool {
        self.wakes.wake(self.id, self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OptionSpec, PluginInfo, Transports};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records every callback, in order, in a log shared with the test.
    struct Recorder {
        log: Rc<RefCell<Vec<String>>>,
    }

    struct RecorderConsumer {
        log: Rc<RefCell<Vec<String>>>,
        eof_mode: String,
    }

    impl Protocol for Recorder {
        type Consumer = RecorderConsumer;
        const INFO: PluginInfo = PluginInfo::new("recorder", "0.0.0", "records callbacks")
            .transports(Transports::TCP_AND_UDP)
            .options(&[
                OptionSpec::new("eof", "close | shutdown | nothing").default_value("close"),
                OptionSpec::new("n", "a number"),
            ]);

        fn new(options: &Options) -> Result<Self, String> {
            let _: Option<u8> = options.parse("n")?;
            if options.get("eof") == Some("explode") {
                panic!("factory exploded");
            }
            Ok(Recorder {
                log: Rc::new(RefCell::new(vec![format!(
                    "new eof={}",
                    options.get("eof").unwrap()
                )])),
            })
        }

        fn consumer(&self, info: &ConnInfo) -> RecorderConsumer {
            self.log
                .borrow_mut()
                .push(format!("consumer {} {}", info.transport, info.peer));
            RecorderConsumer {
                log: self.log.clone(),
                eof_mode: self.log.borrow()[0][8..].to_string(),
            }
        }
    }

    impl Consumer for RecorderConsumer {
        fn connection_made(&mut self, out: &mut Output) {
            self.log.borrow_mut().push("made".into());
            out.write(b"hi\n");
        }

        fn data_received(&mut self, data: &[u8], out: &mut Output) {
            let text = String::from_utf8_lossy(data).into_owned();
            self.log.borrow_mut().push(format!("data {text}"));
            match text.as_str() {
                "panic" => {
                    out.write(b"lost in the panic");
                    panic!("recorder panicked");
                }
                "close" => {
                    out.write(b"bye");
                    out.close();
                }
                "half" => {
                    out.write(b"last words");
                    out.shutdown_write();
                }
                "two" => {
                    out.write(b"a");
                    out.write(b"bc");
                }
                _ => out.write(data),
            }
        }

        fn eof_received(&mut self, out: &mut Output) {
            self.log.borrow_mut().push("eof".into());
            match self.eof_mode.as_str() {
                "close" => out.close(),
                "shutdown" => out.shutdown_write(),
                _ => {}
            }
        }

        fn connection_lost(&mut self, reason: LostReason) {
            self.log.borrow_mut().push(format!("lost {reason:?}"));
        }
    }

    impl Drop for RecorderConsumer {
        fn drop(&mut self) {
            self.log.borrow_mut().push("drop".into());
        }
    }

    fn log(h: &Harness<Recorder>) -> Vec<String> {
        h.protocol().log.borrow().clone()
    }

    #[test]
    fn callbacks_run_in_the_hosts_order() {
        let h = Harness::<Recorder>::new();
        let mut c = h.connect().unwrap();
        assert_eq!(c.take_text(), "hi\n");
        assert_eq!(c.round_trip(b"x").unwrap(), b"x");
        c.eof().unwrap();
        assert_eq!(c.lost_reason(), Some(LostReason::Closed));
        assert!(c.close_requested());
        assert_eq!(
            log(&h),
            [
                "new eof=close",
                "consumer tcp 127.0.0.1:40000",
                "made",
                "data x",
                "eof",
                "lost Closed",
                "drop"
            ]
        );
    }

    #[test]
    fn close_ends_the_connection_and_later_input_is_discarded() {
        let h = Harness::<Recorder>::new();
        let mut c = h.connect().unwrap();
        c.take_output();
        assert_eq!(c.round_trip_text("close").unwrap(), "bye");
        assert!(!c.is_open());
        assert_eq!(c.lost_reason(), Some(LostReason::Closed));
        c.send(b"ignored").unwrap();
        assert_eq!(c.take_output(), b"");
        assert!(!log(&h).iter().any(|l| l == "data ignored"));
    }

    #[test]
    fn panic_discards_output_and_ends_with_error() {
        let h = Harness::<Recorder>::new();
        let mut c = h.connect().unwrap();
        c.take_output();
        let err = c.send(b"panic").unwrap_err();
        assert_eq!(
            err,
            Panicked {
                callback: "data_received",
                message: "recorder panicked".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "plugin panicked in data_received: recorder panicked"
        );
        assert_eq!(c.take_output(), b"");
        assert_eq!(c.lost_reason(), Some(LostReason::Error));
        assert!(c.consumer().is_none());
        assert_eq!(log(&h).last().unwrap(), "drop");
        // Other connections of the same worker are unaffected.
        let mut other = h.connect().unwrap();
        assert_eq!(other.info().peer.port(), 40001);
        assert_eq!(other.round_trip_text("\nok").unwrap(), "hi\n\nok");
    }

    #[test]
    fn half_close_drops_later_writes() {
        let h = Harness::<Recorder>::with_options([("eof", "nothing")]).unwrap();
        let mut c = h.connect().unwrap();
        c.take_output();
        assert_eq!(c.round_trip_text("half").unwrap(), "last words");
        assert!(c.shutdown_requested() && c.is_open());
        assert_eq!(c.round_trip_text("more").unwrap(), "");
        c.eof().unwrap();
        assert_eq!(c.lost_reason(), Some(LostReason::Closed));
        assert!(!c.close_requested());
    }

    #[test]
    fn host_side_endings_report_their_reason_once() {
        let h = Harness::<Recorder>::new();
        for (end, reason) in [
            (
                Connection::idle_timeout as fn(&mut _) -> _,
                LostReason::IdleTimeout,
            ),
            (Connection::stop, LostReason::Shutdown),
            (Connection::peer_reset, LostReason::PeerClosed),
        ] {
            let mut c = h.connect().unwrap();
            end(&mut c).unwrap();
            end(&mut c).unwrap();
            assert_eq!(c.lost_reason(), Some(reason));
        }
        let lost: Vec<String> = log(&h)
            .into_iter()
            .filter(|l| l.starts_with("lost"))
            .collect();
        assert_eq!(
            lost,
            ["lost IdleTimeout", "lost Shutdown", "lost PeerClosed"]
        );
        drop(h.connect().unwrap());
        assert_eq!(log(&h).iter().rev().nth(1).unwrap(), "lost Shutdown");
    }

    #[test]
    fn udp_keeps_datagrams_apart() {
        let h = Harness::<Recorder>::new();
        let mut c = h
            .open(ConnSpec::udp().peer(([192, 0, 2, 1], 5353)))
            .unwrap();
        assert_eq!(c.take_datagrams(), [b"hi\n".to_vec()]);
        c.send(b"two").unwrap();
        c.send(b"three").unwrap();
        assert_eq!(
            c.take_datagrams(),
            [b"a".to_vec(), b"bc".to_vec(), b"three".to_vec()]
        );
        assert_eq!(log(&h)[1], "consumer udp 192.0.2.1:5353");
    }

    #[test]
    fn options_are_checked_like_the_host() {
        let unknown = Harness::<Recorder>::with_options([("colour", "blue")]).err();
        assert_eq!(
            unknown.as_deref(),
            Some(r#"plugin recorder: unknown option "colour" (accepted: eof, n)"#)
        );
        let bad = Harness::<Recorder>::with_options([("n", "many")]).err();
        assert_eq!(
            bad.as_deref(),
            Some(
                r#"plugin recorder: option n: invalid value "many": invalid digit found in string"#
            )
        );
        let panicked = Harness::<Recorder>::with_options([("eof", "explode")]).err();
        assert_eq!(
            panicked.as_deref(),
            Some("plugin recorder: factory exploded")
        );
        let last_wins =
            Harness::<Recorder>::with_options(vec![("eof", "x"), ("eof", "shutdown")]).unwrap();
        assert_eq!(log(&last_wins)[0], "new eof=shutdown");
    }

    #[test]
    fn tls_details_reach_the_consumer() {
        let spec = ConnSpec::tcp()
            .local(([10, 0, 0, 1], 443))
            .sni("example.com")
            .alpn(b"h2")
            .peer_cert_subject("CN=client");
        let info = spec.info().clone();
        assert_eq!(info.local.to_string(), "10.0.0.1:443");
        assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
        let h = Harness::<Recorder>::new();
        let c = h.open(spec).unwrap();
        assert_eq!(c.info(), &info);
    }

    #[test]
    #[should_panic(expected = "eof on a UDP session")]
    fn eof_on_udp_is_a_test_bug() {
        let h = Harness::<Recorder>::new();
        let mut c = h.open(ConnSpec::udp()).unwrap();
        let _ = c.eof();
    }
}

/// The services in the harness, through a plugin that runs one service command per read.
#[cfg(test)]
mod service_tests {
    use super::*;
    use crate::services::{self, Waker};
    use crate::{OptionSpec, PluginInfo, Transports};
    use std::cell::RefCell;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<String>>>;

    /// Each read is one command (see `Member::data_received`); every callback is logged.
    struct Lab {
        log: Log,
        wakers: Rc<RefCell<Vec<Waker>>>,
        tick: Option<Duration>,
    }

    struct Member {
        id: ConnId,
        log: Log,
        wakers: Rc<RefCell<Vec<Waker>>>,
    }

    /// An outbound connection's consumer.
    struct Upstream {
        log: Log,
    }

    impl Protocol for Lab {
        type Consumer = Member;
        const INFO: PluginInfo = PluginInfo::new("lab", "0.0.0", "runs service commands")
            .transports(Transports::TCP_AND_UDP)
            .options(&[OptionSpec::new("tick", "tick interval in ms")])
            .services();

        fn new(options: &Options) -> Result<Self, String> {
            Ok(Lab {
                log: Log::default(),
                wakers: Rc::default(),
                tick: options.parse("tick")?.map(Duration::from_millis),
            })
        }

        fn consumer(&self, info: &ConnInfo) -> Member {
            Member {
                id: info.id,
                log: self.log.clone(),
                wakers: self.wakers.clone(),
            }
        }

        fn tick_interval(&self) -> Option<Duration> {
            self.tick
        }

        fn tick(&self) {
            self.log.borrow_mut().push("tick".into());
        }

        fn serving(&self) {
            self.log.borrow_mut().push("serving".into());
        }

        fn stopping(&self) {
            self.log.borrow_mut().push("stopping".into());
        }
    }

    fn id(raw: &str) -> ConnId {
        ConnId::from_raw(raw.parse().unwrap())
    }

    fn ms(raw: &str) -> Duration {
        Duration::from_millis(raw.parse().unwrap())
    }

    impl Member {
        fn log(&self, entry: String) {
            self.log.borrow_mut().push(entry);
        }
    }

    impl Consumer for Member {
        fn connection_made(&mut self, _out: &mut Output) {
            self.log(format!("made {}", self.id.to_raw()));
        }

        fn data_received(&mut self, data: &[u8], out: &mut Output) {
            let text = String::from_utf8_lossy(data).into_owned();
            self.log(format!("data {} {text}", self.id.to_raw()));
            let words: Vec<&str> = text.split(' ').collect();
            let reply = match words[..] {
                ["id"] => format!("{}", self.id.to_raw()),
                ["post", to, text] => format!("{:?}", services::post(id(to), text.as_bytes())),
                ["bulk", to, size] => {
                    let bulk = vec![b'x'; size.parse().unwrap()];
                    format!("{:?}", services::post(id(to), &bulk))
                }
                ["self", a, b, c] => {
                    out.write(a.as_bytes());
                    services::post(self.id, b.as_bytes());
                    c.to_string()
                }
                ["close", to] => {
                    services::close(id(to));
                    String::new()
                }
                ["shut", to] => {
                    services::shutdown_write(id(to));
                    String::new()
                }
                ["timer", after, token] => {
                    let timer = services::set_timer(self.id, ms(after), token.parse().unwrap());
                    format!("set {}", timer.unwrap().to_raw())
                }
                ["cancel", timer] => {
                    let timer = TimerId::from_raw(timer.parse().unwrap());
                    format!("{}", services::cancel_timer(timer))
                }
                ["pause", who] => {
                    services::pause_reading(id(who));
                    String::new()
                }
                ["resume", who] => {
                    services::resume_reading(id(who));
                    String::new()
                }
                ["idle", "none"] => {
                    services::set_idle_timeout(self.id, None);
                    String::new()
                }
                ["idle", after] => {
                    services::set_idle_timeout(self.id, Some(ms(after)));
                    String::new()
                }
                ["connect", target, timeout] => {
                    let up = Upstream {
                        log: self.log.clone(),
                    };
                    match services::connect(target, ms(timeout), up) {
                        Ok(id) => format!("outbound {}", id.to_raw()),
                        Err(e) => format!("error {e}"),
                    }
                }
                ["waker", token] => {
                    let waker = services::waker(self.id, token.parse().unwrap());
                    self.wakers.borrow_mut().push(waker.unwrap());
                    String::new()
                }
                ["spin"] => {
                    services::set_timer(self.id, Duration::ZERO, 99);
                    String::new()
                }
                ["quit"] => {
                    out.close();
                    String::new()
                }
                _ => text.clone(),
            };
            if !reply.is_empty() {
                out.write(reply.as_bytes());
                out.write(b"\n");
            }
        }

        fn eof_received(&mut self, out: &mut Output) {
            self.log(format!("eof {}", self.id.to_raw()));
            out.close();
        }

        fn timer_fired(&mut self, token: u64, out: &mut Output) {
            self.log(format!("timer {} {token}", self.id.to_raw()));
            match token {
                13 => panic!("unlucky timer"),
                99 => {
                    services::set_timer(self.id, Duration::ZERO, 99);
                }
                98 => {
                    services::set_timer(self.id, Duration::from_millis(1), 98);
                }
                _ => out.write(format!("timer {token}\n").as_bytes()),
            }
        }

        fn woken(&mut self, token: u64, out: &mut Output) {
            self.log(format!("woken {} {token}", self.id.to_raw()));
            out.write(format!("woken {token}\n").as_bytes());
        }

        fn connection_lost(&mut self, reason: LostReason) {
            self.log(format!("lost {} {reason:?}", self.id.to_raw()));
        }
    }

    impl Consumer for Upstream {
        fn connection_made(&mut self, out: &mut Output) {
            self.log.borrow_mut().push("up made".into());
            out.write(b"HELLO\n");
        }

        fn data_received(&mut self, data: &[u8], _out: &mut Output) {
            let text = String::from_utf8_lossy(data);
            self.log.borrow_mut().push(format!("up data {text}"));
        }

        fn timer_fired(&mut self, token: u64, out: &mut Output) {
            out.write(format!("up timer {token}\n").as_bytes());
        }

        fn connection_lost(&mut self, reason: LostReason) {
            self.log.borrow_mut().push(format!("up lost {reason:?}"));
        }
    }

    fn log(h: &Harness<Lab>) -> Vec<String> {
        h.protocol().log.borrow().clone()
    }

    /// The entries of `log` that start with `prefix`.
    fn entries(h: &Harness<Lab>, prefix: &str) -> Vec<String> {
        log(h)
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    fn cmd(c: &mut Connection<Member>, command: &str) -> String {
        c.round_trip_text(command).unwrap()
    }

    #[test]
    fn connection_ids_are_unique_and_never_reused() {
        let h = Harness::<Lab>::new();
        let mut a = h.connect().unwrap();
        let b = h.connect().unwrap();
        assert_eq!(cmd(&mut a, "id"), "1\n");
        assert_eq!((a.info().id, b.id()), (a.id(), ConnId::from_raw(2)));
        drop(b);
        let mut c = h.open(ConnSpec::udp()).unwrap();
        assert_eq!(c.id(), ConnId::from_raw(3), "2 is not reused");
        assert_eq!(c.round_trip_text("id").unwrap(), "3\n");
    }

    /// A plugin that did not declare services: ids are `NONE` to the consumer, as from the
    /// host, and a service call panics with advice.
    struct Undeclared(Lab);

    impl Protocol for Undeclared {
        type Consumer = Member;
        const INFO: PluginInfo = PluginInfo::new("undeclared", "0.0.0", "forgot services()");

        fn new(options: &Options) -> Result<Self, String> {
            Lab::new(options).map(Undeclared)
        }

        fn consumer(&self, info: &ConnInfo) -> Member {
            self.0.consumer(info)
        }
    }

    #[test]
    fn without_declared_services_ids_are_none_and_calls_panic_with_advice() {
        let h = Harness::<Undeclared>::new();
        let mut a = h.connect().unwrap();
        let b = h.connect().unwrap();
        assert_eq!(a.info().id, ConnId::NONE);
        assert_ne!(a.id(), b.id(), "the harness still tells them apart");
        assert_eq!(cmd(&mut a, "id"), "0\n");
        let err = a.send(b"timer 10 1").unwrap_err();
        assert_eq!(err.callback, "data_received");
        assert!(
            err.message
                .contains("declare them with PluginInfo::services()"),
            "{}",
            err.message
        );
        assert_eq!(a.lost_reason(), Some(LostReason::Error));
    }

    #[test]
    fn posts_are_delivered_after_the_callback_in_order() {
        let h = Harness::<Lab>::new();
        let mut a = h.connect().unwrap();
        let mut b = h.connect().unwrap();
        // Posted to itself between two writes: it arrives after the callback's own output.
        assert_eq!(cmd(&mut a, "self A B C"), "AC\nB");
        assert_eq!(cmd(&mut a, "post 2 one"), "Queued\n");
        assert_eq!(cmd(&mut a, "post 2 two"), "Queued\n");
        assert_eq!(b.take_text(), "onetwo");
        assert_eq!(cmd(&mut b, "post 1 back"), "Queued\n");
        assert_eq!(a.take_text(), "back");
    }

    #[test]
    fn posts_to_an_ended_or_unknown_connection_are_gone() {
        let h = Harness::<Lab>::new();
        let mut a = h.connect().unwrap();
        let mut b = h.connect().unwrap();
        b.stop().unwrap();
        assert_eq!(cmd(&mut a, "post 2 late"), "Gone\n");
        assert_eq!(cmd(&mut a, "post 77 nobody"), "Gone\n");
        assert_eq!(cmd(&mut a, "post 0 none"), "Gone\n");
        drop(b);
        assert_eq!(cmd(&mut a, "post 2 dropped"), "Gone\n");
    }

    #[test]
    fn posts_report_a_backlog_above_the_high_water_mark() {
        let h = Harness::<Lab>::new();
        let mut publisher = h.connect().unwrap();
        let mut subscriber = h.connect().unwrap();
        let kib = 1024;
        assert_eq!(
            cmd(&mut publisher, &format!("bulk 2 {}", 200 * kib)),
            "Queued\n"
        );
        assert_eq!(subscriber.pending(), 200 * kib);
        // 200 KiB + 57 KiB is above 256 KiB: still queued, but backlogged.
        assert_eq!(
            cmd(&mut publisher, &format!("bulk 2 {}", 57 * kib)),
            "Backlogged\n"
        );
        assert_eq!(subscriber.take_output().len(), 257 * kib);
        assert_eq!(subscriber.pending(), 0, "taking the output drains it");
        assert_eq!(
            cmd(&mut publisher, &format!("bulk 2 {}", HIGH_WATER)),
            "Queued\n",
            "exactly the high-water mark is not above it"
        );
    }

    #[test]
    fn a_post_beyond_max_pending_overflows_and_ends_the_target() {
        let h = Harness::<Lab>::new();
        let mut publisher = h.connect().unwrap();
        let subscriber = h.connect().unwrap();
        let mib = 1024 * 1024;
        for _ in 0..4 {
            assert_eq!(
                cmd(&mut publisher, &format!("bulk 2 {mib}")),
                "Backlogged\n"
            );
        }
        assert_eq!(subscriber.pending(), MAX_PENDING);
        assert_eq!(cmd(&mut publisher, "post 2 x"), "Overflow\n");
        assert_eq!(subscriber.lost_reason(), Some(LostReason::Error));
        assert_eq!(
            subscriber.pending(),
            MAX_PENDING,
            "the overflowing post was not queued"
        );
        assert_eq!(cmd(&mut publisher, "post 2 x"), "Gone\n");
        assert_eq!(entries(&h, "lost"), ["lost 2 Error"]);

        // Within one callback: the bound counts posts not yet delivered.
        let h = Harness::<Lab>::new();
        h.set_max_pending(100);
        let mut a = h.connect().unwrap();
        let b = h.connect().unwrap();
        assert_eq!(cmd(&mut a, "bulk 2 60"), "Queued\n");
        assert_eq!(cmd(&mut a, "bulk 2 41"), "Overflow\n");
        assert!(!b.is_open());
    }

    #[test]
    fn close_ends_the_target_after_what_was_posted() {
        let h = Harness::<Lab>::new();
        let mut a = h.connect().unwrap();
        let mut b = h.connect().unwrap();
        cmd(&mut a, "post 2 bye");
        assert_eq!(cmd(&mut a, "close 2"), "");
        assert_eq!(b.take_text(), "bye");
        assert_eq!(b.lost_reason(), Some(LostReason::Closed));
        // Closing itself: the callback's own output still goes out first.
        assert_eq!(cmd(&mut a, "close 1"), "");
        assert_eq!(a.lost_reason(), Some(LostReason::Closed));
        assert_eq!(entries(&h, "lost"), ["lost 2 Closed", "lost 1 Closed"]);
    }

    #[test]
    fn shutdown_write_half_closes_the_target_after_what_was_posted() {
        let h = Harness::<Lab>::new();
        let mut a = h.connect().unwrap();
        let mut b = h.connect().unwrap();
        cmd(&mut a, "post 2 last");
        cmd(&mut a, "shut 2");
        assert!(b.shutdown_requested() && b.is_open());
        assert_eq!(b.take_text(), "last");
        // It keeps receiving, but what it (or anyone) sends now is dropped, as by the host.
        assert_eq!(cmd(&mut b, "id"), "");
        assert_eq!(cmd(&mut a, "post 2 more"), "Queued\n");
        assert_eq!(b.take_text(), "");
        assert_eq!(entries(&h, "data 2"), ["data 2 id"]);
        // On an outbound connection still connecting: once connected.
        cmd(&mut a, "connect 127.0.0.1:25 1000");
        cmd(&mut a, "shut 3");
        let mut server = h.accept_outbound::<Upstream>(ConnId::from_raw(3)).unwrap();
        assert_eq!(
            server.take_text(),
            "HELLO\n",
            "connection_made's output went first"
        );
        assert!(server.shutdown_requested());
    }

    #[test]
    fn posts_to_a_udp_peer_are_datagrams() {
        let h = Harness::<Lab>::new();
        let mut a = h.connect().unwrap();
        let mut peer = h.open(ConnSpec::udp()).unwrap();
        cmd(&mut a, "post 2 one");
        cmd(&mut a, "post 2 two");
        assert_eq!(peer.take_datagrams(), [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn timers_fire_in_deadline_order_on_the_fake_clock() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        assert_eq!(cmd(&mut c, "timer 30 3"), "set 1\n");
        assert_eq!(cmd(&mut c, "timer 10 1"), "set 2\n");
        assert_eq!(cmd(&mut c, "timer 20 2"), "set 3\n");
        assert_eq!(cmd(&mut c, "timer 20 4"), "set 4\n");
        assert_eq!(cmd(&mut c, "cancel 3"), "true\n");
        assert_eq!(cmd(&mut c, "cancel 3"), "false\n", "already cancelled");
        h.advance(Duration::from_millis(9));
        assert_eq!(c.take_text(), "");
        h.advance(Duration::from_millis(21));
        assert_eq!(c.take_text(), "timer 1\ntimer 4\ntimer 3\n");
        assert_eq!(h.now(), Duration::from_millis(30));
        assert_eq!(cmd(&mut c, "cancel 1"), "false\n", "already fired");
    }

    #[test]
    fn a_zero_delay_timer_fires_after_the_callback_that_set_it() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        assert_eq!(cmd(&mut c, "timer 0 5"), "set 1\ntimer 5\n");
        assert_eq!(h.now(), Duration::ZERO);
    }

    #[test]
    fn timers_end_with_their_connection() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        let mut other = h.connect().unwrap();
        cmd(&mut c, "timer 10 1");
        c.stop().unwrap();
        h.advance(Duration::from_secs(1));
        assert_eq!(entries(&h, "timer"), Vec::<String>::new());
        assert_eq!(cmd(&mut other, "cancel 1"), "false\n");
    }

    #[test]
    #[should_panic(expected = "still busy after 1000000 deliveries")]
    fn a_plugin_that_keeps_itself_busy_is_stopped_with_a_message() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        let _ = c.send(b"spin");
    }

    #[test]
    #[should_panic(expected = "still firing after 1000000 instants")]
    fn advancing_far_past_a_short_re_armed_timer_is_stopped_with_a_message() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        cmd(&mut c, "timer 1 98");
        h.advance(Duration::from_secs(3600));
    }

    #[test]
    fn a_panic_in_a_timer_ends_the_connection_and_is_reported() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        cmd(&mut c, "timer 10 13");
        h.advance(Duration::from_millis(10));
        assert_eq!(
            h.take_panics(),
            [Panicked {
                callback: "timer_fired",
                message: "unlucky timer".into()
            }]
        );
        assert!(h.take_panics().is_empty(), "taken");
        assert_eq!(c.lost_reason(), Some(LostReason::Error));
        assert_eq!(entries(&h, "lost"), ["lost 1 Error"]);
    }

    #[test]
    fn ticks_follow_the_fake_clock_between_timers() {
        let h = Harness::<Lab>::with_options([("tick", "100")]).unwrap();
        let mut c = h.connect().unwrap();
        cmd(&mut c, "timer 150 1");
        cmd(&mut c, "timer 200 2");
        h.advance(Duration::from_millis(99));
        assert_eq!(entries(&h, "tick"), Vec::<String>::new());
        h.advance(Duration::from_millis(251));
        let fired: Vec<String> = log(&h)
            .into_iter()
            .filter(|l| l.starts_with("tick") || l.starts_with("timer"))
            .collect();
        // At 200 ms the timer (set by a consumer) fires before the tick.
        assert_eq!(fired, ["tick", "timer 1 1", "timer 1 2", "tick", "tick"]);
        // No connection needed: a quiet worker still ticks.
        drop(c);
        h.advance(Duration::from_secs(1));
        assert_eq!(entries(&h, "tick").len(), 13);
    }

    #[test]
    fn the_protocols_idle_timeout_runs_on_the_fake_clock() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        h.advance(Duration::from_secs(100));
        assert!(c.is_open(), "no idle timeout unless the protocol sets one");
        cmd(&mut c, "idle 10000");
        h.advance(Duration::from_secs(9));
        cmd(&mut c, "ping"); // input restarts it
        h.advance(Duration::from_secs(9));
        assert!(c.is_open());
        h.advance(Duration::from_secs(1));
        assert_eq!(c.lost_reason(), Some(LostReason::IdleTimeout));
        assert_eq!(h.now(), Duration::from_secs(119));

        let mut c = h.connect().unwrap();
        cmd(&mut c, "idle 1000");
        cmd(&mut c, "idle none");
        h.advance(Duration::from_secs(60));
        assert!(c.is_open());
    }

    #[test]
    fn paused_input_is_held_and_delivered_in_order_on_resume() {
        let h = Harness::<Lab>::new();
        let mut fast = h.connect().unwrap();
        let mut control = h.connect().unwrap();
        assert_eq!(cmd(&mut fast, "pause 1"), "");
        assert!(fast.is_paused());
        fast.send(b"one").unwrap();
        fast.send(b"two").unwrap();
        fast.eof().unwrap();
        assert_eq!(fast.take_text(), "");
        assert!(fast.is_open());
        cmd(&mut control, "resume 1");
        assert!(!fast.is_paused());
        assert_eq!(fast.take_text(), "one\ntwo\n");
        assert_eq!(fast.lost_reason(), Some(LostReason::Closed));
        assert_eq!(
            entries(&h, "data 1")
                .into_iter()
                .chain(entries(&h, "eof"))
                .collect::<Vec<_>>(),
            ["data 1 pause 1", "data 1 one", "data 1 two", "eof 1"]
        );
    }

    #[test]
    fn wakes_from_other_threads_run_on_the_harness_thread() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        cmd(&mut c, "waker 1");
        cmd(&mut c, "waker 2");
        let wakers: Vec<Waker> = h.protocol().wakers.borrow_mut().drain(..).collect();
        let threads: Vec<_> = wakers
            .into_iter()
            .map(|waker| std::thread::spawn(move || waker.wake()))
            .collect();
        for thread in threads {
            assert!(thread.join().unwrap(), "a live connection can be woken");
        }
        let mut woken = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while woken < 2 && Instant::now() < deadline {
            woken += h.wait_for_wakes(Duration::from_secs(5));
        }
        assert_eq!(woken, 2);
        let mut text: Vec<String> = c.take_text().lines().map(String::from).collect();
        text.sort();
        assert_eq!(text, ["woken 1", "woken 2"]);
        assert_eq!(
            h.wait_for_wakes(Duration::from_millis(10)),
            0,
            "nothing more"
        );
    }

    #[test]
    fn wakes_before_delivery_merge_and_an_ended_connection_cannot_be_woken() {
        let h = Harness::<Lab>::new();
        let mut c = h.connect().unwrap();
        cmd(&mut c, "waker 7");
        let waker = h.protocol().wakers.borrow_mut().pop().unwrap();
        let copy = waker.clone();
        std::thread::spawn(move || {
            assert!(copy.wake());
            assert!(copy.wake());
        })
        .join()
        .unwrap();
        assert!(waker.wake());
        assert_eq!(c.take_text(), "", "not delivered before the harness runs");
        assert_eq!(h.wait_for_wakes(Duration::from_secs(5)), 1);
        assert_eq!(c.take_text(), "woken 7\n");
        c.stop().unwrap();
        assert!(!waker.wake());
        drop(c);
        drop(h);
        assert!(!waker.wake(), "the worker is gone");
    }

    #[test]
    fn an_outbound_connection_is_played_by_the_test() {
        let h = Harness::<Lab>::new();
        let mut client = h.connect().unwrap();
        assert_eq!(
            cmd(&mut client, "connect db.internal:5432 2000"),
            "outbound 2\n"
        );
        assert_eq!(cmd(&mut client, "post 2 early"), "Queued\n");
        assert_eq!(
            h.outbound(),
            [(ConnId::from_raw(2), "db.internal:5432".to_string())]
        );
        assert_eq!(entries(&h, "up"), Vec::<String>::new(), "not connected yet");
        let mut server = h.accept_outbound::<Upstream>(ConnId::from_raw(2)).unwrap();
        assert!(h.outbound().is_empty());
        assert_eq!(server.id(), ConnId::from_raw(2));
        assert_eq!(server.info().peer.port(), 5432);
        // Posted before the connection was made, then connection_made's greeting.
        assert_eq!(server.take_text(), "earlyHELLO\n");
        server.send(b"+OK").unwrap();
        assert!(server.consumer().is_some());
        server.eof().unwrap();
        assert_eq!(
            entries(&h, "up"),
            ["up made", "up data +OK", "up lost Closed"]
        );
    }

    #[test]
    fn a_refused_or_timed_out_outbound_connection_hears_only_connect_failed() {
        let h = Harness::<Lab>::new();
        let mut client = h.connect().unwrap();
        cmd(&mut client, "connect 127.0.0.1:9 1000");
        cmd(&mut client, "connect [::1]:9 5000");
        let pending = h.outbound();
        assert_eq!(pending.len(), 2);
        h.refuse_outbound(pending[0].0).unwrap();
        assert_eq!(entries(&h, "up"), ["up lost ConnectFailed"]);
        assert_eq!(cmd(&mut client, "post 2 x"), "Gone\n");
        h.advance(Duration::from_millis(4999));
        assert_eq!(h.outbound().len(), 1);
        h.advance(Duration::from_millis(1));
        assert!(h.outbound().is_empty());
        assert_eq!(
            entries(&h, "up"),
            ["up lost ConnectFailed", "up lost ConnectFailed"]
        );
    }

    #[test]
    fn an_outbound_connection_closed_while_connecting_flushes_then_closes() {
        let h = Harness::<Lab>::new();
        let mut client = h.connect().unwrap();
        cmd(&mut client, "connect 127.0.0.1:2003 1000");
        cmd(&mut client, "post 2 last");
        cmd(&mut client, "close 2");
        assert_eq!(cmd(&mut client, "post 2 more"), "Gone\n");
        let mut server = h.accept_outbound::<Upstream>(ConnId::from_raw(2)).unwrap();
        assert_eq!(server.take_text(), "lastHELLO\n");
        assert_eq!(server.lost_reason(), Some(LostReason::Closed));
    }

    #[test]
    fn connect_to_a_malformed_target_fails_at_once() {
        let h = Harness::<Lab>::new();
        let mut client = h.connect().unwrap();
        assert_eq!(
            cmd(&mut client, "connect nowhere 1000"),
            "error connect \"nowhere\": expected HOST:PORT, IP:PORT or [IPv6]:PORT\n"
        );
        assert!(h.outbound().is_empty());
        assert_eq!(entries(&h, "up"), ["up lost ConnectFailed"]);
    }

    #[test]
    #[should_panic(expected = "its consumer is a")]
    fn accept_outbound_checks_the_consumer_type() {
        let h = Harness::<Lab>::new();
        let mut client = h.connect().unwrap();
        cmd(&mut client, "connect 127.0.0.1:80 1000");
        let _ = h.accept_outbound::<Member>(ConnId::from_raw(2));
    }

    #[test]
    fn lifecycle_callbacks_run_when_the_test_says() {
        let h = Harness::<Lab>::new();
        assert!(log(&h).is_empty());
        h.serving().unwrap();
        h.stopping().unwrap();
        assert_eq!(log(&h), ["serving", "stopping"]);
    }

    #[test]
    fn connections_outlive_the_harness_value_and_end_with_the_worker() {
        let log = {
            let h = Harness::<Lab>::new();
            let log = h.protocol().log.clone();
            let mut client = h.connect().unwrap();
            cmd(&mut client, "connect 127.0.0.1:80 1000");
            drop(h);
            assert_eq!(cmd(&mut client, "id"), "1\n", "still served");
            log
        };
        let lost: Vec<String> = log
            .borrow()
            .iter()
            .filter(|l| l.contains("lost"))
            .cloned()
            .collect();
        assert_eq!(lost, ["lost 1 Shutdown", "up lost Shutdown"]);
    }
}
