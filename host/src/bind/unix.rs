//! `unix:/PATH` binds: the socket file's mode and owner, a stale file replaced, the file
//! removed at exit ([`UnixFiles`]).

use std::io;

use socket2::{Domain, SockAddr, Socket, Type};

use super::{Bound, SocketKind, UNIX_ADDR};

/// `unix:/PATH?mode=660&owner=U&group=G`.
///
/// - The socket file gets `mode` (octal; default: what the umask leaves) and the owner
///   and group given (names or numbers; changing the owner needs root), set before the
///   socket listens, so nobody connects through looser rights.
/// - A file already at the path is removed only if it is a socket nobody listens on (a
///   connection to it is refused): the leftover of a process that died. A live socket is
///   "address in use"; anything else is refused and left alone.
/// - The file is removed when sockhost exits (not when a thread-mode process hands its
///   sockets to a successor), if it is still the socket sockhost made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixBind {
    pub path: std::path::PathBuf,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl UnixBind {
    pub(super) fn parse(s: &str, rest: &str) -> Result<UnixBind, String> {
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(format!("{s:?}: expected unix:/PATH"));
        }
        if path.len() >= 108 {
            return Err(format!(
                "{s:?}: a Unix socket path must be shorter than 108 bytes"
            ));
        }
        let mut bind = UnixBind {
            path: path.into(),
            mode: None,
            owner: None,
            group: None,
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("mode", m)) => {
                    bind.mode = Some(
                        u32::from_str_radix(m, 8)
                            .ok()
                            .filter(|m| *m <= 0o777)
                            .ok_or_else(|| format!("{s:?}: mode must be octal, 000-777"))?,
                    )
                }
                Some(("owner" | "user", u)) if !u.is_empty() => bind.owner = Some(u.into()),
                Some(("group", g)) if !g.is_empty() => bind.group = Some(g.into()),
                _ => {
                    return Err(format!(
                        "{s:?}: unknown {pair:?} (accepted: mode=660, owner=USER, group=GROUP)"
                    ))
                }
            }
        }
        Ok(bind)
    }
}

/// Bind and listen on a Unix socket, after clearing a stale file; mode and owner are set
/// before `listen`.
pub(super) fn bind_unix(unix: &UnixBind, backlog: i32) -> io::Result<Bound> {
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
