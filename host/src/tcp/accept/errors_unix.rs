//! `accept(2)` errors on Unix, sorted by what the accept loop does about them.

use std::io;

use nix::errno::Errno;

use super::AcceptError;

/// What kind of failure `e` is.
pub fn classify(e: &io::Error) -> AcceptError {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ECONNABORTED | Errno::EINTR | Errno::EPROTO | Errno::EPERM) => {
            AcceptError::PeerGone
        }
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
            AcceptError::OutOfResources
        }
        _ => AcceptError::Other,
    }
}
