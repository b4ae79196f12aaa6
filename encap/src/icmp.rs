//! ICMP and ICMPv6 error synthesis, in place.
//!
//! When weft drops a packet it often owes the sender an error: net unreachable (no route),
//! time exceeded (TTL / hop limit ran out) or fragmentation needed / packet too big.
//! [`write_error`] builds that error **in the caller's buffer**, around the offending packet:
//!
//! ```text
//!  buf: [ ... headroom ... | offending packet ...................... ]
//!                          ^ start
//!  after write_error:
//!       [ ... | IP hdr | ICMP hdr | quote (a prefix of the offender) ]
//!               ^ start - hdr     ^ start                            ^ start + quote_len
//! ```
//!
//! The quote stays where it is (no copy); only the new IP and ICMP headers (28 bytes for
//! IPv4, 48 for IPv6, at most [`HEADROOM`]) are written in front of it, and the quote is cut
//! so the whole error fits in 576 bytes (IPv4, RFC 1812 4.3.2.3) or 1280 bytes (IPv6,
//! RFC 4443 2.4(c)).
//!
//! [`may_answer`] implements the rules about when an error must *not* be sent (RFC 1122
//! 3.2.2, RFC 1812 4.3.2.7, RFC 4443 2.4(e)); `write_error` applies them itself. Rate
//! limiting is not done here (see `ratelimit`).
//!
//! Everything here is total: any byte string as input yields `None`/`false` rather than a
//! panic.

use core::ops::Range;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{icmpv4, icmpv6, ipv4, ipv6, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPV6_FRAGMENT};

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpErrorKind {
    /// No route to the destination network.
    ///
    /// IPv4: type 3 code 0 (net unreachable). IPv6: type 1 code 0 (no route to destination).
    NetUnreachable,
    /// The TTL / hop limit ran out in transit.
    ///
    /// IPv4: type 11 code 0. IPv6: type 3 code 0.
    TimeExceeded,
    /// The packet is larger than the next hop's `mtu` (and, for IPv4, has DF set).
    ///
    /// IPv4: type 3 code 4 (fragmentation needed) with the MTU in the low 16 bits of the
    /// rest of header (saturating at 65535). IPv6: type 2 (packet too big) with the MTU.
    TooBig {
        /// The MTU of the next hop, in bytes.
        mtu: u32,
    },
}

/// Bytes of headroom [`write_error`] needs in front of the offending packet (IPv6 header +
/// ICMPv6 header = 48; an IPv4 error needs only 28).
pub const HEADROOM: usize = 48;

/// Length of the headers of an ICMP error over IPv4 (IPv4 + ICMP).
const HDR_V4: usize = ipv4::HEADER_LEN + icmpv4::HEADER_LEN;
/// Length of the headers of an ICMPv6 error (IPv6 + ICMPv6).
const HDR_V6: usize = ipv6::HEADER_LEN + icmpv6::HEADER_LEN;
/// Largest ICMP error over IPv4 (RFC 1812 4.3.2.3).
const MAX_ERROR_V4: usize = 576;
/// Largest ICMPv6 error (the IPv6 minimum MTU, RFC 4443 2.4(c)).
const MAX_ERROR_V6: usize = 1280;
/// TTL / hop limit of the errors weft sends.
const ERROR_TTL: u8 = 64;

/// Whether an IPv4 source address may receive an ICMP error (RFC 1812 4.3.2.7: not
/// unspecified, loopback, multicast, limited broadcast or class E).
fn is_answerable_v4_source(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.octets()[0] >= 240)
}

/// Whether an IPv6 source address may receive an ICMPv6 error (RFC 4443 2.4(e.6) and
/// common sense: not unspecified, multicast or loopback).
fn is_answerable_v6_source(a: &Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || a.is_loopback())
}

