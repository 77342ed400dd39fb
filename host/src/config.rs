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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, FromArgMatches};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::cli::{self, Config, ServeArgs};
use crate::error::HostError;

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

/// One problem with a configuration, as one line: `FILE:LINE: KEY: what`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// The key's path: `keep-alive`, `service[2].cert-file`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
            }
            f.write_str(" ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Where a service's settings came from, for problems found later (`sockhost check`).
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub file: Option<PathBuf>,
    /// The `[[service]]` block's line.
    pub line: Option<usize>,
    /// The key path prefix (`service[2].`, or empty).
    pub prefix: String,
    /// The line of each key set in the file (defaults from the top level included).
    pub keys: BTreeMap<String, usize>,
}

impl Origin {
    /// A problem with `key` of this service (`flag` names it when it came from elsewhere).
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        match self.keys.get(key) {
            Some(&line) => Problem {
                file: self.file.clone(),
                line: Some(line),
                key: Some(format!("{}{key}", self.prefix)),
                message: message.into(),
            },
            None => Problem {
                file: self.file.clone(),
                line: self.line,
                key: (!self.prefix.is_empty()).then(|| self.prefix.trim_end_matches('.').into()),
                message: message.into(),
            },
        }
    }
}

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
    let matches = cmd
        .try_get_matches_from(&argv)
        .map_err(|e| HostError::Config(first_line(&e.to_string())))?;
    let (matches, tokens) = match matches.subcommand() {
        Some(("check", sub)) => (sub.clone(), argv.iter().skip(2).cloned().collect()),
        _ => (matches.clone(), argv.iter().skip(1).cloned().collect()),
    };
    let args = ServeArgs::from_arg_matches(&matches)
        .map_err(|e| HostError::Config(first_line(&e.to_string())))?;
    let given = Given {
        args: &args,
        matches: &matches,
        tokens,
    };
    load(&given)
        .map(|(config, _)| config)
        .map_err(|problems| HostError::Config(problems[0].to_string()))
}

/// One key of the file, with where it is.
struct Entry<'a> {
    key: String,
    line: usize,
    /// A copy of the parsed value (its strings still borrow the file's text).
    value: Spanned<DeValue<'a>>,
}

/// A key of the file with the argument tokens it stands for.
type Keyed<'e, 'a> = (&'e Entry<'a>, Vec<OsString>);

/// The file, parsed and sorted into top-level keys and `[[service]]` blocks.
struct File<'a> {
    path: PathBuf,
    /// Its directory: the base of relative paths.
    dir: PathBuf,
    top: Vec<Entry<'a>>,
    /// Each block: its line and its keys.
    services: Vec<(usize, Vec<Entry<'a>>)>,
}

