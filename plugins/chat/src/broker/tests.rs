//! The broker through the sans-IO harness: the test plays Redis on both links.

use std::time::Duration;

use plugin_api::testing::{Connection, Harness};
use plugin_api::{LostReason, Protocol};

use super::resp::command;
use super::*;
use crate::{Chat, ChatConsumer};

const URL: &str = "redis://127.0.0.1:6379/room";

fn harness() -> Harness<Chat> {
    Harness::<Chat>::with_options([("broker", URL)]).unwrap()
}

fn broker(h: &Harness<Chat>) -> &Broker {
    h.protocol().broker.as_ref().unwrap()
}

/// The two links as the test (Redis) sees them.
struct Redis {
    sub: Connection<LinkConsumer>,
    publ: Connection<LinkConsumer>,
}

/// Accept the pending attempts of both links; the subscriber link is the one that asked
/// for the subscription.
fn accept(h: &Harness<Chat>) -> Redis {
    let pending = h.outbound();
    assert_eq!(pending.len(), 2, "one attempt per link: {pending:?}");
    let mut links: Vec<_> = pending
        .iter()
        .map(|(id, target)| {
            assert_eq!(target, "127.0.0.1:6379");
            h.accept_outbound::<LinkConsumer>(*id).unwrap()
        })
        .collect();
    let psubscribe = command(&[b"PSUBSCRIBE", b"room:*"]);
    let (mut sub, mut publ) = (links.remove(0), links.remove(0));
    if sub.output() != psubscribe {
        std::mem::swap(&mut sub, &mut publ);
    }
    assert_eq!(sub.take_output(), psubscribe);
    assert_eq!(publ.take_output(), command(&[b"PING"]));
    Redis { sub, publ }
}

impl Redis {
    /// Answer both links' opening commands: confirm the subscription, answer the PING.
    fn confirm(&mut self) {
        self.sub
            .send(b"*3\r\n$10\r\npsubscribe\r\n$6\r\nroom:*\r\n:1\r\n")
            .unwrap();
        self.publ.send(b"+PONG\r\n").unwrap();
    }

    /// Deliver `text` on chat channel `channel`, as Redis relays a PUBLISH.
    fn deliver(&mut self, channel: &str, text: &str) {
        let name = format!("room:{channel}");
        let frame = format!(
            "*4\r\n$8\r\npmessage\r\n$6\r\nroom:*\r\n${}\r\n{name}\r\n${}\r\n{text}\r\n",
            name.len(),
            text.len()
        );
        self.sub.send(frame.as_bytes()).unwrap();
    }

    /// Answer `n` PUBLISHes.
    fn answer(&mut self, n: usize) {
        self.publ.send(":1\r\n".repeat(n).as_bytes()).unwrap();
    }
}

fn publish_command(channel: &str, text: &str) -> Vec<u8> {
    command(&[
        b"PUBLISH",
        format!("room:{channel}").as_bytes(),
        text.as_bytes(),
    ])
}

fn subscriber(h: &Harness<Chat>, channel: &str) -> Connection<ChatConsumer> {
    let mut c = h.connect().unwrap();
    assert_eq!(
        c.round_trip_text(&format!("SUBSCRIBE {channel}\n"))
            .unwrap(),
        "+OK\n"
    );
    c
}

/// Serving, both links up and the subscription confirmed.
fn up(h: &Harness<Chat>) -> Redis {
    h.serving().unwrap();
    let mut redis = accept(h);
    redis.confirm();
    assert!(broker(h).is_up());
    redis
}

#[test]
fn a_publish_goes_to_redis_and_reaches_subscribers_when_redis_delivers_it() {
    let h = harness();
    let mut redis = up(&h);
    let mut a = subscriber(&h, "news");
    let mut publisher = subscriber(&h, "news");
    // Replied at once with this worker's subscribers; nobody hears it yet.
    assert_eq!(
        publisher.round_trip_text("PUBLISH news hello\n").unwrap(),
        "+OK 2\n"
    );
    assert_eq!(a.take_text(), "");
    assert_eq!(redis.publ.take_output(), publish_command("news", "hello"));
    // Redis delivers it back: everyone here hears it once, the publisher included.
    redis.deliver("news", "hello");
    assert_eq!(a.take_text(), "MESSAGE news hello\n");
    assert_eq!(publisher.take_text(), "MESSAGE news hello\n");
    // Lines published on other workers arrive the same way, in Redis's order.
    redis.deliver("news", "from elsewhere");
    redis.deliver("other", "not for us");
    assert_eq!(a.take_text(), "MESSAGE news from elsewhere\n");
    redis.answer(1);
    let c = broker(&h).counts();
    assert_eq!((c.published, c.delivered, c.local_only), (1, 3, 0));
}

