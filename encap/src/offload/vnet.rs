//! The `virtio_net_hdr` that a TUN/TAP device with `IFF_VNET_HDR` puts in front of every
//! packet, and the checksum states that go with it.
//!
//! Layout (10 bytes, little-endian on the x86 "legacy" TUN interface):
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `flags` | [`F_NEEDS_CSUM`]: the L4 checksum is partial, finish it; [`F_DATA_VALID`] |
//! | 1 | `gso_type` | [`GSO_NONE`], [`GSO_TCPV4`], [`GSO_TCPV6`], [`GSO_UDP_L4`], optionally `\|` [`GSO_ECN`] |
//! | 2 | `hdr_len` | header bytes in front of the payload (untrustworthy on read, see below) |
//! | 4 | `gso_size` | payload bytes per segment (the MSS), not the segment's size |
//! | 6 | `csum_start` | offset of the L4 header from the start of the packet |
//! | 8 | `csum_offset` | offset of the checksum field in the L4 header: 16 (TCP), 6 (UDP) |
//!
//! With `NEEDS_CSUM` the L4 checksum field holds the folded, *non-complemented*
//! pseudo-header sum (what Linux leaves in a `CHECKSUM_PARTIAL` packet); whoever finishes
//! it sums from `csum_start` to the end with that value in place and stores the complement
//! ([`finish_checksum`]). [`l4_checksum_state`] tells a finished checksum from a partial one
//! and from a corrupt one, and [`gso_header_for`] prepares a packet (partial, or longer than
//! the device MTU) to be written to a device with `NEEDS_CSUM` and, if needed, GSO.

use core::fmt;

use super::ip::{self, tcp_flags};
use crate::wire::checksum::{self, fold};
use crate::wire::{PROTO_TCP, PROTO_UDP};

/// Length of `struct virtio_net_hdr` (not the 12-byte `virtio_net_hdr_mrg_rxbuf`).
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the checksum at `csum_start + csum_offset` is partial and must be finished.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was validated (ignored by the kernel on TUN writes).
pub const F_DATA_VALID: u8 = 2;

/// `gso_type`: not a GSO packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 segmentation (TSO).
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (UFO); obsolete, never accepted here.
pub const GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6 segmentation (TSO).
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation offload (USO), IPv4 or IPv6.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP super-packet carries CWR, to be kept on the first segment only.
pub const GSO_ECN: u8 = 0x80;

/// A `virtio_net_hdr`, decoded. `Default` is the all-zero header of a plain packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// [`F_NEEDS_CSUM`], [`F_DATA_VALID`].
    pub flags: u8,
    /// One of the `GSO_*` values, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Bytes of headers in front of the payload (L3+L4 on a TUN, L2+L3+L4 on a TAP).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS).
    pub gso_size: u16,
    /// Offset of the L4 header.
    pub csum_start: u16,
    /// Offset of the checksum field inside the L4 header.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Decodes the first [`VNET_HDR_LEN`] bytes of `bytes`; `None` if there are fewer.
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        let b = bytes.get(..VNET_HDR_LEN)?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// Encodes the header (little-endian).
    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Whether `gso_type` is anything but [`GSO_NONE`].
    pub fn is_gso(&self) -> bool {
        self.gso_type != GSO_NONE
    }

    /// Whether [`F_NEEDS_CSUM`] is set.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// The segmentation this header asks for: `Ok(None)` for [`GSO_NONE`].
    ///
    /// Errors ([`OffloadError::UnsupportedGso`]): the [`GSO_ECN`] bit (weft does not enable
    /// `TUN_F_TSO_ECN`), UFO ([`GSO_UDP`]), an unknown type, or a `gso_size` of 0.
    pub fn gso(&self) -> Result<Option<Gso>, OffloadError> {
        let kind = match self.gso_type {
            GSO_NONE => return Ok(None),
            GSO_TCPV4 => GsoKind::TcpV4,
            GSO_TCPV6 => GsoKind::TcpV6,
            GSO_UDP_L4 => GsoKind::UdpL4,
            _ => return Err(OffloadError::UnsupportedGso),
        };
        if self.gso_size == 0 {
            return Err(OffloadError::UnsupportedGso);
        }
        Ok(Some(Gso {
            kind,
            size: self.gso_size,
        }))
    }
}

