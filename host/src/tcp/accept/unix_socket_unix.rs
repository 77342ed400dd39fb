//! Unix-domain stream listeners (`--bind unix:/PATH`).

use std::io;

use plugin_api::{ConnInfo, Transport};
use tokio::net::UnixListener;

use super::Acceptor;

/// A Unix-domain listener. `ConnInfo` (a frozen ABI) has IP addresses only, so a Unix
/// peer is `transport: Tcp` (a stream) with `peer` and `local` both `0.0.0.0:0`
/// ([`crate::bind::UNIX_ADDR`]); with `--proxy-protocol` the peer is the header's client,
/// as over TCP. The peer's credentials (pid, uid, gid from `SO_PEERCRED`) go to the debug
/// log only.
pub struct Unix(pub UnixListener);

impl Unix {
    /// Register a bound, listening Unix socket with the event loop.
    pub fn from_socket(socket: socket2::Socket) -> io::Result<Unix> {
        let std_listener: std::os::unix::net::UnixListener = socket.into();
        UnixListener::from_std(std_listener).map(Unix)
    }
}

impl Acceptor for Unix {
    type Stream = tokio::net::UnixStream;
    const TRANSPORT: &'static str = "unix";

    async fn next(&self) -> io::Result<(Self::Stream, ConnInfo)> {
        let (stream, _) = self.0.accept().await?;
        if let Ok(cred) = stream.peer_cred() {
            tracing::debug!(
                pid = cred.pid().unwrap_or(0),
                uid = cred.uid(),
                gid = cred.gid(),
                "unix connection accepted"
            );
        }
        let unix = crate::bind::UNIX_ADDR;
        Ok((stream, ConnInfo::new(Transport::Tcp, unix, unix)))
    }
}
