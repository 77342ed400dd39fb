//! TLS termination: certificates made at test time (rcgen, and openssl for the PKCS#1 and
//! SEC1 key encodings), real rustls and openssl clients over loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sockhost_tests::{closed_within, connect, payload, plugin, run_to_exit, Server};

/// A throw-away PKI in a temp dir: a CA, a server certificate for localhost, a client
/// certificate from the same CA and one from an unrelated CA.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("sockhost-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, ca_key) = make_ca("sockhost test CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
        let issuer = Issuer::new(ca_params("sockhost test CA"), ca_key);
        write_leaf(&dir, "server", "localhost", &issuer);
        write_leaf(&dir, "client", "good client", &issuer);
        let (_, other_key) = make_ca("some other CA");
        let other = Issuer::new(ca_params("some other CA"), other_key);
        write_leaf(&dir, "stranger", "stranger", &other);
        Pki { dir, ca }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

fn make_ca(cn: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    (ca_params(cn).self_signed(&key).unwrap(), key)
}

/// `<name>.pem` and `<name>.key` (PKCS#8, ECDSA P-256), signed by `issuer`.
fn write_leaf(dir: &Path, name: &str, cn: &str, issuer: &Issuer<'_, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls client: trusts the PKI's CA, offers `versions` and `alpn`, optionally presents
/// a client certificate.
fn client_config(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
    client_cert: Option<&str>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain = vec![CertificateDer::from_pem_file_compat(
                &pki.path(&format!("{name}.pem")),
            )];
            let key = PrivateKeyDer::from_pem_file_compat(&pki.path(&format!("{name}.key")));
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

trait FromPemCompat: Sized {
    fn from_pem_file_compat(path: &str) -> Self;
}

impl FromPemCompat for CertificateDer<'static> {
    fn from_pem_file_compat(path: &str) -> Self {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(path).unwrap()
    }
}

impl FromPemCompat for PrivateKeyDer<'static> {
    fn from_pem_file_compat(path: &str) -> Self {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_file(path).unwrap()
    }
}

type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connect and complete the handshake (an `Err` if the server refuses it).
fn tls_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsClient> {
    let sock = connect(addr);
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    // (A TLS 1.3 server checks a client certificate after the client's last flight, so a
    // refusal may only show on first use: callers that care make a round trip.)
    Ok(tls)
}

fn tls_ask(tls: &mut TlsClient, command: &str) -> std::io::Result<String> {
    tls.write_all(command.as_bytes())?;
    tls.flush()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while tls.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn tls_server(pki: &Pki, plugin_name: &str, extra: &[&str]) -> Server {
    let p = plugin(plugin_name);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let mut args = vec![
        "--plugin",
        p.to_str().unwrap(),
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

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[test]
fn echo_over_tls13_and_tls12_is_byte_identical() {
    let pki = Pki::new("echo");
    let server = tls_server(&pki, "echo", &["--concurrency", "thread"]);
    for (version, name) in [
        (&rustls::version::TLS13, "1.3"),
        (&rustls::version::TLS12, "1.2"),
    ] {
        let mut tls =
            tls_connect(server.addr(), client_config(&pki, &[version], &[], None)).unwrap();
        assert_eq!(
            tls.conn.protocol_version(),
            Some(version.version),
            "negotiated TLS {name}"
        );
        let data = payload(100_000, 42);
        tls.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        tls.read_exact(&mut back).unwrap();
        assert!(back == data, "100 KB over TLS {name} came back different");
    }
}

#[test]
fn alpn_and_sni_reach_the_plugin() {
    let pki = Pki::new("alpn");
    let server = tls_server(
        &pki,
        "testkit",
        &["--concurrency", "thread", "--alpn", "h2,kit/1"],
    );
    let mut tls = tls_connect(server.addr(), client_config(&pki, BOTH, &["kit/1"], None)).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"kit/1"[..]));
    let who = tls_ask(&mut tls, "whoami").unwrap();
    assert!(who.contains("sni=localhost alpn=kit/1 subject=-"), "{who}");
}

#[test]
fn a_plaintext_client_gets_no_plaintext_echo() {
    let pki = Pki::new("plain");
    let server = tls_server(&pki, "echo", &["--concurrency", "thread"]);
    let mut s = connect(server.addr());
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut reply);
    assert!(
        !reply.windows(3).any(|w| w == b"GET"),
        "plaintext was echoed: {reply:?}"
    );
}

