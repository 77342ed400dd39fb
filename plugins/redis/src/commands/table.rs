//! The command table: every command this server runs, described once — name, arity (as
//! Redis: positive is exact, negative is a minimum, both counting the name), flags, key
//! positions, handler, and the documentation `COMMAND DOCS` serves (`redis-cli` builds its
//! help and argument hints from it).

use super::{
    connection, hashes, keys, lists, pubsub, server, sets, strings, transaction, zsets, Ctx,
};
use crate::resp::Args;

/// A command's handler.
pub type Handler = fn(&mut Ctx<'_>, Args<'_>);

/// Flag: may modify the keyspace.
pub const WRITE: u32 = 1;
/// Flag: only reads.
pub const READONLY: u32 = 1 << 1;
/// Flag: may grow memory: refused (or evicts first) past `maxmemory`.
pub const DENYOOM: u32 = 1 << 2;
/// Flag: O(1) or O(log n).
pub const FAST: u32 = 1 << 3;
/// Flag: a pub/sub command.
pub const PUBSUB: u32 = 1 << 4;
/// Flag: allowed while the connection is subscribed (RESP2's subscriber mode). Not one of
/// Redis's flags (Redis lists these commands in `processCommand`); not shown by `COMMAND`.
pub const PUBSUB_OK: u32 = 1 << 5;
/// Flag: an administrative command.
pub const ADMIN: u32 = 1 << 6;
/// Flag: runs at once inside `MULTI` instead of being queued (`EXEC`, `DISCARD`, ...). Not
/// shown by `COMMAND`.
pub const NO_QUEUE: u32 = 1 << 7;

const FLAG_NAMES: [(u32, &str); 6] = [
    (WRITE, "write"),
    (READONLY, "readonly"),
    (DENYOOM, "denyoom"),
    (ADMIN, "admin"),
    (PUBSUB, "pubsub"),
    (FAST, "fast"),
];

/// One command (or subcommand: `name` is then `parent|sub`).
pub struct Command {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity.
    pub arity: i32,
    /// Flag bits.
    pub flags: u32,
    /// First key, last key (-1: the last argument), step.
    pub keys: (i32, i32, i32),
    /// What runs it.
    pub run: Handler,
    /// Docs: the command group (`string`, `generic`, ...).
    pub group: &'static str,
    /// Docs: the Redis version that introduced it.
    pub since: &'static str,
    /// Docs: one line.
    pub summary: &'static str,
    /// Docs: time complexity.
    pub complexity: &'static str,
    /// Docs: the arguments.
    pub args: &'static [Arg],
    /// Subcommands (`CLIENT SETNAME`, ...).
    pub subcommands: &'static [Command],
}

impl Command {
    /// The subcommand's own name (`setname` of `client|setname`).
    pub fn subname(&self) -> &'static str {
        self.name.split_once('|').map_or(self.name, |(_, sub)| sub)
    }

    /// The flag names `COMMAND` shows.
    pub fn flag_names(&self) -> Vec<&'static str> {
        FLAG_NAMES
            .iter()
            .filter(|(bit, _)| self.flags & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// The ACL categories `COMMAND` shows.
    pub fn acl_categories(&self) -> Vec<&'static str> {
        let mut cats = Vec::new();
        if self.flags & WRITE != 0 {
            cats.push("@write");
        }
        if self.flags & READONLY != 0 {
            cats.push("@read");
        }
        cats.push(match self.group {
            "string" => "@string",
            "generic" => "@keyspace",
            "list" => "@list",
            "hash" => "@hash",
            "set" => "@set",
            "sorted-set" => "@sortedset",
            "pubsub" => "@pubsub",
            "connection" => "@connection",
            "transactions" => "@transaction",
            _ => "@admin",
        });
        cats.push(if self.flags & FAST != 0 {
            "@fast"
        } else {
            "@slow"
        });
        cats
    }
}

