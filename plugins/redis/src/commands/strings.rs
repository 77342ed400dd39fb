//! String commands: `GET`, `SET` (with `NX|XX`, `EX|PX|EXAT|PXAT|KEEPTTL`, `GET`), `SETEX`,
//! `PSETEX`, `MGET`, `MSET`, `SETNX`, `GETSET`, `GETDEL`, `APPEND`, `STRLEN`, `INCR`,
//! `INCRBY`, `DECR`, `DECRBY`, `INCRBYFLOAT`.

use super::{parse_float, Ctx, NOT_INTEGER, SYNTAX};
use crate::db::Ttl;
use crate::reply::format_double;
use crate::resp::{parse_int, Args};
use crate::value::Value;

/// What `GET key` finds: `Ok(None)` for a missing key, `Err(())` for another type.
fn get_string<'a>(ctx: &'a mut Ctx<'_>, key: &[u8]) -> Result<Option<&'a [u8]>, ()> {
    match ctx.store.db.get(key, ctx.now) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// Reply with a key's string value (null if missing); false after `-WRONGTYPE`.
fn reply_get(ctx: &mut Ctx<'_>, key: &[u8]) -> bool {
    match ctx.store.db.get(key, ctx.now) {
        None => ctx.out.null(),
        Some(Value::Str(s)) => ctx.out.bulk(s),
        Some(_) => {
            ctx.wrong_type();
            return false;
        }
    }
    true
}

/// `GET key`.
pub fn get(ctx: &mut Ctx<'_>, args: Args<'_>) {
    reply_get(ctx, args.get(1));
}

/// Parse an expire argument into an absolute Unix time in ms, as Redis's
/// `getExpireMillisecondsOrReply`; `None` after the error reply.
fn expire_at(
    ctx: &mut Ctx<'_>,
    arg: &[u8],
    seconds: bool,
    relative: bool,
    name: &str,
) -> Option<i64> {
    let Some(mut n) = parse_int(arg) else {
        ctx.out.error(NOT_INTEGER);
        return None;
    };
    let invalid = |ctx: &mut Ctx<'_>| {
        ctx.out
            .error(&format!("ERR invalid expire time in '{name}' command"));
    };
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        invalid(ctx);
        return None;
    }
    if seconds {
        n *= 1000;
    }
    if relative {
        n = match n.checked_add(ctx.now) {
            Some(n) => n,
            None => {
                invalid(ctx);
                return None;
            }
        };
    }
    Some(n)
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL]`.
pub fn set(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut expire: Option<(usize, bool, bool)> = None; // (arg index, seconds, relative)
    let mut i = 3;
    while i < args.len() {
        let opt = args.get(i);
        let has_next = i + 1 < args.len();
        let is = |s: &[u8]| opt.eq_ignore_ascii_case(s);
        if is(b"NX") && !xx {
            nx = true;
        } else if is(b"XX") && !nx {
            xx = true;
        } else if is(b"GET") {
            get = true;
        } else if is(b"KEEPTTL") && expire.is_none() {
            keepttl = true;
        } else if !keepttl && expire.is_none() && has_next && (is(b"EX") || is(b"PX")) {
            expire = Some((i + 1, is(b"EX"), true));
            i += 1;
        } else if !keepttl && expire.is_none() && has_next && (is(b"EXAT") || is(b"PXAT")) {
            expire = Some((i + 1, is(b"EXAT"), false));
            i += 1;
        } else {
            ctx.out.error(SYNTAX);
            return;
        }
        i += 1;
    }
    let ttl = match expire {
        Some((at, seconds, relative)) => {
            match expire_at(ctx, args.get(at), seconds, relative, "set") {
                Some(when) => Ttl::At(when),
                None => return,
            }
        }
        None if keepttl => Ttl::Keep,
        None => Ttl::Clear,
    };
    let key = args.get(1);
    if get && !reply_get(ctx, key) {
        return;
    }
    if nx || xx {
        let found = ctx.store.db.contains(key, ctx.now);
        if (nx && found) || (xx && !found) {
            if !get {
                ctx.out.null();
            }
            return;
        }
    }
    store_string(ctx, key, args.get(2).to_vec(), ttl);
    if !get {
        ctx.out.ok();
    }
}

/// Store a string, honouring an expiry already in the past (the key is then gone).
fn store_string(ctx: &mut Ctx<'_>, key: &[u8], value: Vec<u8>, ttl: Ttl) {
    if let Ttl::At(at) = ttl {
        if at <= ctx.now {
            ctx.store.db.remove(key, ctx.now);
            return;
        }
    }
    ctx.store.db.set(key, Value::Str(value), ttl, ctx.now);
}

/// `SETEX key seconds value` and `PSETEX key milliseconds value`.
pub fn setex(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let seconds = args.get(0).eq_ignore_ascii_case(b"SETEX");
    let name = if seconds { "setex" } else { "psetex" };
    let Some(at) = expire_at(ctx, args.get(2), seconds, true, name) else {
        return;
    };
    store_string(ctx, args.get(1), args.get(3).to_vec(), Ttl::At(at));
    ctx.out.ok();
}

/// `SETNX key value`: 1 if set.
pub fn setnx(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let key = args.get(1);
    if ctx.store.db.contains(key, ctx.now) {
        ctx.out.int(0);
    } else {
        store_string(ctx, key, args.get(2).to_vec(), Ttl::Clear);
        ctx.out.int(1);
    }
}

/// `GETSET key value`.
pub fn getset(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if reply_get(ctx, args.get(1)) {
        store_string(ctx, args.get(1), args.get(2).to_vec(), Ttl::Clear);
    }
}

/// `GETDEL key`.
pub fn getdel(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let key = args.get(1);
    if reply_get(ctx, key) {
        ctx.store.db.remove(key, ctx.now);
    }
}

/// `MGET key [key ...]`: null for missing keys and keys of another type.
pub fn mget(ctx: &mut Ctx<'_>, args: Args<'_>) {
    ctx.out.array(args.len() - 1);
    for key in args.iter_from(1) {
        match ctx.store.db.get(key, ctx.now) {
            Some(Value::Str(s)) => ctx.out.bulk(s),
            _ => ctx.out.null(),
        }
    }
}

/// `MSET key value [key value ...]`.
pub fn mset(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len().is_multiple_of(2) {
        ctx.out
            .error("ERR wrong number of arguments for 'mset' command");
        return;
    }
    for i in (1..args.len()).step_by(2) {
        store_string(ctx, args.get(i), args.get(i + 1).to_vec(), Ttl::Clear);
    }
    ctx.out.ok();
}

/// `APPEND key value`: the new length.
pub fn append(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let (key, tail) = (args.get(1), args.get(2));
    let max = ctx.store.config.limits.max_bulk;
    let now = ctx.now;
    let mut value = ctx
        .store
        .db
        .get_or_insert_with(key, now, || Value::Str(Vec::new()));
    let Value::Str(s) = &mut *value else {
        drop(value);
        ctx.wrong_type();
        return;
    };
    if s.len() + tail.len() > max {
        drop(value);
        ctx.out
            .error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        return;
    }
    s.extend_from_slice(tail);
    let len = s.len();
    drop(value);
    ctx.out.int(len as i64);
}

/// `STRLEN key`.
pub fn strlen(ctx: &mut Ctx<'_>, args: Args<'_>) {
    match get_string(ctx, args.get(1)) {
        Ok(s) => {
            let len = s.map_or(0, <[u8]>::len);
            ctx.out.int(len as i64);
        }
        Err(()) => ctx.wrong_type(),
    }
}

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`.
pub fn incr(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let name = args.get(0);
    let by = if name.eq_ignore_ascii_case(b"INCR") {
        1
    } else if name.eq_ignore_ascii_case(b"DECR") {
        -1
    } else {
        let Some(n) = ctx.int(args.get(2)) else {
            return;
        };
        if name.eq_ignore_ascii_case(b"DECRBY") {
            if n == i64::MIN {
                ctx.out.error("ERR decrement would overflow");
                return;
            }
            -n
        } else {
            n
        }
    };
    let new = update_number(ctx, args.get(1), |current| {
        let current = parse_int(current).ok_or(NOT_INTEGER)?;
        let new = current
            .checked_add(by)
            .ok_or("ERR increment or decrement would overflow")?;
        Ok((itoa::Buffer::new().format(new).as_bytes().to_vec(), new))
    });
    if let Some(new) = new {
        ctx.out.int(new);
    }
}

