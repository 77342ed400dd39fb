//! The reload (HUP) as one state: idle, starting generation N, or handing over to it.
//!
//! Like rustls's handshake states, every transition is one method, and nothing else changes
//! the state. A reload *starts* generation N beside the current workers; once every slot has
//! a serving worker of N, N becomes the current generation and the old workers are told to
//! stop: the reload is *handing over* until every old worker has stopped accepting (or
//! exited), so from then on every new connection reaches the new code. A reload that cannot
//! start its generation is *aborted*: its workers are killed and the current ones keep
//! serving. A HUP while starting is remembered (`again`) and runs once this one has ended.
//!
//! A HUP during a handover starts the next generation at once; the handover still finishing
//! rides along in [`Reload::Starting`] so that its end is still announced.
//!
//! The [`Supervisor`]'s methods that drive a reload live here too, beside the state they
//! change; they decide, and leave the side effects to the shell as [`Action`]s.

use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::supervisor::{Action, Life, Notify, Phase, Supervisor};
use crate::metrics::SupervisionCounter;

/// The end of a reload: the new generation serves; the old one is still being told to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handover {
    pub generation: u64,
    pub started: Instant,
    /// The old workers; the reload is finished once none of them accepts.
    pub old: Vec<Pid>,
}

/// Where the reload is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reload {
    #[default]
    Idle,
    /// Generation `generation`'s workers are starting beside the current ones.
    Starting {
        generation: u64,
        started: Instant,
        /// A HUP arrived meanwhile: run another reload when this one ends.
        again: bool,
        /// The previous reload's handover, still finishing.
        finishing: Option<Handover>,
    },
    HandingOver(Handover),
}

impl Reload {
    /// The generation being started, if any.
    pub fn starting(&self) -> Option<u64> {
        match self {
            Reload::Starting { generation, .. } => Some(*generation),
            _ => None,
        }
    }

    /// Idle or handing over → starting `generation`.
    fn start(&mut self, generation: u64, now: Instant) {
        let finishing = match std::mem::take(self) {
            Reload::HandingOver(h) => Some(h),
            _ => None,
        };
        *self = Reload::Starting {
            generation,
            started: now,
            again: false,
            finishing,
        };
    }

    /// A HUP while starting: remember to reload again. False if not starting.
    fn again(&mut self) -> bool {
        match self {
            Reload::Starting { again, .. } => {
                *again = true;
                true
            }
            _ => false,
        }
    }

    /// Starting → handing over to the generation started, from the `old` workers. Returns
    /// whether another reload was asked for meanwhile.
    fn promote(&mut self, old: Vec<Pid>) -> bool {
        let Reload::Starting {
            generation,
            started,
            again,
            ..
        } = std::mem::take(self)
        else {
            return false;
        };
        *self = Reload::HandingOver(Handover {
            generation,
            started,
            old,
        });
        again
    }

    /// Starting → back to the previous handover (or idle): the generation failed. Returns
    /// the generation and whether another reload was asked for meanwhile.
    fn abort(&mut self) -> Option<(u64, bool)> {
        let Reload::Starting {
            generation,
            again,
            finishing,
            ..
        } = std::mem::take(self)
        else {
            return None;
        };
        *self = finishing.map_or(Reload::Idle, Reload::HandingOver);
        Some((generation, again))
    }

    /// The arbiter stops: a starting generation is dropped (its workers are stopped with
    /// every other), a handover goes on being watched.
    fn abandon(&mut self) {
        self.abort();
    }

    /// The handover, if one is under way (finishing beside a starting reload or not).
    fn handover(&self) -> Option<&Handover> {
        match self {
            Reload::HandingOver(h) => Some(h),
            Reload::Starting { finishing, .. } => finishing.as_ref(),
            Reload::Idle => None,
        }
    }

    /// The handover ended (no old worker accepts any more).
    fn handed_over(&mut self) {
        match self {
            Reload::HandingOver(_) => *self = Reload::Idle,
            Reload::Starting { finishing, .. } => *finishing = None,
            Reload::Idle => {}
        }
    }
}

impl Supervisor {
    /// HUP: prepare a new generation (the shell re-reads the configuration, snapshots the
    /// plugins, and answers [`Supervisor::reload_prepared`] or [`Supervisor::reload_failed`]).
    pub(super) fn begin_reload(&mut self) {
        if self.life != Life::Running {
            return;
        }
        if self.reload.again() {
            tracing::info!("SIGHUP during a reload: another reload will follow this one");
            return;
        }
        tracing::info!("reload started: re-reading the configuration, plugins and certificates");
        self.act(Action::Notify(Notify::Reloading));
        self.act(Action::PrepareReload {
            generation: self.next_generation,
        });
    }

