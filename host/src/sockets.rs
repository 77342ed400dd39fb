//! Every `--bind`'s socket for this process (both modes): inherited where one was handed
//! over (systemd socket activation, or a thread-mode predecessor), else bound here.

use crate::bind::{BindSpec, Bound, UnixFiles};
use crate::error::HostError;
use crate::handoff;

/// Every `--bind`'s socket, in order; and the Unix socket files this process is to remove
/// at exit: those it bound and those a predecessor handed over, never systemd's (its
/// socket unit owns the file, also when it reaches us through a predecessor).
pub fn bind_all(
    binds: &[BindSpec],
    backlog: i32,
    reuseport: bool,
) -> Result<(Vec<Bound>, UnixFiles), HostError> {
    let from_predecessor = handoff::from_predecessor();
    let inherited =
        handoff::inherited(binds)?.unwrap_or_else(|| binds.iter().map(|_| None).collect());
    let mut ours = Vec::new();
    let bound = binds
        .iter()
        .zip(inherited)
        .map(|(spec, inherited)| match inherited {
            Some(bound) => {
                ours.push(from_predecessor && !handoff::systemd_holds_sockets());
                Ok(bound)
            }
            None => {
                ours.push(true);
                Bound::bind(spec, backlog, reuseport)
            }
        })
        .collect::<Result<Vec<Bound>, HostError>>()?;
    let files = UnixFiles::of(bound.iter().zip(ours).filter(|(_, o)| *o).map(|(b, _)| b));
    Ok((bound, files))
}

/// The `--metrics-bind` listener of thread mode (served from the event loop).
pub fn bind_metrics(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, HostError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| HostError::Bind {
            spec: format!("--metrics-bind {addr}"),
            source: e,
        })
}