#[test]
fn a_tls11_only_client_is_refused() {
    let pki = Pki::new("tls11");
    let server = tls_server(&pki, "echo", &["--concurrency", "thread"]);
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &server.addr().to_string(),
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "TLS 1.1 handshake succeeded:\n{text}"
    );
    assert!(
        text.contains("protocol version") || text.contains("alert"),
        "the server refused with an alert:\n{text}"
    );
}

#[test]
fn mutual_tls_accepts_a_good_client_and_refuses_missing_or_wrong_ones() {
    let pki = Pki::new("mtls");
    let ca = pki.path("ca.pem");
    let server = tls_server(
        &pki,
        "testkit",
        &["--concurrency", "thread", "--ca-file", &ca],
    );
    let mut good = tls_connect(
        server.addr(),
        client_config(&pki, BOTH, &[], Some("client")),
    )
    .unwrap();
    let who = tls_ask(&mut good, "whoami").unwrap();
    assert!(who.contains("subject=CN=good client"), "{who}");

    for (label, cert) in [
        ("no client certificate", None),
        ("a certificate from another CA", Some("stranger")),
    ] {
        let refused = tls_connect(server.addr(), client_config(&pki, BOTH, &[], cert))
            .and_then(|mut tls| tls_ask(&mut tls, "whoami"));
        assert!(
            refused.as_ref().map_or(true, |reply| reply.is_empty()),
            "{label} was accepted: {refused:?}"
        );
    }
}

#[test]
fn a_stalled_handshake_is_closed_by_the_deadline() {
    let pki = Pki::new("stall");
    let server = tls_server(
        &pki,
        "echo",
        &[
            "--concurrency",
            "thread",
            "--handshake-timeout",
            "1",
            "--keep-alive",
            "0",
        ],
    );
    let mut silent = connect(server.addr());
    let mut partial = connect(server.addr());
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x80, 0x01])
        .unwrap(); // a ClientHello that never ends
    for (name, s) in [("silent", &mut silent), ("partial", &mut partial)] {
        assert!(
            closed_within(s, Duration::from_secs(4)),
            "{name} handshake still open after the 1 s deadline"
        );
    }
    // The server is unharmed.
    let mut tls = tls_connect(server.addr(), client_config(&pki, BOTH, &[], None)).unwrap();
    tls.write_all(b"ok").unwrap();
    let mut back = [0u8; 2];
    tls.read_exact(&mut back).unwrap();
}

fn assert_serves(pki: &Pki, cert: &str, key: &str) {
    let server = sockhost_tests::serve_thread("echo", &["--cert-file", cert, "--key-file", key]);
    let mut tls =
        tls_connect(server.addr(), client_config(pki, BOTH, &[], None)).expect("handshake");
    tls.write_all(b"key formats").unwrap();
    let mut back = [0u8; 11];
    tls.read_exact(&mut back).unwrap();
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pkcs8_pkcs1_and_sec1_keys_all_work() {
    let pki = Pki::new("keys");
    assert_serves(&pki, &pki.path("server.pem"), &pki.path("server.key")); // PKCS#8
    let (ca, ca_key) = (pki.path("ca.pem"), pki.path("ca.key"));
    for (name, genkey) in [
        ("rsa", vec!["genrsa", "-traditional", "-out", "KEY", "2048"]),
        (
            "sec1",
            vec![
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "KEY",
            ],
        ),
    ] {
        let key = pki.path(&format!("{name}.key"));
        let csr = pki.path(&format!("{name}.csr"));
        let cert = pki.path(&format!("{name}.pem"));
        let genkey: Vec<&str> = genkey
            .iter()
            .map(|a| if *a == "KEY" { key.as_str() } else { a })
            .collect();
        openssl(&genkey);
        let header = std::fs::read_to_string(&key).unwrap();
        let expected = if name == "rsa" {
            "BEGIN RSA PRIVATE KEY"
        } else {
            "BEGIN EC PRIVATE KEY"
        };
        assert!(
            header.contains(expected),
            "{name} key is not in the expected encoding"
        );
        openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=localhost",
            "-out",
            &csr,
        ]);
        let ext = pki.path("san.ext");
        std::fs::write(&ext, "subjectAltName=DNS:localhost\n").unwrap();
        openssl(&[
            "x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-days", "1", "-extfile",
            &ext, "-out", &cert,
        ]);
        assert_serves(&pki, &cert, &key);
    }
}