    /// The new generation is prepared: start its workers.
    pub fn reload_prepared(&mut self, generation: u64, now: Instant) {
        self.next_generation = generation + 1;
        self.reload.start(generation, now);
    }

    /// The new generation could not be prepared (configuration, plugin, certificates).
    pub fn reload_failed(&mut self, error: &dyn std::fmt::Display) {
        tracing::error!("reload aborted: {error}; the current workers keep serving");
        self.supervision[SupervisionCounter::ReloadsAborted] += 1;
        self.act(Action::Notify(Notify::Ready));
    }

    /// Finish starting a reload whose workers all serve: they become the current
    /// generation, and the old workers are told to stop.
    pub(super) fn advance_reload(&mut self, now: Instant) {
        let Some(id) = self.reload.starting() else {
            return;
        };
        let serving = self
            .workers
            .iter()
            .filter(|w| w.generation == id && w.phase == Phase::Serving)
            .count();
        if serving < self.slots.len() {
            return;
        }
        self.supervision[SupervisionCounter::ReloadsOk] += 1;
        let old_id = std::mem::replace(&mut self.current, id);
        self.retire_where(now, |w| w.generation != id);
        tracing::info!(
            generation = id,
            "reload: all new workers serving; retiring generation {old_id}"
        );
        self.act(Action::Notify(Notify::Ready));
        let old = self
            .workers
            .iter()
            .filter(|w| w.generation != id)
            .map(|w| w.pid)
            .collect();
        if self.reload.promote(old) {
            self.begin_reload();
        }
    }

    /// Declare a reload finished once the old workers no longer accept.
    pub(super) fn finish_handover(&mut self, now: Instant) {
        let Some(h) = self.reload.handover() else {
            return;
        };
        let pending = h
            .old
            .iter()
            .any(|pid| self.workers.iter().any(|w| w.pid == *pid && !w.drained));
        if !pending {
            tracing::info!(
                generation = h.generation,
                elapsed_ms = now.duration_since(h.started).as_millis() as u64,
                "reload finished: only the new generation accepts connections"
            );
            self.reload.handed_over();
        }
    }

    /// Abort the reload starting `generation` (if it still is): kill its workers; the
    /// current ones keep serving.
    pub(super) fn abort_reload(&mut self, generation: u64, why: &str) {
        if self.reload.starting() != Some(generation) {
            return;
        }
        let Some((id, again)) = self.reload.abort() else {
            return;
        };
        self.supervision[SupervisionCounter::ReloadsAborted] += 1;
        let doomed: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.generation == id)
            .map(|w| w.pid)
            .collect();
        for pid in doomed {
            self.act(Action::Signal {
                pid,
                signal: Signal::SIGKILL,
            });
        }
        tracing::error!("reload aborted: {why}; the current workers keep serving");
        self.act(Action::Notify(Notify::Ready));
        if again {
            self.begin_reload();
        }
    }

    /// The arbiter stops: no reload is started any more.
    pub(super) fn abandon_reload(&mut self) {
        self.reload.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transition_moves_between_the_three_states() {
        let t0 = Instant::now();
        let mut r = Reload::Idle;
        assert!(!r.again(), "a HUP while idle is a new reload, not a repeat");
        r.start(2, t0);
        assert_eq!(r.starting(), Some(2));
        assert!(r.again());
        let old = vec![Pid::from_raw(7)];
        assert!(
            r.promote(old.clone()),
            "the repeat is reported once promoted"
        );
        assert_eq!(
            r.handover().map(|h| (h.generation, &h.old)),
            Some((2, &old))
        );
        // The next reload starts while generation 2's handover still finishes.
        r.start(3, t0);
        assert_eq!(r.starting(), Some(3));
        assert_eq!(r.handover().map(|h| h.generation), Some(2));
        assert_eq!(r.abort(), Some((3, false)));
        assert_eq!(r.handover().map(|h| h.generation), Some(2));
        r.handed_over();
        assert_eq!(r, Reload::Idle);
        assert_eq!(r.abort(), None);
        assert!(!r.promote(Vec::new()));
        r.start(4, t0);
        r.abandon();
        assert_eq!(r, Reload::Idle);
    }
}
