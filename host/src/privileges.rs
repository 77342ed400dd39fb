//! `--user` / `--group`: resolved first (so a typo is a startup `error:`), applied after
//! the sockets are bound and before the plugin is loaded: in each worker after fork (process
//! mode), or in the one process itself (thread mode, and its successor on reload).
//!
//! Linux only: elsewhere `privileges_other.rs` refuses the flags.

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{HostError, PrivilegeError};

/// The identity workers switch to.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
}

impl Identity {
    /// Resolve names (or numeric ids). `None` when neither flag is given.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, HostError> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let mut uid = None;
        let mut gid = None;
        if let Some(u) = user {
            let found = match u.parse::<u32>() {
                Ok(n) => User::from_uid(Uid::from_raw(n)),
                Err(_) => User::from_name(u),
            }
            .map_err(|source| PrivilegeError::Lookup {
                flag: "--user",
                name: u.to_string(),
                source,
            })?
            .ok_or_else(|| PrivilegeError::NoSuchUser(u.to_string()))?;
            uid = Some(found.uid);
            gid = Some(found.gid);
        }
        if let Some(g) = group {
            let found = match g.parse::<u32>() {
                Ok(n) => Group::from_gid(Gid::from_raw(n)),
                Err(_) => Group::from_name(g),
            }
            .map_err(|source| PrivilegeError::Lookup {
                flag: "--group",
                name: g.to_string(),
                source,
            })?
            .ok_or_else(|| PrivilegeError::NoSuchGroup(g.to_string()))?;
            gid = Some(found.gid);
        }
        let name = [user, group]
            .iter()
            .flatten()
            .copied()
            .collect::<Vec<_>>()
            .join(":");
        Ok(Some(Identity { name, uid, gid }))
    }

    /// Switch this process (a worker, or thread mode's process). Refuses to go on as root if
    /// the switch fails. The kernel then clears the parent-death signal (process mode arms
    /// it again) and makes the process non-dumpable (kept: its memory held root's keys).
    pub fn apply(&self) -> Result<(), PrivilegeError> {
        if let Some(gid) = self.gid {
            if Uid::effective().is_root() {
                nix::unistd::setgroups(&[gid]).map_err(PrivilegeError::DropGroups)?;
            }
            nix::unistd::setgid(gid).map_err(|source| PrivilegeError::SetGroup { gid, source })?;
        }
        if let Some(uid) = self.uid {
            nix::unistd::setuid(uid).map_err(|source| PrivilegeError::SetUser {
                name: self.name.clone(),
                uid,
                source,
            })?;
            if uid != Uid::from_raw(0) && (Uid::effective().is_root() || Uid::current().is_root()) {
                return Err(PrivilegeError::StillRoot(self.name.clone()));
            }
        }
        Ok(())
    }
}
