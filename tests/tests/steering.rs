//! Process mode: new connections (and UDP peers) are steered away from a slot whose worker
//! is dead, cannot be restarted, or has missed its heartbeats; UDP peers keep their worker
//! while nothing changes; connections queued on a slot left without workers move to the
//! others where the kernel allows it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use sockhost_tests::{alive, children_of, serve, wait_until, Server};

fn wait_for_workers(server: &Server, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_until(
        &format!("{n} worker processes"),
        Duration::from_secs(10),
        || {
            pids = children_of(server.pid());
            pids.len() == n
        },
    );
    pids
}

fn kill(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A new connection asks its worker's pid; it must be answered within `limit`.
fn pid_within(addr: SocketAddr, limit: Duration) -> Result<u32, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(b"pid").map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\n") {
        match s.read(&mut byte) {
            Ok(1) => reply.push(byte[0]),
            Ok(_) => return Err("closed without an answer".into()),
            Err(e) => return Err(format!("no answer after {:?}: {e}", start.elapsed())),
        }
    }
    let elapsed = start.elapsed();
    if elapsed > limit {
        return Err(format!("answered after {elapsed:?}"));
    }
    String::from_utf8_lossy(&reply)
        .trim()
        .parse()
        .map_err(|e| format!("bad reply {reply:?}: {e}"))
}

/// 100 new connections, one after another: every one answered within 1 s; returns the
/// pids that answered.
fn hundred_connections_answered_within_a_second(addr: SocketAddr) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut failures = Vec::new();
    for i in 0..100 {
        match pid_within(addr, Duration::from_secs(1)) {
            Ok(pid) => pids.push(pid),
            Err(e) => failures.push(format!("connection {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 100 new connections were not answered within 1 s: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    pids
}

/// A file path unique to this test process.
fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sockhost-steering-{name}-{}", std::process::id()))
}

#[test]
fn while_a_killed_workers_replacement_cannot_start_every_new_connection_is_answered() {
    let marker = temp_path("marker");
    let _ = std::fs::remove_file(&marker);
    let opt = format!("fail-if-exists={}", marker.display());
    let server = serve(
        "testkit",
        &[
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--plugin-opt",
            &opt,
        ],
    );
    let workers = wait_for_workers(&server, 2);
    let (victim, survivor) = (workers[0], workers[1]);
    std::fs::write(&marker, b"").unwrap();
    kill(victim, "KILL");
    // Its replacement starts, and fails: the slot has no worker for a while.
    let line = server
        .stderr
        .wait_for("worker failed to start", Duration::from_secs(10));
    assert!(line.contains("fail-if-exists"), "{line}");
    server.stderr.wait_for(
        "new connections steered away from slot",
        Duration::from_secs(1),
    );

    let pids = hundred_connections_answered_within_a_second(server.addr());
    assert!(
        pids.iter().all(|p| *p == survivor),
        "only the surviving worker can answer"
    );
    assert!(
        server.stderr.count("worker failed to start") >= 1 && !alive(victim),
        "the slot was down throughout"
    );

    // Once a replacement can start, the slot takes new connections again.
    std::fs::remove_file(&marker).unwrap();
    server
        .stderr
        .wait_for("every slot has a serving worker", Duration::from_secs(15));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        seen.insert(pid_within(server.addr(), Duration::from_secs(5)).unwrap());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "both slots serve again: {seen:?}\n{}",
        server.stderr.text()
    );
}

#[test]
fn while_a_worker_hangs_every_new_connection_is_answered() {
    // --timeout 30 (the default) is far away: the hung worker is not replaced during the
    // test, so every answer below is the steering's doing.
    let server = serve("testkit", &["--bind", "127.0.0.1:0", "--workers", "2"]);
    let workers = wait_for_workers(&server, 2);
    let (hung, other) = (workers[0], workers[1]);
    kill(hung, "STOP");
    let stopped = Instant::now();
    let line = server
        .stderr
        .wait_for("missed its heartbeats", Duration::from_secs(5));
    assert!(line.contains(&hung.to_string()), "{line}");
    server.stderr.wait_for(
        "new connections steered away from slot",
        Duration::from_secs(1),
    );
    eprintln!("steered away {:?} after SIGSTOP", stopped.elapsed());
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "the grace is 1.5 s; steering took {:?}",
        stopped.elapsed()
    );

    let pids = hundred_connections_answered_within_a_second(server.addr());
    assert!(pids.iter().all(|p| *p == other));
    assert!(alive(hung), "the hung worker was not replaced meanwhile");
    assert_eq!(server.stderr.count("killing worker"), 0);

    // It wakes up: it takes new connections again.
    kill(hung, "CONT");
    server
        .stderr
        .wait_for("heartbeat is back", Duration::from_secs(5));
    server
        .stderr
        .wait_for("every slot has a serving worker", Duration::from_secs(5));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        seen.insert(pid_within(server.addr(), Duration::from_secs(5)).unwrap());
        if seen.len() == 2 {
            break;
        }
    }
    assert!(
        seen.contains(&hung),
        "the woken worker serves again: {seen:?}"
    );
}

