//! The cross-platform subset: what every platform's thread mode must do. On Linux it runs
//! with the rest of the suite; `.ci/windows.sh` runs it against `sockhost.exe` under wine
//! (`SOCKHOST_TARGET=x86_64-pc-windows-gnu SOCKHOST_RUNNER=wine`), from this Linux test
//! binary over 127.0.0.1: echo over TCP, UDP and TLS, 200 concurrent connections,
//! keep-alive close, `inspect`, process mode refused (Windows), Ctrl-C graceful stop, a
//! bad plugin file refused with one `error:` line.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use sockhost_tests::{
    closed_within, connect, payload, plugin, round_trip, run_to_exit, serve_thread, testing_windows,
};

/// Generous: wine starts a process in seconds on a loaded machine.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("sockhost-platform-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The single `error:` line of a run that must fail.
fn one_error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors.len(),
        1,
        "expected one error: line; stderr:\n{stderr}"
    );
    errors[0]
}

#[test]
fn echo_over_tcp() {
    let server = serve_thread("echo", &[]);
    let mut s = connect(server.addr());
    for len in [1usize, 1_000, 100_000] {
        let data = payload(len, len as u64);
        assert!(
            round_trip(&mut s, &data) == data,
            "{len}-byte payload came back different"
        );
    }
}

#[test]
fn echo_over_udp() {
    let server = serve_thread("echo", &["--bind", "udp://127.0.0.1:0"]);
    let addr: SocketAddr = server
        .listening
        .iter()
        .find(|(t, _)| t == "udp")
        .map(|(_, a)| *a)
        .expect("a udp bind");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for len in [1usize, 1_400, 9_000] {
        let data = payload(len, len as u64);
        client.send_to(&data, addr).unwrap();
        let mut buf = vec![0u8; 65_536];
        let (n, from) = client.recv_from(&mut buf).expect("a reply datagram");
        assert_eq!(from, addr, "reply from the server's address");
        assert!(
            buf[..n] == data[..],
            "{len}-byte datagram came back different"
        );
    }
}

#[test]
fn echo_over_tls() {
    let dir = Scratch::new("tls");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path("key.pem"), key.serialize_pem()).unwrap();
    let (cert_file, key_file) = (dir.path("cert.pem"), dir.path("key.pem"));
    let server = serve_thread(
        "echo",
        &["--cert-file", &cert_file, "--key-file", &key_file],
    );

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(server.addr()));
    let data = payload(10_000, 7);
    tls.write_all(&data).unwrap();
    tls.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    tls.read_exact(&mut back)
        .expect("the echoed bytes over TLS");
    assert!(back == data, "TLS payload came back different");
}

#[test]
fn two_hundred_concurrent_connections() {
    let server = serve_thread("echo", &[]);
    let addr = server.addr();
    let clients: Vec<_> = (0..200u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for m in 0..5u64 {
                    let msg = payload(64 + (m as usize * 37) % 900, c * 1000 + m);
                    assert_eq!(round_trip(&mut s, &msg), msg, "connection {c} message {m}");
                }
                s
            })
        })
        .collect();
    // All 200 are open at once: every client keeps its connection until all have answered.
    let open: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("a client failed"))
        .collect();
    assert_eq!(open.len(), 200);
}

#[test]
fn keep_alive_closes_an_idle_connection() {
    let server = serve_thread("echo", &["--keep-alive", "1"]);
    let mut idle = connect(server.addr());
    assert_eq!(round_trip(&mut idle, b"once"), b"once");
    assert!(
        closed_within(&mut idle, Duration::from_secs(15)),
        "idle connection still open long after --keep-alive 1"
    );
}

#[test]
fn inspect_names_the_plugin() {
    let echo = plugin("echo");
    let done = run_to_exit(&["inspect", echo.to_str().unwrap()], EXIT_DEADLINE);
    assert!(
        done.status.success(),
        "inspect failed: {}\n{}",
        done.status,
        done.stderr
    );
    assert!(
        done.stdout.contains("echo"),
        "inspect does not name the plugin:\n{}",
        done.stdout
    );
}

#[test]
fn process_mode_is_refused_on_windows() {
    if !testing_windows() {
        return; // Linux serves in process mode (tests/tests/arbiter.rs).
    }
    let echo = plugin("echo");
    let done = run_to_exit(
        &[
            "--plugin",
            echo.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "process",
        ],
        EXIT_DEADLINE,
    );
    assert!(!done.status.success(), "process mode started on Windows");
    let line = one_error_line(&done.stderr);
    assert!(
        line.contains("--concurrency thread"),
        "the refusal does not say to use thread mode: {line}"
    );
}

#[test]
fn ctrl_c_stops_gracefully() {
    let mut server = serve_thread("echo", &[]);
    let mut s = connect(server.addr());
    assert_eq!(round_trip(&mut s, b"before"), b"before");
    // Under wine, SIGINT reaches the program as a console Ctrl-C event.
    server.signal("INT");
    let status = server.wait_exit(EXIT_DEADLINE);
    assert!(status.success(), "exit status after Ctrl-C: {status}");
    server.stderr.wait_for("stopped", Duration::from_secs(5));
}

#[test]
fn a_bad_plugin_file_is_refused_with_one_error_line() {
    let dir = Scratch::new("bad");
    let name = if testing_windows() {
        "bad.dll"
    } else {
        "libbad.so"
    };
    let bad = dir.path(name);
    std::fs::write(&bad, b"this is not a dynamic library").unwrap();
    let done = run_to_exit(
        &[
            "--plugin",
            &bad,
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "thread",
        ],
        EXIT_DEADLINE,
    );
    assert!(!done.status.success(), "a bad plugin file was served");
    let line = one_error_line(&done.stderr);
    assert!(
        line.contains(name),
        "the error does not name the file: {line}"
    );
}
