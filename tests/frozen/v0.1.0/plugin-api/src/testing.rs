//! A sans-IO test harness for plugin authors (feature `testing`): drive a [`Consumer`]
//! exactly as the host would, without sockets, processes or a runtime.
//!
//! * [`Harness`] is one worker's protocol: built from `--plugin-opt` pairs the way `sockhost`
//!   builds it (unknown keys refused with the host's message, declared defaults filled in).
//!   Every [`Connection`] it opens shares that protocol, as the connections of one worker do.
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
//! The harness follows the host's connection driver: `connection_made` when the connection
//! opens; `data_received` per read; after the callback that asks to close, the connection
//! ends with `connection_lost(Closed)` and later input is discarded; after
//! [`Output::shutdown_write`] later writes are dropped; after `eof_received` the connection
//! ends with `connection_lost(Closed)` (nothing can write any more); a panic in a callback is
//! caught, its output discarded, and the connection ends with `connection_lost(Error)` —
//! the harness returns it as `Err(`[`Panicked`]`)`. Every consumer hears `connection_lost`
//! exactly once and is dropped right after, as in the host; a [`Connection`] dropped while
//! still open reports [`LostReason::Shutdown`].
//!
//! Output a consumer writes is delivered to the test at once: the harness has no socket, so
//! there is no backpressure and nothing is ever pending.
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
//! plugin-api = { path = "../plugin-api", package = "sockhost-plugin-api", features = ["testing"] }
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

use std::cell::Cell;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{ConnInfo, Consumer, LostReason, Options, Output, Protocol, Transport};

/// The peer address [`Harness::connect`] gives its first connection; each further
/// connection of the same harness gets the next port.
pub const DEFAULT_PEER: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40000));

/// The local address connections are given unless a [`ConnSpec`] says otherwise
/// (sockhost's default bind).
pub const DEFAULT_LOCAL: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8060));

/// A panic caught in one of the plugin's callbacks. The host logs it and closes the
/// connection; the harness has ended the connection with [`LostReason::Error`] (or, for a
/// panic in [`Protocol::consumer`], never opened it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panicked {
    /// Which callback panicked: `consumer`, `connection_made`, `data_received`,
    /// `eof_received` or `connection_lost`.
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

/// Runs `f` as the ABI glue does: a panic becomes its message.
fn guarded<R>(callback: &'static str, f: impl FnOnce() -> R) -> Result<R, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Panicked {
        callback,
        message: crate::abi::panic_message(payload).into(),
    })
}

/// One worker's instance of protocol `P`, built from options as `sockhost` builds it.
///
/// Connections opened from the same harness share the protocol value (and whatever state it
/// shares with its consumers), like the connections served by one worker process.
pub struct Harness<P> {
    protocol: P,
    next_peer_port: Cell<u16>,
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
    pub fn from_protocol(protocol: P) -> Self {
        Harness {
            protocol,
            next_peer_port: Cell::new(DEFAULT_PEER.port()),
        }
    }

    /// The protocol value, for assertions on shared state.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// Open a plain TCP connection from [`DEFAULT_PEER`] (the next port for each call) to
    /// [`DEFAULT_LOCAL`]; see [`open`](Harness::open).
    pub fn connect(&self) -> Result<Connection<P::Consumer>, Panicked> {
        let port = self.next_peer_port.get();
        self.next_peer_port.set(port.wrapping_add(1));
        let mut peer = DEFAULT_PEER;
        peer.set_port(port);
        self.open(ConnSpec::tcp().peer(peer))
    }

    /// Open a connection (or UDP peer session) described by `info`: the factory's
    /// [`Protocol::consumer`] makes its consumer, then
    /// [`Consumer::connection_made`] runs; whatever it writes is ready in
    /// [`take_output`](Connection::take_output).
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
        let info = info.into();
        assert!(
            P::INFO.transports.contains(info.transport),
            "plugin {} does not serve {} (see PluginInfo::transports)",
            P::INFO.name,
            info.transport
        );
        let consumer = guarded("consumer", || self.protocol.consumer(&info))?;
        let datagram = info.transport == Transport::Udp;
        let mut conn = Connection {
            consumer: Some(consumer),
            info,
            out: Output::new(datagram),
            written: Vec::new(),
            bounds: Vec::new(),
            read: ReadSide::Open,
            write: WriteSide::Open,
            close_requested: false,
            lost: None,
        };
        conn.call("connection_made", |c, out| c.connection_made(out))?;
        Ok(conn)
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

/// The receiving side, as in the host's driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadSide {
    Open,
    /// [`Connection::eof`] was called.
    Eof,
}

/// The sending side, as in the host's driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteSide {
    Open,
    /// The consumer called [`Output::shutdown_write`]; later writes are dropped.
    Shut,
}

/// One connection (or UDP peer session) driven by the test, opened by [`Harness::open`].
///
/// The connection is *open* until the consumer closes it, the stream ends
/// ([`eof`](Connection::eof)), a callback panics, or the test ends it from the host's side;
/// then [`Consumer::connection_lost`] has run, the consumer is dropped, and
/// [`lost_reason`](Connection::lost_reason) says why. Output stays readable after that.
pub struct Connection<C: Consumer> {
    /// `None` once `connection_lost` has run.
    consumer: Option<C>,
    info: ConnInfo,
    /// Handed to each callback, then emptied into `written`, as the host does.
    out: Output,
    /// Everything delivered and not yet taken by the test.
    written: Vec<u8>,
    /// UDP: the end offset in `written` of each datagram not yet taken.
    bounds: Vec<usize>,
    read: ReadSide,
    write: WriteSide,
    close_requested: bool,
    lost: Option<LostReason>,
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
    /// that). `Err` if the callback panicked (the connection has then ended with
    /// [`LostReason::Error`]).
    ///
    /// # Panics
    /// After [`eof`](Connection::eof): a peer cannot send after ending its stream.
    pub fn send(&mut self, data: &[u8]) -> Result<(), Panicked> {
        assert!(
            self.read == ReadSide::Open,
            "send after eof: the peer already ended its stream"
        );
        self.call("data_received", |c, out| c.data_received(data, out))
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
    /// callback could write any more.
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
        assert!(self.read == ReadSide::Open, "eof called twice");
        if self.lost.is_some() {
            return Ok(());
        }
        self.read = ReadSide::Eof;
        self.call("eof_received", |c, out| c.eof_received(out))?;
        self.lose(LostReason::Closed)
    }

