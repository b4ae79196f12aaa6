//! IPv4 and IPv6 networks as flannel's `pkg/ip` models them (`IP4Net`, `IP6Net`).
//!
//! Unlike [`Cidr`], an [`Ipv4Net`]/[`Ipv6Net`] keeps its address exactly as written, host
//! bits included: flanneld does not clear them when it parses a lease key
//! (`pkg/subnet/subnet.go ParseSubnetKey`), and a key must print back as it was read to be
//! deleted or rewritten. [`Ipv4Net::network`] clears them; comparisons of ranges
//! ([`Ipv4Net::overlaps`], [`Ipv4Net::contains`]) mask like Go does. Networks parsed from a
//! CIDR string ([`Ipv4Net::parse_cidr`]) follow Go's `net.ParseCIDR`, which drops host bits.
//!
//! IPv6 addresses print like Go's `net.IP.String()` applied to flannel's big-integer `IP6`
//! ([`go_ipv6_string`]), which differs from Rust's `Display` in two corners (see there).

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_encap::table::Cidr;

macro_rules! net_type {
    ($name:ident, $addr:ty, $int:ty, $bits:expr, $family:literal, $example:literal) => {
        #[doc = concat!("An ", $family, " network: an address (host bits allowed, as flannel keeps them) and a prefix length, e.g. `", $example, "`.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            addr: $addr,
            prefix_len: u8,
        }

        impl $name {
            /// Number of address bits of this family.
            pub const BITS: u8 = $bits;

            #[doc = concat!("A network from an address and a prefix length (at most ", stringify!($bits), "); host bits are kept.")]
            pub fn new(addr: $addr, prefix_len: u8) -> Option<$name> {
                (prefix_len <= $bits).then_some($name { addr, prefix_len })
            }

            /// The address as given (host bits not cleared).
            pub fn addr(&self) -> $addr {
                self.addr
            }

            /// The prefix length.
            pub fn prefix_len(&self) -> u8 {
                self.prefix_len
            }

            /// The network mask as an integer.
            fn mask(&self) -> $int {
                Self::mask_of(self.prefix_len)
            }

            fn mask_of(len: u8) -> $int {
                if len == 0 {
                    0
                } else {
                    <$int>::MAX << ($bits - u32::from(len))
                }
            }

            /// The same network with its host bits cleared.
            pub fn network(&self) -> $name {
                $name {
                    addr: <$addr>::from(<$int>::from(self.addr) & self.mask()),
                    prefix_len: self.prefix_len,
                }
            }

            /// True if the address has host bits set (e.g. `10.5.52.1/24`).
            pub fn has_host_bits(&self) -> bool {
                <$int>::from(self.addr) & !self.mask() != 0
            }

            /// The first address after this network's range: `None` past the end of the
            /// address space. Like flannel's `Next()`, the address steps by the network's size.
            pub fn next(&self) -> Option<$name> {
                let step: $int = if self.prefix_len == 0 {
                    return None;
                } else {
                    1 << ($bits - u32::from(self.prefix_len))
                };
                let addr = <$int>::from(self.addr).checked_add(step)?;
                Some($name {
                    addr: <$addr>::from(addr),
                    prefix_len: self.prefix_len,
                })
            }

            /// The last address of the range (all host bits set).
            pub fn last_addr(&self) -> $addr {
                <$addr>::from(<$int>::from(self.addr) | !self.mask())
            }

            /// True if `addr` lies in this network (host bits of `self` ignored).
            pub fn contains(&self, addr: $addr) -> bool {
                <$int>::from(addr) & self.mask() == <$int>::from(self.addr) & self.mask()
            }

            /// True if the two networks share an address (flannel's `Overlaps`: both
            /// masked with the shorter prefix).
            pub fn overlaps(&self, other: &$name) -> bool {
                let mask = Self::mask_of(self.prefix_len.min(other.prefix_len));
                <$int>::from(self.addr) & mask == <$int>::from(other.addr) & mask
            }

            /// The network as a routing-table [`Cidr`] (host bits cleared).
            pub fn cidr(&self) -> Cidr {
                let net = self.network();
                Cidr::new(IpAddr::from(net.addr), net.prefix_len)
                    .expect("a masked network with a valid prefix length is a valid Cidr")
            }
        }
    };
}

net_type!(Ipv4Net, Ipv4Addr, u32, 32, "IPv4", "10.5.52.0/24");
net_type!(Ipv6Net, Ipv6Addr, u128, 128, "IPv6", "fc00:0:0:1::/64");

impl Ipv4Net {
    /// Parses `a.b.c.d/n` like Go's `net.ParseCIDR`: host bits are dropped
    /// (`10.5.52.1/24` gives `10.5.52.0/24`). `None` if it is not an IPv4 CIDR.
    pub fn parse_cidr(s: &str) -> Option<Ipv4Net> {
        let (addr, len) = s.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        Ipv4Net::new(addr, parse_prefix_len(len, 32)?).map(|n| n.network())
    }
}

