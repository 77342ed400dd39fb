//! `fanout-baseline`: a plain tokio publish/subscribe server speaking chat's line protocol,
//! the anchor for sockhost's fan-out figure (`bench/run.sh`, section `fanout`).
//!
//! Written the way a Rust user would write a chat server with tokio (the shape of tokio's
//! own `examples/chat.rs`): a **current_thread** runtime (like sockhost's `--concurrency
//! thread`), one task per connection, and a shared table from channel to its subscribers,
//! each subscriber a **bounded `tokio::sync::mpsc` sender** to its connection's task. A
//! `PUBLISH` formats the `MESSAGE` line once (an `Arc<[u8]>`), `try_send`s it to every
//! subscriber and answers `+OK N`; each connection's task writes what its channel brings,
//! draining whatever is already queued into one write. A per-subscriber mpsc rather than one
//! `tokio::sync::broadcast` per channel because one connection may subscribe to several
//! channels, and one receiver per connection keeps its task a plain `select!` (broadcast
//! would need a `StreamMap` of receivers); it also gives chat's slow-subscriber rule
//! directly: a subscriber whose queue is full ([`QUEUE`] lines) is unsubscribed and
//! disconnected, so memory per subscriber stays bounded.
//!
//! The protocol is chat's (`plugins/chat/src/lib.rs`), minus its options: `SUBSCRIBE ch` →
//! `+OK`, `UNSUBSCRIBE ch` → `+OK`, `PUBLISH ch text` → `+OK N`, `PING` → `+PONG`, `QUIT` →
//! `+OK bye`; anything else → `-ERR unknown command`. Lines longer than [`MAX_LINE`] close
//! the connection.
//!
//! Usage: `fanout-baseline [--bind ADDR]` (default `127.0.0.1:0`). Once bound it prints
//! `listening on tcp://ADDR` (flushed), exactly like sockhost, and it exits on SIGTERM or
//! SIGINT.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

const USAGE: &str = "usage: fanout-baseline [--bind ADDR]
  --bind ADDR   address to listen on (default 127.0.0.1:0)";

/// Lines queued for one subscriber before it counts as too slow and is disconnected
/// (64-byte messages: ~300 KiB, about chat's 256 KiB high-water mark).
const QUEUE: usize = 4096;
/// The longest command line, as chat's default `max-line`.
const MAX_LINE: usize = 4096;

/// A line on its way to a subscriber, formatted once for all of them.
type Line = Arc<[u8]>;

/// The subscriptions: channel → (connection id → its queue), and each connection's own
/// sender (cloned into a channel by `SUBSCRIBE`).
#[derive(Default)]
struct Hub {
    channels: HashMap<Vec<u8>, HashMap<u64, mpsc::Sender<Line>>>,
    conns: HashMap<u64, mpsc::Sender<Line>>,
}

impl Hub {
    /// Queue `line` for every subscriber of `channel`; returns how many got it. A subscriber
    /// whose queue is full is cut off: dropped from every channel and from `conns`, so that
    /// its task, once it has written what is queued, sees its queue close and ends.
    fn publish(&mut self, channel: &[u8], line: Line) -> usize {
        let Some(subs) = self.channels.get_mut(channel) else {
            return 0;
        };
        let mut n = 0;
        let mut cut = Vec::new();
        for (&id, tx) in subs.iter() {
            match tx.try_send(line.clone()) {
                Ok(()) => n += 1,
                Err(_) => cut.push(id),
            }
        }
        for id in cut {
            self.conns.remove(&id);
            self.unsubscribe_all(id);
        }
        n
    }

    fn unsubscribe_all(&mut self, id: u64) {
        self.channels.retain(|_, subs| {
            subs.remove(&id);
            !subs.is_empty()
        });
    }
}

