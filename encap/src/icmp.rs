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
//! 3.2.2, RFC 1812 4.3.2.7, RFC 4443 2.4(e)); `write_error` applies them itself, and does no
//! rate limiting: [`IcmpResponder`] puts a token bucket ([`crate::ratelimit`]) per direction
//! in front of it, shared by its clones (every worker), its mutex taken only when an error
//! is about to be written.
//!
//! Everything here is total: any byte string as input yields `None`/`false` rather than a
//! panic.

use core::ops::Range;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{icmpv4, icmpv6, ipv4, ipv6, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPV6_FRAGMENT};

/// Which error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
    /// A filter (weft's policy hook or `[[acl]]` rules) refused the packet.
    ///
    /// IPv4: type 3 code 13 (communication administratively prohibited, RFC 1812 5.2.7.1).
    /// IPv6: type 1 code 1 (communication with destination administratively prohibited).
    AdminProhibited,
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
        IcmpErrorKind::TimeExceeded => (icmpv4::TYPE_TIME_EXCEEDED, icmpv4::CODE_TTL_EXCEEDED, 0),
        IcmpErrorKind::TooBig { mtu } => (
            icmpv4::TYPE_DEST_UNREACHABLE,
            icmpv4::CODE_FRAG_NEEDED,
            mtu.min(u32::from(u16::MAX)),
        ),
        IcmpErrorKind::AdminProhibited => (
            icmpv4::TYPE_DEST_UNREACHABLE,
            icmpv4::CODE_ADMIN_PROHIBITED,
            0,
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
        IcmpErrorKind::NetUnreachable => (icmpv6::TYPE_DEST_UNREACHABLE, icmpv6::CODE_NO_ROUTE, 0),
        IcmpErrorKind::TimeExceeded => (
            icmpv6::TYPE_TIME_EXCEEDED,
            icmpv6::CODE_HOP_LIMIT_EXCEEDED,
            0,
        ),
        IcmpErrorKind::TooBig { mtu } => (icmpv6::TYPE_PACKET_TOO_BIG, 0, mtu),
        IcmpErrorKind::AdminProhibited => (
            icmpv6::TYPE_DEST_UNREACHABLE,
            icmpv6::CODE_ADMIN_PROHIBITED,
            0,
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use crate::wire::{arp, ethernet, udp, vxlan};

    const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn router_v6() -> Ipv6Addr {
        "fd00:198:18::2".parse().unwrap()
    }

    /// `HEADROOM` zero bytes followed by `packet`.
    fn with_headroom(packet: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADROOM];
        buf.extend_from_slice(packet);
        buf
    }

    /// Runs `write_error` on `packet` placed after `HEADROOM` bytes; returns the error bytes.
    fn error_about(packet: &[u8], src: IpAddr, kind: IcmpErrorKind) -> Option<Vec<u8>> {
        let mut buf = with_headroom(packet);
        let range = write_error(&mut buf, HEADROOM, packet.len(), src, kind)?;
        Some(buf[range].to_vec())
    }

    /// Checks an IPv4 ICMP error: well-formed, checksums valid; returns (type, code, rest,
    /// quote).
    fn check_v4_error(error: &[u8]) -> (u8, u8, u32, Vec<u8>) {
        let ip = ipv4::Packet::new_checked(error).expect("error parses as IPv4");
        assert_eq!(usize::from(ip.total_len()), error.len());
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), PROTO_ICMP);
        assert!(!ip.dont_frag() && !ip.is_fragment());
        assert_eq!((ip.ttl(), ip.ident()), (64, 0));
        assert!(error.len() <= 576);
        let icmp = icmpv4::Packet::new_checked(ip.payload()).expect("ICMP header");
        assert!(icmp.verify_checksum());
        (
            icmp.msg_type(),
            icmp.code(),
            icmp.rest_of_header(),
            icmp.data().to_vec(),
        )
    }

    /// Checks an ICMPv6 error likewise.
    fn check_v6_error(error: &[u8]) -> (u8, u8, u32, Vec<u8>) {
        let ip = ipv6::Packet::new_checked(error).expect("error parses as IPv6");
        assert_eq!(ip.total_len(), error.len());
        assert_eq!(ip.next_header(), PROTO_ICMPV6);
        assert_eq!(ip.hop_limit(), 64);
        assert!(error.len() <= 1280);
        let icmp = icmpv6::Packet::new_checked(ip.payload()).expect("ICMPv6 header");
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        (
            icmp.msg_type(),
            icmp.code(),
            icmp.rest_of_header(),
            icmp.data().to_vec(),
        )
    }

    #[test]
    fn ipv4_errors_match_the_kernel() {
        for (offender, kernel, kind) in [
            (
                "wire/ipv4-offender-ttl1.hex",
                "wire/ipv4-icmp-time-exceeded.hex",
                IcmpErrorKind::TimeExceeded,
            ),
            (
                "wire/ipv4-offender-unroutable.hex",
                "wire/ipv4-icmp-net-unreachable.hex",
                IcmpErrorKind::NetUnreachable,
            ),
            (
                "wire/ipv4-offender-1428-df.hex",
                "wire/ipv4-icmp-frag-needed.hex",
                IcmpErrorKind::TooBig { mtu: 1280 },
            ),
        ] {
            let offender = fixture(offender);
            let kernel = fixture(kernel);
            assert!(may_answer(&offender));
            let ours = error_about(&offender, IpAddr::V4(ROUTER_V4), kind).unwrap();
            let (t, c, rest, quote) = check_v4_error(&ours);
            let k = ipv4::Packet::new_checked(&kernel[..]).unwrap();
            let o = ipv4::Packet::new_checked(&ours[..]).unwrap();
            assert_eq!(o.total_len(), k.total_len(), "{kind:?}");
            assert_eq!(o.src_addr(), k.src_addr());
            assert_eq!(o.dst_addr(), k.dst_addr());
            assert_eq!((o.ttl(), o.protocol()), (k.ttl(), k.protocol()));
            // The ICMP message (type, code, rest of header, quote, checksum) does not depend
            // on the IP header: it must be byte-identical to the kernel's.
            assert_eq!(o.payload(), k.payload(), "{kind:?}");
            let ki = icmpv4::Packet::new_checked(k.payload()).unwrap();
            assert_eq!(
                (t, c, rest),
                (ki.msg_type(), ki.code(), ki.rest_of_header())
            );
            assert_eq!(&quote[..], &offender[..quote.len()]);
        }
    }

    #[test]
    fn ipv6_errors_match_the_kernel() {
        for (offender, kernel, kind) in [
            (
                "wire/ipv6-offender-hop1.hex",
                "wire/ipv6-icmpv6-time-exceeded.hex",
                IcmpErrorKind::TimeExceeded,
            ),
            (
                "wire/ipv6-offender-unroutable.hex",
                "wire/ipv6-icmpv6-no-route.hex",
                IcmpErrorKind::NetUnreachable,
            ),
            (
                "wire/ipv6-offender-1448.hex",
                "wire/ipv6-icmpv6-packet-too-big.hex",
                IcmpErrorKind::TooBig { mtu: 1280 },
            ),
        ] {
            let offender = fixture(offender);
            let kernel = fixture(kernel);
            assert!(may_answer(&offender));
            let ours = error_about(&offender, IpAddr::V6(router_v6()), kind).unwrap();
            let (_, _, _, quote) = check_v6_error(&ours);
            assert_eq!(&quote[..], &offender[..quote.len()]);
            // Identical to the kernel's error except the flow label the kernel picks.
            assert_eq!(ours.len(), kernel.len(), "{kind:?}");
            assert_eq!(ours[0], kernel[0] & 0xf0);
            assert_eq!(&ours[4..], &kernel[4..], "{kind:?}");
        }
    }

    #[test]
    fn quote_is_cut_at_576_and_1280() {
        let v4 = fixture("wire/ipv4-offender-1428-df.hex");
        let ours = error_about(&v4, IpAddr::V4(ROUTER_V4), IcmpErrorKind::NetUnreachable).unwrap();
        assert_eq!(ours.len(), 576);
        assert_eq!(check_v4_error(&ours).3, v4[..548].to_vec());

        let v6 = fixture("wire/ipv6-offender-1448.hex");
        let ours = error_about(&v6, IpAddr::V6(router_v6()), IcmpErrorKind::TimeExceeded).unwrap();
        assert_eq!(ours.len(), 1280);
        assert_eq!(check_v6_error(&ours).3, v6[..1232].to_vec());

        // Short offenders are quoted whole; bytes after the total length are not quoted.
        let mut small = fixture("wire/ipv4-icmp-echo-request.hex");
        let len = small.len();
        small.extend_from_slice(&[0xab; 6]);
        let ours = error_about(&small, IpAddr::V4(ROUTER_V4), IcmpErrorKind::TimeExceeded).unwrap();
        assert_eq!(ours.len(), 28 + len);
        assert_eq!(check_v4_error(&ours).3, small[..len].to_vec());

        // An offender of exactly the limit is not cut.
        let exact = v6[..1232].to_vec();
        let mut exact = exact;
        exact[4..6].copy_from_slice(&(1232u16 - 40).to_be_bytes());
        let ours =
            error_about(&exact, IpAddr::V6(router_v6()), IcmpErrorKind::TimeExceeded).unwrap();
        assert_eq!(ours.len(), 1280);
    }

    #[test]
    fn error_placement_and_range() {
        let offender = fixture("wire/ipv4-icmp-echo-request.hex");
        // Extra headroom: the error starts 28 bytes before the offender, wherever it is.
        let mut buf = vec![0x5a; 100];
        buf.extend_from_slice(&offender);
        buf.extend_from_slice(&[0x5a; 10]);
        let range = write_error(
            &mut buf,
            100,
            offender.len(),
            IpAddr::V4(ROUTER_V4),
            IcmpErrorKind::TimeExceeded,
        )
        .unwrap();
        assert_eq!(range, 72..100 + offender.len());
        assert!(buf[..72].iter().all(|&b| b == 0x5a));
        assert!(buf[range.end..].iter().all(|&b| b == 0x5a));
        let (t, c, rest, _) = check_v4_error(&buf[range]);
        assert_eq!((t, c, rest), (icmpv4::TYPE_TIME_EXCEEDED, 0, 0));

        let offender6 = fixture("wire/ipv6-icmpv6-echo-request.hex");
        let mut buf = with_headroom(&offender6);
        let range = write_error(
            &mut buf,
            48,
            offender6.len(),
            IpAddr::V6(router_v6()),
            IcmpErrorKind::TooBig { mtu: 1400 },
        )
        .unwrap();
        assert_eq!(range, 0..48 + offender6.len());
        let (t, c, rest, _) = check_v6_error(&buf[range]);
        assert_eq!((t, c, rest), (icmpv6::TYPE_PACKET_TOO_BIG, 0, 1400));
    }

    #[test]
    fn kinds_map_to_types_and_codes() {
        let v4 = fixture("wire/ipv4-icmp-echo-request.hex");
        let src = IpAddr::V4(ROUTER_V4);
        let cases = [
            (IcmpErrorKind::NetUnreachable, (3, 0, 0)),
            (IcmpErrorKind::TimeExceeded, (11, 0, 0)),
            (IcmpErrorKind::TooBig { mtu: 1450 }, (3, 4, 1450)),
            (IcmpErrorKind::TooBig { mtu: 70_000 }, (3, 4, 0xffff)),
        ];
        for (kind, expected) in cases {
            let e = error_about(&v4, src, kind).unwrap();
            let (t, c, r, _) = check_v4_error(&e);
            assert_eq!((t, c, r), expected, "{kind:?}");
            let ip = ipv4::Packet::new_checked(&e[..]).unwrap();
            assert_eq!(ip.src_addr(), ROUTER_V4);
            assert_eq!(ip.dst_addr(), Ipv4Addr::new(198, 18, 0, 1));
        }
        let v6 = fixture("wire/ipv6-icmpv6-echo-request.hex");
        let src = IpAddr::V6(router_v6());
        for (kind, expected) in [
            (IcmpErrorKind::NetUnreachable, (1, 0, 0)),
            (IcmpErrorKind::TimeExceeded, (3, 0, 0)),
            (IcmpErrorKind::TooBig { mtu: 70_000 }, (2, 0, 70_000)),
        ] {
            let e = error_about(&v6, src, kind).unwrap();
            let (t, c, r, _) = check_v6_error(&e);
            assert_eq!((t, c, r), expected, "{kind:?}");
            let ip = ipv6::Packet::new_checked(&e[..]).unwrap();
            assert_eq!(ip.src_addr(), router_v6());
            assert_eq!(ip.dst_addr(), "fd00:198:18::1".parse::<Ipv6Addr>().unwrap());
        }
    }

    #[test]
    fn refuses_small_headroom_wrong_family_and_bad_ranges() {
        let v4 = fixture("wire/ipv4-icmp-echo-request.hex");
        let v6 = fixture("wire/ipv6-icmpv6-echo-request.hex");
        let s4 = IpAddr::V4(ROUTER_V4);
        let s6 = IpAddr::V6(router_v6());
        let kind = IcmpErrorKind::NetUnreachable;
        for (packet, src, need) in [(&v4, s4, 28usize), (&v6, s6, 48)] {
            for headroom in [0, 1, need - 1] {
                let mut buf = vec![0u8; headroom];
                buf.extend_from_slice(packet);
                let before = buf.clone();
                assert_eq!(
                    write_error(&mut buf, headroom, packet.len(), src, kind),
                    None
                );
                assert_eq!(buf, before, "buffer untouched");
            }
            let mut buf = vec![0u8; need];
            buf.extend_from_slice(packet);
            assert!(write_error(&mut buf, need, packet.len(), src, kind).is_some());
        }
        // Family mismatch.
        let mut buf = with_headroom(&v4);
        assert_eq!(write_error(&mut buf, HEADROOM, v4.len(), s6, kind), None);
        let mut buf = with_headroom(&v6);
        assert_eq!(write_error(&mut buf, HEADROOM, v6.len(), s4, kind), None);
        // Ranges beyond the buffer, overflowing, or cutting the packet short.
        let mut buf = with_headroom(&v4);
        assert_eq!(
            write_error(&mut buf, HEADROOM, v4.len() + 1, s4, kind),
            None
        );
        assert_eq!(write_error(&mut buf, usize::MAX, 2, s4, kind), None);
        assert_eq!(write_error(&mut buf, HEADROOM, usize::MAX, s4, kind), None);
        assert_eq!(
            write_error(&mut buf, HEADROOM, v4.len() - 1, s4, kind),
            None
        );
        assert_eq!(write_error(&mut buf, HEADROOM, 0, s4, kind), None);
        assert_eq!(write_error(&mut [], 0, 0, s4, kind), None);
    }

    fn set_v4_src(packet: &mut [u8], a: Ipv4Addr) {
        ipv4::Packet::new_unchecked(packet).set_src_addr(a);
    }

    fn set_v4_dst(packet: &mut [u8], a: Ipv4Addr) {
        ipv4::Packet::new_unchecked(packet).set_dst_addr(a);
    }

    #[test]
    fn may_answer_ipv4_rules() {
        let echo = fixture("wire/ipv4-icmp-echo-request.hex");
        assert!(may_answer(&echo));
        assert!(may_answer(&fixture("wire/ipv4-udp.hex")));
        assert!(may_answer(&fixture("wire/ipv4-tcp-syn.hex")));
        // Not parseable.
        assert!(!may_answer(&[]));
        assert!(!may_answer(&echo[..19]));
        assert!(!may_answer(&echo[..echo.len() - 1]));
        assert!(!may_answer(&[0x15; 40]));
        // ICMP errors, of every error type; also an ICMP message too short to tell.
        assert!(!may_answer(&fixture("wire/ipv4-icmp-time-exceeded.hex")));
        assert!(!may_answer(&fixture("wire/ipv4-icmp-net-unreachable.hex")));
        assert!(!may_answer(&fixture("wire/ipv4-icmp-port-unreachable.hex")));
        for t in 0..=255u8 {
            let mut p = echo.clone();
            p[20] = t;
            assert_eq!(may_answer(&p), !icmpv4::is_error_type(t), "type {t}");
        }
        let mut bare = echo[..20].to_vec();
        bare[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert!(!may_answer(&bare));
        // Fragments: the first may be answered, later ones not.
        let mut p = echo.clone();
        ipv4::Packet::new_unchecked(&mut p[..]).set_flags_and_frag_offset(false, true, 0);
        assert!(may_answer(&p));
        ipv4::Packet::new_unchecked(&mut p[..]).set_flags_and_frag_offset(false, true, 8);
        assert!(!may_answer(&p));
        ipv4::Packet::new_unchecked(&mut p[..]).set_flags_and_frag_offset(false, false, 1480);
        assert!(!may_answer(&p));
        // Sources that are not a single host.
        for src in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::new(239, 1, 2, 3),
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(240, 0, 0, 1),
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(127, 9, 9, 9),
        ] {
            let mut p = echo.clone();
            set_v4_src(&mut p, src);
            assert!(!may_answer(&p), "source {src}");
            let mut buf = with_headroom(&p);
            let r = write_error(
                &mut buf,
                HEADROOM,
                p.len(),
                IpAddr::V4(ROUTER_V4),
                IcmpErrorKind::TimeExceeded,
            );
            assert_eq!(r, None, "source {src}");
        }
        // Multicast and broadcast destinations.
        for dst in [Ipv4Addr::new(224, 0, 0, 5), Ipv4Addr::BROADCAST] {
            let mut p = echo.clone();
            set_v4_dst(&mut p, dst);
            assert!(!may_answer(&p), "destination {dst}");
        }
    }

    /// The captured IPv6 echo request with a Fragment header (offset in bytes, M flag)
    /// inserted after the fixed header.
    fn v6_with_fragment_header(offset: u16, more: bool) -> Vec<u8> {
        let echo = fixture("wire/ipv6-icmpv6-echo-request.hex");
        let mut p = echo[..40].to_vec();
        p[6] = PROTO_IPV6_FRAGMENT;
        let plen = (echo.len() - 40 + 8) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        let off = (offset & !7) | u16::from(more);
        p.extend_from_slice(&[PROTO_ICMPV6, 0]);
        p.extend_from_slice(&off.to_be_bytes());
        p.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p.extend_from_slice(&echo[40..]);
        p
    }

    #[test]
    fn may_answer_ipv6_rules() {
        let echo = fixture("wire/ipv6-icmpv6-echo-request.hex");
        assert!(may_answer(&echo));
        assert!(!may_answer(&echo[..39]));
        assert!(!may_answer(&echo[..echo.len() - 1]));
        // ICMPv6 errors are never answered; informational messages are.
        assert!(!may_answer(&fixture("wire/ipv6-icmpv6-time-exceeded.hex")));
        assert!(!may_answer(&fixture("wire/ipv6-icmpv6-no-route.hex")));
        assert!(!may_answer(&fixture("wire/ipv6-icmpv6-packet-too-big.hex")));
        assert!(may_answer(&fixture("wire/ipv6-icmpv6-echo-reply.hex")));
        for t in 0..=255u8 {
            let mut p = echo.clone();
            p[40] = t;
            assert_eq!(may_answer(&p), t >= 128, "type {t}");
        }
        let mut bare = echo[..40].to_vec();
        bare[4..6].fill(0);
        assert!(!may_answer(&bare));
        // Fragment header: first fragment fine, later fragments not, truncated not.
        assert!(may_answer(&v6_with_fragment_header(0, true)));
        assert!(!may_answer(&v6_with_fragment_header(8, true)));
        assert!(!may_answer(&v6_with_fragment_header(1448, false)));
        let mut short = echo[..44].to_vec();
        short[4..6].copy_from_slice(&4u16.to_be_bytes());
        short[6] = PROTO_IPV6_FRAGMENT;
        assert!(!may_answer(&short));
        // Sources.
        for src in ["::", "ff02::1", "ff05::2", "::1"] {
            let mut p = echo.clone();
            ipv6::Packet::new_unchecked(&mut p[..]).set_src_addr(src.parse().unwrap());
            assert!(!may_answer(&p), "source {src}");
        }
        // Multicast destination (the captured neighbour solicitation): only a packet too
        // big may be sent about it.
        let ns = fixture("wire/ipv6-icmpv6-neighbor-solicitation.hex");
        assert!(may_answer(&ns));
        let src = IpAddr::V6(router_v6());
        assert_eq!(error_about(&ns, src, IcmpErrorKind::TimeExceeded), None);
        assert_eq!(error_about(&ns, src, IcmpErrorKind::NetUnreachable), None);
        let e = error_about(&ns, src, IcmpErrorKind::TooBig { mtu: 1280 }).unwrap();
        assert_eq!(check_v6_error(&e).0, icmpv6::TYPE_PACKET_TOO_BIG);
    }

    #[test]
    fn may_answer_other_versions() {
        for v in [0u8, 1, 5, 7, 15] {
            let mut p = fixture("wire/ipv4-icmp-echo-request.hex");
            p[0] = (v << 4) | 5;
            assert!(!may_answer(&p), "version {v}");
        }
    }

    /// xorshift64: a fixed-seed pseudo-random generator for the fuzz-style test.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Calls every accessor of every view `new_checked` accepts; none may panic.
    fn exercise_views(data: &[u8]) {
        if let Ok(p) = ipv4::Packet::new_checked(data) {
            let _ = (
                p.header_len(),
                p.ident(),
                p.frag_offset(),
                p.ttl(),
                p.protocol(),
            );
            let _ = (
                p.src_addr(),
                p.dst_addr(),
                p.verify_checksum(),
                p.payload(),
                p.packet(),
            );
            let _ = ipv4::Repr::parse(&p);
            let mut copy = data.to_vec();
            let mut q = ipv4::Packet::new_checked(&mut copy[..]).unwrap();
            q.decrement_ttl();
            q.fill_checksum();
            assert!(q.verify_checksum());
        }
        if let Ok(p) = ipv6::Packet::new_checked(data) {
            let _ = (
                p.payload_len(),
                p.next_header(),
                p.hop_limit(),
                p.src_addr(),
            );
            let _ = (p.dst_addr(), p.payload(), p.flow_label(), p.traffic_class());
            let _ = ipv6::Repr::parse(&p);
        }
        if let Ok(p) = icmpv4::Packet::new_checked(data) {
            let _ = (
                p.msg_type(),
                p.code(),
                p.rest_of_header(),
                p.data(),
                p.verify_checksum(),
            );
        }
        if let Ok(p) = icmpv6::Packet::new_checked(data) {
            let a = router_v6();
            let _ = (
                p.msg_type(),
                p.rest_of_header(),
                p.data(),
                p.verify_checksum(&a, &a),
            );
        }
        if let Ok(p) = udp::Packet::new_checked(data) {
            let s = IpAddr::V4(ROUTER_V4);
            let _ = (
                p.src_port(),
                p.dst_port(),
                p.payload(),
                p.verify_checksum(s, s),
            );
            let _ = udp::Repr::parse(&p);
        }
        if let Ok(f) = ethernet::Frame::new_checked(data) {
            let _ = (f.src_addr(), f.dst_addr(), f.ethertype(), f.payload());
            let _ = ethernet::Repr::parse(&f);
        }
        if let Ok(p) = arp::Packet::new_checked(data) {
            let _ = (
                p.operation(),
                p.sender_hardware_addr(),
                p.target_protocol_addr(),
            );
            let _ = arp::Repr::parse(&p);
        }
        if let Ok(h) = vxlan::Header::new_checked(data) {
            let _ = (h.flags(), h.vni(), h.payload(), vxlan::Repr::parse(&h));
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let seeds: Vec<Vec<u8>> = [
            "wire/ipv4-icmp-echo-request.hex",
            "wire/ipv4-udp.hex",
            "wire/ipv4-icmp-time-exceeded.hex",
            "wire/ipv6-icmpv6-echo-request.hex",
            "wire/ipv6-icmpv6-no-route.hex",
            "wire/ethernet-arp-request.hex",
        ]
        .iter()
        .map(|n| fixture(n))
        .collect();
        let mut rng = XorShift(0x5eed_f00d_cafe_d00d);
        let kinds = [
            IcmpErrorKind::NetUnreachable,
            IcmpErrorKind::TimeExceeded,
            IcmpErrorKind::TooBig { mtu: 1280 },
        ];
        let srcs = [IpAddr::V4(ROUTER_V4), IpAddr::V6(router_v6())];
        let mut answered = 0;
        for _ in 0..30_000 {
            // Half: random bytes with a plausible first byte; half: a mutated capture.
            let mut data: Vec<u8> = if rng.next() % 2 == 0 {
                let len = rng.below(160);
                let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if let Some(b) = d.first_mut() {
                    *b = [0x45, 0x46, 0x4f, 0x60, 0x44, *b][rng.below(6)];
                }
                d
            } else {
                let mut d = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    if d.is_empty() {
                        break;
                    }
                    let at = rng.below(d.len());
                    d[at] = rng.next() as u8;
                }
                if rng.below(4) == 0 {
                    d.truncate(rng.below(d.len() + 1));
                }
                d
            };
            exercise_views(&data);
            let _ = may_answer(&data);
            let headroom = if rng.below(8) == 0 {
                rng.below(60)
            } else {
                HEADROOM + rng.below(12)
            };
            let mut buf = vec![0u8; headroom];
            buf.append(&mut data);
            let len = buf.len() - headroom;
            let len = if rng.below(8) == 0 {
                rng.below(len + 20)
            } else {
                len
            };
            let kind = kinds[rng.below(kinds.len())];
            // Mostly the family that matches the version nibble, to reach the writer.
            let v6 = buf.get(headroom).is_some_and(|b| b >> 4 == 6);
            let src = srcs[usize::from(v6 != (rng.below(8) == 0))];
            if let Some(r) = write_error(&mut buf, headroom, len, src, kind) {
                answered += 1;
                assert!(r.end <= buf.len());
                match src {
                    IpAddr::V4(_) => drop(check_v4_error(&buf[r])),
                    IpAddr::V6(_) => drop(check_v6_error(&buf[r])),
                }
            }
        }
        // The generator must reach the interesting path, not only rejections.
        assert!(answered > 3000, "only {answered} errors written");
    }
}

