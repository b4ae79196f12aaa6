//! The properties the fuzz targets check, shared with weft-encap's stable replay test
//! (`encap/src/offload/fuzz_replay.rs` includes this file), so CI runs them without nightly.
//!
//! The including module must have `offload_api` (weft-encap's `offload` module) and `wire`
//! (its `wire` module) in scope of its parent. Allocation and panics are fine here: this is
//! the test oracle, not the data path.

use super::offload_api::vnet::{F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use super::offload_api::{
    finish_checksum, gso_header_for, l4_checksum_state, split, split_layout, Coalescer, Gso,
    GsoKind, L4Checksum, VnetHdr,
};
use super::wire::checksum;

/// Splits never allocate more than this for one input.
const MAX_OUT: usize = 8 << 20;

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Header length (prefix + IP + L4) of a packet `split` accepted.
fn hdrs_len(pkt: &[u8], l3: usize, udp: bool) -> usize {
    let ip_hdr = if pkt[l3] >> 4 == 4 {
        usize::from(pkt[l3] & 0x0f) * 4
    } else {
        40
    };
    let l4 = if udp {
        8
    } else {
        usize::from(pkt[l3 + ip_hdr + 12] >> 4) * 4
    };
    l3 + ip_hdr + l4
}

/// Fuzz input: `[kind, size_hi, size_lo, l3_offset, mode, mtu_hi, mtu_lo, pkt...]`.
///
/// `mode` bit 0 forces the IP version / protocol to match `kind` (so the fuzzer reaches the
/// segment loop fast); bit 1 gives `split` one byte too few of output.
pub fn check_split(data: &[u8]) {
    if data.len() < 7 {
        return;
    }
    let kind = match data[0] % 3 {
        0 => GsoKind::TcpV4,
        1 => GsoKind::TcpV6,
        _ => GsoKind::UdpL4,
    };
    let size = u16::from_be_bytes([data[1], data[2]]);
    let l3 = usize::from(data[3] % 48);
    let mode = data[4];
    let mtu = usize::from(u16::from_be_bytes([data[5], data[6]]));
    let mut pkt = data[7..].to_vec();
    if mode & 1 != 0 && pkt.len() > l3 + 9 {
        let v6 = kind == GsoKind::TcpV6 || (kind == GsoKind::UdpL4 && data[0] & 0x80 != 0);
        let proto = if kind == GsoKind::UdpL4 { 17 } else { 6 };
        if v6 {
            pkt[l3] = 0x60 | (pkt[l3] & 0x0f);
            pkt[l3 + 6] = proto;
        } else {
            pkt[l3] = 0x40 | (pkt[l3] & 0x0f);
            pkt[l3 + 9] = proto;
            pkt[l3 + 6] &= 0x40; // not a fragment
            pkt[l3 + 7] = 0;
        }
    }

    // finish_checksum and gso_header_for never panic; their results hold up.
    let mut copy = pkt.clone();
    let _ = finish_checksum(&mut copy, usize::from(data[1]), usize::from(data[2]));
    let mut copy = pkt.clone();
    if let Ok(hdr) = gso_header_for(&mut copy, l3, mtu) {
        assert!(hdr.needs_csum());
        // Partial: the folded pseudo-header sum. About once in 65,536 that is also the
        // packet's real checksum, which `l4_checksum_state` reports as Valid (the fuzzer found
        // it in a merged group: see `partial_or_already_finished`).
        partial_or_already_finished(&copy, l3, hdr);
        // The IP length says where the packet ends: the caller writes only that far (bytes
        // after it are padding, outside the checksum; found by the fuzzer).
        let ip = &copy[l3..];
        let declared = if ip[0] >> 4 == 4 {
            usize::from(rd16(ip, 2))
        } else {
            40 + usize::from(rd16(ip, 4))
        };
        let end = l3 + declared;
        let mut fin = copy[..end].to_vec();
        finish_checksum(&mut fin, hdr.csum_start.into(), hdr.csum_offset.into()).unwrap();
        assert_eq!(l4_checksum_state(&fin, l3), L4Checksum::Valid);
        // gso_header_for may add GSO_ECN (CWR on the first segment only); reads reject it.
        let plain = VnetHdr {
            gso_type: hdr.gso_type & !GSO_ECN,
            ..hdr
        };
        if let Some(gso) = plain.gso().unwrap() {
            let lay = split_layout(&copy[..end], l3, gso).unwrap();
            assert_eq!(lay.segment_len - l3, mtu.min(declared));
            if lay.total_len <= MAX_OUT {
                let mut out = vec![0u8; lay.total_len];
                split(&copy[..end], l3, gso, &mut out).unwrap();
                for seg in out.chunks(lay.segment_len) {
                    assert_eq!(l4_checksum_state(seg, l3), L4Checksum::Valid);
                }
            }
        }
    }

    let gso = Gso { kind, size };
    let Ok(lay) = split_layout(&pkt, l3, gso) else {
        let mut out = vec![0u8; 256];
        assert!(split(&pkt, l3, gso, &mut out).is_err());
        return;
    };
    if lay.total_len > MAX_OUT {
        return;
    }
    if mode & 2 != 0 {
        let mut out = vec![0u8; lay.total_len - 1];
        assert!(split(&pkt, l3, gso, &mut out).is_err());
        return;
    }
    let mut out = vec![0u8; lay.total_len];
    let got = split(&pkt, l3, gso, &mut out).expect("split_layout said Ok");
    assert_eq!(got, lay);
    let hdrs = hdrs_len(&pkt, l3, kind == GsoKind::UdpL4);
    let payload = &pkt[hdrs..];
    assert!(!payload.is_empty());
    assert_eq!(lay.segments, payload.len().div_ceil(usize::from(size)));
    assert_eq!(lay.total_len, lay.segments * hdrs + payload.len());
    let mut rebuilt = Vec::with_capacity(payload.len());
    let segs: Vec<&[u8]> = out.chunks(lay.segment_len).collect();
    assert_eq!(segs.len(), lay.segments);
    for (i, seg) in segs.iter().enumerate() {
        if i + 1 < segs.len() {
            assert_eq!(seg.len(), lay.segment_len);
        }
        assert_eq!(&seg[..l3], &pkt[..l3], "prefix copied verbatim");
        assert_eq!(l4_checksum_state(seg, l3), L4Checksum::Valid, "segment {i}");
        if seg[l3] >> 4 == 4 {
            let ihl = usize::from(seg[l3] & 0x0f) * 4;
            assert_eq!(checksum::checksum(&seg[l3..l3 + ihl]), 0);
        }
        rebuilt.extend_from_slice(&seg[hdrs..]);
    }
    assert_eq!(rebuilt, payload, "payload preserved, in order");
}

/// The IP header of the structured coalesce mode's packets: IPv4 (DF, TTL 64, 10.0.0.1 ->
/// 10.0.0.2, checksum left to [`fix_checksums`]) or IPv6 (hop limit 64, fd.. -> fe..), for
/// `l4_len` bytes of protocol `proto`.
fn ip_header(v6: bool, proto: u8, id: u16, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&[0xfd; 16]);
        p.extend_from_slice(&[0xfe; 16]);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    p
}