fn may_answer_v4(p: &ipv4::Packet<&[u8]>) -> bool {
    // Non-first fragments: only the first fragment is answered (RFC 1812 4.3.2.7).
    if p.frag_offset_units() != 0 {
        return false;
    }
    if !is_answerable_v4_source(p.src_addr()) {
        return false;
    }
    let dst = p.dst_addr();
    if dst.is_multicast() || dst.is_broadcast() {
        return false;
    }
    if p.protocol() == PROTO_ICMP {
        // Never answer an ICMP error; a message too short to tell is not answered either.
        match p.payload().first() {
            Some(&t) if !icmpv4::is_error_type(t) => {}
            _ => return false,
        }
    }
    true
}

fn may_answer_v6(p: &ipv6::Packet<&[u8]>) -> bool {
    if !is_answerable_v6_source(&p.src_addr()) {
        return false;
    }
    let payload = p.payload();
    match p.next_header() {
        PROTO_ICMPV6 => match payload.first() {
            Some(&t) if !icmpv6::is_error_type(t) => {}
            _ => return false,
        },
        PROTO_IPV6_FRAGMENT => {
            // Fragment header: next header, reserved, offset(13 bits)|res|M, ident.
            if payload.len() < 8 {
                return false;
            }
            let offset = u16::from_be_bytes([payload[2], payload[3]]) >> 3;
            if offset != 0 {
                return false;
            }
        }
        _ => {}
    }
    true
}

/// RFC 792/1812/4443 rules: may an error be sent about this packet at all? `packet` is a
/// whole IPv4/IPv6 packet.
///
/// `false` for: not parseable; an ICMP/ICMPv6 error message (ICMPv6: only recognised when
/// next header 58 directly follows the fixed header; informational types are fine); an
/// IPv4 non-first fragment (offset != 0); an IPv6 packet whose first extension is a
/// Fragment header (44) with nonzero offset; a source that is unspecified, multicast,
/// broadcast (IPv4 255.255.255.255 and the rest of class E), or loopback; an IPv4
/// destination that is multicast or the limited broadcast.
///
/// IPv6 multicast destinations pass here because a packet too big may still be sent about
/// them (RFC 4443 2.4(e.3)); [`write_error`] refuses the other kinds for them.
pub fn may_answer(packet: &[u8]) -> bool {
    match crate::wire::ip_version(packet) {
        Some(4) => ipv4::Packet::new_checked(packet).is_ok_and(|p| may_answer_v4(&p)),
        Some(6) => ipv6::Packet::new_checked(packet).is_ok_and(|p| may_answer_v6(&p)),
        _ => false,
    }
}

/// Writes, in place, an ICMP (IPv4 offender) or ICMPv6 (IPv6 offender) error about the
/// packet at `buf[start..start + len]`.
///
/// The quoted part stays where it is; the new IP header + ICMP header are written into
/// `buf[start - hdr..start]` (hdr = 28 for IPv4, 48 for IPv6), and the quote is cut so the
/// whole error is at most 576 bytes (IPv4, RFC 1812 4.3.2.3) or 1280 bytes (IPv6, RFC 4443
/// 2.4(c)). The quote is the offender as its header describes it (bytes after its total
/// length, e.g. padding, are not quoted).
///
/// The error goes from `src` to the offender's source address, TTL/hop limit 64, IPv4 ident
/// 0 and no DF, TOS/traffic class 0, all checksums filled (ICMPv6 with pseudo-header).
///
/// Returns the range of the error in `buf`, or `None` when `!may_answer(..)`, the headroom
/// (`start`) is too small, `src` is of the other family, the packet is malformed or
/// `start + len` is beyond `buf`, or the offender is an IPv6 packet to a multicast
/// destination and `kind` is not [`IcmpErrorKind::TooBig`]. On `None` the buffer is
/// unchanged. Never panics on any input.
pub fn write_error(
    buf: &mut [u8],
    start: usize,
    len: usize,
    src: IpAddr,
    kind: IcmpErrorKind,
) -> Option<Range<usize>> {
    let end = start.checked_add(len)?;
    let offender = buf.get(start..end)?;
    match (crate::wire::ip_version(offender)?, src) {
        (4, IpAddr::V4(src)) => write_error_v4(buf, start, len, src, kind),
        (6, IpAddr::V6(src)) => write_error_v6(buf, start, len, src, kind),
        _ => None,
    }
}

