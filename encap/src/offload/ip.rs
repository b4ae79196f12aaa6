//! Private helpers shared by the offload modules: a minimal, bounds-checked reading of the
//! IP and L4 headers that splitting and coalescing need, and the pseudo-header sum.
//!
//! Nothing here trusts a length field: every accessor is given the slice it may read and
//! returns `None` when the bytes are not there.

use crate::wire::checksum::{self, Sum};
use crate::wire::{PROTO_TCP, PROTO_UDP};

/// TCP flag bits (byte 13 of the TCP header).
pub(super) mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const CWR: u8 = 0x80;
}

/// Offset of the TCP checksum field inside the TCP header.
pub(super) const TCP_CSUM_OFFSET: usize = 16;
/// Offset of the UDP checksum field inside the UDP header.
pub(super) const UDP_CSUM_OFFSET: usize = 6;
/// Minimum TCP header length.
pub(super) const TCP_MIN_HDR: usize = 20;
/// Maximum TCP header length (data offset 15).
pub(super) const TCP_MAX_HDR: usize = 60;
/// UDP header length.
pub(super) const UDP_HDR: usize = 8;

/// What the fixed IP header says, read without trusting any length beyond the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IpHdr {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Bytes of IP header (IPv4 with options; 40 for IPv6).
    pub hdr_len: usize,
    /// IPv4 protocol / IPv6 next header.
    pub proto: u8,
    /// The packet length the header claims (IPv4 total length; 40 + IPv6 payload length).
    pub declared_len: usize,
    /// IPv4 fragment (MF set or offset non-zero). Always false for IPv6.
    pub fragment: bool,
}