fn start_fails_with(args: &[&str], needle: &str) {
    let echo = plugin("echo");
    let mut all = vec!["--plugin", echo.to_str().unwrap(), "--bind", "127.0.0.1:0"];
    all.extend(args);
    for mode in ["thread", "process"] {
        let mut with_mode = all.clone();
        with_mode.extend(["--concurrency", mode]);
        let f = run_to_exit(&with_mode, Duration::from_secs(10));
        assert_eq!(f.status.code(), Some(1), "{mode}: {}", f.stderr);
        let lines: Vec<&str> = f
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(lines.len(), 1, "{mode}: {}", f.stderr);
        assert!(
            lines[0].contains(needle),
            "{mode}: expected {needle:?} in {}",
            lines[0]
        );
        assert!(f.elapsed < Duration::from_secs(2));
    }
}

#[test]
fn certificate_errors_are_one_line_each() {
    let pki = Pki::new("errors");
    let (cert, key, client_key) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("client.key"),
    );
    start_fails_with(
        &["--cert-file", "/nonexistent/cert.pem", "--key-file", &key],
        "--cert-file /nonexistent/cert.pem: cannot read",
    );
    start_fails_with(
        &["--cert-file", &cert, "--key-file", "/nonexistent/key.pem"],
        "--key-file /nonexistent/key.pem: cannot read",
    );
    start_fails_with(
        &["--cert-file", &key, "--key-file", &key],
        "no certificate found",
    );
    start_fails_with(
        &["--cert-file", &cert, "--key-file", &cert],
        "no private key found",
    );
    start_fails_with(
        &["--cert-file", &cert, "--key-file", &client_key],
        "does not match the certificate",
    );
}

#[test]
fn an_expired_certificate_is_served_with_a_warning() {
    let pki = Pki::new("expired");
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.path("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::new(ca_params("sockhost test CA"), ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    std::fs::write(
        pki.dir.join("old.pem"),
        params.signed_by(&key, &issuer).unwrap().pem(),
    )
    .unwrap();
    std::fs::write(pki.dir.join("old.key"), key.serialize_pem()).unwrap();
    let echo = plugin("echo");
    let (cert, key) = (pki.path("old.pem"), pki.path("old.key"));
    let server = Server::start(&[
        "--plugin",
        echo.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
        "--cert-file",
        &cert,
        "--key-file",
        &key,
    ]);
    let line = server.stderr.wait_for("expired", Duration::from_secs(3));
    assert!(line.contains("WARN") && line.contains("old.pem"), "{line}");
}

#[test]
fn process_mode_serves_tls_and_rereads_certificates_on_reload() {
    let pki = Pki::new("reload");
    let live_cert = pki.path("live.pem");
    let live_key = pki.path("live.key");
    std::fs::copy(pki.path("server.pem"), &live_cert).unwrap();
    std::fs::copy(pki.path("server.key"), &live_key).unwrap();
    let echo = plugin("echo");
    let server = Server::start(&[
        "--plugin",
        echo.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--cert-file",
        &live_cert,
        "--key-file",
        &live_key,
    ]);
    let leaf = |tls: &TlsClient| tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    let first = tls_connect(server.addr(), client_config(&pki, BOTH, &[], None)).unwrap();
    let original = leaf(&first);

    // A broken certificate on reload: aborted, the old one keeps serving.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    server.signal("HUP");
    let line = server
        .stderr
        .wait_for("reload aborted", Duration::from_secs(5));
    assert!(line.contains("no certificate found"), "{line}");
    let still = tls_connect(server.addr(), client_config(&pki, BOTH, &[], None)).unwrap();
    assert_eq!(leaf(&still), original);

    // A rotated certificate: served after the reload, no restart.
    let issuer = Issuer::new(
        ca_params("sockhost test CA"),
        KeyPair::from_pem(&std::fs::read_to_string(pki.path("ca.key")).unwrap()).unwrap(),
    );
    write_leaf(&pki.dir, "rotated", "rotated", &issuer);
    std::fs::copy(pki.path("rotated.pem"), &live_cert).unwrap();
    std::fs::copy(pki.path("rotated.key"), &live_key).unwrap();
    server.signal("HUP");
    server
        .stderr
        .wait_for("reload finished", Duration::from_secs(10));
    for _ in 0..6 {
        let after = tls_connect(server.addr(), client_config(&pki, BOTH, &[], None)).unwrap();
        assert_ne!(leaf(&after), original, "the rotated certificate is served");
    }
    let _ = (first, still);
}

