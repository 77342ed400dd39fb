//! Connection commands: `PING`, `ECHO`, `QUIT`, `SELECT`, `HELLO`, `RESET`, `CLIENT ...`.

use super::Ctx;
use crate::pubsub::Kind;
use crate::resp::Args;

/// `PING [message]`; in subscriber mode `["pong", message]`, as Redis over RESP2.
pub fn ping(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() > 2 {
        ctx.out
            .error("ERR wrong number of arguments for 'ping' command");
        return;
    }
    if ctx.store.pubsub.subscriptions(ctx.session.id) > 0 {
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out
            .bulk(if args.len() == 2 { args.get(1) } else { b"" });
    } else if args.len() == 2 {
        ctx.out.bulk(args.get(1));
    } else {
        ctx.out.raw(b"+PONG\r\n");
    }
}

/// `ECHO message`.
pub fn echo(ctx: &mut Ctx<'_>, args: Args<'_>) {
    ctx.out.bulk(args.get(1));
}

/// `QUIT`: `+OK`, then the connection closes.
pub fn quit(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    ctx.out.ok();
    ctx.session.closing = true;
}

/// `SELECT index`: there is one database, 0.
pub fn select(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let Some(index) = ctx.int(args.get(1)) else {
        return;
    };
    if i32::try_from(index).is_err() {
        ctx.out.error(super::NOT_INTEGER);
    } else if index != 0 {
        ctx.out.error("ERR DB index is out of range");
    } else {
        ctx.out.ok();
    }
}

/// `RESET`: leave subscriber mode, forget the name; `+RESET`.
pub fn reset(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    let mut discard = crate::reply::Reply::default();
    let id = ctx.session.id;
    ctx.store
        .pubsub
        .unsubscribe(id, Kind::Channel, &[], &mut discard);
    ctx.store
        .pubsub
        .unsubscribe(id, Kind::Pattern, &[], &mut discard);
    ctx.session.name = None;
    ctx.session.multi = None;
    ctx.store.watches.unwatch(id);
    ctx.out.simple("RESET");
}

/// `HELLO [protover ...]`: this server speaks RESP2 only. `HELLO 3` gets the error Redis
/// gives for a protocol version it does not offer, so clients can fall back; `HELLO` and
/// `HELLO 2` get the server's description (AUTH and SETNAME are refused/honoured).
pub fn hello(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let mut next = 1;
    if args.len() >= 2 {
        let Some(version) = crate::resp::parse_int(args.get(1)) else {
            ctx.out
                .error("ERR Protocol version is not an integer or out of range");
            return;
        };
        if version != 2 {
            ctx.out.error("NOPROTO unsupported protocol version");
            return;
        }
        next = 2;
    }
    let mut name = None;
    while next < args.len() {
        let opt = args.get(next);
        let left = args.len() - next - 1;
        if opt.eq_ignore_ascii_case(b"AUTH") && left >= 2 {
            ctx.out
                .error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            return;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && left >= 1 {
            if !valid_name(args.get(next + 1)) {
                ctx.out.error(BAD_NAME);
                return;
            }
            name = Some(args.get(next + 1).to_vec());
            next += 2;
        } else {
            let mut text = b"ERR Syntax error in HELLO option '".to_vec();
            text.extend_from_slice(opt);
            text.push(b'\'');
            ctx.out.error_bytes(&text);
            return;
        }
    }
    if name.is_some() {
        ctx.session.name = name;
    }
    let out = &mut *ctx.out;
    out.array(14);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(super::server::REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(2);
    out.bulk(b"id");
    out.int(ctx.session.client_id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
}

const BAD_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

/// Redis accepts client names of printable ASCII without spaces.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// `CLIENT SETNAME name`.
pub fn client_setname(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let name = args.get(2);
    if !valid_name(name) {
        ctx.out.error(BAD_NAME);
        return;
    }
    ctx.session.name = (!name.is_empty()).then(|| name.to_vec());
    ctx.out.ok();
}

/// `CLIENT GETNAME`.
pub fn client_getname(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    match &ctx.session.name {
        Some(name) => ctx.out.bulk(name),
        None => ctx.out.null(),
    }
}

/// `CLIENT ID`.
pub fn client_id(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    ctx.out.int(ctx.session.client_id as i64);
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`: accepted (clients send it on connect).
pub fn client_setinfo(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let attr = args.get(2);
    if !attr.eq_ignore_ascii_case(b"LIB-NAME") && !attr.eq_ignore_ascii_case(b"LIB-VER") {
        let mut text = b"ERR Unrecognized option '".to_vec();
        text.extend_from_slice(attr);
        text.push(b'\'');
        ctx.out.error_bytes(&text);
        return;
    }
    ctx.out.ok();
}

/// `CLIENT INFO`: this connection, in `CLIENT LIST`'s format (the fields we know).
pub fn client_info(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    let name = ctx
        .session
        .name
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let subs = ctx.store.pubsub.subscriptions(ctx.session.id);
    let line = format!(
        "id={} name={} db=0 sub={} psub=0 multi=-1 resp=2\n",
        ctx.session.client_id, name, subs
    );
    ctx.out.bulk(line.as_bytes());
}

/// `CLIENT HELP`.
pub fn client_help(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    help(
        ctx,
        "CLIENT",
        &[
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
        ],
    );
}

/// A `HELP` subcommand's reply, framed as Redis frames it.
pub fn help(ctx: &mut Ctx<'_>, command: &str, lines: &[&str]) {
    ctx.out.array(lines.len() + 3);
    ctx.out.simple(&format!(
        "{command} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ));
    for line in lines {
        ctx.out.simple(line);
    }
    ctx.out.simple("HELP");
    ctx.out.simple("    Print this help.");
}
