//! Test-only packet builders: a flow's packets as a sender would emit them, and the
//! super-packets a kernel hands over.

use super::ip;
use crate::wire::checksum::{self, fold};
use crate::wire::{PROTO_TCP, PROTO_UDP};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const CWR: u8 = 0x80;

/// Deterministic, non-trivial payload bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 131 + i / 251 + 7) as u8).collect()
}

/// One flow's constant header fields.
#[derive(Debug, Clone)]
pub struct Flow {
    pub v6: bool,
    pub udp: bool,
    pub src: Vec<u8>,
    pub dst: Vec<u8>,
    pub sport: u16,
    pub dport: u16,
    pub ack: u32,
    pub tos: u8,
    pub ttl: u8,
    /// TCP option bytes (a multiple of 4, at most 40).
    pub opts: Vec<u8>,
}

impl Flow {
    pub fn v4_tcp() -> Flow {
        Flow {
            v6: false,
            udp: false,
            src: vec![10, 244, 1, 5],
            dst: vec![10, 244, 2, 9],
            sport: 40000,
            dport: 5201,
            ack: 0x1234_5678,
            tos: 0,
            ttl: 64,
            opts: vec![],
        }
    }
    pub fn v6_tcp() -> Flow {
        let mut src = vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut dst = src.clone();
        dst[15] = 2;
        src[3] = 0x44;
        Flow {
            v6: true,
            src,
            dst,
            ..Flow::v4_tcp()
        }
    }
    pub fn v4_udp() -> Flow {
        Flow {
            udp: true,
            ..Flow::v4_tcp()
        }
    }
    pub fn v6_udp() -> Flow {
        Flow {
            udp: true,
            ..Flow::v6_tcp()
        }
    }
    pub fn with_opts(mut self, opts: Vec<u8>) -> Flow {
        self.opts = opts;
        self
    }

    pub fn ip_hdr_len(&self) -> usize {
        if self.v6 {
            40
        } else {
            20
        }
    }
    pub fn l4_hdr_len(&self) -> usize {
        if self.udp {
            8
        } else {
            20 + self.opts.len()
        }
    }
    pub fn hdrs_len(&self) -> usize {
        self.ip_hdr_len() + self.l4_hdr_len()
    }
    pub fn proto(&self) -> u8 {
        if self.udp {
            PROTO_UDP
        } else {
            PROTO_TCP
        }
    }

    /// The packet with a zero L4 checksum field.
    pub fn raw(&self, seq: u32, id: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let l4_len = self.l4_hdr_len() + payload.len();
        let mut p = Vec::with_capacity(self.ip_hdr_len() + l4_len);
        if self.v6 {
            p.extend_from_slice(&[0x60 | (self.tos >> 4), self.tos << 4, 0x0b, 0xcd]);
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            p.extend_from_slice(&[self.proto(), self.ttl]);
            p.extend_from_slice(&self.src);
            p.extend_from_slice(&self.dst);
        } else {
            p.extend_from_slice(&[0x45, self.tos]);
            p.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&[0x40, 0, self.ttl, self.proto(), 0, 0]);
            p.extend_from_slice(&self.src);
            p.extend_from_slice(&self.dst);
            ip::fill_ipv4_checksum(&mut p, 20);
        }
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        if self.udp {
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        } else {
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&self.ack.to_be_bytes());
            p.push((((20 + self.opts.len()) / 4) << 4) as u8);
            p.push(flags);
            p.extend_from_slice(&[0x01, 0xf6, 0, 0, 0, 0]);
            p.extend_from_slice(&self.opts);
        }
        p.extend_from_slice(payload);
        p
    }

    fn csum_at(&self) -> usize {
        self.ip_hdr_len() + if self.udp { 6 } else { 16 }
    }

    fn pseudo(&self, pkt: &[u8]) -> u64 {
        ip::pseudo_sum(pkt, self.v6, self.proto(), pkt.len() - self.ip_hdr_len())
    }

    /// The packet with a complete, valid L4 checksum (as on the wire).
    pub fn packet(&self, seq: u32, id: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = self.raw(seq, id, flags, payload);
        let s = checksum::sum(&p[self.ip_hdr_len()..], self.pseudo(&p));
        let mut c = !fold(s);
        if self.udp && c == 0 {
            c = 0xffff;
        }
        let at = self.csum_at();
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The packet as a Linux sender leaves it with `CHECKSUM_PARTIAL`: the field holds the
    /// folded pseudo-header sum. Also what a TSO super-packet looks like.
    pub fn packet_partial(&self, seq: u32, id: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = self.raw(seq, id, flags, payload);
        let c = fold(self.pseudo(&p));
        let at = self.csum_at();
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The segments a sender emits one by one for `payload` with MSS `mss`: sequential seq
    /// and IPv4 IDs, valid checksums, `last_flags` on the last and `ACK` before.
    pub fn segments(
        &self,
        seq0: u32,
        id0: u16,
        mss: usize,
        payload: &[u8],
        last_flags: u8,
    ) -> Vec<Vec<u8>> {
        let chunks: Vec<&[u8]> = payload.chunks(mss).collect();
        let n = chunks.len();
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let flags = if i + 1 == n { last_flags } else { ACK };
                self.packet(
                    seq0.wrapping_add((i * mss) as u32),
                    id0.wrapping_add(i as u16),
                    flags,
                    c,
                )
            })
            .collect()
    }
}