#[test]
fn steering_follows_a_removed_and_an_added_slot() {
    let marker = temp_path("ttou-marker");
    let _ = std::fs::remove_file(&marker);
    let opt = format!("fail-if-exists={}", marker.display());
    let server = serve(
        "testkit",
        &[
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "3",
            "--plugin-opt",
            &opt,
        ],
    );
    let before = wait_for_workers(&server, 3);
    // Slot 2's socket leaves the kernel's array while a new slot 2 joins it: the arbiter's
    // picture of the array must follow, or connections go to the wrong sockets.
    server.signal("TTOU");
    server.signal("TTIN");
    server
        .stderr
        .wait_for("SIGTTIN: one worker more", Duration::from_secs(5));
    let mut after = Vec::new();
    wait_until("the new slot's worker", Duration::from_secs(10), || {
        after = children_of(server.pid());
        after.len() == 3 && after.iter().any(|p| !before.contains(p))
    });
    server
        .stderr
        .wait_for("every slot has a serving worker", Duration::from_secs(5));
    // Slot 0 goes down for good.
    std::fs::write(&marker, b"").unwrap();
    let slot0 = before[0];
    kill(slot0, "KILL");
    server
        .stderr
        .wait_for("worker failed to start", Duration::from_secs(10));
    let pids = hundred_connections_answered_within_a_second(server.addr());
    let reached: std::collections::BTreeSet<u32> = pids.into_iter().collect();
    assert_eq!(
        reached.len(),
        2,
        "both live slots take connections: {reached:?}"
    );
    assert!(!reached.contains(&slot0));
    let _ = std::fs::remove_file(&marker);
}

/// One UDP peer: asks its worker's pid.
struct Peer(UdpSocket);

impl Peer {
    fn new() -> Peer {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Peer(s)
    }

    fn pid(&self, to: SocketAddr) -> u32 {
        self.0.send_to(b"pid", to).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = self
            .0
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("peer {:?}: no answer: {e}", self.0.local_addr()));
        String::from_utf8_lossy(&buf[..n]).trim().parse().unwrap()
    }
}

#[test]
fn udp_peers_keep_their_worker_and_only_a_down_slots_peers_move() {
    let server = serve(
        "testkit",
        &["--bind", "udp://127.0.0.1:0", "--workers", "3"],
    );
    let to = server.listening[0].1;
    let workers = wait_for_workers(&server, 3);
    let peers: Vec<Peer> = (0..60).map(|_| Peer::new()).collect();
    let home: Vec<u32> = peers.iter().map(|p| p.pid(to)).collect();
    for (p, h) in peers.iter().zip(&home) {
        assert_eq!(
            p.pid(to),
            *h,
            "a peer changed workers while nothing changed"
        );
    }
    let used: std::collections::BTreeSet<u32> = home.iter().copied().collect();
    assert_eq!(
        used.len(),
        3,
        "60 peers spread over the 3 workers: {home:?}"
    );

    let victim = workers[0];
    kill(victim, "KILL");
    server.stderr.wait_for(
        "new connections steered away from slot",
        Duration::from_secs(5),
    );
    let mut moved_to = Vec::new();
    for (p, h) in peers.iter().zip(&home) {
        let now = p.pid(to);
        if *h == victim {
            assert_ne!(now, victim);
            moved_to.push(now);
        } else {
            assert_eq!(now, *h, "a peer of a live worker moved");
        }
    }
    assert!(!moved_to.is_empty());

    // The replacement serves: the moved peers go home (to it), the others stay put.
    server
        .stderr
        .wait_for("every slot has a serving worker", Duration::from_secs(10));
    let replacement = *wait_for_workers(&server, 3)
        .iter()
        .find(|p| !workers.contains(p))
        .expect("a replacement worker");
    for (p, h) in peers.iter().zip(&home) {
        let now = p.pid(to);
        if *h == victim {
            assert_eq!(now, replacement, "a moved peer went back to its slot");
        } else {
            assert_eq!(now, *h, "a peer of a live worker moved");
        }
    }
}

/// Runs in the forked child before exec: a private network namespace with loopback up and
/// `net.ipv4.tcp_migrate_req=1` (the host's setting is never touched).
#[allow(unsafe_code)] // FFI/fork boundary: libc calls and pre_exec hooks of the test's own child processes.
fn private_network_with_migration() -> std::io::Result<()> {
    let fail = || Err(std::io::Error::last_os_error());
    // SAFETY: only system calls on stack data, between fork and exec (no allocation).
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return fail();
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return fail();
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return fail();
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) != 0 {
            return fail();
        }
        libc::close(fd);
        let sysctl = libc::open(
            c"/proc/sys/net/ipv4/tcp_migrate_req".as_ptr(),
            libc::O_WRONLY,
        );
        if sysctl < 0 || libc::write(sysctl, b"1".as_ptr().cast(), 1) != 1 {
            return fail();
        }
        libc::close(sysctl);
    }
    Ok(())
}

