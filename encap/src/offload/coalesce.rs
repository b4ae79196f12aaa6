//! GRO: coalescing same-flow TCP segments into super-packets to write to a TUN/TAP.
//!
//! A [`Coalescer`] is offered the packets of one batch in arrival order ([`Coalescer::push`])
//! and groups them ([`Coalescer::groups`]). A group of one packet is written as it is, behind
//! an all-zero vnet header. A merged group is written as one `writev`:
//! `[hdr.emit()][header][payload of member 1][payload of member 2]...`, where `header` is the
//! first member's headers (prefix + IP + TCP) patched for the merged length, and the payload
//! ranges point into the caller's packets: the coalescer copies headers only, never payload,
//! so the caller keeps the pushed bytes unchanged until the groups are written.
//!
//! Admission (wireguard-go's rules, OFFLOAD.md 1.4): IPv4 with IHL 5, not a fragment, a
//! valid header checksum and a total length equal to the packet's length, or IPv6 with next
//! header TCP directly and a matching payload length; TCP flags exactly `ACK` or `ACK|PSH`;
//! a payload; a **valid TCP checksum** (a partial or corrupt one is never merged, or the
//! kernel, trusting `NEEDS_CSUM`, would launder it). A packet joins the most recent group of
//! its flow (addresses, ports, family) only if that group is still open and the packet
//! agrees with its first member on: the prefix bytes in front of the IP header, the ACK
//! number, IPv4 TOS / TTL / flag bits (IPv6 version-class-flow word and hop limit), the TCP
//! data offset byte (reserved bits included), window, urgent pointer and option bytes
//! (as Linux GRO does, so that re-segmenting gives back the same headers); an IPv4 packet
//! without DF must also carry the next IP ID; its sequence number continues the group exactly
//! (append only, no reordering); its payload is not larger than the first member's
//! (`gso_size`); and the merged IP length stays within 65,535 bytes and the member count
//! within the limit. A packet of the flow that does not join closes the group (so nothing
//! later of that flow can overtake it); a member shorter than `gso_size` or carrying PSH
//! closes it too, being necessarily the last.
//!
//! The merged header: IPv4 total length and header checksum (or IPv6 payload length)
//! rewritten, PSH OR-ed in from the last member, and the TCP checksum field set to the
//! folded, non-complemented pseudo-header sum over the merged L4 length, which the kernel
//! finishes (`NEEDS_CSUM`). With DF set, IPv4 IDs are not checked (the first member's is
//! kept; the kernel numbers the segments from it).

use core::ops::Range;

use super::ip::{self, tcp_flags};
use super::vnet::{l4_checksum_state, L4Checksum, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};
use crate::wire::checksum::fold;
use crate::wire::PROTO_TCP;

/// Default maximum number of segments merged into one group.
pub const MAX_MEMBERS: usize = 64;
/// Largest `l3_offset` (bytes in front of the IP header) of a packet that can be merged;
/// packets with a longer prefix are written alone.
pub const MAX_PREFIX: usize = 64;
/// Bytes of header storage per group: prefix + IPv6 header + TCP header with options.
const HDR_SLOT: usize = MAX_PREFIX + 40 + 60;
/// Largest IP length field value.
const MAX_IP_LEN: usize = u16::MAX as usize;

/// One packet of a [`Group`]: its id and the byte range of its `pkt` to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The id given to [`Coalescer::push`].
    pub id: u32,
    /// Range into that packet's bytes: the whole packet in a single-packet group, its payload
    /// (after prefix, IP and TCP headers) in a merged group.
    pub range: Range<usize>,
}

/// One packet to write to the device: a single packet or a merged super-packet.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// The vnet header: all-zero for a single packet; for a merged one `F_NEEDS_CSUM`,
    /// `GSO_TCPV4`/`GSO_TCPV6`, `hdr_len` = `header.len()`, `gso_size` = the first member's
    /// payload length, `csum_start` = `l3_offset` + IP header length, `csum_offset` = 16.
    pub hdr: VnetHdr,
    /// The patched prefix + IP + TCP header to write first (merged); empty for a single.
    pub header: &'a [u8],
    /// The members, in sequence order, with the ranges of their bytes to write.
    pub members: &'a [Member],
}

