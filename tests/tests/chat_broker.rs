//! Chat through a real Redis broker (`--plugin-opt broker=redis://…`): two sockhost
//! instances in process mode, two workers each, and one redis-server. 100 subscribers
//! spread over all four workers (each connection's worker found from /proc, not hoped
//! for) hear each of 1,000 lines published on all four workers exactly once, in the
//! broker's one order; redis-server is killed and restarted in the middle: while it is
//! away a line reaches exactly the subscribers of its publisher's worker (what the guide
//! says is lost: everyone else's copy), and once it is back every line reaches everyone
//! again. redis-server runs as the test's child on a free loopback port (`.ci/run`
//! installs it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sockhost_tests::daemon::Daemon;
use sockhost_tests::{children_of, connect, serve, serving_process, wait_until, Server};

/// Subscribers per worker (4 workers: 100 in all).
const PER_WORKER: usize = 25;
/// Lines each of the four publishers publishes before the outage, and again after it
/// (4 × 125 × 2 = 1,000 through the broker).
const PER_PUBLISHER: usize = 125;
/// Lines each publisher publishes while the broker is away.
const DURING_OUTAGE: usize = 10;

/// A client: the stream to write, a buffered reader of the same connection.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// Index of the worker serving it (0..4: instance × 2 + worker).
    worker: usize,
}

impl Client {
    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    /// One line, without its newline; panics (naming `what`) on EOF or the read timeout.
    fn line(&mut self, what: &str) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("{what}: connection closed"),
            Ok(_) => line.trim_end_matches('\n').to_string(),
            Err(e) => panic!("{what}: {e}"),
        }
    }

    /// The ids of the next `n` MESSAGE lines on `room`.
    fn messages(&mut self, n: usize, what: &str) -> Vec<String> {
        (0..n)
            .map(|i| {
                let line = self.line(&format!("{what}, line {i}"));
                line.strip_prefix("MESSAGE room ")
                    .unwrap_or_else(|| panic!("{what}: {line:?} is not a MESSAGE on room"))
                    .to_string()
            })
            .collect()
    }
}

/// One sockhost instance: 2 worker processes sharing `redis` as their broker.
struct Instance {
    server: Server,
    workers: Vec<u32>,
}

fn instance(redis: SocketAddr) -> Instance {
    let broker = format!("broker=redis://{redis}/test");
    let server = serve(
        "chat",
        &[
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "process",
            "--workers",
            "2",
            "--plugin-opt",
            &broker,
        ],
    );
    let mut workers = Vec::new();
    wait_until("2 worker processes", Duration::from_secs(10), || {
        workers = children_of(server.pid());
        workers.len() == 2
    });
    wait_for_lines(&server, "connected; publishing through it", 2);
    Instance { server, workers }
}

/// Wait (bounded) until the instance's workers have logged `needle` `n` times in all.
fn wait_for_lines(server: &Server, needle: &str, n: usize) {
    wait_until(
        &format!("{n} log lines saying {needle:?}"),
        Duration::from_secs(20),
        || server.stderr.count(needle) >= n,
    );
}

