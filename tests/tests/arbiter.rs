//! Process mode: the arbiter's workers, supervision, signals and hot plugin reload.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sockhost_tests::{
    alive, ask, children_of, closed_within, connect, plugin, round_trip, run_to_exit, wait_until,
    LoadLoop, Server,
};

/// A private copy of a plugin, so a test can swap the file under a running server.
struct PluginFile {
    dir: PathBuf,
    path: PathBuf,
}

impl PluginFile {
    fn new(tag: &str, from: &Path) -> PluginFile {
        let dir = std::env::temp_dir().join(format!("sockhost-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("libproto.so");
        let f = PluginFile { dir, path };
        f.replace_with(from);
        f
    }

    /// Atomically replace the file (a new inode, as `cargo build` or a deploy would do).
    fn replace_with(&self, from: &Path) {
        let tmp = self.dir.join("libproto.so.new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn replace_with_bytes(&self, bytes: &[u8]) {
        let tmp = self.dir.join("libproto.so.new");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for PluginFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn process_mode(plugin_path: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--plugin", plugin_path, "--bind", "127.0.0.1:0"];
    args.extend(extra);
    Server::start(&args)
}

fn wait_for_workers(server: &Server, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_until(
        &format!("{n} worker processes"),
        Duration::from_secs(5),
        || {
            pids = children_of(server.pid());
            pids.len() == n
        },
    );
    pids
}

/// Open connections until one is served by each of `n` workers; returns (pid, stream) pairs.
fn one_connection_per_worker(server: &Server, n: usize) -> Vec<(u32, std::net::TcpStream)> {
    let mut found: Vec<(u32, std::net::TcpStream)> = Vec::new();
    for _ in 0..500 {
        let mut s = connect(server.addr());
        let pid: u32 = ask(&mut s, "pid").parse().expect("pid reply");
        if !found.iter().any(|(p, _)| *p == pid) {
            found.push((pid, s));
        }
        if found.len() == n {
            return found;
        }
    }
    panic!(
        "could not reach all {n} workers in 500 connections (reached {})",
        found.len()
    );
}

#[test]
fn workers_flag_makes_that_many_processes_and_a_killed_one_is_replaced() {
    let kit = plugin("testkit");
    let server = process_mode(kit.to_str().unwrap(), &["--workers", "3"]);
    let pids = wait_for_workers(&server, 3);
    let mut conns = one_connection_per_worker(&server, 3);
    let (victim, _) = conns.remove(0);
    let killed_at = Instant::now();
    nix_kill(victim, "KILL");
    let mut replacement = Vec::new();
    wait_until(
        "the killed worker to be replaced",
        Duration::from_secs(2),
        || {
            replacement = children_of(server.pid());
            replacement.len() == 3 && !replacement.contains(&victim)
        },
    );
    assert!(killed_at.elapsed() < Duration::from_secs(2));
    assert_eq!(
        replacement.iter().filter(|p| pids.contains(p)).count(),
        2,
        "the other two workers are untouched"
    );
    for (pid, s) in &mut conns {
        assert_eq!(
            round_trip(s, b"still here"),
            b"still here",
            "connection on worker {pid} survived"
        );
    }
    server.stderr.wait_for(
        "worker exited unexpectedly (killed by SIGKILL)",
        Duration::from_secs(2),
    );
}

#[test]
fn reload_under_load_swaps_builds_with_zero_failures() {
    let file = PluginFile::new("reload", &plugin("testkit"));
    let server = process_mode(file.arg(), &["--workers", "2", "--graceful-timeout", "10"]);
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "tag"), "a");
    drop(s);
    let load = LoadLoop::start(server.addr(), 4, Duration::from_secs(60));

    for (round, (build, tag)) in [("testkit_b", "b"), ("testkit", "a"), ("testkit_b", "b")]
        .into_iter()
        .enumerate()
    {
        file.replace_with(&plugin(build));
        let hup_at = Instant::now();
        server.signal("HUP");
        wait_until(
            &format!("reload {} to finish", round + 1),
            Duration::from_secs(10),
            || server.stderr.count("reload finished") > round,
        );
        let swap = hup_at.elapsed();
        // Every new connection now reaches the new build.
        for _ in 0..20 {
            let mut s = connect(server.addr());
            assert_eq!(ask(&mut s, "tag"), tag, "after reload {}", round + 1);
        }
        eprintln!(
            "reload {} to {build}: HUP -> all new workers serving in {swap:?}",
            round + 1
        );
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} connection attempts failed during reloads: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "the load loop made only {ok} round trips");
}

#[test]
fn reload_to_a_garbage_file_keeps_the_old_workers_then_a_fixed_file_works() {
    let file = PluginFile::new("garbage", &plugin("testkit"));
    let server = process_mode(file.arg(), &["--workers", "2"]);
    let before = wait_for_workers(&server, 2);
    file.replace_with_bytes(b"definitely not a shared library");
    server.signal("HUP");
    let line = server
        .stderr
        .wait_for("reload aborted", Duration::from_secs(10));
    assert!(
        line.contains("not a loadable shared library"),
        "says why: {line}"
    );
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "tag"), "a", "old build still serving");
    wait_until(
        "the failed new workers to be gone",
        Duration::from_secs(5),
        || children_of(server.pid()) == before,
    );

