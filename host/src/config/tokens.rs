//! A file's values as command-line tokens, each checked by its flag's own parser, and
//! which flags a flag or a variable set (those win over the file).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};
use toml::de::DeValue;
use toml::Spanned;

use super::{NOT_KEYS, PATH_KEYS};
use crate::error::first_line;

/// The serving flags as file keys (by long name), and whether a flag or a variable set one.
pub(super) struct Flags<'c> {
    pub(super) args: BTreeMap<String, &'c Arg>,
    matches: &'c ArgMatches,
}

impl<'c> Flags<'c> {
    pub(super) fn new(cmd: &'c clap::Command, matches: &'c ArgMatches) -> Flags<'c> {
        let args = cmd
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_string(), a)))
            .filter(|(long, _)| !NOT_KEYS.contains(&long.as_str()))
            .collect();
        Flags { args, matches }
    }

    /// Where `--long` came from, if a flag or a variable set it.
    pub(super) fn explicit(&self, long: &str) -> Option<ValueSource> {
        let arg = self.args.get(long)?;
        match self.matches.value_source(arg.get_id().as_str()) {
            Some(s @ (ValueSource::CommandLine | ValueSource::EnvVariable)) => Some(s),
            _ => None,
        }
    }
}

/// A TOML value as argument tokens for `arg`, checked by the flag's own parser.
pub(super) fn tokens(
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
pub(super) fn check_value(arg: &Arg, flag: &str, value: &str) -> Result<(), String> {
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
pub(super) fn scalar(value: &DeValue<'_>) -> Result<String, String> {
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
