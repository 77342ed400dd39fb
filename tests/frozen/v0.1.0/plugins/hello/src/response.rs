//! The responses, prebuilt: everything but the `Date` value is a constant byte string, so
//! answering a request is three or four `Output::write`s of static bytes and no formatting.

use plugin_api::Output;

use crate::date::HttpDate;
use crate::request::{Head, Reject};

/// The body of every `200 OK`.
pub const BODY: &[u8] = b"Hello, world!\n";

/// Up to the `Date` value.
const STATUS_200: &[u8] = b"HTTP/1.1 200 OK\r\nServer: sockhost-hello\r\nDate: ";

/// After the `Date` value, for each way the connection goes on. `Content-Length` is
/// `BODY.len()` (a unit test checks it).
const REST_200: &[u8] = b"\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n";
const REST_200_KEEP_ALIVE: &[u8] =
    b"\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\n";
const REST_200_CLOSE: &[u8] =
    b"\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\n";

/// Sent before the final response when the client waits for it (`Expect: 100-continue`).
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

const STATUS_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: sockhost-hello\r\nDate: ";
const STATUS_431: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nServer: sockhost-hello\r\nDate: ";
/// Error responses close the connection; the body is the reason phrase.
const REST_400: &[u8] =
    b"\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n";
const REST_431: &[u8] =
    b"\r\nContent-Type: text/plain\r\nContent-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n";

/// Write the `200 OK` for `head`.
#[inline]
pub fn ok(out: &mut Output, head: &Head, date: &HttpDate) {
    if head.expect_continue {
        out.write(CONTINUE);
    }
    out.write(STATUS_200);
    out.write(date);
    out.write(match (head.keep_alive, head.http10) {
        (false, _) => REST_200_CLOSE,
        // A 1.0 client keeps the connection only if told so.
        (true, true) => REST_200_KEEP_ALIVE,
        (true, false) => REST_200,
    });
    if !head.head_only {
        out.write(BODY);
    }
}

/// Write the error response for `reject` (the caller then closes).
pub fn error(out: &mut Output, reject: Reject, date: &HttpDate) {
    let (status, rest) = match reject {
        Reject::BadRequest => (STATUS_400, REST_400),
        Reject::TooLarge => (STATUS_431, REST_431),
    };
    out.write(status);
    out.write(date);
    out.write(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The declared Content-Length of a response tail, and the body after the blank line.
    fn length_and_body(rest: &[u8]) -> (usize, &[u8]) {
        let text = std::str::from_utf8(rest).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let n = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        (n, body.as_bytes())
    }

    #[test]
    fn content_lengths_match_the_bodies() {
        for rest in [REST_200, REST_200_KEEP_ALIVE, REST_200_CLOSE] {
            assert_eq!(length_and_body(rest), (BODY.len(), &b""[..]));
        }
        for rest in [REST_400, REST_431] {
            let (n, body) = length_and_body(rest);
            assert_eq!(n, body.len());
        }
    }
}
