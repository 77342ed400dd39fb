//! `idle` mode: hold many idle connections open so a script can read the server's memory
//! per idle connection.
//!
//! Connections are opened with at most `--parallel` connects in flight (and optionally at
//! most `--rate` per second), so the server's listen backlog never overflows. Each
//! connection then does a probe that proves the server accepted it and created its
//! per-connection state: by default (`--probe echo`) a 1-byte echo round trip; with
//! `--probe http` one HTTP/1.1 `GET /` and its whole response, which leaves an HTTP server's
//! connection in its idle keep-alive state; `--probe none` (or `--no-probe`) does nothing.
//! With `--tls` (and the TLS flags of `stream.rs`) each connection first does a full TLS
//! handshake and the probe runs inside it. Then `opened N` is printed,
//! the connections are held for `--hold` seconds, checked for having been closed by the
//! server meanwhile, and closed; `closed N (K closed early by the server)` is printed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::args::Flags;
use crate::stream::{self, Stream, Tls};
use crate::{describe, say, Errors};

/// Attempts per connection before it counts as failed.
const ATTEMPTS: usize = 3;
/// Longest one connect (+ probe) attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What each connection does once open, to prove the server has accepted it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    None,
    Echo,
    Http,
}

/// Settings of an `idle` run.
pub struct Config {
    addr: SocketAddr,
    connections: usize,
    hold: Duration,
    probe: Probe,
    parallel: usize,
    rate: f64,
    open_timeout: Duration,
    tls: Option<Tls>,
}

impl Config {
    /// Take this mode's flags.
    pub fn from_flags(mut f: Flags) -> Result<Config, String> {
        let c = Config {
            addr: f.addr()?,
            connections: f.count("connections", 1000)?,
            hold: f.seconds("hold", 10.0, false)?,
            probe: {
                let named: String = f.take("probe", "echo".to_string())?;
                match (f.switch("no-probe"), named.as_str()) {
                    (true, _) | (false, "none") => Probe::None,
                    (false, "echo") => Probe::Echo,
                    (false, "http") => Probe::Http,
                    (false, other) => {
                        return Err(format!("--probe {other}: expected echo, http or none"))
                    }
                }
            },
            parallel: f.count("parallel", 64)?,
            rate: f.take("rate", 0.0)?,
            open_timeout: f.seconds("open-timeout", 120.0, true)?,
            tls: Tls::from_flags(&mut f)?,
        };
        f.finish()?;
        if !(c.rate >= 0.0 && c.rate.is_finite()) {
            return Err(format!("--rate {}: out of range", c.rate));
        }
        Ok(c)
    }
}

/// Run the mode; `true` when every connection opened and none was closed by the server.
pub async fn run(cfg: Config) -> bool {
    let started = Instant::now();
    let deadline = started + cfg.open_timeout;
    let gate = Arc::new(Semaphore::new(cfg.parallel));
    let mut handles = Vec::with_capacity(cfg.connections);
    let mut errors = Errors::default();
    for i in 0..cfg.connections {
        if cfg.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / cfg.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let Ok(Ok(permit)) =
            tokio::time::timeout_at(deadline.into(), gate.clone().acquire_owned()).await
        else {
            break;
        };
        let (addr, probe, tls) = (cfg.addr, cfg.probe, cfg.tls.clone());
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let mut last = String::new();
            for _ in 0..ATTEMPTS {
                match tokio::time::timeout(
                    ATTEMPT_TIMEOUT,
                    open(addr, probe, tls.as_ref(), i as u8),
                )
                .await
                {
                    Ok(Ok(s)) => return Ok(s),
                    Ok(Err(e)) => last = e,
                    Err(_) => last = "connect/probe timed out".into(),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(last)
        }));
    }
    let mut streams = Vec::with_capacity(cfg.connections);
    for handle in handles {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(deadline.into(), handle).await {
            Ok(Ok(Ok(s))) => streams.push(s),
            Ok(Ok(Err(e))) => errors.add(e),
            Ok(Err(e)) => errors.add(format!("open task: {e}")),
            Err(_) => {
                abort.abort();
                errors.add("--open-timeout reached");
            }
        }
    }
    let missing = cfg.connections - streams.len();
    errors.report("idle");
    if missing == 0 {
        say(&format!(
            "opened {} in {:.2}s",
            streams.len(),
            started.elapsed().as_secs_f64()
        ));
    } else {
        say(&format!(
            "opened {} of {} ({missing} failed)",
            streams.len(),
            cfg.connections
        ));
    }

    tokio::time::sleep(cfg.hold).await;

    // Which connections did the server close while we held them? (EOF or reset is readable
    // readiness the reactor has already seen; a live idle connection would block.)
    let mut closed_early = 0usize;
    let mut scratch = [0u8; 64];
    for s in &streams {
        let tcp = match s {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        };
        match tcp.try_read(&mut scratch) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => closed_early += 1,
        }
    }
    let n = streams.len();
    drop(streams);
    say(&format!(
        "closed {n} ({closed_early} closed early by the server)"
    ));
    missing == 0 && closed_early == 0
}

/// Connect and probe.
async fn open(
    addr: SocketAddr,
    probe: Probe,
    tls: Option<&Tls>,
    byte: u8,
) -> Result<Stream, String> {
    let mut s = stream::open(addr, tls).await?;
    if probe == Probe::Http {
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| describe("probe write", &e))?;
        read_http_response(&mut s).await?;
    } else if probe == Probe::Echo {
        s.write_all(&[byte])
            .await
            .map_err(|e| describe("probe write", &e))?;
        let mut back = [0u8; 1];
        s.read_exact(&mut back)
            .await
            .map_err(|e| describe("probe read", &e))?;
        if back[0] != byte {
            return Err(format!("probe echoed {:#04x}, sent {byte:#04x}", back[0]));
        }
    }
    Ok(s)
}

/// Read one whole HTTP response (head, then Content-Length bytes), which must be a `200`.
async fn read_http_response(s: &mut Stream) -> Result<(), String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| describe("probe read", &e))?;
        if n == 0 {
            return Err("probe: the server closed before a whole response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..at]);
        if !head.starts_with("HTTP/1.1 200 ") {
            return Err(format!(
                "probe: got {:?}, expected 200",
                head.lines().next().unwrap_or_default()
            ));
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })
            .ok_or("probe: no Content-Length")?;
        if buf.len() >= at + 4 + length {
            return Ok(());
        }
    }
}
