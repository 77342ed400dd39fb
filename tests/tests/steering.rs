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
    assert_eq!(seen.len(), 2, "both slots serve again: {seen:?}");
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
