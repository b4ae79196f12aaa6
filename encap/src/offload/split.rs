//! TSO/USO: splitting a super-packet read from a TUN/TAP into the segments a NIC would
//! have sent.
//!
//! The input is `prefix | IP header | L4 header | payload`. The prefix (`pkt[..l3_offset]`:
//! nothing on a TUN, the Ethernet header on a TAP, or an encapsulation prefix such as a
//! VXLAN header + inner Ethernet header) is copied verbatim in front of every segment. The
//! end of the packet is `pkt.len()`: the IP length fields and the L4 checksum of the
//! super-packet are ignored (the kernel leaves the full length there, or the caller may
//! have rewritten it; the checksum is partial), and so is the vnet header's `hdr_len`
//! (the kernel may set it to the whole first packet on the forward path): the header
//! lengths come from the IPv4 IHL / the fixed IPv6 header and the TCP data offset.
//!
//! Segment `i` carries payload bytes `[i * size, min((i + 1) * size, payload_len))` and
//! gets: IPv4 total length, ID + i, header checksum; IPv6 payload length; TCP
//! seq + i * size, FIN and PSH only on the last segment, CWR only on the first; UDP length;
//! an L4 checksum computed from scratch in the same pass that copies the payload.

use super::ip::{self, tcp_flags};
use super::vnet::{Gso, GsoKind, OffloadError};
use crate::wire::checksum::{self, fold};
use crate::wire::{PROTO_TCP, PROTO_UDP};

/// The shape of a split: `segments` segments written back to back, each `segment_len`
/// bytes except the last (shorter or equal), `total_len` bytes in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Number of segments.
    pub segments: usize,
    /// Bytes of every segment but the last (prefix + headers + `gso.size` payload bytes).
    pub segment_len: usize,
    /// Bytes written (the sum of all segment lengths).
    pub total_len: usize,
}

/// The headers of a super-packet, parsed and checked against `gso`.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    proto: u8,
    /// Offset of the L4 header in `pkt` (prefix + IP header).
    l4_start: usize,
    /// Offset of the payload in `pkt` (prefix + IP header + L4 header).
    hdrs_end: usize,
    ip_hdr_len: usize,
    l4_hdr_len: usize,
    size: usize,
    split: Split,
}

fn layout(pkt: &[u8], l3_offset: usize, gso: Gso) -> Result<Layout, OffloadError> {
    let ip_bytes = pkt.get(l3_offset..).ok_or(OffloadError::Malformed)?;
    let iph = ip::parse_ip(ip_bytes).ok_or(OffloadError::Malformed)?;
    let want_proto = match (gso.kind, iph.v6) {
        (GsoKind::TcpV4, false) | (GsoKind::TcpV6, true) => PROTO_TCP,
        (GsoKind::UdpL4, _) => PROTO_UDP,
        _ => return Err(OffloadError::UnsupportedGso),
    };
    if iph.proto != want_proto {
        // IPv6 with an extension header in front of TCP/UDP is malformed for GSO; a TCP
        // packet with a UDP request (or the reverse) is a mismatched request.
        let is_l4 = iph.proto == PROTO_TCP || iph.proto == PROTO_UDP;
        return Err(if is_l4 {
            OffloadError::UnsupportedGso
        } else {
            OffloadError::Malformed
        });
    }
    if iph.fragment {
        return Err(OffloadError::Malformed);
    }
    if gso.size == 0 {
        return Err(OffloadError::UnsupportedGso);
    }
    let l4 = &ip_bytes[iph.hdr_len..];
    let l4_hdr_len = ip::l4_hdr_len(iph.proto, l4).ok_or(OffloadError::Malformed)?;
    let l4_start = l3_offset + iph.hdr_len;
    let hdrs_end = l4_start + l4_hdr_len;
    let payload_len = pkt.len() - hdrs_end;
    if payload_len == 0 {
        return Err(OffloadError::Malformed);
    }
    let size = usize::from(gso.size);
    let seg_payload = size.min(payload_len);
    // The IP length field of a full segment must fit in 16 bits.
    let seg_ip_len = if iph.v6 {
        l4_hdr_len + seg_payload
    } else {
        iph.hdr_len + l4_hdr_len + seg_payload
    };
    if seg_ip_len > usize::from(u16::MAX) {
        return Err(OffloadError::Malformed);
    }
    let segments = payload_len.div_ceil(size);
    let total_len = hdrs_end
        .checked_mul(segments)
        .and_then(|h| h.checked_add(payload_len))
        .ok_or(OffloadError::TooManySegments)?;
    Ok(Layout {
        v6: iph.v6,
        proto: iph.proto,
        l4_start,
        hdrs_end,
        ip_hdr_len: iph.hdr_len,
        l4_hdr_len,
        size,
        split: Split {
            segments,
            segment_len: hdrs_end + seg_payload,
            total_len,
        },
    })
}