    /// The host ends the connection for `reason`: [`connection_lost`](Consumer::connection_lost)
    /// runs and the consumer is dropped. Does nothing if the connection has already ended.
    /// `Err` if `connection_lost` panicked (the host logs it; the connection is gone anyway).
    pub fn lose(&mut self, reason: LostReason) -> Result<(), Panicked> {
        let Some(mut consumer) = self.consumer.take() else {
            return Ok(());
        };
        self.lost = Some(reason);
        let result = guarded("connection_lost", || consumer.connection_lost(reason));
        // Dropped right after, as the host does; a panicking destructor is contained too.
        let _ = guarded("drop", move || drop(consumer));
        result
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

    /// Everything the consumer wrote since the last take, in order (UDP: the datagrams
    /// joined; see [`take_datagrams`](Connection::take_datagrams)).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.bounds.clear();
        std::mem::take(&mut self.written)
    }

    /// [`take_output`](Connection::take_output) as text (invalid UTF-8 replaced by `�`).
    pub fn take_text(&mut self) -> String {
        String::from_utf8_lossy(&self.take_output()).into_owned()
    }

    /// What the consumer wrote since the last take, without taking it.
    pub fn output(&self) -> &[u8] {
        &self.written
    }

    /// UDP: the datagrams the consumer sent since the last take, one `Vec` per
    /// [`Output::write`].
    ///
    /// # Panics
    /// On a TCP connection, whose output is a byte stream: use
    /// [`take_output`](Connection::take_output).
    pub fn take_datagrams(&mut self) -> Vec<Vec<u8>> {
        assert!(
            self.info.transport == Transport::Udp,
            "take_datagrams on a TCP connection: its output is a byte stream (use take_output)"
        );
        let mut start = 0;
        let datagrams = self
            .bounds
            .iter()
            .map(|&end| {
                let d = self.written[start..end].to_vec();
                start = end;
                d
            })
            .collect();
        self.take_output();
        datagrams
    }

    /// Whether the connection is still open (no `connection_lost` yet).
    pub fn is_open(&self) -> bool {
        self.lost.is_none()
    }

    /// Why the connection ended, once it has: the reason given to `connection_lost`.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.lost
    }

    /// Whether the consumer called [`Output::close`].
    pub fn close_requested(&self) -> bool {
        self.close_requested
    }

    /// Whether the consumer called [`Output::shutdown_write`] (TCP half-close): writes from
    /// later callbacks are dropped, as the host drops them.
    pub fn shutdown_requested(&self) -> bool {
        self.write == WriteSide::Shut
    }

    /// The info the consumer was made with.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The consumer, for white-box assertions; `None` once the connection has ended.
    pub fn consumer(&self) -> Option<&C> {
        self.consumer.as_ref()
    }

    /// The consumer, mutably; `None` once the connection has ended.
    pub fn consumer_mut(&mut self) -> Option<&mut C> {
        self.consumer.as_mut()
    }

    /// Run one callback as the host's driver does: catch a panic (discarding that callback's
    /// output and ending the connection with `Error`), else keep the output and honour the
    /// close and half-close requests.
    fn call(
        &mut self,
        callback: &'static str,
        f: impl FnOnce(&mut C, &mut Output),
    ) -> Result<(), Panicked> {
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(());
        };
        let out = &mut self.out;
        if let Err(panicked) = guarded(callback, || f(consumer, out)) {
            self.out.clear();
            // A second panic, in connection_lost, is only logged by the host.
            let _ = self.lose(LostReason::Error);
            return Err(panicked);
        }
        self.absorb();
        if self.close_requested {
            // Everything is "sent" at once: the host would linger and report `Closed`.
            self.lose(LostReason::Closed)?;
        }
        Ok(())
    }

    /// Move one callback's output and requests into the connection's state.
    fn absorb(&mut self) {
        let udp = self.info.transport == Transport::Udp;
        if self.write == WriteSide::Open {
            if udp {
                for datagram in self.out.datagrams() {
                    self.written.extend_from_slice(datagram);
                    self.bounds.push(self.written.len());
                }
            } else {
                self.written.extend_from_slice(self.out.bytes());
            }
        }
        if self.out.take_close() {
            self.close_requested = true;
        }
        // Writes of this callback are still sent; later ones are dropped.
        if self.out.take_shutdown_write() && !udp {
            self.write = WriteSide::Shut;
        }
        self.out.clear();
    }
}

impl<C: Consumer> Drop for Connection<C> {
    /// A connection still open when the test drops it ends as at a server stop.
    fn drop(&mut self) {
        let _ = self.lose(LostReason::Shutdown);
    }
}

impl<C: Consumer> fmt::Debug for Connection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .field("pending_output", &String::from_utf8_lossy(&self.written))
            .field("close_requested", &self.close_requested)
            .field("shutdown_requested", &self.shutdown_requested())
            .field("eof", &(self.read == ReadSide::Eof))
            .field("lost", &self.lost)
            .finish()
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
