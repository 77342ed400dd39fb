//! The proxy plugin (`libproxy.so`) in front of real servers: nginx (HTTP, and
//! `proxy_protocol on` reading our PROXY headers), redis-server (RESP: the client speaks
//! first), and small servers played by the test (a greeting server, a 100 MB streamer, a
//! slow reader, half-closing peers) — driven by curl, wrk, redis-cli and raw sockets.
//!
//! nginx and redis-server run as children of the test ([`sockhost_tests::daemon`]) with
//! their configuration in a temporary directory, on loopback ports; `.ci/run` installs them.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sockhost_tests::daemon::{dead_port, Daemon, TempDir};
use sockhost_tests::{closed_within, connect, rss_kib, serve, serve_thread, Server, Unaccepting};

// ------------------------------------------------------------------------------------------
// Helpers

/// The proxy in thread mode in front of `upstreams`, with more `--plugin-opt`s and flags.
fn proxy(upstreams: &[SocketAddr], opts: &[&str], flags: &[&str]) -> Server {
    let mut args: Vec<String> = Vec::new();
    for u in upstreams {
        args.extend(["--plugin-opt".into(), format!("upstream={u}")]);
    }
    for o in opts {
        args.extend(["--plugin-opt".into(), o.to_string()]);
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serve_thread("proxy", &args)
}

/// A server played by the test: every accepted connection runs `handle` on its own thread.
/// The accept loop lives as long as the test process.
fn upstream<F>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = handle.clone();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            std::thread::spawn(move || handle(stream));
        }
    });
    addr
}

/// A server that greets first (`<name> ready\n`), then echoes until end of stream.
fn greeter(name: &'static str) -> SocketAddr {
    upstream(move |mut s| {
        let _ = s.write_all(format!("{name} ready\n").as_bytes());
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// Read one `\n`-terminated line.
fn line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).expect("reading a line") == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Run a command (bounded by the tool's own timeout flags) and return its stdout; fails the
/// test if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (.ci/run installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl(args: &[&str]) -> String {
    let mut all = vec!["--silent", "--show-error", "--max-time", "10"];
    all.extend(args);
    run("curl", &all)
}

/// The byte at offset `i` of the test streams (a pattern that detects loss and reordering).
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// Write `total` pattern bytes to `s`, counting them in `written`.
fn write_pattern(s: &mut TcpStream, total: u64, written: &AtomicU64) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    while at < total {
        let n = chunk.len().min((total - at) as usize);
        for (k, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(at + k as u64);
        }
        s.write_all(&chunk[..n])?;
        at += n as u64;
        written.store(at, Ordering::Relaxed);
    }
    Ok(())
}

/// Read from `s` until `*at == total`, checking the pattern; reads at most `limit` bytes
/// per call.
fn read_pattern(s: &mut TcpStream, at: &mut u64, total: u64, limit: usize) {
    let mut buf = vec![0u8; limit];
    while *at < total {
        let want = limit.min((total - *at) as usize);
        let n = s.read(&mut buf[..want]).expect("reading the stream");
        assert!(n > 0, "the stream ended after {at} of {total} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(
                *b,
                pattern(*at + k as u64),
                "byte {} is wrong",
                *at + k as u64
            );
        }
        *at += n as u64;
    }
}

// ------------------------------------------------------------------------------------------
// Real servers behind the proxy

