//! What a connection holds in its worker while it is open.

use crate::access_log;
use crate::connections::Registration;
use crate::metrics::Counter;

/// What a connection holds in its worker: its entry in the connection set (cancel handle,
/// idle stamp) and its `--max-connections` permit, both released when it ends — and then
/// its access log record is written (with the access log on, accepted connections have a
/// tally keyed by their entry, from accept to here, so the connection itself does not
/// grow).
pub struct Slot {
    pub registration: Registration,
    pub _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Slot {
    /// Bytes read from the peer: counted for the worker and the connection.
    #[inline]
    pub(super) fn received(&self, n: usize) {
        self.registration.metrics().bump(Counter::BytesIn, n as u64);
        access_log::with_open(self.registration.log_key(), |t| t.count(n as u64, 0));
    }

    /// Bytes written to the peer: counted for the worker and the connection.
    #[inline]
    pub(super) fn sent(&self, n: usize) {
        self.registration
            .metrics()
            .bump(Counter::BytesOut, n as u64);
        access_log::with_open(self.registration.log_key(), |t| t.count(0, n as u64));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        access_log::closed(self.registration.log_key());
    }
}
