//! The hello HTTP plugin over real sockets, driven by a real HTTP client (`curl`, which the
//! tests assume is installed) and by raw bytes where curl would not send what we want:
//! keep-alive reuse, pipelining, `Connection: close`, malformed requests, HTTPS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use sockhost_tests::{closed_within, connect, plugin, Server};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const BODY: &str = "Hello, world!\n";

fn hello_server(extra: &[&str]) -> Server {
    let hello = plugin("hello");
    let mut args = vec![
        "--plugin",
        hello.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Run curl (bounded by `--max-time`) and return its stdout; fails the test on an error.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("running curl (the tests need curl installed)");
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("curl printed UTF-8")
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// Read one response (head + `Content-Length` body) from `stream`, leaving what follows it
/// in `buffered`. Returns the head and the body.
fn read_response(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> (String, String) {
    let head_end = loop {
        if let Some(at) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("reading a response");
        assert!(
            n > 0,
            "the server closed mid-response; got {:?}",
            String::from_utf8_lossy(buffered)
        );
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffered[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        })
        .map(|(_, v)| v.trim().parse().unwrap())
        .expect("a Content-Length header");
    while buffered.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("reading a response body");
        assert!(n > 0, "the server closed mid-body");
        buffered.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(buffered[head_end..head_end + length].to_vec()).unwrap();
    buffered.drain(..head_end + length);
    (head, body)
}

#[test]
fn curl_gets_hello_with_correct_headers() {
    let server = hello_server(&[]);
    let out = curl(&["--include", &url(server.addr(), "/anything?x=1")]);
    let (head, body) = out.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Length: 14"), "{head}");
    assert!(head.contains("\r\nDate: "), "{head}");
    assert_eq!(body, BODY);
}

#[test]
fn curl_reuses_one_connection_for_two_urls() {
    let server = hello_server(&[]);
    let out = curl(&[
        "--write-out",
        "[%{num_connects}]\n",
        &url(server.addr(), "/a"),
        &url(server.addr(), "/b"),
    ]);
    assert_eq!(
        out,
        format!("{BODY}[1]\n{BODY}[0]\n"),
        "the second request must reuse the first connection (keep-alive)"
    );
}

#[test]
fn curl_http10_closes_and_connection_close_is_honoured() {
    let server = hello_server(&[]);
    let out = curl(&[
        "--http1.0",
        "--write-out",
        "[%{num_connects}]\n",
        &url(server.addr(), "/a"),
        &url(server.addr(), "/b"),
    ]);
    assert_eq!(
        out,
        format!("{BODY}[1]\n{BODY}[1]\n"),
        "HTTP/1.0 closes each time"
    );
    let out = curl(&[
        "--header",
        "Connection: close",
        "--write-out",
        "[%{num_connects}]\n",
        &url(server.addr(), "/a"),
        &url(server.addr(), "/b"),
    ]);
    assert_eq!(out, format!("{BODY}[1]\n{BODY}[1]\n"));
}

#[test]
fn curl_post_bodies_are_skipped_and_the_connection_reused() {
    let server = hello_server(&[]);
    let body = "x".repeat(100_000);
    let out = curl(&[
        "--data-binary",
        &body,
        "--write-out",
        "[%{num_connects}]\n",
        &url(server.addr(), "/post"),
        "--next",
        "--write-out",
        "[%{num_connects}]\n",
        &url(server.addr(), "/get"),
    ]);
    assert_eq!(out, format!("{BODY}[1]\n{BODY}[0]\n"));
}

#[test]
fn two_requests_in_one_write_get_two_responses_in_order() {
    let server = hello_server(&[]);
    let mut s = connect(server.addr());
    let mut two = GET.to_vec();
    two.extend_from_slice(b"HEAD /second HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(&two).unwrap();
    let mut buffered = Vec::new();
    let (head, body) = read_response(&mut s, &mut buffered);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, BODY);
    // The HEAD response: same headers, no body (read_response would block on one, so the
    // Content-Length is checked by hand).
    while !buffered.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the second response");
        buffered.extend_from_slice(&chunk[..n]);
    }
    let second = String::from_utf8(buffered.clone()).unwrap();
    assert!(second.starts_with("HTTP/1.1 200 OK"), "{second}");
    assert!(second.ends_with("Content-Length: 14\r\n\r\n"), "{second}");
    // Still open: a third request on the same connection is answered.
    buffered.clear();
    s.write_all(GET).unwrap();
    assert_eq!(read_response(&mut s, &mut buffered).1, BODY);
}

#[test]
fn a_request_dribbled_in_pieces_is_answered_once_complete() {
    let server = hello_server(&[]);
    let mut s = connect(server.addr());
    for piece in GET.chunks(5) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut buffered = Vec::new();
    assert_eq!(read_response(&mut s, &mut buffered).1, BODY);
}

#[test]
fn many_pipelined_requests_are_all_answered() {
    let server = hello_server(&[]);
    let mut s = connect(server.addr());
    let batch: Vec<u8> = GET.repeat(500);
    let mut writer = s.try_clone().unwrap();
    let w = std::thread::spawn(move || writer.write_all(&batch).unwrap());
    let mut buffered = Vec::new();
    for i in 0..500 {
        let (head, body) = read_response(&mut s, &mut buffered);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "response {i}: {head}");
        assert_eq!(body, BODY, "response {i}");
    }
    w.join().unwrap();
}

#[test]
fn malformed_requests_get_400_and_are_closed() {
    let server = hello_server(&[]);
    for garbage in [
        &b"this is not http\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let mut s = connect(server.addr());
        s.write_all(garbage).unwrap();
        let mut buffered = Vec::new();
        let (head, body) = read_response(&mut s, &mut buffered);
        assert!(
            head.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{garbage:?}: {head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        assert_eq!(body, "Bad Request\n");
        assert!(buffered.is_empty());
        assert!(
            closed_within(&mut s, Duration::from_secs(5)),
            "{garbage:?}: the connection must close after a 400"
        );
    }
}

#[test]
fn connection_close_closes_after_the_response() {
    let server = hello_server(&[]);
    let mut s = connect(server.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buffered = Vec::new();
    let (head, body) = read_response(&mut s, &mut buffered);
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(body, BODY);
    assert!(closed_within(&mut s, Duration::from_secs(5)));
}

#[test]
fn an_oversized_head_gets_431_and_is_closed() {
    let server = hello_server(&[]);
    let mut s = connect(server.addr());
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.resize(20_000, b'a');
    s.write_all(&big).unwrap();
    let mut buffered = Vec::new();
    let (head, _) = read_response(&mut s, &mut buffered);
    assert!(
        head.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{head}"
    );
    assert!(closed_within(&mut s, Duration::from_secs(5)));
}

#[test]
fn process_mode_with_two_workers_serves_keep_alive() {
    let hello = plugin("hello");
    let server = Server::start(&[
        "--plugin",
        hello.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
    ]);
    for _ in 0..4 {
        let out = curl(&[
            "--write-out",
            "[%{num_connects}]\n",
            &url(server.addr(), "/a"),
            &url(server.addr(), "/b"),
            &url(server.addr(), "/c"),
        ]);
        assert_eq!(out, format!("{BODY}[1]\n{BODY}[0]\n{BODY}[0]\n"));
    }
}

#[test]
fn https_keep_alive_through_the_hosts_tls() {
    let dir = std::env::temp_dir().join(format!("sockhost-hello-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let server = hello_server(&[
        "--cert-file",
        cert_file.to_str().unwrap(),
        "--key-file",
        key_file.to_str().unwrap(),
    ]);
    let port = server.addr().port();
    let base = format!("https://localhost:{port}");
    let out = curl(&[
        "--cacert",
        cert_file.to_str().unwrap(),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "--write-out",
        "[%{num_connects}]\n",
        &format!("{base}/a"),
        &format!("{base}/b"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out, format!("{BODY}[1]\n{BODY}[0]\n"));
}
