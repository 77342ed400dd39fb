//! Each slot's listening sockets: made at startup and on TTIN (siblings of slot 0's in the
//! same SO_REUSEPORT groups), and replaced when a slot left without a worker hands its
//! queued connections to the others.

use std::time::Instant;

use super::shell::Arbiter;
use super::steering;
use crate::bind::{Bound, SocketKind};
use crate::error::HostError;

/// One worker position's sockets (one per `--bind`).
pub struct ListenerSlot {
    pub sockets: Vec<Bound>,
    /// Its sockets are ours to replace (not inherited from systemd, which holds them too).
    replaceable: bool,
}

impl Arbiter<'_> {
    /// A slot with these sockets, for the shell and the supervisor.
    pub(super) fn add_slot(&mut self, sockets: Vec<Bound>, replaceable: bool) {
        self.slots.push(ListenerSlot {
            sockets,
            replaceable,
        });
        self.supervisor.slot_added(Instant::now());
    }

    /// A stop: every slot's TCP sockets take no new connections from now on (attempts are
    /// dropped, then refused once the workers close them), so that the workers can serve
    /// the connections already queued before closing them, instead of the close resetting
    /// them ([`crate::tcp::refuse`]); then the arbiter drops its copies. Sockets inherited
    /// from systemd are left alone: systemd keeps them (and their queues) open for the next
    /// start.
    pub(super) fn close_for_good(&mut self) {
        let ours = self.slots.first().is_some_and(|s| s.replaceable);
        let tcp = self
            .slots
            .iter()
            .flat_map(|s| &s.sockets)
            .filter(|b| ours && b.transport == SocketKind::Tcp);
        for b in tcp {
            if let Err(e) = crate::tcp::refuse::refuse_new_connections(&b.socket) {
                tracing::warn!(local = %b.local, "stopping: cannot stop new connections before the queued ones are served ({e}); closing resets those");
            }
        }
        self.slots.clear();
    }

    /// One more slot, with new sockets in the same SO_REUSEPORT groups as slot 0's. A socket
    /// that cannot have siblings (inherited from systemd without `ReusePort=yes`) is shared
    /// by every slot instead: it works, but its accept queue is one for all workers.
    pub(super) fn add_sibling_slot(&mut self) -> Result<(), HostError> {
        let mut sockets = Vec::with_capacity(self.slots[0].sockets.len());
        let mut own = Vec::with_capacity(sockets.capacity());
        for b in &self.slots[0].sockets {
            match b.sibling(self.config.backlog) {
                Ok(sibling) => {
                    sockets.push(sibling);
                    own.push(true);
                }
                // One socket (and accept queue) for all workers: Unix sockets have no
                // SO_REUSEPORT groups (nor steering).
                Err(_) if b.transport == SocketKind::Unix => {
                    sockets.push(b.share().map_err(|e| {
                        HostError::io(format!("sharing the socket {}", b.listening_line()), e)
                    })?);
                    own.push(false);
                }
                Err(e) => {
                    tracing::warn!(local = %b.local, "cannot add a SO_REUSEPORT socket ({e}); workers share this one (for systemd sockets, set ReusePort=yes)");
                    let shared = b.socket.try_clone().map_err(|e| {
                        HostError::io(format!("sharing the socket for {}", b.local), e)
                    })?;
                    sockets.push(Bound {
                        transport: b.transport,
                        socket: shared,
                        local: b.local,
                        path: b.path.clone(),
                    });
                    own.push(false);
                }
            }
        }
        // Only now that every socket exists (an error above closes them all again).
        let slot = self.slots.len();
        for (bind, own) in own.into_iter().enumerate() {
            self.steering.join(slot, bind, own);
        }
        self.add_slot(sockets, true);
        Ok(())
    }

    /// Slot `slot` may have lost its last worker: hand the connections waiting in its TCP
    /// accept queues to the other slots, where the kernel can move them. Shutting a listening
    /// socket down moves its queue to the group's other listeners when
    /// `net.ipv4.tcp_migrate_req` is 1 (Linux ≥ 5.14), and resets it otherwise; so only then
    /// is the slot given new sockets. Otherwise its queue waits for the slot's next worker.
    /// (The supervisor asks only while running, for a slot with no worker while others
    /// serve.)
    pub(super) fn move_queued(&mut self, slot: usize) {
        if !self.slots.get(slot).is_some_and(|s| s.replaceable)
            || !steering::kernel_migrates_queues()
        {
            return;
        }
        let mut moved = 0;
        for bind in 0..self.slots[slot].sockets.len() {
            let old = &self.slots[slot].sockets[bind];
            if old.transport != SocketKind::Tcp || !self.steering.steered(bind) {
                continue;
            }
            // Bound, not yet listening: it joins the group (and could be picked as a target
            // for the moved connections) only at `listen`, after the old one is shut down.
            let new = match old.sibling_unlistened() {
                Ok(new) => new,
                Err(e) => {
                    tracing::warn!(slot, local = %old.local, "cannot replace the socket of a slot without workers ({e}); its queued connections wait for its next worker");
                    continue;
                }
            };
            let queued = steering::queued(&old.socket);
            if let Err(e) = old.socket.shutdown(std::net::Shutdown::Read) {
                tracing::warn!(slot, local = %old.local, "cannot shut down the socket of a slot without workers ({e}); its queued connections wait for its next worker");
                continue;
            }
            let listening = new.socket.listen(self.config.backlog);
            if let Err(e) = &listening {
                tracing::error!(slot, local = %new.local, "cannot listen on the new socket of a slot ({e}); its next worker will not accept there");
            }
            self.steering.replaced(slot, bind, listening.is_ok());
            self.slots[slot].sockets[bind] = new;
            moved += queued;
        }
        if moved > 0 {
            tracing::info!(
                slot,
                "slot has no worker: its {moved} queued connection(s) moved to the other workers (net.ipv4.tcp_migrate_req=1)"
            );
        }
    }
}
