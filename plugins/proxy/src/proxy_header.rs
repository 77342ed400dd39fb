//! The PROXY protocol header (HAProxy's spec, v1 text and v2 binary) that `send-proxy=v1|v2`
//! writes first on every upstream connection, so the upstream sees the real client: the
//! client's address as the source, and the address the client connected to as the
//! destination.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Which header to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n`
    V1,
    /// The binary form (HAProxy `send-proxy-v2`).
    V2,
}

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header announcing a TCP connection from `source` to `destination`.
///
/// Both addresses must be of one family; if they are not (an IPv4 client on a dual-stack
/// socket), the IPv4 one is written as an IPv4-mapped IPv6 address.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        Version::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut h = Vec::with_capacity(16 + 36);
            h.extend_from_slice(&V2_SIGNATURE);
            h.push(0x21); // version 2, command PROXY
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    h.push(0x11); // TCP over IPv4
                    h.extend_from_slice(&12u16.to_be_bytes());
                    h.extend_from_slice(&s.octets());
                    h.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    h.push(0x21); // TCP over IPv6
                    h.extend_from_slice(&36u16.to_be_bytes());
                    h.extend_from_slice(&v6(s).octets());
                    h.extend_from_slice(&v6(d).octets());
                }
            }
            h.extend_from_slice(&source.port().to_be_bytes());
            h.extend_from_slice(&destination.port().to_be_bytes());
            h
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4; then, if the families still differ, both as IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let (a, b) = (canonical(a), canonical(b));
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let widen = |s: SocketAddr| SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port());
    (widen(a), widen(b))
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::{v1, v2, HeaderResult};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_text() {
        let h = encode(Version::V1, addr("192.0.2.7:51234"), addr("10.0.0.1:443"));
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n");
        let h = encode(Version::V1, addr("[2001:db8::7]:1"), addr("[::1]:2"));
        assert_eq!(h, b"PROXY TCP6 2001:db8::7 ::1 1 2\r\n");
    }

    /// The (source, destination) of a parsed header's addresses (v1 and v2 name them alike).
    macro_rules! source_destination {
        ($a:expr) => {
            (
                SocketAddr::from(($a.source_address, $a.source_port)),
                SocketAddr::from(($a.destination_address, $a.destination_port)),
            )
        };
    }

    /// Whatever we write, the parser the host uses (`ppp`) reads back as the same addresses.
    #[test]
    fn both_versions_parse_back() {
        let cases = [
            ("192.0.2.7:51234", "10.0.0.1:443"),
            ("[2001:db8::7]:65535", "[::1]:8080"),
            // A v4 client on a dual-stack listener: its address arrives v4-mapped.
            ("[::ffff:192.0.2.7]:1000", "[::ffff:10.0.0.1]:80"),
        ];
        for (src, dst) in cases {
            let want = same_family(addr(src), addr(dst));
            let h1 = encode(Version::V1, addr(src), addr(dst));
            let got = match HeaderResult::parse(&h1) {
                HeaderResult::V1(Ok(h)) => match h.addresses {
                    v1::Addresses::Tcp4(a) => source_destination!(a),
                    v1::Addresses::Tcp6(a) => source_destination!(a),
                    other => panic!("{other:?}"),
                },
                other => panic!("v1 {src}: {other:?}"),
            };
            assert_eq!(got, want, "v1");
            let h2 = encode(Version::V2, addr(src), addr(dst));
            let got = match HeaderResult::parse(&h2) {
                HeaderResult::V2(Ok(h)) => {
                    assert_eq!(h.command, v2::Command::Proxy);
                    assert_eq!(h.protocol, v2::Protocol::Stream);
                    assert_eq!(h.len(), h2.len());
                    match h.addresses {
                        v2::Addresses::IPv4(a) => source_destination!(a),
                        v2::Addresses::IPv6(a) => source_destination!(a),
                        other => panic!("{other:?}"),
                    }
                }
                other => panic!("v2 {src}: {other:?}"),
            };
            assert_eq!(got, want, "v2");
        }
    }

    #[test]
    fn mixed_families_become_ipv6() {
        let (s, d) = same_family(addr("192.0.2.7:1"), addr("[2001:db8::1]:2"));
        assert_eq!(s, addr("[::ffff:192.0.2.7]:1"));
        assert_eq!(d, addr("[2001:db8::1]:2"));
    }
}
