//! [`Origin`]: where a service's settings came from, to name them later in a [`Problem`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::Problem;

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
