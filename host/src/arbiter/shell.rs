//! The arbiter's side effects: the thin shell around the [`Supervisor`].
//!
//! Each turn of the loop it waits for a signal, a worker's report or the next tick, feeds
//! what happened (signals, reports, exits collected with `waitpid`, each worker's heartbeat
//! silence read from the board) to the supervisor, and carries out the [`Action`]s it
//! answers with: fork, kill, prepare a reload, print the `listening on` lines, make or drop
//! a slot's sockets, steer new connections, answer metrics scrapes. It makes no decision
//! of its own about a worker's fate.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::board::{now_ms, Board};
use super::generation::{same_sockets, Generation};
use super::listeners::ListenerSlot;
use super::signals::Signals;
use super::spawn::{spawn, WorkerSpec};
use super::status::{Report, StatusReader};
use super::steering::Steering;
use super::supervisor::{Action, Life, Notify, Spawn, StartError, Supervisor};
use crate::cli::Config;
use crate::error::HostError;
use crate::metrics;
use crate::privileges::Identity;

/// How often the loop wakes with nothing to do (heartbeat checks, deadlines).
const TICK: Duration = Duration::from_millis(100);

/// Process mode's running state: what the supervisor decides with, and what it acts on.
pub(super) struct Arbiter<'c> {
    pub config: &'c Config,
    pub identity: Option<Identity>,
    pub signals: Signals,
    pub board: &'static Board,
    pub supervisor: Supervisor,
    /// Each slot's sockets (the supervisor has one `SlotState` per entry).
    pub slots: Vec<ListenerSlot>,
    /// Each worker's status pipe.
    pub pipes: Vec<(Pid, StatusReader)>,
    /// The current generation and the reloading one.
    pub generations: Vec<Generation>,
    /// `--metrics-bind`: the endpoint.
    pub metrics: Option<metrics::Endpoint>,
    /// Per service: what exited workers counted.
    pub retired: Vec<metrics::Counters>,
    /// Which slots new connections may reach.
    pub steering: Steering,
    /// The slots new connections were last announced (logged) to avoid.
    pub announced_down: Vec<usize>,
    /// `--access-log`, opened here so that workers inherit it (and reopened here on USR1).
    pub access_log: Option<crate::access_log::Sink>,
}