/// Reads a big-endian u16 at `at`, if the bytes are there.
#[inline]
pub(super) fn rd16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Reads a big-endian u32 at `at`, if the bytes are there.
#[inline]
pub(super) fn rd32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Writes a big-endian u16 at `at`; false (nothing written) if out of bounds.
#[inline]
pub(super) fn wr16(b: &mut [u8], at: usize, v: u16) -> bool {
    match at.checked_add(2).and_then(|end| b.get_mut(at..end)) {
        Some(s) => {
            s.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Writes a big-endian u32 at `at`; false (nothing written) if out of bounds.
#[inline]
pub(super) fn wr32(b: &mut [u8], at: usize, v: u32) -> bool {
    match at.checked_add(4).and_then(|end| b.get_mut(at..end)) {
        Some(s) => {
            s.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Parses the fixed IP header at the start of `ip`. `None` unless the version is 4 or 6 and
/// the whole IP header (IPv4 options included) is present.
pub(super) fn parse_ip(ip: &[u8]) -> Option<IpHdr> {
    match ip.first()? >> 4 {
        4 => {
            if ip.len() < 20 {
                return None;
            }
            let hdr_len = usize::from(ip[0] & 0x0f) * 4;
            if hdr_len < 20 || hdr_len > ip.len() {
                return None;
            }
            let frag = rd16(ip, 6)?;
            Some(IpHdr {
                v6: false,
                hdr_len,
                proto: ip[9],
                declared_len: usize::from(rd16(ip, 2)?),
                fragment: frag & 0x3fff != 0,
            })
        }
        6 => {
            if ip.len() < 40 {
                return None;
            }
            Some(IpHdr {
                v6: true,
                hdr_len: 40,
                proto: ip[6],
                declared_len: 40 + usize::from(rd16(ip, 4)?),
                fragment: false,
            })
        }
        _ => None,
    }
}

/// The L4 header length of the header starting at `l4`: the TCP data offset (20..=60,
/// all present in `l4`) or 8 for UDP (present). `None` for other protocols or short data.
pub(super) fn l4_hdr_len(proto: u8, l4: &[u8]) -> Option<usize> {
    match proto {
        PROTO_TCP => {
            let doff = usize::from(l4.get(12)? >> 4) * 4;
            (TCP_MIN_HDR..=TCP_MAX_HDR)
                .contains(&doff)
                .then_some(doff)
                .filter(|&d| d <= l4.len())
        }
        PROTO_UDP => (l4.len() >= UDP_HDR).then_some(UDP_HDR),
        _ => None,
    }
}

/// Offset of the checksum field inside the L4 header of `proto` (TCP or UDP).
pub(super) fn csum_offset(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(TCP_CSUM_OFFSET),
        PROTO_UDP => Some(UDP_CSUM_OFFSET),
        _ => None,
    }
}

/// The pseudo-header sum for the IP header at the start of `ip` (only the addresses are
/// read: IPv4 bytes 12..20, IPv6 bytes 8..40; the caller checked they are present), with
/// protocol `proto` and upper-layer length `l4_len`.
pub(super) fn pseudo_sum(ip: &[u8], v6: bool, proto: u8, l4_len: usize) -> Sum {
    let addrs = if v6 { ip.get(8..40) } else { ip.get(12..20) };
    let s = checksum::sum(addrs.unwrap_or(&[]), 0);
    add(add(s, u64::from(proto)), l4_len as u64)
}

/// One's complement addition of two partial sums (end-around carry): a [`Sum`] may be any
/// `u64`, so plain `+` could overflow.
#[inline]
pub(super) fn add(a: Sum, b: Sum) -> Sum {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// One's complement equality of two 16-bit checksum values (`0x0000 == 0xffff`).
#[inline]
pub(super) fn csum_eq(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// Recomputes the IPv4 header checksum of the `hdr_len`-byte header at the start of `ip`.
pub(super) fn fill_ipv4_checksum(ip: &mut [u8], hdr_len: usize) {
    if ip.len() < hdr_len || hdr_len < 20 {
        return;
    }
    ip[10] = 0;
    ip[11] = 0;
    let c = checksum::checksum(&ip[..hdr_len]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Copies `src` into `dst` (same length) and returns `acc` plus the one's complement sum
/// of the copied bytes: the fused copy-and-checksum pass over a payload.
///
/// The sum is identical to `checksum::sum(src, acc)` (8-byte big-endian words, an odd tail
/// zero-padded).
pub(super) fn copy_and_sum(dst: &mut [u8], src: &[u8], acc: Sum) -> Sum {
    // A segment (at most 64 KB, usually ~1.4 KB) is copied with memcpy and summed while it
    // is still in the cache: faster than a fused word-by-word loop.
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
    checksum::sum(&dst[..n], acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_sum_matches_sum() {
        for n in 0..40usize {
            let src: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let mut dst = vec![0u8; n];
            let s = copy_and_sum(&mut dst, &src, 12345);
            assert_eq!(dst, src);
            assert_eq!(
                checksum::fold(s),
                checksum::fold(checksum::sum(&src, 12345))
            );
        }
    }

    #[test]
    fn pseudo_sum_never_overflows() {
        // Addresses summing to nearly 2^64 (found by the split fuzzer).
        let ip = [0xffu8; 40];
        let s = pseudo_sum(&ip, true, 6, 65535);
        let s4 = pseudo_sum(&ip, false, 6, 65535);
        assert_eq!(
            checksum::fold(s),
            checksum::fold(checksum::sum(&[0xff; 32], 6 + 65535))
        );
        assert_eq!(
            checksum::fold(s4),
            checksum::fold(checksum::sum(&[0xff; 8], 6 + 65535))
        );
        assert_eq!(add(u64::MAX, 1), 1);
    }

    #[test]
    fn readers_are_bounds_checked() {
        assert_eq!(rd16(&[1], 0), None);
        assert_eq!(rd16(&[1, 2], usize::MAX), None);
        assert_eq!(rd32(&[1, 2, 3], 0), None);
        assert!(!wr16(&mut [0u8; 1], 0, 1));
        assert!(!wr32(&mut [0u8; 4], usize::MAX - 1, 1));
        assert_eq!(parse_ip(&[]), None);
        assert_eq!(parse_ip(&[0x46; 20]), None); // IHL 6 but 20 bytes
        assert_eq!(parse_ip(&[0x60; 39]), None);
        assert_eq!(l4_hdr_len(PROTO_TCP, &[0u8; 20]), None); // data offset 0
        assert_eq!(l4_hdr_len(PROTO_UDP, &[0u8; 7]), None);
        assert!(csum_eq(0, 0xffff) && csum_eq(0xffff, 0) && !csum_eq(1, 2));
    }
}
