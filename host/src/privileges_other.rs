//! `--user` / `--group` outside Linux: refused (no privilege drop there; on Windows run the
//! service as the account it should have).

use crate::error::HostError;

/// The identity workers switch to: none can be made outside Linux.
#[derive(Clone, Debug)]
pub enum Identity {}

impl Identity {
    /// `None` when neither flag is given; either flag is one `error:` line.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, HostError> {
        match (user, group) {
            (None, None) => Ok(None),
            (Some(_), _) => Err(HostError::Unsupported(
                "--user is supported on Linux only".into(),
            )),
            (None, Some(_)) => Err(HostError::Unsupported(
                "--group is supported on Linux only".into(),
            )),
        }
    }
}
