//! Helpers for the black-box tests: start the real `sockhost` binary with real plugins,
//! learn its ports from the `listening on` lines, talk to it over loopback, and wait for
//! things with bounded deadlines and clear failure messages.
//!
//! The binaries must be built first (`cargo build --release --workspace`); the tests find
//! them next to their own executable's profile directory.

pub mod daemon;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The profile directory (`target/release` or `target/debug`) the tests were built into.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// A cross-built target under test (`SOCKHOST_TARGET`, e.g. `x86_64-pc-windows-gnu` for the
/// Windows subset under wine, run by `.ci/windows.sh`): its binaries are in
/// `target/<triple>/<profile>/` (`SOCKHOST_TARGET_PROFILE`, default: the tests' own
/// profile) and are started through `SOCKHOST_RUNNER` (e.g. `wine`).
fn cross_target() -> Option<String> {
    std::env::var("SOCKHOST_TARGET")
        .ok()
        .filter(|t| !t.is_empty())
}

/// Whether the binary under test is a Windows one.
pub fn testing_windows() -> bool {
    cross_target().is_some_and(|t| t.contains("windows"))
}

/// Where the binaries under test are: the tests' own profile directory, or the cross
/// target's.
fn artifact_dir() -> PathBuf {
    let profile = profile_dir();
    match cross_target() {
        None => profile,
        Some(triple) => {
            let name = std::env::var_os("SOCKHOST_TARGET_PROFILE")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| profile.file_name().expect("profile name").to_owned());
            let target = profile.parent().expect("target dir");
            target.join(triple).join(name)
        }
    }
}

fn build_hint(p: &std::path::Path) -> String {
    match cross_target() {
        None => format!(
            "{} is missing: run `cargo build --release --workspace` before the tests",
            p.display()
        ),
        Some(t) => format!(
            "{} is missing: cross-build it first (.ci/windows.sh, or `cargo build --target {t}`)",
            p.display()
        ),
    }
}

/// The `sockhost` binary.
pub fn sockhost_bin() -> PathBuf {
    let name = if testing_windows() {
        "sockhost.exe"
    } else {
        "sockhost"
    };
    let p = artifact_dir().join(name);
    assert!(p.exists(), "{}", build_hint(&p));
    p
}

/// A command that runs the `sockhost` under test (through `SOCKHOST_RUNNER`, if set).
pub fn sockhost_command() -> Command {
    match std::env::var("SOCKHOST_RUNNER")
        .ok()
        .filter(|r| !r.is_empty())
    {
        Some(runner) => {
            let mut cmd = Command::new(runner);
            cmd.arg(sockhost_bin());
            cmd
        }
        None => Command::new(sockhost_bin()),
    }
}

/// How long a starting sockhost may take to listen: wine starts processes slowly.
fn startup_deadline() -> Duration {
    if std::env::var_os("SOCKHOST_RUNNER").is_some() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(10)
    }
}

/// A plugin built by the workspace, by crate name (`echo`, `testkit`, `testkit_b`, ...),
/// named as the target names dynamic libraries (`libecho.so`, `echo.dll`).
pub fn plugin(name: &str) -> PathBuf {
    let file = if testing_windows() {
        format!("{name}.dll")
    } else {
        format!("lib{name}.so")
    };
    let p = artifact_dir().join(file);
    assert!(p.exists(), "{}", build_hint(&p));
    p
}

/// Lines a child wrote to stderr, shared with a reader thread, with a way to wait for one.
#[derive(Clone, Default)]
pub struct LogLines {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl LogLines {
    fn push(&self, line: String) {
        let (lines, cv) = &*self.inner;
        lines.lock().unwrap().push(line);
        cv.notify_all();
    }

    /// Everything so far, one line each.
    pub fn text(&self) -> String {
        self.inner.0.lock().unwrap().join("\n")
    }

