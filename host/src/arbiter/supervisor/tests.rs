//! The supervisor's decisions, without a process: pids are made up, time is `t0 + …`, and
//! each worker's heartbeat silence is whatever the test says.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{Action, Life, Limits, Notify, Phase, StartError, Supervisor};
use crate::arbiter::reload::Reload;
use crate::error::HostError;
use crate::metrics::SupervisionCounter;

const TIMEOUT: Duration = Duration::from_secs(30);
const GRACEFUL: Duration = Duration::from_secs(10);

/// A supervisor and a clock.
struct Run {
    sup: Supervisor,
    t0: Instant,
    next_pid: i32,
}

impl Run {
    /// Started with `slots` slots; nothing spawned yet.
    fn new(slots: usize) -> Run {
        Run::with_cells(slots, 64)
    }

    fn with_cells(slots: usize, cells: usize) -> Run {
        let limits = Limits {
            timeout: TIMEOUT,
            graceful_timeout: GRACEFUL,
            cells,
        };
        let t0 = Instant::now();
        let mut sup = Supervisor::new(limits);
        for _ in 0..slots {
            sup.slot_added(t0);
        }
        Run {
            sup,
            t0,
            next_pid: 100,
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// Fork (pretend) every worker the supervisor wants at `secs`; their pids.
    fn spawn_all(&mut self, secs: f64) -> Vec<Pid> {
        self.spawn_at(self.at(secs))
    }

    fn spawn_at(&mut self, now: Instant) -> Vec<Pid> {
        let mut pids = Vec::new();
        while let Some(s) = self.sup.next_spawn(now).expect("not fatal") {
            let pid = Pid::from_raw(self.next_pid);
            self.next_pid += 1;
            self.sup.spawned(s, pid, now);
            pids.push(pid);
        }
        pids
    }

    /// The workers wanted at `secs` as (slot, generation), without starting them.
    fn wanted(&mut self, secs: f64) -> Vec<(usize, u64)> {
        let mut w = Vec::new();
        while let Some(s) = self.sup.next_spawn(self.at(secs)).expect("not fatal") {
            w.push((s.slot, s.generation));
            let error = StartError::Fork(HostError::WorkerStartup("test".into()));
            // Give the cell back; in a reload this aborts it, so only use it outside one.
            self.sup.spawn_failed(s, error, self.at(secs)).unwrap();
        }
        w
    }

    /// HUP at `secs`, and generation `generation` prepared.
    fn reload(&mut self, generation: u64, secs: f64) {
        self.sup.signal(Signal::SIGHUP, self.at(secs));
        let actions = self.actions();
        assert!(
            actions.contains(&Action::PrepareReload { generation }),
            "{actions:?}"
        );
        self.sup.reload_prepared(generation, self.at(secs));
    }

    fn ready(&mut self, pids: &[Pid]) {
        for &pid in pids {
            self.sup.ready(pid, Vec::new());
        }
    }

    /// The actions asked for since the last call.
    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.sup.next_action()).collect()
    }

    /// A tick at `secs`, every heartbeat `silent` old.
    fn tick(&mut self, secs: f64, silent: Duration) {
        self.sup.tick(self.at(secs), |_| silent);
    }

    fn exit(&mut self, pid: Pid, secs: f64) {
        self.sup
            .exited(pid, "killed by SIGKILL", None, 0, self.at(secs))
            .expect("not fatal");
    }

    /// Started and serving: `slots` workers of generation 1.
    fn serving(slots: usize) -> (Run, Vec<Pid>) {
        let mut run = Run::new(slots);
        let pids = run.spawn_all(0.0);
        assert_eq!(pids.len(), slots);
        run.ready(&pids);
        assert_eq!(run.actions(), [Action::Announce]);
        assert_eq!(run.sup.life(), Life::Running);
        (run, pids)
    }

    fn phase(&self, pid: Pid) -> Phase {
        self.sup.worker(pid).expect("a worker").phase
    }
}

fn signals(actions: &[Action], signal: Signal) -> Vec<Pid> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { pid, signal: s } if *s == signal => Some(*pid),
            _ => None,
        })
        .collect()
}

const OK: Duration = Duration::from_millis(100);

mod reloads;

#[test]
fn startup_announces_once_every_worker_serves_and_a_failure_is_fatal() {
    let mut run = Run::new(2);
    let pids = run.spawn_all(0.0);
    run.ready(&pids[..1]);
    assert!(run.actions().is_empty(), "not before the last is ready");
    assert!(!run.sup.is_ready());
    run.ready(&pids[1..]);
    assert_eq!(run.actions(), [Action::Announce]);
    assert!(run.sup.is_ready());

    let mut run = Run::new(2);
    let pids = run.spawn_all(0.0);
    let fatal = run.sup.failed(pids[1], "plugin: cannot load".into());
    assert!(matches!(fatal, Err(HostError::WorkerStartup(m)) if m == "plugin: cannot load"));
    let mut run = Run::with_cells(2, 1);
    let fatal = run.sup.next_spawn(run.t0).map(|_| ());
    let fatal = fatal.and_then(|()| run.sup.next_spawn(run.t0).map(|_| ()));
    assert!(matches!(fatal, Err(HostError::WorkerStartup(m)) if m.contains("too many workers")));
}

