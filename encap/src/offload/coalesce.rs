//! GRO: coalescing same-flow TCP segments (and, when enabled, UDP datagrams) into
//! super-packets to write to a TUN/TAP.
//!
//! A [`Coalescer`] is offered the packets of one batch in arrival order ([`Coalescer::push`])
//! and groups them ([`Coalescer::groups`]). A group of one packet is written as it is, behind
//! an all-zero vnet header. A merged group is written as one `writev`:
//! `[hdr.emit()][header][payload of member 1][payload of member 2]...`, where `header` is the
//! first member's headers (prefix + IP + TCP/UDP) patched for the merged length, and the
//! payload ranges point into the caller's packets: the coalescer copies headers only, never
//! payload, so the caller keeps the pushed bytes unchanged until the groups are written.
//!
//! # TCP
//!
//! Admission (wireguard-go's rules, OFFLOAD.md 1.4): IPv4 with IHL 5, not a fragment, a
//! valid header checksum and a total length equal to the packet's length, or IPv6 with next
//! header TCP directly and a matching payload length; TCP flags exactly `ACK` or `ACK|PSH`;
//! a payload; a **valid TCP checksum** (a partial or corrupt one is never merged, or the
//! kernel, trusting `NEEDS_CSUM`, would launder it). A packet joins the most recent group of
//! its flow (protocol, addresses, ports, family) only if that group is still open and the
//! packet agrees with its first member on: the prefix bytes in front of the IP header, the
//! ACK number, IPv4 TOS / TTL / flag bits (IPv6 version-class-flow word and hop limit), the
//! TCP data offset byte (reserved bits included), window, urgent pointer and option bytes
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
//! kept; the kernel numbers the segments from it). The vnet header: `F_NEEDS_CSUM`,
//! `GSO_TCPV4`/`GSO_TCPV6`, `csum_offset` 16.
//!
//! A packet that may belong to a flow without showing its ports (a non-first IPv4 fragment
//! of TCP, or of UDP when enabled; an IPv6 packet with a hop-by-hop, routing, fragment, AH or
//! destination options header after the fixed header) closes every group between the same
//! addresses (of that protocol, for IPv4), so that nothing later of the flow overtakes it.
//!
//! # UDP (off by default)
//!
//! Only for a device that accepted USO (`TUN_F_USO4 | TUN_F_USO6`, Linux 6.2+): enable it with
//! [`Coalescer::set_udp`]. While disabled, every UDP datagram is a group of its own and
//! never affects a TCP group. When enabled, a datagram is a candidate if it is IPv4 (IHL 5,
//! not a fragment, valid header checksum, total length equal to the packet's length) or IPv6
//! with next header UDP directly and a matching payload length; its UDP length equals its L4
//! length; it has a payload; and its **UDP checksum verifies and is not zero**. A zero
//! checksum over IPv4 means "none": such datagrams are never merged (Linux's UDP GRO merges
//! them only if all members agree on having none; the merged packet would get a computed
//! checksum the sender never asked for, so weft keeps them alone). A zero field over IPv6
//! is not a valid checksum at all.
//!
//! The flow is the protocol, addresses, ports and family; a UDP flow never meets a TCP flow
//! with the same addresses and ports. A datagram joins the most recent group of its flow
//! only by being appended to it (UDP has no sequence number, so arrival order is the order;
//! nothing is ever prepended or reordered), and only if that group is still open and the
//! datagram agrees with its first member on the prefix bytes, IPv4 TOS / TTL / flag bits
//! (with the IP ID rule of the TCP path: without DF the next ID) or the IPv6
//! version-class-flow word and hop limit; its payload is not larger than the first member's
//! (`gso_size`); the merged IP length stays within 65,535 bytes and the member count within
//! the limit. Every member but the last carries exactly `gso_size` payload bytes: a shorter
//! one joins as the last and closes the group, a larger one does not join (and, like any
//! datagram of the flow that does not join, closes the group).
//!
//! The merged header: IPv4 total length and header checksum (or IPv6 payload length), the
//! UDP length set to the merged L4 length, and the UDP checksum field set to the folded,
//! non-complemented pseudo-header sum over the merged L4 length. The vnet header:
//! `F_NEEDS_CSUM`, `GSO_UDP_L4`, `hdr_len` = `l3_offset` + IP header + 8, `gso_size` = the
//! first member's payload, `csum_start` = `l3_offset` + IP header, `csum_offset` 6. The
//! kernel cuts it back into exactly the original datagrams (UDP length and checksum per
//! segment, IPv4 IDs numbered from the first member's).

