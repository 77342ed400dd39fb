//! Unit tests through the sans-IO harness: UDP senders, the tick on the fake clock, and the
//! Graphite backend played by the test (accepted, refused, timed out, closed).

use super::*;
use backend::BackendConnection;
use plugin_api::testing::{ConnSpec, Connection, Harness};
use plugin_api::LostReason;

const BACKEND: (&str, &str) = ("backend", "127.0.0.1:2003");
const TEN_SECONDS: Duration = Duration::from_secs(10);

fn statsd(extra: &[(&'static str, &'static str)]) -> Harness<Statsd> {
    let mut pairs = vec![BACKEND];
    pairs.extend_from_slice(extra);
    let h = Harness::<Statsd>::with_options(pairs).unwrap();
    h.serving().unwrap();
    h
}

/// The pending connection attempt to the backend.
fn attempt(h: &Harness<Statsd>) -> plugin_api::ConnId {
    let pending = h.outbound();
    assert_eq!(pending.len(), 1, "one attempt at a time: {pending:?}");
    assert_eq!(pending[0].1, "127.0.0.1:2003");
    pending[0].0
}

/// Accept the pending attempt: the test is Graphite.
fn accept(h: &Harness<Statsd>) -> Connection<BackendConnection> {
    h.accept_outbound::<BackendConnection>(attempt(h)).unwrap()
}

/// Graphite's lines, without their timestamps.
fn lines(graphite: &mut Connection<BackendConnection>) -> Vec<String> {
    graphite
        .take_text()
        .lines()
        .map(|l| {
            l.rsplit_once(' ')
                .expect("name value timestamp")
                .0
                .to_string()
        })
        .collect()
}

fn quiet() -> Vec<String> {
    ["lines 0", "bad_lines 0", "dropped_lines 0"]
        .map(|l| format!("stats.statsd.{l}"))
        .to_vec()
}

#[test]
fn a_quiet_server_flushes_every_interval() {
    let h = statsd(&[]);
    let mut graphite = accept(&h);
    assert_eq!(graphite.take_text(), "", "nothing queued yet");
    h.advance(Duration::from_secs(9));
    assert_eq!(graphite.take_text(), "");
    h.advance(Duration::from_secs(1));
    assert_eq!(lines(&mut graphite), quiet());
    h.advance(TEN_SECONDS * 3);
    assert_eq!(lines(&mut graphite), [quiet(), quiet(), quiet()].concat());
}

