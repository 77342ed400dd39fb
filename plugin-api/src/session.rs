//! The consumer contract, written once: what happens around every consumer callback,
//! whoever drives it — the host's TCP driver, its UDP server, or the test harness.
//!
//! A [`Session`] owns one consumer and enforces, sans-IO:
//! - a callback's [`Output`] is handed back to the driver to send, unless the callback
//!   panicked (then it is discarded: half a reply is worse than none) or the sending side was
//!   already shut down (then the writes are dropped);
//! - the close and half-close requests a callback made ([`Requests`]);
//! - after the consumer asked to close, nothing more is delivered to it (later input is
//!   discarded, timers and wakes are ignored);
//! - a panic ends the session with [`LostReason::Error`];
//! - `connection_lost` runs exactly once — from [`Session::lose`], or from `Drop` (as
//!   [`LostReason::Shutdown`]) if the driver never said why.
//!
//! What it does not know about is I/O: sending, buffering, backpressure and timing are the
//! driver's.

use crate::host::ConsumerHandle;
use crate::{LostReason, Output};

/// Something to tell the consumer.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// The connection is open (`connection_made`).
    Made,
    /// Bytes (TCP: one read) or one datagram (UDP).
    Data(&'a [u8]),
    /// The peer ended its stream (TCP).
    Eof,
    /// A timer fired, with its token.
    Timer(u64),
    /// A wake handle was woken, with its token.
    Woken(u64),
}

/// What one callback asked of the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Close once everything written has been sent.
    pub close: bool,
    /// Shut down the sending side once everything written has been sent.
    pub shutdown_write: bool,
}

/// The outcome of [`Session::deliver`].
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The callback ran; send what is in the output, then act on the requests.
    Ran(Requests),
    /// Not delivered: the consumer already asked to close, or the session ended.
    Ignored,
    /// The callback panicked (the message). Its output was discarded and the session has
    /// ended with [`LostReason::Error`]: the driver closes the connection.
    Panicked(String),
}

/// One consumer and the contract around it.
pub struct Session {
    consumer: ConsumerHandle,
    /// The consumer asked to close.
    closing: bool,
    /// The consumer shut down its sending side: later writes are dropped.
    write_shut: bool,
    /// Set once `connection_lost` has run.
    lost: Option<LostReason>,
}

impl Session {
    /// A session around a freshly made consumer (`connection_made` not yet delivered).
    pub fn new(consumer: ConsumerHandle) -> Session {
        Session {
            consumer,
            closing: false,
            write_shut: false,
            lost: None,
        }
    }

    /// Run one callback with `out` (which the driver has emptied since the last one). On
    /// return `out` holds exactly what to send.
    pub fn deliver(&mut self, input: Input<'_>, out: &mut Output) -> Delivered {
        if self.lost.is_some() || self.closing {
            return Delivered::Ignored;
        }
        let c = &mut self.consumer;
        let result = match input {
            Input::Made => c.connection_made(out),
            Input::Data(data) => c.data_received(data, out),
            Input::Eof => c.eof_received(out),
            Input::Timer(token) => c.timer_fired(token, out),
            Input::Woken(token) => c.woken(token, out),
        };
        if let Err(message) = result {
            out.clear();
            // A second panic, in connection_lost, is the driver's to log only if it asks
            // again; the session has ended either way.
            let _ = self.lose(LostReason::Error);
            return Delivered::Panicked(message);
        }
        let requests = Requests {
            close: out.take_close_request(),
            // A datagram session has no half-close.
            shutdown_write: out.take_shutdown_request() && !out.is_datagram(),
        };
        if self.write_shut && !out.is_empty() {
            out.clear();
        }
        self.closing |= requests.close;
        self.write_shut |= requests.shutdown_write;
        Delivered::Ran(requests)
    }

    /// End the session: `connection_lost(reason)` unless it already ran (then `Ok`). `Err`
    /// carries a panic in `connection_lost` itself.
    pub fn lose(&mut self, reason: LostReason) -> Result<(), String> {
        if self.lost.is_some() {
            return Ok(());
        }
        self.lost = Some(reason);
        self.consumer.connection_lost(reason)
    }

    /// Close as if the consumer had called [`Output::close`] (a
    /// [`services::close`](crate::services::close) from elsewhere): nothing more is delivered.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Why it ended, once it has.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.lost
    }

    /// Whether the consumer asked to close.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether the consumer shut down its sending side.
    pub fn is_write_shut(&self) -> bool {
        self.write_shut
    }

    /// The consumer handle (the harness reads the consumer back through it).
    pub fn consumer(&self) -> &ConsumerHandle {
        &self.consumer
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.lose(LostReason::Shutdown);
    }
}
