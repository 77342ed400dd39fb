//! What the supervisor is fed: signals, worker reports and exits, and the passing of time.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{Action, Life, Notify, Phase, Supervisor, HEARTBEAT_GRACE};
use crate::error::HostError;
use crate::metrics::SupervisionCounter;

impl Supervisor {
    /// A signal to the arbiter (USR1 and CHLD are the shell's: it reopens the log, it reaps).
    pub fn signal(&mut self, sig: Signal, now: Instant) {
        match sig {
            Signal::SIGTERM | Signal::SIGINT => self.stop(false, sig, now),
            Signal::SIGQUIT => self.stop(true, sig, now),
            Signal::SIGHUP => self.begin_reload(),
            Signal::SIGTTIN if self.life == Life::Running => self.act(Action::AddSlot),
            Signal::SIGTTOU if self.life == Life::Running && self.slots.len() > 1 => {
                let slot = self.slots.len() - 1;
                self.retire_where(now, |w| w.slot == slot);
                self.slots.pop();
                // Its sockets leave their groups once the workers still holding them are gone
                // (a drained worker has closed them already).
                let holders = self
                    .workers
                    .iter()
                    .filter(|w| w.slot == slot && !w.drained)
                    .map(|w| w.pid)
                    .collect();
                self.act(Action::RemoveSlot { slot, holders });
                tracing::info!(workers = self.slots.len(), "SIGTTOU: one worker fewer");
            }
            _ => {}
        }
    }

    /// Graceful (TERM/INT) or immediate (QUIT) stop of every worker.
    fn stop(&mut self, immediate: bool, sig: Signal, now: Instant) {
        if self.life == Life::Stopping && !immediate {
            return;
        }
        let grace = if immediate {
            Duration::from_secs(1)
        } else {
            self.limits.graceful_timeout + super::KILL_GRACE
        };
        let deadline = now + grace;
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
        self.life = Life::Stopping;
        self.abandon_reload();
        self.act(Action::Notify(Notify::Stopping));
        // Close our copies of the listening sockets: once the workers drop theirs, new
        // connection attempts are refused instead of queueing for nobody.
        self.slots.clear();
        self.act(Action::CloseSockets);
        let signal = if immediate {
            Signal::SIGQUIT
        } else {
            Signal::SIGTERM
        };
        let pids: Vec<Pid> = self.workers.iter().map(|w| w.pid).collect();
        for w in &mut self.workers {
            w.phase = Phase::Retiring { deadline };
        }
        for pid in pids {
            self.act(Action::Signal { pid, signal });
        }
    }

