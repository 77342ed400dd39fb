//! `--bind` address forms and the sockets made from them.
//!
//! Forms (SPEC.md): `127.0.0.1:8070`, `[::1]:8070`, `localhost:8070` (one interface),
//! `:8070` (all interfaces: one dual-stack `[::]` socket where the system allows it, else
//! `0.0.0.0`), port `0` for a free port, and a `udp://` or `tcp://` prefix.
//!
//! `unix:/PATH[?mode=660&owner=U&group=G]`: a Unix-domain stream socket (see [`UnixBind`]
//! for the file's mode and owner, what happens to a file already at the path, and its
//! removal at exit).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::HostError;

#[cfg_attr(unix, path = "bind/reuse_unix.rs")]
#[cfg_attr(windows, path = "bind/reuse_windows.rs")]
mod reuse;
#[cfg_attr(unix, path = "bind/unix_socket_unix.rs")]
#[cfg_attr(windows, path = "bind/unix_socket_windows.rs")]
mod unix_socket;
use unix_socket::bind_unix;
pub use unix_socket::UnixFiles;

/// TCP, UDP, or a Unix-domain stream socket (served as TCP is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Unix,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
        })
    }
}

/// Where a `--bind` asks to listen, before resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// `:PORT`: every interface, IPv4 and IPv6.
    All,
    /// A literal address.
    Ip(std::net::IpAddr),
    /// A name to resolve (`localhost`).
    Name(String),
    /// A Unix-domain socket's path (transport [`Transport::Unix`], port 0).
    Unix(UnixBind),
}

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
    fn parse(s: &str, rest: &str) -> Result<UnixBind, String> {
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

/// One parsed `--bind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindSpec {
    pub transport: Transport,
    pub host: Host,
    pub port: u16,
}

impl BindSpec {
    /// Parse one `--bind` value (clap's value parser).
    pub fn parse(s: &str) -> Result<BindSpec, String> {
        if let Some(rest) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            return Ok(BindSpec {
                transport: Transport::Unix,
                host: Host::Unix(UnixBind::parse(s, rest)?),
                port: 0,
            });
        }
        let (transport, rest) = if let Some(r) = s.strip_prefix("udp://") {
            (Transport::Udp, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (Transport::Tcp, r)
        } else if s.contains("://") {
            return Err(format!(
                "{s:?}: unknown scheme (use tcp://, udp:// or unix:)"
            ));
        } else {
            (Transport::Tcp, s)
        };
        let bad = || format!("{s:?}: expected HOST:PORT, [IPv6]:PORT or :PORT");
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: port must be 0-65535"))?;
        let host = if host.is_empty() {
            Host::All
        } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Host::Ip(v6.parse::<Ipv6Addr>().map_err(|_| bad())?.into())
        } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
            Host::Ip(ip.into())
        } else if host.contains(':') || host.contains('[') {
            return Err(bad());
        } else {
            Host::Name(host.to_string())
        };
        Ok(BindSpec {
            transport,
            host,
            port,
        })
    }

    /// The address to bind (a name resolves to its first IPv4 address, else its first one).
    pub fn resolve(&self) -> Result<SocketAddr, HostError> {
        match &self.host {
            Host::Unix(_) => Err(HostError::Resolve {
                spec: self.to_string(),
                reason: "a Unix socket has no IP address".to_string(),
            }),
            Host::All => Ok((Ipv6Addr::UNSPECIFIED, self.port).into()),
            Host::Ip(ip) => Ok((*ip, self.port).into()),
            Host::Name(name) => {
                let fail = |reason: String| HostError::Resolve {
                    spec: self.to_string(),
                    reason,
                };
                let addrs: Vec<SocketAddr> = (name.as_str(), self.port)
                    .to_socket_addrs()
                    .map_err(|e| fail(e.to_string()))?
                    .collect();
                addrs
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(addrs.first())
                    .copied()
                    .ok_or_else(|| fail("no address".to_string()))
            }
        }
    }
}

