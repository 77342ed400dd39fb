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

#[test]
fn a_stop_serves_the_connections_already_queued_and_takes_no_new_ones() {
    // Process mode: the arbiter marks the sockets before it signals its worker.
    queued_connections_are_served_by_a_stop(&["--workers", "1"]);
}

#[test]
fn a_thread_mode_stop_serves_the_connections_already_queued_and_takes_no_new_ones() {
    // Thread mode: the worker, its sockets' last holder, marks them itself.
    queued_connections_are_served_by_a_stop(&["--concurrency", "thread"]);
}

/// One worker holding its one --max-connections permit: the next connection's handshake is
/// completed by the kernel and waits in the accept queue with its request, as a load
/// balancer's would in the instant a stop begins. `mode`: the flags of the mode tested.
fn queued_connections_are_served_by_a_stop(mode: &[&str]) {
    let mut args = vec![
        "--bind",
        "127.0.0.1:0",
        "--max-connections",
        "1",
        "--graceful-timeout",
        "20",
    ];
    args.extend(mode);
    let mut server = sockhost_tests::serve("echo", &args);
    let addr = server.addr();
    let mut holder = connect(addr);
    assert_eq!(round_trip(&mut holder, b"first"), b"first");
    let mut queued = connect(addr);
    queued.write_all(b"queued").unwrap();
    server.signal("TERM");
    // The stop has begun once new attempts are not taken (dropped, then refused once the
    // socket closes; until the stop, each attempt is queued and served as well)...
    sockhost_tests::wait_until(
        "new connection attempts to stop connecting while the worker drains",
        Duration::from_secs(5),
        || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
    );
    assert_eq!(round_trip(&mut holder, b"during"), b"during");
    // ...but the queued one is served once a permit frees, not reset by the close.
    drop(holder);
    queued
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut back = [0u8; 6];
    let r = std::io::Read::read_exact(&mut queued, &mut back);
    assert!(
        r.is_ok() && &back == b"queued",
        "the connection queued when the stop began was not served (lost: its request \"queued\"): {r:?}\nstderr:\n{}",
        server.stderr.text()
    );
    drop(queued);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}
