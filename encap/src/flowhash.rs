//! Flow hashing for the VXLAN outer UDP source port (RFC 7348 section 5).
//!
//! RFC 7348 recommends that the VTEP derive the outer source port from a hash of the inner
//! packet, so that ECMP routers and receive-side scaling (RSS) on the underlay spread
//! different inner flows over different paths and queues while keeping each flow on one
//! (no reordering). This is what Linux's `udp_flow_src_port` does with the skb flow hash;
//! the functions here do the same in spirit, without a per-boot random key:
//!
//! - [`flow_hash`] hashes an inner Ethernet frame: destination and source MAC and the
//!   ethertype (after up to two 802.1Q/802.1ad tags, whose TCIs are hashed too); for IPv4
//!   and IPv6 also the addresses and the protocol (for IPv6 the upper-layer protocol after
//!   the hop-by-hop, routing, destination options, fragment and AH extension headers); and
//!   for TCP, UDP and SCTP also the two ports.
//! - [`flow_hash_ip`] hashes a bare IP packet the same way (L3 mode hashes before the
//!   Ethernet header is added).
//! - [`source_port`] maps a hash into a port range.
//!
//! Ports are only hashed when the packet is not a fragment (neither a non-zero fragment
//! offset nor the more-fragments flag): later fragments carry no ports, so hashing the
//! first fragment's ports would send the fragments of one datagram on different outer
//! flows. Like Linux, all fragments of a datagram hash alike, without ports. Bytes the
//! hash does not cover (TTL, checksums, lengths, payload) never change it, so a flow keeps
//! its port for its whole life. The hash is not symmetric: the two directions of a
//! connection usually get different ports.
//!
//! Input is hostile: the functions never panic and never read past the slice. Whatever is
//! cut short is hashed as far as it goes; what cannot be parsed at all (a frame shorter
//! than its Ethernet header, a packet that is neither valid IPv4 nor IPv6) is hashed as
//! raw bytes (the first 64 and the length).
//!
//! Mixing: each 64-bit field group is xor-ed into the state, which is multiplied by an odd
//! constant and folded (`h ^= h >> 32`), a bijection of the state for each input word; the
//! result goes through the SplitMix64 finalizer so every input bit affects every output
//! bit. No tables, no allocation, a few multiplications per packet.

use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, HEADER_LEN as ETHERNET_HEADER_LEN};
use crate::wire::{
    PROTO_HOPOPT, PROTO_IPV6_FRAGMENT, PROTO_IPV6_OPTS, PROTO_IPV6_ROUTE, PROTO_TCP, PROTO_UDP,
};

/// IP protocol number: SCTP.
pub(crate) const PROTO_SCTP: u8 = 132;
/// IPv6 next header: Authentication Header.
pub(crate) const PROTO_IPV6_AH: u8 = 51;
/// Ethertype: 802.1Q VLAN tag.
pub(crate) const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethertype: 802.1ad service VLAN tag.
pub(crate) const ETHERTYPE_QINQ: u16 = 0x88a8;
/// VLAN tags looked through.
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up on finding the upper layer.
const MAX_EXTENSION_HEADERS: usize = 8;
/// Bytes of unparseable input that are hashed.
const MAX_RAW_BYTES: usize = 64;

/// Domain tags, so that e.g. raw bytes never hash like the parsed form of other bytes.
const TAG_ETHERNET: u64 = 0x45;
const TAG_IPV4: u64 = 0x04;
const TAG_IPV6: u64 = 0x06;
const TAG_RAW: u64 = 0xff;

/// The 64-bit accumulating mixer.
struct Mixer(u64);

impl Mixer {
    const SEED: u64 = 0x243f_6a88_85a3_08d3;
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new(tag: u64) -> Mixer {
        let mut m = Mixer(Self::SEED);
        m.word(tag);
        m
    }

    #[inline]
    fn word(&mut self, w: u64) {
        let h = (self.0 ^ w).wrapping_mul(Self::MULTIPLIER);
        self.0 = h ^ (h >> 32);
    }

