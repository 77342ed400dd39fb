//! Host services through the real binary, with the `servicekit` test plugin: timers, wake
//! handles from plugin threads, posts between connections, outbound connections (and their
//! failures), protocol ticks, idle timeouts — and the bounds that keep a plugin writing to a
//! peer that never reads from costing unbounded memory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use sockhost_tests::{ask, closed_within, connect, serve, serve_thread, Server};

/// Read one `\n`-terminated line (bounded by the stream's read timeout).
fn next_line(stream: &mut TcpStream) -> String {
    ask(stream, "")
}

/// Thread mode, and process mode with one worker: services are per worker, so every
/// connection of a test must reach the same one.
fn both_modes(extra: &[&str]) -> Vec<(&'static str, Server)> {
    let mut process = vec!["--bind", "127.0.0.1:0", "--workers", "1"];
    process.extend(extra);
    vec![
        ("thread", serve_thread("servicekit", extra)),
        ("process", serve("servicekit", &process)),
    ]
}

#[test]
fn a_timer_fires_and_a_cancelled_one_does_not() {
    for (mode, server) in both_modes(&[]) {
        let mut c = connect(server.addr());
        c.write_all(b"timer 50 1\n").unwrap();
        assert_eq!(next_line(&mut c), "timer 1", "{mode}");
        c.write_all(b"timer 5000 2\n").unwrap();
        assert_eq!(ask(&mut c, "cancel\n"), "cancelled true", "{mode}");
        // A later timer still fires, and the cancelled one never came before it.
        c.write_all(b"timer 100 3\n").unwrap();
        assert_eq!(next_line(&mut c), "timer 3", "{mode}");
    }
}

#[test]
fn a_wake_from_a_plugin_thread_reaches_its_consumer() {
    for (mode, server) in both_modes(&[]) {
        let mut c = connect(server.addr());
        let start = Instant::now();
        c.write_all(b"wake 20\n").unwrap();
        assert_eq!(next_line(&mut c), "woken 7", "{mode}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{mode}: wake took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn a_post_reaches_another_connection_and_a_closed_one_is_gone() {
    for (mode, server) in both_modes(&[]) {
        let mut a = connect(server.addr());
        let mut b = connect(server.addr());
        let b_id = ask(&mut b, "id\n");
        assert_eq!(
            ask(&mut a, &format!("post {b_id} hello from a\n")),
            "post Queued",
            "{mode}"
        );
        assert_eq!(next_line(&mut b), "hello from a", "{mode}");
        // services::close ends b (after what was queued), and then b is gone.
        assert_eq!(ask(&mut a, &format!("close {b_id}\n")), "closing", "{mode}");
        assert!(
            closed_within(&mut b, Duration::from_secs(5)),
            "{mode}: b not closed"
        );
        // Its entry is released once its task ended: poll with posts (each answers at once).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = ask(&mut a, &format!("post {b_id} late\n"));
            if status == "post Gone" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: post to a closed connection: {status}"
            );
        }
    }
}

#[test]
fn outbound_connections_carry_data_both_ways() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap();
    let server = serve_thread("servicekit", &[]);
    let mut c = connect(server.addr());
    c.write_all(format!("connect {addr} 2000\n").as_bytes())
        .unwrap();
    let (mut up, _) = upstream.accept().unwrap();
    up.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(next_line(&mut c), "outbound connected");
    // Server-first: the upstream speaks before the plugin sends anything.
    up.write_all(b"greeting\n").unwrap();
    assert_eq!(next_line(&mut c), "outbound data greeting");
    c.write_all(b"send ping\n").unwrap();
    let mut buf = [0u8; 4];
    up.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // A half-close from the plugin reaches the upstream as end of stream, after what was
    // queued; the upstream can still answer.
    c.write_all(b"send last\nshut\n").unwrap();
    let mut rest = String::new();
    up.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "last");
    up.write_all(b"after eof\n").unwrap();
    assert_eq!(next_line(&mut c), "outbound data after eof");
    drop(up);
    assert_eq!(next_line(&mut c), "outbound lost Closed");
}

#[test]
fn outbound_connect_to_a_closed_port_fails_within_the_timeout() {
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (mode, server) in both_modes(&[]) {
        let mut c = connect(server.addr());
        let start = Instant::now();
        c.write_all(format!("connect {closed} 1000\n").as_bytes())
            .unwrap();
        assert_eq!(next_line(&mut c), "outbound lost ConnectFailed", "{mode}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{mode}: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn outbound_connect_to_a_listener_that_never_accepts_fails_at_the_timeout() {
    // A listener that never accepts: a connect neither succeeds nor fails by itself.
    let stuck = sockhost_tests::Unaccepting::new();
    let addr = stuck.addr;
    let server = serve_thread("servicekit", &[]);
    let mut c = connect(server.addr());
    let start = Instant::now();
    c.write_all(format!("connect {addr} 700\n").as_bytes())
        .unwrap();
    assert_eq!(next_line(&mut c), "outbound lost ConnectFailed");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(2500),
        "the failure should come at the 700 ms timeout, came after {took:?}"
    );
}

#[test]
fn a_bad_outbound_target_is_refused_at_once() {
    let server = serve_thread("servicekit", &[]);
    let mut c = connect(server.addr());
    let reply = ask(&mut c, "connect no-port-here 100\n");
    assert!(reply.starts_with("connect refused: "), "{reply}");
}

#[test]
fn the_protocol_ticks_on_a_quiet_server() {
    let server = serve_thread("servicekit", &["--plugin-opt", "tick-ms=20"]);
    let mut c = connect(server.addr());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ticks: u64 = ask(&mut c, "ticks\n").parse().unwrap();
        if ticks >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ticks} ticks in 10 s at 20 ms"
        );
        std::thread::sleep(Duration::from_millis(50)); // let time pass: the tick is the subject
    }
}

