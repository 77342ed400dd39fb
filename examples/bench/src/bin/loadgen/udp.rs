//! `udp` mode: datagram echo throughput. Each of `--sockets` client sockets (one peer
//! session each on the server) keeps `--depth` datagrams in flight; every echoed datagram
//! is verified against the pattern it was sent with.
//!
//! UDP may drop datagrams (a full socket buffer on either side), so loss is measured rather
//! than treated as an error: the first eight bytes of every datagram carry its sequence
//! number, a reply for sequence `s` declares the outstanding datagrams sent before `s` lost
//! (loopback does not reorder), and a socket that hears nothing for [`LOSS_TIMEOUT`]
//! declares its whole window lost and sends a fresh one. A reply to a datagram already
//! declared lost counts as `late`. Only bytes that differ from what was sent are errors.
//!
//! The client batches its system calls (`recvmmsg` for everything waiting, one `sendmmsg`
//! for the datagrams that refill the window), so that a one-core load generator costs less
//! per datagram than a server that makes a `recvfrom` and a `sendto` per datagram, and the
//! server, not the client, is what a run measures.

// FFI boundary: sendmmsg/recvmmsg by descriptor.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::timeout_at;

use crate::args::Flags;
use crate::histogram::Histogram;
use crate::{cpu_over, describe, fill_message, json_num, say, Errors, Times};

/// Silence after which every outstanding datagram of a socket counts as lost.
const LOSS_TIMEOUT: Duration = Duration::from_millis(200);
/// How long after the window outstanding replies are still awaited (and counted as lost).
const DRAIN: Duration = Duration::from_millis(500);
/// The stream-number mix of [`fill_message`]'s tag, to recover a sequence number.
const STREAM_MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// Most datagrams one `recvmmsg` or `sendmmsg` moves.
const BATCH: usize = 64;

/// Settings of a `udp` run.
pub struct Config {
    addr: SocketAddr,
    sockets: usize,
    size: usize,
    depth: usize,
    duration: Duration,
    warmup: Duration,
    json: bool,
}

impl Config {
    /// Take this mode's flags.
    pub fn from_flags(mut f: Flags) -> Result<Config, String> {
        let c = Config {
            addr: f.addr()?,
            sockets: f.count("sockets", 1)?,
            size: f.count("size", 64)?,
            depth: f.count("depth", 1)?,
            duration: f.seconds("duration", 5.0, true)?,
            warmup: f.seconds("warmup", 1.0, false)?,
            json: f.switch("json"),
        };
        f.finish()?;
        if !(8..=65_507).contains(&c.size) {
            return Err(format!(
                "--size {}: a datagram must be 8 (its sequence number) to 65507 bytes",
                c.size
            ));
        }
        Ok(c)
    }
}

/// What one socket measured.
#[derive(Default)]
struct Stats {
    received: u64,
    lost: u64,
    late: u64,
    mismatches: u64,
    errors: Errors,
    hist: Histogram,
}

/// Run the mode; `true` when there was no error and no mismatch (loss is reported, not
/// failed).
pub async fn run(cfg: Config) -> bool {
    let cfg = Arc::new(cfg);
    let mut total = Stats::default();
    let mut sockets = Vec::with_capacity(cfg.sockets);
    for _ in 0..cfg.sockets {
        match open(cfg.addr).await {
            Ok(s) => sockets.push(s),
            Err(e) => total.errors.add(e),
        }
    }
    let times = Times::new(cfg.warmup, cfg.duration);
    let cpu = tokio::spawn(cpu_over(times));
    let running: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(id, s)| {
            let cfg = cfg.clone();
            tokio::spawn(async move { socket_loop(id as u64, s, &cfg, times).await })
        })
        .collect();
    for handle in running {
        let s = handle.await.expect("udp socket task");
        total.received += s.received;
        total.lost += s.lost;
        total.late += s.late;
        total.mismatches += s.mismatches;
        total.errors.merge(s.errors);
        total.hist.merge(&s.hist);
    }
    let cpu = cpu.await.ok().flatten();

    let secs = cfg.duration.as_secs_f64();
    let rate = total.received as f64 / secs;
    let mib = rate * cfg.size as f64 / (1024.0 * 1024.0);
    let (p50, p99) = (total.hist.quantile_us(0.50), total.hist.quantile_us(0.99));
    total.errors.report("udp");
    if cfg.json {
        say(&format!(
            "{{\"mode\":\"udp\",\"addr\":\"{}\",\"sockets\":{},\"size\":{},\"depth\":{},\
\"duration_s\":{:.3},\"datagrams\":{},\"datagrams_per_sec\":{:.1},\"mib_per_sec\":{:.3},\
\"p50_us\":{:.1},\"p99_us\":{:.1},\"lost\":{},\"late\":{},\"errors\":{},\"mismatches\":{},\
\"client_cpu\":{}}}",
            cfg.addr,
            cfg.sockets,
            cfg.size,
            cfg.depth,
            secs,
            total.received,
            rate,
            mib,
            p50,
            p99,
            total.lost,
            total.late,
            total.errors.count,
            total.mismatches,
            json_num(cpu, 3)
        ));
    } else {
        say(&format!(
            "udp sockets={} size={} depth={} duration={:.1}s datagrams/s={:.0} MiB/s={:.2} \
p50_us={:.1} p99_us={:.1} lost={} late={} errors={} mismatches={} client_cpu={}",
            cfg.sockets,
            cfg.size,
            cfg.depth,
            secs,
            rate,
            mib,
            p50,
            p99,
            total.lost,
            total.late,
            total.errors.count,
            total.mismatches,
            cpu.map_or("n/a".into(), |c| format!("{:.0}%", c * 100.0)),
        ));
    }
    total.errors.count == 0 && total.mismatches == 0
}