#[test]
fn host_services_work_over_tls() {
    let pki = Pki::new("services");
    for mode in [&["--concurrency", "thread"][..], &["--workers", "1"][..]] {
        let server = tls_server(&pki, "servicekit", mode);
        let config = client_config(&pki, BOTH, &[], None);
        let mut a = tls_connect(server.addr(), config.clone()).unwrap();
        let mut b = tls_connect(server.addr(), config).unwrap();
        // A timer and a wake from a plugin thread, each answered over TLS.
        a.write_all(b"timer 20 5\n").unwrap();
        assert_eq!(tls_ask(&mut a, "").unwrap(), "timer 5", "{mode:?}");
        a.write_all(b"wake 10\n").unwrap();
        assert_eq!(tls_ask(&mut a, "").unwrap(), "woken 7", "{mode:?}");
        // A post from one TLS connection to another.
        let b_id = tls_ask(&mut b, "id\n").unwrap();
        let status = tls_ask(&mut a, &format!("post {b_id} over tls\n")).unwrap();
        assert_eq!(status, "post Queued", "{mode:?}");
        assert_eq!(tls_ask(&mut b, "").unwrap(), "over tls", "{mode:?}");
    }
}

/// The server picks TLS 1.3's AES-128-GCM-SHA256 even from a client that lists
/// AES-256-GCM-SHA384 first (rustls's order, and OpenSSL's), and it sends session tickets
/// a client resumes from: in thread mode every connection after the first is a resumed
/// handshake; in process mode (connections land on either worker, which share the ticket
/// keys) at most one more is full: rustls's aws-lc-rs ticketer refuses a ticket longer
/// than any it has itself issued, so a fresh worker's first ticket from its sibling fails.
#[test]
fn tls13_prefers_aes128_gcm_and_later_connections_resume() {
    use rustls::{CipherSuite, HandshakeKind};
    let pki = Pki::new("resume");
    for (mode, workers) in [
        (&["--concurrency", "thread"][..], 1),
        (&["--workers", "2"][..], 2),
    ] {
        let server = tls_server(&pki, "echo", mode);
        // One client configuration, hence one session cache, per server.
        let config = client_config(&pki, &[&rustls::version::TLS13], &[], None);
        assert_eq!(
            config.crypto_provider().cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            "the client lists AES-256 first"
        );
        let mut kinds = Vec::new();
        for _ in 0..8 {
            let mut tls = tls_connect(server.addr(), config.clone()).unwrap();
            assert_eq!(
                tls.conn.negotiated_cipher_suite().map(|s| s.suite()),
                Some(CipherSuite::TLS13_AES_128_GCM_SHA256),
                "{mode:?}"
            );
            // A round trip: the server's tickets arrive before the echo.
            assert_eq!(tls_ask(&mut tls, "ping\n").unwrap(), "ping", "{mode:?}");
            kinds.push(tls.conn.handshake_kind());
        }
        assert_eq!(kinds[0], Some(HandshakeKind::Full), "{mode:?}");
        // Whichever of the workers each lands on (they share the ticket keys).
        assert!(
            kinds[1..]
                .iter()
                .all(|k| *k == Some(HandshakeKind::Resumed)),
            "{mode:?}, {workers} worker(s): one full handshake, then every one resumed: {kinds:?}"
        );
    }
}

/// Session tickets outlive a reload (process mode: the arbiter's ticket-key chain is kept;
/// the new generation's workers derive the same keys) and work on workers that have not
/// issued one yet: every connection after the first resumes, before and after the HUP.
#[test]
fn tickets_resume_across_workers_and_a_reload() {
    use rustls::HandshakeKind;
    let pki = Pki::new("resume-reload");
    let server = tls_server(&pki, "echo", &["--workers", "2"]);
    let config = client_config(&pki, &[&rustls::version::TLS13], &[], None);
    let mut kinds = Vec::new();
    let connect = |kinds: &mut Vec<_>| {
        let mut tls = tls_connect(server.addr(), config.clone()).unwrap();
        assert_eq!(tls_ask(&mut tls, "ping\n").unwrap(), "ping");
        kinds.push(tls.conn.handshake_kind());
    };
    for _ in 0..6 {
        connect(&mut kinds);
    }
    server.signal("HUP");
    server
        .stderr
        .wait_for("reload finished", Duration::from_secs(20));
    // Only new workers accept now; none of them has issued a ticket yet.
    for _ in 0..6 {
        connect(&mut kinds);
    }
    assert_eq!(kinds[0], Some(HandshakeKind::Full));
    assert!(
        kinds[1..]
            .iter()
            .all(|k| *k == Some(HandshakeKind::Resumed)),
        "every connection after the first resumes, the last 6 after a reload: {kinds:?}"
    );
}