#[test]
fn a_protocol_idle_timeout_replaces_keep_alive() {
    // --keep-alive 1 would close it after a second; the protocol asked for never.
    let server = serve_thread("servicekit", &["--keep-alive", "1"]);
    let mut kept = connect(server.addr());
    assert_eq!(ask(&mut kept, "idle 0\n"), "idle set");
    let mut short = connect(server.addr());
    assert_eq!(ask(&mut short, "idle 200\n"), "idle set");
    let start = Instant::now();
    assert!(
        closed_within(&mut short, Duration::from_secs(5)),
        "the 200 ms idle timeout"
    );
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // Well past --keep-alive, the other one still answers.
    std::thread::sleep(Duration::from_millis(1600)); // time passing is the subject here
    assert!(!ask(&mut kept, "id\n").is_empty(), "still served");
}

#[test]
fn a_peer_that_never_reads_is_closed_at_the_output_cap_and_memory_stays_bounded() {
    let server = serve_thread(
        "servicekit",
        &["--max-pending", "4194304", "--log-level", "debug"],
    );
    let pid = server.pid();
    let before = sockhost_tests::rss_kib(pid);
    let mut hog = connect(server.addr());
    // Ask for 1 GiB and never read: the plugin writes 64 KiB per wake regardless.
    hog.write_all(b"flood 1073741824\n").unwrap();
    // Meanwhile another client is served normally.
    let mut other = connect(server.addr());
    assert!(!ask(&mut other, "id\n").is_empty(), "still served");
    // The hog is cut off at the cap (waited for in the log: reading would make room).
    server
        .stderr
        .wait_for("above --max-pending", Duration::from_secs(20));
    // Reading now sees at most the kernel's buffers' worth, then the end.
    hog.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match hog.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        assert!(
            total < 64 << 20,
            "read {total} bytes: the connection was not cut at the cap"
        );
    }
    assert!(
        !String::from_utf8_lossy(&buf).contains("flooded"),
        "the flood must not finish"
    );
    let after = sockhost_tests::rss_kib(pid);
    assert!(
        after < before + 32 * 1024,
        "server RSS grew from {before} KiB to {after} KiB for one non-reading peer"
    );
    assert_eq!(ask(&mut other, "echo still served\n"), "echo still served");
}

#[test]
fn inspect_shows_the_services_level_a_plugin_needs() {
    let path = sockhost_tests::plugin("servicekit");
    let out = std::process::Command::new(sockhost_tests::sockhost_bin())
        .args(["inspect", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("services:    level 1 needed"), "{text}");
    let echo = sockhost_tests::plugin("echo");
    let out = std::process::Command::new(sockhost_tests::sockhost_bin())
        .args(["inspect", echo.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("services:    none"), "{text}");
}

#[test]
fn udp_sessions_get_timers_wakes_and_posts() {
    use std::net::UdpSocket;
    let server = serve(
        "servicekit",
        &["--bind", "udp://127.0.0.1:0", "--concurrency", "thread"],
    );
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server
        .listening
        .iter()
        .find(|(t, _)| t == "udp")
        .map(|(_, a)| *a)
        .expect("a udp bind");
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.connect(addr).unwrap();
    }
    let recv = |s: &UdpSocket| {
        let mut buf = [0u8; 2048];
        let n = s.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
    };
    a.send(b"timer 20 9\n").unwrap();
    assert_eq!(recv(&a), "timer 9");
    a.send(b"wake 10\n").unwrap();
    assert_eq!(recv(&a), "woken 7");
    b.send(b"id\n").unwrap();
    let b_id = recv(&b);
    a.send(format!("post {b_id} to a udp peer\n").as_bytes())
        .unwrap();
    assert_eq!(recv(&a), "post Queued");
    assert_eq!(recv(&b), "to a udp peer");
}

#[test]
fn a_peer_that_reads_a_trickle_is_closed_at_the_send_timeout() {
    // 32 MiB of output (more than the kernel's socket buffers hold, under --max-pending)
    // that the peer drains at ~5 KiB/s: the host's unsent output stays above the 64 KiB
    // low-water mark, so --send-timeout 1 ends it, though every read makes progress.
    let server = serve_thread(
        "servicekit",
        &[
            "--send-timeout",
            "1",
            "--max-pending",
            "67108864",
            "--log-level",
            "debug",
        ],
    );
    let mut slow = connect(server.addr());
    slow.write_all(b"flood 33554432\n").unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    // Trickle until the server says it gave up on this peer.
    while !server.stderr.text().contains("longer than --send-timeout") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not closed by --send-timeout"
        );
        let n = slow.read(&mut buf[..1024]).expect("the trickle read");
        assert!(n > 0, "closed before the server logged why");
        std::thread::sleep(Duration::from_millis(200)); // the trickle reader is the subject
    }
    // What the kernel still holds drains, then the end: the connection is closed.
    let mut total = 0usize;
    loop {
        match slow.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        assert!(
            total < 32 << 20,
            "read {total} bytes: the connection was not closed"
        );
    }
    // A normal client meanwhile is served.
    let mut other = connect(server.addr());
    assert_eq!(ask(&mut other, "still\n"), "still");
}
