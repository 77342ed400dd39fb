//! `--metrics-bind ADDR`: Prometheus metrics at `http://ADDR/metrics`.
//!
//! Workers count in plain cells on their own thread ([`WorkerMetrics`]: no atomics on the
//! connection path) and post a [`Counters`] snapshot with each heartbeat — to the arbiter's
//! shared-memory board in process mode. The arbiter adds up the live workers' snapshots and
//! the final ones of workers that have exited (so counters never go backwards), adds its
//! own supervision counters ([`Supervision`]) and serves the text from its poll loop
//! ([`Endpoint`]): still no async runtime and no plugin in the arbiter. Thread mode serves
//! the same text from its event loop.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use plugin_api::LostReason;

/// Number of values in a [`Counters`] snapshot.
pub const COUNTERS: usize = 17;

/// One worker's figures (counters, plus the `open` gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub open: u64,
    /// Closed connections by reason: closed, peer_closed, idle_timeout, error, shutdown.
    pub closed: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub tls_handshake_failures: u64,
    pub plugin_panics: u64,
    pub udp_sessions_open: u64,
    pub udp_sessions: u64,
    pub udp_evicted: u64,
    pub output_limit_closes: u64,
    pub outbound_connects: u64,
    pub outbound_failures: u64,
}

impl Counters {
    /// As a flat array (the board's layout).
    pub fn to_array(self) -> [u64; COUNTERS] {
        let c = self.closed;
        [
            self.accepted,
            self.open,
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            self.bytes_in,
            self.bytes_out,
            self.tls_handshake_failures,
            self.plugin_panics,
            self.udp_sessions_open,
            self.udp_sessions,
            self.udp_evicted,
            self.output_limit_closes,
            self.outbound_connects,
            self.outbound_failures,
        ]
    }

    /// From [`Counters::to_array`]'s layout.
    pub fn from_array(a: [u64; COUNTERS]) -> Counters {
        Counters {
            accepted: a[0],
            open: a[1],
            closed: [a[2], a[3], a[4], a[5], a[6]],
            bytes_in: a[7],
            bytes_out: a[8],
            tls_handshake_failures: a[9],
            plugin_panics: a[10],
            udp_sessions_open: a[11],
            udp_sessions: a[12],
            udp_evicted: a[13],
            output_limit_closes: a[14],
            outbound_connects: a[15],
            outbound_failures: a[16],
        }
    }

    /// Element-wise sum.
    pub fn add(self, other: Counters) -> Counters {
        let (a, b) = (self.to_array(), other.to_array());
        Counters::from_array(std::array::from_fn(|i| a[i] + b[i]))
    }

    /// The same figures with the gauges zeroed (what an exited worker leaves behind).
    pub fn without_gauges(mut self) -> Counters {
        self.open = 0;
        self.udp_sessions_open = 0;
        self
    }
}

/// The counting side, owned by one worker's event loop.
#[derive(Default)]
pub struct WorkerMetrics {
    pub accepted: Cell<u64>,
    closed: [Cell<u64>; 5],
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub tls_handshake_failures: Cell<u64>,
    pub plugin_panics: Cell<u64>,
    pub udp_sessions_open: Cell<u64>,
    pub udp_sessions: Cell<u64>,
    pub udp_evicted: Cell<u64>,
    pub output_limit_closes: Cell<u64>,
    pub outbound_connects: Cell<u64>,
    pub outbound_failures: Cell<u64>,
}