#[test]
fn until_both_links_are_ready_lines_stay_local_and_are_counted() {
    let h = harness();
    h.serving().unwrap();
    let mut redis = accept(&h);
    let mut s = subscriber(&h, "c");
    let mut p = h.connect().unwrap();
    // Connected but not answered (by anything that is Redis): local delivery, counted.
    assert_eq!(p.round_trip_text("PUBLISH c early\n").unwrap(), "+OK 1\n");
    assert_eq!(s.take_text(), "MESSAGE c early\n");
    assert_eq!(redis.publ.take_output(), b"");
    redis.confirm();
    assert_eq!(p.round_trip_text("PUBLISH c later\n").unwrap(), "+OK 1\n");
    assert_eq!(s.take_text(), "");
    assert_eq!(redis.publ.take_output(), publish_command("c", "later"));
    assert_eq!(broker(&h).counts().local_only, 1);
}

#[test]
fn while_redis_is_away_lines_stay_local_then_it_is_used_again() {
    let h = harness();
    let mut redis = up(&h);
    let mut s = subscriber(&h, "c");
    let mut p = h.connect().unwrap();
    // Redis goes away: both links end.
    redis.sub.eof().unwrap();
    redis.publ.eof().unwrap();
    assert!(!broker(&h).is_up());
    for i in 0..3 {
        assert_eq!(
            p.round_trip_text(&format!("PUBLISH c away {i}\n")).unwrap(),
            "+OK 1\n"
        );
    }
    assert_eq!(
        s.take_text(),
        "MESSAGE c away 0\nMESSAGE c away 1\nMESSAGE c away 2\n",
        "local delivery continues"
    );
    // Retried at the next tick: refused a few times (Redis restarting), then back.
    h.advance(TICK);
    for _ in 0..3 {
        for (id, _) in h.outbound() {
            h.refuse_outbound(id).unwrap();
        }
        h.advance(MAX_BACKOFF);
    }
    let mut redis = accept(&h);
    assert!(
        !broker(&h).is_up(),
        "not before Redis answers on both links"
    );
    redis
        .sub
        .send(b"*3\r\n$10\r\npsubscribe\r\n$6\r\nroom:*\r\n:1\r\n")
        .unwrap();
    assert!(
        !broker(&h).is_up(),
        "not before the publisher link's PING is answered"
    );
    redis.publ.send(b"+PONG\r\n").unwrap();
    assert!(broker(&h).is_up());
    assert_eq!(p.round_trip_text("PUBLISH c back\n").unwrap(), "+OK 1\n");
    assert_eq!(redis.publ.take_output(), publish_command("c", "back"));
    let c = broker(&h).counts();
    assert_eq!((c.local_only, c.outages, c.published), (3, 1, 1));
}

#[test]
fn one_link_down_is_an_outage_too() {
    let h = harness();
    let mut redis = up(&h);
    let mut s = subscriber(&h, "c");
    let mut p = h.connect().unwrap();
    // Only the subscriber link breaks: publishing through Redis would not come back here.
    redis.sub.peer_reset().unwrap();
    assert_eq!(p.round_trip_text("PUBLISH c x\n").unwrap(), "+OK 1\n");
    assert_eq!(s.take_text(), "MESSAGE c x\n");
    assert_eq!(redis.publ.take_output(), b"");
    // Lines from other workers still arrive on a publisher-only outage's other side: the
    // subscriber link comes back at the next tick.
    h.advance(TICK);
    let (id, _) = h.outbound()[0];
    let mut sub = h.accept_outbound::<LinkConsumer>(id).unwrap();
    assert_eq!(sub.take_output(), command(&[b"PSUBSCRIBE", b"room:*"]));
    sub.send(b"*3\r\n$10\r\npsubscribe\r\n$6\r\nroom:*\r\n:1\r\n")
        .unwrap();
    assert!(broker(&h).is_up());
    // Now the publisher link breaks with two PUBLISHes unanswered.
    p.send(b"PUBLISH c 1\nPUBLISH c 2\n").unwrap();
    redis.answer(1);
    redis.publ.eof().unwrap();
    assert!(!broker(&h).is_up());
    assert_eq!(broker(&h).counts().outages, 2);
}

