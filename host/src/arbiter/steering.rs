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

use std::os::fd::AsRawFd;

use nix::libc;
use nix::libc::{
    BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_DIV, BPF_H, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP,
    BPF_K, BPF_LD, BPF_LDX, BPF_MEM, BPF_MISC, BPF_MOD, BPF_MSH, BPF_MUL, BPF_RET, BPF_RSH, BPF_ST,
    BPF_TAX, BPF_W, BPF_X, BPF_XOR,
};
use nix::unistd::Pid;

use crate::bind::Bound;

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the libc crate does not define it).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
/// Classic BPF's limit on a program's length.
const MAX_INSNS: usize = 4096;
/// "No choice": past the end of any group, so the kernel uses its own hash.
const NO_CHOICE: u32 = u32::MAX;
/// `SKF_NET_OFF`: loads relative to the packet's network (IP) header.
const NET: u32 = libc::SKF_NET_OFF as u32;

/// One classic-BPF instruction (`struct sock_filter`, comparable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn insn(code: u32, k: u32) -> Insn {
    Insn {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// `A = fmix32(A ^ M[0]); M[0] = A` (MurmurHash3's finaliser), with X as scratch.
fn mix(p: &mut Vec<Insn>) {
    let shift_xor = |p: &mut Vec<Insn>, bits| {
        p.push(insn(BPF_MISC | BPF_TAX, 0));
        p.push(insn(BPF_ALU | BPF_RSH | BPF_K, bits));
        p.push(insn(BPF_ALU | BPF_XOR | BPF_X, 0));
    };
    p.push(insn(BPF_LDX | BPF_MEM, 0));
    p.push(insn(BPF_ALU | BPF_XOR | BPF_X, 0));
    shift_xor(p, 16);
    p.push(insn(BPF_ALU | BPF_MUL | BPF_K, 0x85eb_ca6b));
    shift_xor(p, 13);
    p.push(insn(BPF_ALU | BPF_MUL | BPF_K, 0xc2b2_ae35));
    shift_xor(p, 16);
    p.push(insn(BPF_ST, 0));
}

/// Which slots serve, and where each slot's socket sits in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub seed: u32,
    /// `index[s]`: the kernel's index of slot `s`'s socket in the group.
    pub index: Vec<u32>,
    /// `live[s]`: slot `s` has a worker accepting new connections.
    pub live: Vec<bool>,
}

impl Layout {
    /// The live slots; all of them if none is (then nothing is steered: the connections
    /// queue where they land until workers serve again, as without a program).
    fn live_slots(&self) -> Vec<usize> {
        let live: Vec<usize> = (0..self.live.len()).filter(|&s| self.live[s]).collect();
        if live.is_empty() {
            (0..self.live.len()).collect()
        } else {
            live
        }
    }

