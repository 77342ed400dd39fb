//! `--proxy-protocol`: TCP binds expect a PROXY protocol header (v1 text or v2 binary, as
//! sent by HAProxy's `send-proxy` / `send-proxy-v2`, nginx, AWS NLB …) before anything else;
//! the consumer then sees the real client's address as its peer, and TLS (if configured)
//! starts right after the header. Parsing is done by the `ppp` crate.
//!
//! A connection whose first bytes are not a valid header is closed; a header that does not
//! arrive within `--handshake-timeout` is cut by the caller's deadline. A v2 `LOCAL` header
//! (the load balancer's own health check) or a v1 `UNKNOWN` one keeps the socket's addresses.

use std::net::SocketAddr;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use rewind::Rewind;

mod rewind;

/// The most bytes a header may take (v1 is at most 107; v2 with TLVs is usually well under
/// 1 KiB). A peer still "sending a header" past this is not speaking PROXY protocol.
pub const MAX_HEADER: usize = 4096;

/// What the header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proxied {
    /// The real client, if the header carried addresses (not for LOCAL / UNKNOWN).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, at the load balancer.
    pub destination: Option<SocketAddr>,
}

impl Proxied {
    /// No addresses: the socket's are kept.
    const KEEP: Proxied = Proxied {
        source: None,
        destination: None,
    };

    /// From the real client `source` to `destination`.
    fn between(source: impl Into<SocketAddr>, destination: impl Into<SocketAddr>) -> Proxied {
        Proxied {
            source: Some(source.into()),
            destination: Some(destination.into()),
        }
    }
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes.
    Header { len: usize, proxied: Proxied },
    /// Not enough bytes yet.
    Incomplete,
    /// Not a PROXY protocol header.
    Invalid(String),
}

/// The longest v1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;

/// Parse the start of a connection's input.
pub fn parse(input: &[u8]) -> Parsed {
    if let Some(verdict) = v1_line_verdict(input) {
        return verdict;
    }
    let result = HeaderResult::parse(input);
    if result.is_incomplete() {
        return if input.len() >= MAX_HEADER {
            Parsed::Invalid(format!(
                "no complete header in the first {MAX_HEADER} bytes"
            ))
        } else {
            Parsed::Incomplete
        };
    }
    match result {
        HeaderResult::V1(Ok(h)) => Parsed::Header {
            len: h.header.len(),
            proxied: v1_proxied(h.addresses),
        },
        HeaderResult::V2(Ok(h)) => Parsed::Header {
            len: h.header.len(),
            proxied: v2_proxied(h.command, h.addresses),
        },
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("invalid PROXY header: {e}")),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("invalid PROXY header: {e}")),
    }
}

/// The verdict on a v1 header whose line is not whole yet, or is badly ended; `None` when
/// `input` is not v1 or its line ends right, for ppp to parse.
///
/// A v1 header is one line, complete only with its CRLF. Until then ppp's verdict on the
/// part so far is not to be trusted: ppp 2.3 reads a line cut right after the source port
/// ("PROXY TCP4 … 40000 ") as an invalid destination port, so a header split across reads
/// there was refused. And ppp ends the line at its first CR, whatever follows it:
/// "PROXY UNKNOWN x\ry\r\n" was a header of 17 bytes, and the rest of the line went to the
/// plugin. So the line must end at its first CR, with an LF. (Both found by tests/fuzz's
/// proxy_protocol target.)
fn v1_line_verdict(input: &[u8]) -> Option<Parsed> {
    if !input.starts_with(b"PROXY ") {
        return None;
    }
    let line = &input[..input.len().min(V1_MAX)];
    let wait = || {
        Some(if input.len() >= V1_MAX {
            Parsed::Invalid(format!(
                "no end of line in the first {V1_MAX} bytes of a v1 header"
            ))
        } else {
            Parsed::Incomplete
        })
    };
    let Some(cr) = line.iter().position(|&b| b == b'\r') else {
        return wait();
    };
    match line.get(cr + 1) {
        None => wait(),
        Some(b'\n') => None,
        Some(_) => Some(Parsed::Invalid(
            "invalid PROXY header: a CR not followed by LF".to_string(),
        )),
    }
}