    /// The SplitMix64 finalizer, folded to 32 bits.
    fn finish(self) -> u32 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z ^ (z >> 32)) as u32
    }
}

/// `data[at..at + N]` as a big-endian integer, if it is all there.
fn be_bytes<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    be_bytes::<2>(data, at).map(u16::from_be_bytes)
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    be_bytes::<4>(data, at).map(u32::from_be_bytes)
}

fn be64(data: &[u8], at: usize) -> Option<u64> {
    be_bytes::<8>(data, at).map(u64::from_be_bytes)
}

/// A hash of the inner flow of an Ethernet frame (see the [module docs](self)): MACs and
/// ethertype, for IPv4/IPv6 the addresses and protocol, and for TCP/UDP/SCTP the ports
/// (unfragmented packets only). Never panics; junk hashes whatever bytes are there.
pub fn flow_hash(frame: &[u8]) -> u32 {
    let (Some(macs_hi), Some(macs_lo), Some(mut ethertype)) =
        (be64(frame, 0), be32(frame, 8), be16(frame, 12))
    else {
        return raw_hash(frame);
    };
    let mut m = Mixer::new(TAG_ETHERNET);
    m.word(macs_hi);
    let mut offset = ETHERNET_HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let (Some(tci), Some(inner)) = (be16(frame, offset), be16(frame, offset + 2)) else {
            break;
        };
        m.word(u64::from(ethertype) << 16 | u64::from(tci));
        ethertype = inner;
        offset += 4;
    }
    m.word(u64::from(macs_lo) << 32 | u64::from(ethertype));
    let payload = frame.get(offset..).unwrap_or_default();
    // An IP header that does not parse leaves the Ethernet fields as the whole flow.
    let _parsed = match ethertype {
        ETHERTYPE_IPV4 => mix_ipv4(&mut m, payload),
        ETHERTYPE_IPV6 => mix_ipv6(&mut m, payload),
        _ => false,
    };
    m.finish()
}

/// A hash of the flow of a bare IPv4 or IPv6 packet: addresses and protocol, and for
/// TCP/UDP/SCTP the ports (unfragmented packets only). Never panics; anything that is not
/// an IPv4 or IPv6 header hashes as raw bytes.
pub fn flow_hash_ip(packet: &[u8]) -> u32 {
    let mut m = match packet.first().map(|b| b >> 4) {
        Some(4) => Mixer::new(TAG_IPV4),
        Some(6) => Mixer::new(TAG_IPV6),
        _ => return raw_hash(packet),
    };
    let parsed = if packet[0] >> 4 == 4 {
        mix_ipv4(&mut m, packet)
    } else {
        mix_ipv6(&mut m, packet)
    };
    if parsed {
        m.finish()
    } else {
        raw_hash(packet)
    }
}

/// Maps `hash` into `[min, max]` inclusive, like the kernel: `min + (hash * range) >> 32`
/// with `range = max - min + 1`. Bounds given the wrong way round are swapped.
pub fn source_port(hash: u32, min: u16, max: u16) -> u16 {
    let (low, high) = if min <= max { (min, max) } else { (max, min) };
    let range = u64::from(high - low) + 1;
    // hash * range < 2^32 * range, so the offset is below range and fits a u16.
    low + ((u64::from(hash) * range) >> 32) as u16
}

/// Hashes unparseable bytes: the length and the first [`MAX_RAW_BYTES`].
fn raw_hash(data: &[u8]) -> u32 {
    let mut m = Mixer::new(TAG_RAW);
    m.word(data.len() as u64);
    for chunk in data[..data.len().min(MAX_RAW_BYTES)].chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        m.word(u64::from_be_bytes(word));
    }
    m.finish()
}

