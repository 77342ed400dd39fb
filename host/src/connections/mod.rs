//! The set of a worker's open connections: each one's cancel handle, last-activity stamp and,
//! for plugins that use host services, its [`Endpoint`] (what other consumers, timers and
//! threads have queued for it). It serves three purposes:
//! - a graceful stop waits for the set to empty and, when `--graceful-timeout` runs out,
//!   cancels what is left;
//! - the sweeper ([`crate::keep_alive`]) cancels the connections idle too long, and those
//!   that hold unsent output for longer than `--send-timeout`;
//! - the services hub ([`crate::services`]) finds a connection by its [`ConnId`] — the
//!   entry's key and generation — to queue posts and events on it and wake its task.
//!
//! Cancelling a connection task drops its driver, whose `Drop` tells the consumer
//! `connection_lost` (with `IdleTimeout` when the sweeper did it, else `Shutdown`); so the
//! plugin hears about every connection exactly once.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use plugin_api::ConnId;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::metrics::WorkerMetrics;
pub use endpoint::Endpoint;
pub use registration::Registration;

pub mod endpoint;
mod registration;

thread_local! {
    /// The service whose plugin code runs now (set by the drivers before they call a
    /// consumer or factory): the services hub puts an outbound connection a plugin opens
    /// in that service's set.
    static CURRENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Plugin code of service `service` is about to run on this thread.
#[inline]
pub fn enter(service: usize) {
    CURRENT.set(service);
}

/// The service whose plugin code runs now (0 before any [`enter`]).
#[inline]
pub fn current_service() -> usize {
    CURRENT.get()
}

/// Open connection tasks of one service in one worker (single-threaded). A worker has one
/// set per service: each with its own output bounds (and sweeper, see
/// [`crate::keep_alive`]); the services hub finds a connection of any of them by its
/// [`ConnId`], which carries the set's index.
#[derive(Default)]
pub struct Connections {
    entries: RefCell<Entries>,
    /// A handle on the service's counters (the service owns them, beside this set): a
    /// connection task reaches them through its [`Registration`], so the connection future
    /// does not grow by a pointer.
    metrics: Rc<WorkerMetrics>,
    /// The service's index in the worker (part of every [`ConnId`] of this set).
    service: u32,
    /// How many services the worker serves (for [`Registration::log_key`]).
    services: u32,
    /// `--max-pending` of this service.
    max_pending: Cell<usize>,
    /// The service's name, for log lines.
    name: std::rc::Rc<str>,
    /// The coarse clock the sweeper advances.
    epoch: Cell<u32>,
    /// Generations for [`ConnId`]s: never reused within the worker.
    generation: Cell<u32>,
    emptied: Notify,
}

#[derive(Default)]
struct Entries {
    slots: Vec<Entry>,
    free: Vec<usize>,
    /// Entries counted as open connections (UDP sessions are not).
    open: usize,
}

/// One connection's entry: 24 bytes (a test holds it there — every connection pays it).
#[derive(Default)]
struct Entry {
    state: State,
    /// The epoch (low 16 bits) since which unsent output has waited (0: none waiting);
    /// send timeouts are capped at [`MAX_SEND_TICKS`] so it cannot wrap unseen.
    pending_since: u16,
    last_active: u32,
    handle: Option<AbortHandle>,
    /// Services state, for plugins that use services.
    ext: Option<Box<Endpoint>>,
}

/// The most ticks a send timeout may span (see [`Entry::pending_since`]).
pub const MAX_SEND_TICKS: u32 = 60_000;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Free,
    /// Open and counted in `open` (a TCP connection, inbound or outbound).
    Counted,
    /// Open, not counted (a UDP session; never swept).
    Uncounted,
    /// Cancelled by the sweeper.
    Expired(Expiry),
}

/// What the sweeper closed in one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Idle for the keep-alive period.
    pub idle: usize,
    /// Unsent output held past `--send-timeout`.
    pub stalled: usize,
}

/// A [`ConnId`]'s entry key stays below this: the bits above it hold the service index
/// (no worker holds 16 M connections of one service: that many descriptors cannot open).
const KEY_BITS: u32 = 24;

impl Connections {
    /// The set of service `service` (its index in the worker, below 256), whose
    /// connections may hold `max_pending` unsent bytes and count in `metrics`.
    pub fn for_service(
        service: usize,
        services: usize,
        name: &str,
        max_pending: usize,
        metrics: Rc<WorkerMetrics>,
    ) -> Connections {
        Connections {
            metrics,
            service: u32::try_from(service).expect("few services") & 0xff,
            services: u32::try_from(services).expect("few services"),
            max_pending: Cell::new(max_pending),
            name: name.into(),
            ..Connections::default()
        }
    }

    /// The service index a [`ConnId`] belongs to.
    pub fn service_of(id: ConnId) -> usize {
        ((id.to_raw() & 0xffff_ffff) >> KEY_BITS) as usize
    }

    /// `--max-pending` of this service.
    pub fn max_pending(&self) -> usize {
        self.max_pending.get()
    }

    /// Register a connection; its [`Registration`] frees the entry when dropped.
    pub fn register(self: &Rc<Self>) -> Registration {
        self.register_with(None, true)
    }

