//! [`Bound`]: the socket a `--bind` makes (TCP listening, UDP bound, or Unix), and its
//! SO_REUSEPORT siblings.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::reuse;
use super::unix_socket::bind_unix;
use super::{BindSpec, Host, SocketKind};
use crate::error::HostError;

/// A bound (and, for TCP, listening) socket, non-blocking, ready to hand to an event loop
/// or to inherit across fork/exec.
#[derive(Debug)]
pub struct Bound {
    pub transport: SocketKind,
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
        if self.transport == SocketKind::Unix {
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
    transport: SocketKind,
    addr: SocketAddr,
    dual_stack: bool,
    // `None`: a TCP socket is bound but does not listen yet.
    backlog: Option<i32>,
    reuseport: bool,
) -> io::Result<Bound> {
    let (ty, proto) = match transport {
        SocketKind::Tcp => (Type::STREAM, Protocol::TCP),
        SocketKind::Udp => (Type::DGRAM, Protocol::UDP),
        SocketKind::Unix => return Err(io::Error::other("a Unix socket is bound by bind_unix")),
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    reuse::set_reuse(&socket, transport, reuseport)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    if let (SocketKind::Tcp, Some(backlog)) = (transport, backlog) {
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
