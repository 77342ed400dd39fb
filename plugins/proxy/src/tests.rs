//! The proxy's consumers driven by `plugin_api::testing`: the test plays the client and the
//! upstream servers (accepting, refusing or never answering the proxy's connects), on the
//! harness's fake clock. Black-box tests with real servers are in `tests/tests/proxy.rs`.

use std::time::Duration;

use plugin_api::testing::{ConnSpec, Connection, Harness};
use plugin_api::{ConnId, LostReason};

use crate::tunnel::UpstreamSide;
use crate::Proxy;

fn harness(opts: &[(&str, &str)]) -> Harness<Proxy> {
    Harness::<Proxy>::with_options(opts.iter().copied()).unwrap()
}

/// The one connect the proxy has asked for and nobody answered yet: (id, target).
fn pending_connect(h: &Harness<Proxy>) -> (ConnId, String) {
    let out = h.outbound();
    assert_eq!(out.len(), 1, "one pending connect: {out:?}");
    out[0].clone()
}

/// Accept the pending connect: the returned connection is the upstream server's end.
fn accept(h: &Harness<Proxy>) -> Connection<UpstreamSide> {
    let (id, _) = pending_connect(h);
    h.accept_outbound::<UpstreamSide>(id).unwrap()
}

#[test]
fn the_client_waits_for_its_upstream_then_bytes_flow_both_ways() {
    let h = harness(&[("upstream", "127.0.0.1:6379")]);
    let mut client = h.connect().unwrap();
    assert!(
        client.is_paused(),
        "nothing is read before the upstream exists"
    );
    assert_eq!(pending_connect(&h).1, "127.0.0.1:6379");
    client.send(b"PING\r\n").unwrap(); // held by the pause
    let mut server = accept(&h);
    assert!(!client.is_paused());
    assert_eq!(server.take_text(), "PING\r\n");
    server.send(b"+PONG\r\n").unwrap();
    assert_eq!(client.take_text(), "+PONG\r\n");
}

#[test]
fn a_server_first_upstream_greets_the_silent_client() {
    let h = harness(&[("upstream", "127.0.0.1:25")]);
    let mut client = h.connect().unwrap();
    let mut server = accept(&h);
    server.send(b"220 mail.example ESMTP\r\n").unwrap();
    assert_eq!(client.take_text(), "220 mail.example ESMTP\r\n");
}

