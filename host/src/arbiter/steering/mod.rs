//! Steering: which slot's socket the kernel gives a new connection (or UDP datagram) to.
//!
//! Without help, the kernel spreads a `SO_REUSEPORT` group's traffic over *every* socket in
//! it by a hash of the 4-tuple. The arbiter holds every slot's socket, so a slot whose worker
//! is dead, restarting, failing to start or hung still gets its share, and those connections
//! wait in its accept queue. Measured before this module with `bench/down-slot.py` (2
//! workers, 100 new connections each given 1 s): with one worker hung, 73 answered in time
//! (the rest waited for `--timeout`); with one slot's replacement failing to start, 50–56.
//! With it: 100 and 100.
//!
//! So the arbiter attaches a classic-BPF program to each group (`SO_ATTACH_REUSEPORT_CBPF`;
//! no privileges needed, Linux ≥ 4.5) and attaches a new one whenever the set of *live*
//! slots changes. The program returns an index into the kernel's array of the group's
//! sockets:
//!
//! 1. hash the peer's source address and port (IPv4, or IPv6 without extension headers),
//!    keyed with a random seed chosen at startup (so a peer cannot pick its worker);
//! 2. `slot = hash % slots`: with every slot live this is the whole mapping — an even,
//!    per-peer spread like the kernel's own hash, and a UDP peer stays on its worker;
//! 3. if that slot is down, `live[(hash / slots) % live.len()]`: only the peers of a down
//!    slot move (to the live slots, evenly), everyone else keeps their worker; they move
//!    back when it serves again.
//!
//! A program's index means "the kernel's i-th listening socket of the group", which is not
//! necessarily slot i: the kernel appends a socket when it joins the group (TCP: `listen`,
//! UDP: `bind`) and, when one leaves (its last descriptor closed, or a listener shut down),
//! moves the *last* socket into the hole. [`Group`] mirrors that array. Every change to it
//! is made or observed by the arbiter (it creates every socket and knows when the last
//! process holding one is gone), so the mirror stays exact; in the instant between a
//! socket's close and the arbiter noticing, at most the indices of the two sockets involved
//! are wrong, and an index past the end makes the kernel fall back to its own hash.
//!
//! A program that returns an index past the end, or a group we cannot steer (one socket
//! shared by every worker, as with a systemd socket without `ReusePort=yes`), behaves
//! exactly like no program.

//!
//! The module by concept: [`bpf`] builds the program for a layout, [`kernel`] attaches it
//! (and asks the kernel about accept queues), [`group`] mirrors a group's array of sockets,
//! and [`Steering`] here keeps one group per `--bind` and re-attaches on change.

mod bpf;
mod group;
mod kernel;
#[cfg(test)]
mod tests;

use nix::unistd::Pid;

use crate::bind::Bound;
use bpf::{kernel_choice, Layout};
use group::Group;
use kernel::attach;
pub use kernel::{kernel_migrates_queues, queued};

/// Steering for every `--bind` of the arbiter: one [`Group`] per bind.
pub struct Steering {
    /// Keys the peer hash; fixed for the arbiter's life, so a peer's home slot is too.
    seed: u32,
    /// One per `--bind`; `None` where the sockets are not a group we can steer.
    groups: Vec<Option<Group>>,
    /// Binds whose steering just ended: their program is to be made a no-op.
    ended: Vec<usize>,
}

impl Steering {
    /// Start with slot 0's sockets. A socket without `SO_REUSEPORT` (inherited from systemd
    /// without `ReusePort=yes`) is shared by every worker: nothing to steer there.
    pub fn new(first: &[Bound]) -> Steering {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        let groups = first
            .iter()
            .map(|b| {
                b.socket.reuse_port().unwrap_or(false).then(|| {
                    let mut g = Group::default();
                    g.join(0);
                    g
                })
            })
            .collect();
        Steering {
            seed: seed as u32,
            groups,
            ended: Vec::new(),
        }
    }

    /// Slot `slot`'s socket for bind `bind` joined its group; `own: false` if it is slot
    /// 0's socket shared (no sibling could be made), which ends steering for that bind.
    pub fn join(&mut self, slot: usize, bind: usize, own: bool) {
        if !own {
            if self.groups[bind].take().is_some() {
                self.ended.push(bind);
            }
        } else if let Some(g) = &mut self.groups[bind] {
            g.join(slot);
        }
    }

    /// Whether bind `bind`'s sockets are steered (a group of one socket per slot).
    pub fn steered(&self, bind: usize) -> bool {
        self.groups[bind].is_some()
    }

    /// Slot `slot` is removed: its sockets leave their groups once `holders` are gone.
    pub fn release(&mut self, slot: usize, holders: &[Pid]) {
        for g in self.groups.iter_mut().flatten() {
            g.release(slot, holders.to_vec());
        }
    }

    /// Slot `slot`'s socket for bind `bind` was shut down and a new one made, which joined
    /// the group if it is `listening`.
    pub fn replaced(&mut self, slot: usize, bind: usize, listening: bool) {
        if let Some(g) = &mut self.groups[bind] {
            g.release(slot, Vec::new());
            if listening {
                g.join(slot);
            }
        }
    }

    /// Worker `pid` has closed its sockets.
    pub fn closed_by(&mut self, pid: Pid) {
        for g in self.groups.iter_mut().flatten() {
            g.closed_by(pid);
        }
    }

    /// Attach, where it changed, the program that sends new connections to the `live`
    /// slots only. `anchors` are slot 0's sockets (any socket of a group reaches it). A
    /// group that cannot be steered is left to the kernel's hash, with one warning.
    pub fn apply(&mut self, live: &[bool], anchors: &[Bound]) {
        // A program left attached would go on steering by a stale layout.
        for bind in self.ended.drain(..) {
            let _ = attach(&anchors[bind].socket, &kernel_choice());
        }
        for (group, anchor) in self.groups.iter_mut().zip(anchors) {
            let Some(g) = group else { continue };
            let program = g
                .indices(live.len())
                .map(|index| Layout {
                    seed: self.seed,
                    index,
                    live: live.to_vec(),
                })
                .and_then(|layout| layout.program());
            let Some(program) = program else {
                tracing::warn!(local = %anchor.local, slots = live.len(), "cannot steer new connections (too many workers, or a slot without a listening socket); the kernel spreads them over every worker");
                let _ = attach(&anchor.socket, &kernel_choice());
                *group = None;
                continue;
            };
            if !g.needs(&program) {
                continue;
            }
            match attach(&anchor.socket, &program) {
                Ok(()) => g.attached(program),
                Err(e) => {
                    tracing::warn!(local = %anchor.local, "cannot attach the SO_REUSEPORT steering program ({e}); new connections are spread over every worker, including one that is down");
                    let _ = attach(&anchor.socket, &kernel_choice());
                    *group = None;
                }
            }
        }
    }
}
