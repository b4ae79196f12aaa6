//! The properties of the `wire` fuzz target, shared with weft-encap's stable replay test
//! (`encap/src/fuzz_replay.rs` includes this file), so CI runs them without nightly.
//!
//! The including module's parent must have `encap` in scope: the weft-encap crate (`use
//! weft_encap as encap;` in a fuzz target, `use crate as encap;` inside weft-encap).
//!
//! For every view: `new_checked` accepts exactly the buffers an independent reading of the
//! format (`*_expected`, written from the module docs) accepts, with the same error; on a
//! view that parsed, every getter reads what the bytes say and never past the end (the
//! buffer is the fuzz input's own slice, so a read past it panics); the `Repr` round-trips
//! through `emit`; the checksum fillers make checksums that verify; the TTL decrement keeps
//! a valid IPv4 checksum valid (RFC 1624, equal to a recomputation). The payload of a view
//! that parsed is checked as the view its header names (UDP/ICMP in IP, ARP/IP in Ethernet,
//! Ethernet in VXLAN), a few levels deep.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::encap::wire::ethernet::{self, EthernetAddress};
use super::encap::wire::{
    self, arp, checksum, icmpv4, icmpv6, ipv4, ipv6, udp, vxlan, WireError, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_UDP,
};

/// The views, in the order the first input byte picks them (`byte % 8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Ipv4,
    Ipv6,
    Udp,
    Icmpv4,
    Icmpv6,
    Ethernet,
    Arp,
    Vxlan,
}

const VIEWS: [View; 8] = [
    View::Ipv4,
    View::Ipv6,
    View::Udp,
    View::Icmpv4,
    View::Icmpv6,
    View::Ethernet,
    View::Arp,
    View::Vxlan,
];

/// How deep payloads are followed (Ethernet in VXLAN, IPv4 in it, UDP in that...).
const MAX_DEPTH: u32 = 4;

const V4_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const V4_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const V6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1);
const V6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 2);

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Fuzz input: `[view, bytes...]`; `view % 8` picks the view `bytes` is given to.
pub fn check_wire(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    assert_eq!(wire::ip_version(bytes), bytes.first().map(|b| b >> 4));
    check_view(VIEWS[usize::from(sel % 8)], bytes, 0);
}

/// Checks `b` as `view`; returns whether `new_checked` accepted it.
fn check_view(view: View, b: &[u8], depth: u32) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match view {
        View::Ipv4 => check_ipv4(b, depth),
        View::Ipv6 => check_ipv6(b, depth),
        View::Udp => check_udp(b),
        View::Icmpv4 => check_icmpv4(b, depth),
        View::Icmpv6 => check_icmpv6(b, depth),
        View::Ethernet => check_ethernet(b, depth),
        View::Arp => check_arp(b),
        View::Vxlan => check_vxlan(b, depth),
    }
}

/// What `ipv4::Packet::new_checked` must say (RFC 791; errors as `WireError` documents).
fn ipv4_expected(b: &[u8]) -> Result<(), WireError> {
    if b.len() < 20 {
        return Err(WireError::Truncated);
    }
    if b[0] >> 4 != 4 {
        return Err(WireError::BadVersion);
    }
    let hl = usize::from(b[0] & 0x0f) * 4;
    if hl < 20 {
        return Err(WireError::BadHeaderLen);
    }
    let tl = usize::from(rd16(b, 2));
    if tl > b.len() {
        return Err(WireError::BadTotalLen);
    }
    if hl > tl {
        return Err(WireError::BadHeaderLen);
    }
    Ok(())
}

