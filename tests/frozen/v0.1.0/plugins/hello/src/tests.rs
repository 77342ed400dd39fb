//! The consumer driven through the `Consumer` trait by plugin-api's sans-IO harness: one
//! `send` is one read, so splitting and joining requests tests partial input and pipelining.

use plugin_api::testing::{Connection, Harness};
use plugin_api::LostReason;

use super::{Hello, HelloConsumer, MAX_HEAD};

const GET: &str = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Output with every `Date` value replaced by `D`, so responses compare as text.
fn normalised(conn: &mut Connection<HelloConsumer>) -> String {
    let text = conn.take_text();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("Date: ") {
        out.push_str(&rest[..at + 6]);
        let value = &rest[at + 6..];
        let end = value.find("\r\n").expect("a Date line ends");
        assert_eq!(end, 29, "an IMF-fixdate: {:?}", &value[..end]);
        out.push('D');
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

const OK: &str = "HTTP/1.1 200 OK\r\nServer: sockhost-hello\r\nDate: D\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";
const OK_CLOSE: &str = "HTTP/1.1 200 OK\r\nServer: sockhost-hello\r\nDate: D\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\nHello, world!\n";
const OK_KEEP_ALIVE: &str = "HTTP/1.1 200 OK\r\nServer: sockhost-hello\r\nDate: D\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\nHello, world!\n";
const BAD: &str = "HTTP/1.1 400 Bad Request\r\nServer: sockhost-hello\r\nDate: D\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n";
const TOO_LARGE: &str = "HTTP/1.1 431 Request Header Fields Too Large\r\nServer: sockhost-hello\r\nDate: D\r\nContent-Type: text/plain\r\nContent-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n";

fn open() -> Connection<HelloConsumer> {
    let mut conn = Harness::<Hello>::new().connect().unwrap();
    assert_eq!(conn.take_output(), b"", "HTTP has no greeting");
    conn
}

fn partial_len(conn: &Connection<HelloConsumer>) -> usize {
    conn.consumer().map_or(0, |c| c.partial.len())
}

#[test]
fn keep_alive_answers_request_after_request() {
    let mut conn = open();
    for _ in 0..3 {
        conn.send(GET.as_bytes()).unwrap();
        assert_eq!(normalised(&mut conn), OK);
        assert!(conn.is_open());
        assert_eq!(
            conn.consumer().unwrap().partial.capacity(),
            0,
            "no buffer kept"
        );
    }
}

#[test]
fn pipelined_requests_in_one_read_get_responses_in_order() {
    let mut conn = open();
    let three = format!(
        "{GET}HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    );
    conn.send(three.as_bytes()).unwrap();
    let head_response = OK.strip_suffix("Hello, world!\n").unwrap();
    assert_eq!(
        normalised(&mut conn),
        format!("{OK}{head_response}{OK_CLOSE}")
    );
    assert_eq!(conn.lost_reason(), Some(LostReason::Closed));
}

#[test]
fn a_request_split_at_every_byte_is_answered_once_complete() {
    let mut conn = open();
    let two = format!("{GET}{GET}");
    for (i, byte) in two.as_bytes().iter().enumerate() {
        conn.send(std::slice::from_ref(byte)).unwrap();
        let out = normalised(&mut conn);
        if i + 1 == GET.len() || i + 1 == two.len() {
            assert_eq!(out, OK, "after byte {i}");
        } else {
            assert_eq!(out, "", "after byte {i}");
        }
    }
    assert_eq!(partial_len(&conn), 0);
    assert!(conn.is_open());
}

#[test]
fn a_read_ending_mid_request_keeps_only_the_incomplete_part() {
    let mut conn = open();
    let (start, end) = GET.split_at(20);
    conn.send(format!("{GET}{start}").as_bytes()).unwrap();
    assert_eq!(normalised(&mut conn), OK);
    assert_eq!(partial_len(&conn), 20);
    conn.send(format!("{end}{GET}").as_bytes()).unwrap();
    assert_eq!(normalised(&mut conn), format!("{OK}{OK}"));
    assert_eq!(partial_len(&conn), 0);
}

#[test]
fn connection_close_and_http10_close_after_the_response() {
    let mut conn = open();
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(normalised(&mut conn), OK_CLOSE);
    assert_eq!(conn.lost_reason(), Some(LostReason::Closed));

    let mut conn = open();
    conn.send(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n")
        .unwrap();
    assert_eq!(normalised(&mut conn), OK_CLOSE, "one answer, then closed");
    assert!(conn.close_requested());

    let mut conn = open();
    conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(normalised(&mut conn), OK_KEEP_ALIVE);
    assert!(conn.is_open());
}

#[test]
fn content_length_bodies_are_skipped_across_reads() {
    let mut conn = open();
    conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123")
        .unwrap();
    assert_eq!(
        normalised(&mut conn),
        OK,
        "answered before the body arrives"
    );
    // The body's rest, which looks like a request, is not one; the next request is.
    conn.send(format!("GET /x\r\n{GET}").as_bytes()).unwrap();
    assert_eq!(normalised(&mut conn), OK);
    assert!(conn.is_open());
    assert_eq!(partial_len(&conn), 0, "bodies are never buffered");
}

#[test]
fn chunked_bodies_are_skipped() {
    let mut conn = open();
    let request = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5;ext=1\r\nGET /\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n";
    conn.send(format!("{request}{GET}").as_bytes()).unwrap();
    assert_eq!(normalised(&mut conn), format!("{OK}{OK}"));
    // Again, one byte per read: every state must survive a split anywhere.
    let mut conn = open();
    for byte in format!("{request}{GET}").bytes() {
        conn.send(&[byte]).unwrap();
    }
    assert_eq!(normalised(&mut conn), format!("{OK}{OK}"));
    assert!(conn.is_open());
}

#[test]
fn bad_chunk_framing_is_400() {
    let mut conn = open();
    conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .unwrap();
    assert_eq!(normalised(&mut conn), format!("{OK}{BAD}"));
    assert_eq!(conn.lost_reason(), Some(LostReason::Closed));
    let mut conn = open();
    conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY")
        .unwrap();
    assert_eq!(normalised(&mut conn), format!("{OK}{BAD}"));
}

#[test]
fn expect_continue_gets_100_first() {
    let mut conn = open();
    conn.send(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    assert_eq!(
        normalised(&mut conn),
        format!("HTTP/1.1 100 Continue\r\n\r\n{OK}")
    );
    conn.send(format!("abc{GET}").as_bytes()).unwrap();
    assert_eq!(normalised(&mut conn), OK);
}

#[test]
fn a_malformed_request_is_400_then_closed_and_later_input_ignored() {
    for garbage in [
        &b"hello there\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ] {
        let mut conn = open();
        conn.send(garbage).unwrap();
        assert_eq!(normalised(&mut conn), BAD, "{garbage:?}");
        assert_eq!(conn.lost_reason(), Some(LostReason::Closed));
        conn.send(GET.as_bytes()).unwrap();
        assert_eq!(conn.take_output(), b"");
    }
    // After a good request, a bad one still gets its answer in order.
    let mut conn = open();
    conn.send(format!("{GET}BAD\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(normalised(&mut conn), format!("{OK}{BAD}"));
}

#[test]
fn an_oversized_head_is_431_whether_it_arrives_at_once_or_in_pieces() {
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.resize(MAX_HEAD + 100, b'a');
    let mut conn = open();
    conn.send(&big).unwrap();
    assert_eq!(normalised(&mut conn), TOO_LARGE);
    assert_eq!(conn.lost_reason(), Some(LostReason::Closed));

    let mut conn = open();
    for piece in big.chunks(1000) {
        if conn.is_open() {
            assert!(
                partial_len(&conn) <= MAX_HEAD + 1,
                "the buffer stays bounded"
            );
        }
        conn.send(piece).unwrap();
    }
    assert_eq!(normalised(&mut conn), TOO_LARGE);
    assert_eq!(conn.lost_reason(), Some(LostReason::Closed));
}

#[test]
fn a_head_of_exactly_the_limit_is_accepted() {
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    head.resize(MAX_HEAD - 4, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let mut conn = open();
    for piece in head.chunks(3000) {
        conn.send(piece).unwrap();
    }
    assert_eq!(normalised(&mut conn), OK);
    assert!(conn.is_open());
}

#[test]
fn end_of_stream_closes() {
    let mut conn = open();
    conn.send(b"GET / HTTP/1.1\r\nHo").unwrap();
    conn.eof().unwrap();
    assert_eq!(
        conn.take_output(),
        b"",
        "an incomplete request gets no answer"
    );
    assert_eq!(conn.lost_reason(), Some(LostReason::Closed));
}

#[test]
fn accepts_no_options() {
    let refused = Harness::<Hello>::with_options([("colour", "blue")]).err();
    assert_eq!(
        refused.as_deref(),
        Some(r#"plugin hello: unknown option "colour" (it accepts no options)"#)
    );
}