#[test]
fn curl_and_wrk_through_the_proxy_to_nginx() {
    let nginx = Daemon::nginx("", r#"return 200 "hello from nginx\n";"#);
    // Process mode, two workers: each has its own pool and health state.
    let mut args = vec![
        "--bind".to_string(),
        "127.0.0.1:0".into(),
        "--workers".into(),
        "2".into(),
        "--plugin-opt".into(),
        format!("upstream={}", nginx.addr),
    ];
    args.extend(["--plugin-opt".into(), "balance=least-conn".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = serve("proxy", &args);
    let url = format!("http://{}/", server.addr());
    assert_eq!(curl(&[&url]), "hello from nginx\n");
    // Keep-alive: several requests on one connection.
    assert_eq!(curl(&[&url, &url, &url]), "hello from nginx\n".repeat(3));

    let out = run("wrk", &["-t1", "-c20", "-d2s", "--timeout", "5s", &url]);
    let requests: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{out}"));
    assert!(
        !out.contains("Socket errors") && !out.contains("Non-2xx"),
        "wrk saw errors:\n{out}"
    );
    assert!(requests > 100.0, "only {requests} requests/s:\n{out}");
}

#[test]
fn redis_cli_through_the_proxy_to_redis_server() {
    let redis = Daemon::redis();
    let server = proxy(&[redis.addr], &[], &[]);
    let port = server.addr().port().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend(args);
        run("redis-cli", &all).trim_end().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "greeting", "hello through the proxy"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello through the proxy");
    // A value larger than one read (64 KiB), both ways.
    let big = "x".repeat(100_000);
    assert_eq!(cli(&["SET", "big", &big]), "OK");
    assert_eq!(cli(&["STRLEN", "big"]), "100000");
    assert_eq!(cli(&["GET", "big"]), big);
}

#[test]
fn tls_in_front_plain_to_the_upstream() {
    let nginx = Daemon::nginx("", r#"return 200 "plain upstream\n";"#);
    let dir = TempDir::new("tls");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path("key.pem"), key.serialize_pem()).unwrap();
    let (cert, key) = (
        dir.path("cert.pem").display().to_string(),
        dir.path("key.pem").display().to_string(),
    );
    let server = proxy(
        &[nginx.addr],
        &[],
        &["--cert-file", &cert, "--key-file", &key],
    );
    let url = format!("https://localhost:{}/", server.addr().port());
    let resolve = format!("localhost:{}:127.0.0.1", server.addr().port());
    assert_eq!(
        curl(&["--cacert", &cert, "--resolve", &resolve, &url]),
        "plain upstream\n"
    );
}

#[test]
fn send_proxy_v1_and_v2_tell_nginx_the_real_client() {
    let nginx = Daemon::nginx_showing_proxy_protocol();
    for version in ["v1", "v2"] {
        let server = proxy(&[nginx.addr], &[&format!("send-proxy={version}")], &[]);
        let url = format!("http://{}/", server.addr());
        let out = curl(&["--write-out", "%{local_ip}:%{local_port}", &url]);
        let (seen, client) = out
            .split_once('\n')
            .expect("a body line, then curl's own line");
        assert_eq!(
            seen, client,
            "send-proxy={version}: nginx saw {seen}, curl was {client}"
        );
    }
}

#[test]
fn the_client_address_from_the_hosts_proxy_protocol_passes_through() {
    let nginx = Daemon::nginx_showing_proxy_protocol();
    let server = proxy(&[nginx.addr], &["send-proxy=v2"], &["--proxy-protocol"]);
    let mut s = connect(server.addr());
    s.write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(
        response.ends_with("\r\n\r\n203.0.113.7:40000\n"),
        "{response}"
    );
}

// ------------------------------------------------------------------------------------------
// Connection handling

#[test]
fn a_server_first_protocol_greets_before_the_client_speaks() {
    let up = greeter("greeter");
    let server = proxy(&[up], &["stats-interval=100ms"], &[]);
    let mut c = connect(server.addr());
    // Nothing sent yet: the greeting must come by itself.
    assert_eq!(line(&mut c), "greeter ready");
    c.write_all(b"ping\n").unwrap();
    assert_eq!(line(&mut c), "ping");
    drop(c);
    // The counters are logged (the host offers plugins no metrics API).
    server.stderr.wait_for(
        &format!("upstream stats: upstream={up} state=up active=0 connects=1 failures=0 bytes_up=5 bytes_down=19"),
        Duration::from_secs(10),
    );
}

#[test]
fn a_refused_upstream_is_passed_over_marked_down_and_logged_back_up() {
    let live = greeter("live");
    let dead = dead_port();
    let server = proxy(
        &[dead, live],
        &["fail-threshold=2", "cooldown=300ms", "stats-interval=0"],
        &[],
    );
    // Round-robin sends every other client to the dead one first: each is still served,
    // by the next upstream.
    for _ in 0..6 {
        let mut c = connect(server.addr());
        assert_eq!(line(&mut c), "live ready");
    }
    server.stderr.wait_for(
        &format!("upstream {dead} down: 2 connects in a row failed"),
        Duration::from_secs(5),
    );
    // It comes back: after the cool-down one client tries it, and it answers.
    let revived = TcpListener::bind(dead).expect("rebinding the dead port");
    std::thread::spawn(move || {
        for mut s in revived.incoming().flatten() {
            let _ = s.write_all(b"revived ready\n");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = connect(server.addr());
        if line(&mut c) == "revived ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revived upstream was never used again"
        );
    }
    server
        .stderr
        .wait_for(&format!("upstream {dead} back up"), Duration::from_secs(5));
    assert_eq!(
        server.stderr.count(&format!("upstream {dead} down")),
        1,
        "one line per outage"
    );
}

#[test]
fn a_connect_timeout_moves_on_to_the_next_upstream() {
    // A listener that never accepts: connects to it neither succeed nor fail by themselves.
    let stuck = Unaccepting::new();
    let live = greeter("live");
    let server = proxy(&[stuck.addr, live], &["connect-timeout=300ms"], &[]);
    let start = Instant::now();
    let mut c = connect(server.addr());
    assert_eq!(line(&mut c), "live ready");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "the stuck upstream should cost one connect timeout (300 ms), took {took:?}"
    );
}

#[test]
fn with_every_upstream_down_the_client_is_closed_promptly_with_a_log_line() {
    let (a, b) = (dead_port(), dead_port());
    let server = proxy(&[a, b], &["fail-threshold=1", "cooldown=60s"], &[]);
    let start = Instant::now();
    let mut c = connect(server.addr());
    assert!(
        closed_within(&mut c, Duration::from_secs(2)),
        "the client was not closed"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let first = server.stderr.wait_for(
        "closed: no upstream could be reached",
        Duration::from_secs(5),
    );
    assert!(
        first.contains(&a.to_string()) && first.contains(&b.to_string()),
        "{first}"
    );
    // Both are down now: the next client is closed without a connect attempt.
    server
        .stderr
        .wait_for(&format!("upstream {a} down"), Duration::from_secs(5));
    server
        .stderr
        .wait_for(&format!("upstream {b} down"), Duration::from_secs(5));
    // (A second client within the second would only be counted: the line is rate-limited.)
    std::thread::sleep(Duration::from_millis(1100)); // the rate limit's period is the subject
    let mut c = connect(server.addr());
    assert!(closed_within(&mut c, Duration::from_secs(2)), "not closed");
    server
        .stderr
        .wait_for("closed: every upstream is down", Duration::from_secs(5));
}

#[test]
fn a_client_half_close_reaches_the_upstream_and_its_answer_still_comes_back() {
    // The upstream reads to end of stream, then answers and closes.
    let up = upstream(|mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(format!("got {} bytes\n", got.len()).as_bytes())
            .unwrap();
    });
    let server = proxy(&[up], &[], &[]);
    let mut c = connect(server.addr());
    c.write_all(&vec![7u8; 200_000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got 200000 bytes\n");
}

#[test]
fn an_upstream_half_close_reaches_the_client_which_can_still_send() {
    let (tx, rx) = mpsc::channel();
    let up = upstream(move |mut s| {
        s.write_all(b"all from me\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        tx.send(got).unwrap();
    });
    let server = proxy(&[up], &[], &[]);
    let mut c = connect(server.addr());
    let mut first = String::new();
    c.read_to_string(&mut first).unwrap(); // to the upstream's end of stream
    assert_eq!(first, "all from me\n");
    c.write_all(b"and still from the client").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream's reader finished");
    assert_eq!(got, "and still from the client");
    assert!(
        closed_within(&mut c, Duration::from_secs(5)),
        "closed at the end"
    );
}

// ------------------------------------------------------------------------------------------
// Flow control: memory stays bounded whichever side is slow

/// What the stream tests send: 100 MB.
const STREAM: u64 = 100_000_000;
/// How long the slow side reads at 1 KiB/s.
const SLOW_FOR: Duration = Duration::from_secs(4);
/// The bound asserted on the proxy's RSS growth while one side is slow. The proxy's own
/// bound is about 256 KiB + one 64 KiB read per direction; `--max-pending` is raised to
/// 64 MiB for these tests, so it is not what holds memory down.
const RSS_BOUND_KIB: u64 = 8 * 1024;

/// The slow side's part: read 1 KiB a second from `slow` for [`SLOW_FOR`] (checking the
/// pattern from `*at`), then check that the proxy (process `pid`, `before` KiB resident at the
/// start) stayed within [`RSS_BOUND_KIB`] meanwhile, and that the fast side (which has
/// written `written` bytes) was held back.
fn read_slowly_within_bounds(
    what: &str,
    slow: &mut TcpStream,
    at: &mut u64,
    pid: u32,
    before: u64,
    written: &AtomicU64,
) {
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < SLOW_FOR {
        peak = peak.max(rss_kib(pid));
        let next = *at + 1024;
        read_pattern(slow, at, next, 1024);
        std::thread::sleep(Duration::from_secs(1)); // reading at 1 KiB/s is the subject
    }
    let grown = peak.max(rss_kib(pid)).saturating_sub(before);
    let sent = written.load(Ordering::Relaxed);
    eprintln!("{what}: proxy RSS +{grown} KiB at most; the fast side wrote {sent} bytes");
    assert!(
        grown < RSS_BOUND_KIB,
        "{what}: the proxy's RSS grew by {grown} KiB (the fast side wrote {sent} bytes)"
    );
    assert!(
        sent < STREAM / 2,
        "{what}: the fast side was not slowed down: it wrote {sent} of {STREAM} bytes"
    );
}

#[test]
fn a_slow_client_does_not_make_the_proxy_buffer_a_fast_upstream() {
    // Each upstream connection streams 100 MB and hands the test its progress counter.
    let (tx, rx) = mpsc::channel::<Arc<AtomicU64>>();
    let up = upstream(move |mut s| {
        let written = Arc::new(AtomicU64::new(0));
        tx.send(written.clone()).unwrap();
        let _ = write_pattern(&mut s, STREAM, &written);
    });
    let server = proxy(&[up], &[], &["--max-pending", "67108864"]);
    // Warm up the worker (first connection, buffers) before the baseline.
    let mut warm = connect(server.addr());
    read_pattern(&mut warm, &mut 0, 1 << 20, 64 * 1024);
    drop(warm);
    let before = rss_kib(server.pid());

    let mut c = connect(server.addr());
    let next = |rx: &mpsc::Receiver<Arc<AtomicU64>>| {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("an upstream connection")
    };
    let _warm = next(&rx);
    let written = next(&rx);
    let mut at = 0;
    read_slowly_within_bounds(
        "slow client",
        &mut c,
        &mut at,
        server.pid(),
        before,
        &written,
    );
    // The client catches up: every byte arrives, in order, and the tunnel was never cut.
    read_pattern(&mut c, &mut at, STREAM, 256 * 1024);
}

#[test]
fn a_slow_upstream_does_not_make_the_proxy_buffer_a_fast_client() {
    let (tx, rx) = mpsc::channel::<TcpStream>();
    let up = upstream(move |s| tx.send(s).unwrap());
    let server = proxy(&[up], &[], &["--max-pending", "67108864"]);
    let before = rss_kib(server.pid());
    let mut c = connect(server.addr());
    c.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let writer = std::thread::spawn(move || write_pattern(&mut c, STREAM, &w).map(|_| c));
    let mut u = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream connection");
    let mut at = 0;
    read_slowly_within_bounds(
        "slow upstream",
        &mut u,
        &mut at,
        server.pid(),
        before,
        &written,
    );
    read_pattern(&mut u, &mut at, STREAM, 256 * 1024);
    writer.join().unwrap().expect("the client wrote everything");
}

// ------------------------------------------------------------------------------------------
// Options

#[test]
fn bad_options_are_one_error_line() {
    let proxy = sockhost_tests::plugin("proxy");
    let proxy = proxy.to_str().unwrap();
    for (opts, want) in [
        (vec![], "error: plugin proxy: option upstream: at least one is needed"),
        (
            vec!["upstream=127.0.0.1:1", "balance=random"],
            "error: plugin proxy: option balance: expected round-robin or least-conn, got \"random\"",
        ),
        (
            vec!["upstream=127.0.0.1"],
            "error: plugin proxy: option upstream: \"127.0.0.1\": expected HOST:PORT",
        ),
    ] {
        let mut args = vec!["--plugin", proxy, "--bind", "127.0.0.1:0", "--concurrency", "thread"];
        for o in &opts {
            args.extend(["--plugin-opt", o]);
        }
        let done = sockhost_tests::run_to_exit(&args, Duration::from_secs(10));
        assert_eq!(done.status.code(), Some(1), "{opts:?}: {}", done.stderr);
        let lines: Vec<&str> = done.stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{opts:?}: {}", done.stderr);
        assert!(lines[0].starts_with(want), "{opts:?}: {}", lines[0]);
    }
}