fn check_ipv4(b: &[u8], depth: u32) -> bool {
    let got = ipv4::Packet::new_checked(b);
    assert_eq!(got.as_ref().err().copied(), ipv4_expected(b).err(), "ipv4");
    let Ok(p) = got else { return false };
    let (hl, tl) = (p.header_len(), usize::from(p.total_len()));
    assert!(20 <= hl && hl <= tl && tl <= b.len());
    assert_eq!(p.version(), 4);
    assert_eq!(p.tos(), b[1]);
    assert_eq!(p.ident(), rd16(b, 4));
    let ff = rd16(b, 6);
    assert_eq!(p.dont_frag(), ff & 0x4000 != 0);
    assert_eq!(p.more_frags(), ff & 0x2000 != 0);
    assert_eq!(p.frag_offset_units(), ff & 0x1fff);
    assert_eq!(p.frag_offset(), (ff & 0x1fff) << 3);
    assert_eq!(p.is_fragment(), ff & 0x3fff != 0);
    assert_eq!(
        (p.ttl(), p.protocol(), p.checksum()),
        (b[8], b[9], rd16(b, 10))
    );
    assert_eq!(&p.src_addr().octets()[..], &b[12..16]);
    assert_eq!(&p.dst_addr().octets()[..], &b[16..20]);
    assert_eq!(p.header(), &b[..hl]);
    assert_eq!(p.payload(), &b[hl..tl]);
    assert_eq!(p.packet(), &b[..tl]);
    assert_eq!(p.as_ref(), b);
    let valid = checksum::checksum(&b[..hl]) == 0;
    assert_eq!(p.verify_checksum(), valid);

    match ipv4::Repr::parse(&p) {
        Err(e) => {
            assert!(p.is_fragment(), "only fragments are refused: {e:?}");
            assert_eq!(e, WireError::Unsupported);
        }
        Ok(repr) => {
            assert!(!p.is_fragment());
            assert_eq!(repr.payload_len, tl - hl);
            assert_eq!(
                (repr.src_addr, repr.dst_addr, repr.protocol, repr.ttl),
                (p.src_addr(), p.dst_addr(), p.protocol(), p.ttl())
            );
            assert_eq!(repr.buffer_len(), ipv4::HEADER_LEN);
            let mut out = b.to_vec();
            repr.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
            let q = ipv4::Packet::new_checked(&out[..]).expect("an emitted header parses");
            assert!(q.verify_checksum());
            assert_eq!(ipv4::Repr::parse(&q), Ok(repr));
        }
    }

    // The TTL decrement (RFC 1624 eqn. 3): a valid checksum stays valid, and equals a
    // recomputation when it was the computed one; nothing else changes.
    let mut m = b.to_vec();
    let mut q = ipv4::Packet::new_checked(&mut m[..]).unwrap();
    let canonical = {
        let mut c = b[..hl].to_vec();
        c[10..12].fill(0);
        checksum::checksum(&c) == rd16(b, 10)
    };
    assert_eq!(q.decrement_ttl(), b[8].wrapping_sub(1));
    assert_eq!(q.ttl(), b[8].wrapping_sub(1));
    if valid {
        assert!(q.verify_checksum(), "decrement_ttl broke a valid checksum");
        let patched = q.checksum();
        q.fill_checksum();
        if canonical {
            assert_eq!(q.checksum(), patched, "incremental != recomputed");
        }
    }
    assert_eq!(&m[..8], &b[..8]);
    assert_eq!(m[9], b[9]);
    assert_eq!(&m[12..], &b[12..]);

    // Setters that change no length keep the view valid.
    let mut m = b.to_vec();
    let mut q = ipv4::Packet::new_checked(&mut m[..]).unwrap();
    q.set_ttl(b[1]);
    q.set_ident(rd16(b, 2));
    q.set_src_addr(V4_B);
    q.set_dst_addr(V4_A);
    q.fill_checksum();
    assert!(q.verify_checksum());
    assert_eq!((q.ttl(), q.ident()), (b[1], rd16(b, 2)));
    assert_eq!((q.src_addr(), q.dst_addr()), (V4_B, V4_A));
    assert_eq!(q.payload(), &b[hl..tl]);
    assert!(ipv4::Packet::new_checked(&m[..]).is_ok());

    let (s, d) = (IpAddr::V4(p.src_addr()), IpAddr::V4(p.dst_addr()));
    if p.protocol() == PROTO_UDP && check_udp(p.payload()) {
        let u = udp::Packet::new_checked(p.payload()).unwrap();
        let _ = u.verify_checksum(s, d);
    }
    if p.protocol() == PROTO_ICMP {
        check_icmpv4(p.payload(), depth + 1);
    }
    true
}

/// What `ipv6::Packet::new_checked` must say (RFC 8200).
fn ipv6_expected(b: &[u8]) -> Result<(), WireError> {
    if b.len() < 40 {
        return Err(WireError::Truncated);
    }
    if b[0] >> 4 != 6 {
        return Err(WireError::BadVersion);
    }
    if 40 + usize::from(rd16(b, 4)) > b.len() {
        return Err(WireError::BadTotalLen);
    }
    Ok(())
}