use core::ops::Range;

use super::ip::{self, tcp_flags};
use super::vnet::{
    l4_checksum_state, L4Checksum, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4,
};
use crate::wire::checksum::{fold, update16, Sum};
use crate::wire::{PROTO_TCP, PROTO_UDP};

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
    /// (after prefix, IP and TCP/UDP headers) in a merged group.
    pub range: Range<usize>,
}

/// One packet to write to the device: a single packet or a merged super-packet.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// The vnet header: all-zero for a single packet; for a merged one `F_NEEDS_CSUM`,
    /// `GSO_TCPV4`/`GSO_TCPV6`/`GSO_UDP_L4`, `hdr_len` = `header.len()`, `gso_size` = the
    /// first member's payload length, `csum_start` = `l3_offset` + IP header length,
    /// `csum_offset` = 16 (TCP) or 6 (UDP).
    pub hdr: VnetHdr,
    /// The patched prefix + IP + TCP/UDP header to write first (merged); empty for a single.
    pub header: &'a [u8],
    /// The members, in sequence (TCP) or arrival (UDP) order, with the ranges of their bytes
    /// to write.
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

/// Protocol, address family, addresses and ports of a TCP (or UDP) packet: what makes two
/// packets one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    udp: bool,
    v6: bool,
    addrs: [u8; 32],
    ports: [u8; 4],
}

/// A TCP packet or UDP datagram that passed admission, with the fields merging needs.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    ip_hdr_len: usize,
    /// TCP header with options, or the 8-byte UDP header.
    l4_hdr_len: usize,
    /// TCP sequence number (0 for UDP).
    seq: u32,
    payload_len: usize,
    /// TCP PSH (always false for UDP).
    psh: bool,
}

#[derive(Debug, Clone, Copy)]
struct GroupState {
    /// First member's index in `members`.
    start: usize,
    /// Number of members.
    len: usize,
    /// The flow of a group whose first packet was TCP (or UDP with UDP enabled), used to
    /// find and close it.
    flow: Option<FlowKey>,
    /// Further members may join (implies the first member was a candidate, header stored).
    open: bool,
    v6: bool,
    udp: bool,
    l3_offset: usize,
    ip_hdr_len: usize,
    l4_hdr_len: usize,
    seq0: u32,
    gso_size: usize,
    /// Payload bytes of all members.
    payload: usize,
    /// The pseudo-header sum without the length (addresses and protocol), summed once when
    /// the group starts: each merge only adds the new length.
    pseudo_base: Sum,
}

impl GroupState {
    fn hdr_end(&self) -> usize {
        self.l3_offset + self.ip_hdr_len + self.l4_hdr_len
    }
}

/// Groups same-flow TCP segments (and UDP datagrams, see [`Coalescer::set_udp`]) of one
/// batch into super-packets (see the [module docs](self)). Fixed capacity; allocates only
/// in [`Coalescer::new`].
#[derive(Debug, Clone)]
pub struct Coalescer {
    max_packets: usize,
    max_members: usize,
    /// Whether UDP datagrams are merged (USO accepted by the device).
    udp: bool,
    /// Members of all groups, group after group (each group's members contiguous).
    members: Vec<Member>,
    groups: Vec<GroupState>,
    /// `HDR_SLOT` bytes per group, group `i` at `i * HDR_SLOT`.
    headers: Vec<u8>,
}

impl Coalescer {
    /// A coalescer for batches of up to `max_packets` packets, merging at most
    /// [`MAX_MEMBERS`] per group, TCP only (see [`set_udp`](Self::set_udp)). The only
    /// allocation.
    pub fn new(max_packets: usize) -> Coalescer {
        Coalescer::with_max_members(max_packets, MAX_MEMBERS)
    }

    /// Like [`new`](Self::new) with a different member limit per group (at least 1; 1
    /// disables merging).
    pub fn with_max_members(max_packets: usize, max_members: usize) -> Coalescer {
        Coalescer {
            max_packets,
            max_members: max_members.max(1),
            udp: false,
            members: Vec::with_capacity(max_packets),
            groups: Vec::with_capacity(max_packets),
            headers: vec![0; max_packets.saturating_mul(HDR_SLOT)],
        }
    }

