//! `--pid-file`: the arbiter's pid, written after the sockets are bound, removed at exit.

use std::path::{Path, PathBuf};

use crate::error::HostError;

/// Removes the file when dropped (only if it still holds our pid).
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Write our pid to `path`.
    pub fn write(path: &Path) -> Result<PidFile, HostError> {
        let pid = std::process::id();
        std::fs::write(path, format!("{pid}\n"))
            .map_err(|e| HostError::io(format!("--pid-file {}", path.display()), e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Forked workers inherit this value but must not remove the arbiter's file.
        if std::process::id() != self.pid {
            return;
        }
        if std::fs::read_to_string(&self.path).is_ok_and(|s| s.trim() == self.pid.to_string()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
