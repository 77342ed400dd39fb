//! The line framing kv, chat and the template use (`plugin_api::framing::Lines`, the shipped
//! code), against a model: split
//! the whole input at `\n`, drop one `\r` before it, and refuse the first line longer than
//! the limit — as soon as it is known to be too long, however the input is cut into reads.

#![no_main]

use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;
use plugin_api::framing::{Lines, TooLong};

/// What the framing should produce: the complete lines before any too-long one, then
/// either `Err` (a line, or the unfinished tail, is too long) or the unfinished tail.
fn model(data: &[u8], max: usize) -> (Vec<Vec<u8>>, Result<Option<Vec<u8>>, TooLong>) {
    let mut lines = Vec::new();
    let mut parts = data.split(|&b| b == b'\n').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            // The unfinished tail: it may end in a `\r` that belongs to the line ending.
            let fits = part.len() <= max || (part.len() == max + 1 && part.last() == Some(&b'\r'));
            if !fits {
                return (lines, Err(TooLong));
            }
            let tail = part.strip_suffix(b"\r").unwrap_or(part);
            return (lines, Ok((!tail.is_empty()).then(|| tail.to_vec())));
        }
        let line = part.strip_suffix(b"\r").unwrap_or(part);
        if line.len() > max {
            return (lines, Err(TooLong));
        }
        lines.push(line.to_vec());
    }
    unreachable!("split yields at least one part")
}

fuzz_target!(|input: &[u8]| {
    let [a, b, data @ ..] = input else {
        return;
    };
    let max = 1 + *a as usize % 64;
    let step = 1 + *b as usize % 80;
    let mut framing = Lines::new(max);
    let mut got = Vec::new();
    let mut result = Ok(());
    for read in data.chunks(step) {
        result = framing.feed(read, |line| {
            got.push(line.to_vec());
            ControlFlow::Continue(())
        });
        if result.is_err() {
            break;
        }
    }
    let (want, end) = model(data, max);
    assert_eq!(got, want, "lines (max {max}, reads of {step})");
    match end {
        Err(TooLong) => assert_eq!(result, Err(TooLong), "too long (max {max}, reads of {step})"),
        Ok(tail) => {
            assert_eq!(result, Ok(()), "max {max}, reads of {step}");
            assert_eq!(framing.take_partial(), tail, "the unfinished line");
        }
    }
});
