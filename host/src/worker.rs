//! One worker: a single-threaded tokio event loop serving every listening socket with one
//! plugin factory, until it is told to stop.
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

/// What a worker needs to know from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub keep_alive: Option<Duration>,
    /// Output bounds of every connection.
    pub limits: crate::tcp::connection::Limits,
    pub max_connections: usize,
    pub graceful_timeout: Duration,
    /// 0 = never recycle.
    pub max_requests: u64,
    /// Terminate TLS on every TCP listener.
    pub tls: Option<crate::tls::Tls>,
    /// UDP peer sessions per socket before the least recently used is evicted.
    pub max_sessions: usize,
    /// TCP connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Deadline for the PROXY header and the TLS handshake.
    pub handshake_timeout: Duration,
}

/// Hooks through which a supervising arbiter watches the worker (process mode).
#[derive(Default)]
pub struct Hooks {
    /// Called from inside the event loop twice a second: proof of life, with figures.
    pub heartbeat: Option<Box<dyn FnMut(Counters)>>,
    /// Thread mode with `--metrics-bind`: serve the metrics endpoint from this event loop,
    /// labelled with the plugin's name and version.
    pub metrics: Option<(std::net::TcpListener, (String, String))>,
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

/// A successor starting up, as returned by [`Hooks::reload`].
pub type Successor = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, String>>>>;

/// State shared by the accept loops and connection tasks of this worker.
pub struct Shared {
    pub factory: Factory,
    pub tls: Option<crate::tls::Tls>,
    pub proxy_protocol: bool,
    pub handshake_timeout: Duration,
    pub connections: Rc<Connections>,
    pub limit: Arc<Semaphore>,
    max_requests: u64,
    recycle: Notify,
}

impl Shared {
    /// Count one accepted connection; at `--max-requests` ask the worker to recycle.
    pub fn accepted(&self) {
        let accepted = &self.connections.metrics.accepted;
        crate::metrics::bump(accepted, 1);
        let n = accepted.get();
        if self.max_requests > 0 && n == self.max_requests {
            self.recycle.notify_one();
        }
    }
}

const RECYCLE: &str = "--max-requests reached";
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
}

/// How the worker was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Graceful(&'static str),
    Immediate,
}

/// Serve `listeners` with `factory` until stopped. Builds its own runtime: call it only in
/// a process (or thread) that has no other tokio runtime.
pub fn run(
    listeners: Vec<Bound>,
    factory: Factory,
    settings: Settings,
    hooks: Hooks,
) -> Result<(), HostError> {
    signals::keep_sigpipe_ignored()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HostError::io("starting the event loop", e))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(listeners, factory, settings, hooks))
}

async fn serve(
    listeners: Vec<Bound>,
    factory: Factory,
    settings: Settings,
    mut hooks: Hooks,
) -> Result<(), HostError> {
    let shared = Rc::new(Shared {
        factory,
        tls: settings.tls.clone(),
        proxy_protocol: settings.proxy_protocol,
        handshake_timeout: settings.handshake_timeout,
        connections: Rc::new(Connections::default()),
        limit: Arc::new(Semaphore::new(settings.max_connections)),
        max_requests: settings.max_requests,
        recycle: Notify::new(),
    });

    crate::tcp::connection::set_limits(settings.limits);
    let hub = shared.factory.uses_services().then(|| {
        let hub = crate::services::Hub::start(shared.connections.clone(), settings.limits);
        plugin_api::host::install_backend(Some(hub.clone()));
        hub
    });

    let mut accept_tasks = Vec::new();
    let mut udp_tasks = Vec::new();
    for bound in listeners {
        match bound.transport {
            Transport::Tcp => {
                let std_listener: std::net::TcpListener = bound.socket.into();
                let listener = TcpListener::from_std(std_listener)
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
                    settings.max_sessions,
                    settings.keep_alive,
                )
                .map_err(|e| HostError::io("registering a UDP socket", e))?;
                udp_tasks.push(tokio::task::spawn_local(server.serve()));
            }
        }
    }

    let stats = |shared: &Shared| {
        shared
            .connections
            .metrics
            .snapshot(shared.connections.len())
    };
    let metrics_task = hooks.metrics.take().map(|(listener, plugin)| {
        let shared = shared.clone();
        let body: Rc<dyn Fn() -> String> = Rc::new(move || {
            let supervision = crate::metrics::Supervision {
                workers: 1,
                plugin: Some(plugin.clone()),
                ..Default::default()
            };
            crate::metrics::render(&stats(&shared), &supervision)
        });
        let listener = TcpListener::from_std(listener).expect("a non-blocking listener");
        tokio::task::spawn_local(crate::metrics::serve_async(listener, body))
    });
    let beat = hooks
        .heartbeat
        .take()
        .map(|b| Rc::new(std::cell::RefCell::new(b)));
    let sweeper = crate::keep_alive::KeepAlive::with_send_timeout(
        settings.keep_alive,
        settings.limits.send_timeout,
    )
    .map(|ka| tokio::task::spawn_local(ka.sweep(shared.connections.clone())));
    if hub.is_some() {
        plugin_call("serving", shared.factory.serving(), &shared);
    }
    let ticker = shared.factory.tick_interval().map(|period| {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                plugin_call("tick", shared.factory.tick(), &shared);
            }
        })
    });
    let heartbeat = beat.clone().map(|beat| {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                (beat.borrow_mut())(stats(&shared));
            }
        })
    });

    let stop = wait_for_stop(&shared, &mut hooks).await?;
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
        // The plugin flushes and closes its outbound connections; they drain below.
        plugin_call("stopping", shared.factory.stopping(), &shared);
    }
    let connections = &shared.connections;
    match stop {
        Stop::Immediate => {
            tracing::info!(
                pid = std::process::id(),
                open = connections.len(),
                "stopping now"
            );
            connections.abort_all();
        }
        Stop::Graceful(why) => {
            tracing::info!(
                pid = std::process::id(),
                open = connections.len(),
                "{why}: no longer accepting; waiting up to {:?} for open connections",
                settings.graceful_timeout
            );
            if tokio::time::timeout(settings.graceful_timeout, connections.wait_empty())
                .await
                .is_err()
            {
                tracing::warn!(
                    open = connections.len(),
                    "graceful timeout: closing the remaining connections"
                );
                connections.abort_all();
            }
        }
    }
    connections.wait_empty().await;
    for task in [heartbeat, sweeper, metrics_task, ticker]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    if hub.is_some() {
        plugin_api::host::install_backend(None);
    }
    if let Some(beat) = beat {
        (beat.borrow_mut())(stats(&shared));
    }
    tracing::info!(
        pid = std::process::id(),
        accepted = shared.connections.metrics.accepted.get(),
        "worker stopped"
    );
    Ok(())
}

/// Log a panic in a protocol-level callback (the protocol itself lives on).
fn plugin_call(what: &str, result: Result<(), String>, shared: &Shared) {
    if let Err(message) = result {
        crate::metrics::bump(&shared.connections.metrics.plugin_panics, 1);
        tracing::warn!("plugin panicked in {what}: {message}");
    }
}

async fn wait_for_stop(shared: &Shared, hooks: &mut Hooks) -> Result<Stop, HostError> {
    let mut signals = signals::StopSignals::install()?;
    if let Some(serving) = hooks.serving.take() {
        serving()?;
    }
    let mut successor: Option<Successor> = None;
    loop {
        tokio::select! {
            () = shared.recycle.notified() => return Ok(Stop::Graceful(RECYCLE)),
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
            },
        }
    }
}