/// The kind of segmentation a super-packet asks for.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP (USO) over IPv4 or IPv6.
    UdpL4,
}

impl GsoKind {
    /// The `gso_type` value of this kind (without [`GSO_ECN`]).
    pub fn gso_type(self) -> u8 {
        match self {
            GsoKind::TcpV4 => GSO_TCPV4,
            GsoKind::TcpV6 => GSO_TCPV6,
            GsoKind::UdpL4 => GSO_UDP_L4,
        }
    }
}

/// A segmentation request: the kind and the payload bytes per segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// What to segment.
    pub kind: GsoKind,
    /// Payload bytes per segment (the MSS for TCP); every segment but the last carries
    /// exactly this many.
    pub size: u16,
}

/// Why a packet cannot be split, finished or prepared for offload.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// The headers are not a well-formed IPv4/IPv6 + TCP/UDP packet of the expected shape
    /// (truncated, bad IHL or data offset, fragment, extension header, empty payload, a
    /// checksum position outside the packet, a segment too long for its length field).
    Malformed,
    /// The GSO request is not one weft handles (ECN bit, UFO, unknown type, size 0), or it
    /// does not match the packet (TCPv4 on an IPv6 packet, UDP GSO on TCP, ...).
    UnsupportedGso,
    /// The packet would need more segments than the caller can hold.
    TooManySegments,
    /// The output buffer is smaller than the bytes to write.
    OutputTooSmall,
    /// The L4 checksum is neither valid nor partial: the packet is corrupt, and offloading
    /// it with `NEEDS_CSUM` would launder it into a valid-looking one.
    BadChecksum,
    /// The device MTU leaves no room for payload after the IP and L4 headers.
    MtuTooSmall,
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadError::Malformed => "malformed packet for offload (headers, lengths or payload)",
            OffloadError::UnsupportedGso => "unsupported or mismatched GSO type or size",
            OffloadError::TooManySegments => "super-packet has more segments than buffers",
            OffloadError::OutputTooSmall => "output buffer too small for the segments",
            OffloadError::BadChecksum => "L4 checksum is neither valid nor partial (corrupt)",
            OffloadError::MtuTooSmall => "device MTU leaves no room for payload",
        })
    }
}

impl std::error::Error for OffloadError {}

/// Finishes a partial checksum (`GSO_NONE` + [`F_NEEDS_CSUM`]): the 16-bit field at
/// `csum_start + csum_offset` holds the folded pseudo-header sum; the one's complement sum
/// of `pkt[csum_start..]` (field included, as the seed) is complemented and stored there.
///
/// A result of `0x0000` is stored as `0xffff`, as Linux's `skb_checksum_help` does (the
/// same value in one's complement, and the only valid spelling of a computed zero for UDP).
///
/// Errors: [`OffloadError::Malformed`] if the field is not inside `pkt`.
pub fn finish_checksum(
    pkt: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), OffloadError> {
    let field = csum_start
        .checked_add(csum_offset)
        .filter(|&f| f.checked_add(2).is_some_and(|end| end <= pkt.len()))
        .ok_or(OffloadError::Malformed)?;
    let c = !fold(checksum::sum(&pkt[csum_start..], 0));
    let c = if c == 0 { 0xffff } else { c };
    ip::wr16(pkt, field, c);
    Ok(())
}

/// The state of the L4 checksum of a packet, see [`l4_checksum_state`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Checksum {
    /// The checksum verifies (or is 0, "none", on UDP over IPv4).
    Valid,
    /// The field holds the folded, non-complemented pseudo-header sum: a `CHECKSUM_PARTIAL`
    /// packet as a Linux sender leaves it (to be finished, or written with `NEEDS_CSUM`).
    Partial,
    /// Neither: the packet is corrupt.
    Invalid,
    /// Not a TCP/UDP packet this can judge: another protocol, a fragment, an IPv6
    /// extension header, or malformed lengths.
    NotApplicable,
}