fn check_ipv6(b: &[u8], depth: u32) -> bool {
    let got = ipv6::Packet::new_checked(b);
    assert_eq!(got.as_ref().err().copied(), ipv6_expected(b).err(), "ipv6");
    let Ok(p) = got else { return false };
    let tl = 40 + usize::from(rd16(b, 4));
    assert_eq!(p.version(), 6);
    assert_eq!(p.traffic_class(), (b[0] << 4) | (b[1] >> 4));
    assert_eq!(
        p.flow_label(),
        (u32::from(b[1] & 0x0f) << 16) | (u32::from(b[2]) << 8) | u32::from(b[3])
    );
    assert_eq!(p.payload_len(), rd16(b, 4));
    assert_eq!(p.total_len(), tl);
    assert_eq!((p.next_header(), p.hop_limit()), (b[6], b[7]));
    assert_eq!(&p.src_addr().octets()[..], &b[8..24]);
    assert_eq!(&p.dst_addr().octets()[..], &b[24..40]);
    assert_eq!(p.payload(), &b[40..tl]);
    assert_eq!(p.packet(), &b[..tl]);
    assert_eq!(p.as_ref(), b);

    let repr = ipv6::Repr::parse(&p).expect("a checked IPv6 header has a Repr");
    assert_eq!(repr.payload_len, tl - 40);
    assert_eq!(repr.buffer_len(), ipv6::HEADER_LEN);
    let mut out = b.to_vec();
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
    let q = ipv6::Packet::new_checked(&out[..]).expect("an emitted header parses");
    assert_eq!((q.traffic_class(), q.flow_label()), (0, 0));
    assert_eq!(ipv6::Repr::parse(&q), Ok(repr));
    assert_eq!(&out[8..], &b[8..]);

    let mut m = b.to_vec();
    let mut q = ipv6::Packet::new_checked(&mut m[..]).unwrap();
    q.set_hop_limit(b[7].saturating_sub(1));
    q.set_src_addr(V6_B);
    q.set_dst_addr(V6_A);
    q.set_version_class_flow(b[1], u32::from(rd16(b, 2)));
    assert_eq!(q.hop_limit(), b[7].saturating_sub(1));
    assert_eq!((q.src_addr(), q.dst_addr()), (V6_B, V6_A));
    assert_eq!(
        (q.version(), q.traffic_class(), q.flow_label()),
        (6, b[1], u32::from(rd16(b, 2)))
    );
    assert_eq!(q.payload(), &b[40..tl]);

    let (s, d) = (p.src_addr(), p.dst_addr());
    if p.next_header() == PROTO_UDP && check_udp(p.payload()) {
        let u = udp::Packet::new_checked(p.payload()).unwrap();
        let _ = u.verify_checksum(IpAddr::V6(s), IpAddr::V6(d));
    }
    if p.next_header() == PROTO_ICMPV6 && check_icmpv6(p.payload(), depth + 1) {
        let m = icmpv6::Packet::new_checked(p.payload()).unwrap();
        let _ = m.verify_checksum(&s, &d);
    }
    true
}

/// What `udp::Packet::new_checked` must say (RFC 768).
fn udp_expected(b: &[u8]) -> Result<(), WireError> {
    if b.len() < 8 {
        return Err(WireError::Truncated);
    }
    let l = usize::from(rd16(b, 4));
    if l < 8 || l > b.len() {
        return Err(WireError::BadTotalLen);
    }
    Ok(())
}