    /// Enables (or disables) merging UDP datagrams into `GSO_UDP_L4` super-packets; off by
    /// default. Enable it only for a device that accepted USO (`TUNSETOFFLOAD` with
    /// `TUN_F_USO4 | TUN_F_USO6`, Linux 6.2+): an older kernel rejects such writes. Meant to
    /// be set once, or between batches; it applies to the packets pushed after it (a group
    /// started before stays as it is). [`clear`](Self::clear) keeps the setting.
    pub fn set_udp(&mut self, on: bool) {
        self.udp = on;
    }

    /// Whether UDP datagrams are merged ([`set_udp`](Self::set_udp)).
    pub fn udp(&self) -> bool {
        self.udp
    }

    /// Forgets all pushed packets (keeps the storage and the settings).
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
        let flow = flow_key(pkt, l3_offset, self.udp);
        let cand = match flow {
            Some(f) if l3_offset <= MAX_PREFIX => candidate(pkt, l3_offset, f.udp),
            _ => None,
        };
        if flow.is_none() {
            if let Some(hidden) = hidden_ports(pkt, l3_offset, self.udp) {
                // A packet that may belong to a flow whose ports it does not show (a
                // non-first IPv4 fragment, an IPv6 extension header): close every group it
                // may belong to, so that nothing later overtakes it.
                for g in &mut self.groups {
                    if g.flow.is_some_and(|f| hidden.covers(&f)) {
                        g.open = false;
                    }
                }
            }
        }
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
            let (gso_type, csum_offset) = match (g.udp, g.v6) {
                (true, _) => (GSO_UDP_L4, ip::UDP_CSUM_OFFSET),
                (false, false) => (GSO_TCPV4, ip::TCP_CSUM_OFFSET),
                (false, true) => (GSO_TCPV6, ip::TCP_CSUM_OFFSET),
            };
            // All values fit u16: hdr_end <= HDR_SLOT, payload <= 65,535.
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type,
                hdr_len: hdr_end as u16,
                gso_size: g.gso_size as u16,
                csum_start: (g.l3_offset + g.ip_hdr_len) as u16,
                csum_offset: csum_offset as u16,
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
        // The flow key already matched, so `g.udp` is the candidate's protocol.
        if !g.open
            || g.len >= self.max_members
            || g.l3_offset != l3
            || g.ip_hdr_len != c.ip_hdr_len
            || g.l4_hdr_len != c.l4_hdr_len
            || c.payload_len > g.gso_size
            || (!g.udp && c.seq != g.seq0.wrapping_add(g.payload as u32))
        {
            return false;
        }
        let merged_ip_len = if g.v6 {
            g.l4_hdr_len + g.payload + c.payload_len
        } else {
            g.ip_hdr_len + g.l4_hdr_len + g.payload + c.payload_len
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
        if g.udp {
            // Ports are in the flow key; length and checksum are per datagram.
            return ip_same;
        }
        let (ta, tb) = (&ia[g.ip_hdr_len..], &ib[g.ip_hdr_len..]);
        // ACK number; data offset byte with its reserved and AE bits (found by the
        // fuzzer: a differing reserved bit would be lost); window and urgent pointer (as
        // Linux GRO); the option bytes.
        ip_same
            && ta[8..13] == tb[8..13]
            && ta[14..16] == tb[14..16]
            && ta[18..g.l4_hdr_len] == tb[18..g.l4_hdr_len]
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
        let l4_len = g.l4_hdr_len + g.payload;
        if g.v6 {
            ip::wr16(ip_bytes, 4, l4_len as u16);
        } else {
            // The stored header's checksum was verified when its packet was admitted: only
            // the total length changes, so the checksum is updated for that word alone
            // (RFC 1624), not recomputed over the header.
            let new_len = (g.ip_hdr_len + l4_len) as u16;
            if let (Some(old_len), Some(old_csum)) = (ip::rd16(ip_bytes, 2), ip::rd16(ip_bytes, 10))
            {
                ip::wr16(ip_bytes, 2, new_len);
                ip::wr16(ip_bytes, 10, update16(old_csum, old_len, new_len));
            }
        }
        let csum_at = if g.udp {
            ip::wr16(ip_bytes, g.ip_hdr_len + 4, l4_len as u16);
            g.ip_hdr_len + ip::UDP_CSUM_OFFSET
        } else {
            if c.psh {
                ip_bytes[g.ip_hdr_len + 13] |= tcp_flags::PSH;
            }
            g.ip_hdr_len + ip::TCP_CSUM_OFFSET
        };
        let pseudo = fold(ip::add(g.pseudo_base, l4_len as u64));
        ip::wr16(ip_bytes, csum_at, pseudo);
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
            udp: false,
            l3_offset: l3,
            ip_hdr_len: 0,
            l4_hdr_len: 0,
            seq0: 0,
            gso_size: 0,
            payload: 0,
            pseudo_base: 0,
        };
        if let (Some(c), Some(f)) = (cand, flow) {
            g.v6 = f.v6;
            g.udp = f.udp;
            g.ip_hdr_len = c.ip_hdr_len;
            g.l4_hdr_len = c.l4_hdr_len;
            g.seq0 = c.seq;
            g.gso_size = c.payload_len;
            g.payload = c.payload_len;
            g.open = !c.psh && self.max_members > 1;
            let hdr_end = g.hdr_end();
            self.headers[gi * HDR_SLOT..gi * HDR_SLOT + hdr_end].copy_from_slice(&pkt[..hdr_end]);
            let proto = if g.udp { PROTO_UDP } else { PROTO_TCP };
            g.pseudo_base = ip::pseudo_sum(&pkt[l3..hdr_end], g.v6, proto, 0);
        }
        self.groups.push(g);
        self.members.push(Member {
            id,
            range: 0..pkt.len(),
        });
    }
}

