//! A generation's copy of the plugin file, in an anonymous memory file (memfd).
//!
//! The arbiter never loads the plugin; it copies the file's bytes once per generation
//! (startup and every reload) and its workers load that copy through `/proc/self/fd/N`.
//! So every worker of a generation runs the same code, a crashed worker's replacement gets
//! the code its generation started with, and overwriting the `.so` in place while it
//! runs cannot corrupt the mapped code of live workers.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::error::HostError;

/// One generation's plugin bytes.
pub struct Snapshot {
    /// Where the bytes came from (named in errors and logs).
    pub path: PathBuf,
    fd: OwnedFd,
}

impl Snapshot {
    /// Copy `path` into a new memfd.
    pub fn take(path: &Path) -> Result<Snapshot, HostError> {
        let mut src = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                HostError::Load(plugin_api::host::LoadError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            _ => HostError::io(format!("plugin {}", path.display()), e),
        })?;
        let fd = memfd_create(c"sockhost-plugin", MFdFlags::empty())
            .map_err(|e| HostError::io("creating the plugin snapshot (memfd)", e.into()))?;
        let mut dst = File::from(fd);
        std::io::copy(&mut src, &mut dst)
            .map_err(|e| HostError::io(format!("copying plugin {}", path.display()), e))?;
        Ok(Snapshot {
            path: path.to_path_buf(),
            fd: dst.into(),
        })
    }

    /// The path a worker loads (valid in this process and its forks).
    pub fn load_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The descriptor a worker must keep open.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
