//! The hello plugin: a minimal HTTP/1.1 server that answers every request with
//! `200 OK` and `Hello, world!\n`. It exists to benchmark sockhost against what users would
//! otherwise deploy (nginx's `return 200`), so it does what a real server must and nothing
//! more:
//!
//! - **keep-alive** (HTTP/1.1 by default, HTTP/1.0 with `Connection: keep-alive`) and
//!   `Connection: close` honoured: the connection closes after that response;
//! - **pipelining**: every complete request in one read is answered, in order, in one
//!   output; a request split over reads waits in a per-connection buffer, bounded by
//!   [`MAX_HEAD`], that exists only while a request is incomplete;
//! - **bodies** framed by `Content-Length` or `Transfer-Encoding: chunked` are skipped
//!   without being buffered (`Expect: 100-continue` gets its `100 Continue`);
//! - a malformed request gets `400 Bad Request`, a head over [`MAX_HEAD`] bytes or
//!   [`request::MAX_HEADERS`] headers `431`, and the connection closes.
//!
//! The steady state (whole requests, no body) allocates nothing: requests are parsed in
//! place with `httparse`, and responses are prebuilt byte strings plus a `Date` value
//! formatted once per second.
//!
//! Built as `libhello.so`: `sockhost --plugin target/release/libhello.so --bind :8080`.

mod date;
mod request;
mod response;

use plugin_api::{ConnInfo, Consumer, Options, Output, PluginInfo, Protocol, Transports};

use crate::date::HttpDate;
pub use crate::request::MAX_HEAD;
use crate::request::{parse_head, Body, Parsed, Reject};

/// The protocol: stateless; each connection's state is its [`HelloConsumer`].
pub struct Hello;

impl Protocol for Hello {
    type Consumer = HelloConsumer;

    const INFO: PluginInfo = PluginInfo::new(
        "hello",
        env!("CARGO_PKG_VERSION"),
        "HTTP/1.1: answers every request with 200 OK \"Hello, world!\"",
    )
    .transports(Transports::TCP);

    fn new(_options: &Options) -> Result<Self, String> {
        Ok(Hello)
    }

    fn consumer(&self, _info: &ConnInfo) -> HelloConsumer {
        HelloConsumer {
            state: State::Head,
            partial: Vec::new(),
        }
    }
}

/// One connection: where it is in the request stream, and the start of an element (a
/// request head, a chunk-size line, a trailer line) that has not fully arrived yet.
pub struct HelloConsumer {
    state: State,
    /// Empty (no allocation) except while an element is incomplete; never over
    /// [`MAX_HEAD`] + 1 bytes.
    partial: Vec<u8>,
}

/// What the next input bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A request head (leading blank lines allowed).
    Head,
    /// This many bytes of a `Content-Length` body, skipped.
    Body(u64),
    /// A chunk-size line (`1a;ext=x\r\n`).
    ChunkSize,
    /// This many bytes of chunk data, skipped.
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    /// Trailer lines up to the blank line that ends the chunked body.
    Trailer,
    /// The connection is closing after a response: input is ignored.
    Done,
}

/// What one step did with the input.
enum Step {
    /// Used this many bytes (at least one).
    Used(usize),
    /// The input holds only the start of an element: wait for more.
    NeedMore,
    /// Refuse, answer with this error and close.
    Fail(Reject),
}

