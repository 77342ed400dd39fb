//! Key commands: `DEL`, `UNLINK`, `EXISTS`, `TYPE`, `KEYS`, `SCAN`, `RENAME`, `RENAMENX`,
//! `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `TTL`, `PTTL`, `PERSIST`, `RANDOMKEY`.

use super::{Ctx, NOT_INTEGER, SYNTAX};
use crate::glob;
use crate::resp::{parse_int, Args};

/// `DEL key [key ...]` and `UNLINK key [key ...]`: how many existed.
pub fn del(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let mut removed = 0;
    for key in args.iter_from(1) {
        if ctx.store.db.remove(key, ctx.now) {
            removed += 1;
        }
    }
    ctx.out.int(removed);
}

/// `EXISTS key [key ...]`: how many of them exist (a key named twice counts twice).
pub fn exists(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let mut found = 0;
    for key in args.iter_from(1) {
        if ctx.store.db.contains(key, ctx.now) {
            found += 1;
        }
    }
    ctx.out.int(found);
}

/// `TYPE key`.
pub fn type_(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let name = ctx
        .store
        .db
        .get(args.get(1), ctx.now)
        .map_or("none", |v| v.type_name());
    ctx.out.simple(name);
}

/// `KEYS pattern`.
pub fn keys(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let pattern = args.get(1);
    let all = pattern == b"*";
    let mut found: Vec<&[u8]> = Vec::new();
    let db = &ctx.store.db;
    db.for_each_live(ctx.now, |e| {
        if all || glob::matches(pattern, e.key()) {
            found.push(e.key());
        }
    });
    ctx.out.bulk_array(found.into_iter());
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub fn scan(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let cursor_arg = args.get(1);
    let cursor = std::str::from_utf8(cursor_arg)
        .ok()
        .filter(|s| !s.starts_with(|c: char| c.is_ascii_whitespace()))
        .and_then(|s| s.parse::<u64>().ok());
    let Some(cursor) = cursor else {
        ctx.out.error("ERR invalid cursor");
        return;
    };
    let (mut count, mut pattern, mut type_name) = (10usize, None, None);
    let mut i = 2;
    while i < args.len() {
        let opt = args.get(i);
        if i + 1 >= args.len() {
            ctx.out.error(SYNTAX);
            return;
        }
        if opt.eq_ignore_ascii_case(b"COUNT") {
            let Some(n) = ctx.int(args.get(i + 1)) else {
                return;
            };
            if n < 1 {
                ctx.out.error(SYNTAX);
                return;
            }
            count = n.min(1 << 20) as usize;
        } else if opt.eq_ignore_ascii_case(b"MATCH") {
            let p = args.get(i + 1);
            pattern = (p != b"*").then_some(p);
        } else if opt.eq_ignore_ascii_case(b"TYPE") {
            type_name = Some(args.get(i + 1));
        } else {
            ctx.out.error(SYNTAX);
            return;
        }
        i += 2;
    }
    let mut found: Vec<&[u8]> = Vec::new();
    let next = ctx.store.db.scan(cursor, count, ctx.now, |e| {
        if pattern.is_some_and(|p| !glob::matches(p, e.key())) {
            return;
        }
        if type_name.is_some_and(|t| !t.eq_ignore_ascii_case(e.value().type_name().as_bytes())) {
            return;
        }
        found.push(e.key());
    });
    ctx.out.array(2);
    ctx.out.bulk(itoa::Buffer::new().format(next).as_bytes());
    ctx.out.bulk_array(found.into_iter());
}

/// `RENAME key newkey` and `RENAMENX key newkey`.
pub fn rename(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let nx = args.get(0).eq_ignore_ascii_case(b"RENAMENX");
    let (from, to) = (args.get(1), args.get(2));
    if !ctx.store.db.contains(from, ctx.now) {
        ctx.out.error("ERR no such key");
        return;
    }
    if from == to {
        if nx {
            ctx.out.int(0);
        } else {
            ctx.out.ok();
        }
        return;
    }
    if nx && ctx.store.db.contains(to, ctx.now) {
        ctx.out.int(0);
        return;
    }
    ctx.store.db.rename(from, to, ctx.now);
    if nx {
        ctx.out.int(1);
    } else {
        ctx.out.ok();
    }
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` `key time [NX|XX|GT|LT]`.
pub fn expire(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let name = String::from_utf8_lossy(args.get(0)).to_ascii_lowercase();
    let seconds = !name.starts_with('p');
    let relative = !name.ends_with("at");
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in args.iter_from(3) {
        match opt.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                let mut text = b"ERR Unsupported option ".to_vec();
                text.extend_from_slice(opt);
                ctx.out.error_bytes(&text);
                return;
            }
        }
    }
    if nx && (xx || gt || lt) {
        ctx.out
            .error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if gt && lt {
        ctx.out
            .error("ERR GT and LT options at the same time are not compatible");
        return;
    }
    let Some(mut when) = parse_int(args.get(2)) else {
        ctx.out.error(NOT_INTEGER);
        return;
    };
    let invalid = format!("ERR invalid expire time in '{name}' command");
    if seconds {
        match when.checked_mul(1000) {
            Some(ms) => when = ms,
            None => {
                ctx.out.error(&invalid);
                return;
            }
        }
    }
    if relative {
        match when.checked_add(ctx.now) {
            Some(at) => when = at,
            None => {
                ctx.out.error(&invalid);
                return;
            }
        }
    }
    let key = args.get(1);
    let Some(current) = ctx.store.db.expires(key, ctx.now) else {
        ctx.out.int(0);
        return;
    };
    let refused = (nx && current != 0)
        || (xx && current == 0)
        || (gt && (current == 0 || when <= current))
        || (lt && current != 0 && when >= current);
    if refused {
        ctx.out.int(0);
        return;
    }
    // An expiry at or before now (or a negative one) deletes the key.
    let at = when.max(1);
    ctx.store.db.set_expiry(key, at, ctx.now);
    ctx.out.int(1);
}

/// `TTL key` (seconds) and `PTTL key` (milliseconds): -2 if missing, -1 if no expiry.
pub fn ttl(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let millis = args.get(0).eq_ignore_ascii_case(b"PTTL");
    match ctx.store.db.expires(args.get(1), ctx.now) {
        None => ctx.out.int(-2),
        Some(0) => ctx.out.int(-1),
        Some(at) => {
            let left = (at - ctx.now).max(0);
            ctx.out.int(if millis { left } else { (left + 500) / 1000 });
        }
    }
}

/// `PERSIST key`: 1 if a TTL was removed.
pub fn persist(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let key = args.get(1);
    match ctx.store.db.expires(key, ctx.now) {
        Some(at) if at != 0 => {
            ctx.store.db.set_expiry(key, 0, ctx.now);
            ctx.out.int(1);
        }
        _ => ctx.out.int(0),
    }
}

/// `RANDOMKEY`.
pub fn randomkey(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    match ctx.store.db.random_key(ctx.now) {
        Some(key) => {
            let key = key.to_vec();
            ctx.out.bulk(&key);
        }
        None => ctx.out.null(),
    }
}
