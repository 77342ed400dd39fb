//! The hello plugin as a whole (request heads, bodies by Content-Length or chunked, trailers,
//! pipelining), driven by plugin_api's sans-IO harness: the bytes a client sends must get
//! the same answer however TCP cuts them into reads (`Date` values aside).
//!
//! One difference is by design, so the input is cut after its last newline: an element
//! (head, chunk-size or trailer line) that started in an earlier read is parsed again only
//! once a newline arrives (or it outgrows `MAX_HEAD`), so that a client sending one byte at
//! a time cannot make every byte rescan the whole head. Invalid bytes in an unfinished
//! element are therefore answered (`400`) when its line ends, not as they arrive; and a
//! newline-free element over `MAX_HEAD` gets `431` rather than `400`. Fuzz inputs are far
//! below `MAX_HEAD`, so only the first case needs the cut.

#![no_main]

use hello::Hello;
use libfuzzer_sys::fuzz_target;
use plugin_api::testing::Harness;

/// Every response, with the `Date` header's value blanked (it changes each second), and
/// whether the connection was closed.
fn serve(reads: &[&[u8]]) -> (Vec<u8>, bool) {
    let harness = Harness::<Hello>::new();
    let mut conn = harness.connect().expect("consumer");
    let mut out = Vec::new();
    for read in reads {
        conn.send(read).expect("hello never panics");
        out.extend(conn.take_output());
    }
    let mut text = Vec::with_capacity(out.len());
    let mut rest = &out[..];
    while let Some(at) = rest.windows(6).position(|w| w == b"Date: ") {
        text.extend_from_slice(&rest[..at + 6]);
        rest = &rest[at + 6..];
        let end = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
        rest = &rest[end..];
    }
    text.extend_from_slice(rest);
    (text, conn.is_open())
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let complete_lines = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let data = &data[..complete_lines];
    let whole = serve(&[data]);
    let step = 1 + seed as usize % 32;
    let pieces: Vec<&[u8]> = data.chunks(step).collect();
    let split = serve(&pieces);
    assert!(
        whole == split,
        "reads of {step} bytes change the answer:\nwhole: {:?}\nsplit: {:?}",
        String::from_utf8_lossy(&whole.0),
        String::from_utf8_lossy(&split.0)
    );
});