impl Ipv6Net {
    /// Parses an IPv6 CIDR like Go's `net.ParseCIDR`: host bits are dropped. `None` if it
    /// is not an IPv6 CIDR.
    pub fn parse_cidr(s: &str) -> Option<Ipv6Net> {
        let (addr, len) = s.split_once('/')?;
        let addr: Ipv6Addr = addr.parse().ok()?;
        Ipv6Net::new(addr, parse_prefix_len(len, 128)?).map(|n| n.network())
    }
}

/// A prefix length as Go's `ParseCIDR` reads it: decimal digits only, at most `max`.
fn parse_prefix_len(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = s.parse().ok()?;
    (len <= max).then_some(len)
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Display for Ipv6Net {
    /// Go's `IP6Net.String()`: [`go_ipv6_string`] of the address, `/`, the length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", go_ipv6_string(self.addr), self.prefix_len)
    }
}

/// An IPv6 address as flannel prints its `ip.IP6` (a big integer): Go's `net.IP.String()`
/// of `IP6.ToIP()`.
///
/// Equal to Rust's `Display` (lower-case, longest zero run compressed, RFC 5952) except:
/// - IPv4-mapped addresses (`::ffff:a.b.c.d`) print as plain `a.b.c.d`;
/// - values from 2^24 to 2^32 - 1 (e.g. `::102:304`) print as `a.b.c.d` too, because
///   `ToIP` turns the integer's 4 significant bytes into a 4-byte (IPv4) `net.IP`.
pub fn go_ipv6_string(addr: Ipv6Addr) -> String {
    let value = u128::from(addr);
    if (1 << 24..1 << 32).contains(&value) {
        return Ipv4Addr::from(value as u32).to_string();
    }
    match addr.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn go_ipv6_string_matches_go_including_the_ipv4_corners() {
        let cases = [
            ("fc00:0:0:1::", "fc00:0:0:1::"),
            ("fc00::1", "fc00::1"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("::", "::"),
            ("::1", "::1"),
            ("::ffff", "::ffff"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("::1.2.3.4", "1.2.3.4"),
            ("::1:0:0", "::1:0:0"),
            ("::ff:ffff", "::ff:ffff"),
        ];
        for (input, want) in cases {
            let addr: Ipv6Addr = input.parse().unwrap();
            assert_eq!(go_ipv6_string(addr), want, "{input}");
        }
    }

    #[test]
    fn parse_cidr_drops_host_bits_and_checks_family() {
        let n = Ipv4Net::parse_cidr("10.5.52.1/24").unwrap();
        assert_eq!(n.to_string(), "10.5.52.0/24");
        assert!(Ipv4Net::parse_cidr("10.5.52.0/33").is_none());
        assert!(Ipv4Net::parse_cidr("10.5.52.0").is_none());
        assert!(Ipv4Net::parse_cidr("10.5.52.0/+4").is_none());
        assert!(Ipv4Net::parse_cidr("fc00::/64").is_none());
        let n6 = Ipv6Net::parse_cidr("fc00:0:0:1::1/64").unwrap();
        assert_eq!(n6.to_string(), "fc00:0:0:1::/64");
        assert!(Ipv6Net::parse_cidr("10.0.0.0/8").is_none());
        assert!(Ipv6Net::parse_cidr("fc00::/129").is_none());
    }

    #[test]
    fn overlap_contains_next_and_host_bits() {
        let a = Ipv4Net::new(v4("10.5.0.0"), 16).unwrap();
        let b = Ipv4Net::new(v4("10.5.52.0"), 24).unwrap();
        let c = Ipv4Net::new(v4("10.6.0.0"), 24).unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.contains(v4("10.5.255.255")) && !a.contains(v4("10.6.0.0")));
        assert_eq!(b.next().unwrap().to_string(), "10.5.53.0/24");
        assert_eq!(b.last_addr(), v4("10.5.52.255"));
        assert!(Ipv4Net::new(v4("255.255.255.0"), 24)
            .unwrap()
            .next()
            .is_none());
        assert!(Ipv4Net::new(v4("0.0.0.0"), 0).unwrap().next().is_none());
        let h = Ipv4Net::new(v4("10.5.52.1"), 24).unwrap();
        assert!(h.has_host_bits() && !b.has_host_bits());
        assert_eq!(h.network(), b);
        assert_eq!(h.to_string(), "10.5.52.1/24");
        assert_eq!(h.cidr().to_string(), "10.5.52.0/24");
        assert!(Ipv4Net::new(v4("10.0.0.0"), 33).is_none());
    }
}
