//! `--user` / `--group`: resolved first (so a typo is a startup `error:`), applied after
//! the sockets are bound and before the plugin is loaded: in each worker after fork (process
//! mode), or in the one process itself (thread mode, and its successor on reload).

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::HostError;

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
            .map_err(|e| HostError::Privileges(format!("--user {u}: {e}")))?
            .ok_or_else(|| HostError::Privileges(format!("--user {u}: no such user")))?;
            uid = Some(found.uid);
            gid = Some(found.gid);
        }
        if let Some(g) = group {
            let found = match g.parse::<u32>() {
                Ok(n) => Group::from_gid(Gid::from_raw(n)),
                Err(_) => Group::from_name(g),
            }
            .map_err(|e| HostError::Privileges(format!("--group {g}: {e}")))?
            .ok_or_else(|| HostError::Privileges(format!("--group {g}: no such group")))?;
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
    pub fn apply(&self) -> Result<(), String> {
        if let Some(gid) = self.gid {
            if Uid::effective().is_root() {
                nix::unistd::setgroups(&[gid])
                    .map_err(|e| format!("cannot drop supplementary groups: {e}"))?;
            }
            nix::unistd::setgid(gid).map_err(|e| format!("cannot switch to group {gid}: {e}"))?;
        }
        if let Some(uid) = self.uid {
            nix::unistd::setuid(uid)
                .map_err(|e| format!("cannot switch to user {} ({uid}): {e}", self.name))?;
            if uid != Uid::from_raw(0) && (Uid::effective().is_root() || Uid::current().is_root()) {
                return Err(format!(
                    "still root after switching to {}; refusing to serve",
                    self.name
                ));
            }
        }
        Ok(())
    }
}
