//! One worker: a single-threaded tokio event loop serving every listening socket of every
//! service (each with its own plugin factory, settings and connection set), until it is
//! told to stop.
//!
//! Whoever runs it — a forked process under the arbiter, or thread mode's one process —
//! supervises it over a [`Link`], on the same event loop: the worker emits
//! [`WorkerEvent`]s (serving, heartbeats, a reload asked for, stopping, draining) and takes
//! a [`Stop`] on its control channel. The worker knows nothing of either mode.
//!
//! Stopping (`TERM`/`INT`, `--max-requests` reached, or a graceful [`Stop`] sent): stop
//! accepting, let open connections finish for up to `--graceful-timeout`, then cancel the
//! rest (each consumer hears `connection_lost(Shutdown)`). `QUIT`: cancel everything at
//! once.
//!
//! The worker never `shutdown()`s a listening socket: in process mode it is shared with the
//! arbiter and the other workers. It only drops its own descriptor.

mod settings;
mod stop;
mod tasks;

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use plugin_api::host::Factory;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

pub use self::settings::{ServiceSettings, Settings};
use self::stop::{Signalled, Signals};
pub use self::stop::{Stop, StopReason};
use self::tasks::Tasks;
use crate::bind::Bound;
use crate::connections::Connections;
use crate::error::HostError;
use crate::metrics::{Counter, Counters, WorkerMetrics};
use crate::shared::{Recycling, Shared};

/// One service as a worker serves it: its sockets, its plugin's factory, its settings.
pub struct Service {
    pub name: String,
    pub listeners: Vec<Bound>,
    pub factory: Factory,
    pub settings: ServiceSettings,
}

/// What a worker tells whoever runs it, in this order over its life.
#[derive(Debug)]
pub enum WorkerEvent {
    /// The event loop serves and its signal handlers are in place: a signal sent from now
    /// on meets them (thread mode announces itself here).
    Serving,
    /// Twice a second from inside the event loop, and once more when stopped: proof of
    /// life, with each service's figures.
    Heartbeat(Vec<Counters>),
    /// `SIGHUP`: a reload is asked for (the worker itself does nothing about it).
    ReloadAsked,
    /// The worker begins to stop.
    Stopping(Stop),
    /// A stopping worker no longer accepts (from now on other workers take new
    /// connections).
    Draining,
}

/// The supervisor's end of a worker. `events` ends (yields `None`) once the worker has
/// stopped.
pub struct Link {
    pub events: UnboundedReceiver<WorkerEvent>,
    /// Tell the worker to stop (as a signal would).
    pub stop: UnboundedSender<Stop>,
}

/// The metrics endpoint served from the worker's own event loop (thread mode with
/// `--metrics-bind`; `/health`, and `/ready`: serving and not stopping).
pub struct MetricsEndpoint {
    pub listener: std::net::TcpListener,
    /// Each service's plugin name and version.
    pub plugins: Vec<crate::metrics::PluginId>,
}

/// A worker about to serve.
pub struct Worker {
    services: Vec<Service>,
    settings: Settings,
    metrics: Option<MetricsEndpoint>,
    /// Whether its TCP sockets close for good when it stops (thread mode: this process is
    /// their only holder, unless systemd holds them too or a reload's successor may have
    /// them), so that a stop first makes them refuse new connections and serves the queued
    /// ones ([`crate::tcp::refuse`]). Shared with the supervisor, which starts successors.
    last_holder: Rc<Cell<bool>>,
}

impl Worker {
    pub fn new(services: Vec<Service>, settings: Settings) -> Worker {
        Worker {
            services,
            settings,
            metrics: None,
            last_holder: Rc::new(Cell::new(false)),
        }
    }

    /// Whether this worker is the last holder of its TCP sockets (thread mode, sockets not
    /// systemd's): then a stop other than a reload's handover closes them for good. A
    /// reload asked for (`HUP`) clears it, as a successor may take the sockets from then
    /// on; the supervisor sets it again if that reload is aborted.
    pub fn last_holder_of_its_sockets(self, last_holder: Rc<Cell<bool>>) -> Worker {
        Worker {
            last_holder,
            ..self
        }
    }