/// Mixes the flow fields of an IPv4 packet. `false` (nothing mixed) if `p` does not start
/// with a plausible IPv4 header (version 4, IHL at least 5, header inside `p`).
fn mix_ipv4(m: &mut Mixer, p: &[u8]) -> bool {
    let Some(&version_ihl) = p.first() else {
        return false;
    };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let (Some(addrs), Some(flags_frag), Some(&protocol)) = (be64(p, 12), be16(p, 6), p.get(9))
    else {
        return false;
    };
    if version_ihl >> 4 != 4 || header_len < 20 || header_len > p.len() {
        return false;
    }
    m.word(addrs);
    // More-fragments flag or a fragment offset: a fragment.
    let fragment = flags_frag & 0x3fff != 0;
    m.word(u64::from(protocol) << 32 | transport_ports(p, header_len, protocol, fragment));
    true
}

/// Mixes the flow fields of an IPv6 packet. `false` (nothing mixed) if `p` is not at least
/// a version-6 fixed header.
fn mix_ipv6(m: &mut Mixer, p: &[u8]) -> bool {
    let addrs = (be64(p, 8), be64(p, 16), be64(p, 24), be64(p, 32));
    let (Some(src_hi), Some(src_lo), Some(dst_hi), Some(dst_lo)) = addrs else {
        return false;
    };
    if p[0] >> 4 != 6 {
        return false;
    }
    m.word(src_hi);
    m.word(src_lo);
    m.word(dst_hi);
    m.word(dst_lo);
    let (next_header, offset, fragment) = ipv6_upper_layer(p);
    m.word(u64::from(next_header) << 32 | transport_ports(p, offset, next_header, fragment));
    true
}

/// Walks the extension headers of the IPv6 packet `p` (hop-by-hop, routing, destination
/// options, fragment, AH; at most [`MAX_EXTENSION_HEADERS`]): the upper-layer protocol,
/// where its header starts, and whether the packet is a fragment. A chain cut short stops
/// at the last header that was whole. Never panics.
pub(crate) fn ipv6_upper_layer(p: &[u8]) -> (u8, usize, bool) {
    let Some(&first) = p.get(6) else {
        return (crate::wire::PROTO_IPV6_NONXT, p.len(), false);
    };
    let mut next_header = first;
    let mut offset = 40;
    let mut fragment = false;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let (Some(&following), Some(&len_field)) = (p.get(offset), p.get(offset + 1)) else {
            break;
        };
        let len = match next_header {
            PROTO_HOPOPT | PROTO_IPV6_ROUTE | PROTO_IPV6_OPTS => (usize::from(len_field) + 1) * 8,
            PROTO_IPV6_AH => (usize::from(len_field) + 2) * 4,
            PROTO_IPV6_FRAGMENT => {
                let Some(offset_flags) = be16(p, offset + 2) else {
                    break;
                };
                // Fragment offset or the M flag: a fragment (an atomic fragment is not).
                fragment |= offset_flags & 0xfff9 != 0;
                8
            }
            _ => break,
        };
        next_header = following;
        offset += len;
    }
    (next_header, offset, fragment)
}