#[test]
fn a_crashed_worker_is_replaced_at_once_and_its_slot_down_meanwhile() {
    let (mut run, pids) = Run::serving(2);
    run.exit(pids[0], 60.0);
    assert_eq!(
        run.sup.supervision()[SupervisionCounter::WorkerExitsCrashed],
        1
    );
    // It lived long: no back-off; the other slot keeps serving.
    assert_eq!(run.sup.live(), [false, true]);
    assert_eq!(run.actions(), [Action::MoveQueued { slot: 0 }]);
    let new = run.spawn_all(60.0);
    assert_eq!(new.len(), 1);
    assert_eq!(run.sup.worker(new[0]).unwrap().slot, 0);
    run.ready(&new);
    assert_eq!(run.sup.live(), [true, true]);
    assert!(run.sup.is_ready());
}

#[test]
fn a_crash_loop_backs_the_slot_off_doubling_while_the_others_serve() {
    let (mut run, pids) = Run::serving(2);
    // Slot 1's worker dies after a long life: replaced at once.
    run.exit(pids[1], 60.0);
    let mut now = run.at(60.0);
    let mut pid = run.spawn_at(now);
    let ms = Duration::from_millis;
    for pause in [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000] {
        assert_eq!(pid.len(), 1);
        // It dies young: no replacement until the pause is over.
        now += ms(10);
        run.sup
            .exited(pid[0], "exit status 1", None, 0, now)
            .unwrap();
        assert!(
            run.spawn_at(now + ms(pause - 1)).is_empty(),
            "before {pause} ms"
        );
        assert_eq!(run.sup.live(), [true, false], "slot 0 serves throughout");
        now += ms(pause);
        pid = run.spawn_at(now);
    }
    assert_eq!(
        run.sup.supervision()[SupervisionCounter::WorkerExitsCrashed],
        10
    );
    // One that lives long clears the count.
    run.ready(&pid);
    now += Duration::from_secs(6);
    run.sup
        .exited(pid[0], "exit status 1", None, 0, now)
        .unwrap();
    assert_eq!(run.spawn_at(now).len(), 1);
}

#[test]
fn a_missed_heartbeat_steers_away_then_kills_at_the_timeout() {
    let (mut run, pids) = Run::serving(2);
    run.tick(1.0, OK);
    assert_eq!(run.sup.live(), [true, true]);
    // Late past the grace: new connections avoid it, nobody is killed.
    run.tick(3.0, Duration::from_millis(2000));
    assert_eq!(run.sup.live(), [false, false]);
    assert!(run.actions().is_empty());
    // Back on time: live again.
    run.tick(3.5, OK);
    assert_eq!(run.sup.live(), [true, true]);
    // Silent past --timeout: killed, then replaced once reaped.
    let stuck = pids[1];
    let cell = run.sup.worker(stuck).unwrap().cell;
    let silence = |c| if c == cell { TIMEOUT + OK } else { OK };
    run.sup.tick(run.at(40.0), silence);
    assert_eq!(signals(&run.actions(), Signal::SIGKILL), [stuck]);
    assert!(matches!(run.phase(stuck), Phase::Retiring { .. }));
    assert_eq!(run.sup.live(), [true, false]);
    // Not killed twice while it dies.
    run.sup.tick(run.at(41.0), silence);
    assert!(run.actions().is_empty());
    run.exit(stuck, 41.0);
    assert_eq!(
        run.sup.supervision()[SupervisionCounter::WorkerExitsTimeout],
        1
    );
    assert_eq!(
        run.sup.supervision()[SupervisionCounter::WorkerExitsCrashed],
        0
    );
    assert_eq!(run.spawn_all(41.0).len(), 1);
}

#[test]
fn a_stop_signals_every_worker_and_ends_when_they_are_gone() {
    let (mut run, pids) = Run::serving(2);
    run.sup.signal(Signal::SIGTERM, run.at(1.0));
    let actions = run.actions();
    assert_eq!(signals(&actions, Signal::SIGTERM), pids);
    assert!(actions.contains(&Action::CloseSockets));
    assert!(run.wanted(1.0).is_empty());
    run.exit(pids[0], 2.0);
    assert!(!run.sup.finished());
    run.exit(pids[1], 2.0);
    assert!(run.sup.finished());
    assert_eq!(
        run.sup.supervision()[SupervisionCounter::WorkerExitsRetired],
        2
    );
}

#[test]
fn a_worker_that_does_not_stop_in_time_is_killed() {
    let (mut run, pids) = Run::serving(1);
    run.sup.retiring(pids[0], run.at(1.0));
    assert_eq!(signals(&run.actions(), Signal::SIGTERM), pids);
    // Its replacement starts while it drains.
    assert_eq!(run.wanted(1.0), [(0, 1)]);
    let overdue = 1.0 + (GRACEFUL + Duration::from_secs(6)).as_secs_f64();
    run.tick(overdue, OK);
    assert_eq!(signals(&run.actions(), Signal::SIGKILL), pids);
}
