//! A generation's copy of the plugin file, in an anonymous, sealed memory file (memfd).
//!
//! Nothing loads the plugin from its path. In process mode the arbiter copies the file's
//! bytes once per generation (startup and every reload) and its workers load that copy
//! through `/proc/self/fd/N`; thread mode does the same for itself (and its successor on
//! reload takes its own copy). So every worker of a generation runs the same code, a
//! crashed worker's replacement gets the code its generation started with, and
//! overwriting the `.so` in place while it runs cannot corrupt the mapped code of a live
//! process.
//!
//! The copy is sealed before anything can run plugin code or fork (`F_SEAL_WRITE`,
//! `F_SEAL_GROW`, `F_SEAL_SHRINK`, `F_SEAL_SEAL`): no process holding the descriptor, a
//! compromised worker included, can change the code its siblings and successors load. Each
//! process closes its descriptor once it has loaded the plugin (the mapping stays valid);
//! only the arbiter keeps it, for replacements.
//!
//! Taking a snapshot also checks who could *replace* the plugin: one warning line when the
//! file, or its directory (unless sticky, as `/tmp` is), is writable by group or others —
//! they choose the code the next reload or restart runs.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::error::HostError;

/// One generation's plugin bytes.
pub struct Snapshot {
    /// Where the bytes came from (named in errors and logs).
    pub path: PathBuf,
    fd: OwnedFd,
}

/// Every seal: no writes, no size change, no unsealing.
const SEALS: SealFlag = SealFlag::F_SEAL_WRITE
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_SEAL);

impl Snapshot {
    /// Copy `path` into a new memfd and seal it; warn if others could replace the file.
    pub fn take(path: &Path) -> Result<Snapshot, HostError> {
        let mut src = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                HostError::Load(plugin_api::host::LoadError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            _ => HostError::io(format!("plugin {}", path.display()), e),
        })?;
        warn_if_replaceable(path, &src);
        let fd = memfd_create(
            c"sockhost-plugin",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| HostError::io("creating the plugin snapshot (memfd)", e.into()))?;
        let mut dst = File::from(fd);
        copy_by_value(&mut src, &mut dst)
            .map_err(|e| HostError::io(format!("copying plugin {}", path.display()), e))?;
        seal(&dst).map_err(|e| HostError::io("sealing the plugin snapshot (memfd)", e.into()))?;
        Ok(Snapshot {
            path: path.to_path_buf(),
            fd: dst.into(),
        })
    }

    /// The path a worker loads (valid in this process and its forks).
    pub fn load_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The descriptor a worker must keep open until it has loaded the plugin.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Copy with `read`/`write` through a buffer of our own.
///
/// `std::io::copy` between two files takes the kernel's zero-copy paths (`copy_file_range`,
/// `sendfile`, `splice`); pages of the memfd that such a path still references when we
/// seal it make `F_SEAL_WRITE` fail with `EBUSY` (seen once in CI on a loaded machine).
/// A plugin is a few MiB at most, copied once per generation: plain copies cost nothing.
fn copy_by_value(src: &mut File, dst: &mut File) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => return dst.flush(),
            Ok(n) => dst.write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Add every seal. `F_SEAL_WRITE` answers `EBUSY` while something still holds a reference
/// to one of the file's pages (the kernel itself waits ~150 ms for such references first);
/// retry a few times, bounded, before giving up with the kernel's error.
fn seal(file: &File) -> nix::Result<()> {
    let mut attempt = 0;
    loop {
        match fcntl(file, FcntlArg::F_ADD_SEALS(SEALS)) {
            Err(nix::errno::Errno::EBUSY) if attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
            }
            other => return other.map(drop),
        }
    }
}

/// One warning line if the plugin file or its directory lets group or others replace it.
fn warn_if_replaceable(path: &Path, file: &File) {
    let file_mode = file.metadata().map(|m| m.permissions().mode()).ok();
    let dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let dir_mode = dir
        .as_deref()
        .and_then(|d| std::fs::metadata(d).ok())
        .map(|m| m.permissions().mode());
    let mut writable = Vec::new();
    if let Some(mode) = file_mode.filter(|m| replaceable_file(*m)) {
        writable.push(format!("the file (mode {:04o})", mode & 0o7777));
    }
    if let (Some(dir), Some(mode)) = (&dir, dir_mode.filter(|m| replaceable_dir(*m))) {
        writable.push(format!(
            "its directory {} (mode {:04o})",
            dir.display(),
            mode & 0o7777
        ));
    }
    if !writable.is_empty() {
        tracing::warn!(
            "plugin {}: {} writable by group or others, who can choose the code the next reload or restart runs (chmod go-w)",
            path.display(),
            writable.join(" and "),
        );
    }
}

/// Group or others may write the file.
fn replaceable_file(mode: u32) -> bool {
    mode & 0o022 != 0
}

/// Group or others may create, rename or remove entries (a sticky directory only lets
/// them touch their own).
fn replaceable_dir(mode: u32) -> bool {
    mode & 0o022 != 0 && mode & 0o1000 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_snapshot_is_sealed_against_writes_and_resizing() {
        let dir = std::env::temp_dir().join(format!("sockhost-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("libplugin.so");
        std::fs::write(&path, b"not really a plugin").unwrap();
        let snapshot = Snapshot::take(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let seals = fcntl(&snapshot.fd, FcntlArg::F_GET_SEALS).unwrap();
        assert_eq!(SealFlag::from_bits_truncate(seals), SEALS);
        // A fresh read-write descriptor for the same memory file, as any process holding
        // the snapshot could open.
        let mut rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(snapshot.load_path())
            .unwrap();
        let denied = rw.write_all(b"evil").unwrap_err();
        assert_eq!(denied.raw_os_error(), Some(nix::libc::EPERM), "{denied}");
        assert!(rw.set_len(0).is_err(), "shrinking must be refused");
        assert!(rw.set_len(1 << 20).is_err(), "growing must be refused");
        assert!(fcntl(&rw, FcntlArg::F_ADD_SEALS(SealFlag::empty())).is_err());
        assert_eq!(
            std::fs::read(snapshot.load_path()).unwrap(),
            b"not really a plugin"
        );
    }

    #[test]
    fn group_or_other_write_access_makes_a_plugin_replaceable() {
        assert!(!replaceable_file(0o100644));
        assert!(!replaceable_file(0o100755));
        assert!(replaceable_file(0o100664));
        assert!(replaceable_file(0o100646));
        assert!(!replaceable_dir(0o040755));
        assert!(replaceable_dir(0o040775));
        assert!(replaceable_dir(0o040777));
        assert!(!replaceable_dir(0o041777), "sticky, as /tmp");
    }
}
