//! Pub/sub commands: `SUBSCRIBE`, `UNSUBSCRIBE`, `PSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH`.

use plugin_api::services;
use plugin_api::ConnId;

use super::Ctx;
use crate::pubsub::{ClientId, Kind};
use crate::resp::Args;

/// `SUBSCRIBE channel [channel ...]` and `PSUBSCRIBE pattern [pattern ...]`.
pub fn subscribe(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let kind = kind(args);
    let limit = ctx.store.config.limits.max_query;
    ctx.store
        .pubsub
        .subscribe(ctx.session.id, kind, args.iter_from(1), limit, ctx.out);
}

/// `UNSUBSCRIBE [channel ...]` and `PUNSUBSCRIBE [pattern ...]`.
pub fn unsubscribe(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let kind = kind(args);
    let names: Vec<&[u8]> = args.iter_from(1).collect();
    ctx.store
        .pubsub
        .unsubscribe(ctx.session.id, kind, &names, ctx.out);
}

fn kind(args: Args<'_>) -> Kind {
    if args.get(0)[0].eq_ignore_ascii_case(&b'p') {
        Kind::Pattern
    } else {
        Kind::Channel
    }
}

/// `PUBLISH channel message`: how many subscribers it was queued for.
pub fn publish(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let receivers = ctx.store.pubsub.publish(args.get(1), args.get(2), deliver);
    ctx.out.int(receivers as i64);
}

/// Move one frame to subscriber `to`'s connection: the host's post service queues it there.
/// A subscriber over the host's `--max-pending` is closed by the host (`Overflow`); one that
/// is closing is `Gone`; neither counts as a receiver.
fn deliver(to: ClientId, frame: &[u8]) -> bool {
    services::post(ConnId::from_raw(to), frame).is_queued()
}
