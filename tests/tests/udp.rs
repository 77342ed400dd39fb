//! UDP: one consumer per peer, datagram boundaries kept, idle expiry, `--max-sessions`
//! eviction, and peers pinned to one worker in process mode.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sockhost_tests::{children_of, payload, plugin, wait_until, Server};

fn udp_server(plugin_name: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--bind", "udp://127.0.0.1:0"];
    args.extend(extra);
    sockhost_tests::serve(plugin_name, &args)
}

fn udp_addr(server: &Server) -> SocketAddr {
    server
        .listening
        .iter()
        .find(|(t, _)| t == "udp")
        .map(|(_, a)| *a)
        .expect("a udp bind")
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Send one datagram and return the reply datagram.
fn exchange(sock: &UdpSocket, to: SocketAddr, data: &[u8]) -> Vec<u8> {
    sock.send_to(data, to).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = sock.recv_from(&mut buf).expect("a reply datagram");
    assert_eq!(from, to, "reply from the server's address");
    buf.truncate(n);
    buf
}

fn ask(sock: &UdpSocket, to: SocketAddr, command: &str) -> String {
    String::from_utf8(exchange(sock, to, command.as_bytes()))
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn echo_keeps_datagram_boundaries_for_every_client() {
    let server = udp_server("echo", &["--concurrency", "thread"]);
    let addr = udp_addr(&server);
    assert!(server
        .stdout
        .text()
        .contains(&format!("listening on udp://{addr}")));
    let clients: Vec<UdpSocket> = (0..5).map(|_| client()).collect();
    for (i, c) in clients.iter().enumerate() {
        for len in [1usize, 64, 1400, 9000, 65_507] {
            let data = payload(len, (i * 100 + len) as u64);
            assert!(
                exchange(c, addr, &data) == data,
                "client {i}: {len}-byte datagram came back different"
            );
        }
    }
}

#[test]
fn one_session_per_peer() {
    let server = udp_server("testkit", &["--concurrency", "thread"]);
    let addr = udp_addr(&server);
    let (a, b) = (client(), client());
    assert_eq!(ask(&a, addr, "count"), "1");
    assert_eq!(ask(&a, addr, "count"), "2");
    assert_eq!(
        ask(&b, addr, "count"),
        "1",
        "a second peer has its own session"
    );
    assert_eq!(ask(&a, addr, "count"), "3");
    let who = ask(&b, addr, "whoami");
    assert!(
        who.starts_with(&format!(
            "peer={} local={addr} transport=udp",
            b.local_addr().unwrap()
        )),
        "{who}"
    );
}

#[test]
fn an_idle_session_expires_and_the_next_datagram_starts_a_new_one() {
    let server = udp_server(
        "testkit",
        &[
            "--concurrency",
            "thread",
            "--keep-alive",
            "1",
            "--log-level",
            "debug",
        ],
    );
    let addr = udp_addr(&server);
    let a = client();
    assert_eq!(ask(&a, addr, "count"), "1");
    assert_eq!(ask(&a, addr, "count"), "2");
    // The plugin logs connection_lost at debug level: wait for that, not for a clock.
    server
        .stderr
        .wait_for("lost: IdleTimeout", Duration::from_secs(5));
    assert_eq!(
        ask(&a, addr, "count"),
        "1",
        "a new session after the idle timeout"
    );
}

#[test]
fn max_sessions_evicts_the_least_recently_used() {
    let server = udp_server(
        "testkit",
        &["--concurrency", "thread", "--max-sessions", "2"],
    );
    let addr = udp_addr(&server);
    let (a, b, c) = (client(), client(), client());
    assert_eq!(ask(&a, addr, "count"), "1");
    assert_eq!(ask(&b, addr, "count"), "1");
    assert_eq!(ask(&a, addr, "count"), "2"); // a is now the most recently used
    assert_eq!(ask(&c, addr, "count"), "1"); // evicts b
    assert_eq!(ask(&a, addr, "count"), "3", "a kept its session");
    assert_eq!(ask(&b, addr, "count"), "1", "b was evicted and starts over");
    server.stderr.wait_for("evicted", Duration::from_secs(3));
}

#[test]
fn a_panic_ends_only_that_peers_session() {
    let server = udp_server("testkit", &["--concurrency", "thread"]);
    let addr = udp_addr(&server);
    let (a, b) = (client(), client());
    assert_eq!(ask(&a, addr, "count"), "1");
    assert_eq!(ask(&b, addr, "count"), "1");
    a.send_to(b"panic", addr).unwrap();
    server
        .stderr
        .wait_for("ending this peer's session", Duration::from_secs(3));
    assert_eq!(
        ask(&b, addr, "count"),
        "2",
        "the other peer keeps its session"
    );
    assert_eq!(
        ask(&a, addr, "count"),
        "1",
        "the panicking peer starts over"
    );
}

#[test]
fn tcp_and_udp_binds_are_served_side_by_side() {
    let echo = plugin("echo");
    let server = Server::start(&[
        "--plugin",
        echo.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--bind",
        "udp://127.0.0.1:0",
        "--concurrency",
        "thread",
    ]);
    let mut tcp = sockhost_tests::connect(server.addr());
    assert_eq!(sockhost_tests::round_trip(&mut tcp, b"tcp"), b"tcp");
    assert_eq!(exchange(&client(), udp_addr(&server), b"udp"), b"udp");
}

#[test]
fn process_mode_keeps_each_peer_on_one_worker_and_a_killed_workers_peers_go_to_its_replacement() {
    let server = udp_server("testkit", &["--workers", "2"]);
    let addr = udp_addr(&server);
    wait_until("2 workers", Duration::from_secs(5), || {
        children_of(server.pid()).len() == 2
    });
    let peers: Vec<UdpSocket> = (0..20).map(|_| client()).collect();
    // 200 datagrams: every peer's counter grows without a gap, so each has one session.
    for round in 1..=10 {
        for (i, p) in peers.iter().enumerate() {
            assert_eq!(
                ask(p, addr, "count"),
                round.to_string(),
                "peer {i} lost its session"
            );
        }
    }
    let owner: Vec<u32> = peers
        .iter()
        .map(|p| ask(p, addr, "pid").parse().unwrap())
        .collect();
    let workers = children_of(server.pid());
    assert!(
        workers.iter().all(|w| owner.contains(w)),
        "20 peers reach both workers: {owner:?}"
    );
    let victim = owner[0];
    let survivor = *workers.iter().find(|w| **w != victim).unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let mut replacement = 0;
    wait_until("a replacement worker", Duration::from_secs(3), || {
        let now = children_of(server.pid());
        replacement = now
            .iter()
            .copied()
            .find(|p| *p != survivor && *p != victim)
            .unwrap_or(0);
        now.len() == 2 && replacement != 0
    });
    // Forked is not serving: until the replacement reports ready, its slot's peers are
    // steered to the survivor. The arbiter says when every slot is served again.
    server
        .stderr
        .wait_for("every slot has a serving worker", Duration::from_secs(10));
    for (i, p) in peers.iter().enumerate() {
        let now: u32 = ask(p, addr, "pid").parse().unwrap();
        if owner[i] == victim {
            assert_eq!(
                now, replacement,
                "peer {i} moved to the other worker instead of the replacement"
            );
        } else {
            assert_eq!(now, survivor, "peer {i} moved although its worker lives");
        }
    }
}

/// Receive one datagram (bounded by the client's read timeout) and check it came from `from`.
fn reply(sock: &UdpSocket, from: SocketAddr, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let (n, sender) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: no reply datagram ({e})"));
    assert_eq!(sender, from, "{what}: reply from the server's address");
    buf.truncate(n);
    buf
}

/// Send every peer's datagrams while the server is stopped (`SIGSTOP`), so they all wait in
/// its socket and it receives them in full batches when it continues; `order` says whose turn
/// it is, one datagram each.
fn burst(
    server: &Server,
    addr: SocketAddr,
    peers: &[UdpSocket],
    scripts: &[Vec<Vec<u8>>],
    order: &[usize],
) {
    server.signal("STOP");
    let mut next = vec![0; peers.len()];
    for &p in order {
        peers[p].send_to(&scripts[p][next[p]], addr).unwrap();
        next[p] += 1;
    }
    for (p, script) in scripts.iter().enumerate() {
        assert_eq!(
            next[p],
            script.len(),
            "order sends all of peer {p}'s script"
        );
    }
    server.signal("CONT");
}

#[test]
fn a_burst_from_several_peers_is_answered_per_peer_in_order_with_sessions_ending_mid_batch() {
    let server = udp_server(
        "testkit",
        &["--concurrency", "thread", "--plugin-opt", "greeting=hi"],
    );
    let addr = udp_addr(&server);
    let peers: Vec<UdpSocket> = (0..6).map(|_| client()).collect();
    // Peer 0 sends its script in one run: its session closes, then panics, mid-run, and each
    // next datagram starts a new session (greeting first). The others send 20 `count`s each,
    // interleaved with one another.
    let script0 = [
        "count", "count", "close", "count", "panic", "count", "count",
    ];
    let mut scripts: Vec<Vec<Vec<u8>>> =
        vec![script0.iter().map(|c| c.as_bytes().to_vec()).collect()];
    scripts.extend((1..6).map(|_| vec![b"count".to_vec(); 20]));
    let mut order = vec![0; script0.len()];
    order.extend((0..20).flat_map(|_| 1..6));
    burst(&server, addr, &peers, &scripts, &order);

    let want0 = ["hi", "1\n", "2\n", "bye\n", "hi", "1\n", "hi", "1\n", "2\n"];
    for (i, want) in want0.iter().enumerate() {
        let got = reply(&peers[0], addr, &format!("peer 0, reply {i}"));
        assert_eq!(String::from_utf8_lossy(&got), *want, "peer 0, reply {i}");
    }
    for (p, peer) in peers.iter().enumerate().skip(1) {
        let mut want = vec!["hi".to_string()];
        want.extend((1..=20).map(|n| format!("{n}\n")));
        for (i, want) in want.iter().enumerate() {
            let got = reply(peer, addr, &format!("peer {p}, reply {i}"));
            assert_eq!(String::from_utf8_lossy(&got), *want, "peer {p}, reply {i}");
        }
    }
    // Exactly those: the next reply each peer gets answers its next datagram.
    assert_eq!(ask(&peers[0], addr, "count"), "3");
    for peer in &peers[1..] {
        assert_eq!(ask(peer, addr, "count"), "21");
    }
    server
        .stderr
        .wait_for("ending this peer's session", Duration::from_secs(3));
}

#[test]
fn large_datagrams_in_one_batch_each_come_back_whole() {
    let server = udp_server("echo", &["--concurrency", "thread"]);
    let addr = udp_addr(&server);
    let peers: Vec<UdpSocket> = (0..3).map(|_| client()).collect();
    // Several datagrams past a page, from different peers, in the same batch: each must come
    // back as it was sent (a receive buffer shared between them would mix them up).
    let sizes = [
        vec![20_000, 1, 1400],
        vec![9000, 20_000, 64],
        vec![1400, 1400, 1400],
    ];
    let scripts: Vec<Vec<Vec<u8>>> = sizes
        .iter()
        .enumerate()
        .map(|(p, s)| {
            s.iter()
                .enumerate()
                .map(|(i, &len)| payload(len, (p * 10 + i) as u64))
                .collect()
        })
        .collect();
    burst(
        &server,
        addr,
        &peers,
        &scripts,
        &[0, 1, 0, 1, 2, 2, 1, 0, 2],
    );
    for (p, script) in scripts.iter().enumerate() {
        for (i, sent) in script.iter().enumerate() {
            let got = reply(&peers[p], addr, &format!("peer {p}, datagram {i}"));
            assert!(
                got == *sent,
                "peer {p}, datagram {i}: {} bytes sent, {} different bytes back",
                sent.len(),
                got.len()
            );
        }
    }
}
