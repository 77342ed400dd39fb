//! The statsd plugin served by the real binary, fed by the real PyPI `statsd` client
//! (tests/python/statsd_send.py), flushing to a small Graphite plaintext receiver written
//! here: flushes on time when quiet, exact totals, nothing lost across a backend outage
//! that the plugin promised to keep, and a final flush on TERM.

use std::io::{BufRead, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sockhost_tests::{serve, Server};

/// One line Graphite received.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    /// Which accepted connection (0, 1, …) it came on.
    conn: usize,
    name: String,
    value: f64,
    timestamp: u64,
}

/// What the receiver saw, with a way to wait for it.
#[derive(Default)]
struct Seen {
    lines: Vec<Received>,
    /// Connections accepted, and how many of them the sender closed (EOF).
    accepted: usize,
    ended: usize,
    /// Lines that were not `name value timestamp`.
    malformed: Vec<String>,
}

/// A Graphite plaintext receiver on 127.0.0.1, which can be taken down and brought back up
/// on the same port. While down the port is bound but not listening, so connection attempts
/// are refused at once (and no other program can take the port).
struct Graphite {
    port: u16,
    seen: Arc<(Mutex<Seen>, Condvar)>,
    state: GraphiteState,
}

enum GraphiteState {
    /// Bound, not listening.
    Down(socket2::Socket),
    Up {
        stop: Arc<AtomicBool>,
        accept: JoinHandle<()>,
        streams: Arc<Mutex<Vec<TcpStream>>>,
    },
}

impl Graphite {
    /// A receiver that is down (refusing) on a free port.
    fn down() -> Graphite {
        let socket = reserve(0);
        let port = socket
            .local_addr()
            .unwrap()
            .as_socket()
            .expect("an inet address")
            .port();
        Graphite {
            port,
            seen: Arc::default(),
            state: GraphiteState::Down(socket),
        }
    }

