//! Keep-alive, `--max-connections`, graceful and immediate stop.

use std::io::Write;
use std::time::{Duration, Instant};

use sockhost_tests::{closed_within, connect, plugin, round_trip, Server};

fn echo_with(extra: &[&str]) -> Server {
    sockhost_tests::serve_thread("echo", extra)
}

#[test]
fn keep_alive_closes_an_idle_connection_and_keeps_a_chatty_one() {
    let server = echo_with(&["--keep-alive", "1"]);
    let mut idle = connect(server.addr());
    let mut chatty = connect(server.addr());
    let start = Instant::now();
    // The chatty one talks every 300 ms for 2.5 s: well past the 1 s keep-alive.
    while start.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            round_trip(&mut chatty, b"still here"),
            b"still here",
            "chatty connection was closed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(1)),
        "idle connection still open after 3.5 s with --keep-alive 1"
    );
    assert_eq!(round_trip(&mut chatty, b"last"), b"last");
}

#[test]
fn keep_alive_zero_never_closes() {
    let server = echo_with(&["--keep-alive", "0"]);
    let mut s = connect(server.addr());
    assert!(
        !closed_within(&mut s, Duration::from_millis(1500)),
        "closed despite --keep-alive 0"
    );
    assert_eq!(round_trip(&mut s, b"x"), b"x");
}

#[test]
fn max_connections_holds_the_next_one_in_the_backlog_until_a_slot_frees() {
    let server = echo_with(&["--max-connections", "2"]);
    let mut a = connect(server.addr());
    let mut b = connect(server.addr());
    assert_eq!(round_trip(&mut a, b"a"), b"a");
    assert_eq!(round_trip(&mut b, b"b"), b"b");
    // The third completes the TCP handshake (kernel backlog) but is not served...
    let mut c = connect(server.addr());
    c.write_all(b"c").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(
        std::io::Read::read(&mut c, &mut buf).is_err(),
        "third connection served past --max-connections 2"
    );
    // ...until one of the first two closes.
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Read::read_exact(&mut c, &mut buf).expect("third connection served once a slot freed");
    assert_eq!(&buf, b"c");
}

#[test]
fn term_lets_an_open_connection_finish_then_exits_zero() {
    let dir = std::env::temp_dir().join(format!("sockhost-pid-{}", std::process::id()));
    let pid_file = dir.with_extension("pid");
    let mut server = echo_with(&[
        "--graceful-timeout",
        "20",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("pid file written")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, server.pid());
    let mut open = connect(server.addr());
    assert_eq!(round_trip(&mut open, b"before"), b"before");
    server.signal("TERM");
    server
        .stderr
        .wait_for("no longer accepting", Duration::from_secs(5));
    // Still served while draining; new connections are refused.
    assert_eq!(round_trip(&mut open, b"during"), b"during");
    assert!(
        std::net::TcpStream::connect(server.addr()).is_err(),
        "accepted a new connection while stopping"
    );
    assert!(server.is_running(), "exited while a connection was open");
    drop(open);
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "graceful stop exits 0, got {status}");
    assert!(!pid_file.exists(), "pid file removed at exit");
}

#[test]
fn graceful_timeout_closes_what_is_left() {
    let mut server = echo_with(&["--graceful-timeout", "1", "--keep-alive", "0"]);
    let mut open = connect(server.addr());
    assert_eq!(round_trip(&mut open, b"x"), b"x");
    let start = Instant::now();
    server.signal("TERM");
    assert!(
        closed_within(&mut open, Duration::from_secs(5)),
        "connection not closed after the graceful timeout"
    );
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "closed before the graceful timeout"
    );
}

#[test]
fn quit_stops_at_once() {
    let mut server = echo_with(&["--graceful-timeout", "30"]);
    let mut open = connect(server.addr());
    assert_eq!(round_trip(&mut open, b"x"), b"x");
    server.signal("QUIT");
    assert!(
        closed_within(&mut open, Duration::from_secs(3)),
        "QUIT left the connection open"
    );
    server.wait_exit(Duration::from_secs(3));
}

#[test]
fn consumer_close_flushes_before_closing() {
    let kit = plugin("testkit");
    let server = Server::start(&[
        "--plugin",
        kit.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
    ]);
    let mut s = connect(server.addr());
    assert_eq!(sockhost_tests::ask(&mut s, "close"), "bye");
    assert!(closed_within(&mut s, Duration::from_secs(3)));
}
