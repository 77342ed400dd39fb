//! systemd's readiness protocol (`sd_notify`): when `NOTIFY_SOCKET` is set, state changes
//! are sent to it as datagrams — `READY=1` once serving, `RELOADING=1` (with
//! `MONOTONIC_USEC`, as `Type=notify-reload` requires) when a reload starts and `READY=1`
//! when it ends, `STOPPING=1` when a stop begins. Only the process systemd supervises says
//! these: the arbiter in process mode (workers never do), the serving process in thread
//! mode, where a reload's successor also sends `MAINPID` (the unit needs `NotifyAccess=all`).
//!
//! Best effort: a failure to notify is logged at debug level and otherwise ignored.
//!
//! Linux only (systemd).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send `state` (newline-separated `KEY=VALUE` assignments) if systemd is listening.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        tracing::debug!("sd_notify {state:?}: {e}");
    }
}

/// `READY=1` with this process as the main one.
pub fn ready() {
    notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving",
        std::process::id()
    ));
}

/// `RELOADING=1` with the monotonic timestamp systemd asks for.
pub fn reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=reloading"
    ));
}

/// `STOPPING=1`.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping");
}