/// The two ports of a TCP, UDP or SCTP header at `p[offset..]` as one word, or 0 for
/// other protocols, fragments, and headers cut short.
pub(crate) fn transport_ports(p: &[u8], offset: usize, protocol: u8, fragment: bool) -> u64 {
    if fragment || !matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        return 0;
    }
    be32(p, offset).map_or(0, u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0];

    /// An IPv4 packet: 20-byte header, then `l4` (whose first four bytes are the ports).
    fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, ttl, protocol, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// A transport header stub with the ports, then `payload`.
    fn ports(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = src.to_be_bytes().to_vec();
        l4.extend_from_slice(&dst.to_be_bytes());
        l4.extend_from_slice(&[0; 16]);
        l4.extend_from_slice(payload);
        l4
    }

    /// An IPv6 packet with `ext` (already-encoded extension headers, the first of type
    /// `first`) in front of the upper layer `l4` of type `protocol`.
    fn ipv6(src: u16, dst: u16, first: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[first, 64]);
        p.extend_from_slice(&[0xfd, 0, 1, 0, 0, 0x96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0xfd, 0, 1, 0, 0, 0x96, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        p[22..24].copy_from_slice(&src.to_be_bytes());
        p[38..40].copy_from_slice(&dst.to_be_bytes());
        p.extend_from_slice(ext);
        p.extend_from_slice(l4);
        p
    }

    fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn tcp4(sport: u16, dport: u16, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let ip = ipv4(
            [100, 96, 1, 5],
            [100, 96, 2, 7],
            PROTO_TCP,
            ttl,
            &ports(sport, dport, payload),
        );
        ethernet(MAC_B, MAC_A, ETHERTYPE_IPV4, &ip)
    }

    #[test]
    fn same_flow_same_hash() {
        let a = tcp4(40000, 80, 64, b"hello");
        assert_eq!(flow_hash(&a), flow_hash(&a));
        // TTL, checksum, length and payload are not part of the flow.
        let b = tcp4(40000, 80, 3, b"another, longer payload");
        assert_eq!(flow_hash(&a), flow_hash(&b));
        assert_eq!(flow_hash_ip(&a[14..]), flow_hash_ip(&b[14..]));
        // Ethernet padding does not matter either.
        let mut padded = a.clone();
        padded.extend_from_slice(&[0; 12]);
        assert_eq!(flow_hash(&a), flow_hash(&padded));
    }

    #[test]
    fn every_flow_field_counts() {
        let base = tcp4(40000, 80, 64, b"");
        let h = flow_hash(&base);
        let reverse = {
            let ip = ipv4(
                [100, 96, 2, 7],
                [100, 96, 1, 5],
                PROTO_TCP,
                64,
                &ports(80, 40000, b""),
            );
            ethernet(MAC_A, MAC_B, ETHERTYPE_IPV4, &ip)
        };
        // The hash is not symmetric (the reverse direction may, and here does, differ).
        assert_ne!(flow_hash(&reverse), h);
        for (what, at) in [
            ("destination MAC", 5),
            ("source MAC", 11),
            ("protocol", 14 + 9),
            ("source address", 14 + 15),
            ("destination address", 14 + 19),
            ("source port", 14 + 21),
            ("destination port", 14 + 23),
        ] {
            let mut f = base.clone();
            f[at] ^= 0x01;
            assert_ne!(flow_hash(&f), h, "{what}");
        }
        // A non-IP ethertype hashes only the Ethernet header.
        let arp = ethernet(MAC_B, MAC_A, 0x0806, &[1, 2, 3]);
        let arp2 = ethernet(MAC_B, MAC_A, 0x0806, &[4, 5, 6, 7]);
        assert_eq!(flow_hash(&arp), flow_hash(&arp2));
        assert_ne!(
            flow_hash(&arp),
            flow_hash(&ethernet(MAC_B, MAC_A, 0x0805, &[1, 2, 3]))
        );
    }

    #[test]
    fn ports_only_for_tcp_udp_sctp() {
        for protocol in [PROTO_TCP, PROTO_UDP, PROTO_SCTP] {
            let a = ipv4([1, 1, 1, 1], [2, 2, 2, 2], protocol, 64, &ports(1, 2, b""));
            let b = ipv4([1, 1, 1, 1], [2, 2, 2, 2], protocol, 64, &ports(1, 3, b""));
            assert_ne!(flow_hash_ip(&a), flow_hash_ip(&b), "protocol {protocol}");
        }
        let a = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 1, 64, &ports(1, 2, b""));
        let b = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 1, 64, &ports(1, 3, b""));
        assert_eq!(flow_hash_ip(&a), flow_hash_ip(&b), "ICMP has no ports");
        // A packet cut short before its ports still hashes its addresses and protocol.
        let a = ipv4([1, 1, 1, 1], [2, 2, 2, 2], PROTO_UDP, 64, &ports(1, 2, b""));
        let b = ipv4([1, 1, 1, 1], [2, 2, 2, 2], PROTO_UDP, 64, &ports(7, 8, b""));
        let c = ipv4([1, 1, 1, 1], [2, 2, 2, 3], PROTO_UDP, 64, &ports(1, 2, b""));
        assert_eq!(flow_hash_ip(&a[..22]), flow_hash_ip(&b[..22]));
        assert_ne!(flow_hash_ip(&a[..22]), flow_hash_ip(&c[..22]));
    }

    #[test]
    fn fragments_of_a_datagram_hash_alike() {
        let whole = ipv4(
            [1, 1, 1, 1],
            [2, 2, 2, 2],
            PROTO_UDP,
            64,
            &ports(5000, 53, b"x"),
        );
        let mut first = whole.clone();
        first[6] = 0x20; // MF
        let mut later = whole.clone();
        later[6..8].copy_from_slice(&0x00b9u16.to_be_bytes()); // offset 185*8, last
        later[20..24].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // payload bytes, not ports
        assert_eq!(flow_hash_ip(&first), flow_hash_ip(&later));
        assert_ne!(flow_hash_ip(&first), flow_hash_ip(&whole));
        // DF is not a fragment.
        let mut df = whole.clone();
        df[6] = 0x40;
        assert_eq!(flow_hash_ip(&df), flow_hash_ip(&whole));
    }

    #[test]
    fn ipv6_through_extension_headers() {
        let udp = |sport: u16| ports(sport, 4789, b"payload");
        let plain = |sport| ipv6(1, 2, PROTO_UDP, &[], &udp(sport));
        assert_eq!(flow_hash_ip(&plain(1000)), flow_hash_ip(&plain(1000)));
        assert_ne!(flow_hash_ip(&plain(1000)), flow_hash_ip(&plain(1001)));
        assert_ne!(
            flow_hash_ip(&ipv6(1, 2, PROTO_UDP, &[], &udp(1))),
            flow_hash_ip(&ipv6(1, 3, PROTO_UDP, &[], &udp(1)))
        );
        // Hop-by-hop (8 bytes) then destination options (16 bytes) then UDP: same flow
        // fields as without them.
        let mut ext = vec![PROTO_IPV6_OPTS, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[PROTO_UDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let with_ext = |sport| ipv6(1, 2, PROTO_HOPOPT, &ext, &udp(sport));
        assert_eq!(flow_hash_ip(&with_ext(1000)), flow_hash_ip(&plain(1000)));
        assert_ne!(flow_hash_ip(&with_ext(1000)), flow_hash_ip(&with_ext(1001)));
        // Fragments: no ports, every fragment alike; an atomic fragment keeps its ports.
        let frag = |offset_flags: u16, sport| {
            let mut h = vec![PROTO_UDP, 0];
            h.extend_from_slice(&offset_flags.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 9]);
            ipv6(1, 2, PROTO_IPV6_FRAGMENT, &h, &udp(sport))
        };
        assert_eq!(
            flow_hash_ip(&frag(0x0001, 1000)),
            flow_hash_ip(&frag(0x0001, 1001))
        );
        assert_eq!(
            flow_hash_ip(&frag(0x0001, 1000)),
            flow_hash_ip(&frag(0x0100, 7))
        );
        assert_ne!(flow_hash_ip(&frag(0, 1000)), flow_hash_ip(&frag(0, 1001)));
        assert_eq!(flow_hash_ip(&frag(0, 1000)), flow_hash_ip(&plain(1000)));
        // In an Ethernet frame too.
        let f = |sport| ethernet(MAC_B, MAC_A, ETHERTYPE_IPV6, &with_ext(sport));
        assert_ne!(flow_hash(&f(1)), flow_hash(&f(2)));
    }

    #[test]
    fn vlan_tags_are_looked_through() {
        let tagged = |vid: u16, sport: u16| {
            let ip = ipv4(
                [1, 1, 1, 1],
                [2, 2, 2, 2],
                PROTO_UDP,
                64,
                &ports(sport, 9, b""),
            );
            let mut payload = vid.to_be_bytes().to_vec();
            payload.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            payload.extend_from_slice(&ip);
            ethernet(MAC_B, MAC_A, ETHERTYPE_VLAN, &payload)
        };
        assert_eq!(flow_hash(&tagged(10, 1)), flow_hash(&tagged(10, 1)));
        assert_ne!(flow_hash(&tagged(10, 1)), flow_hash(&tagged(10, 2)));
        assert_ne!(flow_hash(&tagged(10, 1)), flow_hash(&tagged(11, 1)));
    }

    #[test]
    fn ports_spread_over_the_range() {
        const BUCKETS: usize = 16;
        let (min, max) = (32768u16, 60999u16);
        let mut per_bucket = [0usize; BUCKETS];
        let mut hashes = std::collections::HashSet::new();
        for sport in 0..1000u16 {
            let h = flow_hash(&tcp4(20000 + sport, 443, 64, b""));
            hashes.insert(h);
            let port = source_port(h, min, max);
            assert!((min..=max).contains(&port));
            let bucket = usize::from(port - min) * BUCKETS / (usize::from(max - min) + 1);
            per_bucket[bucket] += 1;
        }
        assert_eq!(hashes.len(), 1000, "1000 flows, 1000 distinct hashes");
        // 62.5 expected per bucket: none empty, none wildly over-full.
        assert!(
            per_bucket.iter().all(|&n| (20..=120).contains(&n)),
            "{per_bucket:?}"
        );
        // Same over the addresses of bare IPv6 packets.
        let mut per_bucket = [0usize; BUCKETS];
        for n in 0..1000u16 {
            let h = flow_hash_ip(&ipv6(n, 2, PROTO_UDP, &[], &ports(5000, 53, b"")));
            per_bucket[usize::from(source_port(h, 0, 15))] += 1;
        }
        assert!(
            per_bucket.iter().all(|&n| (20..=120).contains(&n)),
            "{per_bucket:?}"
        );
    }

    #[test]
    fn source_port_bounds() {
        for hash in [0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX - 1, u32::MAX] {
            assert_eq!(source_port(hash, 4789, 4789), 4789);
            assert_eq!(source_port(hash, 0, 0), 0);
            assert_eq!(source_port(hash, u16::MAX, u16::MAX), u16::MAX);
            let p = source_port(hash, 32768, 61000);
            assert!((32768..=61000).contains(&p));
            assert_eq!(source_port(hash, 61000, 32768), p, "swapped bounds");
            let _ = source_port(hash, 0, u16::MAX);
        }
        assert_eq!(source_port(0, 1000, 2000), 1000);
        assert_eq!(source_port(u32::MAX, 1000, 2000), 2000);
        assert_eq!(source_port(u32::MAX, 0, u16::MAX), u16::MAX);
        assert_eq!(source_port(0x8000_0000, 0, u16::MAX), 0x8000);
        assert_eq!(source_port(0x8000_0000, 10, 11), 11);
        assert_eq!(source_port(0x7fff_ffff, 10, 11), 10);
    }

    #[test]
    fn junk_never_panics() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = [
            tcp4(1, 2, 64, b"abc"),
            ethernet(
                MAC_B,
                MAC_A,
                ETHERTYPE_IPV6,
                &ipv6(1, 2, PROTO_UDP, &[], &ports(1, 2, b"")),
            ),
            ethernet(MAC_B, MAC_A, ETHERTYPE_VLAN, &[0, 1, 0x86, 0xdd, 0x60]),
        ];
        let mut distinct = std::collections::HashSet::new();
        for i in 0..50_000 {
            let r = next();
            let mut data: Vec<u8> = if i % 2 == 0 {
                (0..(r % 120) as usize).map(|_| next() as u8).collect()
            } else {
                seeds[(r % 3) as usize].clone()
            };
            for _ in 0..(r >> 8) % 6 {
                if !data.is_empty() {
                    let at = next() as usize % data.len();
                    data[at] = next() as u8;
                }
            }
            if i % 2 == 1 && (r >> 16) % 3 == 0 {
                data.truncate(next() as usize % (data.len() + 1));
            }
            distinct.insert(flow_hash(&data));
            distinct.insert(flow_hash_ip(&data));
            distinct.insert(flow_hash_ip(data.get(14..).unwrap_or_default()));
        }
        assert!(
            distinct.len() > 10_000,
            "junk still spreads: {}",
            distinct.len()
        );
        assert_ne!(flow_hash(&[]), flow_hash(&[0]));
        assert_ne!(flow_hash_ip(&[]), flow_hash_ip(&[0x45]));
    }
}
