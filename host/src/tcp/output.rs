//! A connection's output: what a callback wrote goes to the stream at once, and only what
//! the stream does not take is kept (`pending`), within `--max-pending`.

use std::pin::Pin;
use std::task::{Context, Poll};

use plugin_api::session::Delivered;
use plugin_api::{LostReason, Output};
use tokio::io::{AsyncRead, AsyncWrite};

use super::closing::lost_on;
use super::connection::{Connection, WriteSide, LOW_WATER};
use crate::logging;
use crate::metrics::Counter;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Append to `pending`, within `--max-pending`.
    pub(super) fn queue(&mut self, data: &[u8]) -> Result<(), LostReason> {
        if data.is_empty() {
            return Ok(());
        }
        if self.write != WriteSide::Open {
            tracing::debug!(peer = %self.peer, "consumer wrote after shutting down its side; dropped");
            return Ok(());
        }
        if self.pending.len() + data.len() > self.slot.registration.max_pending() {
            return Err(self.over_limit("output"));
        }
        self.pending.extend_from_slice(data);
        // Published at each change, so a post to this connection sees its real backlog.
        self.slot
            .registration
            .pending(self.pending.len(), LOW_WATER);
        Ok(())
    }

    /// The connection's unsent output passed `--max-pending`: it ends now.
    pub(super) fn over_limit(&self, what: &str) -> LostReason {
        self.slot
            .registration
            .metrics()
            .bump(Counter::OutputLimitCloses, 1);
        tracing::debug!(peer = %self.peer, "unsent {what} above --max-pending ({} bytes); closed", self.slot.registration.max_pending());
        LostReason::Error
    }

    pub(super) fn panicked(&self, message: &str) -> LostReason {
        let panics = self.slot.registration.metrics().cell(Counter::PluginPanics);
        logging::plugin_panic(
            panics,
            self.slot.registration.service_name(),
            self.peer,
            "plugin panicked",
            message,
            "closing this connection",
        );
        LostReason::Error
    }

    /// Take a read callback's output and requests: write what the stream accepts now, keep
    /// the rest in `pending`.
    pub(super) fn absorb(
        &mut self,
        result: Delivered,
        out: &mut Output,
        cx: &mut Context<'_>,
    ) -> Result<(), LostReason> {
        let shutdown = match result {
            Delivered::Ran(requests) => requests.shutdown_write,
            Delivered::Ignored => return Ok(()),
            Delivered::Panicked(message) => return Err(self.panicked(&message)),
        };
        let mut data = out.written();
        if !data.is_empty() && self.write == WriteSide::Open && self.pending.is_empty() {
            while !data.is_empty() {
                match Pin::new(&mut self.stream).poll_write(cx, data) {
                    Poll::Ready(Ok(0)) => return Err(LostReason::PeerClosed),
                    Poll::Ready(Ok(n)) => {
                        self.slot.sent(n);
                        data = &data[n..];
                    }
                    Poll::Ready(Err(e)) => return Err(lost_on(e)),
                    Poll::Pending => break,
                }
            }
        }
        self.queue(data)?;
        self.take_requests(shutdown);
        Ok(())
    }

    pub(super) fn take_requests(&mut self, shutdown_write: bool) {
        if shutdown_write && self.write == WriteSide::Open {
            self.write = WriteSide::ShutdownRequested;
        }
    }

    /// Write pending bytes until the stream would block (its waker then registered).
    pub(super) fn send_pending(&mut self, cx: &mut Context<'_>) -> Result<(), LostReason> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut sent = 0;
        while sent < self.pending.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.pending[sent..]) {
                Poll::Ready(Ok(0)) => return Err(LostReason::PeerClosed),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => return Err(lost_on(e)),
                Poll::Pending => break,
            }
        }
        if sent > 0 {
            self.slot.registration.touch();
            self.slot.sent(sent);
        }
        if sent == self.pending.len() {
            // Give the memory back: an idle connection holds no buffer.
            self.pending = Vec::new();
        } else {
            self.pending.drain(..sent);
        }
        if sent > 0 {
            self.slot
                .registration
                .pending(self.pending.len(), LOW_WATER);
        }
        Ok(())
    }
}
