//! Process mode: a worker that cannot be forked (the kernel says EAGAIN) backs off its slot
//! while the other workers keep serving, and is started once the kernel allows it.
//!
//! The failure is real: sockhost runs as an otherwise unused uid whose process limit
//! (`RLIMIT_NPROC`) leaves room for the arbiter and two workers only, so forking a third
//! worker fails in the kernel. Needs root (to switch to that uid and to raise the limit).

use std::os::unix::process::CommandExt;
use std::time::Duration;

use sockhost_tests::{children_of, connect, plugin, round_trip, sockhost_bin, wait_until, Server};

/// An uid no other process on the machine is likely to run as (the limit counts them all).
fn unused_uid() -> u32 {
    47_000 + std::process::id() % 10_000
}

/// Raise `pid`'s process limit (its soft limit; the hard one was left high). Without
/// CAP_SYS_RESOURCE only a process of the same uid may, so a helper switches to it first
/// (its own limit is not the arbiter's, so it may exist beyond the arbiter's count).
#[allow(unsafe_code)] // FFI/fork boundary: libc calls on the test's own child processes.
fn raise_process_limit(pid: u32, uid: u32, limit: u64) {
    let mut helper = std::process::Command::new("true");
    // SAFETY: only system calls between fork and exec.
    unsafe {
        helper.pre_exec(move || {
            let mut rlim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
                || libc::prlimit(
                    pid as libc::pid_t,
                    libc::RLIMIT_NPROC,
                    std::ptr::null(),
                    &mut rlim,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            rlim.rlim_cur = limit;
            if libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NPROC,
                &rlim,
                std::ptr::null_mut(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = helper.status().expect("raising the process limit");
    assert!(status.success(), "{status}");
}

#[test]
#[allow(unsafe_code)] // FFI/fork boundary: libc calls on the test's own child processes.
fn a_worker_that_cannot_be_forked_backs_off_its_slot_and_the_others_keep_serving() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run sockhost as another uid with a process limit");
        return;
    }
    let uid = unused_uid();
    let echo = plugin("echo");
    let mut cmd = std::process::Command::new(sockhost_bin());
    // SAFETY: only system calls between fork and exec. The limit counts every process of
    // the uid: the arbiter and two workers fit, a third cannot be forked.
    unsafe {
        cmd.pre_exec(move || {
            // The soft limit counts; the hard one stays as it is, so it can be raised later.
            let mut rlim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NPROC, &mut rlim) != 0 || rlim.rlim_max < 4 {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL)); // hard limit too low
            }
            rlim.rlim_cur = 3;
            if libc::setrlimit(libc::RLIMIT_NPROC, &rlim) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::start_command(
        cmd,
        &[
            "--plugin",
            echo.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
        ],
    );
    wait_until("2 workers", Duration::from_secs(10), || {
        children_of(server.pid()).len() == 2
    });

    // One worker more: its fork fails, and keeps failing (with back-off) for now.
    server.signal("TTIN");
    let line = server
        .stderr
        .wait_for("cannot start a worker", Duration::from_secs(5));
    assert!(line.contains("fork"), "{line}");
    assert!(line.contains("next attempt in"), "{line}");
    wait_until("a second failed attempt", Duration::from_secs(5), || {
        server.stderr.count("cannot start a worker") >= 2
    });
    // Meanwhile the service is up and the two workers serve every connection.
    for i in 0..50 {
        let mut s = connect(server.addr());
        let msg = format!("during the fork failures {i}");
        assert_eq!(round_trip(&mut s, msg.as_bytes()), msg.as_bytes());
    }
    let mut arbiter = server;
    assert!(arbiter.is_running(), "the arbiter gave up");
    assert_eq!(children_of(arbiter.pid()).len(), 2);

    // Room for one more process: the next attempt starts the third worker.
    raise_process_limit(arbiter.pid(), uid, 4);
    wait_until("the third worker", Duration::from_secs(15), || {
        children_of(arbiter.pid()).len() == 3
    });
    arbiter
        .stderr
        .wait_for("every slot has a serving worker", Duration::from_secs(5));
}
