//! The set of a worker's open connections: each one's cancel handle and last-activity
//! stamp. It serves two purposes:
//! - a graceful stop waits for the set to empty and, when `--graceful-timeout` runs out,
//!   cancels what is left;
//! - the keep-alive sweeper ([`crate::keep_alive`]) cancels the connections idle too long.
//!
//! Cancelling a connection task drops its driver, whose `Drop` tells the consumer
//! `connection_lost` (with `IdleTimeout` when the sweeper did it, else `Shutdown`); so the
//! plugin hears about every connection exactly once.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Open connection tasks of one worker (single-threaded).
#[derive(Default)]
pub struct Connections {
    entries: RefCell<Entries>,
    /// The worker's counters (kept here so every connection can reach them).
    pub metrics: crate::metrics::WorkerMetrics,
    /// The coarse clock the keep-alive sweeper advances.
    epoch: Cell<u32>,
    emptied: Notify,
}

#[derive(Default)]
struct Entries {
    slots: Vec<Entry>,
    free: Vec<usize>,
    open: usize,
}

#[derive(Default)]
struct Entry {
    occupied: bool,
    handle: Option<AbortHandle>,
    last_active: u32,
    expired: bool,
}

impl Connections {
    /// Register a connection; its [`Registration`] frees the entry when dropped.
    pub fn register(self: &Rc<Self>) -> Registration {
        let mut e = self.entries.borrow_mut();
        let entry = Entry {
            occupied: true,
            handle: None,
            last_active: self.epoch.get(),
            expired: false,
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
        e.open += 1;
        Registration {
            set: self.clone(),
            key,
        }
    }

    /// Record the connection task's cancel handle.
    pub fn attach(&self, key: usize, handle: AbortHandle) {
        if let Some(e) = self.entries.borrow_mut().slots.get_mut(key) {
            if e.occupied {
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

    /// Advance the clock one tick and cancel the connections idle for more than `ticks`
    /// (a stamp may have been taken at the very end of its epoch, so `ticks` whole ticks
    /// are only guaranteed once the difference exceeds it);
    /// returns how many.
    pub fn advance_and_expire(&self, ticks: u32) -> usize {
        let now = self.epoch.get().wrapping_add(1);
        self.epoch.set(now);
        let mut expired = 0;
        for entry in self.entries.borrow_mut().slots.iter_mut() {
            if !entry.expired && now.wrapping_sub(entry.last_active) > ticks && entry.occupied {
                entry.expired = true;
                expired += 1;
                if let Some(h) = &entry.handle {
                    h.abort();
                }
            }
        }
        expired
    }
}

/// A connection's entry in [`Connections`], released when the connection ends.
pub struct Registration {
    set: Rc<Connections>,
    key: usize,
}

impl Registration {
    /// Its key in the set (for [`Connections::attach`]).
    pub fn key(&self) -> usize {
        self.key
    }

    /// Something happened on the connection: push its idle deadline back.
    #[inline]
    pub fn touch(&self) {
        let now = self.set.epoch.get();
        if let Some(e) = self.set.entries.borrow_mut().slots.get_mut(self.key) {
            e.last_active = now;
        }
    }

    /// The worker's counters.
    #[inline]
    pub fn metrics(&self) -> &crate::metrics::WorkerMetrics {
        &self.set.metrics
    }

    /// Whether the keep-alive sweeper cancelled it.
    pub fn expired(&self) -> bool {
        self.set
            .entries
            .borrow()
            .slots
            .get(self.key)
            .is_some_and(|e| e.expired)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut e = self.set.entries.borrow_mut();
        e.slots[self.key] = Entry::default();
        e.free.push(self.key);
        e.open -= 1;
        if e.open == 0 {
            self.set.emptied.notify_waiters();
        }
    }
}