/// Headers of a TCP/UDP packet, with the lengths cross-checked against the bytes present.
#[derive(Debug, Clone, Copy)]
struct L4Packet {
    ip: ip::IpHdr,
    /// Bytes of L4 header + payload, from the IP length field.
    l4_len: usize,
    /// Offset of the checksum field from the L4 header.
    csum_off: usize,
}

/// Parses the IP packet at the start of `ip_bytes` as unfragmented TCP/UDP whose IP length
/// field fits in the bytes present (bytes after it are padding).
fn parse_l4(ip_bytes: &[u8]) -> Option<L4Packet> {
    let ip = ip::parse_ip(ip_bytes)?;
    if ip.fragment || ip.declared_len > ip_bytes.len() {
        return None;
    }
    let csum_off = ip::csum_offset(ip.proto)?;
    let l4_len = ip.declared_len.checked_sub(ip.hdr_len)?;
    let l4 = &ip_bytes[ip.hdr_len..ip.declared_len];
    let l4_hdr = ip::l4_hdr_len(ip.proto, l4)?;
    if ip.proto == PROTO_UDP && usize::from(ip::rd16(l4, 4)?) != l4_len {
        return None;
    }
    debug_assert!(l4_hdr <= l4_len);
    Some(L4Packet {
        ip,
        l4_len,
        csum_off,
    })
}

/// Judges the L4 checksum of the IP packet starting at `pkt[l3_offset..]` (the IP length
/// field decides where it ends; bytes after it are ignored as padding).
///
/// For IPv4 (not a fragment) or IPv6 (next header TCP/UDP directly) carrying TCP or UDP:
/// [`L4Checksum::Valid`] if the checksum verifies (a zero UDP checksum over IPv4 counts as
/// valid), else [`L4Checksum::Partial`] if the field equals the folded pseudo-header sum for
/// the packet's L4 length (`0x0000 == 0xffff`), else [`L4Checksum::Invalid`]. Anything else
/// (other protocols, fragments, a UDP length that disagrees with the IP length, truncated
/// headers) is [`L4Checksum::NotApplicable`].
pub fn l4_checksum_state(pkt: &[u8], l3_offset: usize) -> L4Checksum {
    let Some(ip_bytes) = pkt.get(l3_offset..) else {
        return L4Checksum::NotApplicable;
    };
    let Some(p) = parse_l4(ip_bytes) else {
        return L4Checksum::NotApplicable;
    };
    let l4 = &ip_bytes[p.ip.hdr_len..p.ip.declared_len];
    let field = ip::rd16(l4, p.csum_off).unwrap_or(0);
    if p.ip.proto == PROTO_UDP && !p.ip.v6 && field == 0 {
        return L4Checksum::Valid;
    }
    let pseudo = ip::pseudo_sum(ip_bytes, p.ip.v6, p.ip.proto, p.l4_len);
    if fold(checksum::sum(l4, pseudo)) == 0xffff {
        return L4Checksum::Valid;
    }
    if ip::csum_eq(field, fold(pseudo)) {
        return L4Checksum::Partial;
    }
    L4Checksum::Invalid
}

/// Whether the checksum field of the TCP/UDP packet at `pkt[l3_offset..]` holds the bare
/// pseudo-header sum, as a Linux sender leaves a `CHECKSUM_PARTIAL` packet: a look at the
/// headers only, so that ordinary packets are not summed twice on the way to a device (the
/// kernel verifies them). A valid checksum that happens to have that value is told apart by
/// [`l4_checksum_state`], which a `true` should be followed by.
pub fn maybe_partial(pkt: &[u8], l3_offset: usize) -> bool {
    let Some(p) = pkt.get(l3_offset..).and_then(parse_l4) else {
        return false;
    };
    let ip_bytes = &pkt[l3_offset..];
    let field = ip::rd16(&ip_bytes[p.ip.hdr_len..], p.csum_off).unwrap_or(0);
    ip::csum_eq(
        field,
        fold(ip::pseudo_sum(ip_bytes, p.ip.v6, p.ip.proto, p.l4_len)),
    )
}

