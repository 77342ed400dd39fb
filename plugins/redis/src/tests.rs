//! Sans-IO tests through `plugin_api::testing`: the consumer driven as the host drives it,
//! byte for byte what a Redis client would read; the host's services (posts, the tick) run
//! on the harness's fake worker.

use std::time::Duration;

use plugin_api::testing::{Connection, Harness};
use plugin_api::LostReason;

use crate::{Redis, RedisConsumer};

/// Encode a command as a RESP multibulk frame.
fn frame(args: &[&str]) -> Vec<u8> {
    let mut f = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        f.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    f
}

/// Send one command (as one read) and return the raw reply.
fn cmd(conn: &mut Connection<RedisConsumer>, args: &[&str]) -> String {
    String::from_utf8_lossy(&conn.round_trip(&frame(args)).unwrap()).into_owned()
}

/// A `TTL` reply of `want` seconds, or one less if the machine stalled past a rounding edge.
fn assert_ttl(reply: String, want: i64) {
    let got: i64 = reply
        .strip_prefix(':')
        .and_then(|r| r.strip_suffix("\r\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"));
    assert!(got == want || got == want - 1, "TTL {got}, want {want}");
}

fn server() -> Harness<Redis> {
    Harness::<Redis>::new()
}

#[test]
fn strings_and_their_options() {
    let h = server();
    let mut c = h.connect().unwrap();
    assert_eq!(cmd(&mut c, &["PING"]), "+PONG\r\n");
    assert_eq!(cmd(&mut c, &["PING", "hi"]), "$2\r\nhi\r\n");
    assert_eq!(cmd(&mut c, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(cmd(&mut c, &["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(cmd(&mut c, &["GET", "nope"]), "$-1\r\n");
    assert_eq!(cmd(&mut c, &["SET", "k", "w", "NX"]), "$-1\r\n");
    assert_eq!(cmd(&mut c, &["SET", "k", "w", "XX", "GET"]), "$1\r\nv\r\n");
    assert_eq!(cmd(&mut c, &["SET", "k", "x", "EX", "100"]), "+OK\r\n");
    assert_ttl(cmd(&mut c, &["TTL", "k"]), 100);
    assert_eq!(cmd(&mut c, &["SET", "k", "y", "KEEPTTL"]), "+OK\r\n");
    assert_ttl(cmd(&mut c, &["TTL", "k"]), 100);
    assert_eq!(cmd(&mut c, &["SET", "k", "z"]), "+OK\r\n");
    assert_eq!(cmd(&mut c, &["TTL", "k"]), ":-1\r\n");
    assert_eq!(
        cmd(&mut c, &["SET", "k", "v", "EX", "0"]),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["SET", "k", "v", "EX", "1", "PX", "1"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["SET", "k", "v", "EX", "ten"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    // An absolute expiry in the past removes the key.
    assert_eq!(cmd(&mut c, &["SET", "k", "v", "PXAT", "1"]), "+OK\r\n");
    assert_eq!(cmd(&mut c, &["EXISTS", "k"]), ":0\r\n");
    assert_eq!(cmd(&mut c, &["INCR", "n"]), ":1\r\n");
    assert_eq!(cmd(&mut c, &["INCRBY", "n", "-5"]), ":-4\r\n");
    assert_eq!(
        cmd(&mut c, &["DECRBY", "n", "-9223372036854775808"]),
        "-ERR decrement would overflow\r\n"
    );
    assert_eq!(cmd(&mut c, &["INCRBYFLOAT", "n", "0.5"]), "$4\r\n-3.5\r\n");
    assert_eq!(
        cmd(&mut c, &["INCRBYFLOAT", "n", "inf"]),
        "-ERR increment would produce NaN or Infinity\r\n"
    );
    assert_eq!(cmd(&mut c, &["APPEND", "a", "xy"]), ":2\r\n");
    assert_eq!(cmd(&mut c, &["STRLEN", "a"]), ":2\r\n");
    assert_eq!(
        cmd(&mut c, &["MSET", "a", "1", "b"]),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(cmd(&mut c, &["MSET", "a", "1", "b", "2"]), "+OK\r\n");
    assert_eq!(
        cmd(&mut c, &["MGET", "a", "x", "b"]),
        "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
    );
}

#[test]
fn errors_are_worded_as_redis() {
    let h = server();
    let mut c = h.connect().unwrap();
    assert_eq!(
        cmd(&mut c, &["FOO", "a", "b"]),
        "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
    );
    assert_eq!(
        cmd(&mut c, &["GET"]),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["CLIENT", "SETNAME"]),
        "-ERR wrong number of arguments for 'client|setname' command\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["CLIENT", "BOGUS"]),
        "-ERR unknown subcommand 'BOGUS'. Try CLIENT HELP.\r\n"
    );
    cmd(&mut c, &["LPUSH", "list", "x"]);
    assert_eq!(
        cmd(&mut c, &["GET", "list"]),
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
    cmd(&mut c, &["SET", "s", "abc"]);
    assert_eq!(
        cmd(&mut c, &["INCR", "s"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(cmd(&mut c, &["SELECT", "0"]), "+OK\r\n");
    assert_eq!(
        cmd(&mut c, &["SELECT", "3"]),
        "-ERR DB index is out of range\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["HELLO", "3"]),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["RENAME", "nope", "x"]),
        "-ERR no such key\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["EXPIRE", "s", "10", "NX", "XX"]),
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    );
    // The connection stays open after command errors.
    assert!(c.is_open());
}

#[test]
fn pipelined_and_split_requests() {
    let h = server();
    let mut c = h.connect().unwrap();
    // Many commands in one read; inline commands too.
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(frame(&["INCR", "counter"]));
        if i == 50 {
            batch.extend_from_slice(b"PING\r\n");
        }
    }
    let out = c.round_trip(&batch).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with(":1\r\n:2\r\n"));
    assert!(text.contains(":51\r\n+PONG\r\n:52\r\n"));
    assert!(text.ends_with(":100\r\n"));
    // One command split at every byte.
    let set = frame(&["SET", "key", "a value"]);
    for piece in set.chunks(1) {
        c.send(piece).unwrap();
    }
    assert_eq!(c.take_text(), "+OK\r\n");
    assert_eq!(cmd(&mut c, &["GET", "key"]), "$7\r\na value\r\n");
}

#[test]
fn a_protocol_error_replies_and_closes() {
    let h = server();
    let mut c = h.connect().unwrap();
    let mut input = frame(&["SET", "a", "1"]);
    input.extend_from_slice(b"*1\r\n$x\r\n");
    input.extend(frame(&["SET", "b", "2"]));
    assert_eq!(
        String::from_utf8(c.round_trip(&input).unwrap()).unwrap(),
        "+OK\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    assert_eq!(c.lost_reason(), Some(LostReason::Closed));
    let mut d = h.connect().unwrap();
    assert_eq!(cmd(&mut d, &["EXISTS", "a", "b"]), ":1\r\n");
    assert_eq!(
        h.protocol().store().borrow().stats.protocol_errors,
        1,
        "counted for INFO"
    );
}

#[test]
fn quit_replies_ok_and_closes() {
    let h = server();
    let mut c = h.connect().unwrap();
    let mut input = frame(&["QUIT"]);
    input.extend(frame(&["SET", "after", "quit"]));
    assert_eq!(c.round_trip(&input).unwrap(), b"+OK\r\n");
    assert!(!c.is_open());
    let mut d = h.connect().unwrap();
    assert_eq!(cmd(&mut d, &["EXISTS", "after"]), ":0\r\n");
}

#[test]
fn collections() {
    let h = server();
    let mut c = h.connect().unwrap();
    assert_eq!(cmd(&mut c, &["RPUSH", "l", "a", "b", "c"]), ":3\r\n");
    assert_eq!(
        cmd(&mut c, &["LRANGE", "l", "-2", "100"]),
        "*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["LPOP", "l", "2"]),
        "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    assert_eq!(cmd(&mut c, &["RPOP", "l"]), "$1\r\nc\r\n");
    assert_eq!(
        cmd(&mut c, &["TYPE", "l"]),
        "+none\r\n",
        "an emptied list is deleted"
    );
    assert_eq!(cmd(&mut c, &["LPOP", "l", "2"]), "*-1\r\n");
    assert_eq!(cmd(&mut c, &["HSET", "h", "f", "1", "g", "2"]), ":2\r\n");
    assert_eq!(cmd(&mut c, &["HGET", "h", "g"]), "$1\r\n2\r\n");
    assert_eq!(cmd(&mut c, &["HDEL", "h", "f", "g"]), ":2\r\n");
    assert_eq!(cmd(&mut c, &["EXISTS", "h"]), ":0\r\n");
    assert_eq!(cmd(&mut c, &["SADD", "s", "x", "y", "x"]), ":2\r\n");
    assert_eq!(cmd(&mut c, &["SCARD", "s"]), ":2\r\n");
    assert_eq!(cmd(&mut c, &["SISMEMBER", "s", "y"]), ":1\r\n");
    assert_eq!(
        cmd(&mut c, &["SPOP", "s", "-1"]),
        "-ERR value is out of range, must be positive\r\n"
    );
    assert_eq!(cmd(&mut c, &["ZADD", "z", "2", "b", "1", "a"]), ":2\r\n");
    assert_eq!(
        cmd(&mut c, &["ZADD", "z", "XX", "CH", "5", "a", "1", "new"]),
        ":1\r\n"
    );
    assert_eq!(cmd(&mut c, &["ZADD", "z", "INCR", "1", "b"]), "$1\r\n3\r\n");
    assert_eq!(
        cmd(&mut c, &["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
        "*4\r\n$1\r\nb\r\n$1\r\n3\r\n$1\r\na\r\n$1\r\n5\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["ZRANGE", "z", "(3", "+inf", "BYSCORE"]),
        "*1\r\n$1\r\na\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["ZADD", "z", "NX", "XX", "1", "a"]),
        "-ERR XX and NX options at the same time are not compatible\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["ZPOPMIN", "z"]),
        "*2\r\n$1\r\nb\r\n$1\r\n3\r\n"
    );
}

#[test]
fn keys_scan_and_expiry_commands() {
    let h = server();
    let mut c = h.connect().unwrap();
    for k in ["user:1", "user:2", "user:10", "other"] {
        cmd(&mut c, &["SET", k, "v"]);
    }
    assert_eq!(
        cmd(&mut c, &["KEYS", "user:?"]),
        "*2\r\n$6\r\nuser:1\r\n$6\r\nuser:2\r\n"
    );
    assert_eq!(cmd(&mut c, &["DBSIZE"]), ":4\r\n");
    // SCAN walks every key exactly once when nothing changes.
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let reply = cmd(&mut c, &["SCAN", &cursor, "COUNT", "1"]);
        let lines: Vec<&str> = reply.split("\r\n").collect();
        cursor = lines[2].to_string();
        seen.extend(
            lines
                .iter()
                .skip(5)
                .step_by(2)
                .filter(|l| !l.is_empty())
                .map(|l| l.to_string()),
        );
        if cursor == "0" {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["other", "user:1", "user:10", "user:2"]);
    assert_eq!(
        cmd(&mut c, &["SCAN", "0", "COUNT", "0"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(cmd(&mut c, &["SCAN", "-1"]), "-ERR invalid cursor\r\n");
    assert_eq!(cmd(&mut c, &["EXPIRE", "other", "100"]), ":1\r\n");
    assert_eq!(cmd(&mut c, &["EXPIRE", "other", "50", "GT"]), ":0\r\n");
    assert_eq!(cmd(&mut c, &["EXPIRE", "other", "50", "LT"]), ":1\r\n");
    assert_ttl(cmd(&mut c, &["TTL", "other"]), 50);
    assert_eq!(cmd(&mut c, &["PERSIST", "other"]), ":1\r\n");
    assert_eq!(cmd(&mut c, &["PTTL", "other"]), ":-1\r\n");
    assert_eq!(cmd(&mut c, &["PEXPIREAT", "other", "1"]), ":1\r\n");
    assert_eq!(cmd(&mut c, &["TTL", "other"]), ":-2\r\n");
    assert_eq!(cmd(&mut c, &["RENAME", "user:1", "u"]), "+OK\r\n");
    assert_eq!(cmd(&mut c, &["DEL", "u", "user:2", "nope"]), ":2\r\n");
    assert_eq!(cmd(&mut c, &["FLUSHALL"]), "+OK\r\n");
    assert_eq!(cmd(&mut c, &["DBSIZE"]), ":0\r\n");
}

#[test]
fn transactions_queue_abort_and_watch() {
    let h = server();
    let mut a = h.connect().unwrap();
    let mut b = h.connect().unwrap();
    assert_eq!(cmd(&mut a, &["MULTI"]), "+OK\r\n");
    assert_eq!(cmd(&mut a, &["SET", "x", "1"]), "+QUEUED\r\n");
    assert_eq!(cmd(&mut a, &["INCR", "x"]), "+QUEUED\r\n");
    assert_eq!(cmd(&mut b, &["GET", "x"]), "$-1\r\n", "not run before EXEC");
    assert_eq!(cmd(&mut a, &["EXEC"]), "*2\r\n+OK\r\n:2\r\n");
    // A refused command dooms the transaction.
    cmd(&mut a, &["MULTI"]);
    assert_eq!(
        cmd(&mut a, &["GET"]),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    cmd(&mut a, &["INCR", "x"]);
    assert_eq!(
        cmd(&mut a, &["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(cmd(&mut a, &["GET", "x"]), "$1\r\n2\r\n");
    assert_eq!(cmd(&mut a, &["EXEC"]), "-ERR EXEC without MULTI\r\n");
    // WATCH: another connection's write aborts EXEC with a null array.
    assert_eq!(cmd(&mut a, &["WATCH", "x"]), "+OK\r\n");
    cmd(&mut b, &["SET", "x", "changed"]);
    cmd(&mut a, &["MULTI"]);
    cmd(&mut a, &["SET", "x", "mine"]);
    assert_eq!(cmd(&mut a, &["EXEC"]), "*-1\r\n");
    assert_eq!(cmd(&mut a, &["GET", "x"]), "$7\r\nchanged\r\n");
    // Unchanged watched keys let it run.
    cmd(&mut a, &["WATCH", "x"]);
    cmd(&mut a, &["MULTI"]);
    cmd(&mut a, &["SET", "x", "mine"]);
    assert_eq!(cmd(&mut a, &["EXEC"]), "*1\r\n+OK\r\n");
}

#[test]
fn subscriber_mode_allows_only_subscription_commands() {
    let h = server();
    let mut c = h.connect().unwrap();
    assert_eq!(
        cmd(&mut c, &["SUBSCRIBE", "a", "b"]),
        "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["GET", "k"]),
        "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );
    assert_eq!(cmd(&mut c, &["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(
        cmd(&mut c, &["UNSUBSCRIBE"]),
        "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
    );
    assert_eq!(cmd(&mut c, &["GET", "k"]), "$-1\r\n");
    assert_eq!(cmd(&mut c, &["PUBLISH", "a", "nobody"]), ":0\r\n");
}

#[test]
fn publish_reaches_subscribers_through_posts() {
    let h = server();
    let mut sub = h.connect().unwrap();
    let mut psub = h.connect().unwrap();
    let mut publisher = h.connect().unwrap();
    cmd(&mut sub, &["SUBSCRIBE", "news"]);
    cmd(&mut psub, &["PSUBSCRIBE", "n*"]);
    assert_eq!(cmd(&mut publisher, &["PUBLISH", "news", "hi"]), ":2\r\n");
    h.run_until_idle();
    assert_eq!(
        sub.take_text(),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    );
    assert_eq!(
        psub.take_text(),
        "*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    );
    // A subscriber that has gone is forgotten.
    sub.peer_reset().unwrap();
    assert_eq!(cmd(&mut publisher, &["PUBLISH", "news", "again"]), ":1\r\n");
}

#[test]
fn the_tick_expires_keys_nobody_touches() {
    let h = server();
    let mut c = h.connect().unwrap();
    let start = crate::store::unix_ms();
    for i in 0..20 {
        cmd(&mut c, &["SET", &format!("k{i}"), "v", "PX", "1"]);
    }
    cmd(&mut c, &["SET", "stays", "v"]);
    // Expiry times are wall-clock: wait (bounded) for 2 ms of it to pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while crate::store::unix_ms() < start + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock does not move"
        );
        std::hint::spin_loop();
    }
    assert_eq!(cmd(&mut c, &["DBSIZE"]), ":21\r\n", "DBSIZE touches no key");
    h.advance(Duration::from_millis(100));
    assert_eq!(cmd(&mut c, &["DBSIZE"]), ":1\r\n");
    assert_eq!(h.protocol().store().borrow().db.stats.expired_keys, 20);
}

#[test]
fn maxmemory_noeviction_and_lru() {
    let h = Harness::<Redis>::with_options([("maxmemory", "4kb")]).unwrap();
    let mut c = h.connect().unwrap();
    let value = "x".repeat(500);
    let mut refused_at = None;
    for i in 0..100 {
        let reply = cmd(&mut c, &["SET", &format!("k{i}"), &value]);
        if reply != "+OK\r\n" {
            assert_eq!(
                reply,
                "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
            );
            refused_at = Some(i);
            break;
        }
    }
    let refused_at = refused_at.expect("an OOM refusal");
    assert!((5..10).contains(&refused_at), "refused at {refused_at}");
    assert_eq!(
        cmd(&mut c, &["GET", "k0"]).len(),
        500 + 8,
        "reads still work"
    );
    assert_eq!(cmd(&mut c, &["DEL", "k0", "k1"]), ":2\r\n");
    assert_eq!(cmd(&mut c, &["SET", "again", "v"]), "+OK\r\n");

    let h =
        Harness::<Redis>::with_options([("maxmemory", "4kb"), ("maxmemory-policy", "allkeys-lru")])
            .unwrap();
    let mut c = h.connect().unwrap();
    for i in 0..100 {
        assert_eq!(cmd(&mut c, &["SET", &format!("k{i}"), &value]), "+OK\r\n");
    }
    let store = h.protocol().store().borrow();
    assert!(
        store.db.used_memory() <= 4096 + 600,
        "{}",
        store.db.used_memory()
    );
    assert!(store.db.stats.evicted_keys > 80);
}

#[test]
fn options_are_checked() {
    let bad = Harness::<Redis>::with_options([("maxmemory-policy", "volatile-ttl")]).err();
    assert_eq!(
        bad.as_deref(),
        Some("plugin redis: option maxmemory-policy: invalid value \"volatile-ttl\": expected noeviction or allkeys-lru")
    );
    let bad = Harness::<Redis>::with_options([("max-bulk", "lots")]).err();
    assert!(bad
        .unwrap()
        .contains("option max-bulk: invalid value \"lots\""));
    let h = Harness::<Redis>::with_options([("max-bulk", "10")]).unwrap();
    let mut c = h.connect().unwrap();
    assert_eq!(
        c.round_trip(b"*2\r\n$3\r\nGET\r\n$11\r\n").unwrap(),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(!c.is_open());
}

#[test]
fn per_connection_state_is_bounded_by_max_query() {
    let h = Harness::<Redis>::with_options([("max-query", "2kb")]).unwrap();
    let mut c = h.connect().unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("{i:0>30}")).collect();
    let mut watch = vec!["WATCH"];
    watch.extend(keys.iter().map(String::as_str));
    assert_eq!(
        cmd(&mut c, &watch),
        "-ERR the keys this connection watches passed max-query (2048 bytes)\r\n"
    );
    let mut subscribe = vec!["SUBSCRIBE"];
    subscribe.extend(keys.iter().map(String::as_str));
    assert!(cmd(&mut c, &subscribe)
        .ends_with("-ERR the subscriptions of this connection passed max-query (2048 bytes)\r\n"));
    // A transaction past the bound closes the connection.
    let mut d = h.connect().unwrap();
    cmd(&mut d, &["MULTI"]);
    let value = "v".repeat(600);
    for _ in 0..4 {
        cmd(&mut d, &["SET", "k", &value]);
    }
    assert!(!d.is_open());
}

#[test]
fn command_docs_and_info() {
    let h = server();
    let mut c = h.connect().unwrap();
    let count = cmd(&mut c, &["COMMAND", "COUNT"]);
    let n: usize = count[1..count.len() - 2].parse().unwrap();
    assert_eq!(n, crate::commands::table::COMMANDS.len());
    let docs = cmd(&mut c, &["COMMAND", "DOCS", "get"]);
    assert!(
        docs.starts_with("*2\r\n$3\r\nget\r\n*10\r\n$7\r\nsummary\r\n"),
        "{docs}"
    );
    assert!(
        docs.contains(
            "$9\r\narguments\r\n*1\r\n*4\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n$3\r\nkey\r\n"
        ),
        "{docs}"
    );
    let info = cmd(&mut c, &["INFO", "keyspace", "memory"]);
    assert!(info.contains("# Memory\r\nused_memory:"), "{info}");
    assert!(info.contains("# Keyspace\r\n"), "{info}");
    assert!(!info.contains("# Server"), "{info}");
    assert_eq!(
        cmd(&mut c, &["CONFIG", "GET", "maxmemory*"]),
        "*6\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n$17\r\nmaxmemory-samples\r\n$1\r\n5\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["CONFIG", "SET", "maxmemory", "1mb"]),
        "+OK\r\n"
    );
    assert_eq!(
        cmd(&mut c, &["CONFIG", "GET", "maxmemory"]),
        "*2\r\n$9\r\nmaxmemory\r\n$7\r\n1048576\r\n"
    );
}
