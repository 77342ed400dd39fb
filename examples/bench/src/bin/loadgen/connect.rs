//! `connect` mode: connection setup rate, the cost of accepting and tearing down a
//! connection (plugin consumer creation included) rather than of moving bytes.
//!
//! `--concurrency` loops each connect, send one small message, read and verify its echo,
//! and close, until the window ends. Completions inside the window are counted and their
//! connect-to-echo time recorded.
//!
//! With `--tls` each connection also does a full TLS handshake (no resumption) and ends
//! with a close_notify: the handshake rate. With `--tls --resume` each loop's connections
//! after its first resume a session from a ticket the server sent earlier; the output
//! counts the handshakes that did resume (`resumed`), so a server that sends no tickets,
//! or refuses them, shows as 0. With `--http` the exchange is one HTTP/1.1
//! `GET /` whose `200` response is read whole (by its Content-Length) instead of an echo,
//! so an HTTP server such as nginx can be measured the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::args::Flags;
use crate::histogram::Histogram;
use crate::stream::{self, Stream, Tls};
use crate::{cpu_over, describe, fill_message, json_num, json_str, say, Errors, Times};

/// The request of `--http`.
const HTTP_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Longest one connect + round trip may take before it counts as an error.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a `connect` run.
pub struct Config {
    addr: SocketAddr,
    concurrency: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
    tls: Option<Tls>,
    http: bool,
    json: bool,
}

impl Config {
    /// Take this mode's flags.
    pub fn from_flags(mut f: Flags) -> Result<Config, String> {
        let c = Config {
            addr: f.addr()?,
            concurrency: f.count("concurrency", 1)?,
            size: f.count("size", 16)?,
            duration: f.seconds("duration", 5.0, true)?,
            warmup: f.seconds("warmup", 0.0, false)?,
            tls: Tls::from_flags(&mut f)?,
            http: f.switch("http"),
            json: f.switch("json"),
        };
        f.finish()?;
        Ok(c)
    }
}

/// What one loop measured.
#[derive(Default)]
struct Stats {
    conns: u64,
    /// Of `conns`, the TLS handshakes that resumed a session.
    resumed: u64,
    mismatches: u64,
    errors: Errors,
    hist: Histogram,
    /// What the first TLS connection negotiated.
    tls: Option<String>,
}

/// Run the mode; `true` when there was no error and no mismatch.
pub async fn run(cfg: Config) -> bool {
    let cfg = Arc::new(cfg);
    let times = Times::new(cfg.warmup, cfg.duration);
    let cpu = tokio::spawn(cpu_over(times));
    let loops: Vec<_> = (0..cfg.concurrency)
        .map(|id| {
            let cfg = cfg.clone();
            tokio::spawn(async move { one_loop(id as u64, &cfg, times).await })
        })
        .collect();
    let mut total = Stats::default();
    for handle in loops {
        let s = handle.await.expect("connect loop");
        total.conns += s.conns;
        total.resumed += s.resumed;
        total.mismatches += s.mismatches;
        total.errors.merge(s.errors);
        total.hist.merge(&s.hist);
        total.tls = total.tls.or(s.tls);
    }
    let cpu = cpu.await.ok().flatten();

    let secs = cfg.duration.as_secs_f64();
    let rate = total.conns as f64 / secs;
    let (p50, p99) = (total.hist.quantile_us(0.50), total.hist.quantile_us(0.99));
    total.errors.report("connect");
    if cfg.json {
        say(&format!(
            "{{\"mode\":\"connect\",\"addr\":\"{}\",\"concurrency\":{},\"size\":{},\"http\":{},\
\"duration_s\":{:.3},\"conns\":{},\"resumed\":{},\"conns_per_sec\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1},\
\"errors\":{},\"mismatches\":{},\"client_cpu\":{},\"tls\":{}}}",
            cfg.addr,
            cfg.concurrency,
            cfg.size,
            cfg.http,
            secs,
            total.conns,
            total.resumed,
            rate,
            p50,
            p99,
            total.errors.count,
            total.mismatches,
            json_num(cpu, 3),
            json_str(total.tls.as_deref())
        ));
    } else {
        say(&format!(
            "connect concurrency={} {} duration={:.1}s conns/s={:.0} p50_us={:.1} \
p99_us={:.1} resumed={} errors={} mismatches={} client_cpu={} tls={}",
            cfg.concurrency,
            if cfg.http {
                "http".to_string()
            } else {
                format!("size={}", cfg.size)
            },
            secs,
            rate,
            p50,
            p99,
            total.resumed,
            total.errors.count,
            total.mismatches,
            cpu.map_or("n/a".into(), |c| format!("{:.0}%", c * 100.0)),
            total.tls.as_deref().unwrap_or("off"),
        ));
    }
    total.errors.count == 0 && total.mismatches == 0
}