/// Move the calling thread into process `pid`'s network namespace.
#[allow(unsafe_code)] // FFI/fork boundary: libc calls and pre_exec hooks of the test's own child processes.
fn enter_network_of(pid: u32) {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    // SAFETY: setns on a descriptor we own; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// `TcpExt: TCPMigrateReqSuccess` in the calling thread's network namespace.
fn migrated_requests() -> u64 {
    let netstat = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
    let lines: Vec<&str> = netstat
        .lines()
        .filter(|l| l.starts_with("TcpExt:"))
        .collect();
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "TCPMigrateReqSuccess")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Read what has arrived on `s` without waiting; `Some(reply)` once a line is complete.
fn reply_ready(s: &mut TcpStream, got: &mut Vec<u8>) -> Option<String> {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    got.ends_with(b"\n")
        .then(|| String::from_utf8_lossy(got).trim().to_string())
}

#[test]
#[allow(unsafe_code)] // FFI/fork boundary: libc calls and pre_exec hooks of the test's own child processes.
fn connections_queued_on_a_slot_left_without_workers_move_to_the_others() {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a private network namespace");
        return;
    }
    let mut probe = std::process::Command::new("true");
    // SAFETY: the closure only makes system calls (see the function).
    unsafe { probe.pre_exec(private_network_with_migration) };
    if let Err(e) = probe.status() {
        eprintln!("skipped: cannot make a network namespace with tcp_migrate_req here: {e}");
        return;
    }
    let marker = temp_path("migrate-marker");
    let _ = std::fs::remove_file(&marker);
    let opt = format!("fail-if-exists={}", marker.display());
    let kit = sockhost_tests::plugin("testkit");
    let mut cmd = std::process::Command::new(sockhost_tests::sockhost_bin());
    // SAFETY: the closure only makes system calls (see the function).
    unsafe { cmd.pre_exec(private_network_with_migration) };
    // Each worker takes one connection at a time: the rest wait in its accept queue.
    let server = Server::start_command(
        cmd,
        &[
            "--plugin",
            kit.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--max-connections",
            "1",
            "--plugin-opt",
            &opt,
        ],
    );
    wait_for_workers(&server, 2);
    let (pid, addr) = (server.pid(), server.addr());
    let body = std::thread::spawn(move || {
        enter_network_of(pid);
        // Hold one connection on each worker; connections that reach a busy worker queue.
        let mut held: Vec<(u32, TcpStream)> = Vec::new();
        let mut waiting: Vec<(TcpStream, Vec<u8>)> = Vec::new();
        for _ in 0..200 {
            let mut s = sockhost_tests::connect(addr);
            s.write_all(b"pid").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"\n") {
                    break;
                }
            }
            match String::from_utf8_lossy(&got).trim().parse::<u32>() {
                Ok(p) if !held.iter().any(|(h, _)| *h == p) => held.push((p, s)),
                _ => waiting.push((s, got)),
            }
            if held.len() == 2 {
                break;
            }
        }
        assert_eq!(held.len(), 2, "could not reach both workers");
        for _ in 0..20 {
            let mut s = sockhost_tests::connect(addr);
            s.write_all(b"pid").unwrap();
            waiting.push((s, Vec::new()));
        }
        let (survivor, survivor_conn) = held.pop().unwrap();
        (held, survivor, survivor_conn, waiting)
    });
    // `victim_conn` stays open until the victim is gone, so it never takes a queued one.
    let (mut victim_conn, survivor, survivor_conn, mut waiting) = body.join().unwrap();
    let (victim, _victim_conn) = victim_conn.pop().unwrap();

    // The victim dies and cannot be replaced: its queue moves to the survivor's socket.
    std::fs::write(&marker, b"").unwrap();
    kill(victim, "KILL");
    let line = server
        .stderr
        .wait_for("queued connection(s) moved", Duration::from_secs(5));
    eprintln!("{line}");
    server
        .stderr
        .wait_for("worker failed to start", Duration::from_secs(10));

    // The survivor serves them all, one at a time (each is closed once answered).
    drop(survivor_conn);
    let total = waiting.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut fds: Vec<libc::pollfd> = waiting
            .iter()
            .map(|(s, _)| libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(s),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
        waiting.retain_mut(|(s, got)| match reply_ready(s, got) {
            Some(reply) => {
                assert_eq!(reply, survivor.to_string(), "answered by the survivor");
                false
            }
            None => true,
        });
    }
    assert!(
        waiting.is_empty(),
        "{} of {total} queued connections were never answered",
        waiting.len()
    );
    let migrated = std::thread::spawn(move || {
        enter_network_of(pid);
        migrated_requests()
    })
    .join()
    .unwrap();
    assert!(migrated > 0, "the kernel moved no connection");
    eprintln!("{total} queued connections answered; the kernel moved {migrated}");
    let _ = std::fs::remove_file(&marker);
}
