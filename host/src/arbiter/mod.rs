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
//!   `net.ipv4.tcp_migrate_req` is on).
//!
//! # Supervision
//! Workers post a heartbeat to shared memory ([`board`]) from inside their event loop; one
//! silent for `--timeout` is killed and replaced. Workers report `ready` / `failed` /
//! `retiring` over a pipe ([`status`]). A worker that dies young is replaced with
//! exponential back-off. If the first generation cannot start, the arbiter exits with the
//! worker's own `error:` line.
//!
//! # Reload (HUP)
//! A new generation snapshots the plugin file ([`snapshot`]) and starts one worker per slot
//! beside the old ones. When all report ready, the old generation is told to stop
//! gracefully. If any fails, the new generation is killed and the old one keeps serving.

mod board;
mod signals;
pub mod snapshot;
mod spawn;
mod status;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::metrics;
use crate::pid_file::PidFile;
use crate::privileges::Identity;
use crate::tls::Tls;
use board::{now_ms, Board};
use signals::Signals;
use snapshot::Snapshot;
use spawn::{spawn, WorkerSpec};
use status::{Report, StatusReader};

/// Room on the board for live and retiring workers together.
const BOARD_CELLS: usize = 4096;
/// How often the loop wakes with nothing to do (heartbeat checks, deadlines).
const TICK: Duration = Duration::from_millis(100);
/// A worker that exits sooner than this after starting counts towards back-off.
const YOUNG: Duration = Duration::from_secs(5);
/// Longest pause between two attempts to replace a crashing worker.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// After `--graceful-timeout`, how long a stopping worker has before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// One worker position: its sockets (one per `--bind`) and its restart back-off.
struct Slot {
    sockets: Vec<Bound>,
    failures: u32,
    not_before: Instant,
}

/// One set of workers running the same plugin snapshot (and the same TLS configuration,
/// certificates re-read at each reload).
struct Generation {
    id: u64,
    snapshot: Snapshot,
    tls: Option<Tls>,
}