#[test]
fn back_off_grows_with_jitter_up_to_the_cap() {
    let h = harness();
    h.serving().unwrap();
    let mut attempts = Vec::new();
    let step = TICK;
    while h.now() < Duration::from_secs(30) {
        for (id, _) in h.outbound() {
            attempts.push(h.now());
            h.refuse_outbound(id).unwrap();
        }
        h.advance(step);
    }
    // Two links; per link the waits double from one tick to at most MAX_BACKOFF (3 s),
    // jittered down to half of it: at least 10 attempts per link in 30 s, and at most
    // about 25 (6 quick ones, then one every 1.5 to 3 s) — not 300, one per tick.
    assert!(attempts.len() >= 2 * 10, "{attempts:?}");
    assert!(
        attempts.len() <= 2 * 30,
        "{} attempts in 30 s: the back-off does not grow",
        attempts.len()
    );
    let mut gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| !g.is_zero())
        .collect();
    gaps.sort();
    assert!(
        *gaps.last().unwrap() <= MAX_BACKOFF,
        "never more than the cap: {gaps:?}"
    );
    assert!(
        attempts
            .iter()
            .rev()
            .take(2)
            .all(|t| *t > Duration::from_secs(25)),
        "still retrying"
    );
}

#[test]
fn a_broken_or_oversized_reply_drops_the_link() {
    let h = Harness::<Chat>::with_options([("broker", URL), ("max-line", "100")]).unwrap();
    let mut redis = up(&h);
    // Larger than twice max-line plus 1 KiB: refused as soon as announced.
    redis.sub.send(b"$2000\r\n").unwrap();
    assert!(!redis.sub.is_open());
    assert!(!broker(&h).is_up());
    h.advance(TICK);
    let (id, _) = h.outbound()[0];
    let mut sub = h.accept_outbound::<LinkConsumer>(id).unwrap();
    sub.take_output();
    sub.send(b"*3\r\n$10\r\npsubscribe\r\n$6\r\nroom:*\r\n:1\r\n")
        .unwrap();
    assert!(broker(&h).is_up());
    // An error answer (say, NOAUTH) drops the publisher link.
    redis
        .publ
        .send(b"-NOAUTH Authentication required.\r\n")
        .unwrap();
    assert_eq!(redis.publ.lost_reason(), Some(LostReason::Closed));
    assert!(!broker(&h).is_up());
    // Garbage too.
    sub.send(b"hello\r\n").unwrap();
    assert!(!sub.is_open());
}

#[test]
fn lines_with_line_breaks_from_redis_are_not_passed_on() {
    let h = harness();
    let mut redis = up(&h);
    let mut s = subscriber(&h, "c");
    redis.deliver("c", "two\nlines");
    redis.deliver("c", "fine");
    assert_eq!(s.take_text(), "MESSAGE c fine\n");
    assert_eq!(broker(&h).counts().refused, 1);
}

#[test]
fn unanswered_publishes_are_bounded() {
    let h = harness();
    let mut redis = up(&h);
    let mut s = subscriber(&h, "c");
    let mut p = h.connect().unwrap();
    let n = MAX_UNCONFIRMED as usize;
    let script = "PUBLISH c x\n".repeat(n + 2);
    p.send(script.as_bytes()).unwrap();
    assert_eq!(p.take_text(), "+OK 1\n".repeat(n + 2));
    // The first MAX_UNCONFIRMED went to Redis; the two past it stayed local.
    assert_eq!(s.take_text(), "MESSAGE c x\n".repeat(2));
    assert_eq!(
        redis.publ.take_output().len(),
        n * publish_command("c", "x").len()
    );
    // Redis catches up: Redis is used again.
    redis.answer(n);
    assert_eq!(p.round_trip_text("PUBLISH c y\n").unwrap(), "+OK 1\n");
    assert_eq!(redis.publ.take_output(), publish_command("c", "y"));
    assert_eq!(broker(&h).counts().local_only, 2);
}

