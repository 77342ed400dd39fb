//! Sorted-set commands: `ZADD` (with `NX|XX`, `GT|LT`, `CH`, `INCR`), `ZINCRBY`, `ZRANGE`
//! (by rank or `BYSCORE`, `REV`, `LIMIT`, `WITHSCORES`), `ZPOPMIN`, `ZSCORE`, `ZCARD`,
//! `ZREM`.

use super::{clamp_range, parse_float, Ctx, SYNTAX};
use crate::resp::Args;
use crate::value::{Value, ZSet};

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`.
pub fn zadd(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut at = 2;
    while at < args.len() {
        match args.get(at).to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            b"ch" => ch = true,
            b"incr" => incr = true,
            _ => break,
        }
        at += 1;
    }
    let pairs = args.len() - at;
    if pairs == 0 || !pairs.is_multiple_of(2) {
        ctx.out.error(SYNTAX);
        return;
    }
    if nx && xx {
        ctx.out
            .error("ERR XX and NX options at the same time are not compatible");
        return;
    }
    if (nx && (gt || lt)) || (gt && lt) {
        ctx.out
            .error("ERR GT, LT, and/or NX options at the same time are not compatible");
        return;
    }
    if incr && pairs > 2 {
        ctx.out
            .error("ERR INCR option supports a single increment-element pair");
        return;
    }
    let mut scores = Vec::with_capacity(pairs / 2);
    for i in (at..args.len()).step_by(2) {
        let Some(score) = ctx.float(args.get(i)) else {
            return;
        };
        scores.push(score);
    }
    zadd_generic(
        ctx,
        args,
        at,
        &scores,
        Flags {
            nx,
            xx,
            gt,
            lt,
            ch,
            incr,
        },
    );
}

#[derive(Clone, Copy)]
struct Flags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

fn zadd_generic(ctx: &mut Ctx<'_>, args: Args<'_>, at: usize, scores: &[f64], f: Flags) {
    let key = args.get(1);
    let now = ctx.now;
    match ctx.store.db.get(key, now) {
        Some(Value::ZSet(_)) => {}
        Some(_) => return ctx.wrong_type(),
        None if f.xx => {
            return if f.incr {
                ctx.out.null()
            } else {
                ctx.out.int(0)
            };
        }
        None => {}
    }
    let mut value = ctx
        .store
        .db
        .get_or_insert_with(key, now, || Value::ZSet(ZSet::default()));
    let Value::ZSet(zset) = &mut *value else {
        unreachable!("type checked above");
    };
    let (mut added, mut updated) = (0, 0);
    let mut last: Option<f64> = None;
    let mut nan = false;
    for (i, &score) in scores.iter().enumerate() {
        let member = args.get(at + 2 * i + 1);
        match zset.score(member) {
            Some(old) => {
                if f.nx {
                    continue;
                }
                let new = if f.incr { old + score } else { score };
                if new.is_nan() {
                    nan = true;
                    break;
                }
                if (f.gt && new <= old) || (f.lt && new >= old) {
                    continue;
                }
                if new != old {
                    zset.set(member, new);
                    updated += 1;
                }
                last = Some(new);
            }
            None => {
                if f.xx {
                    continue;
                }
                zset.set(member, score);
                added += 1;
                last = Some(score);
            }
        }
    }
    drop(value);
    if nan {
        ctx.out.error("ERR resulting score is not a number (NaN)");
    } else if f.incr {
        match last {
            Some(score) => ctx.out.bulk_double(score),
            None => ctx.out.null(),
        }
    } else {
        ctx.out.int(if f.ch { added + updated } else { added });
    }
}

/// `ZINCRBY key increment member`.
pub fn zincrby(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let Some(by) = ctx.float(args.get(2)) else {
        return;
    };
    // As `ZADD key INCR increment member`: the pair starts at argument 2.
    let flags = Flags {
        nx: false,
        xx: false,
        gt: false,
        lt: false,
        ch: false,
        incr: true,
    };
    zadd_generic(ctx, args, 2, &[by], flags);
}

/// A `BYSCORE` bound: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
fn score_bound(arg: &[u8]) -> Option<(f64, bool)> {
    match arg.strip_prefix(b"(") {
        Some(rest) => parse_float(rest).map(|f| (f, true)),
        None => parse_float(arg).map(|f| (f, false)),
    }
}

/// `ZREVRANGE key start stop [WITHSCORES]`: `ZRANGE ... REV`.
pub fn zrevrange(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let withscores = match args.len() {
        4 => false,
        5 if args.get(4).eq_ignore_ascii_case(b"WITHSCORES") => true,
        _ => return ctx.out.error(SYNTAX),
    };
    zrange_generic(ctx, args, false, true, None, withscores);
}

/// `ZRANGE key start stop [BYSCORE] [REV] [LIMIT offset count] [WITHSCORES]`.
pub fn zrange(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let (mut byscore, mut rev, mut withscores) = (false, false, false);
    let mut limit: Option<(i64, i64)> = None;
    let mut i = 4;
    while i < args.len() {
        let opt = args.get(i).to_ascii_lowercase();
        match opt.as_slice() {
            b"withscores" => withscores = true,
            b"rev" if !rev => rev = true,
            b"byscore" if !byscore => byscore = true,
            b"limit" if i + 2 < args.len() => {
                let Some(offset) = ctx.int(args.get(i + 1)) else {
                    return;
                };
                let Some(count) = ctx.int(args.get(i + 2)) else {
                    return;
                };
                limit = Some((offset, count));
                i += 2;
            }
            _ => {
                ctx.out.error(SYNTAX);
                return;
            }
        }
        i += 1;
    }
    if limit.is_some() && !byscore {
        ctx.out.error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
        return;
    }
    zrange_generic(ctx, args, byscore, rev, limit, withscores);
}

/// Reply with `args[1]`'s members from `args[2]` to `args[3]` (ranks, or scores with
/// `byscore`), reversed with `rev`.
fn zrange_generic(
    ctx: &mut Ctx<'_>,
    args: Args<'_>,
    byscore: bool,
    rev: bool,
    limit: Option<(i64, i64)>,
    withscores: bool,
) {
    let items: Vec<(Vec<u8>, f64)> = if byscore {
        let (lo, hi) = if rev { (3, 2) } else { (2, 3) };
        let (Some(min), Some(max)) = (score_bound(args.get(lo)), score_bound(args.get(hi))) else {
            ctx.out.error("ERR min or max is not a float");
            return;
        };
        let zset = match ctx.store.db.get(args.get(1), ctx.now) {
            None => return ctx.out.array(0),
            Some(Value::ZSet(z)) => z,
            Some(_) => return ctx.wrong_type(),
        };
        let (offset, count) = limit.unwrap_or((0, -1));
        if offset < 0 {
            return ctx.out.array(0);
        }
        let count = if count < 0 {
            usize::MAX
        } else {
            count as usize
        };
        let range = zset.range_by_score(min, max);
        let owned = |(m, s): (&[u8], f64)| (m.to_vec(), s);
        if rev {
            range
                .rev()
                .skip(offset as usize)
                .take(count)
                .map(owned)
                .collect()
        } else {
            range.skip(offset as usize).take(count).map(owned).collect()
        }
    } else {
        let Some(start) = ctx.int(args.get(2)) else {
            return;
        };
        let Some(stop) = ctx.int(args.get(3)) else {
            return;
        };
        let zset = match ctx.store.db.get(args.get(1), ctx.now) {
            None => return ctx.out.array(0),
            Some(Value::ZSet(z)) => z,
            Some(_) => return ctx.wrong_type(),
        };
        let Some((from, to)) = clamp_range(start, stop, zset.len()) else {
            return ctx.out.array(0);
        };
        let owned = |(m, s): (&[u8], f64)| (m.to_vec(), s);
        if rev {
            zset.range_desc(from, to - from + 1).map(owned).collect()
        } else {
            zset.range_asc(from, to - from + 1).map(owned).collect()
        }
    };
    ctx.out.array(items.len() * if withscores { 2 } else { 1 });
    for (member, score) in &items {
        ctx.out.bulk(member);
        if withscores {
            ctx.out.bulk_double(*score);
        }
    }
}

/// `ZPOPMIN key [count]`: member, score, ...
pub fn zpopmin(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() > 3 {
        ctx.out.error(SYNTAX);
        return;
    }
    let Ok(count) = super::pop_count(ctx, args) else {
        return;
    };
    let count = count.unwrap_or(1);
    let now = ctx.now;
    let Some(mut value) = ctx.store.db.get_mut(args.get(1), now) else {
        ctx.out.array(0);
        return;
    };
    let Value::ZSet(zset) = &mut *value else {
        drop(value);
        ctx.wrong_type();
        return;
    };
    let mut popped = Vec::new();
    for _ in 0..count.min(zset.len()) {
        popped.extend(zset.pop_min());
    }
    drop(value);
    ctx.out.array(popped.len() * 2);
    for (member, score) in popped {
        ctx.out.bulk(&member);
        ctx.out.bulk_double(score);
    }
}

/// `ZSCORE key member`.
pub fn zscore(ctx: &mut Ctx<'_>, args: Args<'_>) {
    match ctx.store.db.get(args.get(1), ctx.now) {
        None => ctx.out.null(),
        Some(Value::ZSet(z)) => match z.score(args.get(2)) {
            Some(s) => ctx.out.bulk_double(s),
            None => ctx.out.null(),
        },
        Some(_) => ctx.wrong_type(),
    }
}

/// `ZCARD key`.
pub fn zcard(ctx: &mut Ctx<'_>, args: Args<'_>) {
    match ctx.store.db.get(args.get(1), ctx.now) {
        None => ctx.out.int(0),
        Some(Value::ZSet(z)) => {
            let n = z.len();
            ctx.out.int(n as i64);
        }
        Some(_) => ctx.wrong_type(),
    }
}

/// `ZREM key member [member ...]`.
pub fn zrem(ctx: &mut Ctx<'_>, args: Args<'_>) {
    super::remove_members(ctx, args, |value, member| match value {
        Value::ZSet(zset) => Some(zset.remove(member)),
        _ => None,
    });
}