    /// Wait (bounded) until a line contains `needle`; returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let (lines, cv) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no stderr line containing {needle:?} within {timeout:?}; stderr so far:\n{}",
                guard.join("\n")
            );
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.inner
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A running sockhost.
pub struct Server {
    child: Child,
    /// `(transport, address)` from each `listening on` line, in order.
    pub listening: Vec<(String, SocketAddr)>,
    /// The path of each `listening on unix:PATH` line, in order.
    pub unix: Vec<PathBuf>,
    /// Every stdout line (the `listening on` lines and anything after).
    pub stdout: LogLines,
    /// Every stderr line.
    pub stderr: LogLines,
}

/// How many `listening on` lines to expect from `args` (one per `--bind`, one by default).
fn expected_binds(args: &[&str]) -> usize {
    args.iter().filter(|a| **a == "--bind").count().max(1)
}

impl Server {
    /// Start sockhost with `args` and wait (up to 10 s, 60 s through a runner such as wine)
    /// for its `listening on` lines.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    /// As [`Server::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = sockhost_command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, expected_binds(args))
    }

    /// As [`Server::start_with_env`], waiting for `want` `listening on` lines (a
    /// configuration file says how many binds there are, not the arguments).
    pub fn start_expecting(args: &[&str], env: &[(&str, &str)], want: usize) -> Server {
        let mut cmd = Command::new(sockhost_bin());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, want)
    }

    /// As [`Server::start`], from a prepared command (a test that sets up the child itself,
    /// e.g. in a private network namespace); `args` are added to it.
    pub fn start_command(mut cmd: Command, args: &[&str]) -> Server {
        cmd.args(args);
        Self::spawn(cmd, expected_binds(args))
    }

    /// As systemd socket activation does: `sockets` become descriptors 3, 4, … of the child,
    /// with `LISTEN_FDS`, `LISTEN_PID` (the child's own pid) and `LISTEN_FDNAMES` set.
    ///
    /// The test binary is multi-threaded, so the forked child may only make
    /// async-signal-safe calls before `exec` (another thread may hold the allocator's lock):
    /// everything is prepared before the fork, the `pre_exec` closure only moves
    /// descriptors into an array allocated beforehand, and `LISTEN_PID` — which only the
    /// child can know — is set by `sh` from its own pid (`$$`) just before it `exec`s
    /// sockhost in the same process.
    #[allow(unsafe_code)] // fork boundary: arranging the inherited descriptors between fork and exec.
    pub fn start_activated(
        args: &[&str],
        sockets: &[std::os::fd::RawFd],
        names: &[&str],
    ) -> Server {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#])
            .arg(sockhost_bin())
            .args(args)
            .env("LISTEN_FDS", sockets.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"));
        let fds: Vec<i32> = sockets.to_vec();
        let mut high = vec![-1; fds.len()];
        // SAFETY: runs in the forked child before exec and calls only fcntl and dup2 (both
        // async-signal-safe), writing into `high`, allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // First out of the way (a socket may already sit at a target number).
                for (h, fd) in high.iter_mut().zip(&fds) {
                    *h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
                }
                for (i, h) in high.iter().enumerate() {
                    if *h < 0 || libc::dup2(*h, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Self::spawn(cmd, expected_binds(args))
    }

    fn spawn(mut cmd: Command, want: usize) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sockhost");
        let stderr = LogLines::default();
        let err_lines = stderr.clone();
        let err_pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                err_lines.push(line);
            }
        });
        let stdout = LogLines::default();
        let out_lines = stdout.clone();
        let out_pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                out_lines.push(line);
            }
        });
        let deadline = Instant::now() + startup_deadline();
        let (listening, unix) = loop {
            let lines: Vec<(String, SocketAddr)> = stdout
                .text()
                .lines()
                .filter_map(|l| l.strip_prefix("listening on "))
                .filter_map(|rest| {
                    let (transport, addr) = rest.split_once("://")?;
                    Some((transport.to_string(), addr.parse().ok()?))
                })
                .collect();
            let unix: Vec<PathBuf> = stdout
                .text()
                .lines()
                .filter_map(|l| l.strip_prefix("listening on unix:"))
                .map(PathBuf::from)
                .collect();
            if lines.len() + unix.len() >= want {
                break (lines, unix);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "sockhost exited ({status}) before listening; stderr:\n{}",
                    stderr.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sockhost printed no `listening on` lines within {:?}; stderr:\n{}",
                startup_deadline(),
                stderr.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Server {
            child,
            listening,
            unix,
            stdout,
            stderr,
        }
    }

    /// The first TCP address.
    pub fn addr(&self) -> SocketAddr {
        self.listening
            .iter()
            .find(|(t, _)| t == "tcp")
            .map(|(_, a)| *a)
            .expect("a tcp bind")
    }

    /// The first TCP address, reachable form (wildcard binds become loopback).
    pub fn connect_addr(&self) -> SocketAddr {
        loopback(self.addr())
    }

    /// The arbiter's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sockhost did not exit within {timeout:?}; stderr:\n{}",
                self.stderr.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.is_running() {
            // Kill the whole group the arbiter may have forked, then the arbiter.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &self.pid().to_string()])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start sockhost serving a workspace plugin (`echo`, `testkit`, …): `--plugin <path>`
/// followed by `args`.
pub fn serve(plugin_name: &str, args: &[&str]) -> Server {
    let path = plugin(plugin_name);
    let mut all = vec!["--plugin", path.to_str().expect("utf-8 path")];
    all.extend(args);
    Server::start(&all)
}

/// [`serve`] on `127.0.0.1:0` in thread mode, plus `extra`.
pub fn serve_thread(plugin_name: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--bind", "127.0.0.1:0", "--concurrency", "thread"];
    args.extend(extra);
    serve(plugin_name, &args)
}

/// Start sockhost without [`Server`]'s harness, for tests that need the bare process (its
/// stderr left unread or closed, a signal sent the instant `listening on` is read): `stderr`
/// as given, stdout read straight up to the first `listening on` line (whose address is
/// returned; `args` must put a TCP bind first) and drained from then on.
pub fn start_bare(args: &[&str], stderr: Stdio) -> (Child, SocketAddr) {
    let mut child = sockhost_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn sockhost");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("reading sockhost's stdout");
    let addr = line
        .trim()
        .strip_prefix("listening on tcp://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a `listening on tcp://` line: {line:?}"));
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (child, addr)
}

/// A wildcard address made reachable: `0.0.0.0` → `127.0.0.1`, `::` → `::1`.
pub fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    }
}