/// Prepares the TCP/UDP packet at `pkt[l3_offset..]` to be written to a TUN/TAP device with
/// [`F_NEEDS_CSUM`], and with GSO when the IP packet is longer than `mtu` (the device MTU,
/// counted from the IP header). Use it for a packet whose checksum is
/// [`Partial`](L4Checksum::Partial) (kernel vxlan sends such bytes) or that is longer than
/// the MTU (a kernel TSO frame arriving unsegmented).
///
/// Returns `flags = NEEDS_CSUM`, `csum_start = l3_offset + ip header`, `csum_offset = 16`
/// (TCP) / `6` (UDP), `hdr_len = l3_offset + ip header + l4 header`; and when the packet is
/// longer than `mtu`, `gso_type` [`GSO_TCPV4`]/[`GSO_TCPV6`]/[`GSO_UDP_L4`] (with
/// [`GSO_ECN`] when the TCP header carries CWR, so that only the first segment keeps it) and
/// `gso_size = mtu - ip header - l4 header`. It rewrites the checksum field to the folded,
/// non-complemented pseudo-header sum over the actual L4 length (what the kernel expects
/// with `NEEDS_CSUM`), so the field may have been partial or valid before.
///
/// The IP length field says where the packet ends; the caller writes `pkt` up to there.
///
/// Errors: [`OffloadError::Malformed`] (not unfragmented TCP/UDP, truncated, IP length
/// beyond the bytes, a TCP GSO packet without payload); [`OffloadError::BadChecksum`] when
/// the checksum is neither valid nor partial (never launder corruption);
/// [`OffloadError::MtuTooSmall`] when GSO is needed but `mtu` leaves no payload room.
pub fn gso_header_for(
    pkt: &mut [u8],
    l3_offset: usize,
    mtu: usize,
) -> Result<VnetHdr, OffloadError> {
    let ip_bytes = pkt.get(l3_offset..).ok_or(OffloadError::Malformed)?;
    let p = parse_l4(ip_bytes).ok_or(OffloadError::Malformed)?;
    let l4 = &ip_bytes[p.ip.hdr_len..p.ip.declared_len];
    let l4_hdr = ip::l4_hdr_len(p.ip.proto, l4).ok_or(OffloadError::Malformed)?;
    match l4_checksum_state(pkt, l3_offset) {
        L4Checksum::Valid | L4Checksum::Partial => {}
        L4Checksum::Invalid => return Err(OffloadError::BadChecksum),
        _ => return Err(OffloadError::Malformed),
    }
    let hdrs = p.ip.hdr_len + l4_hdr;
    let to_u16 = |v: usize| u16::try_from(v).map_err(|_| OffloadError::Malformed);
    let mut hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: to_u16(l3_offset + hdrs)?,
        gso_size: 0,
        csum_start: to_u16(l3_offset + p.ip.hdr_len)?,
        csum_offset: to_u16(p.csum_off)?,
    };
    if p.ip.declared_len > mtu {
        if p.ip.declared_len == hdrs {
            return Err(OffloadError::Malformed);
        }
        let size = mtu
            .checked_sub(hdrs)
            .filter(|&s| s > 0)
            .ok_or(OffloadError::MtuTooSmall)?;
        hdr.gso_size = u16::try_from(size).map_err(|_| OffloadError::MtuTooSmall)?;
        hdr.gso_type = match (p.ip.proto, p.ip.v6) {
            (PROTO_TCP, false) => GSO_TCPV4,
            (PROTO_TCP, true) => GSO_TCPV6,
            _ => GSO_UDP_L4,
        };
        if p.ip.proto == PROTO_TCP && l4.get(13).is_some_and(|f| f & tcp_flags::CWR != 0) {
            hdr.gso_type |= GSO_ECN;
        }
    }
    let pseudo = fold(ip::pseudo_sum(ip_bytes, p.ip.v6, p.ip.proto, p.l4_len));
    let field = l3_offset + p.ip.hdr_len + p.csum_off;
    ip::wr16(pkt, field, pseudo);
    Ok(hdr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testpkt::*;

    #[test]
    fn vnet_hdr_roundtrip_little_endian() {
        let bytes = [1, 1, 40, 0, 0xb4, 0x05, 20, 0, 16, 0];
        let h = VnetHdr::parse(&bytes).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 40,
                gso_size: 1460,
                csum_start: 20,
                csum_offset: 16
            }
        );
        assert_eq!(h.emit(), bytes);
        assert!(h.is_gso() && h.needs_csum());
        assert_eq!(
            h.gso(),
            Ok(Some(Gso {
                kind: GsoKind::TcpV4,
                size: 1460
            }))
        );
        assert_eq!(VnetHdr::parse(&bytes[..9]), None);
        assert_eq!(VnetHdr::default().emit(), [0; 10]);
        assert_eq!(VnetHdr::default().gso(), Ok(None));
    }

    #[test]
    fn gso_types_rejected() {
        let mut h = VnetHdr {
            gso_type: GSO_TCPV4 | GSO_ECN,
            gso_size: 1448,
            ..VnetHdr::default()
        };
        assert_eq!(h.gso(), Err(OffloadError::UnsupportedGso));
        h.gso_type = GSO_UDP;
        assert_eq!(h.gso(), Err(OffloadError::UnsupportedGso));
        h.gso_type = 9;
        assert_eq!(h.gso(), Err(OffloadError::UnsupportedGso));
        h.gso_type = GSO_TCPV6;
        h.gso_size = 0;
        assert_eq!(h.gso(), Err(OffloadError::UnsupportedGso));
        h.gso_size = 1;
        assert_eq!(h.gso().unwrap().unwrap().kind, GsoKind::TcpV6);
        h.gso_type = GSO_UDP_L4;
        assert_eq!(h.gso().unwrap().unwrap().kind, GsoKind::UdpL4);
        assert!(!OffloadError::BadChecksum.to_string().is_empty());
    }

    #[test]
    fn finish_checksum_gso_none_needs_csum_every_tcp_packet() {
        // As read from a 6.18 TUN: even a SYN-ACK arrives with flags=1, csum_start=20,
        // csum_offset=16 and a partial checksum.
        let f = Flow::v4_tcp();
        for (flags, payload) in [(SYN | ACK, &b""[..]), (ACK | PSH, &b"hello world!"[..])] {
            let good = f.packet(1000, 7, flags, payload);
            let mut partial = f.packet_partial(1000, 7, flags, payload);
            assert_eq!(l4_checksum_state(&partial, 0), L4Checksum::Partial);
            assert_ne!(partial, good);
            finish_checksum(&mut partial, 20, 16).unwrap();
            assert_eq!(partial, good);
            assert_eq!(l4_checksum_state(&partial, 0), L4Checksum::Valid);
        }
        assert_eq!(
            finish_checksum(&mut [0u8; 37], 20, 16),
            Err(OffloadError::Malformed)
        );
        assert_eq!(
            finish_checksum(&mut [0u8; 38], 20, 16),
            Ok(()),
            "field at the very end"
        );
        assert_eq!(
            finish_checksum(&mut [0u8; 4], usize::MAX, 16),
            Err(OffloadError::Malformed)
        );
    }

    #[test]
    fn finish_checksum_udp_zero_becomes_ffff() {
        // A datagram whose complete checksum is 0: find a payload that makes it so.
        let f = Flow::v4_udp();
        let mut found = false;
        for x in 0..=u16::MAX {
            let mut pkt = f.packet_partial(0, 1, 0, &x.to_be_bytes());
            finish_checksum(&mut pkt, 20, 6).unwrap();
            let v = u16::from_be_bytes([pkt[26], pkt[27]]);
            assert_ne!(v, 0);
            if v == 0xffff {
                found = true;
                assert_eq!(l4_checksum_state(&pkt, 0), L4Checksum::Valid);
                break;
            }
        }
        assert!(found);
    }

    #[test]
    fn checksum_states() {
        for f in [
            Flow::v4_tcp(),
            Flow::v6_tcp(),
            Flow::v4_udp(),
            Flow::v6_udp(),
        ] {
            let good = f.packet(5, 9, ACK, b"payload bytes");
            assert_eq!(l4_checksum_state(&good, 0), L4Checksum::Valid);
            let partial = f.packet_partial(5, 9, ACK, b"payload bytes");
            assert_eq!(l4_checksum_state(&partial, 0), L4Checksum::Partial);
            let mut bad = good.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x40;
            assert_eq!(l4_checksum_state(&bad, 0), L4Checksum::Invalid);
            // TAP offset with an Ethernet header in front, and Ethernet padding after.
            let mut tap = vec![0xee; 14];
            tap.extend_from_slice(&good);
            tap.extend_from_slice(&[0; 6]);
            assert_eq!(l4_checksum_state(&tap, 14), L4Checksum::Valid);
            assert_eq!(l4_checksum_state(&tap, 13), L4Checksum::NotApplicable);
            assert_eq!(l4_checksum_state(&tap, 1000), L4Checksum::NotApplicable);
            // Truncated: IP length beyond the bytes.
            assert_eq!(
                l4_checksum_state(&good[..good.len() - 1], 0),
                L4Checksum::NotApplicable
            );
        }
        // UDP over IPv4 with checksum 0 is valid; over IPv6 it is not.
        let mut p = Flow::v4_udp().packet(0, 1, 0, b"abc");
        p[26] = 0;
        p[27] = 0;
        assert_eq!(l4_checksum_state(&p, 0), L4Checksum::Valid);
        let mut p = Flow::v6_udp().packet(0, 1, 0, b"abc");
        p[46] = 0;
        p[47] = 0;
        assert_ne!(l4_checksum_state(&p, 0), L4Checksum::Valid);
        // A fragment is not applicable.
        let mut p = Flow::v4_tcp().packet(0, 1, ACK, b"abc");
        p[6] |= 0x20;
        assert_eq!(l4_checksum_state(&p, 0), L4Checksum::NotApplicable);
        // ICMP is not applicable.
        let mut p = Flow::v4_tcp().packet(0, 1, ACK, b"abc");
        p[9] = 1;
        assert_eq!(l4_checksum_state(&p, 0), L4Checksum::NotApplicable);
        // IPv6 with an extension header first is not applicable.
        let mut p = Flow::v6_tcp().packet(0, 1, ACK, b"abc");
        p[6] = 0;
        assert_eq!(l4_checksum_state(&p, 0), L4Checksum::NotApplicable);
    }

    #[test]
    fn partial_matches_zero_and_ffff() {
        // Field 0x0000 vs a pseudo sum of 0xffff (and back) is one's complement equal.
        let f = Flow::v4_tcp();
        let mut p = f.packet_partial(1, 1, ACK, b"x");
        let v = u16::from_be_bytes([p[36], p[37]]);
        if v == 0xffff {
            p[36] = 0;
            p[37] = 0;
            assert_eq!(l4_checksum_state(&p, 0), L4Checksum::Partial);
        }
        assert!(ip::csum_eq(0, 0xffff));
    }

    #[test]
    fn gso_header_for_kernel_vxlan_tso_frame() {
        // A 30,000-byte TSO frame from a kernel vxlan peer: IPv4 total length = the whole
        // packet, TCP checksum partial. Written to a TUN of MTU 1450 as GSO.
        let f = Flow::v4_tcp();
        let payload = pattern(29_960);
        let mut pkt = f.packet_partial(77, 3, ACK | PSH, &payload);
        assert_eq!(pkt.len(), 30_000);
        let hdr = gso_header_for(&mut pkt, 0, 1450).unwrap();
        assert_eq!(
            hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 40,
                gso_size: 1410,
                csum_start: 20,
                csum_offset: 16
            }
        );
        assert_eq!(l4_checksum_state(&pkt, 0), L4Checksum::Partial);
        // The kernel would split it into these; each must verify.
        let gso = hdr.gso().unwrap().unwrap();
        let layout = crate::offload::split_layout(&pkt, 0, gso).unwrap();
        let mut out = vec![0u8; layout.total_len];
        crate::offload::split(&pkt, 0, gso, &mut out).unwrap();
        for seg in out.chunks(layout.segment_len) {
            assert_eq!(l4_checksum_state(seg, 0), L4Checksum::Valid);
        }
    }

    #[test]
    fn gso_header_for_valid_small_ipv6_tap_and_udp() {
        // Valid checksum, short packet, TAP offset: NEEDS_CSUM only, field made partial.
        let f = Flow::v6_tcp();
        let mut pkt = vec![0xaa; 14];
        pkt.extend_from_slice(&f.packet(1, 0, ACK, b"hello"));
        let hdr = gso_header_for(&mut pkt, 14, 1500).unwrap();
        assert_eq!(
            hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_NONE,
                hdr_len: 14 + 40 + 20,
                gso_size: 0,
                csum_start: 54,
                csum_offset: 16
            }
        );
        assert_eq!(l4_checksum_state(&pkt, 14), L4Checksum::Partial);
        finish_checksum(&mut pkt, 54, 16).unwrap();
        assert_eq!(l4_checksum_state(&pkt, 14), L4Checksum::Valid);

        // Long IPv6 TCP with CWR: GSO_TCPV6 | ECN.
        let mut pkt = f.packet_partial(1, 0, ACK | CWR, &pattern(3000));
        let hdr = gso_header_for(&mut pkt, 0, 1500).unwrap();
        assert_eq!(hdr.gso_type, GSO_TCPV6 | GSO_ECN);
        assert_eq!(hdr.gso_size, 1500 - 60);

        // UDP longer than the MTU: USO.
        let mut pkt = Flow::v4_udp().packet(0, 1, 0, &pattern(4000));
        let hdr = gso_header_for(&mut pkt, 0, 1500).unwrap();
        assert_eq!(
            (hdr.gso_type, hdr.gso_size, hdr.csum_offset),
            (GSO_UDP_L4, 1472, 6)
        );
        assert_eq!(l4_checksum_state(&pkt, 0), L4Checksum::Partial);
    }

    #[test]
    fn gso_header_for_errors() {
        let f = Flow::v4_tcp();
        let mut bad = f.packet(1, 0, ACK, b"hello");
        bad[44] ^= 1;
        assert_eq!(
            gso_header_for(&mut bad, 0, 1500),
            Err(OffloadError::BadChecksum)
        );
        let mut big = f.packet(1, 0, ACK, &pattern(2000));
        assert_eq!(
            gso_header_for(&mut big, 0, 40),
            Err(OffloadError::MtuTooSmall)
        );
        let mut short = f.packet(1, 0, ACK, b"x");
        assert_eq!(
            gso_header_for(&mut short[..30], 0, 1500),
            Err(OffloadError::Malformed)
        );
        assert_eq!(
            gso_header_for(&mut short, 99, 1500),
            Err(OffloadError::Malformed)
        );
        // A bare ACK longer than the "MTU" has nothing to segment.
        let mut ack = f.packet(1, 0, ACK, b"");
        assert_eq!(
            gso_header_for(&mut ack, 0, 30),
            Err(OffloadError::Malformed)
        );
    }

    #[test]
    fn a_partial_checksum_is_recognised_from_the_headers() {
        let flow = crate::offload::testpkt::Flow::v4_tcp();
        let partial = flow.packet_partial(1, 1, crate::offload::testpkt::ACK, &[7u8; 40]);
        assert!(maybe_partial(&partial, 0));
        assert_eq!(l4_checksum_state(&partial, 0), L4Checksum::Partial);
        let valid = flow.packet(1, 1, crate::offload::testpkt::ACK, &[7u8; 40]);
        assert!(!maybe_partial(&valid, 0));
        assert!(!maybe_partial(&partial[..10], 0));
        assert!(!maybe_partial(&partial, 70));
    }
}