#[test]
fn stopping_closes_both_links_and_stops_retrying() {
    let h = harness();
    let redis = up(&h);
    h.stopping().unwrap();
    assert_eq!(redis.sub.lost_reason(), Some(LostReason::Closed));
    assert_eq!(redis.publ.lost_reason(), Some(LostReason::Closed));
    h.advance(Duration::from_secs(10));
    assert!(h.outbound().is_empty(), "no attempt after stop");
    // A client still draining publishes locally.
    let mut s = subscriber(&h, "c");
    let mut p = h.connect().unwrap();
    assert_eq!(p.round_trip_text("PUBLISH c last\n").unwrap(), "+OK 1\n");
    assert_eq!(s.take_text(), "MESSAGE c last\n");
}

#[test]
fn a_bad_broker_option_is_one_readable_error() {
    let err = Harness::<Chat>::with_options([("broker", "127.0.0.1:6379")])
        .err()
        .unwrap();
    assert_eq!(
        err,
        "plugin chat: option broker: \"127.0.0.1:6379\" is not redis://HOST:PORT[/channel-prefix] (e.g. redis://127.0.0.1:6379/chat): it must start with redis://"
    );
    // Without the option: no tick, no links.
    let h = Harness::<Chat>::new();
    h.serving().unwrap();
    assert!(h.outbound().is_empty());
    assert_eq!(h.protocol().tick_interval(), None);
}

#[test]
fn a_link_that_stops_answering_pings_is_dropped_and_replaced() {
    let h = harness();
    let mut redis = up(&h);
    let ping = command(&[b"PING"]);
    // The first period: both links pinged; both answer.
    h.advance(HEARTBEAT);
    assert_eq!(redis.sub.take_output(), ping);
    assert_eq!(redis.publ.take_output(), ping);
    redis.sub.send(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n").unwrap();
    redis.publ.send(b"+PONG\r\n").unwrap();
    // The second: pinged again; only the publisher link answers.
    h.advance(HEARTBEAT);
    assert_eq!(redis.sub.take_output(), ping);
    redis.publ.take_output();
    redis.publ.send(b"+PONG\r\n").unwrap();
    assert!(broker(&h).is_up());
    // The third: the silent subscriber link is dropped, and retried at the next tick.
    h.advance(HEARTBEAT);
    assert!(!redis.sub.is_open());
    assert!(redis.publ.is_open());
    assert!(!broker(&h).is_up());
    h.advance(TICK);
    let (id, _) = h.outbound()[0];
    let mut sub = h.accept_outbound::<LinkConsumer>(id).unwrap();
    assert_eq!(sub.take_output(), command(&[b"PSUBSCRIBE", b"room:*"]));
    sub.send(b"*3\r\n$10\r\npsubscribe\r\n$6\r\nroom:*\r\n:1\r\n")
        .unwrap();
    assert!(broker(&h).is_up());
}

#[test]
fn after_a_dropped_subscriber_link_lines_are_delivered_locally_once() {
    let h = harness();
    let mut redis = up(&h);
    let mut s = subscriber(&h, "c");
    // The subscriber link sends garbage: dropped …
    redis.sub.send(b"?\r\n").unwrap();
    assert!(!redis.sub.is_open());
    assert!(!broker(&h).is_up());
    // … and the broker is not up again until a new one is confirmed: a line published
    // meanwhile is delivered here, once, and not handed to Redis.
    let mut p = h.connect().unwrap();
    assert_eq!(p.round_trip_text("PUBLISH c x\n").unwrap(), "+OK 1\n");
    assert_eq!(s.take_text(), "MESSAGE c x\n");
    assert_eq!(redis.publ.take_output(), b"");
}

#[test]
fn a_peer_that_is_not_redis_never_makes_the_broker_up_and_is_dropped() {
    let h = harness();
    h.serving().unwrap();
    // Say each link reached a socket connected to itself: it reads back its own commands.
    let mut echo = accept(&h);
    echo.sub
        .send(&command(&[b"PSUBSCRIBE", b"room:*"]))
        .unwrap();
    echo.publ.send(&command(&[b"PING"])).unwrap();
    assert!(!broker(&h).is_up());
    for _ in 0..2 {
        h.advance(HEARTBEAT);
        let (sub_ping, publ_ping) = (echo.sub.take_output(), echo.publ.take_output());
        echo.sub.send(&sub_ping).unwrap();
        echo.publ.send(&publ_ping).unwrap();
        assert!(!broker(&h).is_up());
    }
    assert!(
        !echo.sub.is_open() && !echo.publ.is_open(),
        "dropped: nothing Redis said"
    );
    h.advance(TICK);
    let mut redis = accept(&h);
    redis.confirm();
    assert!(broker(&h).is_up());
}
