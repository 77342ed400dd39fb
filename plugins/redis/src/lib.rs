//! The redis plugin: a Redis-compatible in-memory data store that real Redis clients —
//! `redis-cli`, `redis-benchmark`, redis-py — talk to, and the worked example of a real
//! protocol on sockhost.
//!
//! Built as `libredis.so`:
//!
//! ```text
//! sockhost --plugin target/release/libredis.so --concurrency thread --bind 127.0.0.1:6379
//! redis-cli -p 6379 SET greeting hello    # OK
//! redis-cli -p 6379 GET greeting          # "hello"
//! ```
//!
//! # What it speaks
//!
//! RESP2 — multibulk requests and inline commands, pipelined or split across reads — with
//! Redis 7.0's replies and error texts. `HELLO 3` is refused with
//! `-NOPROTO unsupported protocol version`, so a client that asks for RESP3 can fall back
//! (redis-py 8 does not fall back by itself: give it `protocol=2`).
//!
//! | group | commands |
//! |---|---|
//! | connection | `PING` `ECHO` `QUIT` `SELECT 0` `HELLO` `RESET` `CLIENT SETNAME/GETNAME/ID/INFO/SETINFO` |
//! | server | `INFO` `DBSIZE` `FLUSHDB` `FLUSHALL` `TIME` `COMMAND` (`COUNT`, `DOCS`, `INFO`, `LIST`) `CONFIG GET/SET/RESETSTAT` |
//! | strings | `GET` `SET` (`NX|XX`, `GET`, `EX|PX|EXAT|PXAT|KEEPTTL`) `SETEX` `PSETEX` `MGET` `MSET` `SETNX` `GETSET` `GETDEL` `APPEND` `STRLEN` `INCR` `INCRBY` `DECR` `DECRBY` `INCRBYFLOAT` |
//! | keys | `DEL` `UNLINK` `EXISTS` `TYPE` `KEYS` `SCAN` `RENAME` `RENAMENX` `EXPIRE` `PEXPIRE` `EXPIREAT` `PEXPIREAT` `TTL` `PTTL` `PERSIST` `RANDOMKEY` |
//! | lists | `LPUSH` `RPUSH` `LPOP` `RPOP` `LRANGE` `LLEN` `LINDEX` |
//! | hashes | `HSET` `HMSET` `HGET` `HMGET` `HGETALL` `HKEYS` `HVALS` `HDEL` `HLEN` `HEXISTS` `HINCRBY` |
//! | sets | `SADD` `SREM` `SPOP` `SMEMBERS` `SISMEMBER` `SCARD` |
//! | sorted sets | `ZADD` `ZINCRBY` `ZRANGE` `ZREVRANGE` `ZPOPMIN` `ZSCORE` `ZCARD` `ZREM` |
//! | transactions | `MULTI` `EXEC` `DISCARD` `WATCH` `UNWATCH` |
//! | pub/sub | `SUBSCRIBE` `UNSUBSCRIBE` `PSUBSCRIBE` `PUNSUBSCRIBE` `PUBLISH` |
//!
//! # Limits
//!
//! * `max-bulk` (default 512mb, Redis's `proto-max-bulk-len`): the longest argument.
//!   Memory for a bulk is committed as its bytes arrive, not when its length is announced.
//! * `max-multibulk` (default 1048576): the most arguments in one command.
//! * `max-query` (default 1gb, Redis's `client-query-buffer-limit`): the most bytes of one
//!   unfinished command; past it the connection is closed.
//! * `maxmemory` (default 0 = none) and `maxmemory-policy` (`noeviction` or `allkeys-lru`):
//!   the estimated memory of keys and values. Past it, commands that may grow memory get
//!   `-OOM command not allowed when used memory > 'maxmemory'.` (`noeviction`), or the least
//!   recently used keys are evicted first (`allkeys-lru`, sampling 5 keys per eviction).
//!   The estimate counts every key, value, field and member with a fixed per-item overhead;
//!   it does not see allocator rounding or connection buffers, so set `maxmemory` with
//!   headroom below what the process may really use.
//! * A subscriber that stops reading is bounded by the host's `--max-pending` (default
//!   4 MiB of unsent bytes; Redis's `client-output-buffer-limit pubsub` is 32 MB): past it
//!   the host closes that connection.
//!
//! A framing error gets Redis's `-ERR Protocol error: ...` and the connection is closed.
//!
//! # Host services
//!
//! Keys with a TTL expire lazily (a command that finds an expired key deletes it) and
//! actively: the host's periodic tick (every 100 ms, Redis's `hz 10`) samples keys with a
//! TTL and deletes the expired ones, for at most 2 ms per tick — so `DBSIZE` and `SCAN`
//! stop counting an expired key even if nobody touches it. `PUBLISH` hands each subscriber
//! its message through the host's post service. The plugin declares services, so it needs a
//! sockhost with plugin-api 0.1.1 or newer.
//!
//! # One store per worker
//!
//! The store lives in the plugin's `Protocol` value: each worker process has its own. Run
//! with `--concurrency thread` (or `--workers 1`) for one store per server, as Redis is
//! one process. With several workers a client sees the store of whichever worker accepted
//! its connection. Nothing is persisted: a restart or reload starts empty.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;

