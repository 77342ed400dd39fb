//! Plugin timers: one binary heap of deadlines per worker and one task that sleeps until the
//! earliest. Setting a timer is a heap push and a map insert; cancelling is a map removal (the
//! heap entry is skipped when it comes up, and the heap is compacted once cancelled entries
//! outnumber live ones, so set-and-cancel churn — a per-request timeout — cannot grow it). A fired timer only queues an event on its
//! connection (see [`super`]): the consumer's callback runs in that connection's task.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use plugin_api::services::TimerId;
use plugin_api::ConnId;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// A plugin timer, with its token.
    User(u64),
    /// The protocol's idle timeout check.
    Idle,
}

/// The worker's timers.
#[derive(Default)]
pub struct Timers {
    heap: RefCell<BinaryHeap<Reverse<(Instant, u64)>>>,
    live: RefCell<HashMap<u64, (ConnId, TimerKind)>>,
    next: Cell<u64>,
    /// Heap entries whose timer was cancelled.
    dead: Cell<usize>,
    /// Woken when a timer earlier than the one slept on is set.
    changed: Notify,
}

impl Timers {
    /// Set a timer `after` from now.
    pub fn set(&self, id: ConnId, after: Duration, kind: TimerKind) -> TimerId {
        let n = self.next.get() + 1;
        self.next.set(n);
        let deadline = Instant::now()
            .checked_add(after)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365 * 30));
        let earliest = self.heap.borrow().peek().map(|Reverse((d, _))| *d);
        self.heap.borrow_mut().push(Reverse((deadline, n)));
        self.live.borrow_mut().insert(n, (id, kind));
        let sooner = match earliest {
            None => true,
            Some(e) => deadline < e,
        };
        if sooner {
            self.changed.notify_one();
        }
        TimerId::from_raw(n)
    }

    /// Cancel a timer; `false` if it is not pending.
    pub fn cancel(&self, timer: TimerId) -> bool {
        let mut live = self.live.borrow_mut();
        if live.remove(&timer.to_raw()).is_none() {
            return false;
        }
        let dead = self.dead.get() + 1;
        if dead > 1024 && dead > live.len() {
            self.heap
                .borrow_mut()
                .retain(|Reverse((_, n))| live.contains_key(n));
            self.dead.set(0);
        } else {
            self.dead.set(dead);
        }
        true
    }

    /// Heap entries held, live or cancelled.
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.borrow().len()
    }

    /// How many timers are pending.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live.borrow().len()
    }

    /// Fire timers as they come due, forever.
    pub async fn run(&self, mut fire: impl FnMut(ConnId, TimerKind)) {
        loop {
            let next = self.next_deadline();
            let changed = self.changed.notified();
            match next {
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = changed => continue,
                    }
                }
                None => {
                    changed.await;
                    continue;
                }
            }
            for (id, kind) in self.take_due(Instant::now()) {
                fire(id, kind);
            }
        }
    }

    /// The earliest live deadline (dropping cancelled ones from the top).
    fn next_deadline(&self) -> Option<Instant> {
        let mut heap = self.heap.borrow_mut();
        let live = self.live.borrow();
        while let Some(Reverse((deadline, n))) = heap.peek() {
            if live.contains_key(n) {
                return Some(*deadline);
            }
            heap.pop();
            self.dead.set(self.dead.get().saturating_sub(1));
        }
        None
    }

    /// Remove and return the timers due at `now`, in deadline order.
    fn take_due(&self, now: Instant) -> Vec<(ConnId, TimerKind)> {
        let mut due = Vec::new();
        let mut heap = self.heap.borrow_mut();
        let mut live = self.live.borrow_mut();
        while let Some(Reverse((deadline, n))) = heap.peek().copied() {
            if deadline > now {
                break;
            }
            heap.pop();
            match live.remove(&n) {
                Some(t) => due.push(t),
                None => self.dead.set(self.dead.get().saturating_sub(1)),
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_cancel_churn_does_not_grow_the_heap() {
        let timers = Timers::default();
        let id = ConnId::from_raw(1);
        let keep = timers.set(id, Duration::from_secs(3600), TimerKind::User(0));
        for i in 0..100_000 {
            let t = timers.set(id, Duration::from_secs(3600), TimerKind::User(i));
            assert!(timers.cancel(t));
        }
        assert!(
            timers.heap_len() <= 2 * 1024 + 2,
            "heap holds {}",
            timers.heap_len()
        );
        assert_eq!(timers.len(), 1);
        assert!(timers.cancel(keep));
    }

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_deadline_order_and_cancelled_ones_do_not() {
        let timers = std::rc::Rc::new(Timers::default());
        let a = ConnId::from_raw(1);
        timers.set(a, Duration::from_secs(3), TimerKind::User(3));
        timers.set(a, Duration::from_secs(1), TimerKind::User(1));
        let cancelled = timers.set(a, Duration::from_secs(2), TimerKind::User(2));
        assert!(timers.cancel(cancelled));
        assert!(!timers.cancel(cancelled));
        let fired = std::rc::Rc::new(RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        let (t, f) = (timers.clone(), fired.clone());
        local.spawn_local(async move {
            t.run(|_, kind| f.borrow_mut().push(kind)).await;
        });
        local
            .run_until(tokio::time::sleep(Duration::from_secs(4)))
            .await;
        assert_eq!(
            *fired.borrow(),
            vec![TimerKind::User(1), TimerKind::User(3)]
        );
        assert_eq!(timers.len(), 0);
    }
}
