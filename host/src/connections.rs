//! The set of a worker's open connections, so that a graceful stop can wait for them to
//! finish and, when `--graceful-timeout` runs out, cancel the rest.
//!
//! Cancelling a connection task drops its driver, whose `Drop` tells the consumer
//! `connection_lost(Shutdown)`; so the plugin hears about every connection exactly once.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Open connection tasks of one worker (single-threaded).
#[derive(Default)]
pub struct Connections {
    slots: RefCell<Slots>,
    emptied: Notify,
}

#[derive(Default)]
struct Slots {
    handles: Vec<Option<AbortHandle>>,
    free: Vec<usize>,
    open: usize,
}

impl Connections {
    /// Register a task about to be spawned; its [`Registration`] frees the slot when dropped.
    pub fn register(self: &Rc<Self>) -> Registration {
        let mut s = self.slots.borrow_mut();
        let key = match s.free.pop() {
            Some(k) => k,
            None => {
                s.handles.push(None);
                s.handles.len() - 1
            }
        };
        s.open += 1;
        Registration {
            set: self.clone(),
            key,
        }
    }

    /// Record the spawned task's abort handle.
    pub fn attach(&self, key: usize, handle: AbortHandle) {
        if let Some(slot) = self.slots.borrow_mut().handles.get_mut(key) {
            *slot = Some(handle);
        }
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.slots.borrow().open
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
        for handle in self.slots.borrow().handles.iter().flatten() {
            handle.abort();
        }
    }
}

/// A connection's place in [`Connections`], released when the task ends or is cancelled.
pub struct Registration {
    set: Rc<Connections>,
    pub key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut s = self.set.slots.borrow_mut();
        s.handles[self.key] = None;
        s.free.push(self.key);
        s.open -= 1;
        if s.open == 0 {
            self.set.emptied.notify_waiters();
        }
    }
}