#[test]
fn send_proxy_writes_the_header_before_any_client_byte() {
    let h = harness(&[("upstream", "127.0.0.1:80"), ("send-proxy", "v1")]);
    let spec = ConnSpec::tcp()
        .peer(([192, 0, 2, 7], 51234))
        .local(([10, 0, 0, 1], 443));
    let mut client = h.open(spec).unwrap();
    client.send(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut server = accept(&h);
    assert_eq!(
        server.take_text(),
        "PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n\r\n"
    );
}

#[test]
fn a_refused_connect_moves_to_the_next_upstream_and_the_last_one_closes_the_client() {
    let h = harness(&[
        ("upstream", "127.0.0.1:1"),
        ("upstream", "127.0.0.1:2"),
        ("upstream", "127.0.0.1:3"),
        ("retries", "1"),
    ]);
    let client = h.connect().unwrap();
    let (first, target) = pending_connect(&h);
    assert_eq!(target, "127.0.0.1:1");
    h.refuse_outbound(first).unwrap();
    let (second, target) = pending_connect(&h);
    assert_eq!(
        target, "127.0.0.1:2",
        "the next upstream, not the same one again"
    );
    assert!(client.is_open());
    h.refuse_outbound(second).unwrap();
    // retries=1: two attempts, then the client is closed (upstream 3 is never tried).
    assert!(h.outbound().is_empty());
    assert!(!client.is_open(), "closed once no attempt is left");
    assert_eq!(client.lost_reason(), Some(LostReason::Closed));
}

#[test]
fn a_connect_that_never_answers_times_out_into_the_next_upstream() {
    let h = harness(&[
        ("upstream", "127.0.0.1:1"),
        ("upstream", "127.0.0.1:2"),
        ("connect-timeout", "500ms"),
    ]);
    let _client = h.connect().unwrap();
    assert_eq!(pending_connect(&h).1, "127.0.0.1:1");
    h.advance(Duration::from_millis(499));
    assert_eq!(
        pending_connect(&h).1,
        "127.0.0.1:1",
        "still within the timeout"
    );
    h.advance(Duration::from_millis(2));
    assert_eq!(pending_connect(&h).1, "127.0.0.1:2");
}

#[test]
fn a_backlogged_side_pauses_the_other_until_it_drains() {
    let h = harness(&[("upstream", "127.0.0.1:80")]);
    let mut client = h.connect().unwrap();
    let mut server = accept(&h);
    // The upstream sends faster than the client reads (the test takes nothing yet): past
    // the host's high-water mark (256 KiB pending) the proxy stops reading the upstream.
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..5 {
        server.send(&chunk).unwrap();
    }
    assert!(
        server.is_paused(),
        "the upstream is paused once the client is backlogged"
    );
    server.send(&chunk).unwrap(); // held: not read while paused
    assert_eq!(client.pending(), 5 * chunk.len());
    // Still backlogged: the probes back off (1, 2, 4 … ms) and it stays paused.
    h.advance(Duration::from_millis(50));
    assert!(server.is_paused());
    // The client reads: the next probe finds it drained and resumes the upstream, which
    // delivers the held read.
    assert_eq!(client.take_output().len(), 5 * chunk.len());
    h.advance(crate::tunnel::MAX_PROBE);
    assert!(!server.is_paused(), "resumed after the drain");
    assert_eq!(client.take_output().len(), chunk.len());
    // And the other way round: a slow upstream pauses the client.
    for _ in 0..5 {
        client.send(&chunk).unwrap();
    }
    assert!(client.is_paused());
    server.take_output();
    h.advance(crate::tunnel::MAX_PROBE);
    assert!(!client.is_paused());
}

/// An end of stream becomes a half-close of the other end, after the bytes before it.
///
/// Only the first step can be checked here: the harness ends a connection right after its
/// `eof_received`, even for a plugin with services, where the host keeps it open until the
/// plugin closes it — so "the answer still comes back" is checked by the black-box tests
/// (`tests/tests/proxy.rs`, half-close both ways).
#[test]
fn an_end_of_stream_is_relayed_as_a_half_close() {
    let h = harness(&[("upstream", "127.0.0.1:80")]);
    let mut client = h.connect().unwrap();
    let mut server = accept(&h);
    client.send(b"request").unwrap();
    client.eof().unwrap();
    assert_eq!(server.take_text(), "request");
    assert!(
        server.shutdown_requested(),
        "the client's FIN reaches the upstream"
    );

    let mut client = h.connect().unwrap();
    let mut server = accept(&h);
    server.send(b"banner").unwrap();
    server.eof().unwrap();
    assert_eq!(client.take_text(), "banner");
    assert!(
        client.shutdown_requested(),
        "the upstream's FIN reaches the client"
    );
}

#[test]
fn either_end_going_away_closes_the_other() {
    let h = harness(&[("upstream", "127.0.0.1:80")]);
    let client = h.connect().unwrap();
    let mut server = accept(&h);
    server.peer_reset().unwrap();
    assert!(!client.is_open(), "the upstream's reset ends the client");

    let mut client = h.connect().unwrap();
    let server = accept(&h);
    client.peer_reset().unwrap();
    assert!(!server.is_open(), "the client's reset ends the upstream");
}

#[test]
fn a_client_that_leaves_while_connecting_does_not_leave_an_upstream_behind() {
    let h = harness(&[("upstream", "127.0.0.1:80")]);
    let mut client = h.connect().unwrap();
    let (id, _) = pending_connect(&h);
    client.peer_reset().unwrap();
    // The connect was closed with the client: it ends as soon as it connects.
    let server = h.accept_outbound::<UpstreamSide>(id).unwrap();
    assert!(!server.is_open());
    assert!(h.outbound().is_empty());
}

#[test]
fn with_every_upstream_down_a_client_is_closed_without_a_connect() {
    let h = harness(&[("upstream", "127.0.0.1:1"), ("fail-threshold", "1")]);
    let client = h.connect().unwrap();
    let (id, _) = pending_connect(&h);
    h.refuse_outbound(id).unwrap();
    assert!(!client.is_open());
    // Down for the cool-down (10 s of real time: the pool's clock is not the harness's).
    let client = h.connect().unwrap();
    assert!(h.outbound().is_empty(), "a down upstream is not tried");
    assert!(!client.is_open());
}
