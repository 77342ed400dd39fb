//! hello's request-head parser (plugins/hello/src/request.rs, included as it is).
//!
//! Properties: no panic; a complete head lies within the input and within `MAX_HEAD`, parses
//! the same from exactly its bytes, and is not complete one byte earlier; a partial head is
//! never longer than `MAX_HEAD`.

#![no_main]

#[path = "../../../plugins/hello/src/request.rs"]
#[allow(dead_code)]
mod request;

use libfuzzer_sys::fuzz_target;
use request::{parse_head, Parsed, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Parsed::Complete(head) => {
            assert!(head.len <= data.len() && head.len <= MAX_HEAD, "{head:?}");
            assert_eq!(parse_head(&data[..head.len]), Parsed::Complete(head));
            assert!(
                !matches!(parse_head(&data[..head.len - 1]), Parsed::Complete(_)),
                "a head ends at its blank line: {head:?}"
            );
        }
        Parsed::Partial => assert!(data.len() <= MAX_HEAD),
        Parsed::Invalid(_) => {}
    }
});
