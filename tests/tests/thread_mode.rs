//! Thread mode's hardening (issue #11): `--user`/`--group`, the watchdog, nothing announced
//! before startup can no longer fail, and a bounded metrics endpoint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sockhost_tests::{
    ask, closed_within, connect, fd_limit, lowest_free_fd, metrics_addr, plugin, round_trip,
    run_to_exit, serve_thread, set_fd_limit, start_bare, Finished, Server,
};

/// The status thread mode exits with when its watchdog fires (documented in the README).
const WATCHDOG_EXIT: i32 = 70;

/// A field of `/proc/PID/status` (`Uid:` / `Gid:`): the effective id.
fn effective_id(pid: u32, field: &str) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// `id -u nobody` / `id -g nobody`.
fn nobody(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
    assert!(out.status.success(), "id {flag} nobody");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn running_as_root() -> bool {
    effective_id(std::process::id(), "Uid:") == 0
}

/// A copy of testkit in a fresh directory readable by everyone (a successor started as
/// `nobody` must be able to read it).
struct PublicPlugin {
    dir: std::path::PathBuf,
}

impl PublicPlugin {
    fn new(tag: &str) -> PublicPlugin {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sockhost-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(plugin("testkit"), dir.join("libproto.so")).unwrap();
        PublicPlugin { dir }
    }

    fn path(&self) -> String {
        self.dir.join("libproto.so").to_str().unwrap().to_string()
    }
}

impl Drop for PublicPlugin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn thread_mode_serves_as_the_given_user_and_so_does_its_successor_after_reload() {
    if !running_as_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let lib = PublicPlugin::new("thread-user");
    let server = Server::start(&[
        "--plugin",
        &lib.path(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
        "--user",
        "nobody",
    ]);
    let (uid, gid) = (nobody("-u"), nobody("-g"));
    assert_eq!(
        effective_id(server.pid(), "Uid:"),
        uid,
        "thread mode still runs as root"
    );
    assert_eq!(effective_id(server.pid(), "Gid:"), gid);
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "pid"), server.pid().to_string());
    assert_eq!(round_trip(&mut s, b"unprivileged"), b"unprivileged");

    server.signal("HUP");
    server
        .stderr
        .wait_for("reload finished", Duration::from_secs(10));
    let mut fresh = connect(server.addr());
    let successor: u32 = ask(&mut fresh, "pid").parse().unwrap();
    assert_ne!(successor, server.pid());
    assert_eq!(
        effective_id(successor, "Uid:"),
        uid,
        "the successor runs as root"
    );
    assert_eq!(effective_id(successor, "Gid:"), gid);
    drop(fresh);
    let _ = Command::new("kill")
        .args(["-KILL", &successor.to_string()])
        .status();
}

/// A startup that must fail: exit 1, one `error:` line, and no `listening on` line.
fn fails_before_announcing(args: &[&str]) -> Finished {
    let f = run_to_exit(args, Duration::from_secs(10));
    assert_eq!(f.status.code(), Some(1), "stderr: {}", f.stderr);
    assert_eq!(f.stderr.lines().count(), 1, "stderr:\n{}", f.stderr);
    assert!(f.stderr.starts_with("error: "), "{}", f.stderr);
    assert_eq!(f.stdout, "", "announced before failing");
    f
}

fn thread_args<'a>(lib: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--plugin",
        lib,
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
    ];
    args.extend(extra);
    args
}

#[test]
fn an_unknown_user_or_group_stops_thread_mode_with_one_error_line() {
    let lib = plugin("echo");
    let lib = lib.to_str().unwrap();
    let f = fails_before_announcing(&thread_args(lib, &["--user", "no-such-user-here"]));
    assert_eq!(
        f.stderr.trim(),
        "error: --user no-such-user-here: no such user"
    );
    let f = fails_before_announcing(&thread_args(lib, &["--group", "no-such-group-here"]));
    assert_eq!(
        f.stderr.trim(),
        "error: --group no-such-group-here: no such group"
    );
}

#[test]
fn nothing_is_announced_when_the_pid_file_cannot_be_written() {
    let lib = plugin("echo");
    let f = fails_before_announcing(&thread_args(
        lib.to_str().unwrap(),
        &["--pid-file", "/nonexistent-dir/sockhost.pid"],
    ));
    assert!(
        f.stderr
            .contains("--pid-file /nonexistent-dir/sockhost.pid"),
        "{}",
        f.stderr
    );
}

