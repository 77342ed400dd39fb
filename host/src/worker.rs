//! One worker: a single-threaded tokio event loop serving every listening socket of every
//! service (each with its own plugin factory, settings and connection set), until it is
//! told to stop.
//!
//! Stopping (`TERM`/`INT`, or `--max-requests` reached): stop accepting, let open
//! connections finish for up to `--graceful-timeout`, then cancel the rest (each consumer
//! hears `connection_lost(Shutdown)`). `QUIT`: cancel everything at once.
//!
//! The worker never `shutdown()`s a listening socket: in process mode it is shared with the
//! arbiter and the other workers. It only drops its own descriptor.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use plugin_api::host::Factory;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::bind::{Bound, Transport};
use crate::connections::Connections;
use crate::error::HostError;
use crate::metrics::Counters;

#[cfg_attr(unix, path = "worker/signals_unix.rs")]
#[cfg_attr(windows, path = "worker/signals_windows.rs")]
mod signals;

/// What a worker needs to know from the process-wide configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub graceful_timeout: Duration,
    /// 0 = never recycle.
    pub max_requests: u64,
    /// Each worker adds a random 0..=N to `max_requests`.
    pub max_requests_jitter: u64,
    /// `--access-log`, opened (one log for every service; records name their service).
    pub access_log: Option<crate::access_log::Sink>,
}

/// One service as a worker serves it: its sockets, its plugin's factory, its settings.
pub struct Service {
    pub name: String,
    pub listeners: Vec<Bound>,
    pub factory: Factory,
    pub settings: ServiceSettings,
}

/// What a worker needs to know of one service's configuration.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    pub keep_alive: Option<Duration>,
    /// Output bounds of every connection.
    pub limits: crate::tcp::connection::Limits,
    pub max_connections: usize,
    /// Terminate TLS on every stream listener.
    pub tls: Option<crate::tls::Tls>,
    /// UDP peer sessions per socket before the least recently used is evicted.
    pub max_sessions: usize,
    /// TCP connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The sources PROXY headers are accepted from (`--proxy-protocol-from`); empty = any.
    pub proxy_protocol_from: Vec<crate::cidr::Cidr>,
    /// Deadline for the PROXY header and the TLS handshake.
    pub handshake_timeout: Duration,
}

/// Hooks through which a supervising arbiter watches the worker (process mode).
#[derive(Default)]
pub struct Hooks {
    /// Called from inside the event loop twice a second: proof of life, with each
    /// service's figures.
    pub heartbeat: Option<Heartbeat>,
    /// Thread mode with `--metrics-bind`: serve the metrics endpoint (and `/health`,
    /// `/ready`: serving and not stopping) from this event loop, with each service's plugin
    /// name and version.
    pub metrics: Option<(std::net::TcpListener, Vec<(String, String)>)>,
    /// Called when the worker starts a graceful stop on its own (`--max-requests`).
    pub retiring: Option<Box<dyn FnOnce()>>,
    /// Called once a stopping worker has stopped accepting.
    pub draining: Option<Box<dyn FnOnce()>>,
    /// Called when the worker begins to stop; `true` if it is handing over to a successor
    /// (thread-mode reload), so the service as a whole is not stopping.
    pub stopping: Option<Box<dyn FnOnce(bool)>>,
    /// On SIGHUP (thread mode): start a successor and resolve with its pid once it serves;
    /// then this worker drains. `Err` aborts the reload and this worker keeps serving.
    pub reload: Option<Box<dyn FnMut() -> Successor>>,
    /// Called once the event loop serves and its signal handlers are in place (thread mode
    /// announces itself here: a TERM or HUP sent on `READY=1` must not meet the signal's
    /// default action). `Err` stops the worker before it serves.
    pub serving: Option<Box<dyn FnOnce() -> Result<(), HostError>>>,
}

/// The heartbeat hook: called with each service's counters.
pub type Heartbeat = Box<dyn FnMut(&[Counters])>;

/// A successor starting up, as returned by [`Hooks::reload`].
pub type Successor = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, String>>>>;

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
    /// `--max-connections` of this service.
    pub limit: Arc<Semaphore>,
    recycling: Rc<Recycling>,
}

/// `--max-requests`: connections accepted by the whole worker, all services together.
struct Recycling {
    max_requests: u64,
    accepted: std::cell::Cell<u64>,
    recycle: Notify,
}

impl Shared {
    /// Count one accepted connection; at `--max-requests` ask the worker to recycle.
    pub fn accepted(&self) {
        crate::metrics::bump(&self.connections.metrics.accepted, 1);
        let r = &self.recycling;
        r.accepted.set(r.accepted.get() + 1);
        if r.max_requests > 0 && r.accepted.get() == r.max_requests {
            r.recycle.notify_one();
        }
    }
}

const RECYCLE: &str = "--max-requests reached";

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
const RELOADED: &str = "reloaded";

