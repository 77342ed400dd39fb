//! Process mode on Windows: refused. It pre-forks workers that share the listening
//! sockets, and Windows has no `fork`; thread mode (the default there) serves instead.

use crate::cli::Config;
use crate::error::HostError;

/// Refuse process mode with one line saying what to use instead.
pub fn run(_config: &Config) -> Result<(), HostError> {
    Err(HostError::Unsupported(
        "--concurrency process needs fork and is Unix only; use --concurrency thread (the default on Windows)".into(),
    ))
}
