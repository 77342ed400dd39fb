//! Logs a peer cannot flood or forge: what rustls says about a client's bytes stays at debug
//! level; a plugin panic is one escaped line, and a flood of them a bounded number of lines;
//! running out of descriptors is reported once, not every 100 ms.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use sockhost_tests::{
    closed_within, connect, fd_limit, lowest_free_fd, metric_value, metrics_addr, plugin,
    round_trip, scrape, set_fd_limit, wait_for_metric, wait_until, Server,
};

/// A self-signed certificate for localhost, written to a temp dir removed on drop.
struct Cert {
    dir: std::path::PathBuf,
}

impl Cert {
    fn new(tag: &str) -> Cert {
        let dir = std::env::temp_dir().join(format!("sockhost-logs-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        Cert { dir }
    }

    fn args(&self) -> Vec<String> {
        let path = |f: &str| self.dir.join(f).to_str().unwrap().to_string();
        vec![
            "--cert-file".into(),
            path("cert.pem"),
            "--key-file".into(),
            path("key.pem"),
        ]
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS record of `kind` around `body`.
fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![kind, 3, 1];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// A handshake message of `kind` around `body`.
fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut h = vec![kind];
    h.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    h.extend_from_slice(body);
    h
}

/// A ClientHello whose server_name extension carries `name` as a host name.
fn client_hello_with_sni(name: &[u8]) -> Vec<u8> {
    let mut sni = vec![0];
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut list = (sni.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&sni);
    let mut extensions = vec![0, 0]; // server_name
    extensions.extend_from_slice(&(list.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&list);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    record(22, &handshake(1, &body))
}

/// What a hostile client sends to a TLS port; rustls `warn!`s about each (with its `logging`
/// feature): an invalid SNI name, a warning alert, a handshake message out of order. Each
/// connection is then closed by the server, which this waits for.
fn hostile_tls_clients(addr: SocketAddr) {
    let mut bad_sni = connect(addr);
    bad_sni
        .write_all(&client_hello_with_sni(b"bad_name!example"))
        .unwrap();
    let mut alert_then_finished = connect(addr);
    let mut bytes = record(21, &[1, 0]); // warning: close_notify, before any handshake
    bytes.extend(record(22, &handshake(20, b"abcd"))); // Finished instead of ClientHello
    alert_then_finished.write_all(&bytes).unwrap();
    for (what, s) in [
        ("bad SNI", &mut bad_sni),
        ("alert then Finished", &mut alert_then_finished),
    ] {
        // The server answers with a fatal alert, then closes.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{what}: not closed by the server ({e})"),
        }
    }
}

const RUSTLS_WARNINGS: [&str; 3] = [
    "Illegal SNI hostname received",
    "TLS alert warning received",
    "Finished handshake message while expecting",
];

#[test]
fn rustls_warnings_about_peer_input_stay_at_debug_level() {
    let cert = Cert::new("rustls");
    let start = |level: &str| {
        let tls = cert.args();
        let mut args = vec!["--log-level", level];
        args.extend(tls.iter().map(String::as_str));
        sockhost_tests::serve_thread("echo", &args)
    };

    // At debug level the lines are there, so the clients above do make rustls speak...
    let debug = start("debug");
    hostile_tls_clients(debug.addr());
    for needle in RUSTLS_WARNINGS {
        let line = debug.stderr.wait_for(needle, Duration::from_secs(5));
        assert!(line.contains("DEBUG"), "demoted to debug: {line}");
    }

    // ... and at the default level not one line is logged for them.
    let quiet = start("info");
    hostile_tls_clients(quiet.addr());
    quiet.signal("TERM");
    // Logged after every connection has been handled: everything before it is in.
    quiet
        .stderr
        .wait_for("worker stopped", Duration::from_secs(10));
    let text = quiet.stderr.text();
    for needle in RUSTLS_WARNINGS.iter().copied().chain([" WARN "]) {
        assert!(
            !text.contains(needle),
            "{needle:?} at --log-level info:\n{text}"
        );
    }
}

#[test]
fn a_plugin_panic_at_log_level_error_is_one_escaped_line() {
    let kit = plugin("testkit");
    let server = Server::start_with_env(
        &[
            "--plugin",
            kit.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "thread",
            "--log-level",
            "error",
        ],
        // The plugin's own std would print a whole backtrace per panic with this.
        &[("RUST_BACKTRACE", "1")],
    );
    let mut forger = connect(server.addr());
    forger
        .write_all(b"panic\n2026-01-01T00:00:00Z  INFO forged line\x1b[2K")
        .unwrap();
    assert!(closed_within(&mut forger, Duration::from_secs(5)));
    // A second panic marks the end: all the first one printed is before its line.
    let mut marker = connect(server.addr());
    marker.write_all(b"panic marker").unwrap();
    assert!(closed_within(&mut marker, Duration::from_secs(5)));
    server
        .stderr
        .wait_for("asked to panic marker", Duration::from_secs(5));

    let text = server.stderr.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per panic, nothing else:\n{text}");
    let first = lines[0];
    assert!(
        first.contains("ERROR")
            && first.contains(
                "plugin panicked: testkit was asked to panic\\n2026-01-01T00:00:00Z  INFO forged line\\u{1b}[2K; closing this connection"
            ),
        "escaped, on one line: {first}"
    );
    assert!(!text.contains('\u{1b}'), "no raw escape sequence: {text:?}");
}

#[test]
fn ten_thousand_panics_in_a_second_print_a_bounded_number_of_lines() {
    const PANICS: u64 = 10_000;
    const BATCH: u64 = 100;
    // logging.rs: PANIC_LINES_PER_SECOND, and one summary line per window.
    const PER_WINDOW: u64 = 10 + 1;

    let server = sockhost_tests::serve(
        "testkit",
        &[
            "--bind",
            "udp://127.0.0.1:0",
            "--concurrency",
            "thread",
            "--log-level",
            "error",
            "--metrics-bind",
            "127.0.0.1:0",
        ],
    );
    let addr = server.listening[0].1;
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pacer = UdpSocket::bind("127.0.0.1:0").unwrap();
    pacer
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Every datagram is a new session whose first callback panics. After each batch, one
    // round trip from another peer: the server has handled the batch before it answers
    // (one socket, handled in order), so the socket buffer never overflows.
    let started = Instant::now();
    for _ in 0..PANICS / BATCH {
        for _ in 0..BATCH {
            flood.send_to(b"panic", addr).unwrap();
        }
        pacer.send_to(b"ping", addr).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = pacer.recv_from(&mut buf).expect("the pacing echo");
        assert_eq!(&buf[..n], b"ping");
    }
    let elapsed = started.elapsed();
    let m = metrics_addr(&server);
    wait_for_metric(
        m,
        "sockhost_plugin_panics_total{service=\"testkit\"}",
        PANICS,
    );
    // Fixed one-second windows: a run of `t` seconds touches at most `t + 2` of them.
    let bound = |t: Duration| (t.as_secs() + 2) * PER_WINDOW;
    let during = server.stderr.text().lines().count() as u64;
    assert!(
        (1..=bound(elapsed)).contains(&during),
        "{during} lines for {PANICS} panics in {elapsed:?} (bound {}):\n{}",
        bound(elapsed),
        server.stderr.text()
    );

    // Once the window has passed, the next panic brings the count of the suppressed ones.
    wait_until(
        "the suppressed-panics summary",
        Duration::from_secs(10),
        || {
            flood.send_to(b"panic", addr).unwrap();
            server.stderr.count("more suppressed") > 0
        },
    );
    // The total is read again each time: panics sent by the loop above may still be being
    // handled (the count settles once they are).
    let total = || {
        metric_value(
            &scrape(m),
            "sockhost_plugin_panics_total{service=\"testkit\"}",
        )
    };
    // Every panic is a line of its own or counted in a summary line (but for any suppressed
    // since the last line, in the window still open: at most one window's worth).
    let accounted = || {
        let text = server.stderr.text();
        let lines = text
            .lines()
            .filter(|l| l.contains("plugin panicked"))
            .count() as u64;
        let suppressed: u64 = text
            .lines()
            .filter_map(|l| l.split("plugin panics: ").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
            .sum();
        lines + suppressed
    };
    wait_until(
        "panic lines + suppressed counts to account for every panic",
        Duration::from_secs(5),
        || {
            let (accounted, total) = (accounted(), total());
            (total.saturating_sub(PER_WINDOW)..=total).contains(&accounted)
        },
    );
    let all = server.stderr.text().lines().count() as u64;
    let elapsed = started.elapsed();
    assert!(
        all <= bound(elapsed),
        "{all} lines for {} panics in {elapsed:?}:\n{}",
        total(),
        server.stderr.text()
    );
}

#[test]
fn out_of_descriptors_is_reported_once_not_every_100_ms() {
    let server = sockhost_tests::serve_thread("echo", &[]);
    let pid = server.pid();
    // Room for two more descriptors (at most: descriptors are numbered from the lowest
    // free one, and must be below the limit).
    let (soft, hard) = fd_limit(pid);
    set_fd_limit(pid, lowest_free_fd(pid) + 2, hard);
    let clients: Vec<TcpStream> = (0..30).map(|_| connect(server.addr())).collect();
    server
        .stderr
        .wait_for("Too many open files", Duration::from_secs(5));
    // Out of descriptors, the worker retries `accept` every 100 ms. Watching it for a while
    // is the point here: before rate limiting this printed one line per retry (~25).
    std::thread::sleep(Duration::from_millis(2500));
    let lines = server.stderr.count("accept:");
    assert!(
        lines <= 2,
        "{lines} accept error lines in 2.5 s:\n{}",
        server.stderr.text()
    );

    // Descriptors back: the connections waiting in the backlog are served.
    set_fd_limit(pid, soft, hard);
    for mut c in clients {
        assert_eq!(round_trip(&mut c, b"served"), b"served");
    }
    let mut fresh = connect(server.addr());
    let mut reply = [0u8; 5];
    fresh.write_all(b"fresh").unwrap();
    fresh.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"fresh");
}