    file.replace_with(&plugin("testkit_b"));
    server.signal("HUP");
    server
        .stderr
        .wait_for("reload finished", Duration::from_secs(10));
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "tag"), "b", "the fixed file is served");
}

#[test]
fn a_stuck_worker_is_replaced_after_timeout_while_the_others_serve() {
    let kit = plugin("testkit");
    let server = process_mode(kit.to_str().unwrap(), &["--workers", "2", "--timeout", "2"]);
    wait_for_workers(&server, 2);
    let mut conns = one_connection_per_worker(&server, 2);
    let (stuck_pid, mut stuck) = conns.remove(0);
    let (other_pid, mut other) = conns.remove(0);
    std::io::Write::write_all(&mut stuck, b"spin").unwrap();
    let start = Instant::now();
    // The other worker keeps serving throughout.
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            round_trip(&mut other, b"ping"),
            b"ping",
            "worker {other_pid} stalled too"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = server
        .stderr
        .wait_for("no heartbeat", Duration::from_secs(5));
    assert!(line.contains(&stuck_pid.to_string()), "{line}");
    assert!(
        closed_within(&mut stuck, Duration::from_secs(3)),
        "the stuck worker's connection is closed when it is killed"
    );
    wait_until("a replacement worker", Duration::from_secs(3), || {
        let now = children_of(server.pid());
        now.len() == 2 && !now.contains(&stuck_pid) && now.contains(&other_pid)
    });
    assert_eq!(round_trip(&mut other, b"after"), b"after");
}

#[test]
fn a_crashing_worker_costs_only_its_own_connections() {
    let kit = plugin("testkit");
    let server = process_mode(kit.to_str().unwrap(), &["--workers", "2"]);
    wait_for_workers(&server, 2);
    let mut conns = one_connection_per_worker(&server, 2);
    let (crash_pid, mut crashing) = conns.remove(0);
    let (_, mut other) = conns.remove(0);
    std::io::Write::write_all(&mut crashing, b"abort").unwrap();
    assert!(closed_within(&mut crashing, Duration::from_secs(3)));
    server
        .stderr
        .wait_for("killed by SIGABRT", Duration::from_secs(3));
    assert_eq!(round_trip(&mut other, b"fine"), b"fine");
    wait_until(
        "the crashed worker's replacement",
        Duration::from_secs(3),
        || {
            let now = children_of(server.pid());
            now.len() == 2 && !now.contains(&crash_pid)
        },
    );
}