impl fmt::Display for BindSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::All => write!(f, "{}://:{}", self.transport, self.port),
            Host::Ip(ip) => write!(
                f,
                "{}://{}",
                self.transport,
                SocketAddr::from((*ip, self.port))
            ),
            Host::Name(n) => write!(f, "{}://{}:{}", self.transport, n, self.port),
            Host::Unix(u) => write!(f, "unix:{}", u.path.display()),
        }
    }
}

/// A bound (and, for TCP, listening) socket, non-blocking, ready to hand to an event loop
/// or to inherit across fork/exec.
#[derive(Debug)]
pub struct Bound {
    pub transport: Transport,
    pub socket: Socket,
    /// The address actually bound (the chosen port for port 0); `0.0.0.0:0` for a Unix
    /// socket.
    pub local: SocketAddr,
    /// A Unix socket's path.
    pub path: Option<std::path::PathBuf>,
}

impl Bound {
    /// Bind `spec`. With `reuseport` the socket can be joined by [`Bound::sibling`]s (an
    /// SO_REUSEPORT group, one socket per worker); the address is first probed without it, so
    /// that a port already in use is an error rather than a silent shared group.
    pub fn bind(spec: &BindSpec, backlog: i32, reuseport: bool) -> Result<Bound, HostError> {
        if let Host::Unix(unix) = &spec.host {
            return bind_unix(unix, backlog).map_err(|e| HostError::Bind {
                spec: format!("--bind {spec}"),
                source: e,
            });
        }
        let addr = spec.resolve()?;
        let fail = |e: io::Error| HostError::Bind {
            spec: format!("--bind {spec}"),
            source: e,
        };
        let dual_stack = spec.host == Host::All;
        let made = open(spec.transport, addr, dual_stack, Some(backlog), false);
        let made = match made {
            // No IPv6 on this machine: all interfaces means all IPv4 interfaces.
            Err(e) if dual_stack && e.raw_os_error() == Some(reuse::NO_ADDRESS_FAMILY) => {
                let v4 = (Ipv4Addr::UNSPECIFIED, spec.port).into();
                open(spec.transport, v4, false, Some(backlog), false)
            }
            other => other,
        };
        let probe = made.map_err(fail)?;
        if !reuseport {
            return Ok(probe);
        }
        // Re-bind the same (now known) address with SO_REUSEPORT for the worker group.
        let local = probe.local;
        drop(probe);
        open(spec.transport, local, dual_stack, Some(backlog), true).map_err(fail)
    }

    /// Another socket of this one's SO_REUSEPORT group (same address, own accept queue).
    #[cfg_attr(not(unix), allow(dead_code))] // process mode only
    pub fn sibling(&self, backlog: i32) -> io::Result<Bound> {
        if self.transport == Transport::Unix {
            return Err(io::Error::other("a Unix socket has no SO_REUSEPORT group"));
        }
        let dual_stack = self.local.is_ipv6() && self.local.ip().is_unspecified();
        open(self.transport, self.local, dual_stack, Some(backlog), true)
    }

    /// As [`Bound::sibling`], but a TCP socket is left bound and not yet listening: it joins
    /// the group only when the caller calls `listen`.
    #[cfg_attr(not(unix), allow(dead_code))] // process mode only
    pub fn sibling_unlistened(&self) -> io::Result<Bound> {
        let dual_stack = self.local.is_ipv6() && self.local.ip().is_unspecified();
        open(self.transport, self.local, dual_stack, None, true)
    }

    /// The `listening on ...` line.
    pub fn listening_line(&self) -> String {
        match &self.path {
            Some(path) => format!("listening on unix:{}", path.display()),
            None => format!("listening on {}://{}", self.transport, self.local),
        }
    }

    /// The same socket (a second descriptor), for a worker slot that shares it.
    pub fn share(&self) -> io::Result<Bound> {
        Ok(Bound {
            transport: self.transport,
            socket: self.socket.try_clone()?,
            local: self.local,
            path: self.path.clone(),
        })
    }
}

/// The placeholder address of a Unix socket's ends (what a plugin sees as `peer` and
/// `local`; `ConnInfo` has no room for a path).
pub const UNIX_ADDR: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

