//! Process mode: the arbiter's lifecycle — bind → fork → supervise → reload → drain → exit.
//!
//! The arbiter binds every socket, forks the workers, and from then on only watches
//! processes and signals: it never starts an async runtime, never loads the plugin and never
//! touches a connection's bytes.
//!
//! # Sockets: one SO_REUSEPORT slot per worker
//! Several processes waiting on one shared listening socket are woken LIFO, so one worker
//! would take most connections. Instead each *slot* (worker position) has its own socket
//! per `--bind`, all in one SO_REUSEPORT group, and the kernel spreads new connections over
//! the group by hash. The arbiter holds every slot's sockets for its whole life, so:
//! - a worker that dies leaves its accept queue intact; its replacement takes it over;
//! - a reload starts the new worker on the same slot socket while the old one drains:
//!   no connection attempt is refused or reset;
//! - TTOU removes the last slot; its socket closes once its worker has drained (a connection
//!   that reached that socket's queue in the last instant may be reset, unless the kernel's
//!   `net.ipv4.tcp_migrate_req` is on; new connections are steered away from it at once).
//!
//! # Steering
//! The kernel would spread new connections over every slot's socket, including a slot whose
//! worker is dead, restarting or hung. [`steering`] attaches a classic-BPF program to each
//! group that sends them to the *live* slots only (a serving worker whose heartbeat is within
//! [`HEARTBEAT_GRACE`]), and [`Arbiter::steer`] replaces it whenever that set changes. A slot
//! left with no worker at all hands its queued TCP connections to the others where the kernel
//! can ([`Arbiter::move_queued`]). See docs/supervision.md.
//!
//! # Supervision
//! Workers post a heartbeat to shared memory ([`board`]) from inside their event loop; one
//! silent for `--timeout` is killed and replaced. Workers report `ready` / `failed` /
//! `retiring` over a pipe ([`status`]). A worker that dies young, fails to start or cannot
//! be forked is replaced with exponential back-off per slot ([`backoff`]) while the other
//! slots serve. If the first generation cannot start, the arbiter exits with the worker's
//! own `error:` line (or the fork's).
//!
//! # Reload (HUP)
//! A new generation snapshots the plugin file ([`snapshot`]) and starts one worker per slot
//! beside the old ones. When all report ready, the old generation is told to stop
//! gracefully. If any fails, the new generation is killed and the old one keeps serving.

mod backoff;
mod board;
mod signals;
pub mod snapshot;
mod spawn;
mod status;
mod steering;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::bind::{Bound, Transport};
use crate::cli::Config;
use crate::error::HostError;
use crate::metrics;
use crate::pid_file::PidFile;
use crate::privileges::Identity;
use crate::tls::Tls;
use backoff::Backoff;
use board::{now_ms, Board};
use signals::Signals;
use snapshot::Snapshot;
use spawn::{spawn, WorkerSpec};
use status::{Report, StatusReader};
use steering::Steering;

/// Room on the board for live and retiring workers together.
const BOARD_CELLS: usize = 4096;
/// How often the loop wakes with nothing to do (heartbeat checks, deadlines).
const TICK: Duration = Duration::from_millis(100);
/// How late a serving worker's heartbeat (sent every 500 ms) may be before new connections
/// are steered away from its slot. Well under `--timeout`: it only decides where new
/// connections go; killing a stuck worker is still `--timeout`'s call.
const HEARTBEAT_GRACE: Duration = Duration::from_millis(1500);
/// After `--graceful-timeout`, how long a stopping worker has before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// One worker position: its sockets (one per `--bind`) and its restart back-off.
struct Slot {
    sockets: Vec<Bound>,
    backoff: Backoff,
    /// Its sockets are ours to replace (not inherited from systemd, which holds them too).
    replaceable: bool,
}

/// One set of workers running the same configuration (re-read from the file at each
/// reload), plugin snapshots and TLS configurations (certificates re-read at each reload).
pub struct Generation {
    id: u64,
    pub config: Config,
    /// One snapshot per distinct plugin file: two services of one plugin share a library
    /// in each worker (two factories).
    pub snapshots: Vec<Snapshot>,
    /// Each service's index in `snapshots`.
    pub plugin_of: Vec<usize>,
    /// Each service's TLS configuration.
    pub tls: Vec<Option<Tls>>,
}