/// Outcome of one connect / echo / close cycle.
enum Cycle {
    /// Done; over TLS, what was negotiated and whether the handshake resumed a session.
    Done {
        tls: Option<String>,
        resumed: bool,
    },
    Mismatch(String),
}

async fn one_loop(id: u64, cfg: &Config, times: Times) -> Stats {
    let mut stats = Stats::default();
    let mut msg = Vec::with_capacity(cfg.size);
    let mut echo = vec![0u8; cfg.size];
    let mut seq = 0u64;
    let tls = cfg.tls.as_ref().map(Tls::for_one_loop);
    while Instant::now() < times.end {
        msg.clear();
        fill_message(&mut msg, id, seq, cfg.size);
        seq += 1;
        let t0 = Instant::now();
        let outcome =
            tokio::time::timeout(CYCLE_TIMEOUT, cycle(cfg, tls.as_ref(), &msg, &mut echo)).await;
        let t1 = Instant::now();
        match outcome {
            Ok(Ok(Cycle::Done { tls, resumed })) => {
                if stats.tls.is_none() {
                    stats.tls = tls;
                }
                if times.counts(t1) {
                    stats.conns += 1;
                    stats.resumed += u64::from(resumed);
                    stats.hist.record(t1 - t0);
                }
            }
            Ok(Ok(Cycle::Mismatch(m))) => {
                stats.mismatches += 1;
                stats.errors.note(m);
            }
            Ok(Err(e)) => {
                stats.errors.add(e);
                // Don't spin on a failure that repeats at once (e.g. out of ports).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => stats.errors.add("connect + echo round trip timed out"),
        }
    }
    stats
}

async fn cycle(
    cfg: &Config,
    tls: Option<&Tls>,
    msg: &[u8],
    echo: &mut Vec<u8>,
) -> Result<Cycle, String> {
    let mut stream = stream::open(cfg.addr, tls).await?;
    let outcome = if cfg.http {
        http_get(&mut stream, echo).await?
    } else {
        echo_once(&mut stream, msg, echo).await?
    };
    let tls = stream.tls_summary();
    let resumed = stream.resumed();
    if let Stream::Tls(_) = stream {
        // close_notify, as a well-behaved TLS client ends a connection.
        let _ = stream.shutdown().await;
    }
    Ok(match outcome {
        None => Cycle::Done { tls, resumed },
        Some(mismatch) => Cycle::Mismatch(mismatch),
    })
}

/// One echo round trip; `Some(description)` on a mismatch.
async fn echo_once(
    stream: &mut Stream,
    msg: &[u8],
    echo: &mut [u8],
) -> Result<Option<String>, String> {
    stream
        .write_all(msg)
        .await
        .map_err(|e| describe("write", &e))?;
    stream.flush().await.map_err(|e| describe("flush", &e))?;
    let echo = &mut echo[..msg.len()];
    stream
        .read_exact(echo)
        .await
        .map_err(|e| describe("read", &e))?;
    Ok((echo != msg).then(|| {
        format!(
            "connect mode: echo of {} bytes differs from what was sent",
            msg.len()
        )
    }))
}

/// One `GET /` and its whole response (head, then Content-Length bytes of body); `Some`
/// if it is not a `200`.
async fn http_get(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<Option<String>, String> {
    stream
        .write_all(HTTP_GET)
        .await
        .map_err(|e| describe("write", &e))?;
    stream.flush().await.map_err(|e| describe("flush", &e))?;
    buf.clear();
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err("http: response head over 64 KiB".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| describe("read", &e))?;
        if n == 0 {
            return Err("http: the server closed before a whole response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if !head.starts_with("HTTP/1.1 200 ") {
        let status = head.lines().next().unwrap_or_default().to_string();
        return Ok(Some(format!("http: got {status:?}, expected 200")));
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .ok_or("http: no Content-Length in the response")?;
    while buf.len() < head_end + length {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| describe("read", &e))?;
        if n == 0 {
            return Err("http: the server closed mid-body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(None)
}