use plugin_api::{
    ConnId, ConnInfo, Consumer, LostReason, OptionSpec, Options, Output, PluginInfo, Protocol,
};

pub mod commands;
pub mod db;
pub mod glob;
pub mod pubsub;
pub mod reply;
pub mod resp;
pub mod store;
pub mod value;

#[cfg(test)]
mod tests;

use commands::{Ctx, Session};
use reply::Reply;
use resp::{Limits, RequestParser};
use store::{parse_memory, unix_ms, Config, EvictionPolicy, Store};

/// One worker's Redis server: its store, shared by its connections.
pub struct Redis {
    store: Rc<RefCell<Store>>,
}

/// Parse a memory-sized option (`512mb`, `1gb`, bytes).
fn memory_option(options: &Options, key: &str, default: u64) -> Result<u64, String> {
    match options.get(key) {
        None => Ok(default),
        Some(v) => parse_memory(v).ok_or_else(|| {
            format!("option {key}: invalid value {v:?}: expected bytes, or a number with kb, mb, gb (or k, m, g)")
        }),
    }
}

impl Protocol for Redis {
    type Consumer = RedisConsumer;

    const INFO: PluginInfo = PluginInfo::new(
        "redis",
        env!("CARGO_PKG_VERSION"),
        "a Redis-compatible in-memory data store (RESP2); one store per worker",
    )
    .options(&[
        OptionSpec::new(
            "max-bulk",
            "longest bulk string (Redis's proto-max-bulk-len)",
        )
        .default_value("512mb"),
        OptionSpec::new("max-multibulk", "most arguments in one command").default_value("1048576"),
        OptionSpec::new(
            "max-query",
            "most bytes of one unfinished command before the connection is closed",
        )
        .default_value("1gb"),
        OptionSpec::new(
            "maxmemory",
            "estimated bytes of keys and values allowed; 0 = no limit",
        )
        .default_value("0"),
        OptionSpec::new(
            "maxmemory-policy",
            "past maxmemory: noeviction or allkeys-lru",
        )
        .default_value("noeviction"),
    ])
    .services();