/// Add `n` to a counter cell.
#[inline]
pub fn bump(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

impl WorkerMetrics {
    /// A connection (or UDP session) ended for `reason`.
    pub fn closed(&self, reason: LostReason) {
        bump(&self.closed[reason_index(reason)], 1);
    }

    /// A snapshot, with the number of open connections.
    pub fn snapshot(&self, open: usize) -> Counters {
        Counters {
            accepted: self.accepted.get(),
            open: open as u64,
            closed: std::array::from_fn(|i| self.closed[i].get()),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            tls_handshake_failures: self.tls_handshake_failures.get(),
            plugin_panics: self.plugin_panics.get(),
            udp_sessions_open: self.udp_sessions_open.get(),
            udp_sessions: self.udp_sessions.get(),
            udp_evicted: self.udp_evicted.get(),
            output_limit_closes: self.output_limit_closes.get(),
            outbound_connects: self.outbound_connects.get(),
            outbound_failures: self.outbound_failures.get(),
        }
    }
}

const REASONS: [&str; 5] = ["closed", "peer_closed", "idle_timeout", "error", "shutdown"];

fn reason_index(reason: LostReason) -> usize {
    match reason {
        LostReason::Closed => 0,
        LostReason::PeerClosed => 1,
        LostReason::IdleTimeout => 2,
        LostReason::Shutdown => 4,
        _ => 3,
    }
}

/// What the arbiter itself counts.
#[derive(Clone, Debug, Default)]
pub struct Supervision {
    pub workers: u64,
    pub worker_starts: u64,
    pub worker_exits: u64,
    pub worker_crashes: u64,
    pub worker_timeouts: u64,
    pub reloads_ok: u64,
    pub reloads_aborted: u64,
    /// `(name, version)` of the plugin the current workers run.
    pub plugin: Option<(String, String)>,
}

/// The Prometheus text exposition of `c` and `s`.
pub fn render(c: &Counters, s: &Supervision) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "sockhost_connections_accepted_total",
        "counter",
        "TCP connections accepted.",
        &[("", c.accepted)],
    );
    metric(
        "sockhost_connections_open",
        "gauge",
        "TCP connections open now.",
        &[("", c.open)],
    );
    let closed: Vec<(String, u64)> = REASONS
        .iter()
        .zip(c.closed)
        .map(|(r, v)| (format!("{{reason=\"{r}\"}}"), v))
        .collect();
    let closed: Vec<(&str, u64)> = closed.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "sockhost_connections_closed_total",
        "counter",
        "TCP connections closed, by reason.",
        &closed,
    );
    metric(
        "sockhost_received_bytes_total",
        "counter",
        "Bytes received from peers (after TLS).",
        &[("", c.bytes_in)],
    );
    metric(
        "sockhost_sent_bytes_total",
        "counter",
        "Bytes sent to peers (before TLS).",
        &[("", c.bytes_out)],
    );
    metric(
        "sockhost_udp_sessions_open",
        "gauge",
        "UDP peer sessions open now.",
        &[("", c.udp_sessions_open)],
    );
    metric(
        "sockhost_udp_sessions_total",
        "counter",
        "UDP peer sessions started.",
        &[("", c.udp_sessions)],
    );
    metric(
        "sockhost_udp_sessions_evicted_total",
        "counter",
        "UDP sessions evicted at --max-sessions.",
        &[("", c.udp_evicted)],
    );
    metric(
        "sockhost_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out.",
        &[("", c.tls_handshake_failures)],
    );
    metric(
        "sockhost_output_limit_closes_total",
        "counter",
        "Connections closed for unsent output above --max-pending or past --send-timeout.",
        &[("", c.output_limit_closes)],
    );
    metric(
        "sockhost_outbound_connections_total",
        "counter",
        "Outbound connections plugins opened, by result.",
        &[
            ("{result=\"attempted\"}", c.outbound_connects),
            ("{result=\"failed\"}", c.outbound_failures),
        ],
    );
    metric(
        "sockhost_plugin_panics_total",
        "counter",
        "Panics caught at the plugin boundary.",
        &[("", c.plugin_panics)],
    );
    metric(
        "sockhost_workers",
        "gauge",
        "Worker processes running.",
        &[("", s.workers)],
    );
    metric(
        "sockhost_worker_starts_total",
        "counter",
        "Worker processes started.",
        &[("", s.worker_starts)],
    );
    metric(
        "sockhost_worker_exits_total",
        "counter",
        "Worker processes that exited, by cause.",
        &[
            ("{cause=\"retired\"}", s.worker_exits),
            ("{cause=\"crashed\"}", s.worker_crashes),
            ("{cause=\"timeout\"}", s.worker_timeouts),
        ],
    );
    metric(
        "sockhost_reloads_total",
        "counter",
        "Reloads (HUP), by result.",
        &[
            ("{result=\"ok\"}", s.reloads_ok),
            ("{result=\"aborted\"}", s.reloads_aborted),
        ],
    );
    if let Some((name, version)) = &s.plugin {
        let labels = format!(
            "{{name=\"{}\",version=\"{}\"}}",
            escape(name),
            escape(version)
        );
        metric(
            "sockhost_plugin_info",
            "gauge",
            "The plugin being served.",
            &[(labels.as_str(), 1)],
        );
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The HTTP response for one request head.
pub fn respond(request: &[u8], body: impl FnOnce() -> String) -> Vec<u8> {
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let (status, body, kind) =
        if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET /metrics?") {
            ("200 OK", body(), "text/plain; version=0.0.4")
        } else {
            ("404 Not Found", "see /metrics\n".to_string(), "text/plain")
        };
    format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// The arbiter's metrics endpoint: a non-blocking listener and its few clients, driven by
/// the arbiter's poll loop. Bounded: at most [`MAX_CLIENTS`] at once, each given
/// [`CLIENT_DEADLINE`] to send its request.
pub struct Endpoint {
    listener: TcpListener,
    clients: Vec<(TcpStream, Vec<u8>, Instant)>,
}

const MAX_CLIENTS: usize = 16;
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// How long the thread-mode endpoint stops accepting after `accept` failed.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl Endpoint {
    pub fn bind(addr: SocketAddr) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Endpoint {
            listener,
            clients: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Descriptors to poll for reading (the arbiter's poll loop: process mode, Unix only).
    #[cfg(unix)]
    pub fn fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        let mut fds = vec![self.listener.as_fd()];
        fds.extend(self.clients.iter().map(|(s, _, _)| s.as_fd()));
        fds
    }

    /// Accept, read and answer whatever is ready (never blocks).
    pub fn serve(&mut self, body: impl Fn() -> String) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.clients.len() == MAX_CLIENTS {
                self.clients.remove(0);
            }
            self.clients.push((stream, Vec::new(), Instant::now()));
        }
        let now = Instant::now();
        self.clients.retain_mut(|(stream, buf, since)| {
            let mut chunk = [0u8; 1024];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
                if buf.len() > 8192 {
                    return false;
                }
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                // A few KiB: the socket buffer takes it whole.
                let _ = stream.write_all(&respond(buf, &body));
                return false;
            }
            now.duration_since(*since) < CLIENT_DEADLINE
        });
    }
}