/// The flow of any TCP packet (or, with `udp`, UDP datagram) whose addresses and ports can
/// be read (IPv4 not a non-first fragment, IPv6 with next header TCP/UDP).
fn flow_key(pkt: &[u8], l3: usize, udp: bool) -> Option<FlowKey> {
    let ip_bytes = pkt.get(l3..)?;
    let iph = ip::parse_ip(ip_bytes)?;
    let is_udp = match iph.proto {
        PROTO_TCP => false,
        PROTO_UDP if udp => true,
        _ => return None,
    };
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
        udp: is_udp,
        v6: iph.v6,
        addrs,
        ports,
    })
}

/// The addresses (and, for IPv4, the protocol) of a packet that has no [`FlowKey`] but may
/// belong to a merged flow: see [`hidden_ports`].
#[derive(Debug, Clone, Copy)]
struct Hidden {
    v6: bool,
    addrs: [u8; 32],
    /// IPv4: whether the protocol is UDP; IPv6: unknown (`None`), any protocol.
    udp: Option<bool>,
}

impl Hidden {
    fn covers(&self, f: &FlowKey) -> bool {
        f.v6 == self.v6 && f.addrs == self.addrs && self.udp.is_none_or(|u| u == f.udp)
    }
}

/// For a packet without a flow key whose ports cannot be read although it may carry TCP (or,
/// with `udp`, UDP): a non-first IPv4 fragment of TCP/UDP, or an IPv6 packet whose next
/// header is an extension header (hop-by-hop, routing, fragment, AH, destination options).
fn hidden_ports(pkt: &[u8], l3: usize, udp: bool) -> Option<Hidden> {
    let ip_bytes = pkt.get(l3..)?;
    let iph = ip::parse_ip(ip_bytes)?;
    let mut addrs = [0u8; 32];
    if iph.v6 {
        if !matches!(iph.proto, 0 | 43 | 44 | 51 | 60) {
            return None;
        }
        addrs.copy_from_slice(ip_bytes.get(8..40)?);
        return Some(Hidden {
            v6: true,
            addrs,
            udp: None,
        });
    }
    let is_udp = match iph.proto {
        PROTO_TCP => false,
        PROTO_UDP if udp => true,
        _ => return None,
    };
    if ip::rd16(ip_bytes, 6)? & 0x1fff == 0 {
        return None;
    }
    addrs[..8].copy_from_slice(ip_bytes.get(12..20)?);
    Some(Hidden {
        v6: false,
        addrs,
        udp: Some(is_udp),
    })
}

