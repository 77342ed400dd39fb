//! `echo` mode: throughput and latency of a steady stream of verified echo round trips.
//!
//! Every connection is opened before the clock starts. Each one then runs a writer and a
//! reader concurrently: the writer keeps `--depth` messages in flight (a semaphore is the
//! window; messages ready together go out in one write), the reader verifies each echoed
//! message against the pattern it was sent with and records its round-trip time. Only
//! completions inside the measured window (after `--warmup`, for `--duration`) count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout_at;

use crate::args::Flags;
use crate::histogram::Histogram;
use crate::stream::{self, Stream, Tls};
use crate::{cpu_over, describe, fill_message, json_num, json_str, say, Errors, Times};

/// How long after the end of the window the in-flight echoes may take to drain.
const DRAIN: Duration = Duration::from_secs(5);
/// Connects in flight while opening the connections.
const OPEN_PARALLEL: usize = 64;
/// At most this many messages go into one write.
const MAX_BATCH: usize = 64;

/// Settings of an `echo` run.
pub struct Config {
    addr: SocketAddr,
    connections: usize,
    size: usize,
    depth: usize,
    duration: Duration,
    warmup: Duration,
    tls: Option<Tls>,
    json: bool,
}

impl Config {
    /// Take this mode's flags.
    pub fn from_flags(mut f: Flags) -> Result<Config, String> {
        let c = Config {
            addr: f.addr()?,
            connections: f.count("connections", 1)?,
            size: f.count("size", 64)?,
            depth: f.count("depth", 1)?,
            duration: f.seconds("duration", 5.0, true)?,
            warmup: f.seconds("warmup", 1.0, false)?,
            tls: Tls::from_flags(&mut f)?,
            json: f.switch("json"),
        };
        f.finish()?;
        Ok(c)
    }
}

/// What one connection measured.
#[derive(Default)]
struct Stats {
    msgs: u64,
    mismatches: u64,
    errors: Errors,
    hist: Histogram,
}

