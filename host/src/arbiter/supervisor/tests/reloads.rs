//! Reloads: success, a new generation that fails, a HUP during a reload, TTOU during one.

use super::*;

#[test]
fn a_reload_starts_the_new_generation_then_retires_the_old() {
    let (mut run, old) = Run::serving(2);
    run.sup.signal(Signal::SIGHUP, run.at(1.0));
    assert_eq!(
        run.actions(),
        [
            Action::Notify(Notify::Reloading),
            Action::PrepareReload { generation: 2 }
        ]
    );
    run.sup.reload_prepared(2, run.at(1.0));
    assert_eq!(run.sup.generations().1.starting(), Some(2));
    let new = run.spawn_all(1.0);
    assert_eq!(new.len(), 2);
    assert!(new
        .iter()
        .all(|&p| run.sup.worker(p).unwrap().generation == 2));
    run.ready(&new[..1]);
    run.tick(1.5, OK);
    assert_eq!(
        run.sup.generations().0,
        1,
        "not before every slot's is ready"
    );
    run.ready(&new[1..]);
    run.tick(2.0, OK);
    let actions = run.actions();
    assert_eq!(signals(&actions, Signal::SIGTERM), old);
    assert!(actions.contains(&Action::Notify(Notify::Ready)));
    assert_eq!(run.sup.generations().0, 2);
    assert!(matches!(run.sup.generations().1, Reload::HandingOver(_)));
    assert_eq!(run.sup.supervision()[SupervisionCounter::ReloadsOk], 1);
    // Finished once the old workers no longer accept.
    run.sup.draining(old[0]);
    run.tick(2.5, OK);
    assert!(matches!(run.sup.generations().1, Reload::HandingOver(_)));
    run.sup
        .exited(old[1], "exit status 0", None, 0, run.at(3.0))
        .unwrap();
    run.tick(3.0, OK);
    assert_eq!(*run.sup.generations().1, Reload::Idle);
    assert_eq!(
        run.sup.supervision()[SupervisionCounter::WorkerExitsRetired],
        1
    );
    assert!(
        run.spawn_all(3.0).is_empty(),
        "a retired worker is not replaced"
    );
}

#[test]
fn a_reload_whose_new_generation_fails_is_aborted_and_the_old_one_serves_on() {
    let (mut run, old) = Run::serving(2);
    run.reload(2, 1.0);
    let new = run.spawn_all(1.0);
    run.ready(&new[..1]);
    run.sup.failed(new[1], "plugin: bad symbol".into()).unwrap();
    let actions = run.actions();
    let mut killed = signals(&actions, Signal::SIGKILL);
    killed.sort();
    assert_eq!(killed, new);
    assert!(actions.contains(&Action::Notify(Notify::Ready)));
    assert!(signals(&actions, Signal::SIGTERM).is_empty());
    assert_eq!(*run.sup.generations().1, Reload::Idle);
    assert_eq!(run.sup.generations().0, 1);
    assert_eq!(run.sup.supervision()[SupervisionCounter::ReloadsAborted], 1);
    assert!(old.iter().all(|&p| run.phase(p) == Phase::Serving));
    // The killed workers' exits do not start generation 2 again.
    for &p in &new {
        run.exit(p, 1.1);
    }
    assert!(run
        .spawn_all(1.2)
        .iter()
        .all(|&p| run.sup.worker(p).unwrap().generation == 1));

    // A new generation that cannot even be forked, or never reports: aborted too.
    run.reload(3, 5.0);
    let s = run.sup.next_spawn(run.at(5.0)).unwrap().unwrap();
    assert_eq!(s.generation, 3);
    let e = StartError::Fork(HostError::WorkerStartup("fork: EAGAIN".into()));
    run.sup.spawn_failed(s, e, run.at(5.0)).unwrap();
    assert_eq!(*run.sup.generations().1, Reload::Idle);
    assert_eq!(run.sup.supervision()[SupervisionCounter::ReloadsAborted], 2);
    run.reload(4, 6.0);
    let slow = run.spawn_all(6.0);
    run.actions();
    run.tick(6.0 + TIMEOUT.as_secs_f64() + 1.0, OK);
    let mut killed = signals(&run.actions(), Signal::SIGKILL);
    killed.sort();
    killed.dedup();
    assert_eq!(killed, slow);
    assert_eq!(run.sup.supervision()[SupervisionCounter::ReloadsAborted], 3);
}

#[test]
fn a_hup_during_a_reload_runs_another_once_it_ends() {
    let (mut run, _) = Run::serving(1);
    run.reload(2, 1.0);
    let new = run.spawn_all(1.0);
    run.sup.signal(Signal::SIGHUP, run.at(1.1));
    assert!(run.actions().is_empty(), "remembered, not started");
    run.ready(&new);
    run.tick(1.5, OK);
    let actions = run.actions();
    assert!(actions.contains(&Action::PrepareReload { generation: 3 }));
    run.sup.reload_prepared(3, run.at(1.5));
    // Generation 3 starts while generation 1 still hands over to 2.
    let third = run.spawn_all(1.5);
    assert_eq!(run.sup.worker(third[0]).unwrap().generation, 3);
    run.ready(&third);
    run.tick(2.0, OK);
    assert_eq!(run.sup.generations().0, 3);
    assert_eq!(signals(&run.actions(), Signal::SIGTERM), new);
    assert_eq!(run.sup.supervision()[SupervisionCounter::ReloadsOk], 2);
    // An aborted reload runs the remembered one too.
    run.reload(4, 3.0);
    let fourth = run.spawn_all(3.0);
    run.sup.signal(Signal::SIGHUP, run.at(3.1));
    run.actions();
    run.sup.failed(fourth[0], "bad".into()).unwrap();
    let actions = run.actions();
    assert!(actions.contains(&Action::PrepareReload { generation: 5 }));
}

#[test]
fn ttou_during_a_reload_removes_the_last_slot_of_both_generations() {
    let (mut run, old) = Run::serving(2);
    run.reload(2, 1.0);
    let new = run.spawn_all(1.0);
    assert_eq!(new.len(), 2);
    let on_slot = |run: &Run, pids: &[Pid], slot| {
        *pids
            .iter()
            .find(|&&p| run.sup.worker(p).unwrap().slot == slot)
            .unwrap()
    };
    let (old1, new0, new1) = (
        on_slot(&run, &old, 1),
        on_slot(&run, &new, 0),
        on_slot(&run, &new, 1),
    );
    run.sup.signal(Signal::SIGTTOU, run.at(1.2));
    let actions = run.actions();
    let mut retired = signals(&actions, Signal::SIGTERM);
    retired.sort();
    let mut expected = vec![old1, new1];
    expected.sort();
    assert_eq!(retired, expected);
    assert!(actions.contains(&Action::RemoveSlot {
        slot: 1,
        holders: expected.clone()
    }));
    assert_eq!(run.sup.live().len(), 1);
    // The reload now needs one new worker only.
    run.ready(&[new0]);
    run.tick(1.5, OK);
    assert_eq!(run.sup.generations().0, 2);
    assert_eq!(run.sup.supervision()[SupervisionCounter::ReloadsOk], 1);
    // The retired slot's workers are not replaced when they exit.
    run.exit(old1, 2.0);
    run.exit(new1, 2.0);
    assert!(run.spawn_all(2.0).is_empty());
    // TTOU never removes the last slot.
    run.sup.signal(Signal::SIGTTOU, run.at(3.0));
    assert!(!run
        .actions()
        .iter()
        .any(|a| matches!(a, Action::RemoveSlot { .. })));
}