/// An argument's type, as `COMMAND DOCS` names it.
#[derive(Clone, Copy)]
pub enum ArgKind {
    /// A key name.
    Key,
    /// A string.
    String,
    /// An integer.
    Integer,
    /// A float.
    Double,
    /// A glob pattern.
    Pattern,
    /// A Unix time.
    UnixTime,
    /// A keyword with no value.
    PureToken,
    /// One of these.
    OneOf(&'static [Arg]),
    /// These together.
    Block(&'static [Arg]),
}

impl ArgKind {
    /// The name `COMMAND DOCS` uses.
    pub fn name(self) -> &'static str {
        match self {
            ArgKind::Key => "key",
            ArgKind::String => "string",
            ArgKind::Integer => "integer",
            ArgKind::Double => "double",
            ArgKind::Pattern => "pattern",
            ArgKind::UnixTime => "unix-time",
            ArgKind::PureToken => "pure-token",
            ArgKind::OneOf(_) => "oneof",
            ArgKind::Block(_) => "block",
        }
    }
}

/// One documented argument.
#[derive(Clone, Copy)]
pub struct Arg {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: ArgKind,
    /// The keyword before it (`EX`), if any.
    pub token: Option<&'static str>,
    /// May be left out.
    pub optional: bool,
    /// May repeat.
    pub multiple: bool,
}

const fn arg(name: &'static str, kind: ArgKind) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        optional: false,
        multiple: false,
    }
}

const fn key() -> Arg {
    arg("key", ArgKind::Key)
}

const fn keys_() -> Arg {
    key().multiple()
}

const fn s(name: &'static str) -> Arg {
    arg(name, ArgKind::String)
}

const fn int(name: &'static str) -> Arg {
    arg(name, ArgKind::Integer)
}

/// A keyword alone (`NX`): name and token are the keyword in lower and upper case.
const fn word(name: &'static str, token: &'static str) -> Arg {
    arg(name, ArgKind::PureToken).token(token)
}

impl Arg {
    const fn opt(mut self) -> Arg {
        self.optional = true;
        self
    }

    const fn multiple(mut self) -> Arg {
        self.multiple = true;
        self
    }

    const fn token(mut self, token: &'static str) -> Arg {
        self.token = Some(token);
        self
    }
}

/// A table row; documentation follows with [`doc`].
const fn c(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: (i32, i32, i32),
    run: Handler,
) -> Command {
    Command {
        name,
        arity,
        flags,
        keys,
        run,
        group: "",
        since: "1.0.0",
        summary: "",
        complexity: "O(1)",
        args: &[],
        subcommands: &[],
    }
}

impl Command {
    const fn doc(
        mut self,
        group: &'static str,
        since: &'static str,
        summary: &'static str,
    ) -> Command {
        self.group = group;
        self.since = since;
        self.summary = summary;
        self
    }

    const fn cost(mut self, complexity: &'static str) -> Command {
        self.complexity = complexity;
        self
    }

    const fn args(mut self, args: &'static [Arg]) -> Command {
        self.args = args;
        self
    }

    const fn subs(mut self, subcommands: &'static [Command]) -> Command {
        self.subcommands = subcommands;
        self
    }
}

const NONE: (i32, i32, i32) = (0, 0, 0);
const K1: (i32, i32, i32) = (1, 1, 1);
const KALL: (i32, i32, i32) = (1, -1, 1);

const EXPIRE_CONDITION: Arg = arg(
    "condition",
    ArgKind::OneOf(&[
        word("nx", "NX"),
        word("xx", "XX"),
        word("gt", "GT"),
        word("lt", "LT"),
    ]),
)
.opt();

const CLIENT_SUBCOMMANDS: &[Command] = &[
    c("client|getname", 2, FAST, NONE, connection::client_getname).doc(
        "connection",
        "2.6.9",
        "Returns the name of the connection.",
    ),
    c("client|help", 2, FAST, NONE, connection::client_help).doc(
        "connection",
        "5.0.0",
        "Returns helpful text about the different subcommands.",
    ),
    c("client|id", 2, FAST, NONE, connection::client_id).doc(
        "connection",
        "5.0.0",
        "Returns the unique client ID of the connection.",
    ),
    c("client|info", 2, FAST, NONE, connection::client_info).doc(
        "connection",
        "6.2.0",
        "Returns information about the connection.",
    ),
    c("client|setinfo", 4, FAST, NONE, connection::client_setinfo)
        .doc(
            "connection",
            "7.2.0",
            "Sets information specific to the client or connection.",
        )
        .args(&[arg(
            "attr",
            ArgKind::OneOf(&[s("libname").token("LIB-NAME"), s("libver").token("LIB-VER")]),
        )]),
    c("client|setname", 3, FAST, NONE, connection::client_setname)
        .doc("connection", "2.6.9", "Sets the connection name.")
        .args(&[s("connection-name")]),
];