use super::coalesce::{Coalescer, Group};
use super::split::split;
use super::vnet::{finish_checksum, l4_checksum_state, L4Checksum, VnetHdr};

/// The bytes a group writes after its vnet header (`pkts[id]` are the pushed packets).
pub fn group_bytes(g: &Group<'_>, pkts: &[Vec<u8>]) -> Vec<u8> {
    let mut b = g.header.to_vec();
    for m in g.members {
        b.extend_from_slice(&pkts[m.id as usize][m.range.clone()]);
    }
    assert_eq!(b.len(), g.packet_len());
    b
}

/// What the kernel makes of a written group: the packet itself, or the segments of the
/// super-packet (after checking its vnet header and partial checksum).
pub fn expand_group(g: &Group<'_>, pkts: &[Vec<u8>], l3: usize) -> Vec<Vec<u8>> {
    let bytes = group_bytes(g, pkts);
    if !g.is_merged() {
        assert_eq!(g.hdr, VnetHdr::default());
        assert!(g.header.is_empty());
        return vec![bytes];
    }
    let hdr = g.hdr;
    assert!(hdr.needs_csum());
    assert_eq!(usize::from(hdr.hdr_len), g.header.len());
    let udp = hdr.gso_type == super::vnet::GSO_UDP_L4;
    assert_eq!(hdr.csum_offset, if udp { 6 } else { 16 });
    let ip_hdr = if bytes[l3] >> 4 == 4 { 20 } else { 40 };
    assert_eq!(usize::from(hdr.csum_start), l3 + ip_hdr);
    if udp {
        // UDP length = merged L4 length.
        let at = l3 + ip_hdr + 4;
        let ulen = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        assert_eq!(ulen, bytes.len() - l3 - ip_hdr);
        assert_eq!(usize::from(hdr.hdr_len), l3 + ip_hdr + 8);
    }
    // Every member but the last carries gso_size payload bytes; the last no more.
    let sizes: Vec<usize> = g.members.iter().map(|m| m.range.len()).collect();
    let gso_size = usize::from(hdr.gso_size);
    assert_eq!(sizes[0], gso_size);
    assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == gso_size));
    assert!(sizes[sizes.len() - 1] <= gso_size);
    assert_eq!(l4_checksum_state(&bytes, l3), L4Checksum::Partial);
    let mut fin = bytes.clone();
    finish_checksum(&mut fin, hdr.csum_start.into(), hdr.csum_offset.into()).unwrap();
    assert_eq!(l4_checksum_state(&fin, l3), L4Checksum::Valid);
    let gso = hdr.gso().unwrap().unwrap();
    let mut out = vec![0u8; bytes.len() * 2 + g.members.len() * 200];
    let s = split(&bytes, l3, gso, &mut out).unwrap();
    assert_eq!(s.segments, g.members.len());
    out[..s.total_len]
        .chunks(s.segment_len)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Pushes `pkts` (ids = indices) into a fresh coalescer and returns the groups' member ids
/// and the expanded output, checking that every group re-segments into its members.
pub fn coalesce_all(pkts: &[Vec<u8>], l3: usize) -> Vec<Vec<u32>> {
    coalesce_with(pkts, l3, false)
}

/// [`coalesce_all`] with UDP merging enabled (`udp`) or not.
pub fn coalesce_with(pkts: &[Vec<u8>], l3: usize, udp: bool) -> Vec<Vec<u32>> {
    let mut c = Coalescer::new(pkts.len());
    c.set_udp(udp);
    for (i, p) in pkts.iter().enumerate() {
        assert!(c.push(i as u32, p, l3));
    }
    assert!(!c.push(0, &pkts[0], l3), "full");
    let mut ids = Vec::new();
    for g in c.groups() {
        let expanded = expand_group(&g, pkts, l3);
        let members: Vec<Vec<u8>> = g
            .members
            .iter()
            .map(|m| pkts[m.id as usize].clone())
            .collect();
        assert_eq!(expanded, members);
        ids.push(g.members.iter().map(|m| m.id).collect());
    }
    ids
}
