//! No input is ever stranded by the worker's readiness bookkeeping (host/src/tcp/reactor.rs).
//!
//! The reactor treats a read that returns fewer bytes than asked for as "the socket is
//! drained" and waits for the next edge-triggered event instead of reading again to see
//! `EAGAIN`. That is right only while the peer's close has not been reported yet: when the
//! last bytes and the FIN arrive together (one event, `EPOLLIN | EPOLLRDHUP`), the short read
//! that takes the bytes does not take the FIN, and no later event will report it. These
//! tests send exactly that (`TCP_CORK`, so the data and the FIN leave in the same segment)
//! on a connection that has already had one exchange (so the server is waiting for an event,
//! not about to read a new socket anyway), requests cut at awkward points, and pipelines
//! longer than the 64 KiB read buffer, and wait for every answer and for the server's close
//! with bounded reads. Each fails when a short read is trusted after the close was reported.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use sockhost_tests::{connect, payload, round_trip, serve_thread, Server};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const BODY: &[u8] = b"Hello, world!\n";

/// How long the server gets to answer or to close; generous for a loaded machine (a
/// stranded read never completes, so this only bounds the failure).
const WAIT: Duration = Duration::from_secs(10);

/// Write `data` and then (with `fin`) half-close, all sent at once when uncorked: the
/// segments leave back to back and the FIN rides on the last one, so the server sees the
/// bytes and the peer's close in the same readiness event.
fn send_corked(s: &TcpStream, data: &[u8], fin: bool) {
    let sock = socket2::SockRef::from(s);
    sock.set_tcp_cork(true).unwrap();
    (&*s).write_all(data).unwrap();
    if fin {
        s.shutdown(Shutdown::Write).unwrap();
    }
    sock.set_tcp_cork(false).unwrap();
}

fn send_with_fin(s: &TcpStream, data: &[u8]) {
    send_corked(s, data, true);
}

/// Everything the server sends until it closes; fails if it does not close within [`WAIT`].
fn read_to_close(s: &mut TcpStream, what: &str) -> Vec<u8> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        panic!(
            "{what}: the server neither answered in full nor closed within {WAIT:?} ({e}); \
             got {} bytes: input (or the peer's close) was stranded",
            got.len()
        );
    }
    got
}

/// `n` hello responses in `got`, and nothing else.
fn assert_responses(got: &[u8], n: usize, what: &str) {
    let text = String::from_utf8_lossy(got);
    let heads = text.matches("HTTP/1.1 200 OK\r\n").count();
    let bodies = got.windows(BODY.len()).filter(|w| *w == BODY).count();
    assert_eq!(
        (heads, bodies),
        (n, n),
        "{what}: want {n} responses, got {heads} heads and {bodies} bodies in {} bytes",
        got.len()
    );
}

/// One request and its whole response: the server has read the connection dry and waits
/// for the next readiness event.
fn one_exchange(s: &mut TcpStream) {
    s.write_all(GET).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.ends_with(BODY) {
        let n = s.read(&mut chunk).expect("the first response");
        assert!(n > 0, "closed before the first response");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_responses(&got, 1, "the first exchange");
}

fn hello() -> Server {
    // No idle timeout: a connection the server forgot must not be closed by the sweeper
    // and pass for one it closed on the peer's FIN.
    serve_thread("hello", &["--keep-alive", "0"])
}

#[test]
fn bytes_and_fin_in_one_segment_are_echoed_then_the_connection_closes() {
    let server = serve_thread("echo", &["--keep-alive", "0"]);
    // 70,000 bytes: more than the worker's 64 KiB read buffer, so a full read comes first
    // and the short one with the close after it.
    for (i, len) in [1usize, 17, 1_000, 70_000].into_iter().enumerate() {
        for round in 0..5u64 {
            let mut s = connect(server.addr());
            let first = payload(10, round);
            assert_eq!(round_trip(&mut s, &first), first, "the first exchange");
            // All at once, no close: more than one read buffer arrives in one go.
            let data = payload(len, i as u64 * 100 + round + 50);
            send_corked(&s, &data, false);
            let mut back = vec![0u8; len];
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.read_exact(&mut back).unwrap_or_else(|e| {
                panic!("{len} bytes at once, round {round}: no full echo within {WAIT:?} ({e}): input was stranded")
            });
            assert!(back == data, "{len} bytes at once: echoed bytes differ");
            let data = payload(len, i as u64 * 100 + round);
            send_with_fin(&s, &data);
            let back = read_to_close(&mut s, &format!("{len} bytes + FIN, round {round}"));
            assert_eq!(back.len(), len, "{len} bytes + FIN: echoed length");
            assert!(back == data, "{len} bytes + FIN: echoed bytes differ");
        }
    }
}

#[test]
fn a_request_and_fin_in_one_segment_are_answered_then_closed() {
    let server = hello();
    for pipelined in [1usize, 3] {
        for round in 0..5 {
            let mut s = connect(server.addr());
            one_exchange(&mut s);
            send_with_fin(&s, &GET.repeat(pipelined));
            let what = format!("{pipelined} request(s) + FIN, round {round}");
            let got = read_to_close(&mut s, &what);
            assert_responses(&got, pipelined, &what);
        }
    }
}

#[test]
fn requests_cut_at_awkward_points_and_pipelined_past_the_read_buffer_are_all_answered() {
    let server = hello();
    let mut s = connect(server.addr());
    // 2,000 requests (72 KB, more than the 64 KiB read buffer), written in pieces of 1 to
    // 300 bytes and a few of 20 KB, cut anywhere (inside "\r\n\r\n" too), no pause between
    // them; then, once every answer is in, half-closed.
    const N: usize = 2_000;
    let stream = GET.repeat(N);
    let mut writer = s.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        let mut at = 0;
        let mut seed = 0x9e37_79b9_u32;
        while at < stream.len() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let piece = if seed.is_multiple_of(50) {
                20_000
            } else {
                1 + seed as usize % 300
            };
            let end = (at + piece).min(stream.len());
            writer.write_all(&stream[at..end]).unwrap();
            at = end;
        }
    });
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut bodies = 0;
    let mut scanned = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while bodies < N {
        let n = s.read(&mut chunk).unwrap_or_else(|e| {
            panic!(
                "{bodies} of {N} responses within {WAIT:?} of the last one ({e}): input was stranded"
            )
        });
        assert!(n > 0, "the server closed after {bodies} of {N} responses");
        got.extend_from_slice(&chunk[..n]);
        bodies += got[scanned..]
            .windows(BODY.len())
            .filter(|w| *w == BODY)
            .count();
        scanned = got.len().saturating_sub(BODY.len() - 1);
    }
    w.join().unwrap();
    assert_responses(&got, N, "2,000 pipelined requests");
    // And the connection is still served: one more request with the FIN in its segment.
    send_with_fin(&s, GET);
    let got = read_to_close(&mut s, "a last request + FIN after the pipeline");
    assert_responses(&got, 1, "a last request + FIN after the pipeline");
}
