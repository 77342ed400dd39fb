//! The kv plugin: a tiny line-based key-value server, and a worked example of a plugin with
//! framing, shared state, bounded buffers and options.
//!
//! Built as `libkv.so`:
//!
//! ```text
//! sockhost --plugin target/release/libkv.so --concurrency thread --bind 127.0.0.1:7070
//! printf 'SET greeting hello world\nGET greeting\nQUIT\n' | nc 127.0.0.1 7070
//! OK
//! VALUE hello world
//! BYE
//! ```
//!
//! # Protocol
//!
//! One command per line (`\n` or `\r\n`), one reply line per command, in order; commands
//! may be pipelined, and a line may arrive in any number of pieces.
//!
//! | command | reply |
//! |---|---|
//! | `SET key value` | `OK`, or `ERR store full` for a new key past `max-keys` |
//! | `GET key` | `VALUE <value>` or `NOT_FOUND` |
//! | `DEL key` | `DELETED` or `NOT_FOUND` |
//! | `COUNT` | `COUNT <number of keys>` |
//! | `PING` | `PONG` |
//! | `QUIT` | `BYE`, then the connection is closed (later lines are ignored) |
//! | anything else | `ERR unknown command ...` or `ERR usage: ...`; the connection stays open |
//!
//! Command words are case-insensitive. The value is the rest of the line after the key and
//! one space, spaces included; keys and values are bytes. Blank lines are ignored. A line
//! longer than `max-line` bytes is answered `ERR line too long (max N bytes)` and the
//! connection is closed — as soon as the limit is passed, without waiting for the newline.
//! At end of stream an unfinished last line is run as a command, then the connection
//! closes.
//!
//! # Options
//!
//! * `max-line` (default 1024): the longest command line, in bytes, without its line ending
//!   (1 to 1048576). It bounds what a connection buffers and the size of a value.
//! * `max-keys` (default 10000): keys the store holds at most (at least 1). With
//!   `max-line` it bounds the store's memory.
//!
//! # State
//!
//! The store lives in memory, in the protocol object, shared by every connection *of one
//! worker*. Each worker process has its own store: with the default `--concurrency process`
//! and several workers, a client sees the store of whichever worker accepted its
//! connection. Run with `--concurrency thread` (or `--workers 1`) for one store per server.
//! A reload or restart starts with empty stores.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;

use plugin_api::{
    ConnInfo, Consumer, LostReason, OptionSpec, Options, Output, PluginInfo, Protocol,
};

mod command;
mod store;

use command::Command;
// Bounded line framing from the plugin API: complete lines straight from the read, only
// an unfinished tail kept, refused as soon as it passes `max-line`.
use plugin_api::framing::Lines;
use store::Store;

/// The largest `max-line` accepted.
const MAX_LINE_LIMIT: usize = 1 << 20;

/// One worker's key-value server: its store and its limits.
pub struct Kv {
    store: Rc<RefCell<Store>>,
    max_line: usize,
}

impl Protocol for Kv {
    type Consumer = KvConsumer;

    const INFO: PluginInfo = PluginInfo::new(
        "kv",
        env!("CARGO_PKG_VERSION"),
        "a tiny line-based key-value server (SET/GET/DEL); one in-memory store per worker",
    )
    .options(&[
        OptionSpec::new(
            "max-line",
            "longest command line in bytes; a longer one is refused and its connection closed",
        )
        .default_value("1024"),
        OptionSpec::new("max-keys", "keys the store holds at most").default_value("10000"),
    ]);

    fn new(options: &Options) -> Result<Self, String> {
        let max_line: usize = options.parse("max-line")?.unwrap_or(1024);
        if !(1..=MAX_LINE_LIMIT).contains(&max_line) {
            return Err(format!(
                "option max-line: must be between 1 and {MAX_LINE_LIMIT}, got {max_line}"
            ));
        }
        let max_keys: usize = options.parse("max-keys")?.unwrap_or(10_000);
        if max_keys == 0 {
            return Err("option max-keys: must be at least 1".to_string());
        }
        log::info!(
            "store ready (max-line {max_line} bytes, max-keys {max_keys}; one store per worker)"
        );
        Ok(Kv {
            store: Rc::new(RefCell::new(Store::new(max_keys))),
            max_line,
        })
    }

    fn consumer(&self, info: &ConnInfo) -> KvConsumer {
        KvConsumer {
            lines: Lines::new(self.max_line),
            session: Session {
                store: self.store.clone(),
                peer: info.peer,
                max_line: self.max_line,
            },
        }
    }
}

/// One connection: its framing state and its session.
pub struct KvConsumer {
    lines: Lines,
    session: Session,
}

/// What a connection's commands run against (kept apart from [`Lines`] so that both can be
/// borrowed at once while a read is split).
struct Session {
    store: Rc<RefCell<Store>>,
    peer: SocketAddr,
    max_line: usize,
}

