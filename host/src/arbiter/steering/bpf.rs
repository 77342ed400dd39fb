//! The classic-BPF steering program: the peer hash, the home slot, and the re-hash of a down
//! slot's peers over the live ones (see the parent module for the mapping it computes).

use nix::libc;
use nix::libc::{
    BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_DIV, BPF_H, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP,
    BPF_K, BPF_LD, BPF_LDX, BPF_MEM, BPF_MISC, BPF_MOD, BPF_MSH, BPF_MUL, BPF_RET, BPF_RSH, BPF_ST,
    BPF_TAX, BPF_W, BPF_X, BPF_XOR,
};

/// Classic BPF's limit on a program's length.
const MAX_INSNS: usize = 4096;
/// "No choice": past the end of any group, so the kernel uses its own hash.
const NO_CHOICE: u32 = u32::MAX;
/// `SKF_NET_OFF`: loads relative to the packet's network (IP) header.
const NET: u32 = libc::SKF_NET_OFF as u32;

/// One classic-BPF instruction (`struct sock_filter`, comparable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub(super) code: u16,
    pub(super) jt: u8,
    pub(super) jf: u8,
    pub(super) k: u32,
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
    pub(super) fn live_slots(&self) -> Vec<usize> {
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
