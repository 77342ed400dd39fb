//! `--proxy-protocol`: raw v1/v2 headers, and a real HAProxy (`send-proxy-v2`) in front of
//! two sockhost hosts, one reloading and one stopping under load.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command};
use std::time::Duration;

use sockhost_tests::{ask, closed_within, connect, round_trip, wait_until, LoadLoop, Server};

fn proxied_server(extra: &[&str]) -> Server {
    let mut args = vec!["--bind", "127.0.0.1:0", "--proxy-protocol"];
    args.extend(extra);
    sockhost_tests::serve("testkit", &args)
}

#[test]
fn v1_and_v2_headers_set_the_consumers_peer() {
    let server = proxied_server(&["--concurrency", "thread"]);
    let mut v1 = connect(server.addr());
    v1.write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n")
        .unwrap();
    assert!(ask(&mut v1, "whoami").starts_with("peer=203.0.113.7:40000 "));

    let mut v2 = connect(server.addr());
    let mut header = vec![
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00,
        0x0C,
    ];
    header.extend_from_slice(&[192, 0, 2, 9, 10, 0, 0, 1]);
    header.extend_from_slice(&5555u16.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    // The header and the first request in one write: the request must survive.
    header.extend_from_slice(b"whoami");
    v2.write_all(&header).unwrap();
    let mut reply = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut v2), &mut reply).unwrap();
    assert!(reply.starts_with("peer=192.0.2.9:5555 "), "{reply}");
}

#[test]
fn a_connection_without_a_valid_header_is_closed() {
    let server = proxied_server(&[
        "--concurrency",
        "thread",
        "--handshake-timeout",
        "1",
        "--keep-alive",
        "0",
    ]);
    let mut garbage = connect(server.addr());
    garbage.write_all(b"hello, no header here\r\n").unwrap();
    assert!(
        closed_within(&mut garbage, Duration::from_secs(3)),
        "garbage accepted as a header"
    );
    let mut silent = connect(server.addr());
    assert!(
        closed_within(&mut silent, Duration::from_secs(4)),
        "a missing header is cut by the deadline"
    );
    let mut partial = connect(server.addr());
    partial.write_all(b"PROXY TCP4 1.2.3.4").unwrap();
    assert!(
        closed_within(&mut partial, Duration::from_secs(4)),
        "a header that never ends is cut by the deadline"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Haproxy {
    child: Child,
    dir: std::path::PathBuf,
    addr: SocketAddr,
}

impl Haproxy {
    fn start(backends: &[SocketAddr]) -> Haproxy {
        let dir = std::env::temp_dir().join(format!("sockhost-haproxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, a)| format!("    server host{i} {a} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 1\n"))
            .collect();
        // As deployments do: a refused or timed-out connect is retried, the last time on
        // another server. A connection the server accepted and then dropped is not (HAProxy
        // may have sent the request): the hosts must refuse, never drop. Every session is
        // logged, with its server, its backend connection and how it ended (`%ts`, `--`:
        // normally), for a failure to show what HAProxy saw.
        let cfg = format!(
            "global\n    maxconn 2000\n    log stdout format raw local0 info\ndefaults\n    mode tcp\n    log global\n    log-format \"client %ci:%cp server %b/%s from %bi:%bp connect %Tc ms total %Tt ms sent %U got %B bytes ended %ts retries %rc\"\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch\nfrontend front\n    bind 127.0.0.1:{port}\n    default_backend hosts\nbackend hosts\n    balance roundrobin\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy is installed (.ci/run installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until(
            "haproxy to route a round trip",
            Duration::from_secs(10),
            || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .ok()
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
                        s.write_all(b"ping").ok()?;
                        let mut b = [0u8; 4];
                        std::io::Read::read_exact(&mut s, &mut b).ok()?;
                        Some(&b == b"ping")
                    })
                    .unwrap_or(false)
            },
        );
        Haproxy { child, dir, addr }
    }

    /// HAProxy's log lines but those of sessions that ended normally.
    fn unusual_log_lines(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
        let unusual: Vec<&str> = log.lines().filter(|l| !l.contains(" ended -- ")).collect();
        unusual.join("\n")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn behind_haproxy_hosts_see_real_clients_and_reload_and_stop_lose_nothing() {
    let a = proxied_server(&["--workers", "2", "--graceful-timeout", "10"]);
    let mut b = proxied_server(&["--workers", "2", "--graceful-timeout", "10"]);
    let haproxy = Haproxy::start(&[a.addr(), b.addr()]);

    // The consumer sees the client's own address, not HAProxy's.
    for _ in 0..4 {
        let mut s = connect(haproxy.addr);
        let who = ask(&mut s, "whoami");
        assert!(
            who.starts_with(&format!("peer={} ", s.local_addr().unwrap())),
            "{who}"
        );
    }

    let load = LoadLoop::start(haproxy.addr, 4, Duration::from_secs(60));
    // Long-lived connections already routed to each host, kept busy across the events.
    let mut routed: Vec<_> = (0..8).map(|_| connect(haproxy.addr)).collect();
    for s in &mut routed {
        assert_eq!(round_trip(s, b"before"), b"before");
    }
    a.signal("HUP");
    a.stderr
        .wait_for("reload finished", Duration::from_secs(10));
    b.signal("TERM");
    b.stderr
        .wait_for("stopping gracefully", Duration::from_secs(5));
    for (i, s) in routed.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut back = [0u8; 5];
        let r = s
            .write_all(b"after")
            .and_then(|_| std::io::Read::read_exact(s, &mut back));
        assert!(
            r.is_ok(),
            "routed connection {i} (local {:?}) lost: {r:?}\nA:\n{}\nB:\n{}",
            s.local_addr(),
            a.stderr.text(),
            b.stderr.text()
        );
    }
    // Keep the load running a moment past the stop, with B's listeners closed.
    for _ in 0..20 {
        let mut s = connect(haproxy.addr);
        assert_eq!(round_trip(&mut s, b"still routed"), b"still routed");
    }
    drop(routed);
    let status = b.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} exchanges through HAProxy were lost:\n{}\nHAProxy's sessions that did not end normally (host0 is A, reloaded; host1 is B, stopped):\n{}\nB:\n{}",
        failures.len(),
        ok as usize + failures.len(),
        failures[..failures.len().min(5)].join("\n"),
        haproxy.unusual_log_lines(),
        b.stderr.text()
    );
    assert!(ok > 50, "only {ok} round trips");
}