impl Arbiter<'_> {
    /// The supervision loop; returns when the last worker has exited after a stop.
    pub fn supervise(&mut self) -> Result<(), HostError> {
        loop {
            // The arbiter draws the session-ticket secrets its workers share.
            crate::tls::tickets::rotate_if_due();
            self.spawn_missing()?;
            self.wait_for_events();
            for sig in self.signals.drain() {
                self.on_signal(sig);
                self.execute()?;
            }
            self.read_reports()?;
            self.execute()?;
            self.reap()?;
            let board = self.board;
            let now_board = now_ms();
            self.supervisor.tick(Instant::now(), |cell| {
                let beat = board.cell(cell).heartbeat_ms.load(Ordering::Relaxed);
                Duration::from_millis(now_board.saturating_sub(beat))
            });
            self.execute()?;
            self.steer();
            self.serve_metrics();
            if self.supervisor.finished() {
                tracing::info!("all workers exited; arbiter stopping");
                return Ok(());
            }
        }
    }

    /// Carry out what the supervisor asked for, then let go of generations no longer run.
    fn execute(&mut self) -> Result<(), HostError> {
        while let Some(action) = self.supervisor.next_action() {
            match action {
                Action::Signal { pid, signal } => {
                    let _ = kill(pid, signal);
                }
                Action::PrepareReload { generation } => self.prepare_reload(generation),
                Action::Notify(Notify::Ready) => crate::notify::ready(),
                Action::Notify(Notify::Reloading) => crate::notify::reloading(),
                Action::Notify(Notify::Stopping) => crate::notify::stopping(),
                Action::Announce => {
                    // Steer by the layout the announcement promises (every slot serving)
                    // before anyone can act on it: a peer's first datagram must reach the
                    // worker its later ones will.
                    self.steer();
                    self.announce()?
                }
                Action::AddSlot => match self.add_sibling_slot() {
                    Ok(()) => {
                        tracing::info!(workers = self.slots.len(), "SIGTTIN: one worker more")
                    }
                    Err(e) => tracing::warn!("SIGTTIN: cannot add a worker: {e}"),
                },
                Action::RemoveSlot { slot, holders } => {
                    self.slots.truncate(slot);
                    self.steering.release(slot, &holders);
                }
                Action::CloseSockets => self.close_for_good(),
                Action::MoveQueued { slot } => self.move_queued(slot),
            }
        }
        let (current, reload) = self.supervisor.generations();
        let starting = reload.starting();
        self.generations
            .retain(|g| g.id == current || Some(g.id) == starting);
        Ok(())
    }

    fn on_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGCHLD => {} // reaped every turn
            Signal::SIGUSR1 => self.reopen_access_log(),
            _ => self.supervisor.signal(sig, Instant::now()),
        }
    }

    /// Re-read the configuration, snapshot the plugins and read the certificates for a
    /// reload's new generation.
    fn prepare_reload(&mut self, generation: u64) {
        let prepared = crate::config::reload().and_then(|config| {
            same_sockets(self.config, &config)?;
            Generation::prepare(generation, config)
        });
        match prepared {
            Ok(prepared) => {
                self.generations.push(prepared);
                self.supervisor.reload_prepared(generation, Instant::now());
            }
            Err(e) => self.supervisor.reload_failed(&e),
        }
    }

    /// The first generation serves: print the `listening on` lines (scripts and tests wait
    /// for them) and tell the service manager.
    fn announce(&self) -> Result<(), HostError> {
        crate::stdout::announce(&self.slots[0].sockets)?;
        if let Some(endpoint) = &self.metrics {
            crate::stdout::announce_metrics(endpoint.local_addr())?;
        }
        crate::notify::ready();
        let services = self.service_names();
        tracing::info!(
            workers = self.supervisor.workers().len(),
            pid = std::process::id(),
            services = %services.join(","),
            "serving in process mode"
        );
        Ok(())
    }

    fn service_names(&self) -> Vec<&str> {
        let names = self.config.services.iter().map(|s| s.name.as_str());
        names.collect()
    }

    /// Start the workers the supervisor wants, one at a time (each result may change what
    /// it wants next: a failed fork backs the slot off or aborts a reload).
    fn spawn_missing(&mut self) -> Result<(), HostError> {
        while let Some(wanted) = self.supervisor.next_spawn(Instant::now())? {
            match self.spawn_worker(wanted) {
                Ok((pid, status)) => {
                    self.pipes.push((pid, status));
                    self.supervisor.spawned(wanted, pid, Instant::now());
                }
                Err(e) => {
                    self.supervisor
                        .spawn_failed(wanted, StartError::Fork(e), Instant::now())?;
                }
            }
            self.execute()?;
        }
        Ok(())
    }

    fn spawn_worker(&self, wanted: Spawn) -> Result<(Pid, StatusReader), HostError> {
        let generation = self
            .generations
            .iter()
            .find(|g| g.id == wanted.generation)
            .ok_or_else(|| {
                HostError::WorkerStartup(format!(
                    "generation {} is not prepared",
                    wanted.generation
                ))
            })?;
        let spawned = spawn(WorkerSpec {
            arbiter: nix::unistd::getpid(),
            slot: wanted.slot,
            access_log: self.access_log.as_ref(),
            sockets: &self.slots[wanted.slot].sockets,
            generation,
            cell: self.board.cell(wanted.cell),
            config: self.config,
            identity: self.identity.as_ref(),
        })?;
        Ok((spawned.pid, spawned.status))
    }

    /// Feed the workers' `ready` / `failed` / `retiring` / `draining` reports.
    fn read_reports(&mut self) -> Result<(), HostError> {
        for (pid, status) in &mut self.pipes {
            let pid = *pid;
            for report in status.read() {
                match report {
                    Report::Ready(plugins) => {
                        if self.supervisor.ready(pid, plugins) {
                            // Its event loop beats from now on.
                            if let Some(w) = self.supervisor.worker(pid) {
                                let cell = self.board.cell(w.cell);
                                cell.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
                            }
                        }
                    }
                    Report::Failed(message) => self.supervisor.failed(pid, message)?,
                    Report::Retiring => self.supervisor.retiring(pid, Instant::now()),
                    Report::Draining => {
                        self.supervisor.draining(pid);
                        self.steering.closed_by(pid);
                    }
                }
            }
        }
        Ok(())
    }

    /// Collect exited workers.
    fn reap(&mut self) -> Result<(), HostError> {
        loop {
            let (pid, how) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit status {code}")),
                Ok(WaitStatus::Signaled(pid, sig, core)) => {
                    let core = if core { " (core dumped)" } else { "" };
                    (pid, format!("killed by {}{core}", sig.as_str()))
                }
                Ok(_) => continue,
            };
            let Some(cell) = self.supervisor.worker(pid).map(|w| w.cell) else {
                continue;
            };
            self.steering.closed_by(pid);
            // Drain a `failed` report written just before exiting.
            let last_words = match self.pipes.iter().position(|(p, _)| *p == pid) {
                Some(i) => self.pipes.swap_remove(i).1.read(),
                None => Vec::new(),
            };
            let last_words = last_words.into_iter().find_map(|r| match r {
                Report::Failed(m) => Some(m),
                _ => None,
            });
            let mut accepted = 0;
            for (service, retired) in self.retired.iter_mut().enumerate() {
                let counted = self.board.cell(cell).counters(service);
                accepted += counted[metrics::Counter::Accepted];
                *retired = retired.add(counted.without_gauges());
            }
            self.supervisor
                .exited(pid, &how, last_words, accepted, Instant::now())?;
            self.execute()?;
        }
    }

    /// Answer metrics scrapes that are ready (never blocks).
    fn serve_metrics(&mut self) {
        let ready = self.supervisor.is_ready();
        let Some(endpoint) = &mut self.metrics else {
            return;
        };
        let workers = self.supervisor.workers();
        let counters: Vec<metrics::Counters> = (0..self.retired.len())
            .map(|service| {
                workers.iter().fold(self.retired[service], |sum, w| {
                    sum.add(self.board.cell(w.cell).counters(service))
                })
            })
            .collect();
        let supervision = self.supervisor.supervision();
        let names = self.config.services.iter().map(|s| s.name.as_str());
        let names: Vec<&str> = names.collect();
        endpoint.answer_ready(ready, || metrics::render(&names, &counters, &supervision));
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
        let workers = self.supervisor.workers();
        for w in workers {
            let reopen = &self.board.cell(w.cell).reopen;
            reopen.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            workers = workers.len(),
            "SIGUSR1: access log reopened; the workers follow within half a second"
        );
    }

    /// Sleep until a signal, a worker report, or the next tick.
    fn wait_for_events(&self) {
        let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
        fds.extend(
            self.pipes
                .iter()
                .map(|(_, status)| PollFd::new(status.fd(), PollFlags::POLLIN)),
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

    /// Steer new connections to the slots the supervisor finds live, and log each change.
    fn steer(&mut self) {
        let life = self.supervisor.life();
        if life == Life::Stopping || self.slots.is_empty() {
            return;
        }
        let live = self.supervisor.live();
        self.steering.apply(&live, &self.slots[0].sockets);
        // As the kernel now sees it: with no slot live, nothing is steered.
        let down: Vec<usize> = (0..live.len())
            .filter(|&s| !live[s] && live.contains(&true))
            .collect();
        if life != Life::Running || down == self.announced_down {
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

    /// Last resort when returning an error: no worker may outlive the arbiter.
    pub fn kill_all(&mut self) {
        let pids: Vec<Pid> = self.supervisor.workers().iter().map(|w| w.pid).collect();
        for &pid in &pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        for pid in pids {
            let _ = waitpid(pid, None);
        }
    }
}
