//! The chat plugin served by the real binary: fan-out of published lines to every
//! subscriber of a worker, in order, in thread and process mode; a subscriber that never
//! reads is cut off at its bound while the server's memory stays bounded; the ping timer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sockhost_tests::{children_of, connect, serve, Server};

/// Read one line (without its newline); panics on EOF or a timeout.
fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => panic!("connection closed"),
        Ok(_) => line.trim_end_matches('\n').to_string(),
        Err(e) => panic!("reading a line: {e}"),
    }
}

/// A client: the stream to write, a buffered reader of the same connection.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let writer = connect(addr);
        let reader = BufReader::new(writer.try_clone().unwrap());
        Client { writer, reader }
    }

    /// Send a command line, read the reply line.
    fn ask(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
        read_line(&mut self.reader)
    }
}

const SUBSCRIBERS: usize = 200;
const MESSAGES: usize = 1000;

/// The `i`-th published text: its number, then a payload that differs per message.
fn text(i: usize) -> String {
    let noise: String = sockhost_tests::payload(24, i as u64)
        .iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    format!("{i:04} {noise}")
}

/// 200 subscribers each receive all 1,000 lines, in order; the publisher hears `+OK 200`
/// for each.
fn fan_out(server: &Server) {
    let addr = server.addr();
    let mut subscribers: Vec<Client> = (0..SUBSCRIBERS).map(|_| Client::new(addr)).collect();
    for s in &mut subscribers {
        assert_eq!(s.ask("SUBSCRIBE room"), "+OK");
    }
    let readers: Vec<_> = subscribers
        .into_iter()
        .enumerate()
        .map(|(n, mut s)| {
            std::thread::spawn(move || -> Result<(), String> {
                for i in 0..MESSAGES {
                    let got = read_line(&mut s.reader);
                    let want = format!("MESSAGE room {}", text(i));
                    if got != want {
                        return Err(format!("subscriber {n}, line {i}: {got:?}, want {want:?}"));
                    }
                }
                Ok(())
            })
        })
        .collect();

    let mut publisher = Client::new(addr);
    // Pipelined, 100 lines per write.
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(100) {
        let lines: String = chunk
            .iter()
            .map(|&i| format!("PUBLISH room {}\n", text(i)))
            .collect();
        publisher.writer.write_all(lines.as_bytes()).unwrap();
    }
    for i in 0..MESSAGES {
        assert_eq!(
            read_line(&mut publisher.reader),
            format!("+OK {SUBSCRIBERS}"),
            "reply to publish {i}"
        );
    }
    let failures: Vec<String> = readers
        .into_iter()
        .filter_map(|r| r.join().expect("reader thread").err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        server.stderr.count("cut off"),
        0,
        "{}",
        server.stderr.text()
    );
}

#[test]
fn every_subscriber_gets_every_line_in_order_thread_mode() {
    let server = sockhost_tests::serve_thread("chat", &[]);
    fan_out(&server);
}