    fn new(options: &Options) -> Result<Self, String> {
        let max_bulk = memory_option(options, "max-bulk", 512 << 20)?;
        if max_bulk == 0 || max_bulk > (1 << 40) {
            return Err("option max-bulk: must be between 1 and 1tb".into());
        }
        let max_multibulk: usize = options.parse("max-multibulk")?.unwrap_or(1 << 20);
        if max_multibulk == 0 || max_multibulk > i32::MAX as usize {
            return Err(format!(
                "option max-multibulk: must be between 1 and {}",
                i32::MAX
            ));
        }
        let max_query = memory_option(options, "max-query", 1 << 30)?;
        if max_query < 1024 {
            return Err("option max-query: must be at least 1kb".into());
        }
        let maxmemory = memory_option(options, "maxmemory", 0)?;
        let policy_name = options.get("maxmemory-policy").unwrap_or("noeviction");
        let policy = EvictionPolicy::parse(policy_name).ok_or_else(|| {
            format!("option maxmemory-policy: invalid value {policy_name:?}: expected noeviction or allkeys-lru")
        })?;
        let config = Config {
            maxmemory,
            policy,
            limits: Limits {
                max_bulk: max_bulk as usize,
                max_multibulk,
                max_query: max_query as usize,
            },
            port: 0,
        };
        log::info!(
            "store ready (maxmemory {maxmemory} bytes, policy {}, max-bulk {max_bulk}; one store per worker)",
            policy.name()
        );
        Ok(Redis {
            store: Rc::new(RefCell::new(Store::new(config))),
        })
    }

    fn consumer(&self, info: &ConnInfo) -> RedisConsumer {
        let mut store = self.store.borrow_mut();
        if store.config.port == 0 {
            store.config.port = info.local.port();
        }
        let limits = store.config.limits;
        let client_id = store.client_connected();
        // The host's connection id addresses posts; without services (the test harness)
        // the client id stands in.
        let id = match info.id {
            ConnId::NONE => client_id,
            id => id.to_raw(),
        };
        RedisConsumer {
            parser: RequestParser::new(limits),
            session: Session::new(id, client_id),
            store: self.store.clone(),
            reply: Reply::default(),
            peer: info.peer,
            done: false,
        }
    }

    /// Active expiry runs on the host's tick, at Redis's default rate (`hz 10`).
    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(store::EXPIRE_PERIOD)
    }

    /// One bounded active-expiry cycle.
    fn tick(&self) {
        if let Ok(mut store) = self.store.try_borrow_mut() {
            store.tick();
        }
    }
}

impl Redis {
    /// The store (for tests).
    pub fn store(&self) -> &Rc<RefCell<Store>> {
        &self.store
    }
}

/// One connection: its parser, its session and its reply buffer.
pub struct RedisConsumer {
    parser: RequestParser,
    session: Session,
    store: Rc<RefCell<Store>>,
    reply: Reply,
    peer: SocketAddr,
    /// Closing: later input is ignored.
    done: bool,
}

impl RedisConsumer {
    /// This connection's `CLIENT ID`.
    pub fn client_id(&self) -> u64 {
        self.session.client_id
    }
}

impl Consumer for RedisConsumer {
    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        if self.done {
            return;
        }
        let mut store = self.store.borrow_mut();
        let now = unix_ms();
        let (session, reply) = (&mut self.session, &mut self.reply);
        let result = self.parser.feed(data, |args| {
            let mut ctx = Ctx {
                store: &mut store,
                session,
                out: reply,
                now,
            };
            commands::execute(&mut ctx, args);
            if session.closing {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Err(e) = result {
            store.stats.protocol_errors += 1;
            match e.reply() {
                Some(text) => {
                    log::debug!("{}: {text}; closing", self.peer);
                    reply.error(&text);
                }
                None => log::info!(
                    "{}: closing a client that reached max-query ({} bytes)",
                    self.peer,
                    store.config.limits.max_query
                ),
            }
            session.closing = true;
        }
        out.write(reply.bytes());
        reply.clear();
        if session.closing {
            self.done = true;
            out.close();
        }
    }

    fn connection_lost(&mut self, reason: LostReason) {
        log::debug!("{}: connection ended ({reason:?})", self.peer);
        if let Ok(mut store) = self.store.try_borrow_mut() {
            store.client_disconnected(self.session.id);
        }
    }
}

plugin_api::export_plugin!(Redis);
