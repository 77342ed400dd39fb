//! The HTTP side of `--metrics-bind`: `/metrics`, `/health` and `/ready`, served from the
//! arbiter's poll loop ([`Endpoint`]) or from thread mode's event loop ([`serve_async`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

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
    pub fn answer_ready(&mut self, ready: bool, body: impl Fn() -> String) {
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