/// Thread mode: serve the endpoint on the worker's event loop until cancelled. Bounded as
/// [`Endpoint`] is: at most [`MAX_CLIENTS`] at once (a new client evicts the oldest, so idle
/// connections cannot lock a scraper out), each given [`CLIENT_DEADLINE`] for the whole
/// exchange. A failed `accept` (out of descriptors: EMFILE/ENFILE) pauses accepting for
/// [`ACCEPT_PAUSE`]: the waiting connection keeps the listener readable, and retrying at
/// once would spin.
pub async fn serve_async(listener: tokio::net::TcpListener, body: std::rc::Rc<dyn Fn() -> String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut clients: std::collections::VecDeque<tokio::task::JoinHandle<()>> =
        std::collections::VecDeque::with_capacity(MAX_CLIENTS);
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        clients.retain(|c| !c.is_finished());
        if clients.len() == MAX_CLIENTS {
            if let Some(oldest) = clients.pop_front() {
                oldest.abort();
            }
        }
        let body = body.clone();
        clients.push_back(tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(CLIENT_DEADLINE, async {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.len() > 8192 {
                        return;
                    }
                }
                let _ = stream.write_all(&respond(&buf, || body())).await;
            })
            .await;
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_through_the_board_layout() {
        let c = Counters {
            accepted: 1,
            open: 2,
            closed: [3, 4, 5, 6, 7],
            bytes_in: 8,
            bytes_out: 9,
            tls_handshake_failures: 10,
            plugin_panics: 11,
            udp_sessions_open: 12,
            udp_sessions: 13,
            udp_evicted: 14,
            output_limit_closes: 15,
            outbound_connects: 16,
            outbound_failures: 17,
        };
        assert_eq!(Counters::from_array(c.to_array()), c);
        assert_eq!(c.add(c).accepted, 2);
        assert_eq!(c.without_gauges().open, 0);
    }

    #[test]
    fn renders_prometheus_text() {
        let c = Counters {
            accepted: 5,
            closed: [1, 0, 2, 0, 0],
            ..Default::default()
        };
        let s = Supervision {
            workers: 2,
            plugin: Some(("echo".into(), "0.1.0".into())),
            ..Default::default()
        };
        let text = render(&c, &s);
        assert!(text.contains("# TYPE sockhost_connections_accepted_total counter\nsockhost_connections_accepted_total 5\n"));
        assert!(text.contains("sockhost_connections_closed_total{reason=\"idle_timeout\"} 2\n"));
        assert!(text.contains("sockhost_plugin_info{name=\"echo\",version=\"0.1.0\"} 1\n"));
        assert!(text.contains("sockhost_workers 2\n"));
    }

    #[test]
    fn only_get_metrics_is_served() {
        let ok = String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\n\r\n", || "x 1\n".into()))
            .unwrap();
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nx 1\n"),
            "{ok}"
        );
        let nf = String::from_utf8(respond(b"GET / HTTP/1.1\r\n\r\n", || unreachable!())).unwrap();
        assert!(nf.starts_with("HTTP/1.1 404"));
    }
}
