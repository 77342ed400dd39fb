//! Host services for plugins ([`plugin_api::services`]): one [`Hub`] per worker serves the
//! plugin's calls — posts, closes, timers, pause/resume, idle timeouts, wake handles and
//! outbound connections.
//!
//! The rule that keeps it simple: **nothing a service call raises runs inside the calling
//! callback.** A call only queues work on the target connection's [`Endpoint`] (in the
//! worker's connection set) and wakes the task that drives it; that task runs the consumer's
//! callbacks when it is next polled — in the same pass of the event loop. So no consumer is
//! ever re-entered and no borrow is held across a plugin call.
//!
//! - [`timers`]: one heap of deadlines per worker, one task sleeping until the earliest.
//! - wake handles: a channel from any thread into the worker, drained by one task.
//! - [`outbound`]: resolve (off the loop), connect with a deadline, then the same driver as an
//!   accepted connection.

pub mod outbound;
pub mod timers;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use plugin_api::host::{Backend, ConsumerHandle, Wake};
use plugin_api::services::{ConnectError, PostStatus, TimerId, Waker};
use plugin_api::ConnId;
use tokio::sync::mpsc;

use crate::connections::endpoint::{Endpoint, Event};
use crate::connections::Connections;
use crate::tcp::connection::HIGH_WATER;
use timers::{TimerKind, Timers};

/// One worker's services, over the connection sets of all its services (a [`ConnId`] says
/// which set it is in).
pub struct Hub {
    sets: Vec<Rc<Connections>>,
    timers: Rc<Timers>,
    wake_tx: mpsc::UnboundedSender<(ConnId, u64)>,
}

impl Hub {
    /// The hub of a worker, with its background tasks (timers, wakes) spawned on the current
    /// `LocalSet`; they end when the worker's runtime does.
    pub fn start(sets: Vec<Rc<Connections>>) -> Rc<Hub> {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<(ConnId, u64)>();
        let hub = Rc::new(Hub {
            sets,
            timers: Rc::new(Timers::default()),
            wake_tx,
        });
        let h = hub.clone();
        tokio::task::spawn_local(async move {
            while let Some((id, token)) = wake_rx.recv().await {
                h.with_endpoint(id, |ep| ep.event(Event::Woken(token), id));
            }
        });
        let h = hub.clone();
        tokio::task::spawn_local(async move {
            h.timers.run(|id, kind| fire(&h, &h.timers, id, kind)).await
        });
        hub
    }

    /// The connection set of the service whose plugin code runs now.
    pub fn connections(&self) -> &Rc<Connections> {
        let current = crate::connections::current_service();
        self.sets.get(current).unwrap_or(&self.sets[0])
    }

    /// Run `f` on the endpoint of connection `id`, in whichever service's set it is.
    fn with_endpoint<R>(&self, id: ConnId, f: impl FnOnce(&mut Endpoint) -> R) -> Option<R> {
        self.sets
            .get(Connections::service_of(id))?
            .with_endpoint(id, f)
    }
}

/// A timer came due.
fn fire(hub: &Hub, timers: &Timers, id: ConnId, kind: TimerKind) {
    hub.with_endpoint(id, |ep| match kind {
        TimerKind::User(token) => ep.event(Event::Timer(token), id),
        TimerKind::Idle => {
            let Some(Some(timeout)) = ep.idle_timeout else {
                return;
            };
            let idle = ep.last_read.elapsed();
            if idle >= timeout {
                ep.event(Event::IdleTimeout, id);
            } else {
                timers.set(id, timeout - idle, TimerKind::Idle);
            }
        }
    });
}

impl Backend for Hub {
    fn post(&self, to: ConnId, data: &[u8]) -> PostStatus {
        let Some(set) = self.sets.get(Connections::service_of(to)) else {
            return PostStatus::Gone;
        };
        let max = set.max_pending();
        set.with_endpoint(to, |ep| {
            if ep.closing {
                return PostStatus::Gone;
            }
            let queued = ep.pending + ep.posted_len() + data.len();
            if queued > max {
                ep.closing = true;
                ep.event(Event::Overflow, to);
                return PostStatus::Overflow;
            }
            ep.post(data, to);
            if queued > HIGH_WATER {
                PostStatus::Backlogged
            } else {
                PostStatus::Queued
            }
        })
        .unwrap_or(PostStatus::Gone)
    }

    fn close(&self, id: ConnId) {
        self.with_endpoint(id, |ep| {
            if !ep.closing {
                ep.closing = true;
                ep.event(Event::Close, id);
            }
        });
    }

    fn shutdown_write(&self, id: ConnId) {
        self.with_endpoint(id, |ep| {
            if !ep.closing {
                ep.event(Event::ShutdownWrite, id);
            }
        });
    }

    fn set_timer(&self, id: ConnId, after: Duration, token: u64) -> Option<TimerId> {
        self.with_endpoint(id, |_| ())?;
        Some(self.timers.set(id, after, TimerKind::User(token)))
    }

    fn cancel_timer(&self, timer: TimerId) -> bool {
        self.timers.cancel(timer)
    }

    fn pause_reading(&self, id: ConnId, paused: bool) {
        self.with_endpoint(id, |ep| {
            if ep.paused != paused {
                ep.paused = paused;
                if !paused {
                    ep.wake(id);
                }
            }
        });
    }

    fn set_idle_timeout(&self, id: ConnId, timeout: Option<Duration>) {
        let arm = self.with_endpoint(id, |ep| {
            let first = ep.idle_timeout.is_none();
            ep.idle_timeout = Some(timeout);
            ep.last_read = tokio::time::Instant::now();
            // One idle timer per connection at a time: it re-arms itself from the last read.
            (first || timeout.is_some()).then_some(timeout).flatten()
        });
        if let Some(Some(timeout)) = arm {
            self.timers.set(id, timeout, TimerKind::Idle);
        }
    }

    fn waker(&self, id: ConnId, token: u64) -> Option<Waker> {
        let alive = self.with_endpoint(id, |ep| ep.alive())?;
        Some(Waker::new(Arc::new(WakeTarget {
            tx: self.wake_tx.clone(),
            alive,
            id,
            token,
        })))
    }

    fn connect(
        &self,
        target: &str,
        timeout: Duration,
        consumer: ConsumerHandle,
    ) -> Result<ConnId, ConnectError> {
        outbound::start(self, target, timeout, consumer)
    }
}

/// What a wake handle sends: the worker's channel, the connection and the token.
struct WakeTarget {
    tx: mpsc::UnboundedSender<(ConnId, u64)>,
    /// Cleared when the connection ends.
    alive: Arc<std::sync::atomic::AtomicBool>,
    id: ConnId,
    token: u64,
}

impl Wake for WakeTarget {
    fn wake(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::Acquire)
            && self.tx.send((self.id, self.token)).is_ok()
    }
}