fn write_error_v4(
    buf: &mut [u8],
    start: usize,
    len: usize,
    src: Ipv4Addr,
    kind: IcmpErrorKind,
) -> Option<Range<usize>> {
    let first = start.checked_sub(HDR_V4)?;
    let offender = ipv4::Packet::new_checked(buf.get(start..start + len)?).ok()?;
    if !may_answer_v4(&offender) {
        return None;
    }
    let dst = offender.src_addr();
    let quote_len = usize::from(offender.total_len()).min(MAX_ERROR_V4 - HDR_V4);
    let (msg_type, code, rest) = match kind {
        IcmpErrorKind::NetUnreachable => (
            icmpv4::TYPE_DEST_UNREACHABLE,
            icmpv4::CODE_NET_UNREACHABLE,
            0,
        ),
        IcmpErrorKind::TimeExceeded => {
            (icmpv4::TYPE_TIME_EXCEEDED, icmpv4::CODE_TTL_EXCEEDED, 0)
        }
        IcmpErrorKind::TooBig { mtu } => (
            icmpv4::TYPE_DEST_UNREACHABLE,
            icmpv4::CODE_FRAG_NEEDED,
            mtu.min(u32::from(u16::MAX)),
        ),
    };
    let end = start + quote_len;
    let error = buf.get_mut(first..end)?;
    let (ip_hdr, message) = error.split_at_mut(ipv4::HEADER_LEN);

    let mut icmp = icmpv4::Packet::new_unchecked(message);
    icmp.set_msg_type(msg_type);
    icmp.set_code(code);
    icmp.set_rest_of_header(rest);
    icmp.fill_checksum();

    let repr = ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: PROTO_ICMP,
        payload_len: icmpv4::HEADER_LEN + quote_len,
        ttl: ERROR_TTL,
    };
    repr.emit(&mut ipv4::Packet::new_unchecked(ip_hdr));
    Some(first..end)
}

fn write_error_v6(
    buf: &mut [u8],
    start: usize,
    len: usize,
    src: Ipv6Addr,
    kind: IcmpErrorKind,
) -> Option<Range<usize>> {
    let first = start.checked_sub(HDR_V6)?;
    let offender = ipv6::Packet::new_checked(buf.get(start..start + len)?).ok()?;
    if !may_answer_v6(&offender) {
        return None;
    }
    let too_big = matches!(kind, IcmpErrorKind::TooBig { .. });
    if offender.dst_addr().is_multicast() && !too_big {
        return None;
    }
    let dst = offender.src_addr();
    let quote_len = offender.total_len().min(MAX_ERROR_V6 - HDR_V6);
    let (msg_type, code, rest) = match kind {
        IcmpErrorKind::NetUnreachable => {
            (icmpv6::TYPE_DEST_UNREACHABLE, icmpv6::CODE_NO_ROUTE, 0)
        }
        IcmpErrorKind::TimeExceeded => (
            icmpv6::TYPE_TIME_EXCEEDED,
            icmpv6::CODE_HOP_LIMIT_EXCEEDED,
            0,
        ),
        IcmpErrorKind::TooBig { mtu } => (icmpv6::TYPE_PACKET_TOO_BIG, 0, mtu),
    };
    let end = start + quote_len;
    let error = buf.get_mut(first..end)?;
    let (ip_hdr, message) = error.split_at_mut(ipv6::HEADER_LEN);

    let mut icmp = icmpv6::Packet::new_unchecked(message);
    icmp.set_msg_type(msg_type);
    icmp.set_code(code);
    icmp.set_rest_of_header(rest);
    icmp.fill_checksum(&src, &dst);

    let repr = ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: PROTO_ICMPV6,
        payload_len: icmpv6::HEADER_LEN + quote_len,
        hop_limit: ERROR_TTL,
    };
    repr.emit(&mut ipv6::Packet::new_unchecked(ip_hdr));
    Some(first..end)
}