    /// The classic-BPF program for this layout; `None` if it would exceed the kernel's
    /// length limit (thousands of slots).
    pub fn program(&self) -> Option<Vec<Insn>> {
        let slots = self.live.len() as u32;
        if slots == 0 {
            return None;
        }
        let live = self.live_slots();
        let mut p = Vec::with_capacity(160 + 4 * self.live.len());

        // The peer hash into A (and M[0]). The first byte of the IP header: version 6 or 4.
        p.push(insn(BPF_LD | BPF_B | BPF_ABS, NET));
        p.push(insn(BPF_ALU | BPF_RSH | BPF_K, 4));
        let version_test = p.len();
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 0)); // jt patched below: to IPv6
        p.push(insn(BPF_LD | BPF_IMM, self.seed));
        p.push(insn(BPF_ST, 0));
        p.push(insn(BPF_LD | BPF_W | BPF_ABS, NET.wrapping_add(12))); // source address
        mix(&mut p);
        p.push(insn(BPF_LDX | BPF_B | BPF_MSH, NET)); // X = IPv4 header length
        p.push(insn(BPF_LD | BPF_H | BPF_IND, NET)); // source port
        mix(&mut p);
        let skip_v6 = p.len();
        p.push(insn(BPF_JMP | BPF_JA, 0)); // k patched below: past IPv6
        let v6 = p.len();
        p[version_test].jt = u8::try_from(v6 - version_test - 1).expect("short IPv4 block");
        p.push(insn(BPF_LD | BPF_IMM, self.seed));
        p.push(insn(BPF_ST, 0));
        for word in 0..4 {
            p.push(insn(
                BPF_LD | BPF_W | BPF_ABS,
                NET.wrapping_add(8 + 4 * word),
            ));
            mix(&mut p);
        }
        p.push(insn(BPF_LD | BPF_H | BPF_ABS, NET.wrapping_add(40))); // source port
        mix(&mut p);
        p[skip_v6].k = (p.len() - skip_v6 - 1) as u32;

        // The home slot; a down one jumps to the re-hash over the live slots.
        p.push(insn(BPF_ALU | BPF_MOD | BPF_K, slots));
        let mut to_rehash = Vec::new();
        for s in (0..slots as usize).filter(|s| !live.contains(s)) {
            p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, s as u32, 0, 1));
            to_rehash.push(p.len());
            p.push(insn(BPF_JMP | BPF_JA, 0)); // k patched below
        }
        let identity = live.iter().all(|&s| self.index[s] == s as u32);
        if identity {
            p.push(insn(BPF_RET | BPF_A, 0));
        } else {
            table(&mut p, live.iter().map(|&s| (s as u32, self.index[s])));
        }
        if !to_rehash.is_empty() {
            let rehash = p.len();
            for at in to_rehash {
                p[at].k = (rehash - at - 1) as u32;
            }
            p.push(insn(BPF_LD | BPF_MEM, 0));
            p.push(insn(BPF_ALU | BPF_DIV | BPF_K, slots));
            p.push(insn(BPF_ALU | BPF_MOD | BPF_K, live.len() as u32));
            table(
                &mut p,
                live.iter()
                    .enumerate()
                    .map(|(i, &s)| (i as u32, self.index[s])),
            );
        }
        (p.len() <= MAX_INSNS).then_some(p)
    }
}

/// `if A == key return value`, for each pair; then "no choice".
fn table(p: &mut Vec<Insn>, pairs: impl Iterator<Item = (u32, u32)>) {
    for (key, value) in pairs {
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, key, 0, 1));
        p.push(insn(BPF_RET | BPF_K, value));
    }
    p.push(insn(BPF_RET | BPF_K, NO_CHOICE));
}

/// The program that leaves every choice to the kernel (as if none were attached).
pub fn kernel_choice() -> Vec<Insn> {
    vec![insn(BPF_RET | BPF_K, NO_CHOICE)]
}

