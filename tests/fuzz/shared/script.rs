//! The language the boundary fuzz plugin speaks, shared (by `#[path]`) between the plugin,
//! which runs it against the real [`plugin_api::Output`] on its side of the ABI, and the
//! `plugin_boundary` target, which runs it against a model and compares what the host sees.
//!
//! A `data_received` chunk is a program: each byte (mod 8) is one operation, some followed
//! by operands. Every byte string is a valid program.

/// One operation on the consumer's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `out.write(bytes)`: a length byte, then up to that many bytes of the program.
    Write(Vec<u8>),
    /// `out.write` of `kib` KiB of `fill` (large writes grow the buffer across the ABI).
    Big { kib: usize, fill: u8 },
    /// `out.close()`.
    Close,
    /// `out.shutdown_write()`.
    Shutdown,
    /// Panic with [`PANIC_MESSAGE`] (the rest of the program is not run).
    Panic,
    /// Check the plugin-side accessors (`len`, `is_empty`, `is_closing`) against what this
    /// callback did; a mismatch panics with a different message.
    Check,
    /// Write the connection's details as [`describe`] formats them.
    Describe,
    /// Panic in `connection_lost`, later.
    PanicWhenLost,
}

/// What an [`Op::Panic`] panics with.
pub const PANIC_MESSAGE: &str = "fuzz plugin: asked to panic\n(second line)";

/// The operations of one program, in order (stopping at a panic).
pub fn parse(mut program: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    while let Some((&code, rest)) = program.split_first() {
        program = rest;
        let op = match code % 8 {
            0 => {
                let (&len, rest) = program.split_first().unwrap_or((&0, &[]));
                let len = (len as usize).min(rest.len());
                let bytes = rest[..len].to_vec();
                program = &rest[len..];
                Op::Write(bytes)
            }
            1 => Op::Close,
            2 => Op::Shutdown,
            3 => Op::Panic,
            4 => {
                let (&size, rest) = program.split_first().unwrap_or((&0, &[]));
                program = rest;
                Op::Big {
                    kib: size as usize % 128,
                    fill: size,
                }
            }
            5 => Op::Check,
            6 => Op::Describe,
            _ => Op::PanicWhenLost,
        };
        let stop = op == Op::Panic;
        ops.push(op);
        if stop {
            break;
        }
    }
    ops
}

/// The connection details, as the plugin reports them ([`Op::Describe`]).
pub fn describe(info: &plugin_api::ConnInfo) -> Vec<u8> {
    // Display leaves out an IPv6 address's flow label: spell it out.
    let flow = |a: &std::net::SocketAddr| match a {
        std::net::SocketAddr::V6(v6) => v6.flowinfo(),
        std::net::SocketAddr::V4(_) => 0,
    };
    let mut d = format!(
        "{:?} {} {} (flow {}) {} (flow {}) sni={:?} subject={:?} alpn=",
        info.id,
        info.transport,
        info.peer,
        flow(&info.peer),
        info.local,
        flow(&info.local),
        info.sni,
        info.peer_cert_subject
    )
    .into_bytes();
    match &info.alpn {
        Some(a) => d.extend_from_slice(a),
        None => d.extend_from_slice(b"-"),
    }
    d
}
