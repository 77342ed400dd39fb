//! The accept loop of one listening socket: TCP or Unix-domain (both are streams served
//! the same way; see [`Acceptor`] for what a consumer learns of a Unix peer).
//!
//! `--max-connections` is a semaphore shared by all of a worker's listeners: a permit is
//! taken *before* `accept`, so at the limit the worker stops accepting and new connections
//! wait in the kernel's backlog (they are not accepted and then dropped). The permit is
//! released when the connection task ends.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use plugin_api::{ConnInfo, Transport};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tracing::Level;

use crate::bind::canonical;
use crate::cidr::Cidr;
use crate::metrics::Counter;
use crate::rate_limit::RateLimit;
use crate::shared::Shared;
use crate::tcp::connection::{Connection, Slot};
use crate::tcp::reactor::{Listener, Socket};
use crate::tcp::tls_stream::TlsStream;
use crate::{access_log, proxy_protocol};

/// A listening stream socket: TCP or Unix.
#[allow(async_fn_in_trait)] // used with concrete types on one thread only
pub trait Acceptor: 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;
    /// `tcp` or `unix`, for the access log.
    const TRANSPORT: &'static str;
    /// The next connection and what its consumer is told about it.
    async fn next(&self) -> io::Result<(Self::Stream, ConnInfo)>;
    /// A connection already queued, without waiting (`WouldBlock`: none).
    fn try_next(&self) -> io::Result<(Self::Stream, ConnInfo)> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    /// Whether a stop marked the socket as closing for good ([`crate::tcp::refuse`]): the
    /// connections in its queue are then the worker's to serve before it drops the socket.
    fn closing_for_good(&self) -> bool {
        false
    }
    /// Mark the socket as closing for good: new connection attempts are refused from now
    /// on, the queued ones stay ([`crate::tcp::refuse`]). Only TCP sockets are marked.
    fn refuse_new_connections(&self) -> io::Result<()> {
        Ok(())
    }
}

/// How an accept loop is told to end.
#[derive(Default)]
pub struct StopAccepting {
    notify: Notify,
    /// The socket closes for good when the loop ends (its worker is the last holder): the
    /// loop marks it to refuse new connections, then serves its queue.
    for_good: Cell<bool>,
}

impl StopAccepting {
    /// End the loop; `for_good`: see [`StopAccepting::for_good`].
    pub fn stop(&self, for_good: bool) {
        self.for_good.set(for_good);
        self.notify.notify_one();
    }
}

/// A TCP listener; for a wildcard bind each connection asks the kernel for its local address.
/// Its connections are served through the worker's own readiness set
/// ([`crate::tcp::reactor`]), not registered with tokio one by one.
pub struct Tcp {
    listener: Listener,
    fixed_local: Option<SocketAddr>,
}

impl Tcp {
    pub fn new(listener: TcpListener) -> io::Result<Tcp> {
        let listener = Listener::new(listener)?;
        let fixed_local = listener
            .local_addr()
            .ok()
            .filter(|a| !a.ip().is_unspecified());
        Ok(Tcp {
            listener,
            fixed_local,
        })
    }
}

impl Acceptor for Tcp {
    type Stream = Socket;
    const TRANSPORT: &'static str = "tcp";

    async fn next(&self) -> io::Result<(Self::Stream, ConnInfo)> {
        let (stream, peer) = self.listener.accept().await?;
        Ok(self.described(stream, peer))
    }

    fn try_next(&self) -> io::Result<(Self::Stream, ConnInfo)> {
        let (stream, peer) = self.listener.try_accept()?;
        Ok(self.described(stream, peer))
    }

    fn closing_for_good(&self) -> bool {
        self.listener.closing_for_good()
    }

    fn refuse_new_connections(&self) -> io::Result<()> {
        self.listener.refuse_new_connections()
    }
}

impl Tcp {
    /// An accepted connection, set up, with what its consumer is told about it.
    fn described(&self, stream: Socket, peer: SocketAddr) -> (Socket, ConnInfo) {
        let _ = stream.set_nodelay(true);
        let local = self
            .fixed_local
            .or_else(|| stream.local_addr().ok().map(canonical))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        (
            stream,
            ConnInfo::new(Transport::Tcp, canonical(peer), local),
        )
    }
}

#[cfg_attr(unix, path = "accept/unix_socket_unix.rs")]
#[cfg_attr(windows, path = "accept/unix_socket_windows.rs")]
mod unix_socket;
pub use unix_socket::Unix;

#[cfg_attr(unix, path = "accept/errors_unix.rs")]
#[cfg_attr(windows, path = "accept/errors_windows.rs")]
mod errors;

/// An `accept` failure, by what the accept loop does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptError {
    /// A peer that left before we accepted it (or an interrupted call): try again at once.
    PeerGone,
    /// Out of descriptors, buffers or memory: pause accepts until some are freed.
    OutOfResources,
    /// Anything else: log it and retry shortly.
    Other,
}