impl Generation {
    /// Snapshot the plugins and read the certificates, as they are on disk now. Any
    /// service's failure fails the whole generation.
    pub(crate) fn prepare(id: u64, config: Config) -> Result<Generation, HostError> {
        let mut tls = Vec::new();
        let mut snapshots: Vec<Snapshot> = Vec::new();
        let mut plugin_of = Vec::new();
        let many = config.services.len() > 1;
        for service in &config.services {
            let named = |e: HostError| match many {
                true => HostError::Config(format!("service {}: {e}", service.name)),
                false => e,
            };
            tls.push(
                service
                    .tls
                    .as_ref()
                    .map(|files| files.load())
                    .transpose()
                    .map_err(named)?,
            );
            match snapshots.iter().position(|s| s.path == service.plugin) {
                Some(i) => plugin_of.push(i),
                None => {
                    snapshots.push(Snapshot::take(&service.plugin).map_err(named)?);
                    plugin_of.push(snapshots.len() - 1);
                }
            }
        }
        Ok(Generation {
            id,
            config,
            snapshots,
            plugin_of,
            tls,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Forked; loading the plugin.
    Starting,
    Serving,
    /// Told to stop (or stopping on its own); must be gone by the deadline.
    Retiring {
        deadline: Instant,
    },
}

struct Worker {
    pid: Pid,
    slot: usize,
    generation: u64,
    cell: usize,
    status: StatusReader,
    phase: Phase,
    started: Instant,
    /// Reported that it no longer accepts.
    drained: bool,
    /// Killed for missing its heartbeat or a deadline.
    timed_out: bool,
    /// Serving, but its heartbeat is later than [`HEARTBEAT_GRACE`].
    late: bool,
    /// Sent `failed` (its exit while starting is then not reported a second time).
    reported_failure: bool,
}

impl Worker {
    /// Whether it takes new connections from its slot's sockets.
    fn accepting(&self) -> bool {
        self.phase == Phase::Serving && !self.drained && !self.late
    }
}

/// The end of a reload: the new generation serves; the old one is still being told to stop.
/// The reload is finished once every old worker has stopped accepting (or exited), so from
/// that moment every new connection reaches the new code.
struct Handover {
    generation: u64,
    started: Instant,
    old: Vec<Pid>,
}

/// A reload in progress.
struct Reload {
    generation: Generation,
    started: Instant,
}

/// Where the arbiter is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the first generation to report ready.
    Starting,
    Running,
    Stopping {
        deadline: Instant,
    },
}

struct Arbiter<'c> {
    config: &'c Config,
    identity: Option<Identity>,
    signals: Signals,
    board: &'static Board,
    free_cells: Vec<usize>,
    slots: Vec<Slot>,
    workers: Vec<Worker>,
    current: Generation,
    reload: Option<Reload>,
    handover: Option<Handover>,
    /// A HUP arrived during a reload: run another when it ends.
    reload_again: bool,
    next_generation: u64,
    state: State,
    /// `--metrics-bind`: the endpoint, and what exited workers counted.
    metrics: Option<metrics::Endpoint>,
    /// Per service: what exited workers counted.
    retired: Vec<metrics::Counters>,
    supervision: metrics::Supervision,
    /// Which slots new connections may reach.
    steering: Steering,
    /// The slots new connections were last announced (logged) to avoid.
    announced_down: Vec<usize>,
    /// `--access-log`, opened here so that workers inherit it (and reopened here on USR1).
    access_log: Option<crate::access_log::Sink>,
}

/// Run process mode to the end.
pub fn run(config: &Config) -> Result<(), HostError> {
    let identity = Identity::resolve(config.user.as_deref(), config.group.as_deref())?;
    let access_log = config
        .access_log
        .as_ref()
        .map(|d| d.open(identity.as_ref()))
        .transpose()?;
    let generation = Generation::prepare(1, config.clone())?;
    // Socket activation: slot 0's sockets may be systemd's, which must never be shut down.
    let activated = std::env::var_os("LISTEN_FDS").is_some();
    let binds: Vec<_> = config.binds().cloned().collect();
    // Unix socket files are removed at exit (workers leave by `_exit`, never removing them).
    let (first, _unix_files) = crate::sockets::bind_all(&binds, config.backlog, true)?;
    let metrics = config
        .metrics_bind
        .map(|addr| {
            metrics::Endpoint::bind(addr).map_err(|e| HostError::Bind {
                spec: format!("--metrics-bind {addr}"),
                source: e,
            })
        })
        .transpose()?;
    let signals = Signals::install().map_err(|e| HostError::io("installing signal handlers", e))?;
    let board: &'static Board = Box::leak(Box::new(
        Board::new(BOARD_CELLS).map_err(|e| HostError::io("mapping the worker board", e))?,
    ));
    let mut arbiter = Arbiter {
        config,
        identity,
        signals,
        board,
        free_cells: (0..board.len()).rev().collect(),
        steering: Steering::new(&first),
        announced_down: Vec::new(),
        slots: Vec::new(),
        workers: Vec::new(),
        current: generation,
        reload: None,
        handover: None,
        reload_again: false,
        next_generation: 2,
        state: State::Starting,
        metrics,
        retired: vec![metrics::Counters::default(); config.services.len()],
        supervision: metrics::Supervision::default(),
        access_log,
    };
    arbiter.add_slot(first, !activated);
    for _ in 1..config.workers {
        arbiter.add_sibling_slot()?;
    }
    let _pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    let result = arbiter.supervise();
    if result.is_err() {
        arbiter.kill_all();
    }
    result
}