/// A client socket connected to `addr` (so it receives only the server's datagrams).
async fn open(addr: SocketAddr) -> Result<UdpSocket, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let s = UdpSocket::bind(local)
        .await
        .map_err(|e| describe("udp bind", &e))?;
    s.connect(addr)
        .await
        .map_err(|e| describe("udp connect", &e))?;
    Ok(s)
}

/// One socket: keep `depth` datagrams in flight until the window ends, then wait (bounded)
/// for the outstanding ones.
async fn socket_loop(id: u64, sock: UdpSocket, cfg: &Config, times: Times) -> Stats {
    let mut st = Stats::default();
    let size = cfg.size;
    // Sequence number and send time of each datagram in flight, oldest first.
    let mut outstanding: VecDeque<(u64, Instant)> = VecDeque::with_capacity(cfg.depth);
    let mut next_seq = 0u64;
    let mut expected = Vec::with_capacity(size);
    let mut batch = Batch::new(size);
    let drain_end = times.end + DRAIN;
    loop {
        // Top up the window, in one system call, while the run lasts.
        let want = cfg.depth.saturating_sub(outstanding.len()).min(BATCH);
        if want > 0 && Instant::now() < times.end {
            batch.out.clear();
            for k in 0..want as u64 {
                fill_message(&mut batch.out, id, next_seq + k, size);
            }
            match batch.send(&sock, want).await {
                Ok(()) => {
                    let now = Instant::now();
                    outstanding.extend((0..want as u64).map(|k| (next_seq + k, now)));
                }
                // Typically ECONNREFUSED: an ICMP error for an earlier datagram (no server).
                Err(e) => {
                    st.errors.add(describe("udp send", &e));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            next_seq += want as u64;
            continue;
        }
        if outstanding.is_empty() && Instant::now() >= times.end {
            break;
        }
        let wait_until = (Instant::now() + LOSS_TIMEOUT).min(drain_end);
        match timeout_at(wait_until.into(), batch.receive(&sock)).await {
            Ok(Ok(n)) => {
                let arrived = Instant::now();
                for i in 0..n {
                    st.check(
                        id,
                        batch.received(i),
                        size,
                        &mut outstanding,
                        &mut expected,
                        arrived,
                        times,
                    );
                }
            }
            Ok(Err(e)) => {
                st.errors.add(describe("udp receive", &e));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                // Silence: the whole window is gone.
                st.lost += outstanding.len() as u64;
                outstanding.clear();
                if Instant::now() >= drain_end {
                    break;
                }
            }
        }
    }
    st
}

/// Buffers for one socket's `sendmmsg` and `recvmmsg` calls.
struct Batch {
    /// The datagrams to send, back to back, `size` bytes each.
    out: Vec<u8>,
    /// Receive slots of `size + 1` bytes (a longer datagram shows up as one byte too long).
    slots: Vec<u8>,
    lens: [usize; BATCH],
    size: usize,
}

impl Batch {
    fn new(size: usize) -> Batch {
        Batch {
            out: Vec::with_capacity(size * BATCH),
            slots: vec![0; (size + 1) * BATCH],
            lens: [0; BATCH],
            size,
        }
    }

    /// Received datagram `i` of the last [`receive`](Batch::receive).
    fn received(&self, i: usize) -> &[u8] {
        let slot = self.size + 1;
        &self.slots[i * slot..i * slot + self.lens[i]]
    }

    /// Send the `count` datagrams in `out` (the socket is connected).
    async fn send(&mut self, sock: &UdpSocket, count: usize) -> io::Result<()> {
        let mut sent = 0;
        while sent < count {
            sock.writable().await?;
            let size = self.size;
            let out = &mut self.out;
            match sock.try_io(Interest::WRITABLE, || {
                mmsg(sock, out, size, sent, count, |fd, hdrs, n| {
                    // SAFETY: `hdrs` holds `n` headers whose buffers live for the call.
                    unsafe { libc::sendmmsg(fd, hdrs, n, libc::MSG_DONTWAIT) }
                })
            }) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Wait for datagrams and take everything waiting (up to [`BATCH`]); returns how many.
    async fn receive(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        loop {
            sock.readable().await?;
            let slot = self.size + 1;
            let (slots, lens) = (&mut self.slots, &mut self.lens);
            let got = sock.try_io(Interest::READABLE, || {
                let mut hdr_lens = [0usize; BATCH];
                let n = mmsg(sock, slots, slot, 0, BATCH, |fd, hdrs, n| {
                    // SAFETY: as above; `recvmmsg` writes each length into its header.
                    let r = unsafe {
                        libc::recvmmsg(fd, hdrs, n, libc::MSG_DONTWAIT, std::ptr::null_mut())
                    };
                    for (i, len) in hdr_lens.iter_mut().enumerate().take(r.max(0) as usize) {
                        // SAFETY: `r` headers were filled in.
                        *len = unsafe { (*hdrs.add(i)).msg_len } as usize;
                    }
                    r
                })?;
                lens[..n].copy_from_slice(&hdr_lens[..n]);
                Ok(n)
            });
            match got {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Build `mmsghdr`s for datagrams `from..to` of `buf` (`slot` bytes each) and run `call`
/// (sendmmsg or recvmmsg) on them; returns how many datagrams it moved.
fn mmsg(
    sock: &UdpSocket,
    buf: &mut [u8],
    slot: usize,
    from: usize,
    to: usize,
    call: impl FnOnce(i32, *mut libc::mmsghdr, u32) -> i32,
) -> io::Result<usize> {
    let n = to - from;
    // SAFETY: all-zero is a valid iovec and mmsghdr (null pointers, zero lengths).
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        let at = (from + i) * slot;
        iovs[i] = libc::iovec {
            iov_base: buf[at..at + slot].as_mut_ptr().cast(),
            iov_len: slot,
        };
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    let r = call(sock.as_raw_fd(), hdrs.as_mut_ptr(), n as u32);
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

impl Stats {
    /// Account for one received datagram.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        id: u64,
        got: &[u8],
        size: usize,
        outstanding: &mut VecDeque<(u64, Instant)>,
        expected: &mut Vec<u8>,
        arrived: Instant,
        times: Times,
    ) {
        if got.len() != size {
            self.mismatches += 1;
            self.errors.note(format!(
                "socket {id}: a {}-byte datagram came back for {size}-byte ones",
                got.len()
            ));
            return;
        }
        let tag = u64::from_le_bytes(got[..8].try_into().expect("size >= 8"));
        let seq = tag.wrapping_sub(id.wrapping_mul(STREAM_MIX));
        expected.clear();
        fill_message(expected, id, seq, size);
        if got != expected.as_slice() {
            self.mismatches += 1;
            self.errors.note(format!(
                "socket {id}: a datagram came back different from any that was sent"
            ));
            return;
        }
        let Some(pos) = outstanding.iter().position(|&(s, _)| s == seq) else {
            self.late += 1;
            return;
        };
        // Sent before it and not back: lost.
        self.lost += pos as u64;
        outstanding.drain(..pos);
        let (_, sent_at) = outstanding.pop_front().expect("found at pos");
        if times.counts(arrived) {
            self.received += 1;
            self.hist.record(arrived - sent_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(id: u64, seq: u64, size: usize) -> Vec<u8> {
        let mut v = Vec::new();
        fill_message(&mut v, id, seq, size);
        v
    }

    #[test]
    fn replies_are_matched_and_losses_and_late_ones_counted() {
        let now = Instant::now();
        let times = Times {
            warm_end: now - Duration::from_secs(1),
            end: now + Duration::from_secs(60),
        };
        let mut st = Stats::default();
        let mut expected = Vec::new();
        let mut outstanding: VecDeque<(u64, Instant)> = (0..4).map(|s| (s, now)).collect();
        let (id, size) = (3, 64);
        // 0 comes back, 1 is lost (2 arrives first), 3 comes back, then 1 arrives late.
        for seq in [0, 2, 3, 1] {
            let d = datagram(id, seq, size);
            st.check(id, &d, size, &mut outstanding, &mut expected, now, times);
        }
        assert_eq!((st.received, st.lost, st.late, st.mismatches), (3, 1, 1, 0));
        assert!(outstanding.is_empty());

        // Another socket's datagram, a corrupted one and a short one are mismatches.
        let mut outstanding: VecDeque<(u64, Instant)> = [(0, now)].into();
        let mut corrupted = datagram(id, 0, size);
        corrupted[40] ^= 1;
        for d in [
            datagram(id + 1, 0, size),
            corrupted,
            datagram(id, 0, size - 1),
        ] {
            st.check(id, &d, size, &mut outstanding, &mut expected, now, times);
        }
        assert_eq!(st.mismatches, 3);
        assert_eq!(outstanding.len(), 1, "nothing matched");
    }
}
