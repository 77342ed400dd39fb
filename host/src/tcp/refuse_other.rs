//! Outside Linux a listening socket cannot be made to refuse new connections while its
//! queue is served (no socket filters): a stop closes it, which resets the connections
//! still queued. Only Linux's thread mode asks ([`crate::worker::Worker`]).

use std::io;

/// Not available here.
pub fn refuse_new_connections(_socket: &socket2::Socket) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}
