//! `fanout` mode: deliveries per second from one publisher to many subscribers, the cost of
//! a server pushing one message to N connections.
//!
//! `--subscribers` connections each subscribe to one channel (and wait for the server's
//! acknowledgement), then one publisher connection sends `--messages` messages of `--size`
//! payload bytes to that channel. Every subscriber must receive every message, in order:
//! M × N deliveries. Two protocols:
//!
//! - `chat` (sockhost's `plugins/chat`, and `fanout-baseline`): `SUBSCRIBE ch` → `+OK`,
//!   `PUBLISH ch text` → `+OK N`, delivered as `MESSAGE ch text\n`;
//! - `redis` (redis-server's pub/sub, RESP): `SUBSCRIBE ch` → the subscribe confirmation,
//!   `PUBLISH ch text` → `:N`, delivered as `*3 $7 message $2 ch $64 text` (RESP framing).
//!   The default for a `redis://HOST:PORT` address.
//!
//! A delivery has a fixed size per protocol, and every subscriber receives the same byte
//! stream, so the expected stream is built once and each subscriber compares what it reads
//! against it (a lost, duplicated, reordered or corrupted delivery is a mismatch) and counts
//! deliveries by bytes. The publisher checks that every `PUBLISH` reached all N subscribers.
//!
//! **The window.** The publisher keeps at most `--window` messages ahead of both its own
//! replies and the *slowest* subscriber: message k is sent only once every subscriber has
//! received message k − window. So no server ever queues more than `window` deliveries per
//! subscriber (chat would otherwise, rightly, cut off a subscriber that the one-core client
//! reads too slowly), and the figure is the rate at which the server and the client together
//! move messages, not how much a server buffers. Within the window a server may batch: with
//! the default 64, several messages usually leave in one write per subscriber, on every
//! server alike.
//!
//! The clock runs from the first `PUBLISH` to the last delivery; connecting and subscribing
//! are not timed. The run stops when all M × N deliveries have arrived, at the first error,
//! or at `--deadline`, whichever comes first.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use crate::args::Flags;
use crate::{cpu_time, describe, json_num, say, Errors};

/// The channel every subscriber listens on.
const CHANNEL: &str = "bench";
/// Connects (+ subscribes) in flight at once, so the server's listen backlog never overflows.
const PARALLEL_CONNECTS: usize = 64;
/// Longest one connect + subscribe may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest expected byte stream built in memory (messages × delivery size).
const MAX_STREAM: usize = 256 << 20;

/// The wire protocol spoken to the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Chat,
    Redis,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Chat => "chat",
            Proto::Redis => "redis",
        }
    }

    /// The command that subscribes to [`CHANNEL`].
    fn subscribe(self) -> Vec<u8> {
        match self {
            Proto::Chat => format!("SUBSCRIBE {CHANNEL}\n").into_bytes(),
            Proto::Redis => resp(&[b"SUBSCRIBE", CHANNEL.as_bytes()]),
        }
    }

    /// The server's answer to [`Proto::subscribe`].
    fn subscribed(self) -> Vec<u8> {
        match self {
            Proto::Chat => b"+OK\n".to_vec(),
            Proto::Redis => {
                let mut v = resp(&[b"subscribe", CHANNEL.as_bytes()]);
                v[1] = b'3';
                v.extend_from_slice(b":1\r\n");
                v
            }
        }
    }

    /// Append the command that publishes `payload`.
    fn publish(self, payload: &[u8], out: &mut Vec<u8>) {
        match self {
            Proto::Chat => {
                out.extend_from_slice(format!("PUBLISH {CHANNEL} ").as_bytes());
                out.extend_from_slice(payload);
                out.push(b'\n');
            }
            Proto::Redis => out.extend(resp(&[b"PUBLISH", CHANNEL.as_bytes(), payload])),
        }
    }

    /// The server's answer to a publish that reached `n` subscribers.
    fn published(self, n: usize) -> Vec<u8> {
        match self {
            Proto::Chat => format!("+OK {n}\n").into_bytes(),
            Proto::Redis => format!(":{n}\r\n").into_bytes(),
        }
    }

    /// Append what a subscriber receives for `payload`.
    fn delivery(self, payload: &[u8], out: &mut Vec<u8>) {
        match self {
            Proto::Chat => {
                out.extend_from_slice(format!("MESSAGE {CHANNEL} ").as_bytes());
                out.extend_from_slice(payload);
                out.push(b'\n');
            }
            Proto::Redis => out.extend(resp(&[b"message", CHANNEL.as_bytes(), payload])),
        }
    }
}

