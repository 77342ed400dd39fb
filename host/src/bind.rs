//! `--bind` address forms and the sockets made from them.
//!
//! Forms (SPEC.md): `127.0.0.1:8070`, `[::1]:8070`, `localhost:8070` (one interface),
//! `:8070` (all interfaces: one dual-stack `[::]` socket where the system allows it, else
//! `0.0.0.0`), port `0` for a free port, and a `udp://` or `tcp://` prefix.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::HostError;

#[cfg_attr(unix, path = "bind/reuse_unix.rs")]
#[cfg_attr(windows, path = "bind/reuse_windows.rs")]
mod reuse;

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
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
        let (transport, rest) = if let Some(r) = s.strip_prefix("udp://") {
            (Transport::Udp, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (Transport::Tcp, r)
        } else if s.contains("://") {
            return Err(format!("{s:?}: unknown scheme (use tcp:// or udp://)"));
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
        }
    }
}

/// A bound (and, for TCP, listening) socket, non-blocking, ready to hand to an event loop
/// or to inherit across fork/exec.
#[derive(Debug)]
pub struct Bound {
    pub transport: Transport,
    pub socket: Socket,
    /// The address actually bound (the chosen port for port 0).
    pub local: SocketAddr,
}

impl Bound {
    /// Bind `spec`. With `reuseport` the socket can be joined by [`Bound::sibling`]s (an
    /// SO_REUSEPORT group, one socket per worker); the address is first probed without it, so
    /// that a port already in use is an error rather than a silent shared group.
    pub fn bind(spec: &BindSpec, backlog: i32, reuseport: bool) -> Result<Bound, HostError> {
        let addr = spec.resolve()?;
        let fail = |e: io::Error| HostError::Bind {
            spec: spec.to_string(),
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
        format!("listening on {}://{}", self.transport, self.local)
    }
}

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