fn open(
    transport: Transport,
    addr: SocketAddr,
    dual_stack: bool,
    // `None`: a TCP socket is bound but does not listen yet.
    backlog: Option<i32>,
    reuseport: bool,
) -> io::Result<Bound> {
    let (ty, proto) = match transport {
        Transport::Tcp => (Type::STREAM, Protocol::TCP),
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
        Transport::Unix => return Err(io::Error::other("a Unix socket is bound by bind_unix")),
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    reuse::set_reuse(&socket, transport, reuseport)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    if let (Transport::Tcp, Some(backlog)) = (transport, backlog) {
        socket.listen(backlog)?;
    }
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    Ok(Bound {
        transport,
        socket,
        local,
        path: None,
    })
}

/// Reports IPv4 peers of a dual-stack socket as plain IPv4 (`::ffff:1.2.3.4` → `1.2.3.4`).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => (v4, v6.port()).into(),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let p = |s| BindSpec::parse(s).unwrap().to_string();
        assert_eq!(p("127.0.0.1:8070"), "tcp://127.0.0.1:8070");
        assert_eq!(p("[::1]:8070"), "tcp://[::1]:8070");
        assert_eq!(p("localhost:8070"), "tcp://localhost:8070");
        assert_eq!(p(":8070"), "tcp://:8070");
        assert_eq!(p("udp://:5353"), "udp://:5353");
        assert_eq!(p("tcp://127.0.0.1:0"), "tcp://127.0.0.1:0");
        assert_eq!(p("unix:/run/a.sock"), "unix:/run/a.sock");
        let u = BindSpec::parse("unix:/run/a.sock?mode=0660&owner=app&group=www").unwrap();
        assert_eq!(
            u.host,
            Host::Unix(UnixBind {
                path: "/run/a.sock".into(),
                mode: Some(0o660),
                owner: Some("app".into()),
                group: Some("www".into())
            })
        );
    }

    #[test]
    fn a_stale_unix_socket_is_replaced_and_a_live_one_or_a_file_is_not() {
        let dir = std::env::temp_dir().join(format!("sockhost-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let spec = BindSpec::parse(&format!("unix:{}?mode=600", path.display())).unwrap();
        let live = Bound::bind(&spec, 4, false).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let in_use = Bound::bind(&spec, 4, false).unwrap_err().to_string();
        assert!(in_use.contains("another process listens"), "{in_use}");
        drop(live); // the file stays: a stale socket
        assert!(path.exists());
        let again = Bound::bind(&spec, 4, false).unwrap();
        let files = UnixFiles::of([&again]);
        drop(files);
        assert!(!path.exists(), "removed at exit");
        std::fs::write(&path, b"data").unwrap();
        let refused = Bound::bind(&spec, 4, false).unwrap_err().to_string();
        assert!(refused.contains("not a socket"), "{refused}");
        assert!(path.exists(), "a regular file is left alone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_malformed_forms() {
        for bad in [
            "8070",
            "127.0.0.1",
            "::1:80",
            "[::1:80",
            "x://a:1",
            "a:70000",
            "[zz]:1",
            "unix:",
            "unix:/x?mode=999",
            "unix:/x?color=red",
        ] {
            assert!(BindSpec::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn all_interfaces_is_one_dual_stack_socket() {
        let b = Bound::bind(&BindSpec::parse(":0").unwrap(), 16, false).unwrap();
        assert!(b.local.ip().is_unspecified());
        if b.local.is_ipv6() {
            assert!(!b.socket.only_v6().unwrap());
        }
        assert!(b.listening_line().starts_with("listening on tcp://[::]:"));
    }

    #[test]
    fn reuseport_siblings_share_the_port() {
        let b = Bound::bind(&BindSpec::parse("127.0.0.1:0").unwrap(), 16, true).unwrap();
        let s = b.sibling(16).unwrap();
        assert_eq!(b.local, s.local);
        // Without SO_REUSEPORT the port is in use.
        let plain = BindSpec::parse(&format!("127.0.0.1:{}", b.local.port())).unwrap();
        assert!(matches!(
            Bound::bind(&plain, 16, true),
            Err(HostError::Bind { .. })
        ));
    }

    #[test]
    fn mapped_ipv4_peers_read_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "127.0.0.1:5".parse::<SocketAddr>().unwrap()
        );
    }
}
