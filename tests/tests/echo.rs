//! The echo plugin over real sockets: byte-identical payloads of every size, many
//! concurrent connections, half-close.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use sockhost_tests::{connect, payload, round_trip, Server};

fn echo_server() -> Server {
    sockhost_tests::serve_thread("echo", &[])
}

#[test]
fn payloads_from_one_byte_to_one_megabyte_come_back_identical() {
    let server = echo_server();
    for (i, len) in [
        1usize, 2, 100, 1_000, 65_535, 65_536, 65_537, 300_000, 1_000_000,
    ]
    .into_iter()
    .enumerate()
    {
        let data = payload(len, i as u64);
        let mut writer = connect(server.addr());
        let mut reader = writer.try_clone().unwrap();
        // Write from another thread: the server applies backpressure, so a client that
        // writes 1 MB before reading anything would deadlock against it.
        let sent = data.clone();
        let w = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut back = vec![0u8; len];
        reader
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("reading {len} echoed bytes: {e}"));
        w.join().unwrap();
        assert!(back == data, "{len}-byte payload came back different");
    }
}

#[test]
fn two_hundred_concurrent_connections_times_twenty_messages() {
    let server = echo_server();
    let addr = server.addr();
    let clients: Vec<_> = (0..200u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for m in 0..20u64 {
                    let msg = payload(64 + (m as usize * 37) % 900, c * 1000 + m);
                    assert_eq!(round_trip(&mut s, &msg), msg, "connection {c} message {m}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
}

#[test]
fn half_close_still_delivers_every_byte_then_eof() {
    let server = echo_server();
    let mut s = connect(server.addr());
    let data = payload(200_000, 7);
    let mut writer = s.try_clone().unwrap();
    let sent = data.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_end(&mut back)
        .expect("read to EOF after half-close");
    w.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "half-closed stream came back different");
}
