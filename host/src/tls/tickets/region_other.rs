//! The [`Secrets`] record outside Linux: thread mode only, so this process's own memory.

use std::io;

use super::secrets::Secrets;

/// A new, empty record, kept for the life of the process.
pub fn map() -> io::Result<&'static Secrets> {
    Ok(Box::leak(Box::default()))
}