const COMMAND_SUBCOMMANDS: &[Command] = &[
    c("command|count", 2, 0, NONE, server::command_count).doc(
        "server",
        "2.8.13",
        "Returns a count of commands.",
    ),
    c("command|docs", -2, 0, NONE, server::command_docs)
        .doc(
            "server",
            "7.0.0",
            "Returns documentary information about one, multiple or all commands.",
        )
        .cost("O(N) where N is the number of commands to look up")
        .args(&[s("command-name").opt().multiple()]),
    c("command|help", 2, 0, NONE, server::command_help).doc(
        "server",
        "5.0.0",
        "Returns helpful text about the different subcommands.",
    ),
    c("command|info", -2, 0, NONE, server::command_info_cmd)
        .doc(
            "server",
            "2.8.13",
            "Returns information about one, multiple or all commands.",
        )
        .cost("O(N) where N is the number of commands to look up")
        .args(&[s("command-name").opt().multiple()]),
    c("command|list", -2, 0, NONE, server::command_list)
        .doc("server", "7.0.0", "Returns a list of command names.")
        .cost("O(N) where N is the total number of Redis commands"),
];

const CONFIG_SUBCOMMANDS: &[Command] = &[
    c("config|get", -3, ADMIN, NONE, server::config_get)
        .doc(
            "server",
            "2.0.0",
            "Returns the effective values of configuration parameters.",
        )
        .cost("O(N) when N is the number of configuration parameters provided")
        .args(&[s("parameter").multiple()]),
    c("config|help", 2, 0, NONE, server::config_help).doc(
        "server",
        "5.0.0",
        "Returns helpful text about the different subcommands.",
    ),
    c("config|resetstat", 2, ADMIN, NONE, server::config_resetstat).doc(
        "server",
        "2.0.0",
        "Resets the server's statistics.",
    ),
    c("config|set", -4, ADMIN, NONE, server::config_set)
        .doc(
            "server",
            "2.0.0",
            "Sets configuration parameters in-flight.",
        )
        .cost("O(N) when N is the number of configuration parameters provided")
        .args(&[arg("data", ArgKind::Block(&[s("parameter"), s("value")])).multiple()]),
];

