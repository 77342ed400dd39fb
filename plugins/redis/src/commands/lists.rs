//! List commands: `LPUSH`, `RPUSH`, `LPOP`, `RPOP`, `LRANGE`, `LLEN`, `LINDEX`.

use super::{clamp_range, Ctx};
use crate::resp::Args;
use crate::value::{List, Value};

/// `LPUSH key element [element ...]` and `RPUSH ...`: the new length.
pub fn push(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let front = args.get(0).eq_ignore_ascii_case(b"LPUSH");
    let now = ctx.now;
    if !matches!(
        ctx.store.db.get(args.get(1), now),
        None | Some(Value::List(_))
    ) {
        ctx.wrong_type();
        return;
    }
    let mut value = ctx
        .store
        .db
        .get_or_insert_with(args.get(1), now, || Value::List(List::default()));
    let Value::List(list) = &mut *value else {
        unreachable!("type checked above");
    };
    for item in args.iter_from(2) {
        if front {
            list.push_front(item);
        } else {
            list.push_back(item);
        }
    }
    let len = list.len();
    drop(value);
    ctx.out.int(len as i64);
}

/// `LPOP key [count]` and `RPOP key [count]`.
pub fn pop(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() > 3 {
        let name = String::from_utf8_lossy(args.get(0)).to_ascii_lowercase();
        ctx.out.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return;
    }
    let front = args.get(0).eq_ignore_ascii_case(b"LPOP");
    let Ok(count) = super::pop_count(ctx, args) else {
        return;
    };
    let now = ctx.now;
    let Some(mut value) = ctx.store.db.get_mut(args.get(1), now) else {
        if count.is_some() {
            ctx.out.null_array();
        } else {
            ctx.out.null();
        }
        return;
    };
    let Value::List(list) = &mut *value else {
        drop(value);
        ctx.wrong_type();
        return;
    };
    match count {
        None => {
            let item = if front {
                list.pop_front()
            } else {
                list.pop_back()
            };
            ctx.out.bulk(&item.expect("stored lists are not empty"));
        }
        Some(n) => {
            let n = n.min(list.len());
            ctx.out.array(n);
            for _ in 0..n {
                let item = if front {
                    list.pop_front()
                } else {
                    list.pop_back()
                };
                ctx.out.bulk(&item.expect("counted"));
            }
        }
    }
}

/// `LRANGE key start stop`.
pub fn lrange(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let Some(start) = ctx.int(args.get(2)) else {
        return;
    };
    let Some(stop) = ctx.int(args.get(3)) else {
        return;
    };
    match ctx.store.db.get(args.get(1), ctx.now) {
        None => ctx.out.array(0),
        Some(Value::List(list)) => match clamp_range(start, stop, list.len()) {
            Some((from, to)) => ctx.out.bulk_array(list.range(from, to)),
            None => ctx.out.array(0),
        },
        Some(_) => ctx.wrong_type(),
    }
}

/// `LLEN key`.
pub fn llen(ctx: &mut Ctx<'_>, args: Args<'_>) {
    match ctx.store.db.get(args.get(1), ctx.now) {
        None => ctx.out.int(0),
        Some(Value::List(list)) => {
            let len = list.len();
            ctx.out.int(len as i64);
        }
        Some(_) => ctx.wrong_type(),
    }
}

/// `LINDEX key index`.
pub fn lindex(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let Some(index) = ctx.int(args.get(2)) else {
        return;
    };
    match ctx.store.db.get(args.get(1), ctx.now) {
        None => ctx.out.null(),
        Some(Value::List(list)) => match clamp_range(index, index, list.len()) {
            Some((i, _)) if index >= -(list.len() as i64) => {
                let item = list.range(i, i).next().expect("in range");
                ctx.out.bulk(item);
            }
            _ => ctx.out.null(),
        },
        Some(_) => ctx.wrong_type(),
    }
}