    /// Register a connection (or, `counted == false`, a UDP session) with services state.
    pub fn register_with(
        self: &Rc<Self>,
        endpoint: Option<Box<Endpoint>>,
        counted: bool,
    ) -> Registration {
        let mut e = self.entries.borrow_mut();
        let entry = Entry {
            state: if counted {
                State::Counted
            } else {
                State::Uncounted
            },
            last_active: self.epoch.get(),
            ext: endpoint.map(|mut ep| {
                let g = self.generation.get().wrapping_add(1).max(1);
                self.generation.set(g);
                ep.generation = g;
                ep
            }),
            ..Entry::default()
        };
        let key = match e.free.pop() {
            Some(k) => {
                e.slots[k] = entry;
                k
            }
            None => {
                e.slots.push(entry);
                e.slots.len() - 1
            }
        };
        if counted {
            e.open += 1;
        }
        Registration {
            set: self.clone(),
            key,
        }
    }

    /// Record the connection task's cancel handle.
    pub fn attach(&self, key: usize, handle: AbortHandle) {
        if let Some(e) = self.entries.borrow_mut().slots.get_mut(key) {
            if e.state != State::Free {
                e.handle = Some(handle);
            }
        }
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.entries.borrow().open
    }

    /// Resolves when no connection is open.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Cancel every open connection task.
    pub fn abort_all(&self) {
        for handle in self
            .entries
            .borrow()
            .slots
            .iter()
            .filter_map(|e| e.handle.as_ref())
        {
            handle.abort();
        }
    }

    /// Advance the clock one tick; cancel the connections idle for more than `idle_ticks`
    /// (unless their protocol set its own idle timeout) and those whose unsent output has
    /// waited more than `send_ticks` (a stamp may have been taken at the very end of its
    /// epoch, so whole ticks are only guaranteed once the difference exceeds them).
    pub fn advance_and_expire(&self, idle_ticks: Option<u32>, send_ticks: Option<u32>) -> Swept {
        let now = self.epoch.get().wrapping_add(1);
        self.epoch.set(now);
        let mut swept = Swept::default();
        let send_ticks = send_ticks.map(|t| t.min(MAX_SEND_TICKS) as u16);
        for entry in self.entries.borrow_mut().slots.iter_mut() {
            // UDP sessions (uncounted) expire in their server.
            if entry.state != State::Counted {
                continue;
            }
            let own_idle = entry.ext.as_ref().is_some_and(|ep| ep.owns_idle_timeout());
            let idle =
                !own_idle && idle_ticks.is_some_and(|t| now.wrapping_sub(entry.last_active) > t);
            let stalled = entry.pending_since != 0
                && send_ticks.is_some_and(|t| (now as u16).wrapping_sub(entry.pending_since) > t);
            if idle || stalled {
                let why = if idle {
                    swept.idle += 1;
                    Expiry::Idle
                } else {
                    swept.stalled += 1;
                    Expiry::SendTimeout
                };
                entry.state = State::Expired(why);
                if let Some(h) = &entry.handle {
                    h.abort();
                }
            }
        }
        swept
    }

    /// Run `f` on the endpoint of connection `id`, if it is still there.
    pub fn with_endpoint<R>(&self, id: ConnId, f: impl FnOnce(&mut Endpoint) -> R) -> Option<R> {
        if Connections::service_of(id) != self.service as usize {
            return None;
        }
        let (key, generation) = split(id);
        let mut e = self.entries.borrow_mut();
        let entry = e.slots.get_mut(key)?;
        match entry.ext.as_deref_mut() {
            Some(ep) if entry.state != State::Free && ep.generation == generation => Some(f(ep)),
            _ => None,
        }
    }
}

fn split(id: ConnId) -> (usize, u32) {
    let raw = id.to_raw();
    ((raw & ((1 << KEY_BITS) - 1)) as usize, (raw >> 32) as u32)
}

fn join(service: u32, key: usize, generation: u32) -> ConnId {
    debug_assert!(key < 1 << KEY_BITS);
    ConnId::from_raw((u64::from(generation) << 32) | u64::from(service) << KEY_BITS | key as u64)
}

/// Why the sweeper cancelled a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing read for the idle timeout.
    Idle,
    /// Unsent output waited past `--send-timeout`.
    SendTimeout,
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_carry_their_service() {
        let set = std::rc::Rc::new(super::Connections::for_service(
            3,
            4,
            "a",
            1024,
            Default::default(),
        ));
        let r = set.register_with(Some(super::Endpoint::stream(false)), true);
        let id = r.id();
        assert_eq!(super::Connections::service_of(id), 3);
        assert!(set.with_endpoint(id, |_| ()).is_some());
        let other = super::Connections::for_service(2, 4, "b", 1024, Default::default());
        assert!(other.with_endpoint(id, |_| ()).is_none());
    }

    #[test]
    fn an_entry_is_24_bytes() {
        // Every connection pays for its entry (and for the vector's spare capacity).
        assert_eq!(std::mem::size_of::<super::Entry>(), 24);
    }
}