/// Every command.
pub static COMMANDS: &[Command] = &[
    // connection
    c("ping", -1, FAST | PUBSUB_OK, NONE, connection::ping)
        .doc("connection", "1.0.0", "Returns the server's liveliness response.")
        .args(&[s("message").opt()]),
    c("echo", 2, FAST, NONE, connection::echo)
        .doc("connection", "1.0.0", "Returns the given string.")
        .args(&[s("message")]),
    c("quit", -1, FAST | PUBSUB_OK | NO_QUEUE, NONE, connection::quit)
        .doc("connection", "1.0.0", "Closes the connection."),
    c("select", 2, FAST, NONE, connection::select)
        .doc("connection", "1.0.0", "Changes the selected database (this server has only database 0).")
        .args(&[int("index")]),
    c("hello", -1, FAST, NONE, connection::hello)
        .doc("connection", "6.0.0", "Handshakes with the server (RESP2 only: HELLO 3 is refused with NOPROTO).")
        .args(&[arg(
            "arguments",
            ArgKind::Block(&[
                int("protover"),
                arg("auth", ArgKind::Block(&[s("username"), s("password")])).token("AUTH").opt(),
                s("clientname").token("SETNAME").opt(),
            ]),
        )
        .opt()]),
    c("reset", 1, FAST | PUBSUB_OK | NO_QUEUE, NONE, connection::reset)
        .doc("connection", "6.2.0", "Resets the connection."),
    c("client", -2, 0, NONE, connection::client_help)
        .doc("connection", "2.4.0", "A container for client connection commands.")
        .subs(CLIENT_SUBCOMMANDS),
    // server
    c("info", -1, 0, NONE, server::info)
        .doc("server", "1.0.0", "Returns information and statistics about the server.")
        .args(&[s("section").opt().multiple()]),
    c("dbsize", 1, READONLY | FAST, NONE, server::dbsize)
        .doc("server", "1.0.0", "Returns the number of keys in the database."),
    c("flushdb", -1, WRITE, NONE, server::flush)
        .doc("server", "1.0.0", "Removes all keys from the current database.")
        .cost("O(N) where N is the number of keys in the selected database")
        .args(&[arg("flush-type", ArgKind::OneOf(&[word("async", "ASYNC"), word("sync", "SYNC")])).opt()]),
    c("flushall", -1, WRITE, NONE, server::flush)
        .doc("server", "1.0.0", "Removes all keys from all databases.")
        .cost("O(N) where N is the total number of keys in all databases")
        .args(&[arg("flush-type", ArgKind::OneOf(&[word("async", "ASYNC"), word("sync", "SYNC")])).opt()]),
    c("time", 1, FAST, NONE, server::time)
        .doc("server", "2.6.0", "Returns the server time."),
    c("command", -1, 0, NONE, server::command)
        .doc("server", "2.8.13", "Returns detailed information about all commands.")
        .cost("O(N) where N is the total number of Redis commands")
        .subs(COMMAND_SUBCOMMANDS),
    c("config", -2, 0, NONE, server::config_help)
        .doc("server", "2.0.0", "A container for server configuration commands.")
        .subs(CONFIG_SUBCOMMANDS),
    // strings
    c("get", 2, READONLY | FAST, K1, strings::get)
        .doc("string", "1.0.0", "Returns the string value of a key.")
        .args(&[key()]),
    c("set", -3, WRITE | DENYOOM, K1, strings::set)
        .doc("string", "1.0.0", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.")
        .args(&[
            key(),
            s("value"),
            arg("condition", ArgKind::OneOf(&[word("nx", "NX"), word("xx", "XX")])).opt(),
            word("get", "GET").opt(),
            arg(
                "expiration",
                ArgKind::OneOf(&[
                    int("seconds").token("EX"),
                    int("milliseconds").token("PX"),
                    arg("unix-time-seconds", ArgKind::UnixTime).token("EXAT"),
                    arg("unix-time-milliseconds", ArgKind::UnixTime).token("PXAT"),
                    word("keepttl", "KEEPTTL"),
                ]),
            )
            .opt(),
        ]),
    c("setex", 4, WRITE | DENYOOM, K1, strings::setex)
        .doc("string", "2.0.0", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.")
        .args(&[key(), int("seconds"), s("value")]),
    c("psetex", 4, WRITE | DENYOOM, K1, strings::setex)
        .doc("string", "2.6.0", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.")
        .args(&[key(), int("milliseconds"), s("value")]),
    c("setnx", 3, WRITE | DENYOOM | FAST, K1, strings::setnx)
        .doc("string", "1.0.0", "Set the string value of a key only when the key doesn't exist.")
        .args(&[key(), s("value")]),
    c("getset", 3, WRITE | DENYOOM | FAST, K1, strings::getset)
        .doc("string", "1.0.0", "Returns the previous string value of a key after setting it to a new value.")
        .args(&[key(), s("value")]),
    c("getdel", 2, WRITE | FAST, K1, strings::getdel)
        .doc("string", "6.2.0", "Returns the string value of a key after deleting the key.")
        .args(&[key()]),
    c("mget", -2, READONLY | FAST, KALL, strings::mget)
        .doc("string", "1.0.0", "Atomically returns the string values of one or more keys.")
        .cost("O(N) where N is the number of keys to retrieve.")
        .args(&[keys_()]),
    c("mset", -3, WRITE | DENYOOM, (1, -1, 2), strings::mset)
        .doc("string", "1.0.1", "Atomically creates or modifies the string values of one or more keys.")
        .cost("O(N) where N is the number of keys to set.")
        .args(&[arg("data", ArgKind::Block(&[key(), s("value")])).multiple()]),
    c("append", 3, WRITE | DENYOOM | FAST, K1, strings::append)
        .doc("string", "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist.")
        .args(&[key(), s("value")]),
    c("strlen", 2, READONLY | FAST, K1, strings::strlen)
        .doc("string", "2.2.0", "Returns the length of a string value.")
        .args(&[key()]),
    c("incr", 2, WRITE | DENYOOM | FAST, K1, strings::incr)
        .doc("string", "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.")
        .args(&[key()]),
    c("decr", 2, WRITE | DENYOOM | FAST, K1, strings::incr)
        .doc("string", "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.")
        .args(&[key()]),
    c("incrby", 3, WRITE | DENYOOM | FAST, K1, strings::incr)
        .doc("string", "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.")
        .args(&[key(), int("increment")]),
    c("decrby", 3, WRITE | DENYOOM | FAST, K1, strings::incr)
        .doc("string", "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.")
        .args(&[key(), int("decrement")]),
    c("incrbyfloat", 3, WRITE | DENYOOM | FAST, K1, strings::incrbyfloat)
        .doc("string", "2.6.0", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.")
        .args(&[key(), arg("increment", ArgKind::Double)]),
    // keys
    c("del", -2, WRITE, KALL, keys::del)
        .doc("generic", "1.0.0", "Deletes one or more keys.")
        .cost("O(N) where N is the number of keys that will be removed.")
        .args(&[keys_()]),
    c("unlink", -2, WRITE | FAST, KALL, keys::del)
        .doc("generic", "4.0.0", "Asynchronously deletes one or more keys.")
        .cost("O(1) for each key removed regardless of its size.")
        .args(&[keys_()]),
    c("exists", -2, READONLY | FAST, KALL, keys::exists)
        .doc("generic", "1.0.0", "Determines whether one or more keys exist.")
        .cost("O(N) where N is the number of keys to check.")
        .args(&[keys_()]),
    c("type", 2, READONLY | FAST, K1, keys::type_)
        .doc("generic", "1.0.0", "Determines the type of value stored at a key.")
        .args(&[key()]),
    c("keys", 2, READONLY, NONE, keys::keys)
        .doc("generic", "1.0.0", "Returns all key names that match a pattern.")
        .cost("O(N) with N being the number of keys in the database")
        .args(&[arg("pattern", ArgKind::Pattern)]),
    c("scan", -2, READONLY, NONE, keys::scan)
        .doc("generic", "2.8.0", "Iterates over the key names in the database.")
        .cost("O(1) for every call. O(N) for a complete iteration.")
        .args(&[
            int("cursor"),
            arg("pattern", ArgKind::Pattern).token("MATCH").opt(),
            int("count").token("COUNT").opt(),
            s("type").token("TYPE").opt(),
        ]),
    c("rename", 3, WRITE, (1, 2, 1), keys::rename)
        .doc("generic", "1.0.0", "Renames a key and overwrites the destination.")
        .args(&[key(), arg("newkey", ArgKind::Key)]),
    c("renamenx", 3, WRITE | FAST, (1, 2, 1), keys::rename)
        .doc("generic", "1.0.0", "Renames a key only when the target key name doesn't exist.")
        .args(&[key(), arg("newkey", ArgKind::Key)]),
    c("expire", -3, WRITE | FAST, K1, keys::expire)
        .doc("generic", "1.0.0", "Sets the expiration time of a key in seconds.")
        .args(&[key(), int("seconds"), EXPIRE_CONDITION]),
    c("pexpire", -3, WRITE | FAST, K1, keys::expire)
        .doc("generic", "2.6.0", "Sets the expiration time of a key in milliseconds.")
        .args(&[key(), int("milliseconds"), EXPIRE_CONDITION]),
    c("expireat", -3, WRITE | FAST, K1, keys::expire)
        .doc("generic", "1.2.0", "Sets the expiration time of a key to a Unix timestamp.")
        .args(&[key(), arg("unix-time-seconds", ArgKind::UnixTime), EXPIRE_CONDITION]),
    c("pexpireat", -3, WRITE | FAST, K1, keys::expire)
        .doc("generic", "2.6.0", "Sets the expiration time of a key to a Unix milliseconds timestamp.")
        .args(&[key(), arg("unix-time-milliseconds", ArgKind::UnixTime), EXPIRE_CONDITION]),
    c("ttl", 2, READONLY | FAST, K1, keys::ttl)
        .doc("generic", "1.0.0", "Returns the expiration time in seconds of a key.")
        .args(&[key()]),
    c("pttl", 2, READONLY | FAST, K1, keys::ttl)
        .doc("generic", "2.6.0", "Returns the expiration time in milliseconds of a key.")
        .args(&[key()]),
    c("persist", 2, WRITE | FAST, K1, keys::persist)
        .doc("generic", "2.2.0", "Removes the expiration time of a key.")
        .args(&[key()]),
    c("randomkey", 1, READONLY, NONE, keys::randomkey)
        .doc("generic", "1.0.0", "Returns a random key name from the database."),
    // lists
    c("lpush", -3, WRITE | DENYOOM | FAST, K1, lists::push)
        .doc("list", "1.0.0", "Prepends one or more elements to a list. Creates the key if it doesn't exist.")
        .cost("O(1) for each element added")
        .args(&[key(), s("element").multiple()]),
    c("rpush", -3, WRITE | DENYOOM | FAST, K1, lists::push)
        .doc("list", "1.0.0", "Appends one or more elements to a list. Creates the key if it doesn't exist.")
        .cost("O(1) for each element added")
        .args(&[key(), s("element").multiple()]),
    c("lpop", -2, WRITE | FAST, K1, lists::pop)
        .doc("list", "1.0.0", "Returns the first elements in a list after removing it. Deletes the list if the last element was popped.")
        .cost("O(N) where N is the number of elements returned")
        .args(&[key(), int("count").opt()]),
    c("rpop", -2, WRITE | FAST, K1, lists::pop)
        .doc("list", "1.0.0", "Returns and removes the last elements of a list. Deletes the list if the last element was popped.")
        .cost("O(N) where N is the number of elements returned")
        .args(&[key(), int("count").opt()]),
    c("lrange", 4, READONLY, K1, lists::lrange)
        .doc("list", "1.0.0", "Returns a range of elements from a list.")
        .cost("O(S+N) where S is the distance of start offset from HEAD and N is the number of elements in the specified range.")
        .args(&[key(), int("start"), int("stop")]),
    c("llen", 2, READONLY | FAST, K1, lists::llen)
        .doc("list", "1.0.0", "Returns the length of a list.")
        .args(&[key()]),
    c("lindex", 3, READONLY, K1, lists::lindex)
        .doc("list", "1.0.0", "Returns an element from a list by its index.")
        .args(&[key(), int("index")]),
    // hashes
    c("hset", -4, WRITE | DENYOOM | FAST, K1, hashes::hset)
        .doc("hash", "2.0.0", "Creates or modifies the value of a field in a hash.")
        .cost("O(1) for each field/value pair added")
        .args(&[key(), arg("data", ArgKind::Block(&[s("field"), s("value")])).multiple()]),
    c("hmset", -4, WRITE | DENYOOM | FAST, K1, hashes::hset)
        .doc("hash", "2.0.0", "Sets the values of multiple fields.")
        .cost("O(N) where N is the number of fields being set.")
        .args(&[key(), arg("data", ArgKind::Block(&[s("field"), s("value")])).multiple()]),
    c("hget", 3, READONLY | FAST, K1, hashes::hget)
        .doc("hash", "2.0.0", "Returns the value of a field in a hash.")
        .args(&[key(), s("field")]),
    c("hmget", -3, READONLY | FAST, K1, hashes::hmget)
        .doc("hash", "2.0.0", "Returns the values of all fields in a hash.")
        .cost("O(N) where N is the number of fields being requested.")
        .args(&[key(), s("field").multiple()]),
    c("hgetall", 2, READONLY, K1, hashes::hgetall)
        .doc("hash", "2.0.0", "Returns all fields and values in a hash.")
        .cost("O(N) where N is the size of the hash.")
        .args(&[key()]),
    c("hkeys", 2, READONLY, K1, hashes::hkeys)
        .doc("hash", "2.0.0", "Returns all fields in a hash.")
        .cost("O(N) where N is the size of the hash.")
        .args(&[key()]),
    c("hvals", 2, READONLY, K1, hashes::hkeys)
        .doc("hash", "2.0.0", "Returns all values in a hash.")
        .cost("O(N) where N is the size of the hash.")
        .args(&[key()]),
    c("hdel", -3, WRITE | FAST, K1, hashes::hdel)
        .doc("hash", "2.0.0", "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.")
        .cost("O(N) where N is the number of fields to be removed.")
        .args(&[key(), s("field").multiple()]),
    c("hlen", 2, READONLY | FAST, K1, hashes::hlen)
        .doc("hash", "2.0.0", "Returns the number of fields in a hash.")
        .args(&[key()]),
    c("hexists", 3, READONLY | FAST, K1, hashes::hexists)
        .doc("hash", "2.0.0", "Determines whether a field exists in a hash.")
        .args(&[key(), s("field")]),
    c("hincrby", 4, WRITE | DENYOOM | FAST, K1, hashes::hincrby)
        .doc("hash", "2.0.0", "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.")
        .args(&[key(), s("field"), int("increment")]),
    // sets
    c("sadd", -3, WRITE | DENYOOM | FAST, K1, sets::sadd)
        .doc("set", "1.0.0", "Adds one or more members to a set. Creates the key if it doesn't exist.")
        .cost("O(1) for each element added")
        .args(&[key(), s("member").multiple()]),
    c("srem", -3, WRITE | FAST, K1, sets::srem)
        .doc("set", "1.0.0", "Removes one or more members from a set. Deletes the set if the last member was removed.")
        .cost("O(N) where N is the number of members to be removed.")
        .args(&[key(), s("member").multiple()]),
    c("spop", -2, WRITE | FAST, K1, sets::spop)
        .doc("set", "1.0.0", "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.")
        .cost("Without the count argument O(1), otherwise O(N) where N is the value of the passed count.")
        .args(&[key(), int("count").opt()]),
    c("smembers", 2, READONLY, K1, sets::smembers)
        .doc("set", "1.0.0", "Returns all members of a set.")
        .cost("O(N) where N is the set cardinality.")
        .args(&[key()]),
    c("sismember", 3, READONLY | FAST, K1, sets::sismember)
        .doc("set", "1.0.0", "Determines whether a member belongs to a set.")
        .args(&[key(), s("member")]),
    c("scard", 2, READONLY | FAST, K1, sets::scard)
        .doc("set", "1.0.0", "Returns the number of members in a set.")
        .args(&[key()]),
    // sorted sets
    c("zadd", -4, WRITE | DENYOOM | FAST, K1, zsets::zadd)
        .doc("sorted-set", "1.2.0", "Adds one or more members to a sorted set, or updates their scores. Creates the key if it doesn't exist.")
        .cost("O(log(N)) for each item added, where N is the number of elements in the sorted set.")
        .args(&[
            key(),
            arg("condition", ArgKind::OneOf(&[word("nx", "NX"), word("xx", "XX")])).opt(),
            arg("comparison", ArgKind::OneOf(&[word("gt", "GT"), word("lt", "LT")])).opt(),
            word("change", "CH").opt(),
            word("increment", "INCR").opt(),
            arg("data", ArgKind::Block(&[arg("score", ArgKind::Double), s("member")])).multiple(),
        ]),
    c("zincrby", 4, WRITE | DENYOOM | FAST, K1, zsets::zincrby)
        .doc("sorted-set", "1.2.0", "Increments the score of a member in a sorted set.")
        .cost("O(log(N)) where N is the number of elements in the sorted set.")
        .args(&[key(), int("increment"), s("member")]),
    c("zrange", -4, READONLY, K1, zsets::zrange)
        .doc("sorted-set", "1.2.0", "Returns members in a sorted set within a range of indexes or scores.")
        .cost("O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned.")
        .args(&[
            key(),
            s("start"),
            s("stop"),
            arg("sortby", ArgKind::OneOf(&[word("byscore", "BYSCORE")])).opt(),
            word("rev", "REV").opt(),
            arg("limit", ArgKind::Block(&[int("offset"), int("count")])).token("LIMIT").opt(),
            word("withscores", "WITHSCORES").opt(),
        ]),
    c("zrevrange", -4, READONLY, K1, zsets::zrevrange)
        .doc("sorted-set", "1.2.0", "Returns members in a sorted set within a range of indexes in reverse order.")
        .cost("O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned.")
        .args(&[key(), int("start"), int("stop"), word("withscores", "WITHSCORES").opt()]),
    c("zpopmin", -2, WRITE | FAST, K1, zsets::zpopmin)
        .doc("sorted-set", "5.0.0", "Returns the lowest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.")
        .cost("O(log(N)*M) with N being the number of elements in the sorted set, and M being the number of elements popped.")
        .args(&[key(), int("count").opt()]),
    c("zscore", 3, READONLY | FAST, K1, zsets::zscore)
        .doc("sorted-set", "1.2.0", "Returns the score of a member in a sorted set.")
        .args(&[key(), s("member")]),
    c("zcard", 2, READONLY | FAST, K1, zsets::zcard)
        .doc("sorted-set", "1.2.0", "Returns the number of members in a sorted set.")
        .args(&[key()]),
    c("zrem", -3, WRITE | FAST, K1, zsets::zrem)
        .doc("sorted-set", "1.2.0", "Removes one or more members from a sorted set. Deletes the sorted set if all members were removed.")
        .cost("O(M*log(N)) with N being the number of elements in the sorted set and M the number of elements to be removed.")
        .args(&[key(), s("member").multiple()]),
    // transactions
    c("multi", 1, FAST | NO_QUEUE, NONE, transaction::multi)
        .doc("transactions", "1.2.0", "Starts a transaction."),
    c("exec", 1, NO_QUEUE, NONE, transaction::exec)
        .doc("transactions", "1.2.0", "Executes all commands in a transaction.")
        .cost("Depends on commands in the transaction"),
    c("discard", 1, FAST | NO_QUEUE, NONE, transaction::discard)
        .doc("transactions", "2.0.0", "Discards a transaction."),
    c("watch", -2, FAST | NO_QUEUE, KALL, transaction::watch)
        .doc("transactions", "2.2.0", "Monitors changes to keys to determine the execution of a transaction.")
        .args(&[keys_()]),
    c("unwatch", 1, FAST | NO_QUEUE, NONE, transaction::unwatch)
        .doc("transactions", "2.2.0", "Forgets about watched keys of a transaction."),
    // pub/sub
    c("subscribe", -2, PUBSUB | PUBSUB_OK, NONE, pubsub::subscribe)
        .doc("pubsub", "2.0.0", "Listens for messages published to channels.")
        .cost("O(N) where N is the number of channels to subscribe to.")
        .args(&[s("channel").multiple()]),
    c("unsubscribe", -1, PUBSUB | PUBSUB_OK, NONE, pubsub::unsubscribe)
        .doc("pubsub", "2.0.0", "Stops listening to messages posted to channels.")
        .cost("O(N) where N is the number of channels to unsubscribe.")
        .args(&[s("channel").opt().multiple()]),
    c("psubscribe", -2, PUBSUB | PUBSUB_OK, NONE, pubsub::subscribe)
        .doc("pubsub", "2.0.0", "Listens for messages published to channels that match one or more patterns.")
        .cost("O(N) where N is the number of patterns to subscribe to.")
        .args(&[arg("pattern", ArgKind::Pattern).multiple()]),
    c("punsubscribe", -1, PUBSUB | PUBSUB_OK, NONE, pubsub::unsubscribe)
        .doc("pubsub", "2.0.0", "Stops listening to messages published to channels that match one or more patterns.")
        .cost("O(N) where N is the number of patterns to unsubscribe.")
        .args(&[arg("pattern", ArgKind::Pattern).opt().multiple()]),
    c("publish", 3, PUBSUB | FAST, NONE, pubsub::publish)
        .doc("pubsub", "2.0.0", "Posts a message to a channel.")
        .cost("O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client).")
        .args(&[s("channel"), s("message")]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lower_case_and_short() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            assert!(seen.insert(c.name), "{} twice", c.name);
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(c.name.len() <= 24, "lookup's buffer");
            assert!(
                !c.summary.is_empty() && !c.group.is_empty(),
                "{} undocumented",
                c.name
            );
            for sub in c.subcommands {
                assert!(sub.name.starts_with(&format!("{}|", c.name)));
            }
        }
    }
}
