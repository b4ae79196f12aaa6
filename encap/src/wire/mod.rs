//! Wire formats: zero-copy views over packet headers.
//!
//! Every format follows the same model (after smoltcp's `wire` module):
//!
//! - A view such as [`ipv4::Packet<T>`] wraps a byte buffer `T: AsRef<[u8]>`.
//!   [`new_unchecked`](ipv4::Packet::new_unchecked) wraps without looking;
//!   [`new_checked`](ipv4::Packet::new_checked) validates every length the accessors rely
//!   on, once. **Untrusted input always goes through `new_checked`**: after it succeeds, no
//!   accessor of the view can panic. Accessors of a view made with `new_unchecked` over a
//!   buffer that is too short may panic.
//! - Getters need `T: AsRef<[u8]>`; setters need `T: AsRef<[u8]> + AsMut<[u8]>` and write in
//!   place. Setters never change lengths the view validated, so a checked view stays valid.
//! - A `Repr` is the parsed, owned, high-level form of a header: `Repr::parse` reads it from a
//!   view, `buffer_len` says how many bytes `emit` writes, and `emit` writes the header into a
//!   view over a buffer of at least that size (payload bytes are left as they are).
//! - All multi-byte fields are in network byte order (big endian).
//!
//! Lengths: a view accepts a buffer longer than the packet (e.g. Ethernet padding after an
//! IPv4 packet); accessors such as `payload` use the length recorded in the header.

use core::fmt;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod udp;
pub mod vxlan;

pub use ethernet::EthernetAddress;

/// IP protocol number / IPv6 next header: IPv6 Hop-by-Hop Options.
pub const PROTO_HOPOPT: u8 = 0;
/// IP protocol number: ICMP (IPv4).
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number: TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number: UDP.
pub const PROTO_UDP: u8 = 17;
/// IPv6 next header: Routing header.
pub const PROTO_IPV6_ROUTE: u8 = 43;
/// IPv6 next header: Fragment header.
pub const PROTO_IPV6_FRAGMENT: u8 = 44;
/// IP protocol number / IPv6 next header: ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// IPv6 next header: no next header.
pub const PROTO_IPV6_NONXT: u8 = 59;
/// IPv6 next header: Destination Options.
pub const PROTO_IPV6_OPTS: u8 = 60;

/// Why a buffer is not a valid packet of the expected format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer is shorter than the fixed header (or than a length the header implies
    /// before any length field can be read).
    Truncated,
    /// The IP version field is not the expected one.
    BadVersion,
    /// The header length field is impossible (IPv4 IHL below 5, or a header longer than the
    /// packet).
    BadHeaderLen,
    /// The packet's length field claims more bytes than the buffer holds (or fewer than its
    /// own header).
    BadTotalLen,
    /// Well-formed, but a variant this crate does not handle (e.g. non-Ethernet/IPv4 ARP,
    /// an IPv4 fragment given to `Repr::parse`, a VXLAN header without the I flag).
    Unsupported,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated packet (shorter than its header)",
            WireError::BadVersion => "wrong IP version",
            WireError::BadHeaderLen => "invalid header length",
            WireError::BadTotalLen => "length field exceeds the packet (or is below the header)",
            WireError::Unsupported => "unsupported packet variant",
        })
    }
}

impl std::error::Error for WireError {}

/// The IP version of a packet: the high nibble of its first byte, or `None` if it is empty.
///
/// Says nothing about whether the rest is valid; use the version's `new_checked` for that.
pub fn ip_version(packet: &[u8]) -> Option<u8> {
    packet.first().map(|b| b >> 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_version_reads_high_nibble() {
        assert_eq!(ip_version(&[]), None);
        assert_eq!(ip_version(&[0x45]), Some(4));
        assert_eq!(ip_version(&[0x60, 0, 0, 0]), Some(6));
        assert_eq!(ip_version(&[0xf0]), Some(15));
    }

    #[test]
    fn errors_display() {
        for e in [
            WireError::Truncated,
            WireError::BadVersion,
            WireError::BadHeaderLen,
            WireError::BadTotalLen,
            WireError::Unsupported,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }
}