#[test]
fn every_subscriber_gets_every_line_in_order_process_mode() {
    let server = serve(
        "chat",
        &[
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "process",
            "--workers",
            "1",
        ],
    );
    server
        .stderr
        .wait_for("chat ready", Duration::from_secs(10));
    assert_eq!(children_of(server.pid()).len(), 1, "one worker");
    fan_out(&server);
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// What a publisher sends in the slow-subscriber test, in total.
const FLOOD_BYTES: usize = 96 << 20;
/// One message's text.
const FLOOD_TEXT: usize = 16 << 10;
/// The host's own bound on a connection's unsent output, raised far above the flood's
/// cut-off point so that only the plugin's cut-off can bound the server's memory.
const MAX_PENDING: &str = "67108864";
/// The bound asserted on the server's memory growth while the flood passes a subscriber
/// that never reads: without the cut-off the server would hold up to 64 MiB for it.
const RSS_GROWTH_BOUND: u64 = 8 << 20;

#[test]
fn a_subscriber_that_never_reads_is_cut_off_and_memory_stays_bounded() {
    let server = sockhost_tests::serve_thread(
        "chat",
        &[
            "--plugin-opt",
            "max-line=32768",
            "--max-pending",
            MAX_PENDING,
        ],
    );
    let pid = server.pid();
    let addr = server.addr();
    let mut slow = Client::new(addr);
    let mut fast = Client::new(addr);
    let mut publisher = Client::new(addr);
    assert_eq!(slow.ask("SUBSCRIBE flood"), "+OK");
    assert_eq!(fast.ask("SUBSCRIBE flood"), "+OK");
    let baseline = rss(pid);

    let body = "x".repeat(FLOOD_TEXT - 5);
    let messages = FLOOD_BYTES / FLOOD_TEXT;
    let mut peak = baseline;
    let mut cut_at = None;
    // Four messages at a time, each batch read by the fast subscriber before the next, so
    // the fast one never falls behind; the slow one reads nothing.
    for batch in (0..messages).collect::<Vec<_>>().chunks(4) {
        let lines: String = batch
            .iter()
            .map(|i| format!("PUBLISH flood {i:04} {body}\n"))
            .collect();
        publisher.writer.write_all(lines.as_bytes()).unwrap();
        for &i in batch {
            let reply = read_line(&mut publisher.reader);
            match (reply.as_str(), cut_at) {
                ("+OK 2", None) => {}
                ("+OK 2", Some(at)) => panic!("message {i} reached 2 after the cut at {at}"),
                ("+OK 1", _) => {
                    cut_at.get_or_insert(i);
                }
                _ => panic!("reply to message {i}: {reply:?}"),
            }
            let got = read_line(&mut fast.reader);
            assert!(
                got.starts_with(&format!("MESSAGE flood {i:04} ")),
                "fast subscriber, message {i}: {:?}",
                &got[..got.len().min(40)]
            );
        }
        peak = peak.max(rss(pid));
    }
    let cut_at = cut_at.expect("the slow subscriber was never cut off");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "slow subscriber cut off at message {cut_at} of {messages} ({} MiB published); \
         server RSS {} MiB -> peak {} MiB (growth {} KiB, bound {} MiB)",
        (cut_at * FLOOD_TEXT) >> 20,
        baseline >> 20,
        peak >> 20,
        growth >> 10,
        RSS_GROWTH_BOUND >> 20
    );
    assert!(
        growth <= RSS_GROWTH_BOUND,
        "server RSS grew by {} KiB while flooding a subscriber that never reads",
        growth >> 10
    );
    // Cut off early, logged once.
    assert!(
        cut_at * FLOOD_TEXT < FLOOD_BYTES / 2,
        "cut off only after {} MiB",
        (cut_at * FLOOD_TEXT) >> 20
    );
    server
        .stderr
        .wait_for("slow subscriber cut off", Duration::from_secs(5));
    assert_eq!(
        server.stderr.count("slow subscriber cut off"),
        1,
        "{}",
        server.stderr.text()
    );

    // The slow subscriber now drains what was queued for it — a prefix of the flood, in
    // order — and then the server's close.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = 0usize;
    let mut line = Vec::new();
    let mut next = 0usize;
    loop {
        assert!(Instant::now() < deadline, "no end of stream after the cut");
        line.clear();
        match slow.reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the slow subscriber: {e}"),
        }
        if line.ends_with(b"\n") {
            let want = format!("MESSAGE flood {next:04} ");
            assert!(
                line.starts_with(want.as_bytes()),
                "slow subscriber, line {next}"
            );
            next += 1;
        }
    }
    assert!(
        received < FLOOD_BYTES / 2,
        "the slow subscriber got {received} bytes"
    );
    assert!(next <= cut_at + 1, "{next} lines, cut at {cut_at}");
    // Its later commands are ignored, and everyone else carries on.
    assert_eq!(fast.ask("PING"), "+PONG");
    assert_eq!(publisher.ask("PUBLISH flood after"), "+OK 1");
    assert_eq!(read_line(&mut fast.reader), "MESSAGE flood after");
}

#[test]
fn ping_arrives_on_a_quiet_connection() {
    let server = sockhost_tests::serve_thread("chat", &["--plugin-opt", "ping=1"]);
    let addr = server.addr();
    let mut quiet = Client::new(addr);
    assert_eq!(quiet.ask("SUBSCRIBE news"), "+OK");
    let start = Instant::now();
    assert_eq!(read_line(&mut quiet.reader), "PING");
    let first = start.elapsed();
    assert_eq!(read_line(&mut quiet.reader), "PING", "and again, re-armed");
    let second = start.elapsed() - first;
    eprintln!("PINGs after {first:?}, then {second:?}");
    // The first comes one to two periods after the client's last bytes.
    assert!(
        first >= Duration::from_millis(500) && first <= Duration::from_secs(5),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_millis(500) && second <= Duration::from_secs(5),
        "{second:?}"
    );
    // An answer is accepted silently, and the connection is still served.
    quiet.writer.write_all(b"PONG\n").unwrap();
    assert_eq!(quiet.ask("PING"), "+PONG");
}

#[test]
fn a_line_past_max_line_is_refused_and_closed() {
    let server = sockhost_tests::serve_thread("chat", &["--plugin-opt", "max-line=64"]);
    let mut c = Client::new(server.addr());
    assert_eq!(c.ask("FLY"), "-ERR unknown command \"FLY\" (commands: SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PING, PONG, QUIT)");
    c.writer.write_all(&[b'x'; 200]).unwrap();
    assert_eq!(
        read_line(&mut c.reader),
        "-ERR line too long (max 64 bytes)"
    );
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    assert!(rest.is_empty());
    let mut q = Client::new(server.addr());
    assert_eq!(q.ask("QUIT"), "+OK bye");
    assert!(sockhost_tests::closed_within(
        &mut q.writer,
        Duration::from_secs(5)
    ));
}