/// The addresses of a v1 header (none for `UNKNOWN`: keep the socket's).
fn v1_proxied(addresses: v1::Addresses) -> Proxied {
    match addresses {
        v1::Addresses::Tcp4(a) => Proxied::between(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        v1::Addresses::Tcp6(a) => Proxied::between(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        v1::Addresses::Unknown => Proxied::KEEP,
    }
}

/// The addresses of a v2 header: those of a `PROXY` command over IP. LOCAL (health
/// checks), UNSPEC and unix sockets keep the socket's addresses.
fn v2_proxied(command: v2::Command, addresses: v2::Addresses) -> Proxied {
    match (command, addresses) {
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Proxied::between(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Proxied::between(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        _ => Proxied::KEEP,
    }
}

/// Read the header from `stream`. Returns what it said and the stream with any bytes read
/// past the header put back in front.
pub async fn read_header<S: AsyncRead + Unpin>(
    mut stream: S,
) -> Result<(Proxied, Rewind<S>), String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        if n == 0 {
            return Err("connection closed before a complete PROXY header".to_string());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf) {
            Parsed::Incomplete => continue,
            Parsed::Invalid(why) => return Err(why),
            Parsed::Header { len, proxied } => {
                let rest = buf.split_off(len);
                return Ok((proxied, Rewind::new(stream, rest)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_SIG: [u8; 12] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
    ];

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    fn v2_tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut a = src.to_vec();
        a.extend_from_slice(&dst);
        a.extend_from_slice(&sport.to_be_bytes());
        a.extend_from_slice(&dport.to_be_bytes());
        v2(0x1, 0x11, &a)
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhello";
        assert_eq!(
            parse(h),
            Parsed::Header {
                len: h.len() - 5,
                proxied: Proxied {
                    source: Some("192.0.2.1:56324".parse().unwrap()),
                    destination: Some("198.51.100.2:443".parse().unwrap())
                }
            }
        );
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 2000\r\n";
        assert!(
            matches!(parse(h6), Parsed::Header { proxied: Proxied { source: Some(s), .. }, .. } if s.to_string() == "[2001:db8::1]:1000")
        );
    }

    #[test]
    fn v1_unknown_keeps_the_socket_addresses() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                proxied: Proxied {
                    source: None,
                    destination: None
                }
            }
        );
    }

    #[test]
    fn v2_proxy_and_local() {
        let h = v2_tcp4([10, 0, 0, 1], 4000, [10, 0, 0, 2], 80);
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: 28,
                proxied: Proxied {
                    source: Some("10.0.0.1:4000".parse().unwrap()),
                    destination: Some("10.0.0.2:80".parse().unwrap())
                }
            }
        );
        let local = v2(0x0, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: 16,
                proxied: Proxied {
                    source: None,
                    destination: None
                }
            }
        );
    }

    #[test]
    fn truncated_headers_are_incomplete() {
        let h = v2_tcp4([10, 0, 0, 1], 4000, [10, 0, 0, 2], 80);
        for cut in [1, 5, 12, 16, 27] {
            assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "v2 cut at {cut}");
        }
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 198.5"), Parsed::Incomplete);
    }

    #[test]
    fn v1_headers_cut_anywhere_are_incomplete() {
        for h in [
            &b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n"[..],
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 2000\r\n",
            b"PROXY UNKNOWN\r\n",
        ] {
            for cut in 1..h.len() {
                assert_eq!(
                    parse(&h[..cut]),
                    Parsed::Incomplete,
                    "{:?}",
                    String::from_utf8_lossy(&h[..cut])
                );
            }
            assert!(matches!(parse(h), Parsed::Header { len, .. } if len == h.len()));
        }
    }

    #[test]
    fn a_v1_line_ends_at_its_first_cr_lf() {
        assert!(matches!(
            parse(b"PROXY UNKNOWN x\ry\r\nrest"),
            Parsed::Invalid(_)
        ));
        assert_eq!(parse(b"PROXY UNKNOWN x\r"), Parsed::Incomplete);
        assert!(matches!(
            parse(b"PROXY UNKNOWN x\nstill the line\r\nrest"),
            Parsed::Header { len: 32, .. }
        ));
    }

    #[test]
    fn a_v1_line_without_its_end_is_invalid_past_the_bound() {
        let mut h = b"PROXY TCP4 ".to_vec();
        h.resize(V1_MAX - 1, b'1');
        assert_eq!(parse(&h), Parsed::Incomplete);
        h.push(b'1');
        assert!(matches!(parse(&h), Parsed::Invalid(_)));
    }

    #[test]
    fn garbage_is_invalid() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 nonsense here 1 2\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn oversize_headers_are_invalid() {
        // A v2 header announcing more TLV bytes than we accept never completes.
        let mut h = v2(0x1, 0x11, &[0u8; 12]);
        h[14..16].copy_from_slice(&60_000u16.to_be_bytes());
        h.resize(MAX_HEADER, 0);
        assert!(matches!(parse(&h), Parsed::Invalid(_)));
    }

    #[tokio::test]
    async fn bytes_after_the_header_are_replayed() {
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(
            &mut client,
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\nfirst bytes",
        )
        .await
        .unwrap();
        drop(client);
        let (proxied, mut rest) = read_header(server).await.unwrap();
        assert_eq!(proxied.source, Some("192.0.2.1:1".parse().unwrap()));
        let mut after = String::new();
        rest.read_to_string(&mut after).await.unwrap();
        assert_eq!(after, "first bytes");
    }
}