#[test]
#[allow(unsafe_code)] // FFI/fork boundary: libc calls on the test's own child processes.
fn a_term_sent_on_reading_listening_on_is_a_graceful_stop() {
    // Announced only once the signal handlers are in place: a script (or systemd, on
    // READY=1) may signal at once. Before, most of these died of TERM's default action.
    let echo = plugin("echo");
    let args = [
        "--plugin",
        echo.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
    ];
    for i in 0..10 {
        let (mut child, _) = start_bare(&args, Stdio::null());
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("run {i}: still running 10 s after TERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "run {i}: {status}");
    }
}

/// Send `command` (which never returns inside the plugin) and check that the process exits
/// with the watchdog's status and one line, within `--timeout` + 1 s.
fn watchdog_ends_a_stuck_plugin(command: &[u8]) {
    let mut server = serve_thread("testkit", &["--timeout", "2"]);
    let mut s = connect(server.addr());
    assert_eq!(round_trip(&mut s, b"fine"), b"fine");
    // Startup's last line has been collected: every line after it is the watchdog's doing.
    server
        .stderr
        .wait_for("serving in thread mode", Duration::from_secs(5));
    let lines_before = server.stderr.text().lines().count();
    s.write_all(command).unwrap();
    let sent = Instant::now();
    let status = server.wait_exit(Duration::from_secs(10));
    let took = sent.elapsed();
    assert!(
        took <= Duration::from_secs(3),
        "exited {took:?} after the plugin got stuck; --timeout is 2 s"
    );
    assert_eq!(status.code(), Some(WATCHDOG_EXIT), "{status}");
    // The reader thread may still be collecting the last line.
    let line = server.stderr.wait_for("watchdog", Duration::from_secs(5));
    let text = server.stderr.text();
    let after: Vec<&str> = text.lines().skip(lines_before).collect();
    assert_eq!(after, [line.as_str()], "exactly one line expected");
    assert!(
        line.contains(" ERROR watchdog: the event loop has not run for --timeout 2s"),
        "{line}"
    );
}

#[test]
fn a_plugin_spinning_forever_makes_thread_mode_exit_with_one_line() {
    watchdog_ends_a_stuck_plugin(b"spin");
}

#[test]
fn a_plugin_blocked_forever_makes_thread_mode_exit_with_one_line() {
    watchdog_ends_a_stuck_plugin(b"hang");
}

#[test]
fn the_watchdog_ends_a_process_blocked_on_a_stderr_nobody_reads() {
    // Trace logging into a pipe that is never read: once it is full, the event loop blocks
    // in a log write, and so would the watchdog's own line; it must exit all the same.
    let testkit = plugin("testkit");
    let (mut child, addr) = start_bare(
        &[
            "--plugin",
            testkit.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "thread",
            "--timeout",
            "1",
            "--log-level",
            "trace",
        ],
        Stdio::piped(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_answer = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 30 s after it started logging into a full pipe");
        }
        let answered = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_millis(300)))?;
                s.write_all(b"log")?;
                s.read(&mut [0u8; 16])
            })
            .is_ok_and(|n| n > 0);
        if answered {
            last_answer = Instant::now();
        }
    };
    assert_eq!(status.code(), Some(WATCHDOG_EXIT), "{status}");
    // --timeout, plus the 1 s the watchdog's own write may block, plus a margin.
    assert!(
        last_answer.elapsed() < Duration::from_secs(5),
        "exited {:?} after it last answered",
        last_answer.elapsed()
    );
}

#[test]
fn the_watchdog_leaves_a_live_event_loop_alone() {
    let mut server = serve_thread("echo", &["--timeout", "1"]);
    let mut s = connect(server.addr());
    // Three times --timeout of serving, idle in between requests.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(round_trip(&mut s, b"alive"), b"alive");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(server.is_running(), "stderr:\n{}", server.stderr.text());
    assert_eq!(server.stderr.count("watchdog"), 0);
}

fn scrape(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn the_thread_mode_metrics_endpoint_holds_at_most_16_clients() {
    let server = serve_thread("echo", &["--metrics-bind", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);
    let mut idle: Vec<TcpStream> = (0..16).map(|_| connect(addr)).collect();
    // Accepted in order: once this one is answered, all 16 idle ones have been accepted.
    let mut first = connect(addr);
    assert!(scrape(&mut first).starts_with("HTTP/1.1 200 OK"));
    // The 17th accepted client evicted the oldest idle one, and only it.
    // (Well inside the endpoint's 5 s per-client deadline, which would close them all.)
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(2)),
        "the oldest idle client was not evicted at the cap"
    );
    for (i, s) in idle.iter_mut().enumerate().skip(1) {
        assert!(
            !closed_within(s, Duration::from_millis(50)),
            "idle client {i} was closed below the cap"
        );
    }
    // A finished client frees its place. 16 more idle clients, then one that asks: each
    // newcomer past the cap evicts the oldest, so only the last 15 idle ones stay.
    let mut newer: Vec<TcpStream> = (0..16).map(|_| connect(addr)).collect();
    let mut last = connect(addr);
    assert!(scrape(&mut last).starts_with("HTTP/1.1 200 OK"));
    for (i, s) in idle.iter_mut().enumerate().skip(1) {
        assert!(
            closed_within(s, Duration::from_secs(1)),
            "idle client {i} outlived 16 newer clients"
        );
    }
    assert!(closed_within(&mut newer[0], Duration::from_secs(1)));
    for (i, s) in newer.iter_mut().enumerate().skip(1) {
        assert!(
            !closed_within(s, Duration::from_millis(50)),
            "newer idle client {i} was closed below the cap"
        );
    }
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm)": state is field 3, utime 14 and stime 15 (1-based).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn the_thread_mode_metrics_endpoint_does_not_spin_when_out_of_descriptors() {
    let server = serve_thread("echo", &["--metrics-bind", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);
    let pid = server.pid();
    let (soft, hard) = fd_limit(pid);
    set_fd_limit(pid, lowest_free_fd(pid), hard);
    // Queued by the kernel; every accept of it fails with EMFILE.
    let mut waiting = connect(addr);
    waiting
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let (ticks, start) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - ticks;
    let hz = 100.0; // USER_HZ on Linux
    let share = used as f64 / hz / start.elapsed().as_secs_f64();
    set_fd_limit(pid, soft, hard);
    assert!(
        share < 0.2,
        "the server used {:.0}% of a CPU while out of descriptors",
        share * 100.0
    );
    let mut reply = String::new();
    waiting.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200 OK"),
        "not served once descriptors were available again: {reply:?}"
    );
}
