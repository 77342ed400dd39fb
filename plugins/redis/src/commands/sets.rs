//! Set commands: `SADD`, `SREM`, `SPOP`, `SMEMBERS`, `SISMEMBER`, `SCARD`.

use super::Ctx;
use crate::resp::Args;
use crate::value::{Set, Value};

/// `SADD key member [member ...]`: how many were added.
pub fn sadd(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let now = ctx.now;
    if !matches!(
        ctx.store.db.get(args.get(1), now),
        None | Some(Value::Set(_))
    ) {
        ctx.wrong_type();
        return;
    }
    let mut value =
        ctx.store
            .db
            .get_or_insert_with(args.get(1), now, || Value::Set(Set::default()));
    let Value::Set(set) = &mut *value else {
        unreachable!("type checked above");
    };
    let added = args.iter_from(2).filter(|m| set.insert(m)).count();
    drop(value);
    ctx.out.int(added as i64);
}

/// `SREM key member [member ...]`: how many were removed.
pub fn srem(ctx: &mut Ctx<'_>, args: Args<'_>) {
    super::remove_members(ctx, args, |value, member| match value {
        Value::Set(set) => Some(set.remove(member)),
        _ => None,
    });
}

/// `SPOP key [count]`: random members, removed.
pub fn spop(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() > 3 {
        ctx.out.error(super::SYNTAX);
        return;
    }
    let Ok(count) = super::pop_count(ctx, args) else {
        return;
    };
    let now = ctx.now;
    let Some(mut value) = ctx.store.db.get_mut(args.get(1), now) else {
        match count {
            Some(_) => ctx.out.array(0),
            None => ctx.out.null(),
        }
        return;
    };
    let Value::Set(set) = &mut *value else {
        drop(value);
        ctx.wrong_type();
        return;
    };
    let mut popped = Vec::new();
    for _ in 0..count.unwrap_or(1).min(set.len()) {
        let index = random_index(set.len());
        popped.extend(set.pop_at(index));
    }
    drop(value);
    match count {
        None => ctx.out.bulk(&popped[0]),
        Some(_) => ctx.out.bulk_array(popped.iter().map(|m| &m[..])),
    }
}

/// A random index below `len` (> 0), from a per-thread generator.
fn random_index(len: usize) -> usize {
    thread_local! {
        static RNG: std::cell::RefCell<crate::db::Rng> = std::cell::RefCell::new(crate::db::Rng::new());
    }
    RNG.with(|r| r.borrow_mut().below(len))
}

/// Run `f` on the set at `key` (`None` if missing), or reply `-WRONGTYPE`.
fn with_set(ctx: &mut Ctx<'_>, key: &[u8], f: impl FnOnce(Option<&Set>, &mut crate::reply::Reply)) {
    match ctx.store.db.get(key, ctx.now) {
        None => f(None, ctx.out),
        Some(Value::Set(s)) => f(Some(s), ctx.out),
        Some(_) => ctx.out.error(super::WRONGTYPE),
    }
}

/// `SMEMBERS key`.
pub fn smembers(ctx: &mut Ctx<'_>, args: Args<'_>) {
    with_set(ctx, args.get(1), |s, out| match s {
        None => out.array(0),
        Some(s) => out.bulk_array(s.iter()),
    });
}

/// `SISMEMBER key member`.
pub fn sismember(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let member = args.get(2);
    with_set(ctx, args.get(1), |s, out| {
        out.int(i64::from(s.is_some_and(|s| s.contains(member))))
    });
}

/// `SCARD key`.
pub fn scard(ctx: &mut Ctx<'_>, args: Args<'_>) {
    with_set(ctx, args.get(1), |s, out| {
        out.int(s.map_or(0, Set::len) as i64)
    });
}