/// What a signal (Unix) or console event (Windows) asks of the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopSignal {
    /// Stop accepting and drain; the signal's name for the log.
    Graceful(&'static str),
    /// Cancel everything at once (QUIT).
    Immediate,
    /// Start a successor (HUP, thread mode); the signal's name for the log.
    Reload(&'static str),
    /// Reopen the access log (USR1).
    ReopenLogs,
}

/// How the worker was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Graceful(&'static str),
    Immediate,
}

/// Serve `services` until stopped. Builds its own runtime: call it only in a process (or
/// thread) that has no other tokio runtime.
pub fn run(services: Vec<Service>, settings: Settings, hooks: Hooks) -> Result<(), HostError> {
    signals::keep_sigpipe_ignored()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HostError::io("starting the event loop", e))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(services, settings, hooks))
}

async fn serve(
    services: Vec<Service>,
    settings: Settings,
    mut hooks: Hooks,
) -> Result<(), HostError> {
    let recycling = Rc::new(Recycling {
        max_requests: recycle_after(settings.max_requests, settings.max_requests_jitter),
        accepted: std::cell::Cell::new(0),
        recycle: Notify::new(),
    });
    crate::access_log::install(settings.access_log.clone());
    // Until it stops: what `/ready` answers in thread mode.
    let ready = Rc::new(std::cell::Cell::new(true));
    let mut shareds: Vec<Rc<Shared>> = Vec::new();
    let mut listeners = Vec::new();
    let count = services.len();
    for (i, service) in services.into_iter().enumerate() {
        let s = service.settings;
        let connections = Connections::for_service(i, count, &service.name, s.limits.max_pending);
        shareds.push(Rc::new(Shared {
            service: i,
            name: service.name.into(),
            factory: service.factory,
            tls: s.tls.clone(),
            proxy_protocol: s.proxy_protocol,
            proxy_protocol_from: s.proxy_protocol_from.clone(),
            handshake_timeout: s.handshake_timeout,
            connections: Rc::new(connections),
            limit: Arc::new(Semaphore::new(s.max_connections)),
            recycling: recycling.clone(),
        }));
        listeners.push((service.listeners, s));
    }
    let uses_services = shareds.iter().any(|s| s.factory.uses_services());
    let hub = uses_services.then(|| {
        let sets = shareds.iter().map(|s| s.connections.clone()).collect();
        let hub = crate::services::Hub::start(sets);
        plugin_api::host::install_backend(Some(hub.clone()));
        hub
    });

    let mut accept_tasks = Vec::new();
    let mut udp_tasks = Vec::new();
    let mut sweepers = Vec::new();
    for (shared, (bounds, s)) in shareds.iter().zip(listeners) {
        for bound in bounds {
            match bound.transport {
                Transport::Tcp => {
                    let std_listener: std::net::TcpListener = bound.socket.into();
                    let listener = TcpListener::from_std(std_listener)
                        .map_err(|e| HostError::io("registering a listening socket", e))?;
                    accept_tasks.push(tokio::task::spawn_local(crate::tcp::accept::accept_loop(
                        crate::tcp::accept::Tcp::new(listener),
                        shared.clone(),
                    )));
                }
                Transport::Unix => {
                    let listener = crate::tcp::accept::Unix::from_socket(bound.socket)
                        .map_err(|e| HostError::io("registering a listening socket", e))?;
                    accept_tasks.push(tokio::task::spawn_local(crate::tcp::accept::accept_loop(
                        listener,
                        shared.clone(),
                    )));
                }
                Transport::Udp => {
                    let std_socket: std::net::UdpSocket = bound.socket.into();
                    let socket = tokio::net::UdpSocket::from_std(std_socket)
                        .map_err(|e| HostError::io("registering a UDP socket", e))?;
                    let server = crate::udp::UdpServer::new(
                        shared.clone(),
                        socket,
                        s.max_sessions,
                        s.keep_alive,
                    )
                    .map_err(|e| HostError::io("registering a UDP socket", e))?;
                    udp_tasks.push(tokio::task::spawn_local(server.serve()));
                }
            }
        }
        if let Some(ka) =
            crate::keep_alive::KeepAlive::with_send_timeout(s.keep_alive, s.limits.send_timeout)
        {
            sweepers.push(tokio::task::spawn_local(
                ka.sweep(shared.connections.clone()),
            ));
        }
    }

    let stats = |shareds: &[Rc<Shared>]| -> Vec<Counters> {
        shareds
            .iter()
            .map(|s| s.connections.metrics.snapshot(s.connections.len()))
            .collect()
    };
    let metrics_task = hooks.metrics.take().map(|(listener, plugins)| {
        let shareds = shareds.clone();
        let body: Rc<dyn Fn() -> String> = Rc::new(move || {
            let supervision = crate::metrics::Supervision {
                workers: 1,
                plugins: plugins.clone(),
                ..Default::default()
            };
            let names: Vec<&str> = shareds.iter().map(|s| &*s.name).collect();
            crate::metrics::render(&names, &stats(&shareds), &supervision)
        });
        let ready = ready.clone();
        let listener = TcpListener::from_std(listener).expect("a non-blocking listener");
        tokio::task::spawn_local(crate::metrics::serve_async(
            listener,
            body,
            Rc::new(move || ready.get()),
        ))
    });
    let beat = hooks
        .heartbeat
        .take()
        .map(|b| Rc::new(std::cell::RefCell::new(b)));
    if hub.is_some() {
        for shared in &shareds {
            plugin_call("serving", shared, |f| f.serving());
        }
    }
    let mut tickers = Vec::new();
    for shared in &shareds {
        let Some(period) = shared.factory.tick_interval() else {
            continue;
        };
        let shared = shared.clone();
        tickers.push(tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                plugin_call("tick", &shared, |f| f.tick());
            }
        }));
    }
    let heartbeat = beat.clone().map(|beat| {
        let shareds = shareds.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                (beat.borrow_mut())(&stats(&shareds));
            }
        })
    });

    let stop = wait_for_stop(&recycling, &mut hooks).await?;
    ready.set(false);
    if let Some(stopping) = hooks.stopping.take() {
        stopping(stop == Stop::Graceful(RELOADED));
    }
    if let (Stop::Graceful(RECYCLE), Some(retiring)) = (stop, hooks.retiring.take()) {
        retiring();
    }
    for task in accept_tasks {
        task.abort();
        // Wait for the cancellation, so the listener is dropped before we say so.
        let _ = task.await;
    }
    // UDP has no connections to finish: its sessions end now (`connection_lost(Shutdown)`).
    for task in udp_tasks {
        task.abort();
        let _ = task.await;
    }
    if let Some(draining) = hooks.draining.take() {
        draining();
    }
    if hub.is_some() {
        // The plugins flush and close their outbound connections; they drain below.
        for shared in &shareds {
            plugin_call("stopping", shared, |f| f.stopping());
        }
    }
    let open = || shareds.iter().map(|s| s.connections.len()).sum::<usize>();
    let abort_all = || shareds.iter().for_each(|s| s.connections.abort_all());
    let wait_empty = || async {
        for s in &shareds {
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
                "{why}: no longer accepting; waiting up to {:?} for open connections",
                settings.graceful_timeout
            );
            if tokio::time::timeout(settings.graceful_timeout, wait_empty())
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
    for task in [heartbeat, metrics_task]
        .into_iter()
        .flatten()
        .chain(sweepers)
        .chain(tickers)
    {
        task.abort();
    }
    if hub.is_some() {
        plugin_api::host::install_backend(None);
    }
    if let Some(beat) = beat {
        (beat.borrow_mut())(&stats(&shareds));
    }
    tracing::info!(
        pid = std::process::id(),
        accepted = recycling.accepted.get(),
        "worker stopped"
    );
    Ok(())
}

