//! The arbiter's decisions, as a pure state machine: which worker to start on which slot,
//! when to back off, which worker to kill (missed heartbeat, start or stop overdue), when a
//! reload advances or is aborted, when the arbiter stops.
//!
//! [`Supervisor`] is fed what happened — a signal, a worker's report or exit, a fork's
//! result, the passing of time — through one method per event, and answers with
//! [`Action`]s (signal this pid, prepare a reload, announce the listening sockets, …) that
//! the shell (`shell.rs`) carries out. It never forks, kills, waits, reads a clock or
//! touches a socket: time is an argument (`now`), and so is each worker's heartbeat
//! silence. That is what lets `supervisor/tests.rs` run crashes, crash loops, hung workers
//! and reloads without a process.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::backoff::Backoff;
use super::reload::Reload;
use crate::error::HostError;
use crate::metrics::{self, SupervisionCounter};

/// How late a serving worker's heartbeat (sent every 500 ms) may be before new connections
/// are steered away from its slot. Well under `--timeout`: it only decides where new
/// connections go; killing a stuck worker is still `--timeout`'s call.
pub const HEARTBEAT_GRACE: Duration = Duration::from_millis(1500);
/// After `--graceful-timeout`, how long a stopping worker has before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// What the shell is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `signal` to worker `pid`.
    Signal { pid: Pid, signal: Signal },
    /// Re-read the configuration and prepare generation `generation`; answer with
    /// [`Supervisor::reload_prepared`] or [`Supervisor::reload_failed`].
    PrepareReload { generation: u64 },
    /// Tell the service manager (`sd_notify`).
    Notify(Notify),
    /// The first generation serves: print the `listening on` lines, tell the service
    /// manager, log that the arbiter serves.
    Announce,
    /// TTIN: make sockets for one more slot; answer with [`Supervisor::slot_added`].
    AddSlot,
    /// TTOU removed the last slot: its sockets leave their groups once `holders` (the
    /// workers still holding them) are gone.
    RemoveSlot { slot: usize, holders: Vec<Pid> },
    /// Stopping: close the arbiter's copies of the listening sockets.
    CloseSockets,
    /// Slot `slot` has no worker while others serve: hand its queued connections to them
    /// where the kernel can.
    MoveQueued { slot: usize },
}

/// What the service manager is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    Ready,
    Reloading,
    Stopping,
}

/// Where the arbiter is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Waiting for the first generation to report ready.
    Starting,
    Running,
    Stopping,
}

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Forked; loading the plugin.
    Starting,
    Serving,
    /// Told to stop (or stopping on its own); must be gone by the deadline.
    Retiring {
        deadline: Instant,
    },
}

/// One worker process as the supervisor sees it.
#[derive(Clone, Debug)]
pub struct Worker {
    pub pid: Pid,
    pub slot: usize,
    pub generation: u64,
    /// Its cell on the board.
    pub cell: usize,
    pub phase: Phase,
    started: Instant,
    /// Reported that it no longer accepts.
    pub drained: bool,
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

/// One worker position's supervision: its restart back-off.
#[derive(Debug)]
pub struct SlotState {
    backoff: Backoff,
}

/// A worker to start: answer with [`Supervisor::spawned`] or [`Supervisor::spawn_failed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawn {
    pub slot: usize,
    pub generation: u64,
    /// The board cell it posts to.
    pub cell: usize,
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("too many workers at once (the board has room for {0}, live and stopping)")]
    BoardFull(usize),
    /// No pipe, or no process or memory to fork one.
    #[error(transparent)]
    Fork(HostError),
}

impl From<StartError> for HostError {
    fn from(e: StartError) -> HostError {
        match e {
            StartError::Fork(e) => e,
            StartError::BoardFull(_) => HostError::WorkerStartup(e.to_string()),
        }
    }
}