/// A tiny TCP packet builder for the structured coalesce mode: IPv4 (DF) or IPv6, valid
/// checksums.
fn build_tcp(v6: bool, seq: u32, id: u16, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut p = ip_header(v6, 6, id, 20 + opts.len() + payload.len());
    p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    p.extend_from_slice(&seq.to_be_bytes());
    let data_offset = (((20 + opts.len()) / 4) << 4) as u8;
    // ACK number 1, data offset, flags, window 256, checksum and urgent pointer 0.
    p.extend_from_slice(&[0, 0, 0, 1, data_offset, flags, 1, 0, 0, 0, 0, 0]);
    p.extend_from_slice(opts);
    p.extend_from_slice(payload);
    fix_checksums(&mut p, 0);
    p
}

/// A UDP datagram for the structured coalesce mode, with the addresses and ports of
/// [`build_tcp`]: IPv4 (DF) or IPv6, valid checksums.
fn build_udp(v6: bool, id: u16, payload: &[u8]) -> Vec<u8> {
    let l4_len = 8 + payload.len();
    let mut p = ip_header(v6, 17, id, l4_len);
    p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    p.extend_from_slice(&(l4_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    fix_checksums(&mut p, 0);
    p
}

/// Recomputes the IPv4 header checksum and the L4 checksum (UDP if the protocol byte says
/// UDP, else TCP) of a well-formed packet at `l3` (no-op on anything it cannot parse). A
/// UDP checksum that computes to 0 is stored as `0xffff`.
fn fix_checksums(p: &mut [u8], l3: usize) {
    let Some(ip) = p.get_mut(l3..) else { return };
    if ip.len() < 40 {
        return;
    }
    let (v6, ihl) = match ip[0] >> 4 {
        4 => (false, usize::from(ip[0] & 0x0f) * 4),
        6 => (true, 40),
        _ => return,
    };
    if ihl < 20 || ip.len() < ihl + 20 {
        return;
    }
    if !v6 {
        ip[10] = 0;
        ip[11] = 0;
        let c = checksum::checksum(&ip[..ihl]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let udp = ip[if v6 { 6 } else { 9 }] == 17;
    let (proto, at) = if udp { (17, ihl + 6) } else { (6, ihl + 16) };
    let l4_len = ip.len() - ihl;
    ip[at] = 0;
    ip[at + 1] = 0;
    let addrs = if v6 { &ip[8..40] } else { &ip[12..20] };
    let pseudo = u64::from(checksum::fold(checksum::sum(addrs, 0))) + proto + l4_len as u64;
    let mut c = !checksum::fold(checksum::sum(&ip[ihl..], pseudo));
    if udp && c == 0 {
        c = 0xffff;
    }
    ip[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Fuzz input: `[l3_offset, mode, cap, ...]` then either raw packets (`[len_hi, len_lo,
/// bytes...]` repeated) or, with mode bit 0, a flow (`[v6, mss_hi, mss_lo, n, optwords]`)
/// whose segments are then mutated by `[index, offset_hi, offset_lo, xor]` records
/// (mode bit 1: checksums recomputed after each mutation). Mode bit 2 makes the flow UDP
/// datagrams instead of TCP segments; mode bit 3 interleaves a flow of the other protocol
/// (same addresses and ports).
///
/// The packets go through a coalescer with UDP merging off and through one with it on:
/// both pass [`check_groups`], the first merges nothing UDP, and both make the same groups
/// once the UDP groups are taken apart (UDP never disturbs TCP).
pub fn check_coalesce(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let l3 = usize::from(data[0] % 80);
    let mode = data[1];
    let cap = usize::from(data[2] % 70) + 1;
    let mut rest = &data[3..];
    let mut pkts: Vec<Vec<u8>> = Vec::new();
    if mode & 1 != 0 {
        if rest.len() < 5 {
            return;
        }
        let v6 = rest[0] & 1 != 0;
        let mss = usize::from(u16::from_be_bytes([rest[1], rest[2]]) % 3000) + 1;
        let n = usize::from(rest[3] % 80) + 1;
        let opts = vec![1u8; usize::from(rest[4] % 11) * 4];
        rest = &rest[5..];
        let payload: Vec<u8> = (0..mss * n).map(|i| (i * 7 + i / 13) as u8).collect();
        let udp = mode & 4 != 0;
        let flow = |udp: bool| -> Vec<Vec<u8>> {
            payload
                .chunks(mss)
                .enumerate()
                .map(|(i, chunk)| {
                    let p = if udp {
                        build_udp(v6, i as u16, chunk)
                    } else {
                        let flags = if i + 1 == n { 0x18 } else { 0x10 };
                        build_tcp(v6, (i * mss) as u32, i as u16, flags, &opts, chunk)
                    };
                    [vec![0xee; l3], p].concat()
                })
                .collect()
        };
        let main = flow(udp);
        if mode & 8 != 0 {
            let other = flow(!udp);
            for (a, b) in main.into_iter().zip(other) {
                pkts.push(a);
                pkts.push(b);
            }
        } else {
            pkts = main;
        }
        for m in rest.chunks_exact(4) {
            let idx = usize::from(m[0]) % pkts.len();
            let p = &mut pkts[idx];
            let off = usize::from(u16::from_be_bytes([m[1], m[2]])) % p.len();
            p[off] ^= m[3];
            if mode & 2 != 0 {
                fix_checksums(p, l3);
            }
        }
    } else {
        while rest.len() >= 2 {
            let len =
                usize::from(u16::from_be_bytes([rest[0], rest[1]]) % 2048).min(rest.len() - 2);
            pkts.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
        if mode & 2 != 0 {
            for p in &mut pkts {
                fix_checksums(p, l3);
            }
        }
    }
    let off = check_groups(&pkts, l3, cap, false);
    let on = check_groups(&pkts, l3, cap, true);
    // UDP merging changes nothing else: taking the UDP groups apart gives the groups
    // made without it.
    let mut off_sorted: Vec<Vec<u32>> = off.into_iter().map(|(_, ids)| ids).collect();
    let mut on_split: Vec<Vec<u32>> = Vec::new();
    for (udp, ids) in on {
        if udp {
            on_split.extend(ids.into_iter().map(|id| vec![id]));
        } else {
            on_split.push(ids);
        }
    }
    off_sorted.sort();
    on_split.sort();
    assert_eq!(off_sorted, on_split, "UDP merging changed other groups");
}

/// The flow of a packet as far as ordering goes: family, protocol (TCP/UDP), addresses and
/// ports of an IPv4 packet with fragment offset 0 or an IPv6 packet with next header
/// TCP/UDP, whatever its other fields. `None` for anything else.
fn order_key(p: &[u8], l3: usize) -> Option<Vec<u8>> {
    let ip = p.get(l3..)?;
    let (v6, ihl, proto) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip.len() < 20 || ihl < 20 || rd16(ip, 6) & 0x1fff != 0 {
                return None;
            }
            (false, ihl, ip[9])
        }
        6 if ip.len() >= 40 => (true, 40, ip[6]),
        _ => return None,
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    let addrs = if v6 { &ip[8..40] } else { &ip[12..20] };
    let ports = ip.get(ihl..ihl + 4)?;
    Some([&[u8::from(v6), proto][..], addrs, ports].concat())
}

/// Pushes `pkts` (ids = indices) through a coalescer of capacity `cap` (UDP merging `udp`),
/// flushing when full, and checks every group: ranges inside their packets, every id
/// exactly once, merged groups re-segment into their members (up to the IPv4 ID with DF
/// and the checksum spelling), nothing UDP merged unless `udp`, and the packets of each
/// flow written in arrival order. Returns every group as (merged UDP, member ids).
pub fn check_groups(pkts: &[Vec<u8>], l3: usize, cap: usize, udp: bool) -> Vec<(bool, Vec<u32>)> {
    let mut seen = vec![0u32; pkts.len()];
    let mut out = Vec::new();
    let mut c = Coalescer::new(cap);
    c.set_udp(udp);
    assert_eq!(c.udp(), udp);
    let mut i = 0;
    while i < pkts.len() {
        if c.push(i as u32, &pkts[i], l3) {
            i += 1;
            if i < pkts.len() {
                continue;
            }
        }
        assert!(!c.is_empty());
        for g in c.groups() {
            check_group(&g, pkts, l3, &mut seen);
            let is_udp = g.is_merged() && g.hdr.gso_type == GSO_UDP_L4;
            assert!(udp || !is_udp, "UDP merged while disabled");
            out.push((is_udp, g.members.iter().map(|m| m.id).collect::<Vec<u32>>()));
        }
        c.clear();
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "every packet in exactly one group"
    );
    // Per flow, written order == arrival order.
    let mut last: Vec<(Vec<u8>, u32)> = Vec::new();
    for id in out.iter().flat_map(|(_, ids)| ids) {
        let Some(key) = order_key(&pkts[*id as usize], l3) else {
            continue;
        };
        match last.iter_mut().find(|(k, _)| *k == key) {
            Some((_, prev)) => {
                assert!(*prev < *id, "flow reordered: {id} written after {prev}");
                *prev = *id;
            }
            None => last.push((key, *id)),
        }
    }
    out
}

/// The L4 checksum field of `pkt` (behind a vnet header `hdr` with `NEEDS_CSUM`) holds a
/// partial checksum: `l4_checksum_state` says Partial, or, when the folded pseudo-header sum
/// happens to be the packet's real checksum too (about 1 in 65,536; the fuzzer found a merged
/// UDP group of 33 datagrams with field 0xb3ef), Valid, and then finishing the checksum
/// leaves the packet as it is.
fn partial_or_already_finished(pkt: &[u8], l3: usize, hdr: VnetHdr) {
    let state = l4_checksum_state(pkt, l3);
    let mut fin = pkt.to_vec();
    // Finished over the IP length only (bytes after it are padding the caller never writes).
    let ip = &pkt[l3..];
    let declared = if ip[0] >> 4 == 4 {
        usize::from(rd16(ip, 2))
    } else {
        40 + usize::from(rd16(ip, 4))
    };
    fin.truncate(l3 + declared);
    finish_checksum(&mut fin, hdr.csum_start.into(), hdr.csum_offset.into()).unwrap();
    match state {
        L4Checksum::Partial => {}
        L4Checksum::Valid => assert_eq!(&fin[..], &pkt[..l3 + declared], "a Valid partial"),
        other => panic!("a partial checksum reads as {other:?}"),
    }
}

fn check_group(g: &super::offload_api::Group<'_>, pkts: &[Vec<u8>], l3: usize, seen: &mut [u32]) {
    assert!(!g.members.is_empty());
    let mut bytes = g.header.to_vec();
    for m in g.members {
        let p = &pkts[m.id as usize];
        seen[m.id as usize] += 1;
        assert!(m.range.start <= m.range.end && m.range.end <= p.len());
        bytes.extend_from_slice(&p[m.range.clone()]);
    }
    if !g.is_merged() {
        assert_eq!(g.hdr, VnetHdr::default());
        assert!(g.header.is_empty());
        assert_eq!(g.members[0].range, 0..pkts[g.members[0].id as usize].len());
        return;
    }
    assert_eq!(usize::from(g.hdr.hdr_len), g.header.len());
    partial_or_already_finished(&bytes, l3, g.hdr);
    // The vnet header matches the merged packet.
    let v4 = bytes[l3] >> 4 == 4;
    let ihl = if v4 {
        usize::from(bytes[l3] & 0x0f) * 4
    } else {
        40
    };
    let proto = bytes[l3 + if v4 { 9 } else { 6 }];
    let udp = proto == 17;
    let (gso_type, csum_offset, l4_hdr) = match (udp, v4) {
        (true, _) => (GSO_UDP_L4, 6, 8),
        (false, true) => (GSO_TCPV4, 16, usize::from(bytes[l3 + ihl + 12] >> 4) * 4),
        (false, false) => (GSO_TCPV6, 16, usize::from(bytes[l3 + ihl + 12] >> 4) * 4),
    };
    assert_eq!(g.hdr.flags, F_NEEDS_CSUM);
    assert_eq!(g.hdr.gso_type, gso_type);
    assert_eq!(usize::from(g.hdr.csum_start), l3 + ihl);
    assert_eq!(usize::from(g.hdr.csum_offset), csum_offset);
    assert_eq!(usize::from(g.hdr.hdr_len), l3 + ihl + l4_hdr);
    let ip_len = if v4 {
        usize::from(rd16(&bytes, l3 + 2))
    } else {
        40 + usize::from(rd16(&bytes, l3 + 4))
    };
    assert_eq!(ip_len, bytes.len() - l3, "IP length of the merged packet");
    if udp {
        assert_eq!(
            usize::from(rd16(&bytes, l3 + ihl + 4)),
            bytes.len() - l3 - ihl
        );
    }
    // Every member but the last carries gso_size payload bytes, the last no more.
    let gso_size = usize::from(g.hdr.gso_size);
    for (i, m) in g.members.iter().enumerate() {
        assert_eq!(m.range.start, usize::from(g.hdr.hdr_len));
        if i + 1 < g.members.len() {
            assert_eq!(m.range.len(), gso_size);
        } else {
            assert!(m.range.len() <= gso_size && !m.range.is_empty());
        }
    }
    for m in g.members {
        let p = &pkts[m.id as usize];
        assert_eq!(l4_checksum_state(p, l3), L4Checksum::Valid);
        if udp {
            assert_ne!(rd16(p, l3 + ihl + 6), 0, "a zero UDP checksum merged");
        }
    }
    let gso = g.hdr.gso().unwrap().unwrap();
    let lay = split_layout(&bytes, l3, gso).unwrap();
    let mut out = vec![0u8; lay.total_len];
    split(&bytes, l3, gso, &mut out).unwrap();
    assert_eq!(lay.segments, g.members.len());
    for (seg, m) in out.chunks(lay.segment_len).zip(g.members) {
        let orig = &pkts[m.id as usize];
        assert_eq!(seg.len(), orig.len());
        let mut a = seg.to_vec();
        let mut b = orig.clone();
        if v4 && a[l3 + 6] & 0x40 != 0 {
            for x in [&mut a, &mut b] {
                x[l3 + 4..l3 + 6].fill(0); // ID (not checked with DF)
                x[l3 + 10..l3 + 12].fill(0);
            }
        }
        let t = l3 + ihl + csum_offset;
        let (ca, cb) = (rd16(&a, t), rd16(&b, t));
        assert!(ca == cb || (ca == 0 && cb == 0xffff) || (ca == 0xffff && cb == 0));
        a[t..t + 2].fill(0);
        b[t..t + 2].fill(0);
        assert_eq!(a, b, "merged group re-segments into its members");
    }
}
