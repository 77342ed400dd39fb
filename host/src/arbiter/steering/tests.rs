//! The steering program against a reference model in Rust, and against the kernel.

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

/// A real SO_REUSEPORT group of UDP sockets on loopback.
fn udp_group(n: usize) -> Vec<UdpSocket> {
    udp_group_on("udp://127.0.0.1:0", n)
}

fn udp_group_on(bind: &str, n: usize) -> Vec<UdpSocket> {
    let first =
        crate::bind::Bound::bind(&crate::bind::BindSpec::parse(bind).unwrap(), 16, true).unwrap();
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