    /// Worker `pid` reported `ready` (with each service's plugin name and version). Returns
    /// whether it just started serving: its heartbeat counts from now (loading the plugin
    /// may have taken longer than the heartbeat grace).
    pub fn ready(&mut self, pid: Pid, plugins: Vec<crate::metrics::PluginId>) -> bool {
        let current = self.current;
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return false;
        };
        let started = w.phase == Phase::Starting;
        if started {
            w.phase = Phase::Serving;
        }
        if !plugins.is_empty() && w.generation >= current {
            self.supervision.plugins = plugins;
        }
        if self.life == Life::Starting && self.workers.iter().all(|w| w.phase == Phase::Serving) {
            self.life = Life::Running;
            self.act(Action::Announce);
        }
        started
    }

    /// Worker `pid` reported that it could not start.
    pub fn failed(&mut self, pid: Pid, message: String) -> Result<(), HostError> {
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return Ok(());
        };
        w.reported_failure = true;
        let generation = w.generation;
        self.worker_failed(generation, message)
    }

    /// Worker `pid` began a graceful stop on its own (`--max-requests`).
    pub fn retiring(&mut self, pid: Pid, now: Instant) {
        tracing::info!(
            pid = pid.as_raw(),
            "worker recycling (--max-requests); starting its replacement"
        );
        self.retire_where(now, |w| w.pid == pid);
    }

    /// Worker `pid` no longer accepts (it has closed its listening sockets).
    pub fn draining(&mut self, pid: Pid) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
            w.drained = true;
        }
    }

    /// Worker `pid` exited (`how`: its exit status, for the log), after writing
    /// `last_words` (a `failed` report) and accepting `accepted` connections.
    pub fn exited(
        &mut self,
        pid: Pid,
        how: &str,
        last_words: Option<String>,
        accepted: u64,
        now: Instant,
    ) -> Result<(), HostError> {
        let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
            return Ok(());
        };
        let w = self.workers.swap_remove(i);
        self.free_cells.push(w.cell);
        let expected = matches!(w.phase, Phase::Retiring { .. });
        if w.timed_out {
            self.supervision[SupervisionCounter::WorkerExitsTimeout] += 1;
        } else if expected {
            self.supervision[SupervisionCounter::WorkerExitsRetired] += 1;
        } else {
            self.supervision[SupervisionCounter::WorkerExitsCrashed] += 1;
        }
        let pid = pid.as_raw();
        if expected {
            tracing::info!(pid, slot = w.slot, accepted, "worker exited ({how})");
            // Killed for missing its heartbeat: connections may wait in its queue.
            self.check_queued(w.slot);
            return Ok(());
        }
        tracing::warn!(
            pid,
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
            let delay = slot.backoff.exited(now.duration_since(w.started), now);
            if let Some(delay) = delay.filter(|_| slot.backoff.failures() > 1) {
                tracing::warn!(slot = w.slot, "worker keeps dying; next start in {delay:?}");
            }
        }
        self.check_queued(w.slot);
        Ok(())
    }

    /// Time passed: kill overdue workers, advance or finish a reload, and note which
    /// serving workers' heartbeats are late. `silence(cell)`: how long since the worker
    /// posting to board cell `cell` last beat.
    pub fn tick(&mut self, now: Instant, silence: impl Fn(usize) -> Duration) {
        self.check_deadlines(now, &silence);
        self.advance_reload(now);
        self.finish_handover(now);
        self.check_heartbeats(&silence);
    }

    /// Kill workers that stopped sending heartbeats, took too long to start, or overstayed
    /// their retirement.
    fn check_deadlines(&mut self, now: Instant, silence: &impl Fn(usize) -> Duration) {
        let timeout = self.limits.timeout;
        let mut killed = Vec::new();
        let mut stuck_reload = None;
        for w in &mut self.workers {
            let silent = silence(w.cell);
            let kill_reason = match w.phase {
                Phase::Starting if now.duration_since(w.started) > timeout => Some(format!(
                    "did not start within --timeout {}s",
                    timeout.as_secs()
                )),
                Phase::Serving if silent.as_millis() > timeout.as_millis() => Some(format!(
                    "no heartbeat for {} ms (--timeout {}s): its event loop is stuck",
                    silent.as_millis(),
                    timeout.as_secs()
                )),
                Phase::Retiring { deadline } if now > deadline => {
                    Some("still running after the graceful timeout".to_string())
                }
                _ => None,
            };
            let Some(reason) = kill_reason else { continue };
            let pid = w.pid.as_raw();
            tracing::warn!(pid, slot = w.slot, "killing worker: {reason}");
            killed.push(w.pid);
            w.timed_out = true;
            if w.phase == Phase::Starting {
                stuck_reload = Some((w.generation, reason));
            }
            // Reaped (and replaced) once it is gone; don't kill it again meanwhile.
            w.phase = Phase::Retiring {
                deadline: now + Duration::from_secs(3600),
            };
        }
        for pid in killed {
            self.act(Action::Signal {
                pid,
                signal: Signal::SIGKILL,
            });
        }
        if let Some((generation, reason)) = stuck_reload {
            self.abort_reload(generation, &format!("a new worker {reason}"));
        }
    }

    /// Note which serving workers' heartbeats are later than [`HEARTBEAT_GRACE`] (new
    /// connections avoid their slots; see [`Supervisor::live`]).
    fn check_heartbeats(&mut self, silence: &impl Fn(usize) -> Duration) {
        if self.life == Life::Stopping || self.slots.is_empty() {
            return;
        }
        let running = self.life == Life::Running;
        let timeout = self.limits.timeout.as_secs();
        for w in &mut self.workers {
            if w.phase != Phase::Serving || w.drained {
                continue;
            }
            let silent = silence(w.cell);
            let late = silent.as_millis() > HEARTBEAT_GRACE.as_millis();
            if late == w.late {
                continue;
            }
            w.late = late;
            if !running {
                continue;
            }
            let (pid, slot) = (w.pid.as_raw(), w.slot);
            if late {
                tracing::warn!(
                    pid,
                    slot,
                    "worker missed its heartbeats for {} ms: new connections go to the other workers (it is killed at --timeout {timeout}s)",
                    silent.as_millis()
                );
            } else {
                tracing::info!(
                    pid,
                    slot,
                    "worker's heartbeat is back: it takes new connections again"
                );
            }
        }
    }
}
