//! Server commands: `INFO`, `DBSIZE`, `FLUSHDB`, `FLUSHALL`, `COMMAND ...`, `CONFIG ...`,
//! `TIME`.

use std::fmt::Write as _;

use super::table::{self, Arg, ArgKind, Command};
use super::Ctx;
use crate::glob;
use crate::reply::Reply;
use crate::resp::Args;
use crate::store::{parse_memory, EvictionPolicy};

/// The Redis version whose commands and replies this server follows.
pub const REDIS_VERSION: &str = "7.0.0";

/// `DBSIZE`: keys stored, expired ones not yet removed included (as Redis).
pub fn dbsize(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    ctx.out.int(ctx.store.db.len() as i64);
}

/// `FLUSHDB [ASYNC|SYNC]` and `FLUSHALL [ASYNC|SYNC]` (one database: the same).
pub fn flush(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() > 2 {
        ctx.out.error(super::SYNTAX);
        return;
    }
    if args.len() == 2 {
        let mode = args.get(1);
        if !mode.eq_ignore_ascii_case(b"ASYNC") && !mode.eq_ignore_ascii_case(b"SYNC") {
            ctx.out.error(super::SYNTAX);
            return;
        }
    }
    ctx.store.db.clear();
    ctx.out.ok();
}

/// `TIME`: `[seconds, microseconds]`.
pub fn time(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk_int(now.as_secs() as i64);
    ctx.out.bulk_int(i64::from(now.subsec_micros()));
}

/// The sections `INFO` knows, in the order `INFO` (default) prints them.
const SECTIONS: [&str; 7] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

/// `INFO [section ...]`: the sections clients read, in Redis's `field:value` format.
pub fn info(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let wanted: Vec<String> = args
        .iter_from(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let mut text = String::new();
    for section in SECTIONS {
        if all || wanted.iter().any(|w| w == section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            info_section(ctx, section, &mut text);
        }
    }
    ctx.out.bulk(text.as_bytes());
}

fn info_section(ctx: &mut Ctx<'_>, section: &str, text: &mut String) {
    let store = &*ctx.store;
    let mut title = section.to_string();
    title[..1].make_ascii_uppercase();
    let _ = write!(text, "# {title}\r\n");
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(text, "{k}:{v}\r\n");
    };
    match section {
        "server" => {
            let uptime = store.started.elapsed().as_secs();
            line("redis_version", &REDIS_VERSION);
            line("redis_git_sha1", &"00000000");
            line("redis_git_dirty", &0);
            line("redis_mode", &"standalone");
            line("os", &std::env::consts::OS);
            line("arch_bits", &(usize::BITS));
            line("multiplexing_api", &"sockhost");
            line("process_id", &std::process::id());
            line("run_id", &store.run_id);
            line("tcp_port", &store.config.port);
            line(
                "server_time_usec",
                &std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros())
                    .unwrap_or(0),
            );
            line("uptime_in_seconds", &uptime);
            line("uptime_in_days", &(uptime / 86400));
            line("hz", &10);
            line(
                "server_implementation",
                &concat!("sockhost-redis ", env!("CARGO_PKG_VERSION")),
            );
        }
        "clients" => {
            line("connected_clients", &store.stats.connected_clients);
            line("blocked_clients", &0);
            line("pubsub_clients", &store.pubsub.subscriber_count());
        }
        "memory" => {
            let used = store.db.used_memory() as u64;
            line("used_memory", &used);
            line("used_memory_human", &human_bytes(used));
            line("maxmemory", &store.config.maxmemory);
            line("maxmemory_human", &human_bytes(store.config.maxmemory));
            line("maxmemory_policy", &store.config.policy.name());
            line("mem_allocator", &"libc");
        }
        "persistence" => {
            line("loading", &0);
            line("rdb_changes_since_last_save", &0);
            line("rdb_bgsave_in_progress", &0);
            line("aof_enabled", &0);
        }
        "stats" => {
            line(
                "total_connections_received",
                &store.stats.connections_received,
            );
            line("total_commands_processed", &store.stats.commands_processed);
            line("expired_keys", &store.db.stats.expired_keys);
            line("evicted_keys", &store.db.stats.evicted_keys);
            line("keyspace_hits", &store.db.stats.hits);
            line("keyspace_misses", &store.db.stats.misses);
            line("pubsub_channels", &store.pubsub.channel_count());
            line("pubsub_patterns", &store.pubsub.pattern_count());
            line("total_protocol_errors", &store.stats.protocol_errors);
        }
        "replication" => {
            line("role", &"master");
            line("connected_slaves", &0);
        }
        "keyspace" if !store.db.is_empty() => {
            line(
                "db0",
                &format!(
                    "keys={},expires={},avg_ttl=0",
                    store.db.len(),
                    store.db.volatile_len()
                ),
            );
        }
        _ => {}
    }
}

