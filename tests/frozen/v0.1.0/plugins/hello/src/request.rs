//! Reading one request head: what the connection must do with the request, decided from
//! its start line and headers alone. A pure function over bytes, so every rule here is
//! tested without a connection.
//!
//! The rules are RFC 9112's, reduced to what a server that answers every request the same
//! way needs: how the body is framed (to skip it), whether the connection stays open
//! afterwards, and whether the client waits for `100 Continue`. Anything ambiguous is
//! refused with `400` rather than guessed, because a guess about framing is how request
//! smuggling starts.

/// Most headers a request may carry; one more is `431`.
pub const MAX_HEADERS: usize = 64;

/// Most bytes a request head may take (start line + headers + blank line); one more is
/// `431`. Also the bound on a chunk-size or trailer line. nginx's default for one header
/// line is 8 KiB too (`large_client_header_buffers 4 8k`).
pub const MAX_HEAD: usize = 8 * 1024;

/// What a complete request head says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes the head took, blank line included: the body (if any) starts here.
    pub len: usize,
    /// HTTP/1.0 (which closes by default) rather than HTTP/1.1.
    pub http10: bool,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// `HEAD`: the response carries the headers of a `GET` response but no body.
    pub head_only: bool,
    /// `Expect: 100-continue` with a body to come: the client waits for `100 Continue`.
    pub expect_continue: bool,
    /// How the request body that follows is framed.
    pub body: Body,
}

/// How a request body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body: the next request starts right after the head.
    None,
    /// `Content-Length: N` bytes.
    Length(u64),
    /// `Transfer-Encoding: ..., chunked`.
    Chunked,
}

/// Why a request is refused; the connection closes after the error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// `400 Bad Request`: not HTTP/1.x, or framing we cannot trust.
    BadRequest,
    /// `431 Request Header Fields Too Large`: over [`MAX_HEAD`] bytes or [`MAX_HEADERS`].
    TooLarge,
}

/// The outcome of reading the bytes received so far as a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole head.
    Complete(Head),
    /// Not all of it yet (and, so far, not over the limits).
    Partial,
    /// Refused.
    Invalid(Reject),
}

/// Read `input` as the start of one request.
pub fn parse_head(input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Parsed::Invalid(Reject::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid(Reject::TooLarge),
        Err(_) => return Parsed::Invalid(Reject::BadRequest),
    };
    if len > MAX_HEAD {
        return Parsed::Invalid(Reject::TooLarge);
    }
    match decide(&request, len) {
        Ok(head) => Parsed::Complete(head),
        Err(reject) => Parsed::Invalid(reject),
    }
}

/// The rules, applied to a syntactically valid head.
fn decide(request: &httparse::Request<'_, '_>, len: usize) -> Result<Head, Reject> {
    let http10 = request.version == Some(0);
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut expect_continue = false;
    for header in request.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value).ok_or(Reject::BadRequest)?;
            // Repeated Content-Length headers must agree (RFC 9112 §6.3 item 5).
            if length.is_some_and(|m| m != n) {
                return Err(Reject::BadRequest);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Only the last coding matters for framing; it is read across repeated headers.
            if let Some(last) = tokens(value).last() {
                chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = trim(value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; HTTP/1.0 may have none.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Reject::BadRequest);
    }
    let body = match (transfer_encoding, length) {
        // Both framings at once is the classic smuggling vector: refuse (§6.1 allows it).
        (true, Some(_)) => return Err(Reject::BadRequest),
        // HTTP/1.0 has no chunked coding, and a request whose final coding is not chunked
        // has no determinable length (§6.3 items 3 and 4).
        (true, None) if http10 || !chunked_last => return Err(Reject::BadRequest),
        (true, None) => Body::Chunked,
        (false, Some(0) | None) => Body::None,
        (false, Some(n)) => Body::Length(n),
    };
    let keep_alive = if http10 {
        keep_alive_token && !close
    } else {
        !close
    };
    Ok(Head {
        len,
        http10,
        keep_alive,
        head_only: request.method == Some("HEAD"),
        // A 1.0 client does not wait for 100 (RFC 9110 §10.1.1), nor does one with no body.
        expect_continue: expect_continue && !http10 && body != Body::None,
        body,
    })
}

/// The comma-separated tokens of a list header, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// A Content-Length value: ASCII digits only (no sign, no list), at most 19 of them.
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = trim(value);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()) {
            Parsed::Complete(h) => h,
            other => panic!("{text:?}: expected a complete head, got {other:?}"),
        }
    }

    fn rejected(text: &str) -> Reject {
        match parse_head(text.as_bytes()) {
            Parsed::Invalid(r) => r,
            other => panic!("{text:?}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_keeps_the_connection_open() {
        let text = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let h = head(text);
        assert_eq!(h.len, text.len());
        assert!(h.keep_alive && !h.http10 && !h.head_only && !h.expect_continue);
        assert_eq!(h.body, Body::None);
    }

    #[test]
    fn the_head_ends_at_the_blank_line_even_with_more_bytes_after_it() {
        let h = head("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n");
        assert_eq!(h.len, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n".len());
    }

    #[test]
    fn connection_close_and_http10_defaults() {
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            !head("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, CLOSE\r\n\r\n").keep_alive
        );
        let h10 = head("GET / HTTP/1.0\r\n\r\n");
        assert!(h10.http10 && !h10.keep_alive, "HTTP/1.0 closes by default");
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunked() {
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(h.body, Body::Length(5));
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.body, Body::None);
        let h =
            head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(
            h.body,
            Body::Length(7),
            "repeated equal lengths are one length"
        );
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.body, Body::Chunked);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for text in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(rejected(text), Reject::BadRequest, "{text:?}");
        }
    }

    #[test]
    fn host_is_required_once_in_http11() {
        assert_eq!(rejected("GET / HTTP/1.1\r\n\r\n"), Reject::BadRequest);
        assert_eq!(
            rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Reject::BadRequest
        );
    }

    #[test]
    fn malformed_heads_are_bad_requests() {
        for text in [
            "hello\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost x\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03",
        ] {
            assert_eq!(rejected(text), Reject::BadRequest, "{text:?}");
        }
    }

    #[test]
    fn partial_heads_wait_within_the_limit_and_are_refused_past_it() {
        assert_eq!(parse_head(b""), Parsed::Partial);
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse_head(&big), Parsed::Partial);
        big.push(b'a');
        assert_eq!(parse_head(&big), Parsed::Invalid(Reject::TooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&big), Parsed::Invalid(Reject::TooLarge));
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS {
            text.push_str(&format!("X-{i}: y\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(rejected(&text), Reject::TooLarge);
    }

    #[test]
    fn head_and_expect_continue() {
        assert!(head("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").head_only);
        let h =
            head("PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(h.expect_continue);
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue, "nothing to wait for without a body");
    }
}