/// Call a protocol-level callback of one service's factory; log a panic (the protocol itself
/// lives on).
fn plugin_call(what: &str, shared: &Shared, call: impl FnOnce(&Factory) -> Result<(), String>) {
    crate::services::enter(shared.service);
    if let Err(message) = call(&shared.factory) {
        let panics = &shared.connections.metrics.plugin_panics;
        crate::logging::protocol_panic(panics, &shared.name, what, &message);
    }
}

async fn wait_for_stop(recycling: &Recycling, hooks: &mut Hooks) -> Result<Stop, HostError> {
    let mut signals = signals::StopSignals::install()?;
    if let Some(serving) = hooks.serving.take() {
        serving()?;
    }
    let mut successor: Option<Successor> = None;
    loop {
        tokio::select! {
            () = recycling.recycle.notified() => return Ok(Stop::Graceful(RECYCLE)),
            done = async { successor.as_mut().expect("guarded").await }, if successor.is_some() => {
                successor = None;
                match done {
                    Ok(pid) => {
                        tracing::info!(successor = pid, "reload finished: the new process serves; this one drains");
                        return Ok(Stop::Graceful(RELOADED));
                    }
                    Err(why) => tracing::error!("reload aborted: {why}; this process keeps serving"),
                }
            }
            signal = signals.next() => match signal {
                StopSignal::Graceful(why) => return Ok(Stop::Graceful(why)),
                StopSignal::Immediate => return Ok(Stop::Immediate),
                StopSignal::Reload(name) => match (&mut hooks.reload, &successor) {
                    (Some(_), Some(_)) => tracing::info!("{name}: a reload is already in progress"),
                    (Some(start), None) => {
                        tracing::info!("reload started: starting a new process with the plugin as it is on disk");
                        successor = Some(start());
                    }
                    (None, _) => tracing::debug!("{name} ignored by this worker"),
                },
                StopSignal::ReopenLogs => crate::access_log::reopen(),
            },
        }
    }
}
