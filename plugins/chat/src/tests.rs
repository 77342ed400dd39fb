//! Unit tests through the sans-IO harness: several connections of one worker, posts and
//! their bounds, the fake clock for the ping timer and the idle timeout.

use super::*;
use plugin_api::testing::{Connection, Harness, HIGH_WATER};

fn open(h: &Harness<Chat>) -> Connection<ChatConsumer> {
    h.connect().expect("connect")
}

/// A connection subscribed to `channels`.
fn subscriber(h: &Harness<Chat>, channels: &[&str]) -> Connection<ChatConsumer> {
    let mut c = open(h);
    for ch in channels {
        assert_eq!(
            c.round_trip_text(&format!("SUBSCRIBE {ch}\n")).unwrap(),
            "+OK\n"
        );
    }
    c
}

fn cut_off_total(h: &Harness<Chat>) -> u64 {
    h.protocol().hub.borrow().cut_off_total()
}

#[test]
fn a_published_line_reaches_every_subscriber_of_the_channel() {
    let h = Harness::<Chat>::new();
    let mut a = subscriber(&h, &["news"]);
    let mut b = subscriber(&h, &["news", "sport"]);
    let mut other = subscriber(&h, &["sport"]);
    let mut publisher = open(&h);
    assert_eq!(
        publisher
            .round_trip_text("PUBLISH news hello, world\n")
            .unwrap(),
        "+OK 2\n"
    );
    assert_eq!(a.take_text(), "MESSAGE news hello, world\n");
    assert_eq!(b.take_text(), "MESSAGE news hello, world\n");
    assert_eq!(other.take_text(), "");
    assert_eq!(
        publisher.round_trip_text("PUBLISH nobody x\n").unwrap(),
        "+OK 0\n"
    );
    // A publisher subscribed to the channel gets its own line, after its reply.
    assert_eq!(
        b.round_trip_text("PUBLISH sport goal\n").unwrap(),
        "+OK 2\nMESSAGE sport goal\n"
    );
    assert_eq!(other.take_text(), "MESSAGE sport goal\n");
}

#[test]
fn lines_arrive_in_publish_order_and_pipelined_commands_in_order() {
    let h = Harness::<Chat>::new();
    let mut s = subscriber(&h, &["c"]);
    let mut publisher = open(&h);
    let script: String = (0..50).map(|i| format!("PUBLISH c {i}\n")).collect();
    // One read holding 50 commands, the last split over two reads.
    let (head, tail) = script.split_at(script.len() - 3);
    publisher.send(head.as_bytes()).unwrap();
    publisher.send(tail.as_bytes()).unwrap();
    assert_eq!(publisher.take_text(), "+OK 1\n".repeat(50));
    let want: String = (0..50).map(|i| format!("MESSAGE c {i}\n")).collect();
    assert_eq!(s.take_text(), want);
}

#[test]
fn unsubscribe_and_disconnect_end_deliveries() {
    let h = Harness::<Chat>::new();
    let mut a = subscriber(&h, &["c"]);
    let b = subscriber(&h, &["c"]);
    let mut publisher = open(&h);
    assert_eq!(a.round_trip_text("UNSUBSCRIBE c\n").unwrap(), "+OK\n");
    assert_eq!(a.round_trip_text("UNSUBSCRIBE c\n").unwrap(), "+OK\n");
    drop(b);
    assert_eq!(
        publisher.round_trip_text("PUBLISH c x\n").unwrap(),
        "+OK 0\n"
    );
    assert_eq!(a.take_text(), "");
    assert_eq!(h.protocol().hub.borrow().channel_count(), 0);
}

#[test]
fn replies_errors_and_quit() {
    let h = Harness::<Chat>::with_options([("max-subscriptions", "1")]).unwrap();
    let mut c = open(&h);
    assert_eq!(
        c.round_trip_text("SUBSCRIBE a\nSUBSCRIBE b\nPING\nPONG\nPUBLISH a\nFLY\n")
            .unwrap(),
        "+OK\n-ERR too many subscriptions (max 1)\n+PONG\n-ERR usage: PUBLISH channel text\n\
         -ERR unknown command \"FLY\" (commands: SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PING, PONG, QUIT)\n"
    );
    assert!(c.is_open());
    assert_eq!(
        c.round_trip_text("QUIT\nPUBLISH a ignored\n").unwrap(),
        "+OK bye\n"
    );
    assert_eq!(c.lost_reason(), Some(LostReason::Closed));
}

#[test]
fn an_overlong_line_is_refused_and_closed() {
    let h = Harness::<Chat>::with_options([("max-line", "16")]).unwrap();
    let mut c = open(&h);
    assert_eq!(
        c.round_trip_text("PUBLISH c 0123456789").unwrap(),
        "-ERR line too long (max 16 bytes)\n"
    );
    assert_eq!(c.lost_reason(), Some(LostReason::Closed));
}

