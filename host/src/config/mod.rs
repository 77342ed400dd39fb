//! The configuration file (`--config sockhost.toml`) and the `SOCKHOST_*` environment
//! variables, merged with the command line into one [`Config`].
//!
//! **Every flag is a key.** A key is a long flag's name (`keep-alive = 30`,
//! `bind = ["127.0.0.1:8070", "udp://:8070"]`, `proxy-protocol = true`), and its value goes
//! through that flag's own parser: the file accepts exactly what the command line accepts,
//! and a flag added to [`ServeArgs`] is a key at once. The file is read with `toml`'s
//! span-keeping parser ([`DeTable`]), so every problem names the file, the line and the key.
//!
//! **Precedence**, lowest first: built-in defaults, the file, `SOCKHOST_<FLAG>` variables
//! (`SOCKHOST_KEEP_ALIVE=30`), flags. The merge is done by clap itself: the file's keys
//! become arguments placed before the real ones, leaving out every key that a flag or a
//! variable sets, so clap sees each setting once, from the source that wins.
//!
//! **Services.** `[[service]]` blocks each hold the service keys ([`SERVICE_KEYS`]) of one
//! service, plus an optional `name`; service keys at the top level are defaults for every
//! block. Without blocks the top level is the one service (what plain flags describe).
//! Flags that say *which* service ([`IDENTIFYING`]: plugin, binds, options, TLS files)
//! cannot be combined with blocks; other service flags override every service.

use std::ffi::OsString;

use clap::{ArgMatches, FromArgMatches};

use crate::cli::{self, Config, ServeArgs};
use crate::error::{HostError, Problem};
use file::File;
pub use origin::Origin;

mod checks;
mod file;
mod origin;
mod tokens;

/// Keys that belong to a service (the rest are process-wide).
pub const SERVICE_KEYS: &[&str] = &[
    "plugin",
    "bind",
    "plugin-opt",
    "keep-alive",
    "cert-file",
    "key-file",
    "ca-file",
    "alpn",
    "handshake-timeout",
    "max-pending",
    "send-timeout",
    "max-connections",
    "max-sessions",
    "proxy-protocol",
    "proxy-protocol-from",
];

/// Service keys that say which service a setting is for: as flags (or variables) they
/// cannot apply to `[[service]]` blocks, and at the top level they are not defaults.
pub const IDENTIFYING: &[&str] = &[
    "plugin",
    "bind",
    "plugin-opt",
    "cert-file",
    "key-file",
    "ca-file",
    "alpn",
];

/// Flags that are not keys.
const NOT_KEYS: &[&str] = &["config", "check", "help", "version"];

/// Keys whose relative paths are taken from the file's directory.
const PATH_KEYS: &[&str] = &["plugin", "cert-file", "key-file", "ca-file", "pid-file"];

/// Services one arbiter serves at most (each worker's metrics cell has room for this many).
pub const MAX_SERVICES: usize = 16;

/// The serving arguments as given: parsed, their matches (to tell a flag from a default)
/// and the raw tokens (replayed after the file's).
pub struct Given<'a> {
    pub args: &'a ServeArgs,
    pub matches: &'a ArgMatches,
    pub tokens: Vec<OsString>,
}

/// Build the configuration. With no `--config`, the flags alone (one service).
pub fn load(given: &Given<'_>) -> Result<(Config, Vec<Origin>), Vec<Problem>> {
    let Some(path) = &given.args.config else {
        let config = given.args.clone().into_config().map_err(|e| {
            vec![Problem {
                file: None,
                line: None,
                key: None,
                message: e.to_string(),
            }]
        })?;
        return Ok((config, vec![Origin::default()]));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            file: Some(path.clone()),
            line: None,
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        }]
    })?;
    let file = File::parse(path, &text)?;
    file.merge(given)
}

/// Re-read the configuration as this process was started (arguments and environment):
/// a reload picks up the file's changes.
pub fn reload() -> Result<Config, HostError> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cmd = cli::command();
    let matches = cmd.try_get_matches_from(&argv)?;
    let (matches, tokens) = match matches.subcommand() {
        Some(("check", sub)) => (sub.clone(), argv.iter().skip(2).cloned().collect()),
        _ => (matches.clone(), argv.iter().skip(1).cloned().collect()),
    };
    let args = ServeArgs::from_arg_matches(&matches)?;
    let given = Given {
        args: &args,
        matches: &matches,
        tokens,
    };
    load(&given)
        .map(|(config, _)| config)
        .map_err(|mut problems| HostError::Config(problems.swap_remove(0)))
}

#[cfg(test)]
mod tests {
    use clap::ArgAction;

    use super::checks::suggest;
    use super::*;

