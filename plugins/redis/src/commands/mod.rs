//! Commands: lookup, the checks Redis makes before running one (existence, arity,
//! subscriber mode, `maxmemory`), and the handlers, one file per data type.
//!
//! Every command is described once, in [`table`]: its name, arity, flags, key positions and
//! documentation. Dispatch, `COMMAND`, `COMMAND COUNT` and `COMMAND DOCS` all read that
//! table, so what `redis-cli` shows as hints is what the server accepts.

mod connection;
mod hashes;
mod keys;
mod lists;
mod pubsub;
mod server;
mod sets;
mod strings;
pub mod table;
pub mod transaction;
mod zsets;

use std::sync::OnceLock;

use foldhash::fast::FixedState;
use hashbrown::HashMap;

use crate::pubsub::ClientId;
use crate::reply::Reply;
use crate::resp::{parse_int, Args};
use crate::store::Store;
use table::{Command, DENYOOM, NO_QUEUE, PUBSUB_OK, WRITE};
use transaction::Multi;

/// The state of one connection that commands read and change.
#[derive(Debug)]
pub struct Session {
    /// The connection's identity for pub/sub delivery and `WATCH`: the host's connection id.
    pub id: ClientId,
    /// `CLIENT ID`: a small number, counted from 1 per store, as Redis numbers clients.
    pub client_id: u64,
    /// `CLIENT SETNAME`.
    pub name: Option<Vec<u8>>,
    /// Set by `QUIT`: reply, then close.
    pub closing: bool,
    /// Inside `MULTI`: the queued commands.
    pub multi: Option<Multi>,
}

impl Session {
    /// A new connection's session.
    pub fn new(id: ClientId, client_id: u64) -> Session {
        Session {
            id,
            client_id,
            name: None,
            closing: false,
            multi: None,
        }
    }

    /// A command was refused: inside `MULTI` that dooms the transaction.
    fn refused(&mut self) {
        if let Some(multi) = &mut self.multi {
            multi.abort();
        }
    }
}

/// What a handler works with.
pub struct Ctx<'a> {
    /// The worker's store.
    pub store: &'a mut Store,
    /// This connection.
    pub session: &'a mut Session,
    /// Where replies go.
    pub out: &'a mut Reply,
    /// Unix milliseconds, read once per read from the socket.
    pub now: i64,
}

/// `-WRONGTYPE`, Redis's shared error.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
/// `-ERR syntax error`.
pub const SYNTAX: &str = "ERR syntax error";
/// Integer parse failure.
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
/// Float parse failure.
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
/// `-OOM`, Redis's shared error.
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

impl Ctx<'_> {
    /// An integer argument, or the Redis error (then `None`).
    pub fn int(&mut self, arg: &[u8]) -> Option<i64> {
        let n = parse_int(arg);
        if n.is_none() {
            self.out.error(NOT_INTEGER);
        }
        n
    }

    /// A float argument (`inf`, `-inf`, exponents; never NaN), or the Redis error.
    pub fn float(&mut self, arg: &[u8]) -> Option<f64> {
        let f = parse_float(arg);
        if f.is_none() {
            self.out.error(NOT_FLOAT);
        }
        f
    }

    /// Reply `-WRONGTYPE`.
    pub fn wrong_type(&mut self) {
        self.out.error(WRONGTYPE);
    }
}

/// Parse a float as Redis's `getDoubleFromObject` does (`strtod`, no leading space, no
/// trailing bytes, no NaN).
pub fn parse_float(arg: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(arg).ok()?;
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let f: f64 = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        lower if lower.contains("inf") || lower.contains("nan") => return None,
        _ => s.parse().ok()?,
    };
    (!f.is_nan()).then_some(f)
}

/// The command table by lower-case name (fixed hasher: the keys are ours, not a client's).
fn index() -> &'static HashMap<&'static [u8], &'static Command, FixedState> {
    static INDEX: OnceLock<HashMap<&'static [u8], &'static Command, FixedState>> = OnceLock::new();
    INDEX.get_or_init(|| {
        table::COMMANDS
            .iter()
            .map(|c| (c.name.as_bytes(), c))
            .collect()
    })
}

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    let mut lower = [0u8; 24];
    if name.len() > lower.len() {
        return None;
    }
    for (l, &b) in lower.iter_mut().zip(name) {
        *l = b.to_ascii_lowercase();
    }
    index().get(&lower[..name.len()]).copied()
}