/// A RESP array of bulk strings (how redis clients send commands and how redis pushes a
/// pub/sub message).
fn resp(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        v.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        v.extend_from_slice(p);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Payload of message `seq`: printable (no blank, CR or LF, so that it is one word of a
/// line protocol), its first 16 bytes the sequence number in hex, the rest a pattern that
/// shifts with `seq`.
fn payload(seq: u64, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let tag = format!("{seq:016x}");
    out.extend((0..size).map(|j| b'a' + ((seq as usize + j) % 26) as u8));
    let n = size.min(tag.len());
    out[start..start + n].copy_from_slice(&tag.as_bytes()[..n]);
}

/// Settings of a `fanout` run.
pub struct Config {
    addr: SocketAddr,
    proto: Proto,
    subscribers: usize,
    messages: usize,
    size: usize,
    window: usize,
    deadline: Duration,
    json: bool,
}

impl Config {
    /// Take this mode's flags.
    pub fn from_flags(mut f: Flags) -> Result<Config, String> {
        // A redis:// address means the redis protocol, so that one command line (with the
        // address substituted) drives both a chat server and redis.
        let redis_url = f.peek("addr").is_some_and(|a| a.starts_with("redis://"));
        let default = if redis_url { "redis" } else { "chat" };
        let proto = match f.take("protocol", default.to_string())?.as_str() {
            "redis" => Proto::Redis,
            "chat" if !redis_url => Proto::Chat,
            "chat" => return Err("--protocol chat with a redis:// address".into()),
            other => return Err(format!("--protocol {other}: expected chat or redis")),
        };
        let c = Config {
            addr: f.addr()?,
            proto,
            subscribers: f.count("subscribers", 1000)?,
            messages: f.count("messages", 2000)?,
            size: f.count("size", 64)?,
            window: f.count("window", 64)?,
            deadline: f.seconds("deadline", 30.0, true)?,
            json: f.switch("json"),
        };
        f.finish()?;
        if c.size > 4000 {
            // chat's default max-line is 4096 bytes per command line.
            return Err(format!("--size {}: at most 4000", c.size));
        }
        let stream = c.messages.saturating_mul(c.proto.delivery_len(c.size));
        if stream > MAX_STREAM {
            return Err(format!(
                "--messages {} x --size {}: over {} MiB of expected deliveries; send fewer",
                c.messages,
                c.size,
                MAX_STREAM >> 20
            ));
        }
        Ok(c)
    }
}

impl Proto {
    /// Bytes of one delivery of a `size`-byte payload.
    fn delivery_len(self, size: usize) -> usize {
        let mut v = Vec::new();
        self.delivery(&vec![b'x'; size], &mut v);
        v.len()
    }
}

/// State shared by the publisher, the subscribers and the run.
struct Shared {
    /// `at_least[k]`: how many subscribers have received at least k messages (k = 0..=M).
    at_least: Vec<AtomicU32>,
    /// Messages every subscriber has received.
    complete: AtomicU64,
    /// `PUBLISH` replies the publisher has read.
    replies: AtomicU64,
    /// Bytes received by all subscribers together.
    received: AtomicU64,
    /// Wakes the publisher when `complete` or `replies` grows.
    window_moved: Notify,
    /// Wakes the run when everything arrived or an error happened.
    finished: Notify,
    errors: Mutex<Errors>,
    mismatches: AtomicU64,
}

impl Shared {
    fn fail(&self, msg: impl Into<String>) {
        self.errors.lock().unwrap().add(msg);
        self.finished.notify_one();
    }

    fn mismatch(&self, msg: impl Into<String>) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
        self.errors.lock().unwrap().note(msg);
        self.finished.notify_one();
    }

    fn failed(&self) -> bool {
        self.errors.lock().unwrap().count > 0 || self.mismatches.load(Ordering::Relaxed) > 0
    }
}

/// Run the mode; `true` when every delivery arrived, with no error and no mismatch.
pub async fn run(cfg: Config) -> bool {
    let cfg = Arc::new(cfg);
    let started = Instant::now();
    let deadline = started + cfg.deadline;
    // The byte stream every subscriber must receive.
    let mut expected = Vec::with_capacity(cfg.messages * cfg.proto.delivery_len(cfg.size));
    let mut buf = Vec::with_capacity(cfg.size);
    for seq in 0..cfg.messages as u64 {
        buf.clear();
        payload(seq, cfg.size, &mut buf);
        cfg.proto.delivery(&buf, &mut expected);
    }
    let expected: Arc<[u8]> = expected.into();
    let shared = Arc::new(Shared {
        at_least: (0..=cfg.messages).map(|_| AtomicU32::new(0)).collect(),
        complete: AtomicU64::new(0),
        replies: AtomicU64::new(0),
        received: AtomicU64::new(0),
        window_moved: Notify::new(),
        finished: Notify::new(),
        errors: Mutex::new(Errors::default()),
        mismatches: AtomicU64::new(0),
    });

    // Subscribe everyone, PARALLEL_CONNECTS at a time; each reports back once subscribed.
    let gate = Arc::new(Semaphore::new(PARALLEL_CONNECTS));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let subs: Vec<_> = (0..cfg.subscribers)
        .map(|_| {
            let (cfg, shared, expected) = (cfg.clone(), shared.clone(), expected.clone());
            let (gate, ready) = (gate.clone(), ready_tx.clone());
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("semaphore");
                let stream = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(&cfg)).await;
                drop(permit);
                match stream {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(true);
                        subscriber(stream, &cfg, &shared, &expected).await;
                    }
                    Ok(Err(e)) => {
                        shared.fail(e);
                        let _ = ready.send(false);
                    }
                    Err(_) => {
                        shared.fail("connect + subscribe timed out");
                        let _ = ready.send(false);
                    }
                }
            })
        })
        .collect();
    drop(ready_tx);
    let mut subscribed = 0;
    while let Some(ok) = ready_rx.recv().await {
        if !ok {
            break;
        }
        subscribed += 1;
        if subscribed == cfg.subscribers {
            break;
        }
    }
    let setup = started.elapsed();

    let mut elapsed = Duration::ZERO;
    let mut cpu = None;
    if subscribed == cfg.subscribers {
        let t0 = Instant::now();
        let c0 = cpu_time();
        let publisher = {
            let (cfg, shared) = (cfg.clone(), shared.clone());
            tokio::spawn(async move { publisher(&cfg, &shared).await })
        };
        let all = cfg.messages as u64;
        loop {
            let done = shared.complete.load(Ordering::Acquire) == all;
            if done || shared.failed() || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = shared.finished.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        elapsed = t0.elapsed();
        cpu = c0
            .zip(cpu_time())
            .map(|(c0, c1)| (c1 - c0).as_secs_f64() / elapsed.as_secs_f64());
        if shared.complete.load(Ordering::Acquire) < all && !shared.failed() {
            shared.fail(format!(
                "deadline: {} of {} messages reached every subscriber within {:.1} s",
                shared.complete.load(Ordering::Acquire),
                all,
                cfg.deadline.as_secs_f64()
            ));
        }
        publisher.abort();
    }
    for s in subs {
        s.abort();
    }

    let delivery = cfg.proto.delivery_len(cfg.size) as u64;
    let deliveries = shared.received.load(Ordering::Relaxed) / delivery;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        deliveries as f64 / secs
    } else {
        0.0
    };
    let errors = std::mem::take(&mut *shared.errors.lock().unwrap());
    let mismatches = shared.mismatches.load(Ordering::Relaxed);
    errors.report("fanout");
    if cfg.json {
        say(&format!(
            "{{\"mode\":\"fanout\",\"addr\":\"{}\",\"protocol\":\"{}\",\"subscribers\":{},\
\"subscribed\":{},\"messages\":{},\"size\":{},\"delivery_bytes\":{},\"window\":{},\
\"setup_s\":{:.3},\"elapsed_s\":{:.4},\"deliveries\":{},\"deliveries_per_sec\":{:.1},\
\"errors\":{},\"mismatches\":{},\"client_cpu\":{}}}",
            cfg.addr,
            cfg.proto.name(),
            cfg.subscribers,
            subscribed,
            cfg.messages,
            cfg.size,
            delivery,
            cfg.window,
            setup.as_secs_f64(),
            secs,
            deliveries,
            rate,
            errors.count,
            mismatches,
            json_num(cpu, 3)
        ));
    } else {
        say(&format!(
            "fanout protocol={} subscribers={}/{} messages={} size={} window={} setup={:.2}s \
elapsed={:.3}s deliveries={} deliveries/s={:.0} errors={} mismatches={} client_cpu={}",
            cfg.proto.name(),
            subscribed,
            cfg.subscribers,
            cfg.messages,
            cfg.size,
            cfg.window,
            setup.as_secs_f64(),
            secs,
            deliveries,
            rate,
            errors.count,
            mismatches,
            cpu.map_or("n/a".into(), |c| format!("{:.0}%", c * 100.0)),
        ));
    }
    errors.count == 0
        && mismatches == 0
        && deliveries == cfg.messages as u64 * cfg.subscribers as u64
}

