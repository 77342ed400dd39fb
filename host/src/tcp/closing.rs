//! How a connection ends: the lingering close, and `connection_lost` on drop.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use plugin_api::LostReason;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connection::{Connection, ReadSide, WriteSide, LINGER, SCRATCH};
use crate::connections::Expiry;
use crate::metrics::Counter;
use crate::{access_log, logging};

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Half-close (TLS: close_notify first), then discard input until the peer closes
    /// (bounded), so that closing with unread input does not reset the connection and
    /// destroy the reply in flight.
    pub(super) async fn linger(&mut self) {
        let drain = async {
            if self.write != WriteSide::Shut {
                if std::future::poll_fn(|cx| Pin::new(&mut self.stream).poll_shutdown(cx))
                    .await
                    .is_err()
                {
                    return;
                }
                self.write = WriteSide::Shut;
            }
            if self.read == ReadSide::Eof {
                return;
            }
            // Discarded input goes to the worker's shared read buffer.
            std::future::poll_fn(|cx| {
                SCRATCH.with_borrow_mut(|s| loop {
                    let mut buf = ReadBuf::new(&mut s.read);
                    match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                        Poll::Ready(_) => return Poll::Ready(()),
                        Poll::Pending => return Poll::Pending,
                    }
                })
            })
            .await;
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

impl<S> Drop for Connection<S> {
    fn drop(&mut self) {
        match self.slot.registration.expired() {
            Some(Expiry::Idle) => {
                tracing::debug!(peer = %self.peer, "idle for the keep-alive period; closed");
                self.reason = LostReason::IdleTimeout;
            }
            Some(Expiry::SendTimeout) => {
                self.slot
                    .registration
                    .metrics()
                    .bump(Counter::OutputLimitCloses, 1);
                tracing::debug!(peer = %self.peer, "output waited longer than --send-timeout; closed");
                self.reason = LostReason::Error;
            }
            None => {}
        }
        self.slot.registration.with_endpoint(|ep| ep.closing = true);
        let metrics = self.slot.registration.metrics();
        // A panicked session has already ended (with Error) and is counted as such.
        let ended = self.session.lost_reason().unwrap_or(self.reason);
        metrics.closed(ended);
        // `--log-level debug`: one line per connection (the access log has the figures).
        tracing::debug!(peer = %self.peer, reason = %access_log::reason(ended), service = %self.slot.registration.service_name(), "connection closed");
        access_log::with_open(self.slot.registration.log_key(), |t| {
            t.set_reason(access_log::reason(ended))
        });
        if let Err(message) = self.session.lose(self.reason) {
            let panics = metrics.cell(Counter::PluginPanics);
            logging::plugin_panic(
                panics,
                self.slot.registration.service_name(),
                self.peer,
                "plugin panicked in connection_lost",
                &message,
                "closed",
            );
        }
    }
}

/// The peer's address for log lines, in 20 bytes instead of a `SocketAddr`'s 32 (every idle
/// connection carries it; an IPv6 scope id is not worth 12 bytes each).
#[derive(Clone, Copy)]
pub(super) struct Peer {
    ip: std::net::IpAddr,
    port: u16,
}

impl From<std::net::SocketAddr> for Peer {
    fn from(a: std::net::SocketAddr) -> Peer {
        Peer {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::net::SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// How a stream error ends the connection.
pub(super) fn lost_on(e: io::Error) -> LostReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => LostReason::PeerClosed,
        _ => {
            tracing::debug!("connection error: {e}");
            LostReason::Error
        }
    }
}