/// Clients of `instances`, `per_worker` on each worker: connect (and, for subscribers,
/// subscribe), find the connection's worker, keep it if that worker needs more. The
/// kernel spreads connections over a worker group's sockets by hash; the loop stops by
/// itself at a generous bound.
fn clients(instances: &[Instance], per_worker: usize, subscribe: bool) -> Vec<Client> {
    let mut kept = Vec::new();
    for (i, inst) in instances.iter().enumerate() {
        let mut have = [0usize; 2];
        let mut attempts = 0;
        while have.iter().any(|&n| n < per_worker) {
            attempts += 1;
            assert!(
                attempts <= 40 * per_worker + 200,
                "{attempts} connections did not give each worker of instance {i} {per_worker} clients (have {have:?})"
            );
            let writer = connect(inst.server.addr());
            let mut reader = BufReader::new(writer.try_clone().unwrap());
            // A round trip: the connection is accepted by its worker.
            writer
                .try_clone()
                .unwrap()
                .write_all(if subscribe {
                    b"SUBSCRIBE room\n"
                } else {
                    b"PING\n"
                })
                .unwrap();
            let mut reply = String::new();
            reader.read_line(&mut reply).expect("a reply");
            assert_eq!(reply, if subscribe { "+OK\n" } else { "+PONG\n" });
            let pid = serving_process(
                &inst.workers,
                inst.server.addr(),
                writer.local_addr().unwrap(),
            )
            .expect("one of the instance's workers holds the connection");
            let w = inst.workers.iter().position(|&p| p == pid).unwrap();
            let mut client = Client {
                writer,
                reader,
                worker: i * 2 + w,
            };
            if have[w] < per_worker {
                have[w] += 1;
                kept.push(client);
            } else if subscribe {
                // Not needed: unsubscribe before closing, so that no worker counts it in
                // a `+OK N` (its close may be noticed only later).
                client.send("UNSUBSCRIBE room\n");
                assert_eq!(client.line("the UNSUBSCRIBE reply"), "+OK");
            }
        }
    }
    kept
}

/// Each publisher publishes `n` lines `PHASE-WORKER-SEQ` (pipelined), and reads its
/// replies: `+OK 25`, the subscribers of its own worker.
fn publish(publishers: &mut [Client], phase: &str, n: usize) {
    for p in publishers.iter_mut() {
        let lines: String = (0..n)
            .map(|i| format!("PUBLISH room {phase}-{}-{i}\n", p.worker))
            .collect();
        p.send(&lines);
    }
    for p in publishers.iter_mut() {
        for i in 0..n {
            let reply = p.line(&format!("reply to {phase} publish {i}"));
            assert_eq!(
                reply,
                format!("+OK {PER_WORKER}"),
                "publisher on worker {}",
                p.worker
            );
        }
    }
}

/// The ids publishers on `workers` published in `phase`, sorted.
fn ids(phase: &str, workers: impl IntoIterator<Item = usize>, n: usize) -> Vec<String> {
    let mut all: Vec<String> = workers
        .into_iter()
        .flat_map(|w| (0..n).map(move |i| format!("{phase}-{w}-{i}")))
        .collect();
    all.sort();
    all
}

/// Every subscriber hears every line of `phase` from all four workers exactly once, all
/// in one order (the broker's), each publisher's lines in the order published.
fn everyone_hears(subscribers: &mut [Client], phase: &str) {
    let want = ids(phase, 0..4, PER_PUBLISHER);
    let mut first_order: Option<Vec<String>> = None;
    for (n, s) in subscribers.iter_mut().enumerate() {
        let what = format!("subscriber {n} (worker {}), phase {phase}", s.worker);
        let got = s.messages(want.len(), &what);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, want, "{what}: not every line exactly once");
        for w in 0..4 {
            let from_w: Vec<&String> = got
                .iter()
                .filter(|id| id.starts_with(&format!("{phase}-{w}-")))
                .collect();
            let in_order: Vec<String> = (0..PER_PUBLISHER)
                .map(|i| format!("{phase}-{w}-{i}"))
                .collect();
            assert!(
                from_w.into_iter().eq(in_order.iter()),
                "{what}: worker {w}'s lines out of order"
            );
        }
        match &first_order {
            None => first_order = Some(got),
            Some(order) => assert!(*order == got, "{what}: another order than subscriber 0's"),
        }
    }
}

