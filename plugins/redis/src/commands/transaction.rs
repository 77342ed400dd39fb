//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH` — what redis-py's default
//! pipeline (`MULTI` ... `EXEC`) and its optimistic-locking helpers (`WATCH`) send.
//!
//! Commands after `MULTI` are checked (existence, arity, `maxmemory`) and queued with
//! `+QUEUED`; `EXEC` runs them back to back — nothing else runs in between, the worker being
//! one thread — and replies with an array of their replies. A command refused while queueing
//! makes `EXEC` fail with `-EXECABORT`, as in Redis.
//!
//! `WATCH key` records the key; any later write command naming it (or `FLUSHDB` /
//! `FLUSHALL`), from any connection, makes this connection's `EXEC` return a null array.
//! (Unlike Redis, a watched key that merely expires does not abort the transaction.) The
//! queue is bounded by `max-query`: a transaction holding more is discarded and the
//! connection closed, as an unfinished command of that size would be. So are a connection's
//! watched keys (`WATCH` past it is refused).

use std::ops::Range;

use foldhash::fast::RandomState;
use hashbrown::{HashMap, HashSet};

use super::Ctx;
use crate::pubsub::ClientId;
use crate::resp::Args;

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct Multi {
    /// The arguments of every queued command, back to back.
    bytes: Vec<u8>,
    /// Each queued command's argument ranges in `bytes`.
    commands: Vec<Vec<Range<usize>>>,
    /// A command was refused while queueing: `EXEC` aborts.
    aborted: bool,
}

impl Multi {
    /// Queue a command; false if the queue would pass `limit` bytes.
    pub fn queue(&mut self, args: Args<'_>, limit: usize) -> bool {
        let size: usize = args.iter_from(0).map(|a| a.len() + 16).sum();
        if self.bytes.len() + self.commands.len() * 16 + size > limit {
            return false;
        }
        let mut ranges = Vec::with_capacity(args.len());
        for arg in args.iter_from(0) {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(arg);
            ranges.push(start..self.bytes.len());
        }
        self.commands.push(ranges);
        true
    }

    /// Mark the transaction as failed (a command was refused while queueing).
    pub fn abort(&mut self) {
        self.aborted = true;
    }
}

/// Which connections watch which keys, and which of them saw a watched key change.
#[derive(Debug, Default)]
pub struct Watches {
    by_key: HashMap<Vec<u8>, HashSet<ClientId, RandomState>, RandomState>,
    /// Each client's watched keys, and their bytes (bounded by `max-query`).
    by_client: HashMap<ClientId, (Vec<Vec<u8>>, usize), RandomState>,
    dirty: HashSet<ClientId, RandomState>,
}

impl Watches {
    /// Whether nobody watches anything (the fast path of every write).
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Watch `key`; false if the client's watched keys would pass `limit` bytes.
    fn watch(&mut self, id: ClientId, key: &[u8], limit: usize) -> bool {
        let (keys, bytes) = self.by_client.entry(id).or_default();
        if *bytes + key.len() + 32 > limit {
            return false;
        }
        if self.by_key.entry(key.to_vec()).or_default().insert(id) {
            keys.push(key.to_vec());
            *bytes += key.len() + 32;
        }
        true
    }

    /// A write named `key`: every connection watching it is now dirty.
    pub fn touch(&mut self, key: &[u8]) {
        if let Some(ids) = self.by_key.get(key) {
            self.dirty.extend(ids.iter().copied());
        }
    }

    /// Everything changed (`FLUSHDB`): every watching connection is dirty.
    pub fn touch_all(&mut self) {
        self.dirty.extend(self.by_client.keys().copied());
    }

    /// Stop watching (`UNWATCH`, `EXEC`, `DISCARD`, disconnect); whether `id` was dirty.
    pub fn unwatch(&mut self, id: ClientId) -> bool {
        for key in self.by_client.remove(&id).unwrap_or_default().0 {
            if let Some(ids) = self.by_key.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
        self.dirty.remove(&id)
    }
}

/// `MULTI`.
pub fn multi(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    if ctx.session.multi.is_some() {
        ctx.out.error("ERR MULTI calls can not be nested");
        return;
    }
    ctx.session.multi = Some(Multi::default());
    ctx.out.ok();
}

/// `DISCARD`.
pub fn discard(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    if ctx.session.multi.take().is_none() {
        ctx.out.error("ERR DISCARD without MULTI");
        return;
    }
    ctx.store.watches.unwatch(ctx.session.id);
    ctx.out.ok();
}

/// `EXEC`: run the queue; `-EXECABORT` if queueing failed, a null array if a watched key
/// changed.
pub fn exec(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    let Some(multi) = ctx.session.multi.take() else {
        ctx.out.error("ERR EXEC without MULTI");
        return;
    };
    let dirty = ctx.store.watches.unwatch(ctx.session.id);
    if multi.aborted {
        ctx.out
            .error("EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    if dirty {
        ctx.out.null_array();
        return;
    }
    ctx.out.array(multi.commands.len());
    for ranges in &multi.commands {
        super::execute(ctx, Args::new(&multi.bytes, ranges));
    }
}

/// `WATCH key [key ...]`.
pub fn watch(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if ctx.session.multi.is_some() {
        ctx.out.error("ERR WATCH inside MULTI is not allowed");
        return;
    }
    let limit = ctx.store.config.limits.max_query;
    for key in args.iter_from(1) {
        if !ctx.store.watches.watch(ctx.session.id, key, limit) {
            ctx.out.error(&format!(
                "ERR the keys this connection watches passed max-query ({limit} bytes)"
            ));
            return;
        }
    }
    ctx.out.ok();
}

/// `UNWATCH`.
pub fn unwatch(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    ctx.store.watches.unwatch(ctx.session.id);
    ctx.out.ok();
}
