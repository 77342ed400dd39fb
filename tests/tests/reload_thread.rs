//! Thread mode reload: HUP hands the listening sockets to a new process (LISTEN_FDS) that
//! loads the plugin as it is on disk; the old process drains and exits.

use std::time::Duration;

use sockhost_tests::{alive, ask, connect, plugin, wait_until, LoadLoop, Server};

#[test]
fn hup_in_thread_mode_hands_over_to_a_new_process_with_zero_failures() {
    let dir = std::env::temp_dir().join(format!("sockhost-thread-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("libproto.so");
    let pid_file = dir.join("sockhost.pid");
    std::fs::copy(plugin("testkit"), &lib).unwrap();
    let mut server = Server::start(&[
        "--plugin",
        lib.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "tag"), "a");
    let load = LoadLoop::start(server.addr(), 4, Duration::from_secs(60));

    let tmp = dir.join("libproto.so.new");
    std::fs::copy(plugin("testkit_b"), &tmp).unwrap();
    std::fs::rename(&tmp, &lib).unwrap();
    server.signal("HUP");
    server
        .stderr
        .wait_for("reload finished", Duration::from_secs(10));
    // The old process drains (one connection still open here) while the new one serves.
    let mut fresh = connect(server.addr());
    assert_eq!(
        ask(&mut fresh, "tag"),
        "b",
        "new connections reach the new build"
    );
    assert_eq!(
        ask(&mut s, "tag"),
        "a",
        "the old connection is still served by the old process"
    );
    drop(s);
    drop(fresh);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "the old process exits 0 after draining: {status}"
    );

    let successor: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(
        successor,
        server.pid(),
        "the pid file names the new process"
    );
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failures during the handover: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 50, "only {ok} round trips");
    let mut after = connect(server.addr());
    assert_eq!(ask(&mut after, "tag"), "b");
    drop(after);

    assert!(std::process::Command::new("kill")
        .args(["-TERM", &successor.to_string()])
        .status()
        .unwrap()
        .success());
    wait_until("the new process to stop", Duration::from_secs(10), || {
        !alive(successor)
    });
    assert!(!pid_file.exists(), "the new process removes its pid file");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stop that comes while a reload's successor is starting leaves the sockets alone: the
/// successor (which keeps starting, and then serves) holds them too, so they are not marked
/// to refuse new connections as a final stop's are.
#[test]
fn a_stop_during_a_reload_leaves_the_successor_taking_connections() {
    let mut server = Server::start(&[
        "--plugin",
        plugin("testkit").to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
    ]);
    let addr = server.addr();
    server.signal("HUP");
    server
        .stderr
        .wait_for("reload started", Duration::from_secs(10));
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    // The successor logs to the same stderr.
    wait_until("the successor to serve", Duration::from_secs(10), || {
        server.stderr.count("serving in thread mode") >= 2
    });
    let text = server.stderr.text();
    let successor: u32 = text
        .rsplit("serving in thread mode (pid ")
        .next()
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no successor pid in:\n{text}"));
    assert_ne!(successor, server.pid());
    let reached = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3));
    let served = reached.map(|mut s| ask(&mut s, "tag"));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &successor.to_string()])
        .status();
    wait_until("the successor to stop", Duration::from_secs(10), || {
        !alive(successor)
    });
    assert_eq!(
        served.as_deref().ok(),
        Some("a"),
        "the successor must take new connections: {served:?}\nstderr:\n{text}"
    );
}