impl Arbiter<'_> {
    fn add_slot(&mut self, sockets: Vec<Bound>, replaceable: bool) {
        self.slots.push(Slot {
            sockets,
            backoff: Backoff::new(Instant::now()),
            replaceable,
        });
    }

    /// One more slot, with new sockets in the same SO_REUSEPORT groups as slot 0's. A socket
    /// that cannot have siblings (inherited from systemd without `ReusePort=yes`) is shared
    /// by every slot instead: it works, but its accept queue is one for all workers.
    fn add_sibling_slot(&mut self) -> Result<(), HostError> {
        let mut sockets = Vec::with_capacity(self.slots[0].sockets.len());
        let mut own = Vec::with_capacity(sockets.capacity());
        for b in &self.slots[0].sockets {
            match b.sibling(self.config.backlog) {
                Ok(sibling) => {
                    sockets.push(sibling);
                    own.push(true);
                }
                // One socket (and accept queue) for all workers: Unix sockets have no
                // SO_REUSEPORT groups (nor steering).
                Err(_) if b.transport == Transport::Unix => {
                    sockets.push(b.share().map_err(|e| {
                        HostError::io(format!("sharing the socket {}", b.listening_line()), e)
                    })?);
                    own.push(false);
                }
                Err(e) => {
                    tracing::warn!(local = %b.local, "cannot add a SO_REUSEPORT socket ({e}); workers share this one (for systemd sockets, set ReusePort=yes)");
                    let shared = b.socket.try_clone().map_err(|e| {
                        HostError::io(format!("sharing the socket for {}", b.local), e)
                    })?;
                    sockets.push(Bound {
                        transport: b.transport,
                        socket: shared,
                        local: b.local,
                        path: b.path.clone(),
                    });
                    own.push(false);
                }
            }
        }
        // Only now that every socket exists (an error above closes them all again).
        let slot = self.slots.len();
        for (bind, own) in own.into_iter().enumerate() {
            self.steering.join(slot, bind, own);
        }
        self.add_slot(sockets, true);
        Ok(())
    }

    /// The supervision loop; returns when the last worker has exited after a stop.
    fn supervise(&mut self) -> Result<(), HostError> {
        loop {
            self.spawn_missing()?;
            self.wait_for_events();
            for sig in self.signals.drain() {
                self.on_signal(sig)?;
            }
            self.read_reports()?;
            self.reap()?;
            self.check_deadlines();
            self.advance_reload();
            self.finish_handover();
            self.steer();
            self.serve_metrics();
            if matches!(self.state, State::Stopping { .. }) && self.workers.is_empty() {
                tracing::info!("all workers exited; arbiter stopping");
                return Ok(());
            }
        }
    }

    /// Answer metrics scrapes that are ready (never blocks).
    fn serve_metrics(&mut self) {
        let ready = self.is_ready();
        let Some(endpoint) = &mut self.metrics else {
            return;
        };
        let counters: Vec<metrics::Counters> = (0..self.retired.len())
            .map(|service| {
                self.workers.iter().fold(self.retired[service], |sum, w| {
                    sum.add(self.board.cell(w.cell).counters(service))
                })
            })
            .collect();
        let mut supervision = self.supervision.clone();
        supervision.workers = self.workers.len() as u64;
        let names: Vec<&str> = self
            .config
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        endpoint.serve(ready, || metrics::render(&names, &counters, &supervision));
    }

    /// `/ready`: running (not starting, not stopping) and every slot has a serving worker of
    /// the current generation (or of a reload's, which is newer).
    fn is_ready(&self) -> bool {
        self.state == State::Running
            && (0..self.slots.len()).all(|slot| {
                self.workers.iter().any(|w| {
                    w.slot == slot && w.phase == Phase::Serving && w.generation >= self.current.id
                })
            })
    }

    /// USR1: reopen the access log here, then have every worker reopen it.
    fn reopen_access_log(&mut self) {
        let Some(sink) = &mut self.access_log else {
            tracing::debug!("SIGUSR1: no --access-log to reopen");
            return;
        };
        if let Err(e) = sink.reopen(self.identity.as_ref()) {
            tracing::error!("SIGUSR1: reopening the access log: {e}; it stays as it was");
            return;
        }
        for w in &self.workers {
            self.board
                .cell(w.cell)
                .reopen
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            workers = self.workers.len(),
            "SIGUSR1: access log reopened; the workers follow within half a second"
        );
    }

    /// Sleep until a signal, a worker report, or the next tick.
    fn wait_for_events(&self) {
        let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
        fds.extend(
            self.workers
                .iter()
                .map(|w| PollFd::new(w.status.fd(), PollFlags::POLLIN)),
        );
        if let Some(endpoint) = &self.metrics {
            fds.extend(
                endpoint
                    .fds()
                    .into_iter()
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
        }
        let _ = nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(TICK).unwrap_or(PollTimeout::NONE),
        );
    }

    /// Give every slot a worker of the current generation (and of the reloading one).
    /// A worker that cannot be started (no process or memory to fork one) is fatal only
    /// at startup; later it aborts a reload, or backs off that slot while the others serve.
    fn spawn_missing(&mut self) -> Result<(), HostError> {
        if matches!(self.state, State::Stopping { .. }) {
            return Ok(());
        }
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            let mut wanted = vec![self.current.id];
            if let Some(r) = &self.reload {
                wanted.push(r.generation.id);
            }
            for generation in wanted {
                let has = self.workers.iter().any(|w| {
                    w.slot == slot
                        && w.generation == generation
                        && !matches!(w.phase, Phase::Retiring { .. })
                });
                if has || !self.slots[slot].backoff.ready(now) {
                    continue;
                }
                match self.spawn_worker(slot, generation) {
                    Ok(()) => {}
                    Err(e) if self.state == State::Starting => return Err(e),
                    Err(e)
                        if self
                            .reload
                            .as_ref()
                            .is_some_and(|r| r.generation.id == generation) =>
                    {
                        self.abort_reload(&format!("cannot start a new worker: {e}"));
                    }
                    Err(e) => {
                        let delay = self.slots[slot].backoff.failed(now);
                        tracing::warn!(slot, "cannot start a worker: {e}; next attempt in {delay:?}, the other workers keep serving");
                    }
                }
            }
        }
        Ok(())
    }

    fn spawn_worker(&mut self, slot: usize, generation: u64) -> Result<(), HostError> {
        let cell = self.free_cells.pop().ok_or_else(|| {
            HostError::io(
                "spawning a worker",
                std::io::Error::other("too many workers at once"),
            )
        })?;
        let gen = match &self.reload {
            Some(r) if r.generation.id == generation => &r.generation,
            _ => &self.current,
        };
        let spawned = spawn(WorkerSpec {
            arbiter: nix::unistd::getpid(),
            slot,
            access_log: self.access_log.as_ref(),
            sockets: &self.slots[slot].sockets,
            generation: gen,
            cell: self.board.cell(cell),
            config: self.config,
            identity: self.identity.as_ref(),
        });
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                self.free_cells.push(cell);
                return Err(e);
            }
        };
        // At startup this is debug detail: a start that fails must print only its `error:`.
        if self.state == State::Starting {
            tracing::debug!(
                pid = spawned.pid.as_raw(),
                slot,
                generation,
                "worker spawned"
            );
        } else {
            tracing::info!(
                pid = spawned.pid.as_raw(),
                slot,
                generation,
                "worker spawned"
            );
        }
        self.supervision.worker_starts += 1;
        self.workers.push(Worker {
            pid: spawned.pid,
            slot,
            generation,
            cell,
            status: spawned.status,
            phase: Phase::Starting,
            started: Instant::now(),
            drained: false,
            timed_out: false,
            late: false,
            reported_failure: false,
        });
        Ok(())
    }

    fn on_signal(&mut self, sig: Signal) -> Result<(), HostError> {
        match sig {
            Signal::SIGCHLD => {} // reaped below, every turn
            Signal::SIGTERM | Signal::SIGINT => self.stop(false, sig),
            Signal::SIGQUIT => self.stop(true, sig),
            Signal::SIGHUP => self.begin_reload(),
            Signal::SIGUSR1 => self.reopen_access_log(),
            Signal::SIGTTIN if self.state == State::Running => match self.add_sibling_slot() {
                Ok(()) => tracing::info!(workers = self.slots.len(), "SIGTTIN: one worker more"),
                Err(e) => tracing::warn!("SIGTTIN: cannot add a worker: {e}"),
            },
            Signal::SIGTTOU if self.state == State::Running && self.slots.len() > 1 => {
                let slot = self.slots.len() - 1;
                self.retire_where(|w| w.slot == slot);
                self.slots.pop();
                // Its sockets leave their groups once the workers still holding them are gone
                // (a drained worker has closed them already).
                let holders: Vec<Pid> = self
                    .workers
                    .iter()
                    .filter(|w| w.slot == slot && !w.drained)
                    .map(|w| w.pid)
                    .collect();
                self.steering.release(slot, &holders);
                tracing::info!(workers = self.slots.len(), "SIGTTOU: one worker fewer");
            }
            _ => {}
        }
        Ok(())
    }

    /// Graceful (TERM/INT) or immediate (QUIT) stop of every worker.
    fn stop(&mut self, immediate: bool, sig: Signal) {
        if let State::Stopping { .. } = self.state {
            if !immediate {
                return;
            }
        }
        let grace = if immediate {
            Duration::from_secs(1)
        } else {
            self.config.graceful_timeout + KILL_GRACE
        };
        let deadline = Instant::now() + grace;
        tracing::info!(
            signal = sig.as_str(),
            workers = self.workers.len(),
            "{}",
            if immediate {
                "stopping now"
            } else {
                "stopping gracefully: no longer accepting"
            }
        );
        self.state = State::Stopping { deadline };
        self.reload = None;
        crate::notify::stopping();
        // Close our copies of the listening sockets: once the workers drop theirs, new
        // connection attempts are refused instead of queueing for nobody.
        self.slots.clear();
        let signal = if immediate {
            Signal::SIGQUIT
        } else {
            Signal::SIGTERM
        };
        for w in &mut self.workers {
            let _ = kill(w.pid, signal);
            w.phase = Phase::Retiring { deadline };
        }
    }

    /// Tell the matching workers to stop gracefully.
    fn retire_where(&mut self, mut which: impl FnMut(&Worker) -> bool) {
        let deadline = Instant::now() + self.config.graceful_timeout + KILL_GRACE;
        for w in self.workers.iter_mut().filter(|w| which(w)) {
            if !matches!(w.phase, Phase::Retiring { .. }) {
                let _ = kill(w.pid, Signal::SIGTERM);
                w.phase = Phase::Retiring { deadline };
            }
        }
    }

    fn begin_reload(&mut self) {
        if self.state != State::Running {
            return;
        }
        if self.reload.is_some() {
            tracing::info!("SIGHUP during a reload: another reload will follow this one");
            self.reload_again = true;
            return;
        }
        tracing::info!("reload started: re-reading the configuration, plugins and certificates");
        crate::notify::reloading();
        let prepared = crate::config::reload().and_then(|config| {
            same_sockets(self.config, &config)?;
            Generation::prepare(self.next_generation, config)
        });
        match prepared {
            Ok(generation) => {
                self.next_generation += 1;
                self.reload = Some(Reload {
                    generation,
                    started: Instant::now(),
                });
            }
            Err(e) => {
                tracing::error!("reload aborted: {e}; the current workers keep serving");
                self.supervision.reloads_aborted += 1;
                crate::notify::ready();
            }
        }
    }

    /// Finish a reload whose workers are all serving.
    fn advance_reload(&mut self) {
        let Some(reload) = &self.reload else { return };
        let id = reload.generation.id;
        let serving = self
            .workers
            .iter()
            .filter(|w| w.generation == id && w.phase == Phase::Serving)
            .count();
        if serving < self.slots.len() {
            return;
        }
        let reload = self.reload.take().expect("checked above");
        self.supervision.reloads_ok += 1;
        let old = std::mem::replace(&mut self.current, reload.generation);
        self.retire_where(|w| w.generation != id);
        tracing::info!(
            generation = id,
            "reload: all new workers serving; retiring generation {}",
            old.id
        );
        crate::notify::ready();
        let old = self
            .workers
            .iter()
            .filter(|w| w.generation != id)
            .map(|w| w.pid)
            .collect();
        self.handover = Some(Handover {
            generation: id,
            started: reload.started,
            old,
        });
        self.after_reload();
    }

    /// Declare a reload finished once the old workers no longer accept.
    fn finish_handover(&mut self) {
        let Some(h) = &self.handover else { return };
        let pending = h
            .old
            .iter()
            .any(|pid| self.workers.iter().any(|w| w.pid == *pid && !w.drained));
        if !pending {
            tracing::info!(
                generation = h.generation,
                elapsed_ms = h.started.elapsed().as_millis() as u64,
                "reload finished: only the new generation accepts connections"
            );
            self.handover = None;
        }
    }

    fn abort_reload(&mut self, why: &str) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        self.supervision.reloads_aborted += 1;
        let id = reload.generation.id;
        for w in self.workers.iter().filter(|w| w.generation == id) {
            let _ = kill(w.pid, Signal::SIGKILL);
        }
        tracing::error!("reload aborted: {why}; the current workers keep serving");
        crate::notify::ready();
        self.after_reload();
    }

    fn after_reload(&mut self) {
        if std::mem::take(&mut self.reload_again) {
            self.begin_reload();
        }
    }

    /// Handle `ready` / `failed` / `retiring` reports.
    fn read_reports(&mut self) -> Result<(), HostError> {
        let mut failures = Vec::new();
        let mut retiring = Vec::new();
        for w in &mut self.workers {
            for report in w.status.read() {
                match report {
                    Report::Ready(plugins) => {
                        if w.phase == Phase::Starting {
                            w.phase = Phase::Serving;
                            // Its event loop beats from now on; loading the plugin may have
                            // taken longer than the heartbeat grace.
                            let cell = self.board.cell(w.cell);
                            cell.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
                        }
                        if !plugins.is_empty() && w.generation >= self.current.id {
                            self.supervision.plugins = plugins;
                        }
                    }
                    Report::Failed(message) => {
                        w.reported_failure = true;
                        failures.push((w.generation, message));
                    }
                    Report::Retiring => retiring.push(w.pid),
                    Report::Draining => {
                        w.drained = true;
                        self.steering.closed_by(w.pid);
                    }
                }
            }
        }
        for (generation, message) in failures {
            self.worker_failed(generation, message)?;
        }
        for pid in retiring {
            tracing::info!(
                pid = pid.as_raw(),
                "worker recycling (--max-requests); starting its replacement"
            );
            self.retire_where(|w| w.pid == pid);
        }
        if self.state == State::Starting && self.workers.iter().all(|w| w.phase == Phase::Serving) {
            self.state = State::Running;
            crate::stdout::announce(&self.slots[0].sockets)?;
            if let Some(endpoint) = &self.metrics {
                crate::stdout::announce_metrics(endpoint.local_addr())?;
            }
            crate::notify::ready();
            let services: Vec<&str> = self
                .config
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            tracing::info!(
                workers = self.workers.len(),
                pid = std::process::id(),
                services = %services.join(","),
                "serving in process mode"
            );
        }
        Ok(())
    }

    /// A worker could not start: fatal at startup, aborts a reload, else back-off.
    fn worker_failed(&mut self, generation: u64, message: String) -> Result<(), HostError> {
        if self.state == State::Starting {
            return Err(HostError::WorkerStartup(message));
        }
        if self
            .reload
            .as_ref()
            .is_some_and(|r| r.generation.id == generation)
        {
            self.abort_reload(&message);
        } else {
            tracing::error!("worker failed to start: {message}");
        }
        Ok(())
    }

    /// Collect exited workers.
    fn reap(&mut self) -> Result<(), HostError> {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(s) => s,
            };
            let (pid, how) = match status {
                WaitStatus::Exited(pid, code) => (pid, format!("exit status {code}")),
                WaitStatus::Signaled(pid, sig, core) => (
                    pid,
                    format!(
                        "killed by {}{}",
                        sig.as_str(),
                        if core { " (core dumped)" } else { "" }
                    ),
                ),
                _ => continue,
            };
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.swap_remove(i);
            self.steering.closed_by(pid);
            // Drain a `failed` report written just before exiting.
            let mut status_reader = w.status;
            let last_words = status_reader.read().into_iter().find_map(|r| match r {
                Report::Failed(m) => Some(m),
                _ => None,
            });
            let mut accepted = 0;
            for (service, retired) in self.retired.iter_mut().enumerate() {
                let counted = self.board.cell(w.cell).counters(service);
                accepted += counted.accepted;
                *retired = retired.add(counted.without_gauges());
            }
            self.free_cells.push(w.cell);
            let expected = matches!(w.phase, Phase::Retiring { .. });
            if w.timed_out {
                self.supervision.worker_timeouts += 1;
            } else if expected {
                self.supervision.worker_exits += 1;
            } else {
                self.supervision.worker_crashes += 1;
            }
            if expected {
                tracing::info!(
                    pid = pid.as_raw(),
                    slot = w.slot,
                    accepted,
                    "worker exited ({how})"
                );
                // Killed for missing its heartbeat: connections may wait in its queue.
                self.move_queued(w.slot);
                continue;
            }
            tracing::warn!(
                pid = pid.as_raw(),
                slot = w.slot,
                generation = w.generation,
                accepted,
                "worker exited unexpectedly ({how})"
            );
            if w.phase == Phase::Starting && !w.reported_failure {
                let message =
                    last_words.unwrap_or_else(|| format!("a worker exited while starting ({how})"));
                self.worker_failed(w.generation, message)?;
            }
            // Back off if it died young; reset once a worker has lived a while.
            if let Some(slot) = self.slots.get_mut(w.slot) {
                let delay = slot.backoff.exited(w.started.elapsed(), Instant::now());
                if let Some(delay) = delay.filter(|_| slot.backoff.failures() > 1) {
                    tracing::warn!(slot = w.slot, "worker keeps dying; next start in {delay:?}");
                }
            }
            self.move_queued(w.slot);
        }
    }

    /// Slot `slot` may have lost its last worker: hand the connections waiting in its TCP
    /// accept queues to the other slots, where the kernel can move them. Shutting a listening
    /// socket down moves its queue to the group's other listeners when
    /// `net.ipv4.tcp_migrate_req` is 1 (Linux ≥ 5.14), and resets it otherwise; so only then
    /// is the slot given new sockets. Otherwise its queue waits for the slot's next worker.
    fn move_queued(&mut self, slot: usize) {
        let worker_left = self.workers.iter().any(|w| w.slot == slot);
        let others_serve = self.workers.iter().any(|w| w.slot != slot && w.accepting());
        if self.state != State::Running
            || worker_left
            || !others_serve
            || !self.slots.get(slot).is_some_and(|s| s.replaceable)
            || !steering::kernel_migrates_queues()
        {
            return;
        }
        let mut moved = 0;
        for bind in 0..self.slots[slot].sockets.len() {
            let old = &self.slots[slot].sockets[bind];
            if old.transport != Transport::Tcp || !self.steering.steered(bind) {
                continue;
            }
            // Bound, not yet listening: it joins the group (and could be picked as a target
            // for the moved connections) only at `listen`, after the old one is shut down.
            let new = match old.sibling_unlistened() {
                Ok(new) => new,
                Err(e) => {
                    tracing::warn!(slot, local = %old.local, "cannot replace the socket of a slot without workers ({e}); its queued connections wait for its next worker");
                    continue;
                }
            };
            let queued = steering::queued(&old.socket);
            if let Err(e) = old.socket.shutdown(std::net::Shutdown::Read) {
                tracing::warn!(slot, local = %old.local, "cannot shut down the socket of a slot without workers ({e}); its queued connections wait for its next worker");
                continue;
            }
            let listening = new.socket.listen(self.config.backlog);
            if let Err(e) = &listening {
                tracing::error!(slot, local = %new.local, "cannot listen on the new socket of a slot ({e}); its next worker will not accept there");
            }
            self.steering.replaced(slot, bind, listening.is_ok());
            self.slots[slot].sockets[bind] = new;
            moved += queued;
        }
        if moved > 0 {
            tracing::info!(
                slot,
                "slot has no worker: its {moved} queued connection(s) moved to the other workers (net.ipv4.tcp_migrate_req=1)"
            );
        }
    }

    /// Find the slots that take new connections (a serving worker whose heartbeat is within
    /// [`HEARTBEAT_GRACE`]) and steer new connections to them only.
    fn steer(&mut self) {
        if matches!(self.state, State::Stopping { .. }) || self.slots.is_empty() {
            return;
        }
        let now_board = now_ms();
        let running = self.state == State::Running;
        for w in &mut self.workers {
            if w.phase != Phase::Serving || w.drained {
                continue;
            }
            let silent_ms = now_board
                .saturating_sub(self.board.cell(w.cell).heartbeat_ms.load(Ordering::Relaxed));
            let late = silent_ms > HEARTBEAT_GRACE.as_millis() as u64;
            if late == w.late {
                continue;
            }
            w.late = late;
            if !running {
                continue;
            }
            if late {
                tracing::warn!(
                    pid = w.pid.as_raw(),
                    slot = w.slot,
                    "worker missed its heartbeats for {silent_ms} ms: new connections go to the other workers (it is killed at --timeout {}s)",
                    self.config.timeout.as_secs()
                );
            } else {
                tracing::info!(
                    pid = w.pid.as_raw(),
                    slot = w.slot,
                    "worker's heartbeat is back: it takes new connections again"
                );
            }
        }
        let live: Vec<bool> = (0..self.slots.len())
            .map(|s| self.workers.iter().any(|w| w.slot == s && w.accepting()))
            .collect();
        self.steering.apply(&live, &self.slots[0].sockets);
        // As the kernel now sees it: with no slot live, nothing is steered.
        let down: Vec<usize> = (0..live.len())
            .filter(|&s| !live[s] && live.contains(&true))
            .collect();
        if !running || down == self.announced_down {
            return;
        }
        if down.is_empty() {
            tracing::info!(
                "every slot has a serving worker: new connections spread over all {}",
                self.slots.len()
            );
        } else {
            let list: Vec<String> = down.iter().map(|s| s.to_string()).collect();
            tracing::info!(
                "new connections steered away from slot {} (no serving worker)",
                list.join(", ")
            );
        }
        self.announced_down = down;
    }

    /// Kill workers that stopped sending heartbeats, took too long to start, or overstayed
    /// their retirement; kill what is left when a stop's deadline passes.
    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let now_board = now_ms();
        let timeout = self.config.timeout;
        let mut stuck_reload = None;
        for w in &mut self.workers {
            let silent_ms = now_board
                .saturating_sub(self.board.cell(w.cell).heartbeat_ms.load(Ordering::Relaxed));
            let kill_reason = match w.phase {
                Phase::Starting if now - w.started > timeout => Some(format!(
                    "did not start within --timeout {}s",
                    timeout.as_secs()
                )),
                Phase::Serving if silent_ms > timeout.as_millis() as u64 => Some(format!(
                    "no heartbeat for {silent_ms} ms (--timeout {}s): its event loop is stuck",
                    timeout.as_secs()
                )),
                Phase::Retiring { deadline } if now > deadline => {
                    Some("still running after the graceful timeout".to_string())
                }
                _ => None,
            };
            if let Some(reason) = kill_reason {
                tracing::warn!(
                    pid = w.pid.as_raw(),
                    slot = w.slot,
                    "killing worker: {reason}"
                );
                let _ = kill(w.pid, Signal::SIGKILL);
                w.timed_out = true;
                if w.phase == Phase::Starting {
                    stuck_reload = Some((w.generation, reason));
                }
                // Reaped (and replaced) once it is gone; don't kill it again meanwhile.
                w.phase = Phase::Retiring {
                    deadline: now + Duration::from_secs(3600),
                };
            }
        }
        if let Some((generation, reason)) = stuck_reload {
            if self
                .reload
                .as_ref()
                .is_some_and(|r| r.generation.id == generation)
            {
                self.abort_reload(&format!("a new worker {reason}"));
            }
        }
    }

    /// Last resort when returning an error: no worker may outlive the arbiter.
    fn kill_all(&mut self) {
        for w in &self.workers {
            let _ = kill(w.pid, Signal::SIGKILL);
        }
        for w in self.workers.drain(..) {
            let _ = waitpid(w.pid, None);
        }
    }
}

/// A reload keeps the listening sockets: the re-read configuration must have the same
/// services with the same binds (a change to them needs a restart).
fn same_sockets(running: &Config, reread: &Config) -> Result<(), HostError> {
    let shape = |c: &Config| -> Vec<(String, Vec<String>)> {
        c.services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.binds.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    };
    let process_wide = |c: &Config| {
        format!(
            "{:?}",
            (
                c.backlog,
                c.concurrency,
                c.workers,
                c.timeout,
                c.graceful_timeout,
                c.max_requests,
                &c.pid_file,
                &c.user,
                &c.group,
                c.log_level,
                c.metrics_bind,
            )
        )
    };
    if process_wide(running) != process_wide(reread) {
        tracing::warn!("reload: process-wide settings changed in the configuration (workers, user, pid-file, ...); they take effect at the next start");
    }
    if shape(running) != shape(reread) {
        return Err(HostError::Config(
            "the services or their binds changed in the configuration; a reload keeps the \
             listening sockets, so restart sockhost to apply that"
                .to_string(),
        ));
    }
    Ok(())
}
