//! What sockhost prints on stdout — the `listening on` and `metrics on` lines (SPEC.md)
//! that scripts and tests wait for, and generated text — always flushed at once.

use std::io::Write;

use crate::bind::Bound;
use crate::error::HostError;

/// Print the `listening on` lines and flush them, once every socket is bound.
pub fn announce(bound: &[Bound]) -> Result<(), HostError> {
    print_flushed(bound.iter().map(Bound::listening_line))
}

/// Print the `metrics on http://ADDR/metrics` line.
pub fn announce_metrics(addr: std::net::SocketAddr) -> Result<(), HostError> {
    print_flushed([format!("metrics on http://{addr}/metrics")])
}

/// Write bytes to stdout and flush them.
pub fn print_bytes(bytes: &[u8]) -> Result<(), HostError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| HostError::io("writing to stdout", e))
}

/// Print lines to stdout and flush them (scripts and tests wait for them).
pub fn print_flushed(lines: impl IntoIterator<Item = String>) -> Result<(), HostError> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}").map_err(|e| HostError::io("writing to stdout", e))?;
    }
    out.flush()
        .map_err(|e| HostError::io("writing to stdout", e))
}