#[test]
fn a_subscriber_above_the_high_water_mark_is_cut_off_once() {
    let h = Harness::<Chat>::with_options([("max-line", "8192")]).unwrap();
    let slow = subscriber(&h, &["flood", "other"]);
    let mut fast = subscriber(&h, &["flood"]);
    let mut publisher = open(&h);
    let text = "x".repeat(4000);
    let line = format!("PUBLISH flood {text}\n");
    let mut published = 0;
    loop {
        let reply = publisher.round_trip_text(&line).unwrap();
        published += 1;
        // The fast subscriber reads everything as it comes.
        assert_eq!(fast.take_text(), format!("MESSAGE flood {text}\n"));
        if reply == "+OK 1\n" {
            break;
        }
        assert_eq!(reply, "+OK 2\n");
        assert!(published < 200, "never cut off");
    }
    // Cut off by the post that found it above the mark: it is no longer subscribed to
    // anything, the host was asked to close it, and it was counted once.
    let message = 4015;
    assert_eq!(published, HIGH_WATER / message + 2);
    assert!(!slow.is_open(), "closed");
    assert_eq!(slow.lost_reason(), Some(LostReason::Closed));
    assert_eq!(cut_off_total(&h), 1);
    assert!(slow.pending() <= HIGH_WATER + message);
    assert_eq!(
        publisher.round_trip_text("PUBLISH other x\n").unwrap(),
        "+OK 0\n"
    );
    for _ in 0..10 {
        assert_eq!(publisher.round_trip_text(&line).unwrap(), "+OK 1\n");
    }
    assert_eq!(cut_off_total(&h), 1, "counted once");
}

#[test]
fn a_subscriber_at_the_hosts_bound_is_cut_off_too() {
    let h = Harness::<Chat>::new();
    h.set_max_pending(1000);
    let slow = subscriber(&h, &["c"]);
    let mut publisher = open(&h);
    let line = format!("PUBLISH c {}\n", "y".repeat(600));
    assert_eq!(publisher.round_trip_text(&line).unwrap(), "+OK 1\n");
    // The second would pass 1000 bytes: refused (Overflow), and the host ends it.
    assert_eq!(publisher.round_trip_text(&line).unwrap(), "+OK 0\n");
    assert_eq!(slow.lost_reason(), Some(LostReason::Error));
    assert_eq!(cut_off_total(&h), 1);
}

#[test]
fn ping_on_a_quiet_connection_every_period() {
    let h = Harness::<Chat>::with_options([("ping", "10")]).unwrap();
    let mut quiet = open(&h);
    let mut chatty = open(&h);
    h.advance(Duration::from_secs(9));
    assert_eq!(quiet.take_text(), "");
    h.advance(Duration::from_secs(1));
    assert_eq!(quiet.take_text(), "PING\n", "quiet since it connected");
    assert_eq!(chatty.take_text(), "PING\n");
    // The chatty one sends something in every period: no ping.
    for _ in 0..5 {
        h.advance(Duration::from_secs(5));
        assert_eq!(chatty.round_trip_text("PONG\n").unwrap(), "");
        h.advance(Duration::from_secs(5));
        assert_eq!(chatty.take_text(), "");
    }
    assert_eq!(
        quiet.take_text(),
        "PING\n".repeat(5),
        "re-armed each period"
    );
    // Quiet from now on (its last bytes 5 s before the last period ended): pinged at the
    // end of the next period, between one and two periods after its last bytes.
    h.advance(Duration::from_secs(10));
    assert_eq!(chatty.take_text(), "PING\n");
}

#[test]
fn idle_timeout_replaces_keep_alive() {
    let h = Harness::<Chat>::with_options([("idle-timeout", "30")]).unwrap();
    let mut c = subscriber(&h, &["c"]);
    h.advance(Duration::from_secs(20));
    c.send(b"PING\n").unwrap();
    h.advance(Duration::from_secs(29));
    assert!(c.is_open(), "the read restarted the period");
    h.advance(Duration::from_secs(2));
    assert_eq!(c.lost_reason(), Some(LostReason::IdleTimeout));
    // `0`: never idle.
    let h = Harness::<Chat>::with_options([("idle-timeout", "0")]).unwrap();
    let c = open(&h);
    h.advance(Duration::from_secs(86400));
    assert!(c.is_open());
}

#[test]
fn options_are_validated() {
    let err = |pairs: &[(&str, &str)]| Harness::<Chat>::with_options(pairs.iter().copied()).err();
    assert_eq!(
        err(&[("pings", "5")]).as_deref(),
        Some(
            r#"plugin chat: unknown option "pings" (accepted: max-line, max-subscriptions, ping, idle-timeout, broker)"#
        )
    );
    assert_eq!(
        err(&[("ping", "soon")]).as_deref(),
        Some(r#"plugin chat: option ping: invalid value "soon": invalid digit found in string"#)
    );
    assert_eq!(
        err(&[("max-line", "0")]).as_deref(),
        Some("plugin chat: option max-line: must be between 1 and 1048576, got 0")
    );
    assert_eq!(
        err(&[("max-subscriptions", "0")]).as_deref(),
        Some("plugin chat: option max-subscriptions: must be at least 1")
    );
    let defaults = Harness::<Chat>::new();
    assert_eq!(
        defaults.protocol().config,
        Config {
            max_line: 4096,
            ping: None,
            idle_timeout: None
        }
    );
    let set = Harness::<Chat>::with_options([("ping", "30"), ("idle-timeout", "0")]).unwrap();
    assert_eq!(
        set.protocol().config,
        Config {
            max_line: 4096,
            ping: Some(Duration::from_secs(30)),
            idle_timeout: Some(None)
        }
    );
}
