//! Hash commands: `HSET`, `HMSET`, `HGET`, `HMGET`, `HGETALL`, `HDEL`, `HLEN`, `HEXISTS`,
//! `HKEYS`, `HVALS`, `HINCRBY`.

use super::Ctx;
use crate::resp::{parse_int, Args};
use crate::value::{Hash, Value};

/// The hash at `key` to change, made empty if missing; `None` after `-WRONGTYPE`.
fn hash_mut<'a>(ctx: &'a mut Ctx<'_>, key: &[u8]) -> Option<crate::db::ValueMut<'a>> {
    if !matches!(ctx.store.db.get(key, ctx.now), None | Some(Value::Hash(_))) {
        ctx.wrong_type();
        return None;
    }
    let now = ctx.now;
    Some(
        ctx.store
            .db
            .get_or_insert_with(key, now, || Value::Hash(Hash::default())),
    )
}

/// `HSET key field value [field value ...]` (fields added) and `HMSET` (`+OK`).
pub fn hset(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if !args.len().is_multiple_of(2) {
        let name = String::from_utf8_lossy(args.get(0)).to_ascii_lowercase();
        ctx.out.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return;
    }
    let Some(mut value) = hash_mut(ctx, args.get(1)) else {
        return;
    };
    let Value::Hash(hash) = &mut *value else {
        unreachable!("hash_mut checked the type");
    };
    let mut added = 0;
    for i in (2..args.len()).step_by(2) {
        if hash.set(args.get(i), args.get(i + 1)) {
            added += 1;
        }
    }
    drop(value);
    if args.get(0).eq_ignore_ascii_case(b"HMSET") {
        ctx.out.ok();
    } else {
        ctx.out.int(added);
    }
}

/// Run `f` on the hash at `key` (`None` if missing), or reply `-WRONGTYPE`.
fn with_hash(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&Hash>, &mut crate::reply::Reply),
) {
    match ctx.store.db.get(key, ctx.now) {
        None => f(None, ctx.out),
        Some(Value::Hash(h)) => f(Some(h), ctx.out),
        Some(_) => ctx.out.error(super::WRONGTYPE),
    }
}

/// `HGET key field`.
pub fn hget(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let field = args.get(2);
    with_hash(ctx, args.get(1), |h, out| {
        match h.and_then(|h| h.get(field)) {
            Some(v) => out.bulk(v),
            None => out.null(),
        }
    });
}

/// `HMGET key field [field ...]`.
pub fn hmget(ctx: &mut Ctx<'_>, args: Args<'_>) {
    with_hash(ctx, args.get(1), |h, out| {
        out.array(args.len() - 2);
        for field in args.iter_from(2) {
            match h.and_then(|h| h.get(field)) {
                Some(v) => out.bulk(v),
                None => out.null(),
            }
        }
    });
}

/// `HGETALL key`: field, value, field, value, ...
pub fn hgetall(ctx: &mut Ctx<'_>, args: Args<'_>) {
    with_hash(ctx, args.get(1), |h, out| match h {
        None => out.array(0),
        Some(h) => {
            out.array(h.len() * 2);
            for (f, v) in h.iter() {
                out.bulk(f);
                out.bulk(v);
            }
        }
    });
}

/// `HKEYS key` and `HVALS key`.
pub fn hkeys(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let keys = args.get(0).eq_ignore_ascii_case(b"HKEYS");
    with_hash(ctx, args.get(1), |h, out| match h {
        None => out.array(0),
        Some(h) => out.bulk_array(h.iter().map(|(f, v)| if keys { f } else { v })),
    });
}

/// `HLEN key`.
pub fn hlen(ctx: &mut Ctx<'_>, args: Args<'_>) {
    with_hash(ctx, args.get(1), |h, out| {
        out.int(h.map_or(0, Hash::len) as i64)
    });
}

/// `HEXISTS key field`.
pub fn hexists(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let field = args.get(2);
    with_hash(ctx, args.get(1), |h, out| {
        out.int(i64::from(h.is_some_and(|h| h.get(field).is_some())))
    });
}

/// `HDEL key field [field ...]`: how many were removed.
pub fn hdel(ctx: &mut Ctx<'_>, args: Args<'_>) {
    super::remove_members(ctx, args, |value, field| match value {
        Value::Hash(hash) => Some(hash.remove(field)),
        _ => None,
    });
}

/// `HINCRBY key field increment`.
pub fn hincrby(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let Some(by) = ctx.int(args.get(3)) else {
        return;
    };
    let field = args.get(2);
    let Some(mut value) = hash_mut(ctx, args.get(1)) else {
        return;
    };
    let Value::Hash(hash) = &mut *value else {
        unreachable!("hash_mut checked the type");
    };
    let current = match hash.get(field) {
        None => Some(0),
        Some(v) => parse_int(v),
    };
    let result = match current {
        None => Err("ERR hash value is not an integer"),
        Some(c) => c
            .checked_add(by)
            .ok_or("ERR increment or decrement would overflow"),
    };
    if let Ok(n) = result {
        hash.set(field, itoa::Buffer::new().format(n).as_bytes());
    }
    drop(value);
    match result {
        Ok(n) => ctx.out.int(n),
        Err(e) => ctx.out.error(e),
    }
}
