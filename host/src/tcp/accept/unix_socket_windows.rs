//! Unix-domain listeners on Windows: none (`--bind unix:` is refused when binding; tokio
//! has no AF_UNIX streams there).

use std::io;

use plugin_api::ConnInfo;

use super::Acceptor;

/// A Unix-domain listener: cannot be made on Windows.
pub enum Unix {}

impl Unix {
    /// Always an error: no Unix socket is ever bound on Windows.
    pub fn from_socket(_socket: socket2::Socket) -> io::Result<Unix> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Unix sockets are not supported on Windows",
        ))
    }
}

impl Acceptor for Unix {
    type Stream = tokio::net::TcpStream;
    const TRANSPORT: &'static str = "unix";

    async fn next(&self) -> io::Result<(Self::Stream, ConnInfo)> {
        match *self {}
    }
}
