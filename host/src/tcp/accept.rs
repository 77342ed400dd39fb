//! The accept loop of one listening socket.
//!
//! `--max-connections` is a semaphore shared by all of a worker's listeners: a permit is
//! taken *before* `accept`, so at the limit the worker stops accepting and new connections
//! wait in the kernel's backlog (they are not accepted and then dropped). The permit is
//! released when the connection task ends.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use plugin_api::{ConnInfo, Transport};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::bind::canonical;
use crate::proxy_protocol;
use crate::tcp::connection::{Connection, Slot};
use crate::worker::Shared;

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

/// Accept connections until cancelled (the worker aborts this task to stop accepting).
pub async fn accept_loop(listener: TcpListener, shared: Rc<Shared>) {
    // For a wildcard bind each connection asks the kernel for its local address.
    let fixed_local = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        let permit = shared
            .limit
            .clone()
            .acquire_owned()
            .await
            .expect("the limit is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                drop(permit);
                backoff(e).await;
                continue;
            }
        };
        shared.accepted();
        let registration = if shared.factory.uses_services() {
            let endpoint = crate::services::endpoint::Endpoint::stream(false);
            shared.connections.register_with(Some(endpoint), true)
        } else {
            shared.connections.register()
        };
        let key = registration.key();
        let _ = stream.set_nodelay(true);
        let local = fixed_local
            .or_else(|| stream.local_addr().ok().map(canonical))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let info = ConnInfo::new(Transport::Tcp, canonical(peer), local);
        tracing::trace!(peer = %info.peer, "connection accepted");
        let slot = Slot {
            registration,
            _permit: Some(permit),
        };
        let task = if shared.tls.is_none() && !shared.proxy_protocol {
            let Some(conn) = Connection::open(slot, stream, &info, &shared.factory) else {
                continue;
            };
            // Spawn `run()` itself, not a wrapper future: a value moved through nested async
            // calls is stored once per level, and idle connections would pay for it.
            tokio::task::spawn_local(conn.run())
        } else {
            tokio::task::spawn_local(serve_wrapped(slot, stream, info, shared.clone()))
        };
        shared.connections.attach(key, task.abort_handle());
    }
}

/// A connection with a PROXY header and/or TLS in front of the protocol. One deadline,
/// `--handshake-timeout`, covers both: a peer that sends nothing or stalls must not hold a
/// slot. Failures are logged at debug level and cost only this connection.
async fn serve_wrapped(slot: Slot, stream: TcpStream, mut info: ConnInfo, shared: Rc<Shared>) {
    let deadline = tokio::time::Instant::now() + shared.handshake_timeout;
    if !shared.proxy_protocol {
        return serve_tls_or_plain(slot, stream, info, deadline, &shared).await;
    }
    let header = Box::pin(tokio::time::timeout_at(
        deadline,
        proxy_protocol::read_header(stream),
    ));
    let (proxied, stream) = match header.await {
        Ok(Ok(read)) => read,
        Ok(Err(why)) => {
            tracing::debug!(peer = %info.peer, "PROXY protocol: {why}; closed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %info.peer, "no PROXY header within {:?}; closed", shared.handshake_timeout);
            return;
        }
    };
    if let Some(client) = proxied.source {
        info.peer = canonical(client);
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
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(tls) = &shared.tls else {
        if let Some(conn) = Connection::open(slot, stream, &info, &shared.factory) {
            conn.run().await;
        }
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    // Boxed: the handshake state is large and needed only until the handshake ends.
    let handshake = Box::pin(tokio::time::timeout_at(deadline, acceptor.accept(stream)));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            crate::metrics::bump(&shared.connections.metrics.tls_handshake_failures, 1);
            tracing::debug!(peer = %info.peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            crate::metrics::bump(&shared.connections.metrics.tls_handshake_failures, 1);
            tracing::debug!(peer = %info.peer, "TLS handshake not finished within {:?}; closed", shared.handshake_timeout);
            return;
        }
    };
    let details = crate::tls::Details::of(stream.get_ref().1);
    info.sni = details.sni;
    info.alpn = details.alpn;
    info.peer_cert_subject = details.peer_cert_subject;
    if let Some(conn) = Connection::open(slot, stream, &info, &shared.factory) {
        conn.run().await;
    }
}

/// Errors from `accept`: a peer that left before we accepted is nothing; running out of
/// descriptors or memory is logged and waited out instead of spinning.
async fn backoff(e: io::Error) {
    match errors::classify(&e) {
        AcceptError::PeerGone => {}
        AcceptError::OutOfResources => {
            tracing::warn!("accept: {e}; pausing accepts for 100 ms (raise the fd limit or lower --max-connections)");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        AcceptError::Other => {
            tracing::warn!("accept: {e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