/// Accept connections until `stop` is notified (or the task is aborted). Then, if a stop
/// marked the socket as closing for good, accept and serve what is already in its queue
/// (waiting for permits as connections end: the worker's graceful deadline bounds it)
/// before returning and dropping the socket, which would reset those connections.
/// Only a handshake still in flight when the queue is found empty (a SYN that came before
/// the mark, its peer yet to answer the SYN-ACK) is reset as before.
pub async fn accept_loop<A: Acceptor>(acceptor: A, shared: Rc<Shared>, stop: Rc<StopAccepting>) {
    tokio::select! {
        biased;
        () = stop.notify.notified() => {}
        () = accept_forever(&acceptor, &shared) => {}
    }
    if stop.for_good.get() {
        if let Err(e) = acceptor.refuse_new_connections() {
            tracing::warn!(service = %shared.name, "stopping: cannot stop new connections before the queued ones are served ({e}); closing resets those");
        }
    }
    if acceptor.closing_for_good() {
        empty_queue(&acceptor, &shared).await;
    }
}

async fn accept_forever<A: Acceptor>(acceptor: &A, shared: &Rc<Shared>) {
    loop {
        let permit = shared
            .limit
            .clone()
            .acquire_owned()
            .await
            .expect("the limit is never closed");
        match acceptor.next().await {
            Ok((stream, info)) => start_connection::<A>(stream, info, permit, shared),
            Err(e) => {
                drop(permit);
                backoff(e).await;
            }
        }
    }
}

/// Serve what the (closing) socket's queue holds, then return.
async fn empty_queue<A: Acceptor>(acceptor: &A, shared: &Rc<Shared>) {
    let mut served = 0u64;
    loop {
        let permit = shared
            .limit
            .clone()
            .acquire_owned()
            .await
            .expect("the limit is never closed");
        match acceptor.try_next() {
            Ok((stream, info)) => {
                served += 1;
                start_connection::<A>(stream, info, permit, shared);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                drop(permit);
                backoff(e).await;
            }
        }
    }
    if served > 0 {
        tracing::debug!(service = %shared.name, served, "stopping: served the connections queued on a closing socket");
    }
}

/// Register an accepted connection and start serving it.
fn start_connection<A: Acceptor>(
    stream: A::Stream,
    info: ConnInfo,
    permit: OwnedSemaphorePermit,
    shared: &Rc<Shared>,
) {
    shared.accepted();
    let registration = if shared.factory.uses_services() {
        let endpoint = crate::connections::Endpoint::stream(false);
        shared.connections.register_with(Some(endpoint), true)
    } else {
        shared.connections.register()
    };
    let key = registration.key();
    tracing::trace!(service = %shared.name, peer = %info.peer, "connection accepted");
    if crate::access_log::enabled() {
        let log_key = registration.log_key();
        crate::access_log::opened(log_key, info.peer, info.local);
        crate::access_log::with_open(log_key, |t| {
            t.set_service(shared.name.clone());
            t.set_transport(A::TRANSPORT);
        });
    }
    let slot = Slot {
        registration,
        _permit: Some(permit),
    };
    let task = if shared.tls.is_none() && !shared.proxy_protocol {
        let Some(conn) = Connection::open(slot, stream, &info, &shared.factory) else {
            return;
        };
        // Spawn `run()` itself, not a wrapper future: a value moved through nested async
        // calls is stored once per level, and idle connections would pay for it.
        tokio::task::spawn_local(conn.run())
    } else {
        tokio::task::spawn_local(serve_wrapped(slot, stream, info, shared.clone()))
    };
    shared.connections.attach(key, task.abort_handle());
}

/// A connection with a PROXY header and/or TLS in front of the protocol. One deadline,
/// `--handshake-timeout`, covers both: a peer that sends nothing or stalls must not hold a
/// slot. Failures are logged at debug level and cost only this connection.
async fn serve_wrapped<S>(slot: Slot, stream: S, mut info: ConnInfo, shared: Rc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let deadline = tokio::time::Instant::now() + shared.handshake_timeout;
    if !shared.proxy_protocol {
        return serve_tls_or_plain(slot, stream, info, deadline, &shared).await;
    }
    if !trusted_proxy(&shared, info.peer) {
        ended_before_open(&slot, "proxy_refused");
        return;
    }
    let header = Box::pin(tokio::time::timeout_at(
        deadline,
        proxy_protocol::read_header(stream),
    ));
    let (proxied, stream) = match header.await {
        Ok(Ok(read)) => read,
        Ok(Err(why)) => {
            tracing::debug!(service = %shared.name, peer = %info.peer, "PROXY protocol: {why}; closed");
            ended_before_open(&slot, "proxy_failed");
            return;
        }
        Err(_) => {
            tracing::debug!(service = %shared.name, peer = %info.peer, "no PROXY header within {:?}; closed", shared.handshake_timeout);
            ended_before_open(&slot, "handshake_timeout");
            return;
        }
    };
    if let Some(client) = proxied.source {
        info.peer = canonical(client);
        access_log::with_open(slot.registration.log_key(), |t| t.set_peer(info.peer));
    }
    serve_tls_or_plain(slot, stream, info, deadline, &shared).await
}

