//! A connection's entry in its service's [`Connections`]: how the connection task
//! touches its idle stamp, its send deadline and its endpoint, and frees the entry on drop.

use plugin_api::ConnId;
use std::rc::Rc;

use super::{join, Connections, Endpoint, Entry, Expiry, State};
use crate::metrics::WorkerMetrics;

/// A connection's entry in [`Connections`], released when the connection ends.
pub struct Registration {
    pub(super) set: Rc<Connections>,
    pub(super) key: usize,
}

impl Registration {
    /// Its key in the set (for [`Connections::attach`]).
    pub fn key(&self) -> usize {
        self.key
    }

    /// A key unique in the worker across its services, dense from 0 (the access log's
    /// table of open connections is indexed by it).
    pub fn log_key(&self) -> usize {
        self.key * (self.set.services.max(1) as usize) + self.set.service as usize
    }

    /// Its services identity ([`ConnId::NONE`] without services).
    pub fn id(&self) -> ConnId {
        let e = self.set.entries.borrow();
        match e.slots.get(self.key).and_then(|e| e.ext.as_ref()) {
            Some(ep) => join(self.set.service, self.key, ep.generation),
            None => ConnId::NONE,
        }
    }

    /// Something was read: push its idle deadline back.
    #[inline]
    pub fn touch(&self) {
        let now = self.set.epoch.get();
        if let Some(e) = self.set.entries.borrow_mut().slots.get_mut(self.key) {
            e.last_active = now;
            if let Some(ep) = e.ext.as_deref_mut() {
                ep.touched();
            }
        }
    }

    /// The connection holds `pending` unsent bytes after a write: start the send deadline
    /// when output starts waiting, and clear it once the peer has drained it below
    /// `low_water`.
    #[inline]
    pub fn pending(&self, pending: usize, low_water: usize) {
        let now = (self.set.epoch.get() as u16).max(1);
        if let Some(e) = self.set.entries.borrow_mut().slots.get_mut(self.key) {
            if pending <= low_water {
                e.pending_since = 0;
            } else if e.pending_since == 0 {
                e.pending_since = now;
            }
            if let Some(ep) = e.ext.as_deref_mut() {
                ep.pending = pending;
            }
        }
    }

    /// Its service's counters.
    #[inline]
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.set.metrics
    }

    /// Its service's `--max-pending`.
    #[inline]
    pub fn max_pending(&self) -> usize {
        self.set.max_pending.get()
    }

    /// Its service's index in the worker.
    #[inline]
    pub fn service(&self) -> usize {
        self.set.service as usize
    }

    /// Its service's name (for log lines).
    pub fn service_name(&self) -> &str {
        &self.set.name
    }

    /// Whether the sweeper cancelled it, and why.
    pub fn expired(&self) -> Option<Expiry> {
        match self.set.entries.borrow().slots.get(self.key)?.state {
            State::Expired(why) => Some(why),
            _ => None,
        }
    }

    /// Run `f` on this connection's endpoint, if it has one.
    #[inline]
    pub fn with_endpoint<R>(&self, f: impl FnOnce(&mut Endpoint) -> R) -> Option<R> {
        let mut e = self.set.entries.borrow_mut();
        e.slots.get_mut(self.key)?.ext.as_deref_mut().map(f)
    }

    /// Whether it has services state.
    #[inline]
    pub fn has_endpoint(&self) -> bool {
        self.set
            .entries
            .borrow()
            .slots
            .get(self.key)
            .is_some_and(|e| e.ext.is_some())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut e = self.set.entries.borrow_mut();
        // Only counted entries are swept, so an expired one was counted.
        let counted = matches!(e.slots[self.key].state, State::Counted | State::Expired(_));
        e.slots[self.key] = Entry::default();
        e.free.push(self.key);
        if counted {
            e.open -= 1;
            if e.open == 0 {
                self.set.emptied.notify_waiters();
            }
        }
    }
}
