//! `--pid-file`: the serving process's pid, written after the sockets are bound, removed at
//! exit — and a lock, so that two instances cannot share one pid file.
//!
//! - A symbolic link at the path is refused, never followed (`O_NOFOLLOW`; a root process
//!   must not be led to overwrite another file). So is anything but a regular file.
//! - The file is created with `O_EXCL` if absent; an existing one is opened without
//!   following links. Either way the process takes an exclusive `flock` on it and holds it
//!   for its life (the kernel drops it when the process exits, however it exits). If another
//!   process holds the lock, startup fails with one `error:` line naming that process. A
//!   file nobody holds (left by a killed instance) is stale: it is taken over and rewritten.
//! - After locking, the path must still name the locked file (an exiting holder removes it
//!   before its lock goes); otherwise it starts over.
//! - Thread mode's reload hands the locked file to the successor (an inherited descriptor,
//!   `SOCKHOST_PID_FILE_FD`): the lock belongs to the open file, so it is never free between
//!   the two processes, and the successor rewrites it with its own pid.
//!
//! Linux only: elsewhere `--pid-file` is refused.

// FFI boundary: flock, and the pid file's descriptor inherited by number.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

use crate::error::HostError;

/// The variable naming the descriptor of a pid file handed to a thread-mode successor.
pub const INHERITED_FD_VAR: &str = "SOCKHOST_PID_FILE_FD"; // set by `handoff::start_successor`

/// How often to start over when the file is replaced under us before giving up.
const ATTEMPTS: usize = 10;

/// A written and locked pid file; removed when dropped (only if it still holds our pid).
pub struct PidFile {
    path: PathBuf,
    file: File,
    pid: u32,
}

impl PidFile {
    /// Take the lock on `path` and write our pid into it.
    pub fn write(path: &Path) -> Result<PidFile, HostError> {
        let fail = |e: io::Error| HostError::io(format!("--pid-file {}", path.display()), e);
        let pid = std::process::id();
        let file = match inherited(path) {
            Some(file) => file,
            None => lock(path).map_err(fail)?,
        };
        file.set_len(0).map_err(fail)?;
        file.write_all_at(format!("{pid}\n").as_bytes(), 0)
            .map_err(fail)?;
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
            pid,
        })
    }

    /// The locked file's descriptor, for a thread-mode successor to inherit.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Forked workers inherit this value but must not remove the arbiter's file; nor may
        // a process whose successor has rewritten it.
        if std::process::id() != self.pid || !names(&self.path, &self.file) {
            return;
        }
        if read(&self.file) == self.pid.to_string() {
            let _ = std::fs::remove_file(&self.path);
        }
        // The lock goes with the last descriptor of the file, when this process exits.
    }
}

/// Open (or create) `path` without following a link, lock it, and make sure it is still the
/// file at `path`.
fn lock(path: &Path) -> io::Result<File> {
    for _ in 0..ATTEMPTS {
        let file = match open(path) {
            Ok(file) => file,
            // Removed between our two opens: start over.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            return Err(io::Error::other(format!(
                "in use by another running sockhost (pid {}); stop it first or choose another pid file",
                read(&file)
            )));
        }
        if names(path, &file) {
            return Ok(file);
        }
    }
    Err(io::Error::other(
        "the file keeps being replaced by another process",
    ))
}

/// Create `path` exclusively, or open the regular file there; never through a symlink.
fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    let file = match options.clone().create_new(true).open(path) {
        Ok(file) => return Ok(file),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(path),
        Err(e) => Err(e),
    };
    let file = file.map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::other("is a symbolic link; refusing to follow it")
        } else {
            e
        }
    })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("exists and is not a regular file"));
    }
    Ok(file)
}

/// The pid in `file` (its first line, trimmed), read without moving the file offset.
fn read(file: &File) -> String {
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

/// Whether `path` (not following a link) is `file`.
fn names(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(at_path), Ok(ours)) => at_path.dev() == ours.dev() && at_path.ino() == ours.ino(),
        _ => false,
    }
}

/// The pid file a thread-mode predecessor handed over, if it is the file at `path`.
fn inherited(path: &Path) -> Option<File> {
    let fd: RawFd = std::env::var(INHERITED_FD_VAR).ok()?.parse().ok()?;
    std::env::remove_var(INHERITED_FD_VAR);
    let stat = nix::sys::stat::fstat(
        // SAFETY: borrowed only for the fstat call; ownership is taken below only if it is
        // the pid file.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
    )
    .ok()?;
    let at_path = std::fs::symlink_metadata(path).ok()?;
    if !at_path.is_file() || at_path.dev() != stat.st_dev || at_path.ino() != stat.st_ino {
        return None;
    }
    // SAFETY: the predecessor put this descriptor here for us alone, and it is the pid
    // file (checked above); nothing else in this process owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    // Inherited descriptors lose close-on-exec: set it again. The lock is this open file's
    // already; taking it again only confirms that.
    let _ = nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return None;
    }
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sockhost-pidfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = temp("link");
        let target = dir.join("target");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.join("sockhost.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = lock(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        // A dangling one too (O_EXCL does not create through it).
        std::fs::remove_file(&target).unwrap();
        assert!(lock(&link).is_err());
        assert!(!target.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_a_stale_file_is_taken_over() {
        let dir = temp("lock");
        let path = dir.join("sockhost.pid");
        std::fs::write(&path, "12345\n").unwrap(); // stale: nobody holds it
        let first = PidFile::write(&path).unwrap();
        let ours = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), ours);
        // A second open file description of the same file cannot take the lock.
        let e = lock(&path).unwrap_err();
        assert!(e.to_string().contains(&format!("pid {ours}")), "{e}");
        drop(first);
        assert!(!path.exists(), "removed at exit");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = temp("dir");
        assert!(lock(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
