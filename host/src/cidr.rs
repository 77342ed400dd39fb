//! Address blocks (`10.0.0.0/8`, `fd00::/8`, or one address) for `--proxy-protocol-from`:
//! the load balancers whose PROXY headers are believed.
//!
//! Peers are compared as [`crate::bind::canonical`] reports them, IPv4 clients of a
//! dual-stack socket as plain IPv4; so an IPv4-mapped block (`::ffff:10.0.0.0/104`) is
//! stored as the IPv4 block it means.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One block of addresses: the first `prefix` bits of `addr` (the rest are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `ADDR/PREFIX` or a single `ADDR` (clap's value parser). Host bits set below
    /// the prefix (`10.1.2.3/8`) are refused: they usually mean a typo in the prefix.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?}: expected an address block such as 10.0.0.0/8, fd00::/8 or 192.0.2.7")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
        };
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err(format!(
                "{s:?}: host bits set below /{prefix} (did you mean {}/{prefix}?)",
                cidr.network()
            ));
        }
        Ok(cidr.unmapped())
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(ip).into(), 32, self.prefix) == u32::from(net).into()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    /// Whether any of `blocks` contains `ip`.
    pub fn any_contains(blocks: &[Cidr], ip: IpAddr) -> bool {
        blocks.iter().any(|b| b.contains(ip))
    }

    /// The address with the host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                Ipv4Addr::from(mask(u32::from(a).into(), 32, self.prefix) as u32).into()
            }
            IpAddr::V6(a) => Ipv6Addr::from(mask(u128::from(a), 128, self.prefix)).into(),
        }
    }

    /// An IPv4-mapped IPv6 block (`::ffff:0:0/96` and narrower) as the IPv4 block it is.
    fn unmapped(self) -> Cidr {
        match self.addr {
            IpAddr::V6(a) if self.prefix >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: v4.into(),
                    prefix: self.prefix - 96,
                },
                None => self,
            },
            _ => self,
        }
    }
}

/// `value` with all but its first `prefix` of `bits` bits cleared.
fn mask(value: u128, bits: u32, prefix: u8) -> u128 {
    let host_bits = bits - u32::from(prefix);
    if host_bits >= 128 {
        0
    } else {
        value >> host_bits << host_bits
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let ten = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.0.0.0")) && ten.contains(ip("10.255.255.255")));
        assert!(!ten.contains(ip("11.0.0.0")) && !ten.contains(ip("127.0.0.1")));
        assert!(
            !ten.contains(ip("::ffff:10.0.0.1")),
            "peers arrive canonical"
        );

        let one = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));

        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12:3456::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));

        let all4 = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all4.contains(ip("1.2.3.4")) && !all4.contains(ip("::1")));
        let all6 = Cidr::parse("::/0").unwrap();
        assert!(all6.contains(ip("::1")) && !all6.contains(ip("1.2.3.4")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
    }

    #[test]
    fn mapped_blocks_match_ipv4_peers() {
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains(ip("10.1.2.3")));
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        for (bad, why) in [
            ("10.0.0.0/33", "prefix length must be 0-32"),
            ("::/129", "prefix length must be 0-128"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/-1", "prefix length"),
            ("10.1.2.3/8", "did you mean 10.0.0.0/8?"),
            ("example.com/8", "expected an address block"),
            ("", "expected an address block"),
        ] {
            let err = Cidr::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn any_of_a_list() {
        let list: Vec<Cidr> = ["10.0.0.0/8", "192.168.0.0/16"]
            .iter()
            .map(|s| Cidr::parse(s).unwrap())
            .collect();
        assert!(Cidr::any_contains(&list, ip("192.168.1.1")));
        assert!(!Cidr::any_contains(&list, ip("127.0.0.1")));
        assert!(!Cidr::any_contains(&[], ip("127.0.0.1")));
    }
}