impl Session {
    /// Run one line and write its reply; `Break` once the connection is closing.
    fn execute(&mut self, line: &[u8], out: &mut Output) -> ControlFlow<()> {
        let command = match command::parse(line) {
            Ok(Some(command)) => command,
            Ok(None) => return ControlFlow::Continue(()),
            Err(refusal) => {
                reply(out, refusal.reply().as_bytes());
                return ControlFlow::Continue(());
            }
        };
        let mut store = self.store.borrow_mut();
        match command {
            Command::Set { key, value } => match store.set(key, value) {
                Ok(()) => reply(out, b"OK"),
                Err(store::Full) => reply(out, b"ERR store full"),
            },
            Command::Get(key) => match store.get(key) {
                Some(value) => {
                    out.write(b"VALUE ");
                    reply(out, value);
                }
                None => reply(out, b"NOT_FOUND"),
            },
            Command::Del(key) => reply(
                out,
                if store.remove(key) {
                    b"DELETED"
                } else {
                    b"NOT_FOUND"
                },
            ),
            Command::Count => reply(out, format!("COUNT {}", store.count()).as_bytes()),
            Command::Ping => reply(out, b"PONG"),
            Command::Quit => {
                reply(out, b"BYE");
                out.close();
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Refuse an overlong line and close: the rest of the stream cannot be framed reliably.
    fn too_long(&self, out: &mut Output) {
        log::debug!(
            "{}: line longer than {} bytes; closing",
            self.peer,
            self.max_line
        );
        reply(
            out,
            format!("ERR line too long (max {} bytes)", self.max_line).as_bytes(),
        );
        out.close();
    }
}

/// Write one reply line.
fn reply(out: &mut Output, line: &[u8]) {
    out.write(line);
    out.write(b"\n");
}

impl Consumer for KvConsumer {
    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        let session = &mut self.session;
        if self
            .lines
            .feed(data, |line| session.execute(line, out))
            .is_err()
        {
            session.too_long(out);
        }
    }

    fn eof_received(&mut self, out: &mut Output) {
        if let Some(line) = self.lines.take_partial() {
            let _ = self.session.execute(&line, out);
        }
        out.close();
    }

    fn connection_lost(&mut self, reason: LostReason) {
        log::debug!("{}: connection ended ({reason:?})", self.session.peer);
    }
}

plugin_api::export_plugin!(Kv);

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::testing::{Connection, Harness};

    fn open(harness: &Harness<Kv>) -> Connection<KvConsumer> {
        harness.connect().expect("connect")
    }

    #[test]
    fn set_get_del_count_ping() {
        let kv = Harness::<Kv>::new();
        let mut c = open(&kv);
        assert_eq!(c.take_text(), "", "no greeting");
        assert_eq!(c.round_trip_text("SET k hello world\n").unwrap(), "OK\n");
        assert_eq!(c.round_trip_text("GET k\n").unwrap(), "VALUE hello world\n");
        assert_eq!(c.round_trip_text("get missing\n").unwrap(), "NOT_FOUND\n");
        assert_eq!(c.round_trip_text("COUNT\n").unwrap(), "COUNT 1\n");
        assert_eq!(c.round_trip_text("DEL k\n").unwrap(), "DELETED\n");
        assert_eq!(c.round_trip_text("DEL k\n").unwrap(), "NOT_FOUND\n");
        assert_eq!(c.round_trip_text("ping\r\n").unwrap(), "PONG\n");
        assert_eq!(c.round_trip_text("\n\n").unwrap(), "", "blank lines");
        assert!(c.is_open());
    }

    #[test]
    fn a_line_split_over_many_reads() {
        let kv = Harness::<Kv>::new();
        let mut c = open(&kv);
        for piece in ["S", "ET ke", "y va", "lue\r", "\nGET", " key"] {
            c.send(piece.as_bytes()).unwrap();
        }
        assert_eq!(c.take_text(), "OK\n", "GET key is still unfinished");
        assert_eq!(c.round_trip_text("\n").unwrap(), "VALUE value\n");
        // One byte at a time.
        for b in b"GET key\n" {
            c.send(&[*b]).unwrap();
        }
        assert_eq!(c.take_text(), "VALUE value\n");
    }

    #[test]
    fn many_lines_in_one_read_are_answered_in_order() {
        let kv = Harness::<Kv>::new();
        let mut c = open(&kv);
        let pipeline = "SET a 1\nSET b 2\nGET a\nFLY\nGET b\nDEL a\nCOUNT\nPING\n";
        assert_eq!(
            c.round_trip_text(pipeline).unwrap(),
            "OK\nOK\nVALUE 1\n\
             ERR unknown command \"FLY\" (commands: SET, GET, DEL, COUNT, PING, QUIT)\n\
             VALUE 2\nDELETED\nCOUNT 1\nPONG\n"
        );
    }

    #[test]
    fn quit_closes_and_ignores_the_rest() {
        let kv = Harness::<Kv>::new();
        let mut c = open(&kv);
        assert_eq!(
            c.round_trip_text("SET a 1\nQUIT\nSET b 2\n").unwrap(),
            "OK\nBYE\n"
        );
        assert!(c.close_requested());
        assert_eq!(c.lost_reason(), Some(LostReason::Closed));
        let mut other = open(&kv);
        assert_eq!(other.round_trip_text("COUNT\n").unwrap(), "COUNT 1\n");
    }

    #[test]
    fn overlong_line_is_refused_and_closed_without_waiting_for_its_end() {
        let kv = Harness::<Kv>::with_options([("max-line", "16")]).unwrap();
        let mut c = open(&kv);
        // 16 bytes fit, with either line ending.
        assert_eq!(c.round_trip_text("SET k 0123456789\n").unwrap(), "OK\n");
        assert_eq!(c.round_trip_text("SET k 0123456789\r\n").unwrap(), "OK\n");
        // 17 bytes with no newline yet: refused at once, nothing more buffered.
        assert_eq!(
            c.round_trip_text("SET k 0123456789x").unwrap(),
            "ERR line too long (max 16 bytes)\n"
        );
        assert_eq!(c.lost_reason(), Some(LostReason::Closed));

        // Past the limit across reads, after good lines in the same read.
        let mut c = open(&kv);
        c.send(b"PING\nSET k 01234").unwrap();
        assert_eq!(c.take_text(), "PONG\n");
        assert!(c.is_open());
        assert_eq!(
            c.round_trip_text("5678901").unwrap(),
            "ERR line too long (max 16 bytes)\n"
        );
        assert!(!c.is_open());
    }

    #[test]
    fn a_flood_without_newlines_never_grows_the_buffer() {
        let kv = Harness::<Kv>::new();
        let mut c = open(&kv);
        let chunk = [b'x'; 100];
        let mut sent = 0;
        while c.is_open() {
            c.send(&chunk).unwrap();
            sent += chunk.len();
            let buffered = c.consumer().map_or(0, |k| k.lines.buffered());
            assert!(buffered <= 1025, "{buffered} bytes buffered");
            assert!(sent <= 1100, "still open after {sent} bytes");
        }
        assert_eq!(c.take_text(), "ERR line too long (max 1024 bytes)\n");
    }

    #[test]
    fn unfinished_last_line_runs_at_end_of_stream() {
        let kv = Harness::<Kv>::new();
        let mut c = open(&kv);
        c.send(b"SET a 1\nGET a").unwrap();
        assert_eq!(c.take_text(), "OK\n");
        c.eof().unwrap();
        assert_eq!(c.take_text(), "VALUE 1\n");
        assert_eq!(c.lost_reason(), Some(LostReason::Closed));
    }

    #[test]
    fn connections_of_one_worker_share_the_store() {
        let kv = Harness::<Kv>::new();
        let mut writer = open(&kv);
        let mut reader = open(&kv);
        assert_eq!(writer.round_trip_text("SET shared yes\n").unwrap(), "OK\n");
        writer.idle_timeout().unwrap();
        assert_eq!(
            reader.round_trip_text("GET shared\n").unwrap(),
            "VALUE yes\n"
        );
        // Another worker (another harness) has its own store.
        let other_worker = Harness::<Kv>::new();
        assert_eq!(
            open(&other_worker).round_trip_text("GET shared\n").unwrap(),
            "NOT_FOUND\n"
        );
    }

    #[test]
    fn store_is_bounded_by_max_keys() {
        let kv = Harness::<Kv>::with_options([("max-keys", "2")]).unwrap();
        let mut c = open(&kv);
        assert_eq!(
            c.round_trip_text("SET a 1\nSET b 2\nSET c 3\nSET a 4\nDEL b\nSET c 3\n")
                .unwrap(),
            "OK\nOK\nERR store full\nOK\nDELETED\nOK\n"
        );
    }

    #[test]
    fn usage_errors_keep_the_connection() {
        let kv = Harness::<Kv>::new();
        let mut c = open(&kv);
        assert_eq!(
            c.round_trip_text("SET lonely\nGET\nQUIT now\n").unwrap(),
            "ERR usage: SET key value\nERR usage: GET key\nERR usage: QUIT\n"
        );
        assert!(c.is_open());
    }

    #[test]
    fn options_are_validated() {
        let err = |pairs: &[(&str, &str)]| Harness::<Kv>::with_options(pairs.iter().copied()).err();
        assert_eq!(
            err(&[("max-lines", "5")]).as_deref(),
            Some(r#"plugin kv: unknown option "max-lines" (accepted: max-line, max-keys)"#)
        );
        assert_eq!(
            err(&[("max-line", "big")]).as_deref(),
            Some(
                r#"plugin kv: option max-line: invalid value "big": invalid digit found in string"#
            )
        );
        assert_eq!(
            err(&[("max-line", "0")]).as_deref(),
            Some("plugin kv: option max-line: must be between 1 and 1048576, got 0")
        );
        assert_eq!(
            err(&[("max-keys", "0")]).as_deref(),
            Some("plugin kv: option max-keys: must be at least 1")
        );
        let defaults = Harness::<Kv>::new();
        assert_eq!(defaults.protocol().max_line, 1024);
        assert_eq!(
            err(&[("max-line", "4096"), ("max-keys", "5")]),
            None,
            "good values accepted"
        );
    }
}