    /// A receiver that is up.
    fn up() -> Graphite {
        let mut g = Graphite::down();
        g.start();
        g
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start listening and accepting on the reserved port.
    fn start(&mut self) {
        let GraphiteState::Down(socket) =
            std::mem::replace(&mut self.state, GraphiteState::Down(reserve(0)))
        else {
            panic!("already up");
        };
        socket.listen(128).expect("listen");
        let listener: TcpListener = socket.into();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (seen, stop2, streams2) = (self.seen.clone(), stop.clone(), streams.clone());
        let accept = std::thread::spawn(move || {
            // Poll accept so that `stop` is noticed; readers are plain blocking threads.
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        streams2.lock().unwrap().push(stream.try_clone().unwrap());
                        let conn = {
                            let mut s = seen.0.lock().unwrap();
                            s.accepted += 1;
                            s.accepted - 1
                        };
                        let seen = seen.clone();
                        std::thread::spawn(move || read_lines(stream, conn, &seen));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        self.state = GraphiteState::Up {
            stop,
            accept,
            streams,
        };
    }

    /// Close every connection and stop listening; the port stays reserved (refusing).
    fn stop(&mut self) {
        let GraphiteState::Up {
            stop,
            accept,
            streams,
        } = std::mem::replace(&mut self.state, GraphiteState::Down(reserve(0)))
        else {
            panic!("already down");
        };
        stop.store(true, Ordering::SeqCst);
        for s in streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        accept.join().expect("accept thread");
        // The listener is closed: take the port back at once, not listening.
        self.state = GraphiteState::Down(reserve(self.port));
    }

    /// Wait (bounded) until `what` holds for what was received; returns its value.
    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Seen) -> Option<T>,
    ) -> T {
        let (seen, cv) = &*self.seen;
        let deadline = Instant::now() + timeout;
        let mut guard = seen.lock().unwrap();
        loop {
            if let Some(t) = check(&guard) {
                return t;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "Graphite: timed out after {timeout:?} waiting for {what}; received:\n{}",
                dump(&guard)
            );
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// How many flushes arrived (each has exactly one `statsd.lines` line).
    fn flushes(&self) -> usize {
        flushes(&self.seen.0.lock().unwrap())
    }
}

/// A TCP socket bound to 127.0.0.1:`port` (0: any free port), not listening.
fn reserve(port: u16) -> socket2::Socket {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    socket
        .bind(&addr.into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket
}

fn read_lines(stream: TcpStream, conn: usize, seen: &Arc<(Mutex<Seen>, Condvar)>) {
    let (lock, cv) = &**seen;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let fields: Vec<&str> = line.split(' ').collect();
        let parsed = match fields[..] {
            [name, value, ts] => value
                .parse()
                .ok()
                .zip(ts.parse().ok())
                .map(|(v, t)| Received {
                    at: Instant::now(),
                    conn,
                    name: name.to_string(),
                    value: v,
                    timestamp: t,
                }),
            _ => None,
        };
        let mut s = lock.lock().unwrap();
        match parsed {
            Some(r) => s.lines.push(r),
            None => s.malformed.push(line),
        }
        cv.notify_all();
    }
    lock.lock().unwrap().ended += 1;
    cv.notify_all();
}

fn flushes(s: &Seen) -> usize {
    s.lines
        .iter()
        .filter(|l| l.name == "stats.statsd.lines")
        .count()
}

/// The sum of every value received for `name`.
fn total(s: &Seen, name: &str) -> f64 {
    s.lines
        .iter()
        .filter(|l| l.name == name)
        .map(|l| l.value)
        .sum()
}

/// The last value received for `name`.
fn last(s: &Seen, name: &str) -> Option<f64> {
    s.lines
        .iter()
        .rev()
        .find(|l| l.name == name)
        .map(|l| l.value)
}

fn dump(s: &Seen) -> String {
    let mut text: Vec<String> = s
        .lines
        .iter()
        .map(|l| format!("  [conn {}] {} {} {}", l.conn, l.name, l.value, l.timestamp))
        .collect();
    text.extend(s.malformed.iter().map(|l| format!("  malformed: {l:?}")));
    text.push(format!(
        "  ({} connections accepted, {} ended)",
        s.accepted, s.ended
    ));
    text.join("\n")
}

/// sockhost serving statsd on a UDP port of 127.0.0.1, flushing to `backend`.
fn statsd(backend: &str, extra: &[&str]) -> (Server, u16) {
    let backend = format!("backend={backend}");
    let mut args = vec![
        "--bind",
        "udp://127.0.0.1:0",
        "--concurrency",
        "thread",
        "--plugin-opt",
        &backend,
    ];
    args.extend(extra);
    let server = serve("statsd", &args);
    let port = server
        .listening
        .iter()
        .find(|(t, _)| t == "udp")
        .map(|(_, a)| a.port())
        .expect("a udp bind");
    (server, port)
}

/// Run tests/python/statsd_send.py (the real PyPI statsd client); returns the number of
/// datagrams it sent.
fn send_with_python_statsd(port: u16, args: &[&str]) -> usize {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/statsd_send.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}): {}{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the script prints the datagram count")
}

#[test]
fn a_quiet_server_flushes_on_time() {
    let graphite = Graphite::up();
    let (server, _port) = statsd(&graphite.addr(), &["--plugin-opt", "flush-interval=1"]);
    let started = Instant::now();
    // No datagram at all: five flushes still arrive, one a second.
    let arrivals = graphite.wait("5 flushes", Duration::from_secs(15), |s| {
        let at: Vec<Instant> = s
            .lines
            .iter()
            .filter(|l| l.name == "stats.statsd.lines")
            .map(|l| l.at)
            .collect();
        (at.len() >= 5).then_some(at)
    });
    let first = arrivals[0] - started;
    assert!(
        first <= Duration::from_millis(2500),
        "first flush after {first:?} (interval 1 s)"
    );
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            (Duration::from_millis(400)..=Duration::from_millis(2000)).contains(gap),
            "flushes not on time: gaps {gaps:?}"
        );
    }
    let mean = (arrivals[4] - arrivals[0]) / 4;
    assert!(
        (Duration::from_millis(800)..=Duration::from_millis(1400)).contains(&mean),
        "mean gap {mean:?}, want ~1 s: gaps {gaps:?}"
    );
    let seen = graphite.seen.0.lock().unwrap();
    assert_eq!(seen.accepted, 1, "one connection for every flush");
    assert!(seen.malformed.is_empty(), "{}", dump(&seen));
    // A quiet flush: the statsd lines, at zero, stamped with the time of the flush.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for l in &seen.lines {
        assert!(l.name.starts_with("stats.statsd."), "{l:?}");
        assert_eq!(l.value, 0.0, "{l:?}");
        assert!(now.abs_diff(l.timestamp) <= 30, "{l:?} at {now}");
    }
    drop(server);
}

