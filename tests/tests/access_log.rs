//! `--access-log`: one line per finished TCP connection and UDP session, in text (logfmt)
//! and JSON, in both modes, and reopened by `USR1` (log rotation).

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sockhost_tests::{closed_within, connect, plugin, round_trip, serve, serve_thread, wait_until};

/// A temporary directory for one test's log files.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("sockhost-access-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait (bounded) for the line of the connection from `peer` and return it.
fn line_for(path: &Path, peer: SocketAddr) -> String {
    let needle = peer.to_string();
    let mut found = None;
    wait_until(
        &format!("an access log line for {peer} in {}", path.display()),
        Duration::from_secs(10),
        || {
            found = lines(path).into_iter().find(|l| {
                l.contains(&format!("peer={needle} "))
                    || l.contains(&format!("\"peer\":\"{needle}\""))
            });
            found.is_some()
        },
    );
    found.unwrap()
}

/// One echo exchange of `data`, closed by the client; returns the client's address.
fn echo_once(addr: SocketAddr, data: &[u8]) -> SocketAddr {
    let mut s = connect(addr);
    assert_eq!(round_trip(&mut s, data), data);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    s.local_addr().unwrap()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[test]
fn text_lines_for_tcp_and_udp_in_thread_mode() {
    let dir = Dir::new("text");
    let log = dir.file("access.log");
    let server = serve_thread(
        "echo",
        &[
            "--bind",
            "udp://127.0.0.1:0",
            "--keep-alive",
            "1",
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    let tcp = server.addr();
    let peer = echo_once(tcp, b"hello");
    let line = line_for(&log, peer);
    assert!(line.starts_with("time=20"), "{line}");
    assert_eq!(field(&line, "transport"), "tcp");
    assert_eq!(field(&line, "local"), tcp.to_string());
    assert_eq!(field(&line, "bytes_in"), "5", "{line}");
    assert_eq!(field(&line, "bytes_out"), "5", "{line}");
    assert_eq!(field(&line, "reason"), "closed", "{line}");
    let ms: f64 = field(&line, "duration_ms").parse().unwrap();
    assert!((0.0..10_000.0).contains(&ms), "{line}");
    assert!(!line.contains("tls="), "{line}");

    // A UDP session ends after --keep-alive without a datagram.
    let udp_addr = server.listening.iter().find(|(t, _)| t == "udp").unwrap().1;
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"dgram", udp_addr).unwrap();
    client.send_to(b"two", udp_addr).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        client.recv_from(&mut buf).unwrap();
    }
    let line = line_for(&log, client.local_addr().unwrap());
    assert_eq!(field(&line, "transport"), "udp");
    assert_eq!(field(&line, "bytes_in"), "8", "{line}");
    assert_eq!(field(&line, "bytes_out"), "8", "{line}");
    assert_eq!(field(&line, "reason"), "idle_timeout", "{line}");
    assert_eq!(lines(&log).len(), 2, "one line each: {:?}", lines(&log));
}

/// A self-signed certificate for localhost, written to `dir`.
fn certificate(dir: &Dir) -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.file("cert.pem"), dir.file("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let der = cert.der().clone();
    (c.to_str().unwrap().into(), k.to_str().unwrap().into(), der)
}

#[test]
fn json_lines_with_tls_details_in_process_mode() {
    let dir = Dir::new("json");
    let log = dir.file("access.json");
    let (cert, key, der) = certificate(&dir);
    let server = serve(
        "echo",
        &[
            "--workers",
            "2",
            "--bind",
            "127.0.0.1:0",
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--alpn",
            "h2,http/1.1",
            "--access-log",
            log.to_str().unwrap(),
            "--access-log-format",
            "json",
        ],
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let sock = connect(server.addr());
    let peer = sock.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"over tls").unwrap();
    let mut back = [0u8; 8];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over tls");
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = tls.sock.read_to_end(&mut rest);

    let line = line_for(&log, peer);
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    for part in [
        "\"transport\":\"tcp\"".to_string(),
        format!("\"local\":\"{}\"", server.addr()),
        "\"bytes_in\":8".into(),
        "\"bytes_out\":8".into(),
        "\"reason\":\"closed\"".into(),
        "\"tls\":\"TLSv1.3\"".into(),
        "\"alpn\":\"http/1.1\"".into(),
        "\"sni\":\"localhost\"".into(),
        "\"duration_ms\":".into(),
        "\"time\":\"20".into(),
    ] {
        assert!(line.contains(&part), "{part} missing in {line}");
    }

    // A peer that is not speaking TLS: its line says so.
    let mut junk = connect(server.addr());
    let junk_peer = junk.local_addr().unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // A TLS alert, then the end (the read times out after 10 s otherwise).
    let mut alert = Vec::new();
    let _ = junk.read_to_end(&mut alert);
    let line = line_for(&log, junk_peer);
    assert!(line.contains("\"reason\":\"tls_failed\""), "{line}");
    assert!(!line.contains("\"tls\":"), "{line}");
}

/// Rotation: rename the file, send USR1 to the process, and new lines go to a new file at
/// the old path. `workers` processes say they reopened it (the workers of process mode
/// follow their arbiter within a heartbeat).
fn reopens_on_usr1(mode: &[&str], workers: usize, tag: &str) {
    let dir = Dir::new(tag);
    let log = dir.file("access.log");
    let rotated = dir.file("access.log.1");
    let mut args = vec![
        "--bind",
        "127.0.0.1:0",
        "--access-log",
        log.to_str().unwrap(),
        "--log-filter",
        "info,sockhost::access_log=debug",
    ];
    args.extend(mode);
    let server = serve("echo", &args);
    let first = echo_once(server.addr(), b"before");
    line_for(&log, first);

    std::fs::rename(&log, &rotated).unwrap();
    server.signal("USR1");
    wait_until(
        &format!("{workers} processes reopening the access log"),
        Duration::from_secs(10),
        || server.stderr.count("reopened the access log") >= workers,
    );
    let after = echo_once(server.addr(), b"after");
    let line = line_for(&log, after);
    assert_eq!(field(&line, "bytes_in"), "5", "{line}");
    assert_eq!(lines(&rotated).len(), 1, "the old file got more lines");
    assert!(lines(&rotated)[0].contains(&format!("peer={first} ")));
    assert_eq!(lines(&log).len(), 1);
    assert!(
        !server.stderr.text().contains("ERROR"),
        "{}",
        server.stderr.text()
    );
}

#[test]
fn usr1_reopens_the_access_log_in_thread_mode() {
    reopens_on_usr1(&["--concurrency", "thread"], 1, "usr1-thread");
}

#[test]
fn usr1_reopens_the_access_log_in_process_mode() {
    reopens_on_usr1(&["--workers", "2"], 2, "usr1-process");
}

#[test]
fn dash_writes_to_stdout() {
    let server = serve_thread("echo", &["--access-log", "-"]);
    let peer = echo_once(server.addr(), b"x");
    let line = server
        .stdout
        .wait_for(&format!("peer={peer} "), Duration::from_secs(10));
    assert!(
        line.starts_with("time=") && line.contains(" reason=closed"),
        "{line}"
    );
}

#[test]
fn an_unwritable_access_log_is_one_error_line() {
    let echo = plugin("echo");
    let f = sockhost_tests::run_to_exit(
        &[
            "--plugin",
            echo.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--access-log",
            "/nonexistent-dir/access.log",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(f.status.code(), Some(1));
    assert_eq!(
        f.stderr.trim(),
        "error: --access-log /nonexistent-dir/access.log: No such file or directory (os error 2)"
    );
}
