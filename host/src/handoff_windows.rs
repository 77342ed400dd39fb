//! Socket inheritance on Windows: none. There is no systemd socket activation and no
//! reload successor (no HUP), so every socket is bound by the process itself.

use crate::bind::{BindSpec, Bound};
use crate::error::HostError;

/// Sockets handed over by a predecessor: never any on Windows.
pub fn inherited(_binds: &[BindSpec]) -> Result<Option<Vec<Option<Bound>>>, HostError> {
    Ok(None)
}