/// Attach `program` to the SO_REUSEPORT group `socket` belongs to (replacing the group's
/// previous program).
pub fn attach(socket: &impl AsRawFd, program: &[Insn]) -> std::io::Result<()> {
    let mut filters: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filters.len() as libc::c_ushort,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `filters`, which outlives the call; the kernel copies the
    // program and validates it; the descriptor is borrowed for the call only.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether shutting a listening socket down moves its queued connections to the other
/// listeners of its SO_REUSEPORT group (`net.ipv4.tcp_migrate_req`, per network namespace,
/// Linux ≥ 5.14) rather than resetting them.
pub fn kernel_migrates_queues() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

/// How many established connections wait in a TCP listener's accept queue (0 if unknown).
pub fn queued(listener: &impl AsRawFd) -> u32 {
    // SAFETY: `tcp_info` is plain data, valid zeroed; the kernel writes at most `len` bytes.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        // For a listener the kernel reports its accept queue's length as `unacked`.
        if rc == 0 {
            info.tcpi_unacked
        } else {
            0
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
    use std::time::Duration;

    /// The reference model of the program, in Rust: `mix` as a function.
    fn fmix(h: u32, word: u32) -> u32 {
        let mut h = h ^ word;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }

    /// The peer hash the program computes for a packet from `peer` (an IPv4 peer of a
    /// dual-stack socket arrives as IPv4, so pass it as such).
    fn peer_hash(seed: u32, peer: SocketAddr) -> u32 {
        let h = match peer.ip() {
            IpAddr::V4(ip) => fmix(seed, u32::from(ip)),
            IpAddr::V6(ip) => ip.octets().chunks(4).fold(seed, |h, w| {
                fmix(h, u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            }),
        };
        fmix(h, u32::from(peer.port()))
    }

    /// The reference model: the slot a peer with hash `h` is given (what
    /// [`Layout::program`] computes).
    fn slot_for(l: &Layout, h: u32) -> usize {
        let slots = l.live.len() as u32;
        let live = l.live_slots();
        let home = (h % slots) as usize;
        if live.contains(&home) {
            home
        } else {
            live[((h / slots) % live.len() as u32) as usize]
        }
    }

    fn layout(live: &[bool]) -> Layout {
        Layout {
            seed: 0x5eed_1234,
            index: (0..live.len() as u32).collect(),
            live: live.to_vec(),
        }
    }

    #[test]
    fn with_every_slot_live_each_peer_has_a_home_and_the_spread_is_even() {
        let l = layout(&[true; 4]);
        let mut per_slot = [0u32; 4];
        for port in 1000..9000u16 {
            let h = peer_hash(l.seed, (Ipv4Addr::new(10, 0, 0, 1), port).into());
            per_slot[slot_for(&l, h)] += 1;
        }
        for n in per_slot {
            assert!((1800..2200).contains(&n), "{per_slot:?}");
        }
    }

    #[test]
    fn only_the_peers_of_a_down_slot_move_and_they_spread_over_the_live_ones() {
        let all = layout(&[true; 4]);
        let one_down = layout(&[true, false, true, true]);
        let mut moved_to = [0u32; 4];
        for port in 1000..9000u16 {
            let h = peer_hash(all.seed, (Ipv4Addr::new(192, 0, 2, 7), port).into());
            let (before, after) = (slot_for(&all, h), slot_for(&one_down, h));
            if before == 1 {
                assert_ne!(after, 1);
                moved_to[after] += 1;
            } else {
                assert_eq!(before, after, "a peer of a live slot moved");
            }
        }
        assert_eq!(moved_to[1], 0);
        for s in [0, 2, 3] {
            assert!((500..850).contains(&moved_to[s]), "{moved_to:?}");
        }
    }

    #[test]
    fn programs_fit_the_kernel_limit_for_hundreds_of_slots() {
        let mut live = vec![true; 600];
        for s in (0..600).step_by(3) {
            live[s] = false;
        }
        let mut l = layout(&live);
        l.index.reverse();
        assert!(l.program().is_some());
        assert!(layout(&vec![false; 600]).program().is_some());
    }

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

    /// A real SO_REUSEPORT group of UDP sockets on loopback.
    fn udp_group(n: usize) -> Vec<UdpSocket> {
        udp_group_on("udp://127.0.0.1:0", n)
    }

    fn udp_group_on(bind: &str, n: usize) -> Vec<UdpSocket> {
        let first =
            crate::bind::Bound::bind(&crate::bind::BindSpec::parse(bind).unwrap(), 16, true)
                .unwrap();
        let mut group = vec![first];
        for _ in 1..n {
            let sibling = group[0].sibling(16).unwrap();
            group.push(sibling);
        }
        group
            .into_iter()
            .map(|b| {
                let s: UdpSocket = b.socket.into();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect()
    }

    /// Which socket of `group` each peer's datagram reaches.
    fn receivers(group: &[UdpSocket], peers: &[UdpSocket]) -> HashMap<SocketAddr, usize> {
        let to = crate::bind::canonical(group[0].local_addr().unwrap());
        let to = match (
            to.ip().is_unspecified(),
            peers[0].local_addr().unwrap().ip(),
        ) {
            (true, ip) => SocketAddr::new(ip, to.port()),
            _ => to,
        };
        let mut got = HashMap::new();
        // In batches: one socket may receive them all, and its buffer holds about 250.
        for batch in peers.chunks(50) {
            for p in batch {
                p.send_to(b"x", to).unwrap();
            }
            let want = got.len() + batch.len();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while got.len() < want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "datagrams lost: {} of {want}",
                    got.len()
                );
                for (i, s) in group.iter().enumerate() {
                    let mut buf = [0u8; 8];
                    while let Ok((_, from)) = s.recv_from(&mut buf) {
                        got.insert(crate::bind::canonical(from), i);
                    }
                }
            }
        }
        got
    }

    #[test]
    fn the_kernel_delivers_where_the_layout_says_and_never_to_a_down_slot() {
        let group = udp_group(4);
        let peers: Vec<UdpSocket> = (0..300)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for live in [
            vec![true, true, true, true],
            vec![true, false, true, true],
            vec![false, false, false, true],
        ] {
            let l = layout(&live);
            attach(&group[0], &l.program().unwrap()).unwrap();
            for (peer, socket) in receivers(&group, &peers) {
                let expected = slot_for(&l, peer_hash(l.seed, peer));
                assert_eq!(socket, expected, "peer {peer} with live slots {live:?}");
                assert!(live[socket]);
            }
        }
        // A shuffled array (as after sockets were replaced) is followed too.
        let mut l = layout(&[true, false, true, true]);
        l.index = vec![2, 0, 3, 1];
        attach(&group[1], &l.program().unwrap()).unwrap();
        for (peer, socket) in receivers(&group, &peers) {
            let slot = slot_for(&l, peer_hash(l.seed, peer));
            assert_eq!(socket as u32, l.index[slot], "peer {peer}");
        }
        // "No choice" falls back to the kernel's own spread over every socket.
        attach(&group[0], &kernel_choice()).unwrap();
        let reached: std::collections::HashSet<usize> =
            receivers(&group, &peers).into_values().collect();
        assert_eq!(reached.len(), 4);
    }

    #[test]
    fn ipv6_and_ipv4_peers_of_a_dual_stack_group_are_steered() {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipped: no IPv6 loopback");
            return;
        }
        let group = udp_group_on("udp://:0", 3);
        let l = layout(&[false, true, true]);
        attach(&group[0], &l.program().unwrap()).unwrap();
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let peers: Vec<UdpSocket> = (0..100).map(|_| UdpSocket::bind(local).unwrap()).collect();
            for (peer, socket) in receivers(&group, &peers) {
                assert_eq!(socket, slot_for(&l, peer_hash(l.seed, peer)), "peer {peer}");
            }
        }
    }

    #[test]
    fn queued_counts_the_connections_waiting_to_be_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(queued(&listener), 0);
        let addr = listener.local_addr().unwrap();
        let _clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // The handshake's last ACK may still be on its way through loopback: wait (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while queued(&listener) < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(queued(&listener), 3);
        drop(listener.accept().unwrap());
        assert_eq!(queued(&listener), 2);
    }

    #[test]
    fn tcp_connections_are_steered_too() {
        use std::net::{TcpListener, TcpStream};
        let first = crate::bind::Bound::bind(
            &crate::bind::BindSpec::parse("127.0.0.1:0").unwrap(),
            64,
            true,
        )
        .unwrap();
        let second = first.sibling(64).unwrap();
        let third = first.sibling(64).unwrap();
        let group: Vec<TcpListener> = [first, second, third]
            .into_iter()
            .map(|b| b.socket.into())
            .collect();
        for l in &group {
            l.set_nonblocking(true).unwrap();
        }
        let l = layout(&[true, false, true]);
        attach(&group[2], &l.program().unwrap()).unwrap();
        let addr = group[0].local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut accepted = HashMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while accepted.len() < clients.len() {
            assert!(std::time::Instant::now() < deadline, "connections missing");
            for (i, listener) in group.iter().enumerate() {
                while let Ok((_, peer)) = listener.accept() {
                    accepted.insert(peer, i);
                }
            }
        }
        for (peer, socket) in accepted {
            assert_ne!(socket, 1, "a connection reached the down slot");
            assert_eq!(socket, slot_for(&l, peer_hash(l.seed, peer)), "peer {peer}");
        }
    }
}
