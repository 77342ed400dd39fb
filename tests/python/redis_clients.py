#!/usr/bin/env python3
"""redis-py against sockhost + libredis.so: run by tests/tests/redis.rs.

    python3 redis_clients.py PORT SECTION

SECTION is one of: commands, pipelines, pubsub, expiry, noeviction, lru, malformed, resp3.
Each section asserts what a Redis 7 server would answer; the first failed assertion ends the
script with a traceback and exit status 1. Every wait is bounded.
"""

import socket
import sys
import time

import redis
from redis.exceptions import ResponseError

PORT = int(sys.argv[1])
SECTION = sys.argv[2]


def client(**kw):
    # redis-py 8 asks for RESP3 by default and does not fall back; this server is RESP2.
    return redis.Redis(port=PORT, protocol=2, socket_timeout=10, **kw)


def error_of(fn, *args, **kw):
    """The ResponseError text a call raises (fails if it raises none)."""
    try:
        fn(*args, **kw)
    except ResponseError as e:
        return str(e)
    raise AssertionError(f"{fn.__name__}{args} raised no error")


def eq(got, want):
    assert got == want, f"got {got!r}, want {want!r}"


def wait_until(what, condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


def commands():
    r = client()
    r.flushall()
    # connection
    eq(r.ping(), True)
    eq(r.echo("hi"), b"hi")
    eq(r.execute_command("SELECT", 0), True)
    eq(error_of(r.execute_command, "SELECT", 1), "DB index is out of range")
    eq(r.client_setname("tester"), True)
    eq(r.client_getname(), "tester")
    assert r.client_id() >= 1
    eq(error_of(r.execute_command, "NOSUCH", "a", "b"),
       "unknown command 'NOSUCH', with args beginning with: 'a' 'b' ")
    eq(error_of(r.execute_command, "GET"), "wrong number of arguments for 'get' command")
    eq(error_of(r.execute_command, "CLIENT", "NOPE"), "unknown subcommand 'NOPE'. Try CLIENT HELP.")
    info = r.info()
    eq(info["redis_mode"], "standalone")
    assert info["connected_clients"] >= 1 and "used_memory" in info, info
    assert r.command_count() > 50
    assert "get" in r.command()
    # strings
    eq(r.set("s", "v"), True)
    eq(r.get("s"), b"v")
    eq(r.set("s", "w", nx=True), None)
    eq(r.set("s", "w", xx=True), True)
    eq(r.set("nx", "1", nx=True), True)
    eq(r.set("missing", "1", xx=True), None)
    eq(r.set("s", "x", get=True), b"w")
    eq(r.set("t", "1", ex=100), True)
    assert 90 <= r.ttl("t") <= 100
    eq(r.set("t", "2", keepttl=True), True)
    assert r.ttl("t") > 0
    eq(r.set("t", "3"), True)
    eq(r.ttl("t"), -1)
    eq(r.set("p", "1", px=100000), True)
    assert 90000 <= r.pttl("p") <= 100000
    eq(r.set("at", "1", exat=int(time.time()) + 100), True)
    assert 90 <= r.ttl("at") <= 100
    eq(r.set("pat", "1", pxat=int(time.time() * 1000) + 100000), True)
    assert r.pttl("pat") > 90000
    eq(error_of(r.set, "s", "v", ex=0), "invalid expire time in 'set' command")
    eq(error_of(r.execute_command, "SET", "s", "v", "NX", "XX"), "syntax error")
    eq(r.mset({"m1": "a", "m2": "b"}), True)
    eq(r.mget("m1", "nope", "m2"), [b"a", None, b"b"])
    eq(r.setnx("m1", "z"), False)
    eq(r.setnx("m3", "c"), True)
    eq(r.getset("m3", "d"), b"c")
    eq(r.getdel("m3"), b"d")
    eq(r.exists("m3"), 0)
    eq(r.append("ap", "ab"), 2)
    eq(r.append("ap", "cd"), 4)
    eq(r.strlen("ap"), 4)
    eq(r.incr("n"), 1)
    eq(r.incrby("n", 10), 11)
    eq(r.decr("n"), 10)
    eq(r.decrby("n", 3), 7)
    eq(r.incrbyfloat("f", 10.5), 10.5)
    eq(r.incrbyfloat("f", 0.1), 10.6)
    eq(error_of(r.incr, "s"), "value is not an integer or out of range")
    r.set("big", str(2**63 - 1))
    eq(error_of(r.incr, "big"), "increment or decrement would overflow")
    eq(error_of(r.incrbyfloat, "s", 1), "value is not a valid float")
    # keys
    eq(r.delete("m1", "m2", "nope"), 2)
    eq(r.unlink("ap"), 1)
    eq(r.exists("s", "s", "nope"), 2)
    eq(r.type("s"), b"string")
    eq(r.type("nope"), b"none")
    r.mset({"user:1": "a", "user:2": "b", "user:10": "c", "other": "d"})
    eq(sorted(r.keys("user:?")), [b"user:1", b"user:2"])
    eq(sorted(r.keys("user:*")), [b"user:1", b"user:10", b"user:2"])
    eq(sorted(r.keys("user:[12]*")), [b"user:1", b"user:10", b"user:2"])
    eq(sorted(r.scan_iter(match="user:*", count=2)), [b"user:1", b"user:10", b"user:2"])
    eq(set(r.scan_iter()), set(r.keys("*")))
    cursor, batch = r.scan(0, count=1)
    assert cursor != 0 and len(batch) <= 2
    eq(error_of(r.execute_command, "SCAN", "x"), "invalid cursor")
    eq(r.rename("other", "renamed"), True)
    eq(r.get("renamed"), b"d")
    eq(error_of(r.rename, "nope", "x"), "no such key")
    eq(r.expire("renamed", 100), True)
    assert 90 <= r.ttl("renamed") <= 100
    eq(r.pexpire("renamed", 50000), True)
    assert r.pttl("renamed") <= 50000
    eq(r.expireat("renamed", int(time.time()) + 200), True)
    assert r.ttl("renamed") > 100
    eq(r.persist("renamed"), True)
    eq(r.ttl("renamed"), -1)
    eq(r.ttl("nope"), -2)
    eq(r.expire("nope", 10), False)
    eq(r.expire("renamed", -1), True)
    eq(r.exists("renamed"), 0)
    # lists
    eq(r.lpush("l", "a", "b"), 2)
    eq(r.rpush("l", "c"), 3)
    eq(r.lrange("l", 0, -1), [b"b", b"a", b"c"])
    eq(r.llen("l"), 3)
    eq(r.lpop("l"), b"b")
    eq(r.rpop("l"), b"c")
    eq(r.rpop("l", 5), [b"a"])
    eq(r.exists("l"), 0)
    eq(r.lpop("l"), None)
    eq(error_of(r.lpush, "s", "x"), "WRONGTYPE Operation against a key holding the wrong kind of value")
    # hashes
    eq(r.hset("h", mapping={"f1": "1", "f2": "2"}), 2)
    eq(r.hset("h", "f1", "one"), 0)
    eq(r.hget("h", "f1"), b"one")
    eq(r.hget("h", "nope"), None)
    eq(r.hgetall("h"), {b"f1": b"one", b"f2": b"2"})
    eq(r.hdel("h", "f1", "nope"), 1)
    eq(r.hlen("h"), 1)
    eq(r.hincrby("h", "f2", 5), 7)
    eq(error_of(r.hget, "s", "f"), "WRONGTYPE Operation against a key holding the wrong kind of value")
    # sets
    eq(r.sadd("set", "a", "b", "c", "a"), 3)
    eq(r.smembers("set"), {b"a", b"b", b"c"})
    eq(r.sismember("set", "a"), True)
    eq(r.sismember("set", "z"), False)
    eq(r.scard("set"), 3)
    popped = r.spop("set")
    assert popped in (b"a", b"b", b"c")
    eq(r.scard("set"), 2)
    eq(len(r.spop("set", 5)), 2)
    eq(r.exists("set"), 0)
    # sorted sets
    eq(r.zadd("z", {"a": 3, "b": 1, "c": 2}), 3)
    eq(r.zadd("z", {"a": 0.5}, ch=True), 1)
    eq(r.zrange("z", 0, -1), [b"a", b"b", b"c"])
    eq(r.zrange("z", 0, 1, withscores=True), [(b"a", 0.5), (b"b", 1.0)])
    eq(r.zrange("z", 0, -1, desc=True), [b"c", b"b", b"a"])
    eq(r.zrange("z", 1, 2, byscore=True), [b"b", b"c"])
    eq(r.zpopmin("z"), [(b"a", 0.5)])
    eq(r.zpopmin("z", 5), [(b"b", 1.0), (b"c", 2.0)])
    eq(r.exists("z"), 0)
    eq(error_of(r.zadd, "z", {"a": "x"}), "value is not a valid float")
    # flush
    assert r.dbsize() > 0
    eq(r.flushdb(), True)
    eq(r.dbsize(), 0)
    r.set("x", 1)
    eq(r.flushall(), True)
    eq(r.dbsize(), 0)
    eq(r.execute_command("QUIT"), True)


def pipelines():
    r = client()
    r.flushall()
    # Transactional (MULTI/EXEC, redis-py's default) and plain pipelines.
    for transaction in (True, False):
        p = r.pipeline(transaction=transaction)
        for i in range(500):
            p.set(f"k{i}", i)
            p.incr("counter")
        p.get("k499")
        p.lrange("nope", 0, -1)
        got = p.execute()
        eq(len(got), 1002)
        eq(got[-2:], [b"499", []])
    eq(r.get("counter"), b"1000")
    # An error inside a transaction is its command's reply; the others run.
    p = r.pipeline()
    p.set("a", "x")
    p.incr("a")
    p.set("b", "y")
    got = p.execute(raise_on_error=False)
    assert isinstance(got[1], ResponseError), got
    eq(r.get("b"), b"y")
    # WATCH: a change by another client aborts the transaction.
    other = client()
    with r.pipeline() as p:
        p.watch("w")
        other.set("w", "changed")
        p.multi()
        p.set("w", "mine")
        try:
            p.execute()
            raise AssertionError("EXEC ran despite a changed watched key")
        except redis.WatchError:
            pass
    eq(r.get("w"), b"changed")

    def bump(pipe):
        v = int(pipe.get("n") or 0)
        pipe.multi()
        pipe.set("n", v + 1)

    r.transaction(bump, "n")
    r.transaction(bump, "n")
    eq(r.get("n"), b"2")


def pubsub():
    publisher = client()
    sub = client().pubsub()
    sub.subscribe("news")
    sub.psubscribe("n*")
    eq(sub.get_message(timeout=5)["type"], "subscribe")
    eq(sub.get_message(timeout=5)["type"], "psubscribe")
    eq(publisher.publish("news", "hello"), 2)
    eq(publisher.publish("weather", "rain"), 0)
    m = sub.get_message(timeout=5)
    eq((m["type"], m["channel"], m["data"]), ("message", b"news", b"hello"))
    m = sub.get_message(timeout=5)
    eq((m["type"], m["pattern"], m["channel"], m["data"]), ("pmessage", b"n*", b"news", b"hello"))
    # Subscriber mode allows only the subscription commands and PING.
    sub.connection.send_command("GET", "x")
    try:
        sub.connection.read_response()
        raise AssertionError("GET ran in subscriber mode")
    except ResponseError as e:
        err = e
    assert str(err).startswith(
        "Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET"), err
    sub.ping()
    m = sub.get_message(timeout=5)
    eq(m["type"], "pong")
    # Many messages, in order, to a second subscriber too.
    sub2 = client().pubsub()
    sub2.subscribe("news")
    eq(sub2.get_message(timeout=5)["type"], "subscribe")
    for i in range(200):
        publisher.publish("news", f"m{i}")
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 200 and time.monotonic() < deadline:
        m = sub2.get_message(timeout=1)
        if m and m["type"] == "message":
            got.append(m["data"])
    eq(got, [f"m{i}".encode() for i in range(200)])
    sub.unsubscribe()
    sub.punsubscribe()
    eq(publisher.publish("news", "after"), 1)
    sub.close()
    sub2.close()
    wait_until("closed subscribers to be forgotten", lambda: publisher.publish("news", "x") == 0)


def expiry():
    r = client()
    r.flushall()
    # One pipeline, so that the DBSIZE right after the SETs runs within the TTL however
    # loaded the machine is.
    p = r.pipeline(transaction=False)
    for i in range(50):
        p.set(f"short:{i}", "v", px=1500)
    p.set("long", "v", ex=100)
    p.set("forever", "v")
    p.dbsize()
    eq(p.execute()[-1], 52)
    # Nothing touches the short keys again: only the server's own expiry cycle can remove
    # them, and DBSIZE / SCAN count keys without expiring them.
    wait_until("DBSIZE to drop to 2", lambda: r.dbsize() == 2, timeout=30)
    eq(sorted(r.scan_iter()), [b"forever", b"long"])
    assert r.info("stats")["expired_keys"] >= 50


def noeviction():
    r = client()
    r.flushall()
    eq(r.config_get("maxmemory-policy"), {"maxmemory-policy": "noeviction"})
    value = "x" * 1000
    refused = None
    for i in range(10000):
        try:
            r.set(f"k{i}", value)
        except ResponseError as e:
            refused = (i, str(e), e)
            break
    assert refused, "no OOM refusal before 10 MB were written"
    # redis-py maps the `-OOM` code to its own exception class and drops the code.
    assert isinstance(refused[2], redis.exceptions.OutOfMemoryError), refused
    eq(refused[1], "command not allowed when used memory > 'maxmemory'.")
    assert refused[0] > 50
    # Reads and deletes still work; freeing memory makes writes work again.
    eq(r.get("k0"), value.encode())
    eq(error_of(r.lpush, "l", "x"), "command not allowed when used memory > 'maxmemory'.")
    r.delete(*[f"k{i}" for i in range(refused[0] // 2)])
    eq(r.set("again", "v"), True)
    mem = r.info("memory")
    assert mem["used_memory"] <= mem["maxmemory"] + 2000, mem


def lru():
    r = client()
    r.flushall()
    eq(r.config_get("maxmemory-policy"), {"maxmemory-policy": "allkeys-lru"})
    value = "x" * 1000
    for i in range(2000):
        eq(r.set(f"k{i}", value), True)
        if i % 10 == 0:
            r.get("hot")  # keep one key recently used
        if i == 0:
            r.set("hot", "v")
    mem = r.info("memory")
    assert mem["used_memory"] <= mem["maxmemory"] + 2000, mem
    assert r.dbsize() < 2000
    assert r.info("stats")["evicted_keys"] > 0
    eq(r.get("hot"), b"v")
    eq(r.get("k1999"), value.encode())


def malformed():
    r = client()
    r.set("k", "v")
    for bad, reply in [
        (b"*1\r\n+PING\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
        (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"GET \"k\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        # A valid command first: its reply comes, then the error, then the close.
        (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$x\r\n", b"$1\r\nv\r\n-ERR Protocol error: invalid bulk length\r\n"),
    ]:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        s.sendall(bad)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()
        eq(got, reply)
    # The server carries on.
    eq(r.get("k"), b"v")
    eq(r.info("stats")["total_protocol_errors"], 5)


def resp3():
    # redis-py 8's default asks for RESP3 with HELLO 3: the server refuses as a RESP2-only
    # server does, and the client reports it.
    try:
        redis.Redis(port=PORT, socket_timeout=10).ping()
        raise AssertionError("a RESP3 handshake succeeded")
    except ResponseError as e:
        eq(str(e), "NOPROTO unsupported protocol version")
    eq(client().execute_command("HELLO", 2)[:2], [b"server", b"redis"])


SECTIONS = {f.__name__: f for f in (commands, pipelines, pubsub, expiry, noeviction, lru, malformed, resp3)}

if __name__ == "__main__":
    SECTIONS[SECTION]()
    print(f"{SECTION}: ok")