/// The process-wide settings the decisions depend on.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--timeout`: a worker silent (or starting) this long is killed.
    pub timeout: Duration,
    /// `--graceful-timeout`.
    pub graceful_timeout: Duration,
    /// Board cells: how many workers may live at once.
    pub cells: usize,
}

/// The arbiter's decisions (see the module docs).
pub struct Supervisor {
    limits: Limits,
    pub(super) life: Life,
    pub(super) slots: Vec<SlotState>,
    pub(super) workers: Vec<Worker>,
    /// The generation new and replacement workers run.
    pub(super) current: u64,
    pub(super) next_generation: u64,
    pub(super) reload: Reload,
    free_cells: Vec<usize>,
    pub(super) supervision: metrics::Supervision,
    out: VecDeque<Action>,
}

mod events;
#[cfg(test)]
mod tests;

impl Supervisor {
    /// Starting generation 1, with no slot yet (see [`Supervisor::slot_added`]).
    pub fn new(limits: Limits) -> Supervisor {
        Supervisor {
            limits,
            life: Life::Starting,
            slots: Vec::new(),
            workers: Vec::new(),
            current: 1,
            next_generation: 2,
            reload: Reload::Idle,
            free_cells: (0..limits.cells).rev().collect(),
            supervision: metrics::Supervision::default(),
            out: VecDeque::new(),
        }
    }

    /// The next thing for the shell to do.
    pub fn next_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    pub(super) fn act(&mut self, action: Action) {
        self.out.push_back(action);
    }

    /// A slot was added (at startup, or its sockets made for TTIN).
    pub fn slot_added(&mut self, now: Instant) {
        self.slots.push(SlotState {
            backoff: Backoff::new(now),
        });
    }

    /// The workers, live and stopping.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// The worker `pid`, if it is ours.
    pub fn worker(&self, pid: Pid) -> Option<&Worker> {
        self.workers.iter().find(|w| w.pid == pid)
    }

    pub fn life(&self) -> Life {
        self.life
    }

    /// The generation new workers run, and the reload's state.
    pub fn generations(&self) -> (u64, &Reload) {
        (self.current, &self.reload)
    }

    /// Stopped, and every worker has exited.
    pub fn finished(&self) -> bool {
        self.life == Life::Stopping && self.workers.is_empty()
    }

    /// The supervision figures for `/metrics`.
    pub fn supervision(&self) -> metrics::Supervision {
        let mut s = self.supervision.clone();
        s[SupervisionCounter::Workers] = self.workers.len() as u64;
        s
    }

    /// Per slot: whether it takes new connections (a serving worker whose heartbeat is
    /// within [`HEARTBEAT_GRACE`], not draining).
    pub fn live(&self) -> Vec<bool> {
        (0..self.slots.len())
            .map(|s| self.workers.iter().any(|w| w.slot == s && w.accepting()))
            .collect()
    }

    /// `/ready`: running (not starting, not stopping) and every slot has a serving worker of
    /// the current generation (or of a reload's, which is newer).
    pub fn is_ready(&self) -> bool {
        self.life == Life::Running
            && (0..self.slots.len()).all(|slot| {
                self.workers.iter().any(|w| {
                    w.slot == slot && w.phase == Phase::Serving && w.generation >= self.current
                })
            })
    }

    /// The next worker to start so that every slot has one of the current generation (and
    /// of the reloading one), if any may start now (the slot's back-off allows it). A worker
    /// that cannot be given a board cell fails like a fork.
    pub fn next_spawn(&mut self, now: Instant) -> Result<Option<Spawn>, HostError> {
        if self.life == Life::Stopping {
            return Ok(None);
        }
        for slot in 0..self.slots.len() {
            let wanted = [Some(self.current), self.reload.starting()];
            for generation in wanted.into_iter().flatten() {
                let has = self.workers.iter().any(|w| {
                    w.slot == slot
                        && w.generation == generation
                        && !matches!(w.phase, Phase::Retiring { .. })
                });
                if has || !self.slots[slot].backoff.ready(now) {
                    continue;
                }
                match self.free_cells.pop() {
                    Some(cell) => {
                        return Ok(Some(Spawn {
                            slot,
                            generation,
                            cell,
                        }))
                    }
                    None => {
                        let full = StartError::BoardFull(self.limits.cells);
                        self.start_failed(slot, generation, full, now)?;
                    }
                }
            }
        }
        Ok(None)
    }