impl Group<'_> {
    /// Whether this group merges several packets (and so needs `hdr` and `header`).
    pub fn is_merged(&self) -> bool {
        self.members.len() > 1
    }

    /// Bytes of the packet this group writes, after the vnet header: `header` plus every
    /// member's range.
    pub fn packet_len(&self) -> usize {
        self.header.len() + self.members.iter().map(|m| m.range.len()).sum::<usize>()
    }
}

/// Address family, addresses and ports of a TCP packet: what makes two packets one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    v6: bool,
    addrs: [u8; 32],
    ports: [u8; 4],
}

/// A TCP packet that passed admission, with the fields merging needs.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    ip_hdr_len: usize,
    tcp_hdr_len: usize,
    seq: u32,
    payload_len: usize,
    psh: bool,
}

#[derive(Debug, Clone, Copy)]
struct GroupState {
    /// First member's index in `members`.
    start: usize,
    /// Number of members.
    len: usize,
    /// The flow of a group whose first packet was TCP (used to find and close it).
    flow: Option<FlowKey>,
    /// Further members may join (implies the first member was a candidate, header stored).
    open: bool,
    v6: bool,
    l3_offset: usize,
    ip_hdr_len: usize,
    tcp_hdr_len: usize,
    seq0: u32,
    gso_size: usize,
    /// Payload bytes of all members.
    payload: usize,
}

impl GroupState {
    fn hdr_end(&self) -> usize {
        self.l3_offset + self.ip_hdr_len + self.tcp_hdr_len
    }
}

/// Groups same-flow TCP segments of one batch into super-packets (see the
/// [module docs](self)). Fixed capacity; allocates only in [`Coalescer::new`].
#[derive(Debug, Clone)]
pub struct Coalescer {
    max_packets: usize,
    max_members: usize,
    /// Members of all groups, group after group (each group's members contiguous).
    members: Vec<Member>,
    groups: Vec<GroupState>,
    /// `HDR_SLOT` bytes per group, group `i` at `i * HDR_SLOT`.
    headers: Vec<u8>,
}

impl Coalescer {
    /// A coalescer for batches of up to `max_packets` packets, merging at most
    /// [`MAX_MEMBERS`] per group. The only allocation.
    pub fn new(max_packets: usize) -> Coalescer {
        Coalescer::with_max_members(max_packets, MAX_MEMBERS)
    }

    /// Like [`new`](Self::new) with a different member limit per group (at least 1; 1
    /// disables merging).
    pub fn with_max_members(max_packets: usize, max_members: usize) -> Coalescer {
        Coalescer {
            max_packets,
            max_members: max_members.max(1),
            members: Vec::with_capacity(max_packets),
            groups: Vec::with_capacity(max_packets),
            headers: vec![0; max_packets.saturating_mul(HDR_SLOT)],
        }
    }

    /// Forgets all pushed packets (keeps the storage).
    pub fn clear(&mut self) {
        self.members.clear();
        self.groups.clear();
    }

    /// Number of packets pushed since the last [`clear`](Self::clear).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nothing was pushed since the last [`clear`](Self::clear).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The most packets a batch can hold.
    pub fn capacity(&self) -> usize {
        self.max_packets
    }

    /// Offers packet `id` whose bytes are `pkt` (an IP packet starting at `l3_offset`, as it
    /// will be written to the device), in arrival order. Any bytes are accepted: what cannot
    /// be merged becomes a group of its own.
    ///
    /// Returns false (and records nothing) when full: the caller writes the groups, clears,
    /// and pushes again.
    pub fn push(&mut self, id: u32, pkt: &[u8], l3_offset: usize) -> bool {
        if self.members.len() >= self.max_packets {
            return false;
        }
        let flow = flow_key(pkt, l3_offset);
        let cand = if l3_offset <= MAX_PREFIX {
            candidate(pkt, l3_offset)
        } else {
            None
        };
        if let Some(flow) = flow {
            if let Some(gi) = self.groups.iter().rposition(|g| g.flow == Some(flow)) {
                if let Some(c) = cand {
                    if self.can_merge(gi, pkt, l3_offset, &c) {
                        self.append(gi, id, pkt, &c);
                        return true;
                    }
                }
                self.groups[gi].open = false;
            }
        }
        self.start_group(id, pkt, l3_offset, flow, cand);
        true
    }