/// Whom an ICMP error answers. Each has a budget of its own, so that a flood from one side
/// (a peer forging TTL=1 packets, say) cannot use up the errors owed to the other (this
/// host's own senders, who need their fragmentation-needed errors for path MTU discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IcmpTo {
    /// A sender on this host: the error goes back into the device.
    Device,
    /// A sender behind a peer: the error goes back through the tunnel.
    Peer,
}

/// ICMP error generation with a rate limit: the part every backend shares.
///
/// Clones share their token buckets (one per [`IcmpTo`]) and one suppression count: the
/// limit holds for all the workers of an engine together, whatever their number. The
/// buckets sit behind mutexes that are only taken when an error is about to be generated,
/// never on the forwarding path.
#[derive(Debug, Clone)]
pub struct IcmpResponder {
    limiters: std::sync::Arc<[std::sync::Mutex<crate::ratelimit::TokenBucket>; 2]>,
    rate_limited: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl IcmpResponder {
    /// At most `rate` errors per second on average, `burst` at once, for each of
    /// [`IcmpTo`]'s directions.
    pub fn new(rate: u32, burst: u32) -> IcmpResponder {
        let bucket = || std::sync::Mutex::new(crate::ratelimit::TokenBucket::new(rate, burst));
        IcmpResponder {
            limiters: std::sync::Arc::new([bucket(), bucket()]),
            rate_limited: std::sync::Arc::default(),
        }
    }

    /// Writes an error about `buf[start..start + len]` (see [`write_error`]) for a sender on
    /// side `to`, if the rules ([`may_answer`]) and that side's rate limit allow it; returns
    /// its range.
    #[allow(clippy::too_many_arguments)]
    pub fn error(
        &mut self,
        buf: &mut [u8],
        start: usize,
        len: usize,
        src: IpAddr,
        kind: IcmpErrorKind,
        to: IcmpTo,
        now_ms: u64,
    ) -> Option<Range<usize>> {
        let offender = buf.get(start..start.checked_add(len)?)?;
        if !may_answer(offender) {
            return None;
        }
        let bucket = match to {
            IcmpTo::Device => &self.limiters[0],
            IcmpTo::Peer => &self.limiters[1],
        };
        let allowed = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow(now_ms);
        if !allowed {
            self.rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        write_error(buf, start, len, src, kind)
    }

    /// An error about `buf[offender]` for a sender on this host, written back into device
    /// `device` ([`IcmpTo::Device`]'s budget): [`crate::verdict::Verdict::ReplyToDevice`] counting the
    /// packet as dropped for `cause`, or [`crate::verdict::Verdict::Drop`] when the rules or the limit say
    /// no error.
    #[allow(clippy::too_many_arguments)]
    pub fn reply_to_device(
        &mut self,
        buf: &mut [u8],
        offender: Range<usize>,
        src: IpAddr,
        kind: IcmpErrorKind,
        device: usize,
        cause: crate::verdict::DropReason,
        now_ms: u64,
    ) -> crate::verdict::Verdict {
        let (start, len) = (offender.start, offender.len());
        match self.error(buf, start, len, src, kind, IcmpTo::Device, now_ms) {
            Some(range) => crate::verdict::Verdict::ReplyToDevice {
                device,
                range,
                cause,
            },
            None => crate::verdict::Verdict::Drop(cause),
        }
    }

    /// Errors suppressed by the rate limit so far.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(std::sync::atomic::Ordering::Relaxed)
    }
}