    /// Also serve the metrics endpoint (thread mode).
    pub fn with_metrics(self, metrics: Option<MetricsEndpoint>) -> Worker {
        Worker { metrics, ..self }
    }

    /// Serve until stopped, with `supervise` reacting to the worker's events on the same
    /// event loop; returns once both are done (the supervisor should end when its events
    /// do). An `Err` from either ends both. Builds its own runtime: call it only in a
    /// process (or thread) that has no other tokio runtime.
    pub fn run<F, S>(self, supervise: S) -> Result<(), HostError>
    where
        S: FnOnce(Link) -> F,
        F: Future<Output = Result<(), HostError>>,
    {
        stop::keep_sigpipe_ignored()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HostError::io("starting the event loop", e))?;
        let (events, events_rx) = unbounded_channel();
        let (stop, control) = unbounded_channel();
        let link = Link {
            events: events_rx,
            stop,
        };
        let both = async move {
            tokio::try_join!(
                self.serve_services(Events(events), control),
                supervise(link)
            )
            .map(drop)
        };
        tokio::task::LocalSet::new().block_on(&runtime, both)
    }

    /// The worker's life: start every service, serve until a [`Stop`], drain.
    async fn serve_services(
        self,
        events: Events,
        mut control: UnboundedReceiver<Stop>,
    ) -> Result<(), HostError> {
        let recycling = Rc::new(Recycling::new(
            self.settings.max_requests,
            self.settings.max_requests_jitter,
        ));
        crate::access_log::install(self.settings.access_log.clone());
        // Until it stops: what `/ready` answers in thread mode.
        let ready = Rc::new(Cell::new(true));
        let (shareds, listeners) = share(self.services, &recycling);
        let hub = uses_services(&shareds).then(|| {
            let sets = shareds.iter().map(|s| s.connections.clone()).collect();
            let hub = crate::services::Hub::start(sets);
            plugin_api::host::install_backend(Some(hub.clone()));
            hub
        });
        let mut tasks = Tasks::listen(&shareds, listeners)?;
        if let Some(metrics) = self.metrics {
            tasks.serve_metrics(metrics, &shareds, ready.clone());
        }
        if hub.is_some() {
            for shared in &shareds {
                plugin_call("serving", shared, |f| f.serving());
            }
        }
        tasks.tick_plugins(&shareds);
        tasks.beat(&shareds, events.clone());

        let mut signals = Signals::install()?;
        events.emit(WorkerEvent::Serving);
        let stop = wait_for_stop(
            &mut signals,
            &recycling,
            &mut control,
            &events,
            &self.last_holder,
        )
        .await;
        ready.set(false);
        events.emit(WorkerEvent::Stopping(stop));
        let deadline = match stop {
            Stop::Graceful(_) => Some(tokio::time::Instant::now() + self.settings.graceful_timeout),
            Stop::Immediate => None,
        };
        let for_good = self.last_holder.get() && stop.closes_sockets_for_good();
        tasks.stop_accepting(deadline, for_good).await;
        events.emit(WorkerEvent::Draining);
        if hub.is_some() {
            // The plugins flush and close their outbound connections; they drain below.
            for shared in &shareds {
                plugin_call("stopping", shared, |f| f.stopping());
            }
        }
        // One graceful timeout for both: emptying a closing socket's queue, then draining.
        let left = deadline.map_or(self.settings.graceful_timeout, |d| {
            d.saturating_duration_since(tokio::time::Instant::now())
        });
        drain(&shareds, stop, left).await;
        tasks.end().await;
        if hub.is_some() {
            plugin_api::host::install_backend(None);
        }
        events.emit(WorkerEvent::Heartbeat(stats(&shareds)));
        tracing::info!(
            pid = std::process::id(),
            accepted = recycling.count(),
            "worker stopped"
        );
        Ok(())
    }
}

/// The worker's end of [`Link::events`].
#[derive(Clone)]
struct Events(UnboundedSender<WorkerEvent>);

impl Events {
    /// Best effort: a supervisor that has gone has nothing more to hear.
    fn emit(&self, event: WorkerEvent) {
        let _ = self.0.send(event);
    }
}