/// The result of a sockhost run that is expected to end by itself.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run sockhost to completion (bounded by `timeout`; killed and failed past it).
pub fn run_to_exit(args: &[&str], timeout: Duration) -> Finished {
    run_to_exit_with_env(args, &[], timeout)
}

/// [`run_to_exit`] with extra environment variables.
pub fn run_to_exit_with_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Finished {
    let start = Instant::now();
    let mut child = sockhost_command()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockhost");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            panic!("sockhost {args:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    Finished {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    }
}

/// Connect with a bounded timeout, and bounded reads/writes.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Write `data` and read back exactly as many bytes.
pub fn round_trip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("read the echo");
    back
}

/// Send a command and read one reply line.
pub fn ask(stream: &mut TcpStream, command: &str) -> String {
    stream.write_all(command.as_bytes()).expect("write");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading the reply to {command:?}: {e}"),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Whether the peer has closed: a read returns EOF (or a reset) within `timeout`.
pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 64];
    let closed = match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    closed
}

/// Poll `condition` until it holds (bounded). For state with no event to wait on, such as
/// the set of processes; every other wait in these tests is on a read or a log line.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A loopback listener with a backlog of one, filled, that never accepts: the kernel drops
/// further SYNs, so a connect to [`addr`](Unaccepting::addr) neither succeeds nor fails by
/// itself (what a connect timeout is for). Lives until dropped.
pub struct Unaccepting {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Unaccepting {
    pub fn new() -> Unaccepting {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        let addr: SocketAddr = socket.local_addr().unwrap().as_socket().unwrap();
        let fillers = (0..8)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
            .collect();
        Unaccepting {
            addr,
            _socket: socket,
            _fillers: fillers,
        }
    }
}

impl Default for Unaccepting {
    fn default() -> Self {
        Unaccepting::new()
    }
}

/// A deterministic pseudo-random payload (so misordered bytes are detected).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Pids of the live (not zombie) children of `parent`, read from /proc.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            kids.push(pid);
        }
    }
    kids.sort_unstable();
    kids
}

