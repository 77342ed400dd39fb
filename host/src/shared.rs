//! What the accept loops, connection tasks and UDP servers of one service in a worker
//! share ([`Shared`]), and the worker-wide `--max-requests` count they feed
//! ([`Recycling`]).
//!
//! It sits apart from the worker (which builds it) and from `tcp`/`udp` (which use it), so
//! that each of them depends on it and none on the other.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use plugin_api::host::Factory;
use tokio::sync::{Notify, Semaphore};

use crate::connections::Connections;
use crate::metrics::{Counter, WorkerMetrics};

/// State shared by the accept loops and connection tasks of one service in this worker.
pub struct Shared {
    /// The service's index in the worker (metrics and [`plugin_api::ConnId`]s).
    pub service: usize,
    pub name: Arc<str>,
    pub factory: Factory,
    pub tls: Option<crate::tls::Tls>,
    pub proxy_protocol: bool,
    pub proxy_protocol_from: Vec<crate::cidr::Cidr>,
    pub handshake_timeout: Duration,
    pub connections: Rc<Connections>,
    /// This service's counters.
    pub metrics: Rc<WorkerMetrics>,
    /// `--max-connections` of this service.
    pub limit: Arc<Semaphore>,
    pub recycling: Rc<Recycling>,
}

impl Shared {
    /// Count one accepted connection; at `--max-requests` ask the worker to recycle.
    pub fn accepted(&self) {
        self.metrics.bump(Counter::Accepted, 1);
        self.recycling.accepted();
    }
}

/// `--max-requests`: connections accepted by the whole worker, all services together.
pub struct Recycling {
    max_requests: u64,
    accepted: Cell<u64>,
    recycle: Notify,
}

impl Recycling {
    /// Recycle after `base` connections plus a random 0..=`jitter` (`base` 0: never).
    pub fn new(base: u64, jitter: u64) -> Recycling {
        Recycling {
            max_requests: recycle_after(base, jitter),
            accepted: Cell::new(0),
            recycle: Notify::new(),
        }
    }

    fn accepted(&self) {
        self.accepted.set(self.accepted.get() + 1);
        if self.max_requests > 0 && self.accepted.get() == self.max_requests {
            self.recycle.notify_one();
        }
    }

    /// Connections accepted so far.
    pub fn count(&self) -> u64 {
        self.accepted.get()
    }

    /// Resolves once `--max-requests` connections have been accepted (never if off).
    pub async fn reached(&self) {
        self.recycle.notified().await
    }
}

/// This worker's `--max-requests`: `base` plus a random 0..=`jitter` (0 stays off).
fn recycle_after(base: u64, jitter: u64) -> u64 {
    if base == 0 {
        return 0;
    }
    if jitter == 0 {
        return base;
    }
    use std::hash::{BuildHasher, Hasher};
    // RandomState's keys are random per process (a forked worker's are its arbiter's, so
    // the pid and the time go in too).
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let n = base.saturating_add(h.finish() % jitter.saturating_add(1));
    tracing::info!(
        pid = std::process::id(),
        max_requests = n,
        "this worker recycles after {n} connections (--max-requests {base} + jitter)"
    );
    n
}