impl Generation {
    /// Snapshot the plugin and read the certificates, as they are on disk now.
    fn prepare(id: u64, config: &Config) -> Result<Generation, HostError> {
        let tls = config.tls.as_ref().map(|files| files.load()).transpose()?;
        Ok(Generation {
            id,
            snapshot: Snapshot::take(&config.plugin)?,
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
    retired: metrics::Counters,
    supervision: metrics::Supervision,
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
    let generation = Generation::prepare(1, config)?;
    let first = crate::bind_all(&config.binds, config.backlog, true)?;
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
        slots: Vec::new(),
        workers: Vec::new(),
        current: generation,
        reload: None,
        handover: None,
        reload_again: false,
        next_generation: 2,
        state: State::Starting,
        metrics,
        retired: metrics::Counters::default(),
        supervision: metrics::Supervision::default(),
        access_log,
    };
    arbiter.add_slot(first)?;
    for _ in 1..config.workers {
        let sockets = arbiter.sibling_sockets()?;
        arbiter.add_slot(sockets)?;
    }
    let _pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    let result = arbiter.supervise();
    if result.is_err() {
        arbiter.kill_all();
    }
    result
}

impl Arbiter<'_> {
    fn add_slot(&mut self, sockets: Vec<Bound>) -> Result<(), HostError> {
        self.slots.push(Slot {
            sockets,
            failures: 0,
            not_before: Instant::now(),
        });
        Ok(())
    }

    /// New sockets for one more slot, in the same SO_REUSEPORT groups as slot 0's. A socket
    /// that cannot have siblings (inherited from systemd without `ReusePort=yes`) is shared
    /// by every slot instead: it works, but its accept queue is one for all workers.
    fn sibling_sockets(&self) -> Result<Vec<Bound>, HostError> {
        self.slots[0]
            .sockets
            .iter()
            .map(|b| match b.sibling(self.config.backlog) {
                Ok(sibling) => Ok(sibling),
                Err(e) => {
                    tracing::warn!(local = %b.local, "cannot add a SO_REUSEPORT socket ({e}); workers share this one (for systemd sockets, set ReusePort=yes)");
                    let shared = b.socket.try_clone().map_err(|e| HostError::io(format!("sharing the socket for {}", b.local), e))?;
                    Ok(Bound { transport: b.transport, socket: shared, local: b.local })
                }
            })
            .collect()
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
        let live = self
            .workers
            .iter()
            .fold(metrics::Counters::default(), |sum, w| {
                sum.add(self.board.cell(w.cell).counters())
            });
        let counters = self.retired.add(live);
        let mut supervision = self.supervision.clone();
        supervision.workers = self.workers.len() as u64;
        endpoint.serve(ready, || metrics::render(&counters, &supervision));
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
                if has || self.slots[slot].not_before > now {
                    continue;
                }
                self.spawn_worker(slot, generation)?;
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
            generation,
            access_log: self.access_log.as_ref(),
            sockets: &self.slots[slot].sockets,
            snapshot: &gen.snapshot,
            tls: gen.tls.as_ref(),
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
            Signal::SIGTTIN if self.state == State::Running => {
                let sockets = self.sibling_sockets()?;
                self.add_slot(sockets)?;
                tracing::info!(workers = self.slots.len(), "SIGTTIN: one worker more");
            }
            Signal::SIGTTOU if self.state == State::Running && self.slots.len() > 1 => {
                let slot = self.slots.len() - 1;
                self.retire_where(|w| w.slot == slot);
                self.slots.pop();
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
        tracing::info!(plugin = %self.config.plugin.display(), "reload started");
        crate::notify::reloading();
        match Generation::prepare(self.next_generation, self.config) {
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
                    Report::Ready(plugin) => {
                        if w.phase == Phase::Starting {
                            w.phase = Phase::Serving;
                        }
                        if plugin.is_some() && w.generation >= self.current.id {
                            self.supervision.plugin = plugin;
                        }
                    }
                    Report::Failed(message) => failures.push((w.generation, message)),
                    Report::Retiring => retiring.push(w.pid),
                    Report::Draining => w.drained = true,
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
            crate::announce(&self.slots[0].sockets)?;
            if let Some(endpoint) = &self.metrics {
                crate::announce_metrics(endpoint.local_addr())?;
            }
            crate::notify::ready();
            tracing::info!(
                workers = self.workers.len(),
                pid = std::process::id(),
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
            // Drain a `failed` report written just before exiting.
            let mut status_reader = w.status;
            let last_words = status_reader.read().into_iter().find_map(|r| match r {
                Report::Failed(m) => Some(m),
                _ => None,
            });
            let counted = self.board.cell(w.cell).counters();
            let accepted = counted.accepted;
            self.retired = self.retired.add(counted.without_gauges());
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
                continue;
            }
            tracing::warn!(
                pid = pid.as_raw(),
                slot = w.slot,
                generation = w.generation,
                accepted,
                "worker exited unexpectedly ({how})"
            );
            if w.phase == Phase::Starting {
                let message =
                    last_words.unwrap_or_else(|| format!("a worker exited while starting ({how})"));
                self.worker_failed(w.generation, message)?;
            }
            // Back off if it died young; reset once a worker has lived a while.
            if let Some(slot) = self.slots.get_mut(w.slot) {
                if w.started.elapsed() < YOUNG {
                    slot.failures += 1;
                    let delay = (Duration::from_millis(50) * 2u32.pow(slot.failures.min(10)))
                        .min(MAX_BACKOFF);
                    slot.not_before = Instant::now() + delay;
                    if slot.failures > 1 {
                        tracing::warn!(
                            slot = w.slot,
                            "worker keeps dying; next start in {delay:?}"
                        );
                    }
                } else {
                    slot.failures = 0;
                }
            }
        }
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
