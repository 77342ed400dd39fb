//! The access log's file outside Linux: opened for appending with the default rights
//! (there is no `--user`/`--group` to give it to).

use std::fs::File;
use std::path::Path;

use crate::error::HostError;
use crate::privileges::Identity;

/// Open (create) `path` for appending.
pub fn open(path: &Path, owner: Option<&Identity>) -> Result<File, HostError> {
    if let Some(owner) = owner {
        match *owner {}
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| HostError::io(format!("--access-log {}", path.display()), e))
}