fn check_udp(b: &[u8]) -> bool {
    let got = udp::Packet::new_checked(b);
    assert_eq!(got.as_ref().err().copied(), udp_expected(b).err(), "udp");
    let Ok(p) = got else { return false };
    let l = usize::from(rd16(b, 4));
    assert_eq!(
        (p.src_port(), p.dst_port(), p.len(), p.checksum()),
        (rd16(b, 0), rd16(b, 2), rd16(b, 4), rd16(b, 6))
    );
    assert_eq!(p.is_empty(), l <= 8);
    assert_eq!(p.payload(), &b[8..l]);
    let pairs = [
        (IpAddr::V4(V4_A), IpAddr::V4(V4_B)),
        (IpAddr::V6(V6_A), IpAddr::V6(V6_B)),
        (IpAddr::V4(V4_A), IpAddr::V6(V6_B)),
    ];
    for (s, d) in pairs {
        let ok = p.verify_checksum(s, d);
        if p.checksum() == 0 {
            // Zero means "no checksum": fine over IPv4 only (RFC 768 / RFC 8200 8.1).
            assert_eq!(ok, s.is_ipv4() && d.is_ipv4());
        }
        let mut m = b.to_vec();
        let mut q = udp::Packet::new_checked(&mut m[..]).unwrap();
        q.fill_checksum(s, d);
        assert!(q.verify_checksum(s, d), "fill_checksum does not verify");
        assert_ne!(q.checksum(), 0, "a computed 0 is sent as 0xffff");
        assert_eq!(&m[..6], &b[..6]);
        assert_eq!(&m[8..], &b[8..]);
    }
    let repr = udp::Repr::parse(&p).expect("a checked UDP header has a Repr");
    assert_eq!(repr.payload_len, l - 8);
    assert_eq!(repr.buffer_len(), udp::HEADER_LEN);
    let mut out = b.to_vec();
    repr.emit(&mut udp::Packet::new_unchecked(&mut out[..]));
    let q = udp::Packet::new_checked(&out[..]).expect("an emitted header parses");
    assert_eq!(q.checksum(), 0);
    assert_eq!(udp::Repr::parse(&q), Ok(repr));
    true
}

fn check_icmpv4(b: &[u8], depth: u32) -> bool {
    let got = icmpv4::Packet::new_checked(b);
    let expected = if b.len() < 8 {
        Err(WireError::Truncated)
    } else {
        Ok(())
    };
    assert_eq!(got.as_ref().err().copied(), expected.err(), "icmpv4");
    let Ok(p) = got else { return false };
    let rest = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    assert_eq!(
        (p.msg_type(), p.code(), p.checksum(), p.rest_of_header()),
        (b[0], b[1], rd16(b, 2), rest)
    );
    assert_eq!((p.echo_ident(), p.echo_seq()), (rd16(b, 4), rd16(b, 6)));
    assert_eq!(p.data(), &b[8..]);
    assert_eq!(p.verify_checksum(), checksum::checksum(b) == 0);
    let error = icmpv4::is_error_type(b[0]);
    assert_eq!(error, matches!(b[0], 3 | 4 | 5 | 11 | 12));
    let mut m = b.to_vec();
    let mut q = icmpv4::Packet::new_checked(&mut m[..]).unwrap();
    q.fill_checksum();
    assert!(q.verify_checksum());
    assert_eq!(q.data(), &b[8..]);
    if error {
        // The quoted packet (usually cut short, so usually refused).
        check_ipv4(p.data(), depth + 1);
    }
    true
}

fn check_icmpv6(b: &[u8], depth: u32) -> bool {
    let got = icmpv6::Packet::new_checked(b);
    let expected = if b.len() < 8 {
        Err(WireError::Truncated)
    } else {
        Ok(())
    };
    assert_eq!(got.as_ref().err().copied(), expected.err(), "icmpv6");
    let Ok(p) = got else { return false };
    let rest = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    assert_eq!(
        (p.msg_type(), p.code(), p.checksum(), p.rest_of_header()),
        (b[0], b[1], rd16(b, 2), rest)
    );
    assert_eq!(p.data(), &b[8..]);
    let error = icmpv6::is_error_type(b[0]);
    assert_eq!(error, b[0] < 128);
    let _ = p.verify_checksum(&V6_A, &V6_B);
    let mut m = b.to_vec();
    let mut q = icmpv6::Packet::new_checked(&mut m[..]).unwrap();
    q.fill_checksum(&V6_A, &V6_B);
    assert!(q.verify_checksum(&V6_A, &V6_B));
    assert_eq!(q.data(), &b[8..]);
    if error {
        check_ipv6(p.data(), depth + 1);
    }
    true
}

fn check_mac(a: EthernetAddress, bytes: &[u8]) {
    assert_eq!(&a.as_bytes()[..], bytes);
    assert_eq!(a.is_multicast(), bytes[0] & 1 != 0);
    assert_eq!(a.is_unicast(), !a.is_multicast());
    assert_eq!(a.is_local(), bytes[0] & 2 != 0);
    assert_eq!(a.is_broadcast(), bytes.iter().all(|&x| x == 0xff));
    assert_eq!(a.to_string().parse::<EthernetAddress>(), Ok(a));
}

