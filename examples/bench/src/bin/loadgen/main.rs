//! `loadgen`: the load generator for sockhost benchmarks (loopback only).
//!
//! It exists so sockhost and the `echo-baseline` anchor are driven by the same client,
//! with the same verification and the same latency accounting. It runs on a
//! **current_thread** tokio runtime, i.e. on one core, so a benchmark can pin the server
//! and the client to different cores with `taskset`.
//!
//! Modes (first word, or `--mode`):
//! - `echo`: N connections, K messages in flight each; every echoed byte is verified.
//! - `connect`: connect / one round trip / close, repeatedly, from N parallel loops.
//! - `idle`: open N connections, print `opened N`, hold them, close: server memory per
//!   idle connection.
//! - `udp`: N sockets, K datagrams in flight each; every echoed datagram is verified and
//!   losses are counted.
//! - `fanout`: N subscribers on one channel, one publisher; deliveries per second, every
//!   delivered byte verified (chat's line protocol or redis pub/sub).
//!
//! `echo` and `connect` run over TLS with `--tls` (see `stream.rs` for the client's TLS
//! settings), and `connect --http` does an HTTP/1.1 GET instead of an echo.
//!
//! Every run is bounded in time. The exit code is non-zero when any error or mismatch
//! happened (and, in `idle`, when not every connection opened or the server closed some).

mod args;
mod connect;
mod echo;
mod fanout;
mod histogram;
mod idle;
mod stream;
mod udp;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use args::Flags;

const USAGE: &str = "\
usage: loadgen MODE --addr HOST:PORT [flags]     (loopback addresses only)

  echo     --connections N (1)  --size BYTES (64)  --depth K (1)
           --duration SECS (5)  --warmup SECS (1)  [--tls ...]  [--json]
           Each connection keeps K messages in flight and verifies every echoed byte.
  connect  --concurrency N (1)  --size BYTES (16)  --duration SECS (5)
           --warmup SECS (0)  [--http]  [--tls ...]  [--json]
           Each loop connects, does one echo round trip (--http: one GET / and its whole
           200 response), closes, repeats. With TLS: a full handshake per connection.
  idle     --connections N (1000)  --hold SECS (10)  --probe echo|http|none (echo)
           --parallel N (64)  --rate CONNS_PER_SEC (0 = unpaced)  --open-timeout SECS (120)
           [--tls ...]
           Opens N connections (each proven accepted by the probe: a 1-byte echo round
           trip, or one HTTP GET; --no-probe = --probe none), prints `opened N`, holds
           them SECS, closes them, prints `closed N ...`.
  udp      --sockets N (1)  --size BYTES (64, 8..65507)  --depth K (1)
           --duration SECS (5)  --warmup SECS (1)  [--json]
           Each socket keeps K datagrams in flight and verifies every echoed datagram;
           datagrams lost (or back too late) are counted, not failed.
  fanout   --subscribers N (1000)  --protocol chat|redis (chat; redis for --addr redis://)
           --messages M (2000)
           --size BYTES (64)  --window K (64)  --deadline SECS (30)  [--json]
           N connections subscribe to one channel; one publisher sends M messages of
           BYTES payload, at most K ahead of its replies and of the slowest subscriber;
           prints deliveries/s (M x N deliveries, each byte verified) from the first
           publish to the last delivery. Needs N + 1 descriptors (ulimit -n).

TLS (echo, connect, idle): --tls, or --tls-ca FILE to also verify the server's certificate
against FILE (PEM); --server-name NAME (localhost); --resume to resume sessions from the
tickets the server sends (connect then reports how many handshakes resumed; without it
every handshake is a full one). X25519 key exchange; without --tls-ca the server's
signature is not checked, so that the client's cost per handshake stays below the
server's.

The exit code is 1 if anything failed (error, mismatch, connection not opened or closed
early by the server), 2 on a usage error.";

/// The measurement timeline shared by every connection of a run.
#[derive(Clone, Copy)]
pub struct Times {
    /// When the warm-up ends and counting starts.
    pub warm_end: Instant,
    /// When counting stops and no new request is sent.
    pub end: Instant,
}

impl Times {
    /// A timeline starting now.
    pub fn new(warmup: Duration, duration: Duration) -> Times {
        let warm_end = Instant::now() + warmup;
        Times {
            warm_end,
            end: warm_end + duration,
        }
    }

    /// Whether a completion at `t` falls in the measured window.
    pub fn counts(&self, t: Instant) -> bool {
        t >= self.warm_end && t <= self.end
    }
}

/// Fill `out` (appended to) with message number `seq` of stream `stream`: a byte pattern
/// that differs from one message to the next and from one stream to another, whose first
/// eight bytes carry the message number mixed with the stream number, so a lost, duplicated, reordered or crossed
/// message is a mismatch.
pub fn fill_message(out: &mut Vec<u8>, stream: u64, seq: u64, size: usize) {
    let start = out.len();
    let base = (seq as u8)
        .wrapping_mul(7)
        .wrapping_add((stream as u8).wrapping_mul(13));
    out.extend((0..size).map(|j| base.wrapping_add(j as u8)));
    let tag = seq
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .to_le_bytes();
    let n = size.min(tag.len());
    out[start..start + n].copy_from_slice(&tag[..n]);
}

/// CPU time this process's main thread has run, from `/proc/self/schedstat` (Linux).
///
/// The runtime is single-threaded, so this is the load generator's own CPU use; it tells
/// whether the client, rather than the server, was the bottleneck.
pub fn cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Measures the fraction of one core used over a run's measured window.
pub async fn cpu_over(times: Times) -> Option<f64> {
    tokio::time::sleep_until(times.warm_end.into()).await;
    let (t0, c0) = (Instant::now(), cpu_time()?);
    tokio::time::sleep_until(times.end.into()).await;
    let (t1, c1) = (Instant::now(), cpu_time()?);
    Some((c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64())
}

/// Errors seen by a run: a count plus the first few distinct messages, for stderr.
#[derive(Default)]
pub struct Errors {
    /// How many errors.
    pub count: u64,
    /// The first distinct messages.
    pub samples: Vec<String>,
}

impl Errors {
    /// Count one error.
    pub fn add(&mut self, msg: impl Into<String>) {
        self.count += 1;
        self.note(msg);
    }

    /// Keep a message for the report without counting it as an error (e.g. a mismatch,
    /// which is counted separately).
    pub fn note(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        if self.samples.len() < 5 && !self.samples.contains(&msg) {
            self.samples.push(msg);
        }
    }

    /// Merge another set.
    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for m in other.samples {
            self.note(m);
        }
    }

    /// Print the samples to stderr.
    pub fn report(&self, mode: &str) {
        for m in &self.samples {
            eprintln!("loadgen {mode}: {m}");
        }
    }
}

/// Describe an I/O error, with a hint for running out of descriptors.
pub fn describe(what: &str, e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(24) {
        format!("{what}: {e} (raise the fd limit: ulimit -n)")
    } else {
        format!("{what}: {e}")
    }
}

/// A JSON number, or `null` for a missing/non-finite value.
pub fn json_num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "null".into(),
    }
}