async fn serve_tls_or_plain<S>(
    slot: Slot,
    stream: S,
    mut info: ConnInfo,
    deadline: tokio::time::Instant,
    shared: &Shared,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let Some(tls) = &shared.tls else {
        if let Some(conn) = Connection::open(slot, stream, &info, &shared.factory) {
            conn.spawn(&shared.connections);
        }
        return;
    };
    // Boxed: the handshake state is large and needed only until the handshake ends.
    let handshake = Box::pin(tokio::time::timeout_at(
        deadline,
        TlsStream::accept(stream, tls.config.clone()),
    ));
    let (stream, sni) = match handshake.await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            shared.metrics.bump(Counter::TlsHandshakeFailures, 1);
            tracing::debug!(service = %shared.name, peer = %info.peer, "TLS handshake failed: {e}");
            ended_before_open(&slot, "tls_failed");
            return;
        }
        Err(_) => {
            shared.metrics.bump(Counter::TlsHandshakeFailures, 1);
            tracing::debug!(service = %shared.name, peer = %info.peer, "TLS handshake not finished within {:?}; closed", shared.handshake_timeout);
            ended_before_open(&slot, "handshake_timeout");
            return;
        }
    };
    let details = crate::tls::Details::of(stream.session(), sni);
    access_log::with_open(slot.registration.log_key(), |t| {
        t.set_tls(access_log::TlsSummary {
            version: details.version,
            alpn: details
                .alpn
                .as_deref()
                .map(|a| String::from_utf8_lossy(a).into_owned()),
            sni: details.sni.clone(),
        })
    });
    info.sni = details.sni;
    info.alpn = details.alpn;
    info.peer_cert_subject = details.peer_cert_subject;
    if let Some(conn) = Connection::open(slot, stream, &info, &shared.factory) {
        conn.spawn(&shared.connections);
    }
}

/// The access log's reason for a connection that ended before its consumer was made.
fn ended_before_open(slot: &Slot, reason: &'static str) {
    access_log::with_open(slot.registration.log_key(), |t| t.set_reason(reason));
}

/// Lines about connections from outside `--proxy-protocol-from`, per worker.
const UNTRUSTED_PROXY_WINDOW: Duration = Duration::from_secs(10);

thread_local! {
    static UNTRUSTED_PROXIES: RefCell<RateLimit> = const {
        RefCell::new(RateLimit::new("connections from untrusted PROXY sources", Level::WARN, 1, UNTRUSTED_PROXY_WINDOW))
    };
}

/// Whether a PROXY header from `peer` may be believed (`--proxy-protocol-from`; anyone
/// when not given; a Unix socket's peer always: its file's rights say who connects). A
/// connection from elsewhere is closed before a byte is read: counted, and logged
/// (rate-limited, a client can repeat it at will).
fn trusted_proxy(shared: &Shared, peer: SocketAddr) -> bool {
    let from = &shared.proxy_protocol_from;
    if from.is_empty() || peer == crate::bind::UNIX_ADDR || Cidr::any_contains(from, peer.ip()) {
        return true;
    }
    shared.metrics.bump(Counter::ProxyRefused, 1);
    UNTRUSTED_PROXIES.with_borrow_mut(|limit| {
        limit.log(|| tracing::warn!(%peer, "connection from outside --proxy-protocol-from; closed"))
    });
    false
}

/// `accept` failure lines per worker: one per window, then the count of the others.
/// Out of descriptors, every listener of every worker fails again every 100 ms.
const ACCEPT_ERROR_WINDOW: Duration = Duration::from_secs(10);

thread_local! {
    static ACCEPT_ERRORS: RefCell<RateLimit> =
        const { RefCell::new(RateLimit::new("accept errors", Level::WARN, 1, ACCEPT_ERROR_WINDOW)) };
}

/// Errors from `accept`: a peer that left before we accepted is nothing; running out of
/// descriptors or memory is logged (rate-limited) and waited out instead of spinning.
async fn backoff(e: io::Error) {
    let (pause, hint) = match errors::classify(&e) {
        AcceptError::PeerGone => return,
        AcceptError::OutOfResources => (
            Duration::from_millis(100),
            " (raise the fd limit or lower --max-connections)",
        ),
        AcceptError::Other => (Duration::from_millis(10), ""),
    };
    ACCEPT_ERRORS.with_borrow_mut(|limit| {
        limit.log(|| tracing::warn!("accept: {e}; pausing accepts for {pause:?}{hint}"))
    });
    tokio::time::sleep(pause).await;
}