/// Bytes as Redis's `bytesToHuman` prints them (`1.50M`).
fn human_bytes(n: u64) -> String {
    let n = n as f64;
    const K: f64 = 1024.0;
    if n < K {
        format!("{n}B")
    } else if n < K * K {
        format!("{:.2}K", n / K)
    } else if n < K * K * K {
        format!("{:.2}M", n / (K * K))
    } else {
        format!("{:.2}G", n / (K * K * K))
    }
}

/// `COMMAND`: every command's description.
pub fn command(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    ctx.out.array(table::COMMANDS.len());
    for c in table::COMMANDS {
        command_info(ctx.out, c);
    }
}

/// `COMMAND COUNT`.
pub fn command_count(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    ctx.out.int(table::COMMANDS.len() as i64);
}

/// `COMMAND LIST`: every command's name.
pub fn command_list(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    ctx.out.array(table::COMMANDS.len());
    for c in table::COMMANDS {
        ctx.out.bulk(c.name.as_bytes());
    }
}

/// `COMMAND INFO [name ...]`: the named commands' descriptions (null for unknown names).
pub fn command_info_cmd(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() == 2 {
        return command(ctx, args);
    }
    ctx.out.array(args.len() - 2);
    for name in args.iter_from(2) {
        match super::lookup(name) {
            Some(c) => command_info(ctx.out, c),
            None => ctx.out.null_array(),
        }
    }
}

/// `COMMAND DOCS [name ...]`: `[name, {summary, since, group, complexity, arguments,
/// subcommands}]` for each command, as a flat array (RESP2's form of a map).
pub fn command_docs(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let chosen: Vec<&Command> = if args.len() == 2 {
        table::COMMANDS.iter().collect()
    } else {
        args.iter_from(2).filter_map(super::lookup).collect()
    };
    ctx.out.array(chosen.len() * 2);
    for c in chosen {
        ctx.out.bulk(c.name.as_bytes());
        command_doc(ctx.out, c);
    }
}

/// `COMMAND HELP`.
pub fn command_help(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    super::connection::help(
        ctx,
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
        ],
    );
}

/// One command's `COMMAND` entry: name, arity, flags, first key, last key, step, ACL
/// categories, tips, key specs, subcommands.
fn command_info(out: &mut Reply, c: &Command) {
    out.array(10);
    out.bulk(c.name.as_bytes());
    out.int(i64::from(c.arity));
    let flags = c.flag_names();
    out.array(flags.len());
    for f in flags {
        out.simple(f);
    }
    out.int(i64::from(c.keys.0));
    out.int(i64::from(c.keys.1));
    out.int(i64::from(c.keys.2));
    let categories = c.acl_categories();
    out.array(categories.len());
    for cat in categories {
        out.simple(cat);
    }
    out.array(0);
    out.array(0);
    out.array(c.subcommands.len());
    for sub in c.subcommands {
        command_info(out, sub);
    }
}