/// Admission of one packet of protocol `udp` ? UDP : TCP (module docs), including its L4
/// checksum.
fn candidate(pkt: &[u8], l3: usize, udp: bool) -> Option<Candidate> {
    let ip_bytes = pkt.get(l3..)?;
    let iph = ip::parse_ip(ip_bytes)?;
    let proto = if udp { PROTO_UDP } else { PROTO_TCP };
    if iph.proto != proto || iph.fragment || iph.declared_len != ip_bytes.len() {
        return None;
    }
    if !iph.v6 && (iph.hdr_len != 20 || crate::wire::checksum::checksum(&ip_bytes[..20]) != 0) {
        return None;
    }
    let l4 = &ip_bytes[iph.hdr_len..];
    let l4_hdr_len = ip::l4_hdr_len(proto, l4)?;
    let payload_len = l4.len() - l4_hdr_len;
    if payload_len == 0 {
        return None;
    }
    let (seq, psh) = if udp {
        // UDP length == L4 length; a checksum present (not 0, "none" over IPv4).
        if usize::from(ip::rd16(l4, 4)?) != l4.len() || ip::rd16(l4, ip::UDP_CSUM_OFFSET)? == 0 {
            return None;
        }
        (0, false)
    } else {
        let flags = l4[13];
        if flags != tcp_flags::ACK && flags != tcp_flags::ACK | tcp_flags::PSH {
            return None;
        }
        (ip::rd32(l4, 4)?, flags & tcp_flags::PSH != 0)
    };
    if l4_checksum_state(pkt, l3) != L4Checksum::Valid {
        return None;
    }
    Some(Candidate {
        ip_hdr_len: iph.hdr_len,
        l4_hdr_len,
        seq,
        payload_len,
        psh,
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

    /// Pushes `pkts` into a coalescer with UDP enabled and returns it.
    fn udp_coalescer(pkts: &[Vec<u8>], l3: usize) -> Coalescer {
        let mut c = Coalescer::new(pkts.len());
        c.set_udp(true);
        for (i, p) in pkts.iter().enumerate() {
            assert!(c.push(i as u32, p, l3));
        }
        c
    }

    #[test]
    fn udp_is_off_by_default() {
        let f = Flow::v4_udp();
        let pkts = f.segments(0, 0x1234, 1000, &pattern(3500), 0);
        let c = Coalescer::new(4);
        assert!(!c.udp());
        assert_eq!(
            coalesce_all(&pkts, 0),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
        assert_eq!(coalesce_with(&pkts, 0, true), vec![ids(0..4)]);
        let mut c = Coalescer::new(4);
        c.set_udp(true);
        assert!(c.udp());
        c.clear();
        assert!(c.udp(), "clear keeps the setting");
        c.set_udp(false);
        assert!(!c.udp());
    }

    #[test]
    fn udp_v4_merged_header_bytes() {
        let f = Flow::v4_udp();
        let payload = pattern(3500);
        let pkts = f.segments(0, 0x1234, 1000, &payload, 0);
        let c = udp_coalescer(&pkts, 0);
        let groups: Vec<Group<'_>> = c.groups().collect();
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(
            g.hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_UDP_L4,
                hdr_len: 28,
                gso_size: 1000,
                csum_start: 20,
                csum_offset: 6
            }
        );
        assert_eq!(g.hdr.emit(), [1, 5, 28, 0, 0xe8, 0x03, 20, 0, 6, 0]);
        #[rustfmt::skip]
        let want: [u8; 28] = [
            // IPv4: total length 3,528, the first member's ID, DF, TTL 64, UDP, checksum.
            0x45, 0x00, 0x0d, 0xc8, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x01, 0xfc,
            10, 244, 1, 5, 10, 244, 2, 9,
            // UDP: ports, length 3,508, folded pseudo-header sum (not complemented).
            0x9c, 0x40, 0x14, 0x51, 0x0d, 0xb4, 0x26, 0xbb,
        ];
        assert_eq!(g.header, &want[..]);
        let ranges: Vec<_> = g.members.iter().map(|m| m.range.clone()).collect();
        assert_eq!(ranges, vec![28..1028, 28..1028, 28..1028, 28..528]);
        assert_eq!(g.packet_len(), 28 + 3500);
        // The kernel's view: a partial checksum that finishes to a valid one, and USO
        // gives back exactly the datagrams.
        let bytes = group_bytes(g, &pkts);
        assert_eq!(l4_checksum_state(&bytes, 0), L4Checksum::Partial);
        assert_eq!(expand_group(g, &pkts, 0), pkts);
    }

    #[test]
    fn udp_v6_merged_header_bytes_with_tap_prefix() {
        let f = Flow::v6_udp();
        let eth: Vec<u8> = (0..14).collect();
        let pkts: Vec<Vec<u8>> = f
            .segments(0, 0, 1200, &pattern(6000), 0)
            .iter()
            .map(|p| [&eth[..], p].concat())
            .collect();
        assert_eq!(coalesce_with(&pkts, 14, true), vec![ids(0..5)]);
        let c = udp_coalescer(&pkts, 14);
        let g = c.groups().next().unwrap();
        assert_eq!(
            g.hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_UDP_L4,
                hdr_len: 14 + 40 + 8,
                gso_size: 1200,
                csum_start: 54,
                csum_offset: 6
            }
        );
        let mut want = eth.clone();
        #[rustfmt::skip]
        want.extend_from_slice(&[
            // IPv6: version/class/flow, payload length 6,008, UDP, hop limit 64.
            0x60, 0x00, 0x0b, 0xcd, 0x17, 0x78, 17, 64,
            0xfd, 0, 0, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
            // UDP: ports, length 6,008, folded pseudo-header sum.
            0x9c, 0x40, 0x14, 0x51, 0x17, 0x78, 0x11, 0xd2,
        ]);
        assert_eq!(g.header, &want[..]);
        // Exact multiple of gso_size: all members full, the group stays open to the limit.
        assert!(g.members.iter().all(|m| m.range == (62..1262)));
    }

    #[test]
    fn udp_short_closes_larger_never_joins() {
        let f = Flow::v4_udp();
        let p = pattern(10_000);
        let mut at = 0;
        let mut pkts = Vec::new();
        // 500 500 300 | 500 (larger after the short one: new group) 500 | 600 (larger than
        // gso_size: does not join, closes; starts a group) 600 600 200 (short: closes) | 100
        for (i, len) in [500, 500, 300, 500, 500, 600, 600, 600, 200, 100]
            .into_iter()
            .enumerate()
        {
            pkts.push(f.packet(0, i as u16, 0, &p[at..at + len]));
            at += len;
        }
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![ids(0..3), ids(3..5), ids(5..9), vec![9]]
        );
        // A larger second datagram: never joins a smaller first.
        let pkts = vec![f.packet(0, 0, 0, &p[..300]), f.packet(0, 1, 0, &p[..500])];
        assert_eq!(coalesce_with(&pkts, 0, true), vec![vec![0], vec![1]]);
    }

    #[test]
    fn udp_bad_zero_and_mismatched_datagrams_close_the_group() {
        let f = Flow::v4_udp();
        let base = f.segments(0, 0, 400, &pattern(400 * 6), 0);
        // Corrupt checksum in the middle: alone, and the flow's group is closed before it.
        let mut pkts = base.clone();
        pkts[2][100] ^= 0x08;
        assert_eq!(l4_checksum_state(&pkts[2], 0), L4Checksum::Invalid);
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![ids(0..2), vec![2], ids(3..6)]
        );
        // Zero ("no") checksum over IPv4: valid, but never merged.
        let mut pkts = base.clone();
        for i in [0, 3] {
            pkts[i][26] = 0;
            pkts[i][27] = 0;
            assert_eq!(l4_checksum_state(&pkts[i], 0), L4Checksum::Valid);
        }
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![vec![0], ids(1..3), vec![3], ids(4..6)]
        );
        let all_zero: Vec<Vec<u8>> = base
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p[26..28].fill(0);
                p
            })
            .collect();
        assert_eq!(
            coalesce_with(&all_zero, 0, true),
            (0..6).map(|i| vec![i]).collect::<Vec<_>>()
        );
        // A partial checksum: alone.
        let mut pkts = base.clone();
        pkts[1] = f.packet_partial(0, 1, 0, &pattern(400));
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![vec![0], vec![1], ids(2..6)]
        );
        // UDP length shorter than the L4 length (checksum made valid over the bytes).
        let mut pkts = base.clone();
        pkts[3][24..26].copy_from_slice(&100u16.to_be_bytes());
        pkts[3][26..28].fill(0);
        let s =
            crate::wire::checksum::sum(&pkts[3][20..], ip::pseudo_sum(&pkts[3], false, 17, 408));
        let c = !fold(s);
        pkts[3][26..28].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![ids(0..3), vec![3], ids(4..6)]
        );
        // Another TTL / TOS: a valid datagram of the flow that does not join, closes.
        for at in [8, 1] {
            let mut pkts = base.clone();
            pkts[2][at] ^= 0x04;
            ip::fill_ipv4_checksum(&mut pkts[2], 20);
            assert_eq!(
                coalesce_with(&pkts, 0, true),
                vec![ids(0..2), vec![2], ids(3..6)]
            );
        }
        // Without DF the IDs must count up by one; with DF they are not checked.
        let mut no_df = base.clone();
        for p in &mut no_df {
            p[6] = 0;
            ip::fill_ipv4_checksum(p, 20);
        }
        assert_eq!(coalesce_with(&no_df, 0, true), vec![ids(0..6)]);
        no_df[4][5] ^= 0x40;
        ip::fill_ipv4_checksum(&mut no_df[4], 20);
        let refix = |p: &mut Vec<u8>| {
            p[26..28].fill(0);
            let s = crate::wire::checksum::sum(&p[20..], ip::pseudo_sum(p, false, 17, 408));
            let c = !fold(s);
            p[26..28].copy_from_slice(&c.to_be_bytes());
        };
        refix(&mut no_df[4]);
        assert_eq!(
            coalesce_with(&no_df, 0, true),
            vec![ids(0..4), vec![4], vec![5]]
        );
        let mut df_ids = base.clone();
        df_ids[3][4] ^= 0x77;
        ip::fill_ipv4_checksum(&mut df_ids[3], 20);
        // (The kernel then numbers them from the first ID, as for TCP.)
        let c = udp_coalescer(&df_ids, 0);
        assert_eq!(c.groups().count(), 1);
    }

    #[test]
    fn udp_ipv6_class_flow_and_hop_limit_must_agree() {
        let f = Flow::v6_udp();
        let base = f.segments(0, 0, 300, &pattern(300 * 4), 0);
        for at in [1, 3, 7] {
            let mut pkts = base.clone();
            pkts[2][at] ^= 0x01;
            // Hop limit and flow label are outside the pseudo-header: still valid.
            assert_eq!(l4_checksum_state(&pkts[2], 0), L4Checksum::Valid);
            assert_eq!(
                coalesce_with(&pkts, 0, true),
                vec![ids(0..2), vec![2], vec![3]]
            );
        }
        // Next header not UDP directly (an extension header): never merged.
        let mut pkts = base.clone();
        pkts[1][6] = 60;
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![vec![0], vec![1], ids(2..4)]
        );
    }

    #[test]
    fn udp_and_tcp_flows_with_one_tuple_stay_apart() {
        let u = Flow::v4_udp();
        let t = Flow::v4_tcp();
        let ud = u.segments(0, 0, 500, &pattern(1500), 0);
        let td = t.segments(0, 100, 500, &pattern(1500), ACK);
        let mut pkts = Vec::new();
        for i in 0..3 {
            pkts.push(ud[i].clone());
            pkts.push(td[i].clone());
        }
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![vec![0, 2, 4], vec![1, 3, 5]]
        );
        // With UDP off the TCP group is the same and the datagrams are alone.
        assert_eq!(
            coalesce_with(&pkts, 0, false),
            vec![vec![0], vec![1, 3, 5], vec![2], vec![4]]
        );
        // Two UDP flows interleaved, v4 and v6, another port.
        let u2 = Flow {
            dport: 53,
            ..Flow::v4_udp()
        };
        let u6 = Flow::v6_udp();
        let a = u2.segments(0, 0, 700, &pattern(2100), 0);
        let b = u6.segments(0, 0, 900, &pattern(1900), 0);
        let mut pkts = Vec::new();
        for i in 0..3 {
            pkts.push(ud[i].clone());
            pkts.push(a[i].clone());
            pkts.push(b[i].clone());
        }
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5, 8]]
        );
    }

    #[test]
    fn udp_limits_members_and_length() {
        let f = Flow::v4_udp();
        let pkts = f.segments(0, 0, 100, &pattern(100 * 100), 0);
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![ids(0..64), ids(64..100)]
        );
        // IPv4 total length <= 65,535: 9000-byte datagrams, 7 fit (63,000 + 28).
        let big = f.segments(0, 0, 9000, &pattern(9000 * 9), 0);
        assert_eq!(coalesce_with(&big, 0, true), vec![ids(0..7), ids(7..9)]);
        // IPv6: 8 + 7 * 9,361 = 65,535 fits exactly; the 8th does not.
        let f6 = Flow::v6_udp();
        let big = f6.segments(0, 0, 9361, &pattern(9361 * 8), 0);
        assert_eq!(coalesce_with(&big, 0, true), vec![ids(0..7), vec![7]]);
        let big = f6.segments(0, 0, 9362, &pattern(9362 * 8), 0);
        assert_eq!(coalesce_with(&big, 0, true), vec![ids(0..6), ids(6..8)]);
        // Member limit 1 disables merging.
        let mut c = Coalescer::with_max_members(4, 1);
        c.set_udp(true);
        for (i, p) in pkts.iter().take(4).enumerate() {
            c.push(i as u32, p, 0);
        }
        assert!(c.groups().all(|g| !g.is_merged()));
    }

    #[test]
    fn udp_out_of_order_is_arrival_order() {
        // UDP has no sequence numbers: swapped equal-size datagrams merge in arrival order
        // (the kernel re-segments them in that order); nothing is ever moved.
        let f = Flow::v4_udp();
        let mut pkts = f.segments(0, 0, 400, &pattern(400 * 4), 0);
        pkts.swap(1, 2);
        let c = udp_coalescer(&pkts, 0);
        let g = c.groups().next().unwrap();
        let order: Vec<u32> = g.members.iter().map(|m| m.id).collect();
        assert_eq!(order, vec![0, 1, 2, 3]);
        // A short datagram arriving before full ones: it ends its group.
        let p = pattern(2000);
        let pkts = vec![
            f.packet(0, 0, 0, &p[..400]),
            f.packet(0, 1, 0, &p[..200]),
            f.packet(0, 2, 0, &p[..400]),
            f.packet(0, 3, 0, &p[..400]),
        ];
        assert_eq!(coalesce_with(&pkts, 0, true), vec![ids(0..2), ids(2..4)]);
    }

    #[test]
    fn portless_packets_of_a_flow_keep_order() {
        // A non-first IPv4 fragment of the same addresses and protocol carries no ports: it
        // may belong to the flow, so it closes the groups it could belong to.
        for (f, udp) in [(Flow::v4_udp(), true), (Flow::v4_tcp(), false)] {
            let mut pkts = f.segments(0, 0, 300, &pattern(300 * 4), ACK);
            let mut frag = f.packet(0, 99, ACK, &pattern(100));
            frag[6] = 0x00;
            frag[7] = 0x10; // offset 128
            ip::fill_ipv4_checksum(&mut frag, 20);
            pkts.insert(2, frag.clone());
            assert_eq!(
                coalesce_with(&pkts, 0, udp),
                vec![ids(0..2), vec![2], ids(3..5)]
            );
            // Other addresses, or another protocol (ICMP here): no effect.
            let mut other = pkts.clone();
            other[2][19] ^= 1;
            ip::fill_ipv4_checksum(&mut other[2], 20);
            assert_eq!(
                coalesce_with(&other, 0, udp),
                vec![vec![0, 1, 3, 4], vec![2]]
            );
            let mut icmp = pkts.clone();
            icmp[2][9] = 1;
            ip::fill_ipv4_checksum(&mut icmp[2], 20);
            assert_eq!(
                coalesce_with(&icmp, 0, udp),
                vec![vec![0, 1, 3, 4], vec![2]]
            );
        }
        // A UDP fragment does not close a TCP group of the same addresses.
        let t = Flow::v4_tcp();
        let mut pkts = t.segments(0, 0, 300, &pattern(900), ACK);
        let mut frag = Flow::v4_udp().packet(0, 9, 0, &pattern(64));
        frag[7] = 0x10;
        ip::fill_ipv4_checksum(&mut frag, 20);
        pkts.insert(1, frag);
        assert_eq!(coalesce_with(&pkts, 0, true), vec![vec![0, 2, 3], vec![1]]);
        // IPv6 with an extension header (fragment, 44) in front: closes the TCP and UDP
        // groups between the same addresses.
        let u6 = Flow::v6_udp();
        let t6 = Flow::v6_tcp();
        let mut pkts = u6.segments(0, 0, 300, &pattern(900), 0);
        pkts.insert(1, t6.packet(0, 0, ACK, &pattern(300)));
        pkts.push(t6.packet(300, 0, ACK, &pattern(300)));
        let mut ext = u6.packet(0, 0, 0, &pattern(100));
        ext[6] = 44;
        pkts.insert(3, ext);
        // 0 u, 1 t, 2 u, 3 ext, 4 u, 5 t: without the closing, 4 would join 0 2 and 5 join 1.
        assert_eq!(
            coalesce_with(&pkts, 0, true),
            vec![vec![0, 2], vec![1], vec![3], vec![4], vec![5]]
        );
    }
}
