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
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use crate::error::HostError;

pub use socket::{canonical, Bound, UNIX_ADDR};
pub use unix::UnixBind;
pub use unix_socket::UnixFiles;

#[cfg_attr(unix, path = "reuse_unix.rs")]
#[cfg_attr(windows, path = "reuse_windows.rs")]
mod reuse;
mod socket;
mod unix;
#[cfg_attr(unix, path = "unix_socket_unix.rs")]
#[cfg_attr(windows, path = "unix_socket_windows.rs")]
mod unix_socket;

/// The kind of socket a `--bind` makes: TCP, UDP, or a Unix-domain stream socket (served
/// as TCP is). Not [`plugin_api::Transport`], which is what a plugin serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketKind {
    Tcp,
    Udp,
    Unix,
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketKind::Tcp => "tcp",
            SocketKind::Udp => "udp",
            SocketKind::Unix => "unix",
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
    /// A Unix-domain socket's path (transport [`SocketKind::Unix`], port 0).
    Unix(UnixBind),
}

/// One parsed `--bind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindSpec {
    pub transport: SocketKind,
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
                transport: SocketKind::Unix,
                host: Host::Unix(UnixBind::parse(s, rest)?),
                port: 0,
            });
        }
        let (transport, rest) = if let Some(r) = s.strip_prefix("udp://") {
            (SocketKind::Udp, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (SocketKind::Tcp, r)
        } else if s.contains("://") {
            return Err(format!(
                "{s:?}: unknown scheme (use tcp://, udp:// or unix:)"
            ));
        } else {
            (SocketKind::Tcp, s)
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
    #[cfg(unix)] // Unix-domain sockets are refused on Windows.
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
