//! `--proxy-protocol-from`: PROXY headers believed only from the listed sources.
//!
//! A test binary of its own: its server closes connections on purpose, and beside the HAProxy
//! test (tests/proxy_protocol.rs, which picks its frontend port with a bind-and-release) a
//! port race could route that test's traffic here.

use std::io::Write;
use std::time::Duration;

use sockhost_tests::{ask, closed_within, connect, metrics_addr, wait_for_metric, Server};

fn proxied_server(extra: &[&str]) -> Server {
    let mut args = vec!["--bind", "127.0.0.1:0", "--proxy-protocol"];
    args.extend(extra);
    sockhost_tests::serve("testkit", &args)
}

#[test]
fn headers_are_believed_only_from_proxy_protocol_from() {
    let header = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n";
    // 127.0.0.1 is a trusted source: its header is believed.
    let trusting = proxied_server(&[
        "--concurrency",
        "thread",
        "--proxy-protocol-from",
        "10.0.0.0/8,127.0.0.1",
    ]);
    let mut s = connect(trusting.addr());
    s.write_all(header).unwrap();
    assert!(ask(&mut s, "whoami").starts_with("peer=203.0.113.7:40000 "));

    // Only 10.0.0.0/8 is: a connection from 127.0.0.1 is closed before its header is read,
    // counted, and logged (once, however many come).
    let strict = proxied_server(&[
        "--concurrency",
        "thread",
        "--proxy-protocol-from",
        "10.0.0.0/8",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    for i in 0..20 {
        let mut s = connect(strict.addr());
        // The write may race the close; only the reply matters.
        let _ = s.write_all(header).and_then(|()| s.write_all(b"whoami"));
        assert!(
            closed_within(&mut s, Duration::from_secs(5)),
            "connection {i} from an untrusted source was served"
        );
    }
    let m = metrics_addr(&strict);
    wait_for_metric(
        m,
        "sockhost_proxy_protocol_refused_total{service=\"testkit\"}",
        20,
    );
    let line = strict
        .stderr
        .wait_for("outside --proxy-protocol-from", Duration::from_secs(5));
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1"),
        "{line}"
    );
    let lines = strict.stderr.count("outside --proxy-protocol-from");
    assert!(lines <= 2, "{lines} lines for 20 refusals (rate-limited)");
}