fn check_ethernet(b: &[u8], depth: u32) -> bool {
    let got = ethernet::Frame::new_checked(b);
    let expected = if b.len() < 14 {
        Err(WireError::Truncated)
    } else {
        Ok(())
    };
    assert_eq!(got.as_ref().err().copied(), expected.err(), "ethernet");
    let Ok(f) = got else { return false };
    check_mac(f.dst_addr(), &b[0..6]);
    check_mac(f.src_addr(), &b[6..12]);
    assert_eq!(f.ethertype(), rd16(b, 12));
    assert_eq!(f.payload(), &b[14..]);
    let repr = ethernet::Repr::parse(&f).expect("a checked frame has a Repr");
    assert_eq!(repr.buffer_len(), ethernet::HEADER_LEN);
    let mut out = [0u8; 14];
    repr.emit(&mut ethernet::Frame::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &b[..14]);
    let next = match f.ethertype() {
        ethernet::ETHERTYPE_ARP => Some(View::Arp),
        ethernet::ETHERTYPE_IPV4 => Some(View::Ipv4),
        ethernet::ETHERTYPE_IPV6 => Some(View::Ipv6),
        _ => None,
    };
    if let Some(view) = next {
        check_view(view, f.payload(), depth + 1);
    }
    true
}

/// What `arp::Packet::new_checked` must say (RFC 826, Ethernet/IPv4 only).
fn arp_expected(b: &[u8]) -> Result<(), WireError> {
    if b.len() < 28 {
        return Err(WireError::Truncated);
    }
    if rd16(b, 0) != 1 || rd16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
        return Err(WireError::Unsupported);
    }
    Ok(())
}

fn check_arp(b: &[u8]) -> bool {
    let got = arp::Packet::new_checked(b);
    assert_eq!(got.as_ref().err().copied(), arp_expected(b).err(), "arp");
    let Ok(p) = got else { return false };
    assert_eq!(
        (p.hardware_type(), p.protocol_type(), p.operation()),
        (1, 0x0800, rd16(b, 6))
    );
    check_mac(p.sender_hardware_addr(), &b[8..14]);
    check_mac(p.target_hardware_addr(), &b[18..24]);
    assert_eq!(&p.sender_protocol_addr().octets()[..], &b[14..18]);
    assert_eq!(&p.target_protocol_addr().octets()[..], &b[24..28]);
    match arp::Repr::parse(&p) {
        Ok(repr) => {
            assert!(matches!(p.operation(), arp::OP_REQUEST | arp::OP_REPLY));
            assert_eq!(repr.buffer_len(), arp::PACKET_LEN);
            let mut out = [0u8; arp::PACKET_LEN];
            repr.emit(&mut arp::Packet::new_unchecked(&mut out[..]));
            assert_eq!(&out[..], &b[..arp::PACKET_LEN]);
        }
        Err(e) => {
            assert!(!matches!(p.operation(), arp::OP_REQUEST | arp::OP_REPLY));
            assert_eq!(e, WireError::Unsupported);
        }
    }
    true
}

fn check_vxlan(b: &[u8], depth: u32) -> bool {
    let got = vxlan::Header::new_checked(b);
    let expected = if b.len() < 8 {
        Err(WireError::Truncated)
    } else {
        Ok(())
    };
    assert_eq!(got.as_ref().err().copied(), expected.err(), "vxlan");
    let Ok(h) = got else { return false };
    let vni = (u32::from(b[4]) << 16) | (u32::from(b[5]) << 8) | u32::from(b[6]);
    assert_eq!((h.flags(), h.vni()), (b[0], vni));
    assert!(h.vni() <= vxlan::VNI_MAX);
    assert_eq!(h.has_vni_flag(), b[0] & vxlan::FLAG_VNI != 0);
    assert_eq!(h.payload(), &b[8..]);
    match vxlan::Repr::parse(&h) {
        Ok(repr) => {
            assert!(h.has_vni_flag());
            assert_eq!(repr.vni, vni);
            let mut out = [0xffu8; 8];
            repr.emit(&mut vxlan::Header::new_unchecked(&mut out[..]));
            let b = vni.to_be_bytes();
            assert_eq!(out, [vxlan::FLAG_VNI, 0, 0, 0, b[1], b[2], b[3], 0]);
        }
        Err(e) => {
            assert!(!h.has_vni_flag());
            assert_eq!(e, WireError::Unsupported);
        }
    }
    check_ethernet(h.payload(), depth + 1);
    true
}
