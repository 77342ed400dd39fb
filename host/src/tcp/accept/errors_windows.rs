//! `accept` errors on Windows (Winsock codes, as `raw_os_error` reports them), sorted as
//! their Unix counterparts are.

use std::io;

use super::AcceptError;

const WSAEINTR: i32 = 10004;
const WSAEMFILE: i32 = 10024;
const WSAENETDOWN: i32 = 10050;
const WSAECONNABORTED: i32 = 10053;
const WSAECONNRESET: i32 = 10054;
const WSAENOBUFS: i32 = 10055;

/// What kind of failure `e` is.
pub fn classify(e: &io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(WSAECONNRESET | WSAECONNABORTED | WSAEINTR) => AcceptError::PeerGone,
        Some(WSAEMFILE | WSAENOBUFS | WSAENETDOWN) => AcceptError::OutOfResources,
        _ => AcceptError::Other,
    }
}