#[test]
fn totals_from_a_real_statsd_client_are_exact() {
    let graphite = Graphite::up();
    let (server, port) = statsd(&graphite.addr(), &["--plugin-opt", "flush-interval=1"]);
    graphite.wait("the first flush", Duration::from_secs(10), |s| {
        (flushes(s) >= 1).then_some(())
    });
    let datagrams = send_with_python_statsd(port, &["totals"]);
    assert!(datagrams > 200, "{datagrams} datagrams");
    // Two bad lines in one datagram, one good line after them.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"nonsense\nhits:1|x\nhits:0|c", ("127.0.0.1", port))
        .unwrap();

    let complete = |s: &Seen| {
        total(s, "stats.counters.hits") == 1000.0
            && total(s, "stats.counters.sampled") == 400.0
            && total(s, "stats.statsd.bad_lines") == 2.0
            && last(s, "stats.gauges.temp") == Some(12.0)
            && last(s, "stats.gauges.neg") == Some(-4.0)
            && last(s, "stats.sets.users").is_some()
            && last(s, "stats.timers.db.p99").is_some()
    };
    let flushed = graphite.wait("every total", Duration::from_secs(20), |s| {
        complete(s).then(|| flushes(s))
    });
    // One more flush: nothing counted twice, nothing late.
    graphite.wait("one more flush", Duration::from_secs(10), |s| {
        (flushes(s) > flushed).then_some(())
    });
    let s = graphite.seen.0.lock().unwrap();
    assert!(complete(&s), "{}", dump(&s));
    assert_eq!(total(&s, "stats.counters.hits"), 1000.0);
    assert_eq!(total(&s, "stats.counters.sampled"), 400.0, "rate 0.5");
    // Good lines: 1000 + 1 (hits:0) + 200 + 4 gauges + 1 (neg:0) + 4 sets + 20 timers + 1.
    assert_eq!(total(&s, "stats.statsd.lines"), 1231.0, "{}", dump(&s));
    assert_eq!(total(&s, "stats.statsd.bad_lines"), 2.0);
    assert_eq!(total(&s, "stats.statsd.dropped_lines"), 0.0);
    // The set and the timer each arrived in one datagram, so in one flush.
    assert_eq!(total(&s, "stats.sets.users"), 3.0, "ann, bob, cid");
    for (name, want) in [
        ("count", 20.0),
        ("min", 1.0),
        ("max", 20.0),
        ("mean", 10.5),
        ("p50", 10.0),
        ("p90", 18.0),
        ("p99", 20.0),
    ] {
        let name = format!("stats.timers.db.{name}");
        assert_eq!(total(&s, &name), want, "{name}");
    }
    assert!(s.malformed.is_empty(), "{}", dump(&s));
    drop(server);
}

