//! `sockhost check` on Windows: refused (it loads each plugin in a forked child, and
//! Windows has no `fork`).

use crate::config::Given;
use crate::error::HostError;

/// Refuse with one `error:` line.
pub fn run(_given: &Given<'_>) -> Result<(), HostError> {
    Err(HostError::Unsupported(
        "sockhost check is supported on Unix only".into(),
    ))
}