#[test]
fn term_under_load_finishes_open_connections_exits_zero_and_removes_the_pid_file() {
    let pid_file =
        std::env::temp_dir().join(format!("sockhost-arbiter-{}.pid", std::process::id()));
    let echo = plugin("echo");
    let mut server = process_mode(
        echo.to_str().unwrap(),
        &[
            "--workers",
            "2",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "--graceful-timeout",
            "20",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.pid().to_string()
    );
    let mut open: Vec<_> = (0..10).map(|_| connect(server.addr())).collect();
    for s in &mut open {
        assert_eq!(round_trip(s, b"before"), b"before");
    }
    server.signal("TERM");
    server
        .stderr
        .wait_for("stopping gracefully", Duration::from_secs(5));
    wait_until(
        "both workers to stop accepting",
        Duration::from_secs(5),
        || server.stderr.count("no longer accepting; waiting") >= 2,
    );
    for s in &mut open {
        assert_eq!(
            round_trip(s, b"during"),
            b"during",
            "open connections are served while draining"
        );
    }
    assert!(server.is_running());
    drop(open);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(!pid_file.exists(), "pid file removed");
}

#[test]
fn ttin_and_ttou_add_and_remove_a_worker() {
    let echo = plugin("echo");
    let server = process_mode(echo.to_str().unwrap(), &["--workers", "2"]);
    wait_for_workers(&server, 2);
    server.signal("TTIN");
    wait_for_workers(&server, 3);
    // Standard signals do not queue: two sent back to back may arrive as one.
    server.signal("TTOU");
    wait_for_workers(&server, 2);
    server.signal("TTOU");
    wait_for_workers(&server, 1);
    let mut s = connect(server.addr());
    assert_eq!(round_trip(&mut s, b"one left"), b"one left");
    server.signal("TTOU");
    std::thread::sleep(Duration::from_millis(300)); // nothing to wait for: the last one stays
    assert_eq!(
        children_of(server.pid()).len(),
        1,
        "TTOU never removes the last worker"
    );
}

#[test]
fn max_requests_recycles_a_worker_without_failing_connections() {
    let kit = plugin("testkit");
    let server = process_mode(
        kit.to_str().unwrap(),
        &["--workers", "1", "--max-requests", "5"],
    );
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..16 {
        let mut s = connect(server.addr());
        let pid = ask(&mut s, "pid");
        assert!(!pid.is_empty(), "connection {i} got no answer");
        pids.insert(pid);
    }
    assert!(
        pids.len() >= 3,
        "16 connections at --max-requests 5 should see at least 3 workers, saw {pids:?}"
    );
    server
        .stderr
        .wait_for("worker recycling (--max-requests)", Duration::from_secs(2));
}

#[test]
fn a_plugin_that_fails_to_load_stops_startup_with_one_error_line_and_no_workers() {
    let file = PluginFile::new("badstart", &plugin("incompatible"));
    let f = run_to_exit(
        &[
            "--plugin",
            file.arg(),
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "3",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.elapsed < Duration::from_secs(2), "took {:?}", f.elapsed);
    let errors: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", f.stderr);
    assert!(
        errors[0].contains("libproto.so") && errors[0].contains("incompatible"),
        "{}",
        errors[0]
    );
    assert!(!f.stdout.contains("listening on"));
    // Forked workers share the arbiter's command line, which names this unique file.
    let leftover = std::process::Command::new("pgrep")
        .args(["-f", file.arg()])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "workers left behind: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

#[test]
fn workers_die_with_a_killed_arbiter() {
    let echo = plugin("echo");
    let mut server = process_mode(echo.to_str().unwrap(), &["--workers", "2"]);
    let workers = wait_for_workers(&server, 2);
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(2));
    wait_until("orphaned workers to die", Duration::from_secs(2), || {
        workers.iter().all(|p| !alive(*p))
    });
}

#[test]
fn quit_stops_process_mode_at_once() {
    let echo = plugin("echo");
    let mut server = process_mode(
        echo.to_str().unwrap(),
        &["--workers", "2", "--graceful-timeout", "30"],
    );
    let mut s = connect(server.addr());
    assert_eq!(round_trip(&mut s, b"x"), b"x");
    server.signal("QUIT");
    assert!(closed_within(&mut s, Duration::from_secs(3)));
    server.wait_exit(Duration::from_secs(3));
}

fn nix_kill(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap() // effective uid
}

#[test]
fn workers_drop_to_the_given_user_and_still_die_with_the_arbiter() {
    if uid_of(std::process::id()) != 0 {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let echo = plugin("echo");
    let mut server = process_mode(
        echo.to_str().unwrap(),
        &["--workers", "2", "--user", "nobody"],
    );
    let workers = wait_for_workers(&server, 2);
    assert_eq!(uid_of(server.pid()), 0, "the arbiter keeps its identity");
    for w in &workers {
        assert_ne!(uid_of(*w), 0, "worker {w} still runs as root");
    }
    let mut s = connect(server.addr());
    assert_eq!(round_trip(&mut s, b"unprivileged"), b"unprivileged");
    // Switching users clears the parent-death signal; it must have been set again.
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(2));
    wait_until(
        "unprivileged workers to die with the arbiter",
        Duration::from_secs(2),
        || workers.iter().all(|p| !alive(*p)),
    );
}

#[test]
fn an_unknown_user_is_a_startup_error() {
    let echo = plugin("echo");
    let f = run_to_exit(
        &[
            "--plugin",
            echo.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--user",
            "no-such-user-here",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(f.status.code(), Some(1));
    assert_eq!(
        f.stderr.trim(),
        "error: --user no-such-user-here: no such user"
    );
}