fn parse_args() -> Result<SocketAddr, String> {
    let mut bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bind" => {
                let v = it.next().ok_or("--bind needs a value")?;
                let text = v.strip_prefix("tcp://").unwrap_or(&v);
                bind = text.parse().map_err(|e| format!("--bind {v}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(bind)
}

fn main() -> ExitCode {
    let bind = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fanout-baseline: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(serve(bind)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Bind, announce, and accept until SIGTERM/SIGINT.
async fn serve(bind: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on tcp://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    let hub = Arc::new(Mutex::new(Hub::default()));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    next_id += 1;
                    let (hub, id) = (hub.clone(), next_id);
                    tokio::spawn(async move {
                        let _ = connection(stream, id, &hub).await;
                        let mut hub = hub.lock().unwrap();
                        hub.conns.remove(&id);
                        hub.unsubscribe_all(id);
                    });
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on the ready listener.
                    eprintln!("fanout-baseline: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Serve one connection: its commands, and the lines published to its subscriptions.
async fn connection(stream: TcpStream, id: u64, hub: &Mutex<Hub>) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let (tx, mut rx) = mpsc::channel::<Line>(QUEUE);
    hub.lock().unwrap().conns.insert(id, tx);
    let mut line = Vec::new();
    let mut out = Vec::new();
    loop {
        // At most one byte past the limit of the line so far: a line never grows unbounded.
        let room = (MAX_LINE + 1).saturating_sub(line.len()).max(1);
        let mut limited = (&mut rd).take(room as u64);
        tokio::select! {
            read = limited.read_until(b'\n', &mut line) => {
                if read? == 0 {
                    return Ok(());
                }
                if line.len() > MAX_LINE && !line.ends_with(b"\n") {
                    wr.write_all(b"-ERR line too long\n").await?;
                    return Ok(());
                }
                let quit = command(&line, id, hub, &mut out);
                line.clear();
                wr.write_all(&out).await?;
                out.clear();
                if quit {
                    return Ok(());
                }
            }
            msg = rx.recv() => {
                // Closed: this subscriber was cut off for being too slow (see `Hub::publish`).
                let Some(msg) = msg else { return Ok(()) };
                out.extend_from_slice(&msg);
                while let Ok(more) = rx.try_recv() {
                    out.extend_from_slice(&more);
                }
                wr.write_all(&out).await?;
                out.clear();
            }
        }
    }
}

/// Run one command line, appending its reply to `out`; `true` for `QUIT`.
fn command(line: &[u8], id: u64, hub: &Mutex<Hub>, out: &mut Vec<u8>) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return false;
    }
    let (word, rest) = split_word(line);
    match word.to_ascii_uppercase().as_slice() {
        b"SUBSCRIBE" if !rest.is_empty() => {
            let mut hub = hub.lock().unwrap();
            // Not in `conns`: cut off, its queue closing; it subscribes to nothing more.
            if let Some(tx) = hub.conns.get(&id).cloned() {
                hub.channels
                    .entry(rest.to_vec())
                    .or_default()
                    .insert(id, tx);
            }
            out.extend_from_slice(b"+OK\n");
        }
        b"UNSUBSCRIBE" if !rest.is_empty() => {
            if let Some(subs) = hub.lock().unwrap().channels.get_mut(rest) {
                subs.remove(&id);
            }
            out.extend_from_slice(b"+OK\n");
        }
        b"PUBLISH" => {
            let (channel, text) = split_word(rest);
            if channel.is_empty() {
                out.extend_from_slice(b"-ERR usage: PUBLISH channel text\n");
                return false;
            }
            let mut msg = Vec::with_capacity(10 + channel.len() + text.len());
            msg.extend_from_slice(b"MESSAGE ");
            msg.extend_from_slice(channel);
            msg.push(b' ');
            msg.extend_from_slice(text);
            msg.push(b'\n');
            let n = hub.lock().unwrap().publish(channel, msg.into());
            out.extend_from_slice(format!("+OK {n}\n").as_bytes());
        }
        b"PING" => out.extend_from_slice(b"+PONG\n"),
        b"PONG" => {}
        b"QUIT" => {
            out.extend_from_slice(b"+OK bye\n");
            return true;
        }
        _ => out.extend_from_slice(b"-ERR unknown command or usage\n"),
    }
    false
}

/// The first blank-separated word of `s`, and the rest after one blank.
fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(at) => (&s[..at], &s[at + 1..]),
        None => (s, &[]),
    }
}