/// Rewrites the length field of the IP packet at `pkt[l3_offset..]` so that the packet
/// ends at `pkt[..end]` (IPv4: total length and header checksum; IPv6: payload length):
/// how a super-packet's header is made to describe its first segment alone. Returns false,
/// changing nothing, if the header is not there or `end` does not fit.
pub fn set_ip_len(pkt: &mut [u8], l3_offset: usize, end: usize) -> bool {
    let Some(len) = end
        .checked_sub(l3_offset)
        .filter(|_| end <= pkt.len())
        .and_then(|len| u16::try_from(len).ok())
    else {
        return false;
    };
    let bytes = &mut pkt[l3_offset..];
    match ip::parse_ip(bytes) {
        Some(h) if !h.v6 => {
            ip::wr16(bytes, 2, len);
            ip::fill_ipv4_checksum(bytes, h.hdr_len);
            true
        }
        Some(_) => match len.checked_sub(40) {
            Some(payload) => ip::wr16(bytes, 4, payload),
            None => false,
        },
        None => false,
    }
}

/// What [`split`] would write for these arguments (use `total_len` to size `out`), without
/// writing anything. Same errors as [`split`], except [`OffloadError::OutputTooSmall`].
pub fn split_layout(pkt: &[u8], l3_offset: usize, gso: Gso) -> Result<Split, OffloadError> {
    layout(pkt, l3_offset, gso).map(|l| l.split)
}

