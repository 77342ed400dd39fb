//! The access log's file on Linux: created `0640`, given to `--user`/`--group` when running
//! as root, so that workers that dropped privileges can reopen it.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::HostError;
use crate::privileges::Identity;

/// Open (create) `path` for appending, owned by `owner` if given.
pub fn open(path: &Path, owner: Option<&Identity>) -> Result<File, HostError> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| HostError::io(format!("--access-log {}", path.display()), e))?;
    if let Some(owner) = owner.filter(|_| nix::unistd::Uid::effective().is_root()) {
        nix::unistd::fchown(&file, owner.uid, owner.gid).map_err(|e| {
            HostError::io(
                format!(
                    "--access-log {}: giving it to {}",
                    path.display(),
                    owner.name
                ),
                e.into(),
            )
        })?;
    }
    Ok(file)
}