fn command_doc(out: &mut Reply, c: &Command) {
    let mut fields = 8;
    if !c.args.is_empty() {
        fields += 2;
    }
    if !c.subcommands.is_empty() {
        fields += 2;
    }
    out.array(fields);
    out.bulk(b"summary");
    out.bulk(c.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(c.since.as_bytes());
    out.bulk(b"group");
    out.bulk(c.group.as_bytes());
    out.bulk(b"complexity");
    out.bulk(c.complexity.as_bytes());
    if !c.args.is_empty() {
        out.bulk(b"arguments");
        arg_docs(out, c.args);
    }
    if !c.subcommands.is_empty() {
        out.bulk(b"subcommands");
        out.array(c.subcommands.len() * 2);
        for sub in c.subcommands {
            out.bulk(sub.name.as_bytes());
            command_doc(out, sub);
        }
    }
}

fn arg_docs(out: &mut Reply, args: &[Arg]) {
    out.array(args.len());
    for a in args {
        let mut flags = Vec::new();
        if a.optional {
            flags.push("optional");
        }
        if a.multiple {
            flags.push("multiple");
        }
        let nested = match a.kind {
            ArgKind::OneOf(n) | ArgKind::Block(n) => Some(n),
            _ => None,
        };
        let fields = 2
            + 2
            + 2 * usize::from(a.token.is_some())
            + 2 * usize::from(!flags.is_empty())
            + 2 * usize::from(nested.is_some());
        out.array(fields);
        out.bulk(b"name");
        out.bulk(a.name.as_bytes());
        out.bulk(b"type");
        out.bulk(a.kind.name().as_bytes());
        if let Some(token) = a.token {
            out.bulk(b"token");
            out.bulk(token.as_bytes());
        }
        if !flags.is_empty() {
            out.bulk(b"flags");
            out.array(flags.len());
            for f in flags {
                out.simple(f);
            }
        }
        if let Some(nested) = nested {
            out.bulk(b"arguments");
            arg_docs(out, nested);
        }
    }
}

/// The parameters `CONFIG GET` knows, with their current values.
fn config_params(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let c = &ctx.store.config;
    vec![
        ("maxmemory", c.maxmemory.to_string()),
        ("maxmemory-policy", c.policy.name().to_string()),
        ("maxmemory-samples", "5".to_string()),
        ("proto-max-bulk-len", c.limits.max_bulk.to_string()),
        ("client-query-buffer-limit", c.limits.max_query.to_string()),
        ("save", String::new()),
        ("appendonly", "no".to_string()),
        ("databases", "1".to_string()),
        ("hz", "10".to_string()),
        ("port", c.port.to_string()),
    ]
}

/// `CONFIG GET pattern [pattern ...]`: `[name, value, ...]` for each matching parameter.
pub fn config_get(ctx: &mut Ctx<'_>, args: Args<'_>) {
    let params = config_params(ctx);
    let matched: Vec<&(&str, String)> = params
        .iter()
        .filter(|(name, _)| {
            args.iter_from(2)
                .any(|p| glob::matches_nocase(p, name.as_bytes()))
        })
        .collect();
    ctx.out.array(matched.len() * 2);
    for (name, value) in matched {
        ctx.out.bulk(name.as_bytes());
        ctx.out.bulk(value.as_bytes());
    }
}

/// `CONFIG SET parameter value [parameter value ...]`: `maxmemory` and `maxmemory-policy`
/// can change at run time (each worker's own store).
pub fn config_set(ctx: &mut Ctx<'_>, args: Args<'_>) {
    if !args.len().is_multiple_of(2) {
        ctx.out
            .error("ERR wrong number of arguments for 'config|set' command");
        return;
    }
    let mut maxmemory = None;
    let mut policy = None;
    for i in (2..args.len()).step_by(2) {
        let name = String::from_utf8_lossy(args.get(i)).to_ascii_lowercase();
        let value = String::from_utf8_lossy(args.get(i + 1)).into_owned();
        match name.as_str() {
            "maxmemory" => match parse_memory(&value) {
                Some(n) => maxmemory = Some(n),
                None => {
                    ctx.out.error(
                        "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value",
                    );
                    return;
                }
            },
            "maxmemory-policy" => match EvictionPolicy::parse(&value) {
                Some(p) => policy = Some(p),
                None => {
                    ctx.out.error(
                        "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: noeviction, allkeys-lru",
                    );
                    return;
                }
            },
            _ => {
                ctx.out.error(&format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                ));
                return;
            }
        }
    }
    if let Some(m) = maxmemory {
        ctx.store.config.maxmemory = m;
    }
    if let Some(p) = policy {
        ctx.store.config.policy = p;
    }
    ctx.out.ok();
}

/// `CONFIG RESETSTAT`: zero the counters.
pub fn config_resetstat(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    ctx.store.db.stats = Default::default();
    ctx.store.stats.commands_processed = 0;
    ctx.store.stats.connections_received = 0;
    ctx.store.stats.protocol_errors = 0;
    ctx.out.ok();
}

/// `CONFIG HELP`.
pub fn config_help(ctx: &mut Ctx<'_>, _args: Args<'_>) {
    super::connection::help(
        ctx,
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value> (maxmemory, maxmemory-policy).",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
        ],
    );
}
