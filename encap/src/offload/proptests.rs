//! Property tests against a one-packet-at-a-time reference: the packets a sender emits one
//! by one (sequential seq and IDs, valid checksums, random MSS, options and payloads) versus
//! the super-packet the kernel hands over for the same data.

use proptest::prelude::*;

use super::coalesce::Coalescer;
use super::split::{split, split_layout};
use super::testpkt::*;
use super::vnet::{l4_checksum_state, Gso, GsoKind, L4Checksum, GSO_UDP_L4};

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn flow_of(kind: u8, opt_words: usize, seed: u64) -> Flow {
    let f = match kind % 4 {
        0 => Flow::v4_tcp(),
        1 => Flow::v6_tcp(),
        2 => Flow::v4_udp(),
        _ => Flow::v6_udp(),
    };
    if f.udp {
        f
    } else {
        f.with_opts(bytes(seed ^ 0x55, opt_words * 4))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// `split` of the kernel's super-packet gives exactly the sender's segments, with the
    /// prefix in front of each.
    #[test]
    fn split_reproduces_individual_segments(
        kind in 0u8..4, opt_words in 0usize..=10, mss in 1usize..1600, n in 1usize..40,
        last in 1usize..1600, seq0 in any::<u32>(), id0 in any::<u16>(),
        prefix_len in prop_oneof![Just(0usize), Just(14), Just(22), 0usize..48],
        psh in any::<bool>(), fin in any::<bool>(), cwr in any::<bool>(),
        first_len_field in any::<bool>(), seed in any::<u64>(),
    ) {
        let f = flow_of(kind, opt_words, seed);
        let last = last.min(mss);
        let payload = bytes(seed, (n - 1) * mss + last);
        let mut last_flags = ACK;
        if psh { last_flags |= PSH; }
        if fin { last_flags |= FIN; }
        let mut want: Vec<Vec<u8>> = Vec::new();
        for (i, chunk) in payload.chunks(mss).enumerate() {
            let mut flags = if i + 1 == n { last_flags } else { ACK };
            if cwr && i == 0 { flags |= CWR; }
            want.push(f.packet(seq0.wrapping_add((i * mss) as u32), id0.wrapping_add(i as u16), flags, chunk));
        }
        let mut sup_flags = last_flags;
        if cwr { sup_flags |= CWR; }
        let mut sup = f.packet_partial(seq0, id0, sup_flags, &payload);
        if first_len_field {
            // The caller may have rewritten the length field to the first segment's.
            let first = want[0].len() as u16;
            if f.v6 { sup[4..6].copy_from_slice(&(first - 40).to_be_bytes()); }
            else { sup[2..4].copy_from_slice(&first.to_be_bytes()); }
        }
        let prefix = bytes(!seed, prefix_len);
        let pkt = [prefix.clone(), sup].concat();
        let kind = match (f.udp, f.v6) { (true, _) => GsoKind::UdpL4, (false, false) => GsoKind::TcpV4, _ => GsoKind::TcpV6 };
        let gso = Gso { kind, size: mss as u16 };
        let lay = split_layout(&pkt, prefix_len, gso).unwrap();
        let mut out = vec![0u8; lay.total_len + 7];
        prop_assert_eq!(split(&pkt, prefix_len, gso, &mut out).unwrap(), lay);
        let got: Vec<Vec<u8>> = out[..lay.total_len].chunks(lay.segment_len).map(<[u8]>::to_vec).collect();
        let want: Vec<Vec<u8>> = want.iter().map(|p| [&prefix[..], p].concat()).collect();
        prop_assert_eq!(got, want);
    }

    /// A clean flow (full-size segments, the last shorter with PSH) coalesces into one
    /// group that re-segments into exactly the original packets.
    #[test]
    fn coalesce_clean_flow_is_one_group(
        v6 in any::<bool>(), opt_words in 0usize..=10, mss in 1usize..1400, n in 2usize..=40,
        last in 1usize..1400, l3 in prop_oneof![Just(0usize), Just(14), Just(22)],
        seq0 in any::<u32>(), id0 in any::<u16>(), seed in any::<u64>(),
    ) {
        let f = flow_of(u8::from(v6), opt_words, seed);
        let payload = bytes(seed, (n - 1) * mss + last.min(mss));
        let prefix = bytes(!seed, l3);
        let pkts: Vec<Vec<u8>> = f.segments(seq0, id0, mss, &payload, ACK | PSH)
            .into_iter().map(|p| [&prefix[..], &p].concat()).collect();
        let groups = coalesce_all(&pkts, l3);
        prop_assert_eq!(groups, vec![(0..n as u32).collect::<Vec<_>>()]);
    }

    /// A clean UDP flow (equal-size datagrams, the last one shorter or equal) coalesces into
    /// one `GSO_UDP_L4` group that `split` turns back into exactly the original datagrams;
    /// with UDP disabled every datagram stays alone.
    #[test]
    fn coalesce_clean_udp_flow_is_one_group(
        v6 in any::<bool>(), size in 1usize..1400, n in 2usize..=64,
        last in 1usize..1400, l3 in prop_oneof![Just(0usize), Just(14), Just(22)],
        id0 in any::<u16>(), df in any::<bool>(), seed in any::<u64>(),
    ) {
        let f = flow_of(2 + u8::from(v6), 0, seed);
        let payload = bytes(seed, (n - 1) * size + last.min(size));
        let prefix = bytes(!seed, l3);
        let pkts: Vec<Vec<u8>> = f.segments(0, id0, size, &payload, 0)
            .into_iter()
            .map(|mut p| {
                if !df && !v6 {
                    p[6] = 0;
                    super::ip::fill_ipv4_checksum(&mut p, 20);
                }
                [&prefix[..], &p].concat()
            })
            .collect();
        // IPv4 total length <= 65,535 may cut the group.
        let hdrs = if v6 { 8 } else { 28 };
        let mut fit = 0;
        let mut total = hdrs;
        for p in &pkts {
            total += p.len() - l3 - hdrs - if v6 { 40 } else { 0 };
            if total > 65_535 { break; }
            fit += 1;
        }
        let want: Vec<Vec<u32>> = if n <= fit {
            vec![(0..n as u32).collect()]
        } else {
            vec![(0..fit as u32).collect(), (fit as u32..n as u32).collect()]
        };
        prop_assert_eq!(coalesce_with(&pkts, l3, true), want.clone());
        prop_assert_eq!(coalesce_with(&pkts, l3, false), (0..n as u32).map(|i| vec![i]).collect::<Vec<_>>());
        // The merged group through `split` with GsoKind::UdpL4 (checked against the vnet
        // header in `expand_group`, here spelled out once more).
        let mut c = Coalescer::new(n);
        c.set_udp(true);
        for (i, p) in pkts.iter().enumerate() {
            c.push(i as u32, p, l3);
        }
        let g = c.groups().next().unwrap();
        let bytes = group_bytes(&g, &pkts);
        let gso = Gso { kind: GsoKind::UdpL4, size: size as u16 };
        prop_assert_eq!(g.hdr.gso(), Ok(Some(gso)));
        let lay = split_layout(&bytes, l3, gso).unwrap();
        let mut out = vec![0u8; lay.total_len];
        split(&bytes, l3, gso, &mut out).unwrap();
        let got: Vec<Vec<u8>> = out.chunks(lay.segment_len).map(<[u8]>::to_vec).collect();
        prop_assert_eq!(&got[..], &pkts[..want[0].len()]);
    }
}

/// One flow of the mixed-traffic property: its segments and which of them were spoiled.
#[derive(Debug, Clone)]
struct FlowSpec {
    v6: bool,
    udp: bool,
    port: u8,
    ack: u8,
    opt_words: usize,
    mss: usize,
    /// Per segment: 0..=9 normal, 10 short, 11 PSH (UDP: a larger datagram), 12 corrupt,
    /// 13 swap with the next, 14 partial checksum, 15 window change (UDP: zero checksum).
    segs: Vec<u8>,
}

fn flow_spec() -> impl Strategy<Value = FlowSpec> {
    (
        (any::<bool>(), any::<bool>()),
        0u8..3,
        0u8..2,
        0usize..4,
        1usize..1500,
        proptest::collection::vec(0u8..16, 1..16),
    )
        .prop_map(|((v6, udp), port, ack, opt_words, mss, segs)| FlowSpec {
            v6,
            udp,
            port,
            ack,
            opt_words,
            mss,
            segs,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Mixed TCP and UDP flows (some sharing a 5-tuple with another ACK or another spec,
    /// TCP and UDP on the same addresses and ports), corrupt, partial and zero (UDP)
    /// checksums, PSH in the middle, short middle segments, larger datagrams after smaller
    /// ones, swapped segments, window changes, small batches, UDP merging on or off: every
    /// packet lands in exactly one group, merged groups re-segment into exactly their
    /// members (every member but the last of `gso_size`), spoiled packets are never merged,
    /// nothing UDP merges while UDP is off, and each 5-tuple's packets come out in arrival
    /// order.
    #[test]
    fn coalesce_mixed_traffic_never_merges_across(
        specs in proptest::collection::vec(flow_spec(), 1..5),
        order in proptest::collection::vec(any::<u8>(), 0..64),
        cap in 1usize..80, l3 in prop_oneof![Just(0usize), Just(14)], seed in any::<u64>(),
        udp_on in any::<bool>(),
    ) {
        // Build each flow's packets as its sender would, in a seq space of its own.
        let mut per_flow: Vec<Vec<(Vec<u8>, bool)>> = Vec::new();
        let mut keys = Vec::new();
        for (fi, s) in specs.iter().enumerate() {
            let mut f = flow_of(u8::from(s.v6) + 2 * u8::from(s.udp), s.opt_words, seed ^ fi as u64);
            if !s.udp {
                f.opts = vec![1; s.opt_words * 4];
            }
            f.sport = 1000 + u16::from(s.port);
            f.ack = u32::from(s.ack);
            let mut seq = (fi as u32) << 28;
            let mut pkts: Vec<(Vec<u8>, bool)> = Vec::new();
            for (i, &k) in s.segs.iter().enumerate() {
                let len = match k {
                    10 => (s.mss / 2).max(1),
                    11 if s.udp => s.mss + 1 + i,
                    _ => s.mss,
                };
                let data = bytes(seed.wrapping_add((fi * 100 + i) as u64), len);
                let id = ((fi as u16) << 12).wrapping_add(i as u16);
                let flags = if k == 11 { ACK | PSH } else { ACK };
                let mut p = if k == 14 { f.packet_partial(seq, id, flags, &data) } else { f.packet(seq, id, flags, &data) };
                // A partial checksum is spoiled, unless the pseudo-header sum it holds happens
                // to be the packet's real checksum (about 1 in 65,536): then it is a valid
                // packet and may be merged.
                let mut spoiled = k == 14 && l4_checksum_state(&p, 0) != L4Checksum::Valid;
                if k == 15 && s.udp {
                    // A zero ("no") UDP checksum: never merged.
                    let at = f.ip_hdr_len() + 6;
                    p[at..at + 2].fill(0);
                    spoiled = true;
                } else if k == 15 {
                    // A window change: a valid packet that must not join the group.
                    let w = f.ip_hdr_len() + 14;
                    p[w] ^= 0x40;
                    p = refix(&f, &p);
                }
                if k == 12 {
                    let last = p.len() - 1;
                    p[last] ^= 0x21;
                    spoiled = true;
                }
                pkts.push((p, spoiled));
                seq = seq.wrapping_add(len as u32);
            }
            for (i, &k) in s.segs.iter().enumerate() {
                if k == 13 && i + 1 < pkts.len() { pkts.swap(i, i + 1); }
            }
            per_flow.push(pkts);
            keys.push((s.udp, s.v6, s.port));
        }
        // Interleave, keeping each flow's order.
        let mut cursor = vec![0usize; per_flow.len()];
        let mut input: Vec<(Vec<u8>, bool, usize)> = Vec::new();
        let mut pick = order.iter().map(|&b| usize::from(b) % per_flow.len()).collect::<Vec<_>>();
        pick.extend((0..per_flow.len()).flat_map(|fi| std::iter::repeat_n(fi, per_flow[fi].len())));
        for fi in pick {
            if cursor[fi] < per_flow[fi].len() {
                let (p, spoiled) = per_flow[fi][cursor[fi]].clone();
                input.push(([vec![0xee; l3], p].concat(), spoiled, fi));
                cursor[fi] += 1;
            }
        }
        let pkts: Vec<Vec<u8>> = input.iter().map(|(p, _, _)| p.clone()).collect();

        let mut c = Coalescer::new(cap);
        c.set_udp(udp_on);
        let mut out_order: Vec<u32> = Vec::new();
        let mut seen = vec![0u32; pkts.len()];
        let mut i = 0;
        while i < pkts.len() {
            if c.push(i as u32, &pkts[i], l3) {
                i += 1;
                if i < pkts.len() { continue; }
            }
            for g in c.groups() {
                // UDP with DF: the IDs are not checked (as for TCP), and re-segmentation
                // numbers them from the first member's.
                let expanded: Vec<Vec<u8>> = expand_group(&g, &pkts, l3).iter().map(|p| without_df_id(p, l3)).collect();
                let members: Vec<Vec<u8>> = g.members.iter().map(|m| without_df_id(&pkts[m.id as usize], l3)).collect();
                prop_assert_eq!(expanded, members);
                for m in g.members {
                    seen[m.id as usize] += 1;
                    out_order.push(m.id);
                    if g.is_merged() {
                        let (_, spoiled, fi) = input[m.id as usize];
                        prop_assert!(!spoiled, "spoiled packet merged");
                        prop_assert_eq!(l4_checksum_state(&pkts[m.id as usize], l3), L4Checksum::Valid);
                        prop_assert!(udp_on || !specs[fi].udp, "UDP merged while off");
                        prop_assert_eq!(g.hdr.gso_type == GSO_UDP_L4, specs[fi].udp);
                    }
                }
            }
            c.clear();
        }
        prop_assert!(seen.iter().all(|&n| n == 1));
        // Per 5-tuple, output order == arrival order.
        for key in &keys {
            let arrival: Vec<u32> = (0..pkts.len() as u32).filter(|&id| keys[input[id as usize].2] == *key).collect();
            let output: Vec<u32> = out_order.iter().copied().filter(|&id| keys[input[id as usize].2] == *key).collect();
            prop_assert_eq!(arrival, output);
        }
    }
}

/// The packet with its IPv4 ID and header checksum zeroed when DF is set (IPv6 as it is).
fn without_df_id(p: &[u8], l3: usize) -> Vec<u8> {
    let mut q = p.to_vec();
    if q[l3] >> 4 == 4 && q[l3 + 6] & 0x40 != 0 {
        q[l3 + 4..l3 + 6].fill(0);
        q[l3 + 10..l3 + 12].fill(0);
    }
    q
}

/// Recomputes a packet's L4 checksum after a header edit (via a partial + finish).
fn refix(f: &Flow, p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    let at = f.ip_hdr_len() + 16;
    q[at] = 0;
    q[at + 1] = 0;
    let l4 = f.ip_hdr_len();
    let pseudo = super::ip::pseudo_sum(&q, f.v6, f.proto(), q.len() - l4);
    let c = !crate::wire::checksum::fold(crate::wire::checksum::sum(&q[l4..], pseudo));
    q[at..at + 2].copy_from_slice(&c.to_be_bytes());
    q
}