    /// The output packets, in order of their first member.
    pub fn groups(&self) -> impl Iterator<Item = Group<'_>> {
        self.groups.iter().enumerate().map(move |(i, g)| {
            let members = &self.members[g.start..g.start + g.len];
            if g.len < 2 {
                return Group {
                    hdr: VnetHdr::default(),
                    header: &[],
                    members,
                };
            }
            let hdr_end = g.hdr_end();
            // All values fit u16: hdr_end <= HDR_SLOT, payload <= 65,535.
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if g.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                hdr_len: hdr_end as u16,
                gso_size: g.gso_size as u16,
                csum_start: (g.l3_offset + g.ip_hdr_len) as u16,
                csum_offset: ip::TCP_CSUM_OFFSET as u16,
            };
            Group {
                hdr,
                header: &self.headers[i * HDR_SLOT..i * HDR_SLOT + hdr_end],
                members,
            }
        })
    }

    fn slot(&self, gi: usize) -> &[u8] {
        &self.headers[gi * HDR_SLOT..(gi + 1) * HDR_SLOT]
    }

    fn can_merge(&self, gi: usize, pkt: &[u8], l3: usize, c: &Candidate) -> bool {
        let g = &self.groups[gi];
        if !g.open
            || g.len >= self.max_members
            || g.l3_offset != l3
            || g.ip_hdr_len != c.ip_hdr_len
            || g.tcp_hdr_len != c.tcp_hdr_len
            || c.payload_len > g.gso_size
            || c.seq != g.seq0.wrapping_add(g.payload as u32)
        {
            return false;
        }
        let merged_ip_len = if g.v6 {
            g.tcp_hdr_len + g.payload + c.payload_len
        } else {
            g.ip_hdr_len + g.tcp_hdr_len + g.payload + c.payload_len
        };
        if merged_ip_len > MAX_IP_LEN {
            return false;
        }
        let slot = self.slot(gi);
        let hdr_end = g.hdr_end();
        let (Some(a), Some(b)) = (slot.get(..hdr_end), pkt.get(..hdr_end)) else {
            return false;
        };
        if a[..l3] != b[..l3] {
            return false;
        }
        let (ia, ib) = (&a[l3..], &b[l3..]);
        let ip_same = if g.v6 {
            // Version, traffic class, flow label; hop limit.
            ia[..4] == ib[..4] && ia[7] == ib[7]
        } else {
            // TOS; flag bits (not a fragment: the offset is 0); TTL. Without DF the IDs must
            // increment by one per segment (re-segmentation recreates them that way).
            let df = ia[6] & 0x40 != 0;
            let id_ok =
                df || ip::rd16(ib, 4) == ip::rd16(ia, 4).map(|id| id.wrapping_add(g.len as u16));
            ia[1] == ib[1] && ia[6] == ib[6] && ia[8] == ib[8] && id_ok
        };
        let (ta, tb) = (&ia[g.ip_hdr_len..], &ib[g.ip_hdr_len..]);
        // ACK number; data offset byte with its reserved and AE bits (found by the
        // fuzzer: a differing reserved bit would be lost); window and urgent pointer (as
        // Linux GRO); the option bytes.
        ip_same
            && ta[8..13] == tb[8..13]
            && ta[14..16] == tb[14..16]
            && ta[18..g.tcp_hdr_len] == tb[18..g.tcp_hdr_len]
    }

    fn append(&mut self, gi: usize, id: u32, pkt: &[u8], c: &Candidate) {
        let g = self.groups[gi];
        let hdr_end = g.hdr_end();
        let at = g.start + g.len;
        if g.len == 1 {
            // The first member's bytes now come after the patched header.
            let first = &mut self.members[g.start];
            first.range.start = hdr_end;
        }
        self.members.insert(
            at,
            Member {
                id,
                range: hdr_end..pkt.len(),
            },
        );
        for later in &mut self.groups[gi + 1..] {
            later.start += 1;
        }
        let g = &mut self.groups[gi];
        g.len += 1;
        g.payload += c.payload_len;
        if c.psh || c.payload_len < g.gso_size || g.len >= self.max_members {
            g.open = false;
        }
        let g = *g;
        // Patch the stored header for the merged length.
        let slot = &mut self.headers[gi * HDR_SLOT..(gi + 1) * HDR_SLOT];
        let ip_bytes = &mut slot[g.l3_offset..hdr_end];
        let l4_len = g.tcp_hdr_len + g.payload;
        if g.v6 {
            ip::wr16(ip_bytes, 4, l4_len as u16);
        } else {
            ip::wr16(ip_bytes, 2, (g.ip_hdr_len + l4_len) as u16);
            ip::fill_ipv4_checksum(ip_bytes, g.ip_hdr_len);
        }
        if c.psh {
            ip_bytes[g.ip_hdr_len + 13] |= tcp_flags::PSH;
        }
        let pseudo = fold(ip::pseudo_sum(ip_bytes, g.v6, PROTO_TCP, l4_len));
        ip::wr16(ip_bytes, g.ip_hdr_len + ip::TCP_CSUM_OFFSET, pseudo);
    }

    fn start_group(
        &mut self,
        id: u32,
        pkt: &[u8],
        l3: usize,
        flow: Option<FlowKey>,
        cand: Option<Candidate>,
    ) {
        let gi = self.groups.len();
        let mut g = GroupState {
            start: self.members.len(),
            len: 1,
            flow,
            open: false,
            v6: false,
            l3_offset: l3,
            ip_hdr_len: 0,
            tcp_hdr_len: 0,
            seq0: 0,
            gso_size: 0,
            payload: 0,
        };
        if let (Some(c), Some(f)) = (cand, flow) {
            g.v6 = f.v6;
            g.ip_hdr_len = c.ip_hdr_len;
            g.tcp_hdr_len = c.tcp_hdr_len;
            g.seq0 = c.seq;
            g.gso_size = c.payload_len;
            g.payload = c.payload_len;
            g.open = !c.psh && self.max_members > 1;
            let hdr_end = g.hdr_end();
            self.headers[gi * HDR_SLOT..gi * HDR_SLOT + hdr_end].copy_from_slice(&pkt[..hdr_end]);
        }
        self.groups.push(g);
        self.members.push(Member {
            id,
            range: 0..pkt.len(),
        });
    }
}

