//! Unix-domain socket files (`--bind unix:/PATH`): binding with the file's mode and owner,
//! clearing a stale file, removing ours at exit.

use std::io;

use socket2::{Domain, SockAddr, Socket, Type};

use super::{Bound, SocketKind, UnixBind, UNIX_ADDR};

/// Bind and listen on a Unix socket, after clearing a stale file; mode and owner are set
/// before `listen`.
pub fn bind_unix(unix: &UnixBind, backlog: i32) -> io::Result<Bound> {
    let path = &unix.path;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is at this path; not removing it",
                ));
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another process listens on this socket",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing a stale socket file (nobody listens on it)");
                    std::fs::remove_file(path)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let made = (|| {
        if let Some(mode) = unix.mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        if unix.owner.is_some() || unix.group.is_some() {
            let uid = unix.owner.as_deref().map(uid_of).transpose()?;
            let gid = unix.group.as_deref().map(gid_of).transpose()?;
            nix::unistd::chown(path, uid, gid).map_err(io::Error::from)?;
        }
        socket.listen(backlog)
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(Bound {
        transport: SocketKind::Unix,
        socket,
        local: UNIX_ADDR,
        path: Some(path.clone()),
    })
}

fn uid_of(name: &str) -> io::Result<nix::unistd::Uid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(nix::unistd::Uid::from_raw(n));
    }
    nix::unistd::User::from_name(name)
        .map_err(io::Error::from)?
        .map(|u| u.uid)
        .ok_or_else(|| io::Error::other(format!("owner {name:?}: no such user")))
}

fn gid_of(name: &str) -> io::Result<nix::unistd::Gid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    nix::unistd::Group::from_name(name)
        .map_err(io::Error::from)?
        .map(|g| g.gid)
        .ok_or_else(|| io::Error::other(format!("group {name:?}: no such group")))
}

/// Removes the Unix socket files this process made when dropped (at exit), each only if
/// the file at its path is still that socket (same device and inode). A thread-mode
/// process that hands its sockets to a successor [disarms](UnixFiles::keep) it.
pub struct UnixFiles {
    files: Vec<(std::path::PathBuf, u64, u64)>,
}

impl UnixFiles {
    /// The Unix sockets among `bound`.
    pub fn of<'b>(bound: impl IntoIterator<Item = &'b Bound>) -> UnixFiles {
        use std::os::unix::fs::MetadataExt;
        let files = bound
            .into_iter()
            .filter_map(|b| {
                let path = b.path.clone()?;
                let meta = std::fs::metadata(&path).ok()?;
                Some((path, meta.dev(), meta.ino()))
            })
            .collect();
        UnixFiles { files }
    }

    /// Leave the files in place (a successor serves them).
    pub fn keep(&mut self) {
        self.files.clear();
    }
}

impl Drop for UnixFiles {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        for (path, dev, ino) in &self.files {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.dev() == *dev && meta.ino() == *ino {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}
