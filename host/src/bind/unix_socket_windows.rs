//! Unix-domain socket files on Windows: `--bind unix:` is refused (tokio serves no AF_UNIX
//! streams there).

use std::io;

use super::{Bound, UnixBind};

/// Refuse: no Unix sockets on Windows.
pub fn bind_unix(_unix: &UnixBind, _backlog: i32) -> io::Result<Bound> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "Unix sockets are supported on Unix only",
    ))
}

/// The Unix socket files this process made: never any on Windows.
pub struct UnixFiles;

impl UnixFiles {
    pub fn of<'b>(_bound: impl IntoIterator<Item = &'b Bound>) -> UnixFiles {
        UnixFiles
    }

    /// Leave the files in place (nothing to leave).
    pub fn keep(&mut self) {}
}
