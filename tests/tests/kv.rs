//! The kv plugin served by the real binary: a line protocol with state shared across the
//! connections of one worker, framing across reads, and a bounded line length.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sockhost_tests::{ask, closed_within, connect, plugin, Server};

fn kv(extra: &[&str]) -> Server {
    sockhost_tests::serve_thread("kv", extra)
}

/// Read one reply line (without its newline); bounded by the stream's read timeout.
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) if byte[0] == b'\n' => return String::from_utf8_lossy(&line).into_owned(),
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading a reply line: {e}"),
        }
    }
}

#[test]
fn commands_state_framing_and_limits() {
    let server = kv(&["--plugin-opt", "max-line=64"]);
    let line = server
        .stderr
        .wait_for("store ready", Duration::from_secs(5));
    assert!(
        line.contains("plugin=kv") && line.contains("max-line 64"),
        "{line}"
    );

    // State is shared by the connections of the (one) worker.
    let mut writer = connect(server.addr());
    let mut reader = connect(server.addr());
    assert_eq!(ask(&mut writer, "SET colour deep blue\n"), "OK");
    assert_eq!(ask(&mut reader, "GET colour\n"), "VALUE deep blue");

    // Several commands in one write, and one command split over writes.
    writer
        .write_all(b"SET a 1\r\nGET a\nDEL a\nGE")
        .expect("write");
    for want in ["OK", "VALUE 1", "DELETED"] {
        assert_eq!(read_line(&mut writer), want);
    }
    writer.write_all(b"T colo").expect("write");
    assert_eq!(ask(&mut writer, "ur\n"), "VALUE deep blue");

    // A line past max-line: an error, then the server closes, without waiting for a newline.
    let long = vec![b'x'; 200];
    writer.write_all(&long).expect("write");
    assert_eq!(read_line(&mut writer), "ERR line too long (max 64 bytes)");
    assert!(
        closed_within(&mut writer, Duration::from_secs(5)),
        "connection left open after an overlong line"
    );

    // The other connection is unaffected; QUIT says goodbye and closes.
    assert_eq!(ask(&mut reader, "PING\n"), "PONG");
    assert_eq!(ask(&mut reader, "QUIT\n"), "BYE");
    assert!(closed_within(&mut reader, Duration::from_secs(5)));
}

#[test]
fn bad_option_value_is_refused_at_startup() {
    let lib = plugin("kv");
    let f = sockhost_tests::run_to_exit(
        &[
            "--plugin",
            lib.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "thread",
            "--plugin-opt",
            "max-line=0",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("error: plugin kv: option max-line: must be between 1 and 1048576, got 0"),
        "{}",
        f.stderr
    );
}
