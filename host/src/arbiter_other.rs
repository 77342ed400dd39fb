//! Process mode outside Linux: refused. It pre-forks workers that share the listening
//! sockets: Windows has no `fork`, and macOS's `SO_REUSEPORT` does not balance connections
//! (and the arbiter uses Linux process APIs). Thread mode, the default there, serves instead.

use crate::cli::Config;
use crate::error::HostError;

/// Refuse process mode with one line saying what to use instead.
pub fn run(_config: &Config) -> Result<(), HostError> {
    Err(HostError::Unsupported(
        "--concurrency process is supported on Linux only; use --concurrency thread (the default on this platform)".into(),
    ))
}
