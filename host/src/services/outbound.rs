//! Outbound TCP connections opened by a plugin ([`plugin_api::services::connect`]).
//!
//! The connection gets its entry (and [`ConnId`]) at once, so the plugin can post to it
//! before it connects. Its task resolves the name off the event loop (tokio's blocking pool),
//! tries each address until one connects, all within the plugin's timeout, and then runs the
//! very driver that serves accepted connections — backpressure, bounds, panic isolation and
//! metrics included. A failure of any kind ends the consumer with `ConnectFailed` only.
//!
//! Outbound connections count as open connections (a graceful stop waits for them) and are
//! exempt from `--keep-alive`.

use std::net::SocketAddr;
use std::time::Duration;

use plugin_api::host::ConsumerHandle;
use plugin_api::services::ConnectError;
use plugin_api::session::Session;
use plugin_api::{ConnId, LostReason};
use tokio::net::TcpStream;

use super::Hub;
use crate::connections::{Endpoint, Registration};
use crate::metrics::Counter;
use crate::tcp::connection::{Connection, Slot};

/// Register the connection and start its task.
pub fn start(
    hub: &Hub,
    target: &str,
    timeout: Duration,
    consumer: ConsumerHandle,
) -> Result<ConnId, ConnectError> {
    let mut session = Session::new(consumer);
    if let Err(e) = plugin_api::services::target_port(target) {
        // The consumer hears only `connection_lost(ConnectFailed)` — after the calling
        // callback returns, as every service's effect (the caller also gets the error now).
        tokio::task::spawn_local(async move {
            let _ = session.lose(LostReason::ConnectFailed);
        });
        return Err(e);
    }
    let registration = hub
        .connections()
        .register_with(Some(Endpoint::stream(true)), true);
    let id = registration.id();
    let key = registration.key();
    let task = tokio::task::spawn_local(run(registration, session, target.to_string(), timeout));
    hub.connections().attach(key, task.abort_handle());
    Ok(id)
}

async fn run(registration: Registration, mut session: Session, target: String, timeout: Duration) {
    registration.metrics().bump(Counter::OutboundConnects, 1);
    let connected = tokio::time::timeout(timeout, connect(&target)).await;
    let (stream, peer) = match connected {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => return failed(&registration, &mut session, &target, &e.to_string()),
        Err(_) => {
            let why = format!("not connected within {timeout:?}");
            return failed(&registration, &mut session, &target, &why);
        }
    };
    let _ = stream.set_nodelay(true);
    tracing::debug!(%target, %peer, "outbound connection made");
    let slot = Slot {
        registration,
        _permit: None,
    };
    Connection::with_session(slot, stream, peer, session)
        .run()
        .await;
}

fn failed(registration: &Registration, session: &mut Session, target: &str, why: &str) {
    let metrics = registration.metrics();
    metrics.bump(Counter::OutboundFailures, 1);
    registration.with_endpoint(|ep| ep.closing = true);
    tracing::debug!(%target, "outbound connection failed: {why}");
    if let Err(message) = session.lose(LostReason::ConnectFailed) {
        let panics = metrics.cell(Counter::PluginPanics);
        let what = "plugin panicked in connection_lost";
        let service = registration.service_name();
        crate::logging::plugin_panic(panics, service, target, what, &message, "connection failed");
    }
}

/// Resolve (off the loop for names) and connect to the first address that answers.
async fn connect(target: &str) -> std::io::Result<(TcpStream, SocketAddr)> {
    let addrs: Vec<SocketAddr> = match target.parse::<SocketAddr>() {
        Ok(addr) => vec![addr],
        Err(_) => tokio::net::lookup_host(target).await?.collect(),
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = e,
        }
    }
    Err(last)
}