#[test]
fn every_subscriber_on_every_worker_hears_every_line_once_and_an_outage_loses_what_the_guide_says()
{
    let mut redis = Daemon::redis();
    let mut instances = [instance(redis.addr), instance(redis.addr)];
    let mut subscribers = clients(&instances, PER_WORKER, true);
    let mut publishers = clients(&instances, 1, false);
    assert_eq!(subscribers.len(), 4 * PER_WORKER);
    for w in 0..4 {
        assert_eq!(publishers.iter().filter(|p| p.worker == w).count(), 1);
    }

    // Half of the 1,000 lines, through the broker.
    publish(&mut publishers, "A", PER_PUBLISHER);
    everyone_hears(&mut subscribers, "A");

    // The broker goes away (SIGKILL): each worker says so once.
    redis.kill();
    for inst in &instances {
        wait_for_lines(&inst.server, "went away", 2);
        // Killed while idle: Redis owed no answer, so nothing handed to it was lost.
        assert_eq!(
            inst.server.stderr.count("may be lost"),
            0,
            "{}",
            inst.server.stderr.text()
        );
    }
    // Meanwhile a line reaches exactly its publisher's worker's subscribers.
    publish(&mut publishers, "B", DURING_OUTAGE);
    for (n, s) in subscribers.iter_mut().enumerate() {
        let what = format!("subscriber {n} (worker {}) during the outage", s.worker);
        let got = s.messages(DURING_OUTAGE, &what);
        let want: Vec<String> = (0..DURING_OUTAGE)
            .map(|i| format!("B-{}-{i}", s.worker))
            .collect();
        assert_eq!(got, want, "{what}");
    }

    // Back on the same port: each worker reconnects by itself and says how many of its
    // lines stayed local.
    redis.restart();
    let back = format!(
        "{DURING_OUTAGE} lines published here while it was away reached only this worker's subscribers"
    );
    for inst in &instances {
        wait_for_lines(&inst.server, &back, 2);
    }

    // The other half, through the broker again.
    publish(&mut publishers, "C", PER_PUBLISHER);
    everyone_hears(&mut subscribers, "C");

    // Nothing more is on its way to anyone: the next line each subscriber reads is the
    // reply to its PING.
    for (n, s) in subscribers.iter_mut().enumerate() {
        s.send("PING\n");
        assert_eq!(
            s.line("the PING reply"),
            "+PONG",
            "subscriber {n}: a line too many"
        );
    }
    for inst in &instances {
        let log = inst.server.stderr.text();
        assert_eq!(
            inst.server.stderr.count("went away"),
            2,
            "one line per worker:\n{log}"
        );
        assert_eq!(inst.server.stderr.count("back after"), 2, "{log}");
        assert_eq!(inst.server.stderr.count("cut off"), 0, "{log}");
    }
    let mut by_worker = BTreeMap::new();
    for s in &subscribers {
        *by_worker.entry(s.worker).or_insert(0) += 1;
    }
    assert_eq!(by_worker.into_values().collect::<Vec<_>>(), [PER_WORKER; 4]);
    // The clients leave, so that the graceful stop need not wait for them.
    drop(subscribers);
    drop(publishers);
    // The counts each worker logs when it stops: 250 lines of its publisher through the
    // broker, all 1,000 delivered from it, the 10 of the outage local, one outage.
    let counts = format!(
        "stopping; {} lines published through it, {} delivered from it, {DURING_OUTAGE} reached only this worker's subscribers, 1 outages",
        2 * PER_PUBLISHER,
        8 * PER_PUBLISHER
    );
    for inst in &mut instances {
        inst.server.signal("TERM");
        wait_for_lines(&inst.server, &counts, 2);
        assert!(inst.server.wait_exit(Duration::from_secs(20)).success());
    }
}

#[test]
fn a_bad_broker_address_is_one_error_line() {
    let out = sockhost_tests::run_to_exit(
        &[
            "--plugin",
            &sockhost_tests::plugin("chat").display().to_string(),
            "--bind",
            "127.0.0.1:0",
            "--plugin-opt",
            "broker=redis://localhost",
        ],
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    assert_eq!(
        out.stderr.trim_end(),
        "error: plugin chat: option broker: \"redis://localhost\" is not redis://HOST:PORT[/channel-prefix] (e.g. redis://127.0.0.1:6379/chat): the port is missing"
    );
}
