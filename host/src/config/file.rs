//! The configuration file: parsed with spans, sorted into top-level keys and
//! `[[service]]` blocks, and merged with the flags and variables into one [`Config`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::FromArgMatches;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::checks::{conflicts, suggest, valid_name};
use super::tokens::{tokens, Flags};
use super::{Given, Origin, IDENTIFYING, MAX_SERVICES, SERVICE_KEYS};
use crate::cli::{self, Config, ServeArgs};
use crate::error::{first_line, Problem};

/// One key of the file, with where it is.
pub(super) struct Entry<'a> {
    key: String,
    line: usize,
    /// A copy of the parsed value (its strings still borrow the file's text).
    value: Spanned<DeValue<'a>>,
}

/// A key of the file with the argument tokens it stands for.
pub(super) type Keyed<'e, 'a> = (&'e Entry<'a>, Vec<OsString>);

/// The file, parsed and sorted into top-level keys and `[[service]]` blocks.
pub(super) struct File<'a> {
    path: PathBuf,
    /// Its directory: the base of relative paths.
    dir: PathBuf,
    top: Vec<Entry<'a>>,
    /// Each block: its line and its keys.
    services: Vec<(usize, Vec<Entry<'a>>)>,
}

impl<'a> File<'a> {
    pub(super) fn parse(path: &Path, text: &'a str) -> Result<File<'a>, Vec<Problem>> {
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
    pub(super) fn merge(&self, given: &Given<'_>) -> Result<(Config, Vec<Origin>), Vec<Problem>> {
        let cmd = cli::serve_command();
        let flags = Flags::new(&cmd, given.matches);
        let blocks = !self.services.is_empty();
        let mut problems = Vec::new();
        let (global, defaults) = self.top_level(&flags, blocks, &mut problems);
        let mut units = self.block_units(&flags, &defaults, blocks, &mut problems);
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
        self.services_config(&flags, &global, units, blocks, given)
    }

    /// The top level: process-wide keys (as tokens, unless a flag or variable sets them)
    /// and service keys (the one service, or defaults for every block).
    fn top_level(
        &self,
        flags: &Flags<'_>,
        blocks: bool,
        problems: &mut Vec<Problem>,
    ) -> (Vec<OsString>, Vec<Keyed<'_, 'a>>) {
        let mut global = Vec::new();
        let mut defaults = Vec::new();
        for entry in &self.top {
            match self.key_tokens(flags, entry, "", false, blocks) {
                Err(p) => problems.push(p),
                Ok(t) if SERVICE_KEYS.contains(&entry.key.as_str()) || entry.key == "name" => {
                    defaults.push((entry, t))
                }
                Ok(t) if flags.explicit(&entry.key).is_none() => global.extend(t),
                Ok(_) => {}
            }
        }
        (global, defaults)
    }

    /// One unit per `[[service]]` block: the block's own keys, then the `defaults` it does
    /// not set.
    fn block_units<'e>(
        &'e self,
        flags: &Flags<'_>,
        defaults: &[Keyed<'e, 'a>],
        blocks: bool,
        problems: &mut Vec<Problem>,
    ) -> Vec<Unit<'e, 'a>> {
        let mut units = Vec::new();
        for (i, (line, entries)) in self.services.iter().enumerate() {
            let prefix = format!("service[{}].", i + 1);
            let mut own: Vec<Keyed<'_, '_>> = Vec::new();
            for entry in entries {
                match self.key_tokens(flags, entry, &prefix, true, blocks) {
                    Ok(t) => own.push((entry, t)),
                    Err(p) => problems.push(p),
                }
            }
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
        units
    }

    /// Every unit as a service of one [`Config`], with where each came from; or every
    /// problem, the services' conflicts included.
    fn services_config(
        &self,
        flags: &Flags<'_>,
        global: &[OsString],
        units: Vec<Unit<'_, '_>>,
        blocks: bool,
        given: &Given<'_>,
    ) -> Result<(Config, Vec<Origin>), Vec<Problem>> {
        let mut problems = Vec::new();
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
            match self.service(flags, global, &unit, blocks, given, &origin) {
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

/// The keys of one service: a `[[service]]` block with the defaults it does not override,
/// or the top level.
pub(super) struct Unit<'e, 'a> {
    line: Option<usize>,
    prefix: String,
    entries: Vec<Keyed<'e, 'a>>,
}