/// Splits the super-packet `pkt` (prefix `pkt[..l3_offset]`, then an IPv4/IPv6 packet with
/// a TCP or UDP header; see the [module docs](self)) into segments of `gso.size` payload
/// bytes, written back to back into `out`.
///
/// Errors: [`OffloadError::Malformed`] (truncated headers, bad IHL or TCP data offset, an
/// IPv4 fragment, an IPv6 extension header, no payload, a segment too long for its IP
/// length field); [`OffloadError::UnsupportedGso`] (`gso.kind` does not match the IP version
/// or the L4 protocol, size 0); [`OffloadError::OutputTooSmall`] (nothing else is
/// promised about `out` then).
pub fn split(
    pkt: &[u8],
    l3_offset: usize,
    gso: Gso,
    out: &mut [u8],
) -> Result<Split, OffloadError> {
    let l = layout(pkt, l3_offset, gso)?;
    if out.len() < l.split.total_len {
        return Err(OffloadError::OutputTooSmall);
    }
    let hdrs = &pkt[..l.hdrs_end];
    let payload = &pkt[l.hdrs_end..];
    let ip_start = l3_offset;
    let ip_hdr = &pkt[ip_start..l.l4_start];
    let l4_hdr = &pkt[l.l4_start..l.hdrs_end];
    let id0 = if l.v6 {
        0
    } else {
        ip::rd16(ip_hdr, 4).unwrap_or(0)
    };
    let seq0 = if l.proto == PROTO_TCP {
        ip::rd32(l4_hdr, 4).unwrap_or(0)
    } else {
        0
    };
    let csum_off = if l.proto == PROTO_TCP {
        ip::TCP_CSUM_OFFSET
    } else {
        ip::UDP_CSUM_OFFSET
    };
    // The pseudo-header addresses never change: sum them once.
    let pseudo_base = ip::pseudo_sum(ip_hdr, l.v6, l.proto, 0);
    // Nor does an IPv4 header, but for its total length, ID and checksum: its sum without
    // those three words, to which each segment adds its own length and ID.
    let ipv4_base = if l.v6 {
        0
    } else {
        let mut fixed = [0u8; 60];
        let fixed = &mut fixed[..l.ip_hdr_len];
        fixed.copy_from_slice(ip_hdr);
        fixed[2..6].fill(0);
        fixed[10..12].fill(0);
        checksum::sum(fixed, 0)
    };

    let mut at = 0;
    for (i, chunk) in payload.chunks(l.size).enumerate() {
        let first = i == 0;
        let last = i + 1 == l.split.segments;
        let seg_len = l.hdrs_end + chunk.len();
        let seg = &mut out[at..at + seg_len];
        seg[..l.hdrs_end].copy_from_slice(hdrs);
        let l4_len = l.l4_hdr_len + chunk.len();
        {
            let iph = &mut seg[ip_start..l.l4_start];
            if l.v6 {
                // Fits: checked in `layout` for the largest segment.
                ip::wr16(iph, 4, l4_len as u16);
            } else {
                let total = (l.ip_hdr_len + l4_len) as u16;
                let id = id0.wrapping_add(i as u16);
                ip::wr16(iph, 2, total);
                ip::wr16(iph, 4, id);
                let sum = ip::add(ipv4_base, u64::from(total) + u64::from(id));
                ip::wr16(iph, 10, !fold(sum));
            }
        }
        let (head, body) = seg.split_at_mut(l.hdrs_end);
        let l4h = &mut head[l.l4_start..];
        if l.proto == PROTO_TCP {
            let seq = seq0.wrapping_add((i as u32).wrapping_mul(u32::from(gso.size)));
            ip::wr32(l4h, 4, seq);
            let mut flags = l4h[13];
            if !last {
                flags &= !(tcp_flags::FIN | tcp_flags::PSH);
            }
            if !first {
                flags &= !tcp_flags::CWR;
            }
            l4h[13] = flags;
        } else {
            ip::wr16(l4h, 4, l4_len as u16);
        }
        ip::wr16(l4h, csum_off, 0);
        // The L4 header length is even (a multiple of 4 for TCP, 8 for UDP), so the header
        // sum chains with the payload sum.
        let s = checksum::sum(l4h, ip::add(pseudo_base, l4_len as u64));
        let s = ip::copy_and_sum(body, chunk, s);
        let mut c = !fold(s);
        if l.proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        ip::wr16(l4h, csum_off, c);
        at += seg_len;
    }
    debug_assert_eq!(at, l.split.total_len);
    Ok(l.split)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testpkt::*;
    use crate::offload::vnet::{l4_checksum_state, L4Checksum, VnetHdr};

    fn gso(kind: GsoKind, size: u16) -> Gso {
        Gso { kind, size }
    }

    fn split_vec(pkt: &[u8], l3: usize, g: Gso) -> Result<Vec<Vec<u8>>, OffloadError> {
        let lay = split_layout(pkt, l3, g)?;
        let mut out = vec![0u8; lay.total_len];
        let s = split(pkt, l3, g, &mut out)?;
        assert_eq!(s, lay);
        let segs: Vec<Vec<u8>> = out.chunks(s.segment_len).map(<[u8]>::to_vec).collect();
        assert_eq!(segs.len(), s.segments);
        Ok(segs)
    }

    fn with_prefix(prefix: &[u8], pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        pkts.iter().map(|p| [prefix, p].concat()).collect()
    }

    #[test]
    fn tcpv4_kernel_super_packet() {
        // As read from a 6.18 TUN: gso_type=1 hdr_len=40 gso_size=1460 csum_start=20
        // csum_offset=16, IPv4 total length = full super-packet, checksum partial.
        let f = Flow::v4_tcp();
        let payload = pattern(1460 * 3 + 100);
        let sup = f.packet_partial(1000, 50, ACK | PSH, &payload);
        let hdr = VnetHdr::parse(&[1, 1, 40, 0, 0xb4, 0x05, 20, 0, 16, 0]).unwrap();
        let segs = split_vec(&sup, 0, hdr.gso().unwrap().unwrap()).unwrap();
        assert_eq!(segs, f.segments(1000, 50, 1460, &payload, ACK | PSH));
        for s in &segs {
            assert_eq!(l4_checksum_state(s, 0), L4Checksum::Valid);
        }
    }

    #[test]
    fn forward_path_hdr_len_is_ignored_and_length_fields_too() {
        // FORWARD path: the kernel's hdr_len may be the whole first packet. split never
        // reads hdr_len. Also: total length rewritten to the first segment's, FIN on the
        // super-packet (last only), CWR (first only), checksum garbage.
        let f = Flow::v4_tcp().with_opts(vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        let payload = pattern(1000 * 4);
        let mut sup = f.packet_partial(
            u32::MAX - 1500,
            u16::MAX - 1,
            ACK | PSH | FIN | CWR,
            &payload,
        );
        let first_len = (f.hdrs_len() + 1000) as u16;
        sup[2..4].copy_from_slice(&first_len.to_be_bytes());
        sup[36] ^= 0x5a; // checksum field
        let segs = split_vec(&sup, 0, gso(GsoKind::TcpV4, 1000)).unwrap();
        let mut want = Vec::new();
        for i in 0..4u32 {
            let mut flags = ACK;
            if i == 0 {
                flags |= CWR;
            }
            if i == 3 {
                flags |= PSH | FIN;
            }
            want.push(f.packet(
                (u32::MAX - 1500).wrapping_add(i * 1000),
                (u16::MAX - 1).wrapping_add(i as u16),
                flags,
                &payload[i as usize * 1000..][..1000],
            ));
        }
        assert_eq!(segs, want);
    }

    #[test]
    fn tcpv6_tap_offset_and_vxlan_prefix() {
        let f = Flow::v6_tcp().with_opts(vec![1, 1, 1, 1]);
        let payload = pattern(5000);
        let sup = f.packet_partial(7, 0, ACK, &payload);
        let want = f.segments(7, 0, 1400, &payload, ACK);
        for prefix_len in [14usize, 22] {
            let prefix: Vec<u8> = (0..prefix_len as u8).map(|b| b ^ 0xa5).collect();
            let pkt = [&prefix[..], &sup].concat();
            let segs = split_vec(&pkt, prefix_len, gso(GsoKind::TcpV6, 1400)).unwrap();
            assert_eq!(segs, with_prefix(&prefix, &want));
            for s in &segs {
                assert_eq!(l4_checksum_state(s, prefix_len), L4Checksum::Valid);
            }
        }
    }

    #[test]
    fn udp_l4_v4_and_v6() {
        for f in [Flow::v4_udp(), Flow::v6_udp()] {
            let payload = pattern(3001);
            let mut sup = f.packet_partial(0, 9, 0, &payload);
            let ip_len = f.ip_hdr_len();
            sup[ip_len + 4..ip_len + 6].copy_from_slice(&[0xff, 0xff]); // UDP length ignored
            let segs = split_vec(&sup, 0, gso(GsoKind::UdpL4, 1000)).unwrap();
            assert_eq!(segs, f.segments(0, 9, 1000, &payload, 0));
        }
    }

    #[test]
    fn one_segment_and_exact_multiple() {
        let f = Flow::v4_tcp();
        let payload = pattern(1448);
        let sup = f.packet_partial(1, 1, ACK | PSH, &payload);
        let segs = split_vec(&sup, 0, gso(GsoKind::TcpV4, 1448)).unwrap();
        assert_eq!(segs, vec![f.packet(1, 1, ACK | PSH, &payload)]);
        let segs = split_vec(&sup, 0, gso(GsoKind::TcpV4, 724)).unwrap();
        assert_eq!(segs, f.segments(1, 1, 724, &payload, ACK | PSH));
        let segs = split_vec(&sup, 0, gso(GsoKind::TcpV4, 1)).unwrap();
        assert_eq!(segs.len(), 1448);
    }

    #[test]
    fn ipv4_options_are_copied() {
        let f = Flow::v4_tcp();
        let payload = pattern(300);
        let plain = f.packet_partial(1, 1, ACK, &payload);
        // Insert 4 option bytes (NOP x4), IHL 6.
        let mut sup = plain[..20].to_vec();
        sup[0] = 0x46;
        sup.extend_from_slice(&[1, 1, 1, 1]);
        sup.extend_from_slice(&plain[20..]);
        let segs = split_vec(&sup, 0, gso(GsoKind::TcpV4, 100)).unwrap();
        assert_eq!(segs.len(), 3);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s[0], 0x46);
            assert_eq!(&s[20..24], &[1, 1, 1, 1]);
            assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, s.len());
            assert_eq!(checksum::checksum(&s[..24]), 0);
            assert_eq!(l4_checksum_state(s, 0), L4Checksum::Valid);
            assert_eq!(&s[44..], &payload[i * 100..][..100]);
        }
    }

    #[test]
    fn errors() {
        let f = Flow::v4_tcp();
        let sup = f.packet_partial(1, 1, ACK, &pattern(100));
        let g = gso(GsoKind::TcpV4, 40);
        assert_eq!(
            split_layout(&sup, 0, gso(GsoKind::TcpV6, 40)),
            Err(OffloadError::UnsupportedGso)
        );
        assert_eq!(
            split_layout(&sup, 0, gso(GsoKind::UdpL4, 40)),
            Err(OffloadError::UnsupportedGso)
        );
        assert_eq!(
            split_layout(&sup, 0, gso(GsoKind::TcpV4, 0)),
            Err(OffloadError::UnsupportedGso)
        );
        assert_eq!(
            split_layout(&sup[..40], 0, g),
            Err(OffloadError::Malformed),
            "no payload"
        );
        assert_eq!(split_layout(&sup[..39], 0, g), Err(OffloadError::Malformed));
        assert_eq!(split_layout(&sup, 200, g), Err(OffloadError::Malformed));
        assert_eq!(split_layout(&[], 0, g), Err(OffloadError::Malformed));
        let mut bad = sup.clone();
        bad[32] = 0x40; // data offset 16
        assert_eq!(split_layout(&bad, 0, g), Err(OffloadError::Malformed));
        bad[32] = 0xf0; // data offset 60 > available header bytes? 60 <= 120: ok
        assert!(split_layout(&bad, 0, g).is_ok());
        let mut frag = sup.clone();
        frag[6] |= 0x20;
        assert_eq!(split_layout(&frag, 0, g), Err(OffloadError::Malformed));
        let mut v6 = Flow::v6_tcp().packet_partial(1, 1, ACK, &pattern(100));
        v6[6] = 0; // hop-by-hop first
        assert_eq!(
            split_layout(&v6, 0, gso(GsoKind::TcpV6, 40)),
            Err(OffloadError::Malformed)
        );
        let lay = split_layout(&sup, 0, g).unwrap();
        assert_eq!(
            lay,
            Split {
                segments: 3,
                segment_len: 80,
                total_len: 40 * 3 + 100
            }
        );
        let mut out = vec![0u8; lay.total_len - 1];
        assert_eq!(
            split(&sup, 0, g, &mut out),
            Err(OffloadError::OutputTooSmall)
        );
        // A segment too long for the IPv4 total length field.
        let big = f.packet_partial(1, 1, ACK, &pattern(70_000));
        assert_eq!(
            split_layout(&big, 0, gso(GsoKind::TcpV4, 65535)),
            Err(OffloadError::Malformed)
        );
        assert!(split_layout(&big, 0, gso(GsoKind::TcpV4, 65495)).is_ok());
    }

    #[test]
    fn ip_length_is_rewritten_with_a_valid_header_checksum() {
        use crate::wire::ipv4;
        let mut pkt = vec![0u8; 100];
        ipv4::Repr {
            src_addr: [100, 96, 1, 5].into(),
            dst_addr: [100, 96, 2, 7].into(),
            protocol: crate::wire::PROTO_TCP,
            payload_len: 80,
            ttl: 64,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut pkt[..]));
        assert!(set_ip_len(&mut pkt, 0, 60));
        let ip = ipv4::Packet::new_unchecked(&pkt[..]);
        assert_eq!(ip.total_len(), 60);
        assert!(ip.verify_checksum());
        assert!(!set_ip_len(&mut pkt, 0, 101), "past the end");
        assert!(!set_ip_len(&mut [0x45u8; 10], 0, 10), "no header");
        let mut v6 = vec![0u8; 80];
        v6[0] = 0x60;
        assert!(set_ip_len(&mut v6, 0, 70));
        assert_eq!(u16::from_be_bytes([v6[4], v6[5]]), 30);
    }
}