/// Run the mode; `true` when there was no error and no mismatch.
pub async fn run(cfg: Config) -> bool {
    let cfg = Arc::new(cfg);
    let mut total = Stats::default();

    // Open every connection before the clock starts.
    let gate = Arc::new(Semaphore::new(OPEN_PARALLEL));
    let opening: Vec<_> = (0..cfg.connections)
        .map(|_| {
            let (gate, cfg) = (gate.clone(), cfg.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                tokio::time::timeout(
                    Duration::from_secs(10),
                    stream::open(cfg.addr, cfg.tls.as_ref()),
                )
                .await
                .map_err(|_| "connect: timed out".to_string())?
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(cfg.connections);
    for handle in opening {
        match handle.await.expect("connect task") {
            Ok(s) => streams.push(s),
            Err(e) => total.errors.add(e),
        }
    }
    let tls = streams.first().and_then(Stream::tls_summary);

    let times = Times::new(cfg.warmup, cfg.duration);
    let cpu = tokio::spawn(cpu_over(times));
    let running: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(id, s)| {
            let cfg = cfg.clone();
            tokio::spawn(async move { connection(id as u64, s, &cfg, times).await })
        })
        .collect();
    for handle in running {
        let s = handle.await.expect("connection task");
        total.msgs += s.msgs;
        total.mismatches += s.mismatches;
        total.errors.merge(s.errors);
        total.hist.merge(&s.hist);
    }
    let cpu = cpu.await.ok().flatten();

    let secs = cfg.duration.as_secs_f64();
    let rate = total.msgs as f64 / secs;
    let mib = rate * cfg.size as f64 / (1024.0 * 1024.0);
    let (p50, p99) = (total.hist.quantile_us(0.50), total.hist.quantile_us(0.99));
    total.errors.report("echo");
    if cfg.json {
        say(&format!(
            "{{\"mode\":\"echo\",\"addr\":\"{}\",\"connections\":{},\"size\":{},\"depth\":{},\
\"duration_s\":{:.3},\"msgs\":{},\"msgs_per_sec\":{:.1},\"mib_per_sec\":{:.3},\
\"p50_us\":{:.1},\"p99_us\":{:.1},\"errors\":{},\"mismatches\":{},\"client_cpu\":{},\
\"tls\":{}}}",
            cfg.addr,
            cfg.connections,
            cfg.size,
            cfg.depth,
            secs,
            total.msgs,
            rate,
            mib,
            p50,
            p99,
            total.errors.count,
            total.mismatches,
            json_num(cpu, 3),
            json_str(tls.as_deref())
        ));
    } else {
        say(&format!(
            "echo conns={} size={} depth={} duration={:.1}s msgs/s={:.0} MiB/s={:.2} \
p50_us={:.1} p99_us={:.1} errors={} mismatches={} client_cpu={} tls={}",
            cfg.connections,
            cfg.size,
            cfg.depth,
            secs,
            rate,
            mib,
            p50,
            p99,
            total.errors.count,
            total.mismatches,
            cpu.map_or("n/a".into(), |c| format!("{:.0}%", c * 100.0)),
            tls.as_deref().unwrap_or("off"),
        ));
    }
    total.errors.count == 0 && total.mismatches == 0
}

/// Drive one connection until the window ends and its in-flight echoes are back.
async fn connection(id: u64, stream: Stream, cfg: &Config, times: Times) -> Stats {
    match (cfg.depth, stream) {
        (1, stream) => ping_pong(id, stream, cfg.size, times).await,
        // Plain TCP splits without a lock; TLS needs tokio's locked split.
        (_, Stream::Plain(mut tcp)) => {
            let (rd, wr) = tcp.split();
            pipelined(id, rd, wr, cfg, times).await
        }
        (_, tls) => {
            let (rd, wr) = tokio::io::split(tls);
            pipelined(id, rd, wr, cfg, times).await
        }
    }
}

/// `--depth 1`: a plain write / read / verify loop in one task. It does the same work per
/// message as the simplest echo server, which keeps the client from being the bottleneck
/// more than it has to be.
async fn ping_pong(id: u64, mut stream: Stream, size: usize, times: Times) -> Stats {
    let mut stats = Stats::default();
    let mut msg = Vec::with_capacity(size);
    // Larger than one message: a read that returns less than the buffer lets tokio know
    // the socket is drained, which saves a read() that would only say EWOULDBLOCK.
    let mut echo = vec![0u8; size + size.clamp(1024, 64 * 1024)];
    let result = timeout_at((times.end + DRAIN).into(), async {
        let mut seq = 0u64;
        while Instant::now() < times.end {
            msg.clear();
            fill_message(&mut msg, id, seq, size);
            let sent_at = Instant::now();
            stream
                .write_all(&msg)
                .await
                .map_err(|e| ReadFailure::Io(describe("write", &e)))?;
            stream
                .flush()
                .await
                .map_err(|e| ReadFailure::Io(describe("flush", &e)))?;
            let mut have = 0;
            while have < size {
                match stream.read(&mut echo[have..]).await {
                    Ok(0) => {
                        return Err(ReadFailure::Io(format!(
                            "the server closed the connection with message {seq} outstanding"
                        )))
                    }
                    Ok(n) => have += n,
                    Err(e) => return Err(ReadFailure::Io(describe("read", &e))),
                }
            }
            let arrived = Instant::now();
            if echo[..size] != msg[..] {
                return Err(mismatch(id, seq, &echo[..size], &msg));
            }
            if have > size {
                return Err(ReadFailure::Mismatch(format!(
                    "{} unexpected byte(s) after message {seq} on connection {id}",
                    have - size
                )));
            }
            if times.counts(arrived) {
                stats.msgs += 1;
                stats.hist.record(arrived - sent_at);
            }
            seq += 1;
        }
        Ok(())
    })
    .await;
    match result {
        Err(_) => stats.errors.add("echoes did not come back in time"),
        Ok(Ok(())) => {}
        Ok(Err(ReadFailure::Io(e))) => stats.errors.add(e),
        Ok(Err(ReadFailure::Mismatch(m))) => {
            stats.mismatches += 1;
            stats.errors.note(m);
        }
    }
    stats
}

/// `--depth` above 1: a writer and a reader run concurrently on the two halves.
async fn pipelined<R, W>(id: u64, mut rd: R, mut wr: W, cfg: &Config, times: Times) -> Stats
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut stats = Stats::default();
    let window = Semaphore::new(cfg.depth);
    // Per write: when it was sent and how many messages it carried.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(Instant, usize)>();
    let size = cfg.size;

    let writer = async {
        let sent_tx = sent_tx;
        let mut seq = 0u64;
        let mut batch = Vec::with_capacity(size * cfg.depth.min(MAX_BATCH));
        loop {
            match timeout_at(times.end.into(), window.acquire()).await {
                Ok(Ok(p)) => p.forget(),
                // The window ended, or the reader gave up and closed it.
                Err(_) | Ok(Err(_)) => break,
            }
            let mut n = 1;
            while n < MAX_BATCH {
                match window.try_acquire() {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                n += 1;
            }
            batch.clear();
            for k in 0..n as u64 {
                fill_message(&mut batch, id, seq + k, size);
            }
            if sent_tx.send((Instant::now(), n)).is_err() {
                break;
            }
            wr.write_all(&batch).await?;
            // TLS may hold the last record until flushed; for plain TCP this is free.
            wr.flush().await?;
            seq += n as u64;
        }
        Ok::<(), std::io::Error>(())
    };

    let reader = async {
        let result = read_echoes(id, &mut rd, &mut sent_rx, &window, size, times, &mut stats).await;
        // Whatever happened, let the writer stop.
        window.close();
        result
    };

    let outcome = timeout_at((times.end + DRAIN).into(), async {
        tokio::join!(writer, reader)
    })
    .await;
    match outcome {
        Err(_) => stats.errors.add("echoes did not come back in time"),
        Ok((w, r)) => {
            if let Err(e) = w {
                stats.errors.add(describe("write", &e));
            }
            match r {
                Ok(()) => {}
                Err(ReadFailure::Io(e)) => stats.errors.add(e),
                Err(ReadFailure::Mismatch(m)) => {
                    stats.mismatches += 1;
                    stats.errors.note(m);
                }
            }
        }
    }
    stats
}

/// Why the reader stopped early.
enum ReadFailure {
    Io(String),
    Mismatch(String),
}

/// Describe where an echoed message first differs from what was sent.
fn mismatch(id: u64, seq: u64, echoed: &[u8], expected: &[u8]) -> ReadFailure {
    let at = echoed
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    ReadFailure::Mismatch(format!(
        "mismatch on connection {id}, message {seq}, byte {at}: got {:#04x}, expected {:#04x}",
        echoed[at], expected[at]
    ))
}

/// Read and verify echoes until the writer is done and everything it sent came back.
async fn read_echoes<R: AsyncRead + Unpin>(
    id: u64,
    rd: &mut R,
    sent_rx: &mut mpsc::UnboundedReceiver<(Instant, usize)>,
    window: &Semaphore,
    size: usize,
    times: Times,
    stats: &mut Stats,
) -> Result<(), ReadFailure> {
    let mut buf = vec![0u8; (2 * size).max(64 * 1024)];
    let (mut start, mut end) = (0usize, 0usize);
    let mut arrived = Instant::now();
    let mut expected = Vec::with_capacity(size);
    let mut seq = 0u64;
    while let Some((sent_at, n)) = sent_rx.recv().await {
        for _ in 0..n {
            while end - start < size {
                if start + size > buf.len() {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                let got = rd
                    .read(&mut buf[end..])
                    .await
                    .map_err(|e| ReadFailure::Io(describe("read", &e)))?;
                if got == 0 {
                    return Err(ReadFailure::Io(format!(
                        "the server closed the connection with message {seq} outstanding"
                    )));
                }
                end += got;
                arrived = Instant::now();
            }
            expected.clear();
            fill_message(&mut expected, id, seq, size);
            let echoed = &buf[start..start + size];
            if echoed != expected.as_slice() {
                return Err(mismatch(id, seq, echoed, &expected));
            }
            start += size;
            if times.counts(arrived) {
                stats.msgs += 1;
                stats.hist.record(arrived - sent_at);
            }
            seq += 1;
            window.add_permits(1);
        }
    }
    if end > start {
        return Err(ReadFailure::Mismatch(format!(
            "{} unexpected byte(s) after message {seq} on connection {id}",
            end - start
        )));
    }
    Ok(())
}
