//! `unix:/PATH` binds: what the spelling says (the socket file's mode and owner). Binding
//! them is platform code (`unix_socket_unix.rs`; refused on Windows).

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
