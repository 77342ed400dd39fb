//! `--metrics-bind ADDR`: Prometheus metrics at `http://ADDR/metrics`, and health checks:
//! `/health` answers 200 while the process answers at all (liveness); `/ready` answers 200
//! while every worker slot serves and nothing is stopping, 503 otherwise (readiness: a load
//! balancer stops routing here while it starts, drains or is short of workers).
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
pub const COUNTERS: usize = 18;

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
    pub proxy_refused: u64,
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
            self.proxy_refused,
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
            proxy_refused: a[17],
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
    pub proxy_refused: Cell<u64>,
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
            proxy_refused: self.proxy_refused.get(),
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
    /// `(name, version)` of the plugin each service of the current workers runs.
    pub plugins: Vec<(String, String)>,
}

/// The Prometheus text exposition of each service's counters `per_service` (labelled
/// `service="NAME"`, in the order of `services`) and of `s`.
pub fn render(services: &[&str], per_service: &[Counters], s: &Supervision) -> String {
    let mut out = String::with_capacity(2048 * services.len().max(1));
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    // One sample per service and extra label set: `{service="echo",reason="closed"}`.
    let labelled =
        |extra: &[&str], value: &dyn Fn(&Counters, usize) -> u64| -> Vec<(String, u64)> {
            let mut samples = Vec::new();
            for (name, c) in services.iter().zip(per_service) {
                let service = format!("service=\"{}\"", escape(name));
                if extra.is_empty() {
                    samples.push((format!("{{{service}}}"), value(c, 0)));
                }
                for (i, e) in extra.iter().enumerate() {
                    samples.push((format!("{{{service},{e}}}"), value(c, i)));
                }
            }
            samples
        };
    let mut per = |name: &str,
                   kind: &str,
                   help: &str,
                   extra: &[&str],
                   value: &dyn Fn(&Counters, usize) -> u64| {
        let samples = labelled(extra, value);
        let samples: Vec<(&str, u64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(name, kind, help, &samples);
    };
    per(
        "sockhost_connections_accepted_total",
        "counter",
        "Connections accepted (TCP and Unix).",
        &[],
        &|c, _| c.accepted,
    );
    per(
        "sockhost_connections_open",
        "gauge",
        "Connections open now.",
        &[],
        &|c, _| c.open,
    );
    let reasons: Vec<String> = REASONS.iter().map(|r| format!("reason=\"{r}\"")).collect();
    let reasons: Vec<&str> = reasons.iter().map(String::as_str).collect();
    per(
        "sockhost_connections_closed_total",
        "counter",
        "Connections closed, by reason.",
        &reasons,
        &|c, i| c.closed[i],
    );
    per(
        "sockhost_received_bytes_total",
        "counter",
        "Bytes received from peers (after TLS).",
        &[],
        &|c, _| c.bytes_in,
    );
    per(
        "sockhost_sent_bytes_total",
        "counter",
        "Bytes sent to peers (before TLS).",
        &[],
        &|c, _| c.bytes_out,
    );
    per(
        "sockhost_udp_sessions_open",
        "gauge",
        "UDP peer sessions open now.",
        &[],
        &|c, _| c.udp_sessions_open,
    );
    per(
        "sockhost_udp_sessions_total",
        "counter",
        "UDP peer sessions started.",
        &[],
        &|c, _| c.udp_sessions,
    );
    per(
        "sockhost_udp_sessions_evicted_total",
        "counter",
        "UDP sessions evicted at --max-sessions.",
        &[],
        &|c, _| c.udp_evicted,
    );
    per(
        "sockhost_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out.",
        &[],
        &|c, _| c.tls_handshake_failures,
    );
    per(
        "sockhost_output_limit_closes_total",
        "counter",
        "Connections closed for unsent output above --max-pending or past --send-timeout.",
        &[],
        &|c, _| c.output_limit_closes,
    );
    per(
        "sockhost_outbound_connections_total",
        "counter",
        "Outbound connections plugins opened, by result.",
        &["result=\"attempted\"", "result=\"failed\""],
        &|c, i| [c.outbound_connects, c.outbound_failures][i],
    );
    per(
        "sockhost_proxy_protocol_refused_total",
        "counter",
        "Connections closed because they came from outside --proxy-protocol-from.",
        &[],
        &|c, _| c.proxy_refused,
    );
    per(
        "sockhost_plugin_panics_total",
        "counter",
        "Panics caught at the plugin boundary.",
        &[],
        &|c, _| c.plugin_panics,
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
    if !s.plugins.is_empty() {
        let labels: Vec<String> = services
            .iter()
            .zip(&s.plugins)
            .map(|(service, (name, version))| {
                format!(
                    "{{service=\"{}\",name=\"{}\",version=\"{}\"}}",
                    escape(service),
                    escape(name),
                    escape(version)
                )
            })
            .collect();
        let samples: Vec<(&str, u64)> = labels.iter().map(|l| (l.as_str(), 1)).collect();
        metric(
            "sockhost_plugin_info",
            "gauge",
            "The plugin each service runs.",
            &samples,
        );
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The HTTP response for one request head: `/metrics` (the text `body` makes), `/health`,
/// `/ready` (200 if `ready`, else 503).
pub fn respond(request: &[u8], ready: bool, body: impl FnOnce() -> String) -> Vec<u8> {
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let path = line
        .strip_prefix(b"GET ")
        .and_then(|rest| rest.split(|&b| b == b' ' || b == b'?').next())
        .unwrap_or_default();
    let (status, body, kind) = match path {
        b"/metrics" => ("200 OK", body(), "text/plain; version=0.0.4"),
        b"/health" => ("200 OK", "ok\n".to_string(), "text/plain"),
        b"/ready" if ready => ("200 OK", "ready\n".to_string(), "text/plain"),
        b"/ready" => (
            "503 Service Unavailable",
            "not ready\n".to_string(),
            "text/plain",
        ),
        _ => (
            "404 Not Found",
            "see /metrics, /health, /ready\n".to_string(),
            "text/plain",
        ),
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

    /// Accept, read and answer whatever is ready (never blocks); `ready` is what `/ready`
    /// answers.
    pub fn serve(&mut self, ready: bool, body: impl Fn() -> String) {
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
                let _ = stream.write_all(&respond(buf, ready, &body));
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
pub async fn serve_async(
    listener: tokio::net::TcpListener,
    body: std::rc::Rc<dyn Fn() -> String>,
    ready: std::rc::Rc<dyn Fn() -> bool>,
) {
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
        let ready = ready.clone();
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
                let _ = stream.write_all(&respond(&buf, ready(), || body())).await;
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
            proxy_refused: 18,
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
            plugins: vec![
                ("echo".into(), "0.1.0".into()),
                ("kv".into(), "0.2.0".into()),
            ],
            ..Default::default()
        };
        let other = Counters {
            accepted: 7,
            ..Default::default()
        };
        let text = render(&["echo", "store"], &[c, other], &s);
        assert!(text.contains("# TYPE sockhost_connections_accepted_total counter\nsockhost_connections_accepted_total{service=\"echo\"} 5\nsockhost_connections_accepted_total{service=\"store\"} 7\n"), "{text}");
        assert!(text.contains(
            "sockhost_connections_closed_total{service=\"echo\",reason=\"idle_timeout\"} 2\n"
        ));
        assert!(text.contains(
            "sockhost_plugin_info{service=\"echo\",name=\"echo\",version=\"0.1.0\"} 1\n"
        ));
        assert!(text
            .contains("sockhost_plugin_info{service=\"store\",name=\"kv\",version=\"0.2.0\"} 1\n"));
        assert!(text.contains("sockhost_workers 2\n"));
    }

    #[test]
    fn only_metrics_health_and_ready_are_served() {
        let get = |request: &[u8], ready: bool| {
            String::from_utf8(respond(request, ready, || "x 1\n".into())).unwrap()
        };
        let ok = get(b"GET /metrics HTTP/1.1\r\n\r\n", true);
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nx 1\n"),
            "{ok}"
        );
        assert!(get(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", true).ends_with("x 1\n"));
        let health = get(b"GET /health HTTP/1.1\r\n\r\n", false);
        assert!(health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok\n"));
        assert!(get(b"GET /ready HTTP/1.1\r\n\r\n", true).starts_with("HTTP/1.1 200 OK"));
        assert!(get(b"GET /ready HTTP/1.1\r\n\r\n", false).starts_with("HTTP/1.1 503"));
        let nf =
            String::from_utf8(respond(b"GET / HTTP/1.1\r\n\r\n", true, || unreachable!())).unwrap();
        assert!(nf.starts_with("HTTP/1.1 404"));
        assert!(get(b"GET /healthz HTTP/1.1\r\n\r\n", true).starts_with("HTTP/1.1 404"));
    }
}