impl<'a> File<'a> {
    fn parse(path: &Path, text: &'a str) -> Result<File<'a>, Vec<Problem>> {
        let at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let table = DeTable::parse(text).map_err(|e| {
            vec![Problem {
                file: Some(path.to_path_buf()),
                line: e.span().map(|s| at(s.start)),
                key: None,
                message: format!("not valid TOML: {}", e.message().trim()),
            }]
        })?;
        let mut top = Vec::new();
        let mut services = Vec::new();
        let mut problems = Vec::new();
        for (key, value) in table.get_ref().iter() {
            let line = at(key.span().start);
            if key.get_ref() == "service" {
                match value.get_ref() {
                    DeValue::Array(blocks) => {
                        for block in blocks.iter() {
                            match block.get_ref() {
                                DeValue::Table(t) => services.push((
                                    at(block.span().start),
                                    t.iter()
                                        .map(|(k, v)| Entry {
                                            key: k.get_ref().to_string(),
                                            line: at(k.span().start),
                                            value: v.clone(),
                                        })
                                        .collect(),
                                )),
                                _ => problems.push(Problem {
                                    file: Some(path.to_path_buf()),
                                    line: Some(at(block.span().start)),
                                    key: Some("service".into()),
                                    message: "expected [[service]] blocks (tables)".into(),
                                }),
                            }
                        }
                    }
                    _ => problems.push(Problem {
                        file: Some(path.to_path_buf()),
                        line: Some(line),
                        key: Some("service".into()),
                        message: "expected [[service]] blocks (an array of tables), found a \
                                  single table or value"
                            .into(),
                    }),
                }
                continue;
            }
            top.push(Entry {
                key: key.get_ref().to_string(),
                line,
                value: value.clone(),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(File {
            path: path.to_path_buf(),
            dir,
            top,
            services,
        })
    }

    fn problem(&self, line: usize, key: &str, message: impl Into<String>) -> Problem {
        Problem {
            file: Some(self.path.clone()),
            line: Some(line),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// Merge with the command line: one [`Config`] with every service, or every problem.
    fn merge(&self, given: &Given<'_>) -> Result<(Config, Vec<Origin>), Vec<Problem>> {
        let cmd = cli::serve_command();
        let flags = Flags::new(&cmd, given.matches);
        let blocks = !self.services.is_empty();
        let mut problems = Vec::new();

        // The top level: process-wide keys (as tokens, unless a flag or variable sets
        // them) and service keys (the one service, or defaults for every block).
        let mut global = Vec::new();
        let mut defaults: Vec<Keyed<'_, '_>> = Vec::new();
        for entry in &self.top {
            match self.key_tokens(&flags, entry, "", false, blocks) {
                Err(p) => problems.push(p),
                Ok(t) if SERVICE_KEYS.contains(&entry.key.as_str()) || entry.key == "name" => {
                    defaults.push((entry, t))
                }
                Ok(t) if flags.explicit(&entry.key).is_none() => global.extend(t),
                Ok(_) => {}
            }
        }
        let mut units = Vec::new();
        for (i, (line, entries)) in self.services.iter().enumerate() {
            let prefix = format!("service[{}].", i + 1);
            let mut own: Vec<Keyed<'_, '_>> = Vec::new();
            for entry in entries {
                match self.key_tokens(&flags, entry, &prefix, true, blocks) {
                    Ok(t) => own.push((entry, t)),
                    Err(p) => problems.push(p),
                }
            }
            // The block's own keys, then the defaults it does not set.
            let missing: Vec<Keyed<'_, '_>> = defaults
                .iter()
                .filter(|(d, _)| !own.iter().any(|(o, _)| o.key == d.key))
                .cloned()
                .collect();
            own.extend(missing);
            units.push(Unit {
                line: Some(*line),
                prefix,
                entries: own,
            });
        }
        if !blocks {
            units.push(Unit {
                line: None,
                prefix: String::new(),
                entries: defaults,
            });
        }
        if let Some((line, _)) = self.services.get(MAX_SERVICES) {
            let message = format!("more than {MAX_SERVICES} services");
            problems.push(self.problem(*line, "service", message));
        }
        if blocks {
            problems.extend(self.identifying_flags(&flags));
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let mut config: Option<Config> = None;
        let mut origins = Vec::new();
        for unit in units {
            let origin = Origin {
                file: Some(self.path.clone()),
                line: unit.line,
                prefix: unit.prefix.clone(),
                keys: unit
                    .entries
                    .iter()
                    .map(|(e, _)| (e.key.clone(), e.line))
                    .collect(),
            };
            match self.service(&flags, &global, &unit, blocks, given, &origin) {
                Ok(one) => match &mut config {
                    None => config = Some(one),
                    Some(c) => c.services.extend(one.services),
                },
                Err(p) => problems.extend(p),
            }
            origins.push(origin);
        }
        if let Some(c) = &config {
            problems.extend(conflicts(c, &origins));
        }
        match config {
            Some(c) if problems.is_empty() => Ok((c, origins)),
            _ => Err(problems),
        }
    }

    /// Check one key (where it may be, its value) and turn it into argument tokens.
    fn key_tokens(
        &self,
        flags: &Flags<'_>,
        entry: &Entry<'_>,
        prefix: &str,
        in_service: bool,
        blocks: bool,
    ) -> Result<Vec<OsString>, Problem> {
        let path = format!("{prefix}{}", entry.key);
        let fail = |message: String| Err(self.problem(entry.line, &path, message));
        if entry.key == "name" && (in_service || !blocks) {
            return match entry.value.get_ref() {
                DeValue::String(s) if valid_name(s) => Ok(Vec::new()),
                DeValue::String(_) => fail("a service name is letters, digits, '-' and '_'".into()),
                other => fail(format!("expected a string, found {}", other.type_str())),
            };
        }
        let Some(arg) = flags.args.get(&entry.key) else {
            let known = flags
                .args
                .keys()
                .map(String::as_str)
                .chain(["name", "service"]);
            let hint = suggest(&entry.key, known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return fail(format!("unknown key{hint}"));
        };
        if in_service && !SERVICE_KEYS.contains(&entry.key.as_str()) {
            return fail(
                "a process-wide setting: put it at the top level, not in a [[service]] block"
                    .into(),
            );
        }
        if !in_service
            && blocks
            && (IDENTIFYING.contains(&entry.key.as_str()) || entry.key == "name")
        {
            return fail("conflicts with the [[service]] blocks: with blocks, each service sets its own (move it into a block)".into());
        }
        tokens(arg, &entry.key, &entry.value, &self.dir).or_else(fail)
    }

    /// Flags (or variables) that say which service they are for cannot go with blocks.
    fn identifying_flags(&self, flags: &Flags<'_>) -> Vec<Problem> {
        IDENTIFYING
            .iter()
            .filter_map(|long| {
                let what = match flags.explicit(long)? {
                    ValueSource::EnvVariable => format!("the variable {}", cli::env_name(long)),
                    _ => format!("--{long}"),
                };
                Some(Problem {
                    file: Some(self.path.clone()),
                    line: None,
                    key: None,
                    message: format!("{what} cannot be combined with the [[service]] blocks of this file: say in a block which service it is for"),
                })
            })
            .collect()
    }

    /// One service: the process-wide tokens, the unit's, then the real arguments, parsed
    /// by clap as if they had all been given as flags.
    fn service(
        &self,
        flags: &Flags<'_>,
        global: &[OsString],
        unit: &Unit<'_, '_>,
        blocks: bool,
        given: &Given<'_>,
        origin: &Origin,
    ) -> Result<Config, Vec<Problem>> {
        let has = |key: &str| unit.entries.iter().any(|(e, _)| e.key == key);
        if blocks {
            let missing: Vec<Problem> = ["plugin", "bind"]
                .into_iter()
                .filter(|k| !has(k))
                .map(|k| origin.problem(k, format!("this [[service]] block has no `{k}`")))
                .collect();
            if !missing.is_empty() {
                return Err(missing);
            }
        }
        // TLS files come together (a clear line where clap would say "required argument").
        let set = |key: &str| has(key) || flags.explicit(key).is_some();
        for (key, needs) in [
            ("cert-file", "key-file"),
            ("key-file", "cert-file"),
            ("ca-file", "cert-file"),
            ("alpn", "cert-file"),
        ] {
            if has(key) && !set(needs) {
                return Err(vec![origin.problem(key, format!("needs `{needs}` too"))]);
            }
        }
        let mut argv: Vec<OsString> = vec!["sockhost".into()];
        argv.extend(global.iter().cloned());
        for (entry, t) in &unit.entries {
            if flags.explicit(&entry.key).is_none() {
                argv.extend(t.iter().cloned());
            }
        }
        argv.extend(given.tokens.iter().cloned());
        let args = cli::serve_command()
            .try_get_matches_from(&argv)
            .and_then(|m| ServeArgs::from_arg_matches(&m))
            .map_err(|e| vec![origin.problem("", first_line(&e.to_string()))])?;
        let mut config = args
            .into_config()
            .map_err(|e| vec![origin.problem("plugin", e.to_string())])?;
        let name = unit
            .entries
            .iter()
            .find_map(|(e, _)| match e.value.get_ref() {
                DeValue::String(s) if e.key == "name" => Some(s.to_string()),
                _ => None,
            });
        if let Some(name) = name {
            config.services[0].name = name;
        }
        Ok(config)
    }
}

/// The serving flags as file keys (by long name), and whether a flag or a variable set one.
struct Flags<'c> {
    args: BTreeMap<String, &'c Arg>,
    matches: &'c ArgMatches,
}

impl<'c> Flags<'c> {
    fn new(cmd: &'c clap::Command, matches: &'c ArgMatches) -> Flags<'c> {
        let args = cmd
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_string(), a)))
            .filter(|(long, _)| !NOT_KEYS.contains(&long.as_str()))
            .collect();
        Flags { args, matches }
    }

    /// Where `--long` came from, if a flag or a variable set it.
    fn explicit(&self, long: &str) -> Option<ValueSource> {
        let arg = self.args.get(long)?;
        match self.matches.value_source(arg.get_id().as_str()) {
            Some(s @ (ValueSource::CommandLine | ValueSource::EnvVariable)) => Some(s),
            _ => None,
        }
    }
}

/// The keys of one service: a `[[service]]` block with the defaults it does not override,
/// or the top level.
struct Unit<'e, 'a> {
    line: Option<usize>,
    prefix: String,
    entries: Vec<Keyed<'e, 'a>>,
}

/// Settings that cannot hold together: two services of one name, or one address bound twice.
fn conflicts(config: &Config, origins: &[Origin]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, s) in config.services.iter().enumerate() {
        if let Some(first) = config.services[..i].iter().position(|o| o.name == s.name) {
            let key = if origins[i].keys.contains_key("name") {
                "name"
            } else {
                "plugin"
            };
            problems.push(origins[i].problem(
                key,
                format!("a second service named {:?} (the first is service[{}]); give each a distinct `name`", s.name, first + 1),
            ));
        }
    }
    let all: Vec<(usize, &crate::bind::BindSpec)> = config
        .services
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.binds.iter().map(move |b| (i, b)))
        // Port 0 is a new free port each time.
        .filter(|(_, b)| b.port != 0 || b.transport == crate::bind::Transport::Unix)
        .collect();
    for (n, (i, bind)) in all.iter().enumerate() {
        if let Some((j, _)) = all[..n].iter().find(|(_, b)| b == bind) {
            problems.push(origins[*i].problem(
                "bind",
                format!(
                    "{bind} is bound twice (also by service[{}] {:?})",
                    j + 1,
                    config.services[*j].name
                ),
            ));
        }
    }
    problems
}

/// A TOML value as argument tokens for `arg`, checked by the flag's own parser.
fn tokens(
    arg: &Arg,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    dir: &Path,
) -> Result<Vec<OsString>, String> {
    let flag = format!("--{key}");
    match arg.get_action() {
        ArgAction::SetTrue => {
            return match value.get_ref() {
                DeValue::Boolean(true) => Ok(vec![flag.into()]),
                DeValue::Boolean(false) => Ok(Vec::new()),
                other => Err(format!(
                    "expected true or false, found {}",
                    other.type_str()
                )),
            };
        }
        ArgAction::Set | ArgAction::Append => {}
        _ => return Err("not a setting".into()),
    }
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    let mut values = Vec::new();
    match value.get_ref() {
        DeValue::Array(items) if repeatable => {
            for item in items.iter() {
                values.push(scalar(item.get_ref())?);
            }
        }
        DeValue::Array(_) => return Err("expected one value, found an array".into()),
        DeValue::Table(table) if key == "plugin-opt" => {
            for (k, v) in table.iter() {
                values.push(format!("{}={}", k.get_ref(), scalar(v.get_ref())?));
            }
        }
        other => values.push(scalar(other)?),
    }
    let mut out = Vec::new();
    for v in values {
        let v = if PATH_KEYS.contains(&key) && Path::new(&v).is_relative() {
            dir.join(&v).to_string_lossy().into_owned()
        } else {
            v
        };
        check_value(arg, &flag, &v)?;
        let mut token = OsString::from(&flag);
        token.push("=");
        token.push(&v);
        out.push(token);
    }
    Ok(out)
}

/// Run `value` through the flag's own parser (a copy of the flag alone: its requirements on
/// other flags are checked once the whole service is put together).
fn check_value(arg: &Arg, flag: &str, value: &str) -> Result<(), String> {
    let mut alone = Arg::new("value")
        .long("value")
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set);
    if let Some(names) = arg.get_value_names() {
        alone = alone.value_names(names.to_vec());
    }
    let token = format!("--value={value}");
    clap::Command::new("sockhost")
        .arg(alone)
        .try_get_matches_from(["sockhost", token.as_str()])
        .map(drop)
        .map_err(|e| first_line(&e.to_string()).replace("'--value", &format!("'{flag}")))
}

/// A string or an integer as the text a flag would get.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|e| format!("integer out of range: {e}")),
        other => Err(format!(
            "expected a string or an integer, found {}",
            other.type_str()
        )),
    }
}

/// `letters, digits, '-', '_'`: a service name is a metrics label value and a log field.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The first line of a clap error, without its `error: ` prefix.
pub fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// The closest known key, if it is close (a typo).
fn suggest<'k>(key: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    known
        .map(|k| (distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
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