/// Which of `pids` serves the TCP connection from `client` to `server` (IPv4): the one
/// holding the server side's socket, found by its inode in `/proc/net/tcp` and the
/// processes' descriptors. `None` if no process of `pids` holds it (not accepted yet: make
/// a round trip first).
pub fn serving_process(pids: &[u32], server: SocketAddr, client: SocketAddr) -> Option<u32> {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => panic!("serving_process: IPv4 only, got {addr}"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/self/net/tcp").expect("/proc/self/net/tcp");
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 9 && fields[1] == local && fields[2] == remote)
            .then(|| fields[9].to_string())
    })?;
    let socket = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.as_os_str() == socket.as_str())
            })
    })
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// A background client loop: connect, one echo round trip, close — until stopped or the
/// deadline. Counts successes and failures (with the first few failure messages).
pub struct LoadLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl LoadLoop {
    /// Start `clients` threads against `addr`, each stopping by itself after `max`.
    pub fn start(addr: SocketAddr, clients: usize, max: Duration) -> LoadLoop {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let deadline = Instant::now() + max;
                    let (mut ok, mut failures) = (0u64, Vec::new());
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && Instant::now() < deadline
                    {
                        n += 1;
                        let msg = payload(32, (c as u64) << 32 | n);
                        // What was lost, by step: the connection, the request, or the reply.
                        let mut local = None;
                        let mut step = "connect";
                        let attempt = (|| -> std::io::Result<()> {
                            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                            local = s.local_addr().ok();
                            s.set_read_timeout(Some(Duration::from_secs(10)))?;
                            step = "send the request";
                            s.write_all(&msg)?;
                            step = "read the reply";
                            let mut back = vec![0; msg.len()];
                            s.read_exact(&mut back)?;
                            if back != msg {
                                return Err(std::io::Error::other("echo mismatch"));
                            }
                            Ok(())
                        })();
                        match attempt {
                            Ok(()) => ok += 1,
                            Err(e) => failures.push(format!(
                                "client {c} exchange {n} ({} bytes, from {}): could not {step}: {e}",
                                msg.len(),
                                local.map_or("-".to_string(), |a| a.to_string()),
                            )),
                        }
                    }
                    (ok, failures)
                })
            })
            .collect();
        LoadLoop { stop, threads }
    }

    /// Stop and return (successes, failure messages: each names the lost exchange, its
    /// client's local address and the step that failed).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut ok = 0;
        let mut failures = Vec::new();
        for t in self.threads {
            let (o, f) = t.join().expect("load thread");
            ok += o;
            failures.extend(f);
        }
        (ok, failures)
    }
}

/// The metrics endpoint a server announced (`metrics on http://ADDR/metrics`, with
/// `--metrics-bind`).
pub fn metrics_addr(server: &Server) -> SocketAddr {
    // Printed with (not necessarily before) the `listening on` lines.
    let line = server
        .stdout
        .wait_for("metrics on http://", Duration::from_secs(10));
    line.trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap()
}

/// One `GET /metrics`: the whole HTTP reply.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    reply
}

/// The value of the sample `name` (with its labels) in a scrape; 0 if absent.
pub fn metric_value(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Scrape until `sample` reaches `at_least` (bounded); returns that scrape.
pub fn wait_for_metric(addr: SocketAddr, sample: &str, at_least: u64) -> String {
    let mut last = String::new();
    wait_until(
        &format!("{sample} >= {at_least}"),
        Duration::from_secs(5),
        || {
            last = scrape(addr);
            metric_value(&last, sample) >= at_least
        },
    );
    last
}

/// The lowest descriptor number `pid` does not use: an fd limit at that number leaves it
/// no descriptor to open.
pub fn lowest_free_fd(pid: u32) -> u64 {
    let used: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// Set process `pid`'s RLIMIT_NOFILE (prlimit: the process need not cooperate).
#[allow(unsafe_code)] // FFI boundary: prlimit on another process (std has no safe call for it).
pub fn set_fd_limit(pid: u32, soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit reads `limit` and writes nothing (no old-limit pointer).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Process `pid`'s RLIMIT_NOFILE: (soft, hard).
#[allow(unsafe_code)] // FFI boundary: prlimit on another process (std has no safe call for it).
pub fn fd_limit(pid: u32) -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit writes the current limit into `limit` and changes nothing.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut limit,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    (limit.rlim_cur, limit.rlim_max)
}
