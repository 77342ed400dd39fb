//! The PROXY protocol header parser (host/src/proxy_protocol.rs, included as it is), on
//! whole inputs and as `read_header` meets them: split over reads at arbitrary points.
//!
//! Properties: no panic; a header's length is within the input and the same header parses
//! from exactly its bytes; `Incomplete` only below `MAX_HEADER`; reading from a stream
//! that delivers the input in pieces gives the same verdict as parsing it whole, and the
//! bytes after the header come back unchanged.

#![no_main]

#[path = "../../../host/src/proxy_protocol.rs"]
#[allow(dead_code)]
mod proxy_protocol;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use proxy_protocol::{parse, read_header, Parsed, MAX_HEADER};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// A stream that returns `data` in the pieces `cuts` makes, then end of stream.
struct Pieces {
    data: Vec<u8>,
    cuts: Vec<usize>,
    at: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let end = this.cuts.iter().copied().find(|&c| c > this.at).unwrap_or(this.data.len());
        let n = (end - this.at).min(buf.remaining());
        buf.put_slice(&this.data[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
}

fuzz_target!(|input: &[u8]| {
    // First byte: how to cut the rest into reads.
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = parse(data);
    match &whole {
        Parsed::Header { len, proxied } => {
            assert!(*len > 0 && *len <= data.len(), "header length {len} of {}", data.len());
            assert_eq!(
                parse(&data[..*len]),
                Parsed::Header { len: *len, proxied: *proxied },
                "the header parses from exactly its bytes"
            );
        }
        Parsed::Incomplete => assert!(data.len() < MAX_HEADER),
        Parsed::Invalid(_) => {}
    }

    let step = 1 + seed as usize % 64;
    let cuts: Vec<usize> = (1..).map(|i| i * step).take_while(|&c| c < data.len()).collect();
    let stream = Pieces { data: data.to_vec(), cuts, at: 0 };
    RUNTIME.with(|rt| {
        rt.block_on(async {
            match (read_header(stream).await, &whole) {
                (Ok((proxied, mut rest)), Parsed::Header { len, proxied: p }) => {
                    assert_eq!(proxied, *p, "same header read in pieces");
                    let mut after = Vec::new();
                    rest.read_to_end(&mut after).await.unwrap();
                    assert!(after == data[*len..], "the bytes after the header come back");
                }
                (Err(_), Parsed::Invalid(_) | Parsed::Incomplete) => {}
                (got, _) => panic!(
                    "read in pieces of {step}: {:?}, parsed whole: {whole:?}",
                    got.map(|(p, _)| p)
                ),
            }
        })
    });
});