    /// The worker asked for by [`Supervisor::next_spawn`] was forked as `pid`.
    pub fn spawned(&mut self, spawn: Spawn, pid: Pid, now: Instant) {
        let Spawn {
            slot,
            generation,
            cell,
        } = spawn;
        // At startup this is debug detail: a start that fails must print only its `error:`.
        if self.life == Life::Starting {
            tracing::debug!(pid = pid.as_raw(), slot, generation, "worker spawned");
        } else {
            tracing::info!(pid = pid.as_raw(), slot, generation, "worker spawned");
        }
        self.supervision[SupervisionCounter::WorkerStarts] += 1;
        self.workers.push(Worker {
            pid,
            slot,
            generation,
            cell,
            phase: Phase::Starting,
            started: now,
            drained: false,
            timed_out: false,
            late: false,
            reported_failure: false,
        });
    }

    /// The worker asked for by [`Supervisor::next_spawn`] could not be forked: fatal at
    /// startup; later it aborts a reload, or backs off that slot while the others serve.
    pub fn spawn_failed(
        &mut self,
        spawn: Spawn,
        error: StartError,
        now: Instant,
    ) -> Result<(), HostError> {
        self.free_cells.push(spawn.cell);
        self.start_failed(spawn.slot, spawn.generation, error, now)
    }

    fn start_failed(
        &mut self,
        slot: usize,
        generation: u64,
        error: StartError,
        now: Instant,
    ) -> Result<(), HostError> {
        if self.life == Life::Starting {
            return Err(error.into());
        }
        if self.reload.starting() == Some(generation) {
            self.abort_reload(generation, &format!("cannot start a new worker: {error}"));
        } else {
            let delay = self.slots[slot].backoff.failed(now);
            tracing::warn!(slot, "cannot start a worker: {error}; next attempt in {delay:?}, the other workers keep serving");
        }
        Ok(())
    }

    /// A worker could not start: fatal at startup, aborts a reload, else logged (its exit
    /// backs its slot off).
    pub(super) fn worker_failed(
        &mut self,
        generation: u64,
        message: String,
    ) -> Result<(), HostError> {
        if self.life == Life::Starting {
            return Err(HostError::WorkerStartup(message));
        }
        if self.reload.starting() == Some(generation) {
            self.abort_reload(generation, &message);
        } else {
            tracing::error!("worker failed to start: {message}");
        }
        Ok(())
    }

    /// Tell the matching workers to stop gracefully.
    pub(super) fn retire_where(&mut self, now: Instant, mut which: impl FnMut(&Worker) -> bool) {
        let deadline = now + self.limits.graceful_timeout + KILL_GRACE;
        let mut told = Vec::new();
        for w in self.workers.iter_mut().filter(|w| which(w)) {
            if !matches!(w.phase, Phase::Retiring { .. }) {
                told.push(w.pid);
                w.phase = Phase::Retiring { deadline };
            }
        }
        for pid in told {
            self.act(Action::Signal {
                pid,
                signal: Signal::SIGTERM,
            });
        }
    }

    /// Slot `slot` may have lost its last worker while others serve: ask the shell to hand
    /// its queued connections over.
    fn check_queued(&mut self, slot: usize) {
        let worker_left = self.workers.iter().any(|w| w.slot == slot);
        let others_serve = self.workers.iter().any(|w| w.slot != slot && w.accepting());
        if self.life == Life::Running && !worker_left && others_serve && slot < self.slots.len() {
            self.act(Action::MoveQueued { slot });
        }
    }
}