#[test]
fn datagrams_from_every_peer_go_into_the_next_flush() {
    let h = statsd(&[("flush-interval", "1"), ("prefix", "")]);
    let mut graphite = accept(&h);
    let mut a = h
        .open(ConnSpec::udp().peer(([127, 0, 0, 1], 5000)))
        .unwrap();
    let mut b = h
        .open(ConnSpec::udp().peer(([127, 0, 0, 1], 5001)))
        .unwrap();
    a.send(b"hits:1|c\nhits:1|c|@0.5\nlatency:5|ms").unwrap();
    b.send(b"hits:4|c\nbogus\nlatency:7|ms\nload:3|g").unwrap();
    assert!(a.take_datagrams().is_empty(), "statsd never answers");
    h.advance(Duration::from_secs(1));
    assert_eq!(
        lines(&mut graphite),
        [
            "counters.hits 7",
            "gauges.load 3",
            "timers.latency.count 2",
            "timers.latency.min 5",
            "timers.latency.max 7",
            "timers.latency.mean 6",
            "timers.latency.p50 5",
            "timers.latency.p90 7",
            "timers.latency.p99 7",
            "statsd.lines 6",
            "statsd.bad_lines 1",
            "statsd.dropped_lines 0",
        ]
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(
        lines(&mut graphite),
        [
            "gauges.load 3",
            "statsd.lines 0",
            "statsd.bad_lines 0",
            "statsd.dropped_lines 0"
        ]
    );
}

#[test]
fn flushes_made_while_the_backend_is_down_arrive_in_order_once_it_is_up() {
    let h = statsd(&[]);
    let mut udp = h.open(ConnSpec::udp()).unwrap();
    h.refuse_outbound(attempt(&h)).unwrap();
    // Intervals 1 to 5, each with its own count; attempts back off: after flush 1, then 3.
    let mut attempts = Vec::new();
    for i in 1..=5 {
        udp.send(format!("n:{i}|c").as_bytes()).unwrap();
        h.advance(TEN_SECONDS);
        if !h.outbound().is_empty() {
            attempts.push(i);
            h.refuse_outbound(attempt(&h)).unwrap();
        }
    }
    assert_eq!(attempts, [1, 3]);
    // The next attempt (at flush 6: the back-off is capped at 30 s) connects: everything
    // arrives, oldest first.
    h.advance(TEN_SECONDS);
    let mut graphite = accept(&h);
    let counts: Vec<String> = lines(&mut graphite)
        .into_iter()
        .filter(|l| l.starts_with("stats.counters.n "))
        .collect();
    assert_eq!(
        counts,
        (1..=5)
            .map(|i| format!("stats.counters.n {i}"))
            .collect::<Vec<_>>()
    );
    // And from now on each flush goes out as it is made.
    udp.send(b"n:9|c").unwrap();
    h.advance(TEN_SECONDS);
    assert!(lines(&mut graphite).contains(&"stats.counters.n 9".to_string()));
}

#[test]
fn a_full_queue_keeps_the_newest_flushes() {
    let h = statsd(&[("max-queued-flushes", "2")]);
    let mut udp = h.open(ConnSpec::udp()).unwrap();
    h.refuse_outbound(attempt(&h)).unwrap();
    // Attempts after flushes 0, 1, 3 and 6 are refused; the next is at flush 9.
    for i in 1..=6 {
        udp.send(format!("n:{i}|c").as_bytes()).unwrap();
        h.advance(TEN_SECONDS);
        if !h.outbound().is_empty() {
            h.refuse_outbound(attempt(&h)).unwrap();
        }
    }
    h.advance(TEN_SECONDS * 3);
    let mut graphite = accept(&h);
    let counts: Vec<String> = lines(&mut graphite)
        .into_iter()
        .filter(|l| l.starts_with("stats.statsd.lines ") || l.starts_with("stats.counters."))
        .collect();
    assert_eq!(
        counts,
        ["stats.statsd.lines 0", "stats.statsd.lines 0"],
        "the two newest of nine flushes (8 and 9, after the counts)"
    );
    assert_eq!(h.protocol().backend.shipper().dropped(), 7);
}

#[test]
fn a_backend_that_never_answers_times_out_and_is_retried() {
    let h = statsd(&[]);
    let first = attempt(&h);
    h.advance(backend::CONNECT_TIMEOUT);
    assert!(h.outbound().is_empty(), "timed out: {first:?}");
    assert!(matches!(
        h.protocol().backend.shipper().link(),
        backend::Link::Down { .. }
    ));
    // The next attempt, with the first flush (at 10 s; answered before its own timeout).
    h.advance(TEN_SECONDS - backend::CONNECT_TIMEOUT);
    let mut graphite = accept(&h);
    assert_eq!(lines(&mut graphite), quiet(), "the flush made meanwhile");
}

#[test]
fn a_closed_connection_is_replaced_at_the_next_flush() {
    let h = statsd(&[]);
    let mut graphite = accept(&h);
    graphite.eof().unwrap(); // Graphite restarts
    assert!(!graphite.is_open());
    assert!(h.outbound().is_empty(), "not before a flush needs it");
    let mut udp = h.open(ConnSpec::udp()).unwrap();
    udp.send(b"after:1|c").unwrap();
    h.advance(TEN_SECONDS);
    let mut graphite = accept(&h);
    assert!(lines(&mut graphite).contains(&"stats.counters.after 1".to_string()));
}

#[test]
fn a_refused_post_is_sent_on_the_next_connection() {
    let h = statsd(&[]);
    let mut graphite = accept(&h);
    let mut udp = h.open(ConnSpec::udp()).unwrap();
    udp.send(b"kept:1|c").unwrap();
    h.set_max_pending(16); // Graphite reads nothing: the flush cannot be queued.
    h.advance(TEN_SECONDS);
    assert_eq!(graphite.lost_reason(), Some(LostReason::Error));
    assert_eq!(graphite.take_text(), "");
    h.set_max_pending(plugin_api::testing::MAX_PENDING);
    h.advance(TEN_SECONDS);
    let mut graphite = accept(&h);
    let text = lines(&mut graphite);
    assert!(
        text.contains(&"stats.counters.kept 1".to_string()),
        "{text:?}"
    );
    assert_eq!(
        text.iter()
            .filter(|l| l.starts_with("stats.statsd.lines"))
            .count(),
        2
    );
}

#[test]
fn stop_flushes_once_more_and_closes_the_connection() {
    let h = statsd(&[]);
    let mut graphite = accept(&h);
    let mut udp = h.open(ConnSpec::udp()).unwrap();
    udp.send(b"last:3|c").unwrap();
    h.stopping().unwrap();
    assert_eq!(
        lines(&mut graphite),
        [
            "stats.counters.last 3",
            "stats.statsd.lines 1",
            "stats.statsd.bad_lines 0",
            "stats.statsd.dropped_lines 0"
        ]
    );
    assert_eq!(graphite.lost_reason(), Some(LostReason::Closed));
    // No tick after the stop sends anything, nor reconnects.
    h.advance(TEN_SECONDS);
    assert!(h.outbound().is_empty());
}

#[test]
fn stop_while_down_makes_one_last_attempt() {
    let h = statsd(&[]);
    let mut udp = h.open(ConnSpec::udp()).unwrap();
    h.refuse_outbound(attempt(&h)).unwrap();
    h.advance(TEN_SECONDS);
    h.refuse_outbound(attempt(&h)).unwrap(); // backing off now: next at flush 3
    udp.send(b"last:1|c").unwrap();
    h.stopping().unwrap();
    let mut graphite = accept(&h);
    let text = lines(&mut graphite);
    assert_eq!(
        text.iter()
            .filter(|l| l.starts_with("stats.statsd.lines"))
            .count(),
        2,
        "the queued flush and the final one: {text:?}"
    );
    assert_eq!(text[0], "stats.statsd.lines 0");
    assert_eq!(text[3], "stats.counters.last 1");
    assert_eq!(graphite.lost_reason(), Some(LostReason::Closed));

    // Unreachable at stop too: given up after that one attempt.
    let h = statsd(&[]);
    h.refuse_outbound(attempt(&h)).unwrap();
    h.stopping().unwrap();
    h.refuse_outbound(attempt(&h)).unwrap();
    h.advance(TEN_SECONDS * 10);
    assert!(h.outbound().is_empty());
    assert_eq!(h.protocol().backend.shipper().link(), backend::Link::Done);
}

#[test]
fn options_are_validated() {
    let err = |pairs: &[(&str, &str)]| Harness::<Statsd>::with_options(pairs.iter().copied()).err();
    assert_eq!(
        err(&[]).as_deref(),
        Some("plugin statsd: option backend: required: HOST:PORT of a Graphite plaintext receiver")
    );
    assert_eq!(
        err(&[("backend", "graphite")]).as_deref(),
        Some(r#"plugin statsd: option backend: "graphite" is not HOST:PORT (e.g. 127.0.0.1:2003)"#)
    );
    assert_eq!(
        err(&[BACKEND, ("flush-interval", "0")]).as_deref(),
        Some("plugin statsd: option flush-interval: must be between 0.1 and 86400 seconds, got 0")
    );
    assert_eq!(
        err(&[BACKEND, ("prefix", "a b")]).as_deref(),
        Some(
            r#"plugin statsd: option prefix: "a b" may hold only ASCII letters, digits, '_', '-' and '.'"#
        )
    );
    assert_eq!(
        err(&[BACKEND, ("max-queued-flushes", "0")]).as_deref(),
        Some("plugin statsd: option max-queued-flushes: must be at least 1")
    );
    let s = Harness::<Statsd>::with_options([BACKEND]).unwrap();
    assert_eq!(s.protocol().interval, Duration::from_secs(10));
    assert_eq!(s.protocol().prefix, "stats");
    let s = Harness::<Statsd>::with_options([
        ("backend", "graphite.example:2003"),
        ("flush-interval", "0.5"),
        ("prefix", ""),
    ])
    .unwrap();
    assert_eq!(s.protocol().interval, Duration::from_millis(500));
    assert_eq!(s.protocol().prefix, "");
}