/// A JSON string (`null` for none); the values are our own ASCII, so `"` and `\` are the
/// only characters to escape.
pub fn json_str(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        None => "null".into(),
    }
}

/// Print a line to stdout and flush it (scripts wait for these lines).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let (mode, flags) = match Flags::parse(std::env::args().skip(1)) {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let mut flags = flags;
    if flags.switch("help") || mode.is_none() {
        println!("{USAGE}");
        return if mode.is_none() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let result = match mode.as_deref() {
        Some("echo") => echo::Config::from_flags(flags).map(|c| runtime.block_on(echo::run(c))),
        Some("connect") => {
            connect::Config::from_flags(flags).map(|c| runtime.block_on(connect::run(c)))
        }
        Some("idle") => idle::Config::from_flags(flags).map(|c| runtime.block_on(idle::run(c))),
        Some("udp") => udp::Config::from_flags(flags).map(|c| runtime.block_on(udp::run(c))),
        Some("fanout") => {
            fanout::Config::from_flags(flags).map(|c| runtime.block_on(fanout::run(c)))
        }
        Some(other) => Err(format!(
            "unknown mode {other:?} (echo, connect, idle, udp or fanout)"
        )),
        None => unreachable!(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => usage_error(&e),
    }
}

fn usage_error(e: &str) -> ExitCode {
    eprintln!("loadgen: {e}\n\n{USAGE}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_differ_by_sequence_and_stream() {
        let msg = |stream, seq, size| {
            let mut v = Vec::new();
            fill_message(&mut v, stream, seq, size);
            v
        };
        for size in [1, 3, 8, 64, 1000] {
            assert_eq!(msg(0, 0, size).len(), size);
            assert_ne!(msg(0, 0, size), msg(0, 1, size), "size {size}");
            assert_ne!(msg(0, 5, size), msg(1, 5, size), "size {size}");
        }
    }

    #[test]
    fn json_strings_are_quoted_and_escaped() {
        assert_eq!(json_str(None), "null");
        assert_eq!(json_str(Some("TLSv1_3/X25519")), r#""TLSv1_3/X25519""#);
        assert_eq!(json_str(Some(r#"a"b\c"#)), r#""a\"b\\c""#);
    }
}
