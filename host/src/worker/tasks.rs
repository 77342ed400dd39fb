//! The tasks a worker runs beside its connections: one per listening socket (accept loops
//! and UDP servers), and the background ones (keep-alive sweepers, plugin ticks, the
//! heartbeat, the metrics endpoint). Stopping ends the listening ones first, so the worker
//! stops accepting before it drains.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{plugin_call, stats, Events, MetricsEndpoint, ServiceSettings, Sockets, WorkerEvent};
use crate::bind::{Bound, SocketKind};
use crate::error::HostError;
use crate::shared::Shared;
use crate::tcp::accept::{accept_loop, StopAccepting, Tcp, Unix};
use crate::udp::UdpServer;

/// How often the heartbeat event is emitted.
const HEARTBEAT: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(super) struct Tasks {
    /// Each accept loop, with the notice that ends it.
    accepting: Vec<(JoinHandle<()>, Rc<StopAccepting>)>,
    udp: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Tasks {
    /// Serve every service's sockets, each with its keep-alive sweeper.
    pub fn listen(shareds: &[Rc<Shared>], listeners: Vec<Sockets>) -> Result<Tasks, HostError> {
        let mut tasks = Tasks::default();
        for (shared, (bounds, s)) in shareds.iter().zip(listeners) {
            for bound in bounds {
                tasks.listen_on(bound, shared, &s)?;
            }
            if let Some(ka) =
                crate::keep_alive::KeepAlive::with_send_timeout(s.keep_alive, s.limits.send_timeout)
            {
                let sweep = ka.sweep(shared.connections.clone());
                tasks.background.push(tokio::task::spawn_local(sweep));
            }
        }
        Ok(tasks)
    }

    fn listen_on(
        &mut self,
        bound: Bound,
        shared: &Rc<Shared>,
        s: &ServiceSettings,
    ) -> Result<(), HostError> {
        let registering = |e| HostError::io("registering a listening socket", e);
        let shared = shared.clone();
        match bound.transport {
            SocketKind::Tcp => {
                let std_listener: std::net::TcpListener = bound.socket.into();
                let listener = TcpListener::from_std(std_listener).map_err(registering)?;
                let stop = Rc::new(StopAccepting::default());
                let accepting = accept_loop(
                    Tcp::new(listener).map_err(registering)?,
                    shared,
                    stop.clone(),
                );
                self.accepting
                    .push((tokio::task::spawn_local(accepting), stop));
            }
            SocketKind::Unix => {
                let listener = Unix::from_socket(bound.socket).map_err(registering)?;
                let stop = Rc::new(StopAccepting::default());
                let accepting = accept_loop(listener, shared, stop.clone());
                self.accepting
                    .push((tokio::task::spawn_local(accepting), stop));
            }
            SocketKind::Udp => {
                let registering = |e| HostError::io("registering a UDP socket", e);
                let std_socket: std::net::UdpSocket = bound.socket.into();
                let socket = tokio::net::UdpSocket::from_std(std_socket).map_err(registering)?;
                let server = UdpServer::new(shared, socket, s.max_sessions, s.keep_alive)
                    .map_err(registering)?;
                self.udp
                    .push(tokio::task::spawn_local(server.serve_sessions()));
            }
        }
        Ok(())
    }

    /// Serve the metrics endpoint; `ready` is what `/ready` answers.
    pub fn serve_metrics(
        &mut self,
        endpoint: MetricsEndpoint,
        shareds: &[Rc<Shared>],
        ready: Rc<Cell<bool>>,
    ) {
        let MetricsEndpoint { listener, plugins } = endpoint;
        let shareds = shareds.to_vec();
        let body: Rc<dyn Fn() -> String> = Rc::new(move || {
            let mut supervision = crate::metrics::Supervision {
                plugins: plugins.clone(),
                ..Default::default()
            };
            supervision[crate::metrics::SupervisionCounter::Workers] = 1;
            let names: Vec<&str> = shareds.iter().map(|s| &*s.name).collect();
            crate::metrics::render(&names, &stats(&shareds), &supervision)
        });
        let listener = TcpListener::from_std(listener).expect("a non-blocking listener");
        let ready = Rc::new(move || ready.get());
        let serving = crate::metrics::serve_async(listener, body, ready);
        self.background.push(tokio::task::spawn_local(serving));
    }

    /// Call each plugin's `tick` at the interval it asked for, if any.
    pub fn tick_plugins(&mut self, shareds: &[Rc<Shared>]) {
        for shared in shareds {
            let Some(period) = shared.factory.tick_interval() else {
                continue;
            };
            let shared = shared.clone();
            self.background.push(tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    plugin_call("tick", &shared, |f| f.tick());
                }
            }));
        }
    }

    /// Emit [`WorkerEvent::Heartbeat`] twice a second.
    pub fn beat(&mut self, shareds: &[Rc<Shared>], events: Events) {
        let shareds = shareds.to_vec();
        self.background.push(tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                events.emit(WorkerEvent::Heartbeat(stats(&shareds)));
                crate::tls::tickets::forget_stale_keys();
            }
        }));
    }

    /// Stop accepting: end the accept loops (the listeners are dropped when this returns)
    /// and the UDP servers (UDP has no connections to finish: its sessions end now, with
    /// `connection_lost(Shutdown)`). With a `deadline` (a graceful stop), a listener a stop
    /// marked as closing for good first has its queued connections accepted, until then at
    /// the latest ([`accept_loop`]).
    ///
    /// `for_good`: the TCP sockets close for good (this worker is their last holder), so
    /// first they take no new connections, and their loops serve the ones already queued
    /// before closing them, instead of the close resetting those.
    pub async fn stop_accepting(&mut self, deadline: Option<tokio::time::Instant>, for_good: bool) {
        for (_, stop) in &self.accepting {
            stop.stop(for_good);
        }
        for (mut task, _) in self.accepting.drain(..) {
            if let Some(deadline) = deadline {
                if tokio::time::timeout_at(deadline, &mut task).await.is_ok() {
                    continue;
                }
            }
            task.abort();
            // Wait for the cancellation, so the socket is dropped before we say so.
            let _ = task.await;
        }
        for task in self.udp.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }

    /// End the background tasks (the heartbeat's copy of the event channel with them).
    pub async fn end(self) {
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
    }
}