#[test]
fn backend_down_then_up_loses_nothing_the_plugin_keeps() {
    let mut graphite = Graphite::down();
    let (server, port) = statsd(
        &graphite.addr(),
        &[
            "--plugin-opt",
            "flush-interval=1",
            "--plugin-opt",
            "max-queued-flushes=100",
        ],
    );
    // Down from the start: the first attempt (when the worker starts serving) is refused.
    server
        .stderr
        .wait_for("unreachable", Duration::from_secs(10));
    send_with_python_statsd(port, &["count", "early", "300"]);
    // Let at least two flushes queue up while the backend refuses.
    sockhost_tests::wait_until("2 flushes queued", Duration::from_secs(20), || {
        server.stderr.text().lines().any(|l| {
            l.contains("unreachable;")
                && l.split(" flushes queued")
                    .next()
                    .and_then(|h| h.rsplit(' ').next())
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n >= 2)
        })
    });

    // Up: the queued flushes arrive first, together, oldest first, then the live ones.
    graphite.start();
    let line = server
        .stderr
        .wait_for("connected; sending", Duration::from_secs(30));
    let queued: usize = line
        .split("connected; sending ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!(queued >= 2, "{line}");
    graphite.wait("the early counts", Duration::from_secs(20), |s| {
        (total(s, "stats.counters.early") == 300.0).then_some(())
    });
    {
        let s = graphite.seen.0.lock().unwrap();
        let stamps: Vec<u64> = s
            .lines
            .iter()
            .filter(|l| l.name == "stats.statsd.lines")
            .map(|l| l.timestamp)
            .collect();
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "oldest first: {stamps:?}"
        );
    }

    // Down again, right after a flush arrived (the plugin posts each flush as it makes it;
    // it promises to keep only what it makes while no connection is up).
    let before = graphite.flushes();
    graphite.wait("a live flush", Duration::from_secs(10), |s| {
        (flushes(s) > before).then_some(())
    });
    graphite.stop();
    server
        .stderr
        .wait_for("reconnecting at the next flush", Duration::from_secs(10));
    let refused_before = server.stderr.count("unreachable;");
    send_with_python_statsd(port, &["count", "late", "200"]);
    sockhost_tests::wait_until(
        "an attempt refused while down",
        Duration::from_secs(20),
        || server.stderr.count("unreachable;") > refused_before,
    );

    // Up again: everything arrives exactly once.
    graphite.start();
    let flushed = graphite.wait("the late counts", Duration::from_secs(40), |s| {
        (total(s, "stats.counters.late") == 200.0).then(|| flushes(s))
    });
    graphite.wait("one more flush", Duration::from_secs(10), |s| {
        (flushes(s) > flushed).then_some(())
    });
    let s = graphite.seen.0.lock().unwrap();
    assert_eq!(total(&s, "stats.counters.early"), 300.0, "{}", dump(&s));
    assert_eq!(total(&s, "stats.counters.late"), 200.0, "{}", dump(&s));
    assert!(s.accepted >= 2, "reconnected: {}", dump(&s));
    assert_eq!(
        server.stderr.count("dropped the flush"),
        0,
        "the queue bound was not reached"
    );
    drop(server);
}

#[test]
fn final_flush_on_term() {
    let graphite = Graphite::up();
    let (mut server, port) = statsd(
        &graphite.addr(),
        &[
            // No periodic flush during the test: only the final one can carry the data.
            "--plugin-opt",
            "flush-interval=3600",
            "--log-level",
            "trace",
        ],
    );
    server
        .stderr
        .wait_for("connected; sending 0 queued", Duration::from_secs(10));
    let datagrams = send_with_python_statsd(port, &["final"]);
    assert_eq!(datagrams, 3);
    sockhost_tests::wait_until(
        "the 3 datagrams aggregated",
        Duration::from_secs(10),
        || server.stderr.count("aggregated") >= datagrams,
    );
    assert_eq!(graphite.flushes(), 0, "no flush before the stop");

    let stop = Instant::now();
    server.signal("TERM");
    graphite.wait("the final flush", Duration::from_secs(10), |s| {
        (flushes(s) == 1).then_some(())
    });
    // The plugin closes its backend connection after the final flush, so the host does not
    // wait for it: the server exits well within --graceful-timeout (30 s).
    graphite.wait(
        "the backend connection closed",
        Duration::from_secs(10),
        |s| (s.ended == s.accepted).then_some(()),
    );
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(
        stop.elapsed() < Duration::from_secs(10),
        "{:?}",
        stop.elapsed()
    );
    let s = graphite.seen.0.lock().unwrap();
    assert_eq!(total(&s, "stats.counters.final"), 7.0, "{}", dump(&s));
    assert_eq!(last(&s, "stats.gauges.final_gauge"), Some(42.0));
    assert_eq!(total(&s, "stats.timers.final_timer.p50"), 5.0);
    assert_eq!(total(&s, "stats.statsd.lines"), 3.0);
    assert!(server.stderr.text().contains("final flush handed over"));
}