/// One service's sockets, with its settings.
type Sockets = (Vec<Bound>, ServiceSettings);

/// Each service's [`Shared`] state, and its sockets.
fn share(services: Vec<Service>, recycling: &Rc<Recycling>) -> (Vec<Rc<Shared>>, Vec<Sockets>) {
    let count = services.len();
    let mut shareds = Vec::new();
    let mut listeners = Vec::new();
    for (i, service) in services.into_iter().enumerate() {
        let s = service.settings;
        let metrics = Rc::new(WorkerMetrics::default());
        let max_pending = s.limits.max_pending;
        let connections =
            Connections::for_service(i, count, &service.name, max_pending, metrics.clone());
        shareds.push(Rc::new(Shared {
            service: i,
            name: service.name.into(),
            factory: service.factory,
            tls: s.tls.clone(),
            proxy_protocol: s.proxy_protocol,
            proxy_protocol_from: s.proxy_protocol_from.clone(),
            handshake_timeout: s.handshake_timeout,
            connections: Rc::new(connections),
            metrics,
            limit: Arc::new(Semaphore::new(s.max_connections)),
            recycling: recycling.clone(),
        }));
        listeners.push((service.listeners, s));
    }
    (shareds, listeners)
}

fn uses_services(shareds: &[Rc<Shared>]) -> bool {
    shareds.iter().any(|s| s.factory.uses_services())
}

/// Each service's counters now.
fn stats(shareds: &[Rc<Shared>]) -> Vec<Counters> {
    shareds
        .iter()
        .map(|s| s.metrics.snapshot(s.connections.len()))
        .collect()
}

/// Wait for a signal, `--max-requests` or the supervisor to stop the worker; pass a reload
/// asked for (`HUP`) on to the supervisor.
async fn wait_for_stop(
    signals: &mut Signals,
    recycling: &Recycling,
    control: &mut UnboundedReceiver<Stop>,
    events: &Events,
    last_holder: &Cell<bool>,
) -> Stop {
    loop {
        tokio::select! {
            signalled = signals.next() => match signalled {
                Signalled::Stop(stop) => return stop,
                Signalled::Hangup => {
                    // A successor may hold the sockets from now on (cleared here, before any
                    // stop that follows can read it).
                    last_holder.set(false);
                    events.emit(WorkerEvent::ReloadAsked);
                }
            },
            () = recycling.reached() => return Stop::Graceful(StopReason::MaxRequests),
            Some(stop) = control.recv() => return stop,
        }
    }
}

/// Let the open connections of every service finish (a graceful stop, for up to
/// `graceful_timeout`) or cancel them (at once, or when that runs out).
async fn drain(shareds: &[Rc<Shared>], stop: Stop, graceful_timeout: Duration) {
    let open = || shareds.iter().map(|s| s.connections.len()).sum::<usize>();
    let abort_all = || shareds.iter().for_each(|s| s.connections.abort_all());
    let wait_empty = || async {
        for s in shareds {
            s.connections.wait_empty().await;
        }
    };
    match stop {
        Stop::Immediate => {
            tracing::info!(pid = std::process::id(), open = open(), "stopping now");
            abort_all();
        }
        Stop::Graceful(why) => {
            tracing::info!(
                pid = std::process::id(),
                open = open(),
                "{why}: no longer accepting; waiting up to {graceful_timeout:?} for open connections",
            );
            if tokio::time::timeout(graceful_timeout, wait_empty())
                .await
                .is_err()
            {
                tracing::warn!(
                    open = open(),
                    "graceful timeout: closing the remaining connections"
                );
                abort_all();
            }
        }
    }
    wait_empty().await;
}

/// Call a protocol-level callback of one service's factory; log a panic (the protocol itself
/// lives on).
fn plugin_call(what: &str, shared: &Shared, call: impl FnOnce(&Factory) -> Result<(), String>) {
    crate::connections::enter(shared.service);
    if let Err(message) = call(&shared.factory) {
        let panics = shared.metrics.cell(Counter::PluginPanics);
        crate::logging::protocol_panic(panics, &shared.name, what, &message);
    }
}

#[cfg(test)]
mod tests;