    fn load_text(text: &str, flags: &[&str]) -> Result<Config, Vec<Problem>> {
        let dir = std::env::temp_dir().join(format!("sockhost-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One file per call: the tests run in parallel.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{n}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<OsString> =
            vec!["sockhost".into(), "--config".into(), path.clone().into()];
        argv.extend(flags.iter().map(OsString::from));
        let matches = cli::serve_command().try_get_matches_from(&argv).unwrap();
        let args = ServeArgs::from_arg_matches(&matches).unwrap();
        let given = Given {
            args: &args,
            matches: &matches,
            tokens: argv[1..].to_vec(),
        };
        let result = load(&given).map(|(c, _)| c);
        let _ = std::fs::remove_file(path);
        result
    }

    fn one_problem(text: &str) -> String {
        let problems = load_text(text, &[]).expect_err("should be refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].to_string()
    }

    #[test]
    fn every_flag_is_a_key() {
        let cmd = cli::serve_command();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if NOT_KEYS.contains(&long) {
                continue;
            }
            assert!(
                matches!(
                    arg.get_action(),
                    ArgAction::Set | ArgAction::Append | ArgAction::SetTrue
                ),
                "--{long}"
            );
        }
        for key in SERVICE_KEYS {
            assert!(
                cmd.get_arguments().any(|a| a.get_long() == Some(key)),
                "{key} is a flag"
            );
        }
    }

    #[test]
    fn the_top_level_is_the_one_service() {
        let c = load_text("plugin = \"/p/libecho.so\"\nbind = [\"127.0.0.1:0\", \"udp://127.0.0.1:0\"]\nkeep-alive = 3\nworkers = 2\nplugin-opt = { a = \"b\", n = 5 }\n", &[]).unwrap();
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.workers, 2);
        let s = &c.services[0];
        assert_eq!(s.name, "echo");
        assert_eq!(s.binds.len(), 2);
        assert_eq!(s.keep_alive, Some(std::time::Duration::from_secs(3)));
        assert_eq!(
            s.plugin_opts,
            vec![("a".into(), "b".into()), ("n".into(), "5".into())]
        );
    }

    #[test]
    fn flags_override_the_file() {
        let c = load_text(
            "plugin = \"/p/libecho.so\"\nkeep-alive = 3\nworkers = 2\n",
            &["--keep-alive", "9"],
        )
        .unwrap();
        assert_eq!(
            c.services[0].keep_alive,
            Some(std::time::Duration::from_secs(9))
        );
        assert_eq!(c.workers, 2);
    }

    #[test]
    fn blocks_take_top_level_defaults_and_their_own_keys() {
        let c = load_text(
            "keep-alive = 7\n[[service]]\nplugin = \"/p/libecho.so\"\nbind = \"127.0.0.1:1\"\n[[service]]\nname = \"kv2\"\nplugin = \"libkv.so\"\nbind = \"127.0.0.1:2\"\nkeep-alive = 0\n",
            &["--max-sessions", "5"],
        )
        .unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(
            c.services[0].keep_alive,
            Some(std::time::Duration::from_secs(7))
        );
        assert_eq!(c.services[1].keep_alive, None);
        assert_eq!(c.services[1].name, "kv2");
        assert!(c.services[1].plugin.is_absolute(), "relative to the file");
        assert!(c.services.iter().all(|s| s.max_sessions == 5));
    }

    #[test]
    fn problems_name_file_line_and_key() {
        let p = one_problem("plugin = \"/p/libecho.so\"\n\nkep-alive = 3\n");
        assert!(
            p.contains(".toml:3: kep-alive: unknown key (did you mean `keep-alive`?)"),
            "{p}"
        );
        let p = one_problem("plugin = \"/p/libecho.so\"\nkeep-alive = \"soon\"\n");
        assert!(
            p.contains(".toml:2: keep-alive: invalid value 'soon'"),
            "{p}"
        );
        let p = one_problem("plugin = \"/p/libecho.so\"\nproxy-protocol = 1\n");
        assert!(
            p.contains(":2: proxy-protocol: expected true or false, found integer"),
            "{p}"
        );
        let p = one_problem(
            "bind = \"127.0.0.1:1\"\n[[service]]\nplugin = \"/p/a.so\"\nbind = \"127.0.0.1:2\"\n",
        );
        assert!(
            p.contains(":1: bind: conflicts with the [[service]] blocks"),
            "{p}"
        );
        let p =
            one_problem("[[service]]\nplugin = \"/p/a.so\"\nbind = \"127.0.0.1:2\"\nworkers = 3\n");
        assert!(
            p.contains(":4: service[1].workers: a process-wide setting"),
            "{p}"
        );
        let p = one_problem("[[service]]\nplugin = \"/p/a.so\"\nbind = \"127.0.0.1:2\"\n[[service]]\nplugin = \"/q/a.so\"\nbind = \"127.0.0.1:3\"\n");
        assert!(
            p.contains(":5: service[2].plugin: a second service named \"a\""),
            "{p}"
        );
        let p = one_problem("[[service]]\nplugin = \"/p/a.so\"\nbind = \"127.0.0.1:2\"\n[[service]]\nname = \"b\"\nplugin = \"/p/a.so\"\nbind = \"127.0.0.1:2\"\n");
        assert!(
            p.contains(":7: service[2].bind: tcp://127.0.0.1:2 is bound twice"),
            "{p}"
        );
        let p = one_problem("plugin = \"/p/a.so\"\nkey-file = \"k.pem\"\n");
        assert!(p.contains(":2: key-file: needs `cert-file` too"), "{p}");
        let p = one_problem("plugin = \"/p/a.so\"\nkeep-alive = [\n");
        assert!(p.contains(".toml:2: not valid TOML"), "{p}");
    }

    #[test]
    fn identifying_flags_do_not_mix_with_blocks() {
        let problems = load_text(
            "[[service]]\nplugin = \"/p/a.so\"\nbind = \"127.0.0.1:2\"\n",
            &["--bind", "127.0.0.1:5"],
        )
        .unwrap_err();
        assert!(
            problems[0]
                .to_string()
                .contains("--bind cannot be combined with the [[service]] blocks"),
            "{problems:?}"
        );
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(
            suggest("kep-alive", ["keep-alive", "bind"].into_iter()),
            Some("keep-alive")
        );
        assert_eq!(suggest("zzz", ["keep-alive", "bind"].into_iter()), None);
    }
}
