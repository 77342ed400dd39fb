//! A peer must not be able to kill a worker with SIGPIPE, and no write that fails with EPIPE
//! may end a serving process (issue #11).
//!
//! The reproduction: over TLS, a client asks `hello` for a page with `Connection: close`,
//! reads the answer (the server has now sent close_notify and shut down its side), then
//! writes one bogus TLS application-data record. The server's TLS layer answers it with an
//! alert on a socket it has already shut down for writing: `writev` (tokio-rustls, no
//! `MSG_NOSIGNAL`) fails with EPIPE, which used to raise SIGPIPE with its default action in
//! the worker and kill it with every connection it held.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use sockhost_tests::{alive, children_of, connect, plugin, wait_until, Server};

/// A self-signed certificate for `localhost` in a temp dir, and a client that trusts it.
struct SelfSigned {
    dir: std::path::PathBuf,
    client: Arc<rustls::ClientConfig>,
}

impl SelfSigned {
    fn new(tag: &str) -> SelfSigned {
        let dir = std::env::temp_dir().join(format!("sockhost-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(made.cert.der().to_vec()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        SelfSigned {
            dir,
            client: Arc::new(client),
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One connection of the reproduction. Returns the HTTP answer; ends once the server has
/// closed the connection after the bogus record (EOF or reset), so the record has been
/// processed before the next one starts.
fn get_then_bogus_record(addr: SocketAddr, client: &Arc<rustls::ClientConfig>) -> String {
    let conn =
        rustls::ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(addr));
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("sending the request");
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .expect("reading the answer up to the server's close_notify");
    // Type 23 (application data), TLS 1.2 record version, 32 bytes the server cannot
    // decrypt.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend_from_slice(&[0xA5; 32]);
    let sock: &mut TcpStream = &mut tls.sock;
    sock.write_all(&record).expect("writing the bogus record");
    let mut rest = [0u8; 512];
    loop {
        match sock.read(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// `hello` over TLS with a fresh self-signed certificate, plus `extra`.
fn tls_hello(certs: &SelfSigned, extra: &[&str]) -> Server {
    let hello = plugin("hello");
    let (cert, key) = (certs.file("cert.pem"), certs.file("key.pem"));
    let mut args = vec![
        "--plugin",
        hello.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--cert-file",
        &cert,
        "--key-file",
        &key,
    ];
    args.extend(extra);
    Server::start(&args)
}

/// Run the reproduction 1,000 times; after each, `serving()` names the process(es) that
/// serve, which must not change.
fn thousand_bogus_records(
    server: &Server,
    client: &Arc<rustls::ClientConfig>,
    serving: impl Fn() -> Vec<u32>,
) {
    let before = serving();
    for i in 0..1000 {
        let answer = get_then_bogus_record(server.addr(), client);
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("Hello, world!\n"),
            "connection {i}: unexpected answer {answer:?}; stderr:\n{}",
            server.stderr.text()
        );
        assert_eq!(
            serving(),
            before,
            "connection {i}: the serving process changed; stderr:\n{}",
            server.stderr.text()
        );
    }
    assert_eq!(
        server.stderr.count("killed by"),
        0,
        "{}",
        server.stderr.text()
    );
}

#[test]
fn a_tls_worker_survives_a_thousand_bogus_records_after_connection_close() {
    let certs = SelfSigned::new("sigpipe-process");
    let server = tls_hello(&certs, &["--workers", "1"]);
    wait_until("the worker process", Duration::from_secs(10), || {
        children_of(server.pid()).len() == 1
    });
    thousand_bogus_records(&server, &certs.client, || children_of(server.pid()));
}

#[test]
fn thread_mode_survives_a_thousand_bogus_records_after_connection_close() {
    let certs = SelfSigned::new("sigpipe-thread");
    let mut server = tls_hello(&certs, &["--concurrency", "thread"]);
    let pid = server.pid();
    thousand_bogus_records(&server, &certs.client, || {
        vec![pid].into_iter().filter(|p| alive(*p)).collect()
    });
    assert!(server.is_running());
}

/// Requests that make the plugin log (`log`) and panic (`panic`, logged by the host), after
/// the reader of sockhost's stderr has gone: every log write now fails with EPIPE.
fn serves_on_with_a_broken_stderr(mode: &[&str]) {
    use std::process::{Command, Stdio};
    let testkit = plugin("testkit");
    let mut args = vec![
        "--plugin",
        testkit.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ];
    args.extend(mode);
    let (mut child, addr) = sockhost_tests::start_bare(&args, Stdio::piped());
    drop(child.stderr.take());
    let serving = children_of(child.id());
    for i in 0..50 {
        let mut s = connect(addr);
        let command = if i % 5 == 4 { "panic" } else { "log" };
        let reply = sockhost_tests::ask(&mut s, command);
        if command == "log" {
            assert_eq!(reply, "logged", "request {i} ({mode:?})");
        }
    }
    let mut s = connect(addr);
    assert_eq!(
        sockhost_tests::round_trip(&mut s, b"still here"),
        b"still here"
    );
    let status = child.try_wait().unwrap();
    let after = children_of(child.id());
    let _ = Command::new("pkill")
        .args(["-KILL", "-P", &child.id().to_string()])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, None, "sockhost exited ({mode:?})");
    assert_eq!(after, serving, "a worker was replaced ({mode:?})");
}

#[test]
fn a_broken_stderr_ends_neither_a_worker_nor_thread_mode() {
    serves_on_with_a_broken_stderr(&["--workers", "1"]);
    serves_on_with_a_broken_stderr(&["--concurrency", "thread"]);
}