/// Connect, subscribe, and read the server's confirmation.
async fn subscribe(cfg: &Config) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(cfg.addr)
        .await
        .map_err(|e| describe("connect", &e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| describe("nodelay", &e))?;
    stream
        .write_all(&cfg.proto.subscribe())
        .await
        .map_err(|e| describe("subscribe", &e))?;
    let want = cfg.proto.subscribed();
    let mut got = vec![0u8; want.len()];
    stream
        .read_exact(&mut got)
        .await
        .map_err(|e| describe("reading the subscribe confirmation", &e))?;
    if got != want {
        return Err(format!(
            "subscribe answered {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        ));
    }
    Ok(stream)
}

/// Read deliveries until the whole expected stream has arrived, checking every byte.
async fn subscriber(mut stream: TcpStream, cfg: &Config, shared: &Shared, expected: &[u8]) {
    let delivery = cfg.proto.delivery_len(cfg.size);
    let n_subs = cfg.subscribers as u32;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0usize;
    while at < expected.len() {
        let n = match stream.read(&mut buf).await {
            Ok(0) => {
                return shared.fail(format!(
                    "a subscriber's connection was closed by the server after {} of {} messages",
                    at / delivery,
                    cfg.messages
                ))
            }
            Ok(n) => n,
            Err(e) => return shared.fail(describe("subscriber read", &e)),
        };
        if at + n > expected.len() || buf[..n] != expected[at..at + n] {
            return shared.mismatch(format!(
                "a subscriber received bytes other than message {} of the expected stream",
                at / delivery
            ));
        }
        shared.received.fetch_add(n as u64, Ordering::Relaxed);
        let (before, after) = (at / delivery, (at + n) / delivery);
        at += n;
        for k in before + 1..=after {
            if shared.at_least[k].fetch_add(1, Ordering::Relaxed) + 1 == n_subs {
                // Every subscriber has message k (and so every earlier one).
                shared.complete.fetch_max(k as u64, Ordering::Release);
                shared.window_moved.notify_one();
                if k == cfg.messages {
                    shared.finished.notify_one();
                }
            }
        }
    }
}

/// Publish the messages within the window, and check every reply.
async fn publisher(cfg: &Config, shared: &Shared) {
    let stream = match TcpStream::connect(cfg.addr).await {
        Ok(s) => s,
        Err(e) => return shared.fail(describe("publisher connect", &e)),
    };
    let _ = stream.set_nodelay(true);
    let (mut rx, mut tx) = stream.into_split();
    let want = cfg.proto.published(cfg.subscribers);
    let all = cfg.messages as u64;
    let replies = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got: Vec<u8> = Vec::new();
        let mut count = 0u64;
        while count < all {
            let n = match rx.read(&mut buf).await {
                Ok(0) => return shared.fail("the server closed the publisher's connection"),
                Ok(n) => n,
                Err(e) => return shared.fail(describe("publisher read", &e)),
            };
            got.extend_from_slice(&buf[..n]);
            let whole = got.len() / want.len() * want.len();
            if let Some(bad) = got[..whole].chunks(want.len()).find(|r| *r != want) {
                return shared.mismatch(format!(
                    "PUBLISH answered {:?}, expected {:?} (not every subscriber got it)",
                    String::from_utf8_lossy(bad),
                    String::from_utf8_lossy(&want)
                ));
            }
            count += (whole / want.len()) as u64;
            got.drain(..whole);
            shared.replies.store(count, Ordering::Release);
            shared.window_moved.notify_one();
        }
    };
    let sends = async {
        let mut out = Vec::new();
        let mut text = Vec::with_capacity(cfg.size);
        let mut sent = 0u64;
        while sent < all {
            let behind = shared
                .complete
                .load(Ordering::Acquire)
                .min(shared.replies.load(Ordering::Acquire));
            let until = (behind + cfg.window as u64).min(all);
            if sent >= until {
                shared.window_moved.notified().await;
                continue;
            }
            out.clear();
            for seq in sent..until {
                text.clear();
                payload(seq, cfg.size, &mut text);
                cfg.proto.publish(&text, &mut out);
            }
            if let Err(e) = tx.write_all(&out).await {
                return shared.fail(describe("publisher write", &e));
            }
            sent = until;
        }
    };
    tokio::join!(replies, sends);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_framing() {
        assert_eq!(
            Proto::Redis.subscribed(),
            b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n".to_vec()
        );
        let mut v = Vec::new();
        Proto::Redis.delivery(b"hi", &mut v);
        assert_eq!(
            v,
            b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$2\r\nhi\r\n".to_vec()
        );
        assert_eq!(Proto::Redis.published(1000), b":1000\r\n".to_vec());
        assert_eq!(Proto::Chat.delivery_len(64), "MESSAGE bench \n".len() + 64);
    }

    #[test]
    fn payloads_are_one_printable_word_and_differ() {
        let p = |seq| {
            let mut v = Vec::new();
            payload(seq, 64, &mut v);
            v
        };
        assert_eq!(p(3).len(), 64);
        assert!(p(3).iter().all(|b| b.is_ascii_graphic()));
        assert_ne!(p(3), p(4));
    }
}
