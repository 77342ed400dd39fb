//! Idle memory per connection (issue 17), measured from outside: the growth of the server's
//! resident set while thousands of keep-alive connections sit open and idle. It holds the
//! whole per-connection footprint — the connection's task, its readiness slot, its table
//! entry, the consumer — so a change that makes every idle connection cost more (a field
//! that moves the task into tokio's next 128-byte size class, a registration or buffer kept
//! per connection) fails here, not only in `bench/idle-memory.sh`. The figure there, at
//! 10,000 connections, is ~500 bytes.

use std::io::Read;

use sockhost_tests::{connect, fd_limit, round_trip, rss_kib, serve_thread, set_fd_limit};

/// Enough connections that the heap's growth steps (glibc extends and trims it 128 KiB at a
/// time) move the per-connection figure by less than 40 bytes.
const CONNS: u64 = 4000;
/// The bound: the measured ~500 B plus room for noise, and below what one more 128-byte
/// step per connection would bring.
const MAX_BYTES_PER_CONN: u64 = 600;

#[test]
fn an_idle_keep_alive_connection_costs_the_server_at_most_600_bytes() {
    // This process holds CONNS sockets and the server as many: raise the soft fd limit
    // (inherited by the server) within the hard one.
    let me = std::process::id();
    let (soft, hard) = fd_limit(me);
    let want = CONNS + 500;
    assert!(
        hard >= want,
        "the fd hard limit is {hard}; this test needs {want} (ulimit -Hn)"
    );
    if soft < want {
        set_fd_limit(me, want, hard);
    }
    let server = serve_thread("echo", &["--keep-alive", "0", "--max-connections", "10000"]);
    // One connection first, so that what every worker sets up once (buffers, tables) is
    // in the "before" figure.
    let mut first = connect(server.addr());
    assert_eq!(round_trip(&mut first, b"w"), b"w");
    let before = rss_kib(server.pid());
    let mut idle = Vec::with_capacity(CONNS as usize);
    for i in 0..CONNS {
        let mut s = connect(server.addr());
        // A round trip proves the server accepted it and made its consumer.
        let byte = [b'a' + (i % 26) as u8];
        assert_eq!(round_trip(&mut s, &byte), byte);
        idle.push(s);
    }
    let after = rss_kib(server.pid());
    let per_conn = after.saturating_sub(before) * 1024 / CONNS;
    eprintln!("rss {before} -> {after} KiB: {per_conn} bytes per idle connection");
    assert!(
        per_conn <= MAX_BYTES_PER_CONN,
        "{per_conn} bytes per idle connection (rss {before} -> {after} KiB for {CONNS}): \
         above {MAX_BYTES_PER_CONN}; see docs/performance.md, Idle memory"
    );
    // Still served: the last connection echoes, and every one is still open.
    let last = idle.last_mut().unwrap();
    assert_eq!(round_trip(last, b"z"), b"z");
    for s in &mut idle {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("an idle connection was closed or sent something: {other:?}"),
        }
    }
}
