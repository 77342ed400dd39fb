//! Defending against plugins: a panic costs only its connection; plugin logs reach stderr.

use std::time::Duration;

use sockhost_tests::{ask, closed_within, connect, round_trip, Server};

fn testkit(extra: &[&str]) -> Server {
    sockhost_tests::serve_thread("testkit", extra)
}

#[test]
fn a_panic_closes_only_its_own_connection() {
    let server = testkit(&[]);
    let mut bystanders: Vec<_> = (0..5).map(|_| connect(server.addr())).collect();
    for b in &mut bystanders {
        assert_eq!(round_trip(b, b"hello"), b"hello");
    }
    let mut victim = connect(server.addr());
    std::io::Write::write_all(&mut victim, b"panic now").unwrap();
    assert!(
        closed_within(&mut victim, Duration::from_secs(3)),
        "the panicking connection stays open"
    );
    server
        .stderr
        .wait_for("plugin panicked", Duration::from_secs(3));
    for b in &mut bystanders {
        assert_eq!(round_trip(b, b"still echoing"), b"still echoing");
    }
    let mut fresh = connect(server.addr());
    assert_eq!(round_trip(&mut fresh, b"new"), b"new");
}

#[test]
fn plugin_options_reach_the_plugin() {
    let server = testkit(&["--plugin-opt", "greeting=hi there\n"]);
    let mut s = connect(server.addr());
    let mut greeting = [0u8; 9];
    std::io::Read::read_exact(&mut s, &mut greeting).unwrap();
    assert_eq!(&greeting, b"hi there\n");
}

#[test]
fn plugin_logs_are_tagged_and_filtered_by_level() {
    let server = testkit(&["--log-level", "info"]);
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "log"), "logged");
    let line = server
        .stderr
        .wait_for("testkit log line", Duration::from_secs(3));
    assert!(
        line.contains("INFO") && line.contains("plugin=testkit"),
        "{line}"
    );
    assert_eq!(
        server.stderr.count("testkit debug line"),
        0,
        "debug line printed at --log-level info"
    );
}

#[test]
fn connection_info_reaches_the_consumer() {
    let server = testkit(&[]);
    let mut s = connect(server.addr());
    let who = ask(&mut s, "whoami");
    let local = s.local_addr().unwrap();
    assert!(
        who.starts_with(&format!(
            "peer={local} local={} transport=tcp",
            server.addr()
        )),
        "{who}"
    );
}
