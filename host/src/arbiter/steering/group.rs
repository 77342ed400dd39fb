//! The arbiter's mirror of a SO_REUSEPORT group's array of sockets (the kernel's index of
//! each slot's socket, which the program returns).

use nix::unistd::Pid;

use super::bpf::Insn;

/// A socket in a group, as the kernel's array holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Member {
    /// The socket of this slot.
    Slot(usize),
    /// A removed slot's socket, still open in these workers (it leaves the group when the
    /// last of them has closed it).
    Leaving(Vec<Pid>),
}

/// The arbiter's mirror of one SO_REUSEPORT group's array of listening sockets.
#[derive(Debug, Default)]
pub struct Group {
    members: Vec<Member>,
    /// The program attached last (so an unchanged one is not attached again).
    attached: Option<Vec<Insn>>,
}

impl Group {
    /// Slot `slot`'s socket joined the group (TCP: started listening; UDP: was bound).
    pub fn join(&mut self, slot: usize) {
        self.members.push(Member::Slot(slot));
    }

    /// Slot `slot`'s socket is no longer the slot's: it leaves the group once `holders`
    /// (the workers that still have it open) are gone; now if there are none.
    pub fn release(&mut self, slot: usize, holders: Vec<Pid>) {
        if let Some(i) = self.members.iter().position(|m| *m == Member::Slot(slot)) {
            if holders.is_empty() {
                self.members.swap_remove(i);
            } else {
                self.members[i] = Member::Leaving(holders);
            }
        }
    }

    /// Worker `pid` has closed its sockets (it exited, or stopped accepting).
    pub fn closed_by(&mut self, pid: Pid) {
        for m in &mut self.members {
            if let Member::Leaving(holders) = m {
                holders.retain(|h| *h != pid);
            }
        }
        while let Some(i) = self
            .members
            .iter()
            .position(|m| matches!(m, Member::Leaving(h) if h.is_empty()))
        {
            self.members.swap_remove(i);
        }
    }

    /// The kernel's index of each slot's socket, for `slots` slots (`None` if the mirror
    /// lacks one, which would be a bug: then nothing is steered).
    pub fn indices(&self, slots: usize) -> Option<Vec<u32>> {
        (0..slots)
            .map(|s| {
                self.members
                    .iter()
                    .position(|m| *m == Member::Slot(s))
                    .map(|i| i as u32)
            })
            .collect()
    }

    /// Whether `program` differs from the one attached last.
    pub fn needs(&self, program: &[Insn]) -> bool {
        self.attached.as_deref() != Some(program)
    }

    /// Record that `program` is attached.
    pub fn attached(&mut self, program: Vec<Insn>) {
        self.attached = Some(program);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_mirror_follows_the_kernels_swap_remove() {
        let mut g = Group::default();
        for s in 0..4 {
            g.join(s);
        }
        assert_eq!(g.indices(4), Some(vec![0, 1, 2, 3]));
        // Slot 3 removed while a worker still holds its socket; a new slot 3 joins.
        g.release(3, vec![Pid::from_raw(77)]);
        g.join(3);
        assert_eq!(g.indices(4), Some(vec![0, 1, 2, 4]));
        g.closed_by(Pid::from_raw(77));
        assert_eq!(g.indices(4), Some(vec![0, 1, 2, 3]));
        // Slot 1's socket replaced: the last one fills its place, the new one goes last.
        g.release(1, vec![]);
        g.join(1);
        assert_eq!(g.indices(4), Some(vec![0, 3, 2, 1]));
        assert_eq!(g.indices(5), None);
    }
}