/// Run one command, with Redis's checks first, and write its reply.
pub fn execute(ctx: &mut Ctx<'_>, args: Args<'_>) {
    ctx.store.stats.commands_processed += 1;
    let Some(mut command) = lookup(args.get(0)) else {
        unknown_command(ctx.out, args);
        ctx.session.refused();
        return;
    };
    if !command.subcommands.is_empty() && args.len() >= 2 {
        let sub = args.get(1);
        match command
            .subcommands
            .iter()
            .find(|c| c.subname().as_bytes().eq_ignore_ascii_case(sub))
        {
            Some(found) => command = found,
            None => {
                let mut text = b"ERR unknown subcommand '".to_vec();
                text.extend_from_slice(&sub[..sub.len().min(128)]);
                text.extend_from_slice(
                    format!("'. Try {} HELP.", command.name.to_ascii_uppercase()).as_bytes(),
                );
                ctx.out.error_bytes(&text);
                ctx.session.refused();
                return;
            }
        }
    }
    let argc = args.len() as i32;
    if (command.arity > 0 && command.arity != argc) || argc < -command.arity {
        ctx.out.error(&format!(
            "ERR wrong number of arguments for '{}' command",
            command.name
        ));
        ctx.session.refused();
        return;
    }
    if command.flags & DENYOOM != 0 && !ctx.store.make_room() {
        ctx.out.error(OOM);
        ctx.session.refused();
        return;
    }
    if command.flags & PUBSUB_OK == 0 && ctx.store.pubsub.subscriptions(ctx.session.id) > 0 {
        ctx.out.error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            command.name
        ));
        return;
    }
    if command.flags & NO_QUEUE == 0 {
        if let Some(multi) = &mut ctx.session.multi {
            if multi.queue(args, ctx.store.config.limits.max_query) {
                ctx.out.simple("QUEUED");
            } else {
                log::info!("closing a client whose transaction passed max-query");
                ctx.out
                    .error("ERR transaction larger than max-query; closing the connection");
                ctx.session.closing = true;
            }
            return;
        }
    }
    (command.run)(ctx, args);
    if command.flags & WRITE != 0 && !ctx.store.watches.is_empty() {
        touch_keys(ctx, command, args);
    }
}

/// A write command ran: mark the connections watching its keys.
fn touch_keys(ctx: &mut Ctx<'_>, command: &Command, args: Args<'_>) {
    let (first, last, step) = command.keys;
    if first == 0 {
        // FLUSHDB / FLUSHALL: everything changed.
        ctx.store.watches.touch_all();
        return;
    }
    let last = if last < 0 {
        args.len() as i32 + last
    } else {
        last
    };
    let mut i = first;
    while i <= last && (i as usize) < args.len() {
        ctx.store.watches.touch(args.get(i as usize));
        i += step.max(1);
    }
}

/// `-ERR unknown command 'name', with args beginning with: 'a' 'b' `, as Redis words it.
fn unknown_command(out: &mut Reply, args: Args<'_>) {
    let name = args.get(0);
    let mut text = b"ERR unknown command '".to_vec();
    text.extend_from_slice(&name[..name.len().min(128)]);
    text.extend_from_slice(b"', with args beginning with: ");
    let mut listed = 0;
    for arg in args.iter_from(1) {
        if listed >= 128 {
            break;
        }
        let take = arg.len().min(128 - listed);
        text.push(b'\'');
        text.extend_from_slice(&arg[..take]);
        text.extend_from_slice(b"' ");
        listed += take + 3;
    }
    out.error_bytes(&text);
}

/// An error reply has been written (the command is over).
#[derive(Debug)]
pub struct Replied;

/// The optional `count` of the pop commands (`LPOP key [count]`, `SPOP`, `ZPOPMIN`):
/// `Ok(None)` when absent.
pub fn pop_count(ctx: &mut Ctx<'_>, args: Args<'_>) -> Result<Option<usize>, Replied> {
    if args.len() < 3 {
        return Ok(None);
    }
    let n = ctx.int(args.get(2)).ok_or(Replied)?;
    if n < 0 {
        ctx.out.error("ERR value is out of range, must be positive");
        return Err(Replied);
    }
    Ok(Some(n as usize))
}

/// `SREM`, `ZREM`, `HDEL` `key member [member ...]`: `remove` takes one member out of the
/// value (`None`: the key holds another type); replies how many were removed.
pub fn remove_members(
    ctx: &mut Ctx<'_>,
    args: Args<'_>,
    remove: fn(&mut crate::value::Value, &[u8]) -> Option<bool>,
) {
    let now = ctx.now;
    let Some(mut value) = ctx.store.db.get_mut(args.get(1), now) else {
        ctx.out.int(0);
        return;
    };
    let mut removed = 0;
    for member in args.iter_from(2) {
        match remove(&mut value, member) {
            Some(gone) => removed += i64::from(gone),
            None => {
                drop(value);
                ctx.wrong_type();
                return;
            }
        }
    }
    drop(value);
    ctx.out.int(removed);
}

/// Clamp Redis-style `start`/`end` indexes (negative from the end) to `0..len`; `None` for
/// an empty range.
pub fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= len {
        return None;
    }
    if end >= len {
        end = len - 1;
    }
    Some((start as usize, end as usize))
}
