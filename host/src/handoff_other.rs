//! Socket inheritance outside Linux: none. There is no systemd socket activation and no
//! reload successor, so every socket is bound by the process itself.

use crate::bind::{BindSpec, Bound};
use crate::error::HostError;

/// Sockets handed over by a predecessor: never any outside Linux.
pub fn inherited(_binds: &[BindSpec]) -> Result<Option<Vec<Option<Bound>>>, HostError> {
    Ok(None)
}

/// Whether systemd holds the inherited sockets: there are none outside Linux.
pub fn systemd_holds_sockets() -> bool {
    false
}

/// Whether the sockets come from a reload's predecessor: never outside Linux.
pub fn from_predecessor() -> bool {
    false
}
