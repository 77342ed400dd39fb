//! `connect` mode: connection setup rate, the cost of accepting and tearing down a
//! connection (plugin consumer creation included) rather than of moving bytes.
//!
//! `--concurrency` loops each connect, send one small message, read and verify its echo,
//! and close, until the window ends. Completions inside the window are counted and their
//! connect-to-echo time recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::Flags;
use crate::histogram::Histogram;
use crate::{cpu_over, describe, fill_message, json_num, say, Errors, Times};

/// Longest one connect + round trip may take before it counts as an error.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a `connect` run.
pub struct Config {
    addr: SocketAddr,
    concurrency: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
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
    mismatches: u64,
    errors: Errors,
    hist: Histogram,
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
        total.mismatches += s.mismatches;
        total.errors.merge(s.errors);
        total.hist.merge(&s.hist);
    }
    let cpu = cpu.await.ok().flatten();

    let secs = cfg.duration.as_secs_f64();
    let rate = total.conns as f64 / secs;
    let (p50, p99) = (total.hist.quantile_us(0.50), total.hist.quantile_us(0.99));
    total.errors.report("connect");
    if cfg.json {
        say(&format!(
            "{{\"mode\":\"connect\",\"addr\":\"{}\",\"concurrency\":{},\"size\":{},\
\"duration_s\":{:.3},\"conns\":{},\"conns_per_sec\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1},\
\"errors\":{},\"mismatches\":{},\"client_cpu\":{}}}",
            cfg.addr,
            cfg.concurrency,
            cfg.size,
            secs,
            total.conns,
            rate,
            p50,
            p99,
            total.errors.count,
            total.mismatches,
            json_num(cpu, 3)
        ));
    } else {
        say(&format!(
            "connect concurrency={} size={} duration={:.1}s conns/s={:.0} p50_us={:.1} \
p99_us={:.1} errors={} mismatches={} client_cpu={}",
            cfg.concurrency,
            cfg.size,
            secs,
            rate,
            p50,
            p99,
            total.errors.count,
            total.mismatches,
            cpu.map_or("n/a".into(), |c| format!("{:.0}%", c * 100.0)),
        ));
    }
    total.errors.count == 0 && total.mismatches == 0
}

/// Outcome of one connect / echo / close cycle.
enum Cycle {
    Done,
    Mismatch(String),
}

async fn one_loop(id: u64, cfg: &Config, times: Times) -> Stats {
    let mut stats = Stats::default();
    let mut msg = Vec::with_capacity(cfg.size);
    let mut echo = vec![0u8; cfg.size];
    let mut seq = 0u64;
    while Instant::now() < times.end {
        msg.clear();
        fill_message(&mut msg, id, seq, cfg.size);
        seq += 1;
        let t0 = Instant::now();
        let outcome = tokio::time::timeout(CYCLE_TIMEOUT, cycle(cfg.addr, &msg, &mut echo)).await;
        let t1 = Instant::now();
        match outcome {
            Ok(Ok(Cycle::Done)) => {
                if times.counts(t1) {
                    stats.conns += 1;
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

async fn cycle(addr: SocketAddr, msg: &[u8], echo: &mut [u8]) -> Result<Cycle, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| describe("connect", &e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| describe("nodelay", &e))?;
    stream
        .write_all(msg)
        .await
        .map_err(|e| describe("write", &e))?;
    stream
        .read_exact(echo)
        .await
        .map_err(|e| describe("read", &e))?;
    if echo != msg {
        return Ok(Cycle::Mismatch(format!(
            "connect mode: echo of {} bytes differs from what was sent",
            msg.len()
        )));
    }
    Ok(Cycle::Done)
}