/// The flow of any TCP packet whose addresses and ports can be read (IPv4 not a non-first
/// fragment, IPv6 with next header TCP).
fn flow_key(pkt: &[u8], l3: usize) -> Option<FlowKey> {
    let ip_bytes = pkt.get(l3..)?;
    let iph = ip::parse_ip(ip_bytes)?;
    if iph.proto != PROTO_TCP {
        return None;
    }
    if !iph.v6 && ip::rd16(ip_bytes, 6)? & 0x1fff != 0 {
        return None;
    }
    let mut addrs = [0u8; 32];
    if iph.v6 {
        addrs.copy_from_slice(ip_bytes.get(8..40)?);
    } else {
        addrs[..8].copy_from_slice(ip_bytes.get(12..20)?);
    }
    let mut ports = [0u8; 4];
    ports.copy_from_slice(ip_bytes.get(iph.hdr_len..iph.hdr_len + 4)?);
    Some(FlowKey {
        v6: iph.v6,
        addrs,
        ports,
    })
}

/// Admission of one packet (module docs), including its TCP checksum.
fn candidate(pkt: &[u8], l3: usize) -> Option<Candidate> {
    let ip_bytes = pkt.get(l3..)?;
    let iph = ip::parse_ip(ip_bytes)?;
    if iph.proto != PROTO_TCP || iph.fragment || iph.declared_len != ip_bytes.len() {
        return None;
    }
    if !iph.v6 && (iph.hdr_len != 20 || crate::wire::checksum::checksum(&ip_bytes[..20]) != 0) {
        return None;
    }
    let tcp = &ip_bytes[iph.hdr_len..];
    let tcp_hdr_len = ip::l4_hdr_len(PROTO_TCP, tcp)?;
    let flags = tcp[13];
    if flags != tcp_flags::ACK && flags != tcp_flags::ACK | tcp_flags::PSH {
        return None;
    }
    let payload_len = tcp.len() - tcp_hdr_len;
    if payload_len == 0 || l4_checksum_state(pkt, l3) != L4Checksum::Valid {
        return None;
    }
    Some(Candidate {
        ip_hdr_len: iph.hdr_len,
        tcp_hdr_len,
        seq: ip::rd32(tcp, 4)?,
        payload_len,
        psh: flags & tcp_flags::PSH != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testpkt::*;
    use crate::offload::vnet::GSO_NONE;

    fn ids(r: core::ops::Range<u32>) -> Vec<u32> {
        r.collect()
    }

    #[test]
    fn one_flow_merges_into_one_super_packet() {
        let f = Flow::v4_tcp();
        let payload = pattern(1448 * 9 + 500);
        let pkts = f.segments(100, 7, 1448, &payload, ACK | PSH);
        assert_eq!(coalesce_all(&pkts, 0), vec![ids(0..10)]);
        let mut c = Coalescer::new(16);
        for (i, p) in pkts.iter().enumerate() {
            c.push(i as u32, p, 0);
        }
        let g = c.groups().next().unwrap();
        assert_eq!(
            g.hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 40,
                gso_size: 1448,
                csum_start: 20,
                csum_offset: 16
            }
        );
        assert_eq!(g.members[0].range, 40..1488);
        assert_eq!(g.members[9].range, 40..540);
        // Merged header: total length, PSH from the last member.
        assert_eq!(
            usize::from(u16::from_be_bytes([g.header[2], g.header[3]])),
            40 + payload.len()
        );
        assert_eq!(g.header[33], ACK | PSH);
        assert_eq!(crate::wire::checksum::checksum(&g.header[..20]), 0);
    }

    #[test]
    fn ipv6_with_options_and_tap_prefix() {
        let f = Flow::v6_tcp().with_opts(vec![1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8]);
        let payload = pattern(1200 * 5);
        let eth: Vec<u8> = (0..14).collect();
        let pkts: Vec<Vec<u8>> = f
            .segments(u32::MAX - 2000, 0, 1200, &payload, ACK)
            .iter()
            .map(|p| [&eth[..], p].concat())
            .collect();
        assert_eq!(coalesce_all(&pkts, 14), vec![ids(0..5)]);
        let mut c = Coalescer::new(8);
        for (i, p) in pkts.iter().enumerate() {
            c.push(i as u32, p, 14);
        }
        let g = c.groups().next().unwrap();
        assert_eq!(
            (g.hdr.gso_type, g.hdr.hdr_len, g.hdr.csum_start),
            (GSO_TCPV6, 14 + 72, 54)
        );
        assert_eq!(&g.header[..14], &eth[..]);
        // A different Ethernet header does not merge.
        let mut other = pkts.clone();
        other[2][0] ^= 1;
        assert_eq!(
            coalesce_all(&other, 14),
            vec![ids(0..2), ids(2..3), ids(3..5)]
        );
    }

    #[test]
    fn corrupt_checksum_is_never_merged() {
        let f = Flow::v4_tcp();
        let mut pkts = f.segments(0, 0, 500, &pattern(500 * 6), ACK);
        let n = pkts[3].len();
        pkts[3][n - 1] ^= 0x10;
        assert_eq!(coalesce_all(&pkts, 0), vec![ids(0..3), vec![3], ids(4..6)]);
        // A corrupt first member does not start a group either.
        let mut pkts = f.segments(0, 0, 500, &pattern(500 * 3), ACK);
        pkts[0][45] ^= 0x10;
        assert_eq!(coalesce_all(&pkts, 0), vec![vec![0], ids(1..3)]);
        // A bad IPv4 header checksum neither.
        let mut pkts = f.segments(0, 0, 500, &pattern(500 * 3), ACK);
        pkts[1][10] ^= 0x10;
        assert_eq!(coalesce_all(&pkts, 0), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn partial_checksum_is_written_alone() {
        let f = Flow::v4_tcp();
        let mut pkts = f.segments(0, 0, 500, &pattern(1500), ACK);
        pkts[1] = f.packet_partial(500, 1, ACK, &pattern(1500)[500..1000]);
        assert_eq!(l4_checksum_state(&pkts[1], 0), L4Checksum::Partial);
        assert_eq!(coalesce_all(&pkts, 0), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn psh_short_and_larger_segments_close_groups() {
        let f = Flow::v4_tcp();
        let p = pattern(10_000);
        let mut seq = 0u32;
        let mut pkts = Vec::new();
        // 500, 500 PSH, 500, 300 (short), 500 (larger after short), 500
        for (i, (len, flags)) in [
            (500, ACK),
            (500, ACK | PSH),
            (500, ACK),
            (300, ACK),
            (500, ACK),
            (500, ACK),
        ]
        .into_iter()
        .enumerate()
        {
            pkts.push(f.packet(seq, i as u16, flags, &p[seq as usize..][..len]));
            seq += len as u32;
        }
        assert_eq!(
            coalesce_all(&pkts, 0),
            vec![ids(0..2), ids(2..4), ids(4..6)]
        );
        // A larger segment after the first is not merged and closes the group.
        let pkts = vec![
            f.packet(0, 0, ACK, &p[..300]),
            f.packet(300, 1, ACK, &p[300..800]),
            f.packet(800, 2, ACK, &p[800..1100]),
        ];
        assert_eq!(coalesce_all(&pkts, 0), vec![vec![0], ids(1..3)]);
    }

    #[test]
    fn out_of_order_and_other_acks_close_groups() {
        let f = Flow::v4_tcp();
        let mut pkts = f.segments(0, 0, 400, &pattern(400 * 6), ACK);
        pkts.swap(2, 3);
        // 0 1 | 3 (no append, closes) | 2 (no prepend) | 4? seq 1600 follows 2's group? 2 is
        // seq 800: 4 (seq 1600) does not follow 2 (1200): closed; 4 5 merge.
        assert_eq!(
            coalesce_all(&pkts, 0),
            vec![ids(0..2), vec![2], vec![3], ids(4..6)]
        );
        // Another ACK number: same 5-tuple, never merged, closes the group.
        let g = Flow {
            ack: 99,
            ..f.clone()
        };
        let mut pkts = f.segments(0, 0, 400, &pattern(400 * 4), ACK);
        pkts.insert(2, g.packet(800, 50, ACK, &pattern(400)));
        assert_eq!(coalesce_all(&pkts, 0), vec![ids(0..2), vec![2], ids(3..5)]);
        // A FIN / RST / SYN of the flow closes it too.
        for flags in [ACK | FIN, RST, SYN | ACK, ACK | CWR] {
            let mut pkts = f.segments(0, 0, 400, &pattern(400 * 4), ACK);
            pkts.insert(2, f.packet(800, 50, flags, b""));
            assert_eq!(coalesce_all(&pkts, 0), vec![ids(0..2), vec![2], ids(3..5)]);
        }
    }

    #[test]
    fn interleaved_flows_merge_separately() {
        let a = Flow::v4_tcp();
        let b = Flow {
            sport: 40001,
            ..Flow::v4_tcp()
        };
        let c6 = Flow::v6_tcp();
        let pa = a.segments(0, 0, 600, &pattern(1800), ACK);
        let pb = b.segments(7, 0, 700, &pattern(2100), ACK | PSH);
        let pc = c6.segments(9, 0, 800, &pattern(2400), ACK);
        let mut pkts = Vec::new();
        for i in 0..3 {
            pkts.push(pa[i].clone());
            pkts.push(pb[i].clone());
            pkts.push(pc[i].clone());
        }
        assert_eq!(
            coalesce_all(&pkts, 0),
            vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5, 8]]
        );
        // UDP and garbage are single and do not disturb.
        let mut more = pkts.clone();
        more.insert(4, Flow::v4_udp().packet(0, 1, 0, b"dns"));
        more.insert(5, vec![0x45, 1, 2]);
        more.insert(6, Vec::new());
        assert_eq!(
            coalesce_all(&more, 0),
            vec![
                vec![0, 3, 9],
                vec![1, 7, 10],
                vec![2, 8, 11],
                vec![4],
                vec![5],
                vec![6]
            ]
        );
    }

    #[test]
    fn limits_members_length_capacity() {
        let f = Flow::v4_tcp();
        // 100 segments of 100: groups of 64 and 36.
        let pkts = f.segments(0, 0, 100, &pattern(100 * 100), ACK);
        assert_eq!(coalesce_all(&pkts, 0), vec![ids(0..64), ids(64..100)]);
        let mut c = Coalescer::with_max_members(8, 3);
        for (i, p) in pkts.iter().take(8).enumerate() {
            assert!(c.push(i as u32, p, 0));
        }
        assert!(!c.push(8, &pkts[8], 0));
        assert_eq!(c.len(), 8);
        let got: Vec<Vec<u32>> = c
            .groups()
            .map(|g| g.members.iter().map(|m| m.id).collect())
            .collect();
        assert_eq!(got, vec![ids(0..3), ids(3..6), ids(6..8)]);
        c.clear();
        assert!(c.is_empty() && c.groups().next().is_none());
        assert!(c.push(8, &pkts[8], 0));
        assert_eq!(c.capacity(), 8);
        // IPv4 total length <= 65,535: 9000-byte segments, 7 fit (63,000 + 40).
        let big = f.segments(0, 0, 9000, &pattern(9000 * 9), ACK);
        assert_eq!(coalesce_all(&big, 0), vec![ids(0..7), ids(7..9)]);
        // IPv6: payload length <= 65,535 counts no IP header: 65,515 = 20 + 7 * 9,356 + 2,023...
        let f6 = Flow::v6_tcp();
        let big = f6.segments(0, 0, 9359, &pattern(9359 * 8), ACK);
        // 7 * 9359 + 20 = 65,533 fits; the 8th does not.
        assert_eq!(coalesce_all(&big, 0), vec![ids(0..7), vec![7]]);
        // Zero capacity: always full.
        assert!(!Coalescer::new(0).push(0, &pkts[0], 0));
    }

    #[test]
    fn not_admitted_shapes() {
        let f = Flow::v4_tcp();
        let pkts = f.segments(0, 0, 100, &pattern(300), ACK);
        // Total length shorter than the packet (padding) / IPv4 options / fragment / prefix
        // longer than MAX_PREFIX: alone.
        let mut padded = pkts.clone();
        padded[1].push(0);
        assert_eq!(coalesce_all(&padded, 0), vec![vec![0], vec![1], vec![2]]);
        let mut ttl = pkts.clone();
        ttl[1][8] -= 1;
        crate::offload::ip::fill_ipv4_checksum(&mut ttl[1], 20);
        assert_eq!(coalesce_all(&ttl, 0), vec![vec![0], vec![1], vec![2]]);
        let long_prefix: Vec<Vec<u8>> = pkts
            .iter()
            .map(|p| [&[0u8; MAX_PREFIX + 1][..], p].concat())
            .collect();
        assert_eq!(
            coalesce_all(&long_prefix, MAX_PREFIX + 1),
            vec![vec![0], vec![1], vec![2]]
        );
        let ok_prefix: Vec<Vec<u8>> = pkts
            .iter()
            .map(|p| [&[0u8; MAX_PREFIX][..], p].concat())
            .collect();
        assert_eq!(coalesce_all(&ok_prefix, MAX_PREFIX), vec![ids(0..3)]);
        // A PSH first member stays alone; the rest merge.
        let mut psh = pkts.clone();
        psh[0] = f.packet(0, 0, ACK | PSH, &pattern(300)[..100]);
        assert_eq!(coalesce_all(&psh, 0), vec![vec![0], ids(1..3)]);
        // Single groups get an all-zero header and the whole packet.
        let mut c = Coalescer::new(1);
        c.push(5, &pkts[0], 0);
        let g = c.groups().next().unwrap();
        assert_eq!((g.hdr.gso_type, g.hdr.flags), (GSO_NONE, 0));
        assert_eq!(
            g.members,
            &[Member {
                id: 5,
                range: 0..pkts[0].len()
            }]
        );
        assert!(!g.is_merged());
    }
}