impl HelloConsumer {
    /// Handle as much of `input` as forms whole elements; returns the incomplete tail.
    fn feed<'a>(&mut self, mut input: &'a [u8], out: &mut Output, date: &HttpDate) -> &'a [u8] {
        while !input.is_empty() {
            match self.step(input, out, date) {
                Step::Used(n) => input = &input[n..],
                Step::NeedMore => return input,
                Step::Fail(reject) => {
                    self.fail(reject, out, date);
                    return &[];
                }
            }
        }
        input
    }

    /// One element (or one run of skipped body bytes) from the front of `input`.
    fn step(&mut self, input: &[u8], out: &mut Output, date: &HttpDate) -> Step {
        match self.state {
            State::Head => match parse_head(input) {
                Parsed::Complete(head) => {
                    response::ok(out, &head, date);
                    self.state = if !head.keep_alive {
                        out.close();
                        State::Done
                    } else {
                        match head.body {
                            Body::None => State::Head,
                            Body::Length(n) => State::Body(n),
                            Body::Chunked => State::ChunkSize,
                        }
                    };
                    Step::Used(head.len)
                }
                Parsed::Partial => Step::NeedMore,
                Parsed::Invalid(reject) => Step::Fail(reject),
            },
            State::Body(left) | State::ChunkData(left) => {
                let n = left.min(input.len() as u64);
                let left = left - n;
                self.state = match self.state {
                    State::Body(_) if left == 0 => State::Head,
                    State::Body(_) => State::Body(left),
                    _ if left == 0 => State::ChunkEnd,
                    _ => State::ChunkData(left),
                };
                Step::Used(n as usize)
            }
            State::ChunkSize => match httparse::parse_chunk_size(input) {
                Ok(httparse::Status::Complete((used, 0))) => {
                    self.state = State::Trailer;
                    Step::Used(used)
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    self.state = State::ChunkData(size);
                    Step::Used(used)
                }
                Ok(httparse::Status::Partial) => line_partial(input),
                Err(_) => Step::Fail(Reject::BadRequest),
            },
            State::ChunkEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = State::ChunkSize;
                    Step::Used(2)
                }
                [b'\r'] => Step::NeedMore,
                _ => Step::Fail(Reject::BadRequest),
            },
            State::Trailer => match input.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    // A blank line ends the body; any other line is a trailer field.
                    if matches!(&input[..end], b"" | b"\r") {
                        self.state = State::Head;
                    }
                    Step::Used(end + 1)
                }
                None => line_partial(input),
            },
            State::Done => Step::Used(input.len()),
        }
    }

    /// Answer with the error and close; later input is ignored.
    fn fail(&mut self, reject: Reject, out: &mut Output, date: &HttpDate) {
        response::error(out, reject, date);
        out.close();
        self.state = State::Done;
        self.partial = Vec::new();
    }

    /// Keep the incomplete `tail` for the next read, or refuse it if it is already too long.
    fn keep(&mut self, tail: &[u8], out: &mut Output, date: &HttpDate) {
        if tail.len() > MAX_HEAD {
            let reject = match self.state {
                State::Head => Reject::TooLarge,
                _ => Reject::BadRequest,
            };
            self.fail(reject, out, date);
        } else {
            self.partial.extend_from_slice(tail);
        }
    }
}

/// A chunk-size or trailer line not yet ended: wait, within the bound.
fn line_partial(input: &[u8]) -> Step {
    if input.len() > MAX_HEAD {
        Step::Fail(Reject::BadRequest)
    } else {
        Step::NeedMore
    }
}

impl Consumer for HelloConsumer {
    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        if self.state == State::Done {
            return;
        }
        let date = date::now();
        if self.partial.is_empty() {
            // The steady state: parse in place, no copy.
            let tail = self.feed(data, out, &date);
            if !tail.is_empty() {
                self.keep(tail, out, &date);
            }
            return;
        }
        // An element started in an earlier read. Append at most one byte over the bound, so
        // that the buffer never grows past it, and finish that element from the buffer.
        let mut partial = std::mem::take(&mut self.partial);
        let had = partial.len();
        let appended = &data[..data.len().min(MAX_HEAD + 1 - had)];
        partial.extend_from_slice(appended);
        // Every element ends with a newline: none arrived, so it is still incomplete (and
        // httparse need not rescan the head from its start for every byte of a slow client).
        let step = if !appended.contains(&b'\n') && partial.len() <= MAX_HEAD {
            Step::NeedMore
        } else {
            self.step(&partial, out, &date)
        };
        match step {
            Step::Used(n) => {
                // The element ends in the new data: continue from there, in place. The buffer
                // is freed, so an idle connection holds none.
                debug_assert!(n > had, "the kept tail was an incomplete element");
                drop(partial);
                let tail = self.feed(&data[n - had..], out, &date);
                if !tail.is_empty() && self.state != State::Done {
                    self.keep(tail, out, &date);
                }
            }
            Step::NeedMore if partial.len() > MAX_HEAD => {
                let reject = match self.state {
                    State::Head => Reject::TooLarge,
                    _ => Reject::BadRequest,
                };
                self.fail(reject, out, &date);
            }
            Step::NeedMore => self.partial = partial,
            Step::Fail(reject) => self.fail(reject, out, &date),
        }
    }
    // eof_received: the default closes once the responses are sent. A request cut short by
    // the end of stream gets no answer, as from nginx.
}

plugin_api::export_plugin!(Hello);

#[cfg(test)]
mod tests;