/// Replace the number stored as a string at `key` (a missing key counts as "0") with what
/// `f` makes of it: its new text and the value to reply. `None` after an error reply
/// (`-WRONGTYPE`, or `f`'s error).
fn update_number<T>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&[u8]) -> Result<(Vec<u8>, T), &'static str>,
) -> Option<T> {
    let now = ctx.now;
    let mut value = ctx
        .store
        .db
        .get_or_insert_with(key, now, || Value::Str(b"0".to_vec()));
    let Value::Str(s) = &mut *value else {
        drop(value);
        ctx.wrong_type();
        return None;
    };
    match f(s) {
        Ok((text, reply)) => {
            *s = text;
            Some(reply)
        }
        Err(error) => {
            drop(value);
            ctx.out.error(error);
            None
        }
    }
}

/// `INCRBYFLOAT key increment`: the new value, as a bulk string.
pub fn incrbyfloat(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let Some(by) = ctx.float(args.get(2)) else {
        return;
    };
    let new = update_number(ctx, args.get(1), |current| {
        let current = parse_float(current).ok_or(super::NOT_FLOAT)?;
        let new = current + by;
        if !new.is_finite() {
            return Err("ERR increment would produce NaN or Infinity");
        }
        let text = format_double(new).into_bytes();
        Ok((text.clone(), text))
    });
    if let Some(text) = new {
        ctx.out.bulk(&text);
    }
}