/// A reload with a new certificate ends the sessions made with the old one: their tickets
/// are refused (a full handshake, which checks the new certificate), and the next
/// connection resumes from a ticket of the new configuration.
#[test]
fn a_reload_with_a_new_certificate_refuses_the_old_tickets() {
    use rustls::HandshakeKind;
    let pki = Pki::new("resume-newcert");
    let server = tls_server(&pki, "echo", &["--workers", "2"]);
    let config = client_config(&pki, &[&rustls::version::TLS13], &[], None);
    let kind = || {
        let mut tls = tls_connect(server.addr(), config.clone()).unwrap();
        assert_eq!(tls_ask(&mut tls, "ping\n").unwrap(), "ping");
        tls.conn.handshake_kind()
    };
    assert_eq!(kind(), Some(HandshakeKind::Full));
    assert_eq!(kind(), Some(HandshakeKind::Resumed));
    // A new server certificate from the same CA (the client still trusts it).
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.path("ca.key")).unwrap()).unwrap();
    write_leaf(
        &pki.dir,
        "server",
        "localhost",
        &Issuer::new(ca_params("sockhost test CA"), ca_key),
    );
    server.signal("HUP");
    server
        .stderr
        .wait_for("reload finished", Duration::from_secs(20));
    assert_eq!(
        kind(),
        Some(HandshakeKind::Full),
        "a ticket of the old certificate must not resume"
    );
    assert_eq!(kind(), Some(HandshakeKind::Resumed));
}

/// TLS 1.3 key updates (RFC 8446 §4.6.3) from the client, asking the server to update too:
/// the server reads under the client's new keys and answers with its own update before its
/// next record, or the echo after each update would not decrypt.
#[test]
fn the_server_follows_and_answers_a_clients_key_updates() {
    let pki = Pki::new("keyupdate");
    let server = tls_server(&pki, "echo", &["--concurrency", "thread"]);
    let config = client_config(&pki, &[&rustls::version::TLS13], &[], None);
    let mut tls = tls_connect(server.addr(), config).unwrap();
    for round in 0..3u64 {
        tls.conn
            .refresh_traffic_keys()
            .expect("a TLS 1.3 key update");
        let data = payload(40_000, round);
        tls.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        tls.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("echo after key update {round}: {e}"));
        assert!(
            back == data,
            "echo after key update {round} came back different"
        );
    }
}

/// A server that closes the connection (here: hello after an HTTP/1.0 response) says so
/// with a close_notify alert, over TLS 1.3 and 1.2: the client sees a clean end of stream,
/// not a truncation (rustls reports a TCP close without close_notify as `UnexpectedEof`).
#[test]
fn a_closing_server_sends_close_notify() {
    let pki = Pki::new("closenotify");
    let server = tls_server(&pki, "hello", &["--concurrency", "thread"]);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&pki, &[version], &[], None);
        let mut tls = tls_connect(server.addr(), config).unwrap();
        tls.sock
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tls.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let end = tls.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        assert!(
            end.is_ok(),
            "{:?}: the server closed without close_notify: {end:?} after {text:?}",
            version.version
        );
        assert!(
            text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
            "{text}"
        );
    }
}

/// Data and the client's close_notify in one flight: the data still reaches the plugin
/// (and is echoed) before the end of the stream does.
#[test]
fn data_sent_just_before_close_notify_is_delivered() {
    let pki = Pki::new("lastdata");
    let server = tls_server(&pki, "echo", &["--concurrency", "thread"]);
    let config = client_config(&pki, BOTH, &[], None);
    let mut tls = tls_connect(server.addr(), config).unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let data = payload(20_000, 7);
    tls.conn.writer().write_all(&data).unwrap();
    tls.conn.send_close_notify();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut tls.sock).unwrap();
    }
    let mut back = vec![0u8; data.len()];
    tls.read_exact(&mut back).unwrap();
    assert!(back == data, "the last data came back different");
}
