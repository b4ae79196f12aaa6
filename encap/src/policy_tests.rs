//! Tests of the policy hook ([`crate::policy`]) and of the ACLs ([`crate::acl`]).
//!
//! - [`FlowKey`]: what a policy sees of IPv4 / IPv6 packets (ports, fragments, extension
//!   headers) and of Ethernet frames (IP, not IP, malformed).
//! - [`Policed`] over the flannel UDP backend (both directions, IPv4 and IPv6), over the
//!   VXLAN backend in L2 mode (a TAP: Ethernet frames) and in L3 mode: allow is the bare
//!   backend's verdict, deny drops with [`DropReason::Policy`], reject answers with an
//!   ICMP / ICMPv6 administratively-prohibited error (into the device on egress, through the
//!   tunnel on ingress); what the backend drops or answers itself is never judged.
//! - [`AllowAll`] costs nothing and changes nothing.
//! - A property test: any bytes, with any decision, never panic and never yield a range
//!   outside the buffer.
//! - ACLs: matching (first match wins, every field), counters (per worker, published on
//!   tick and drop), replacement (counters of identical rules kept), `Display`.
//!
//! The cast, as in the backends' own tests: host A (underlay 198.18.0.1) leases
//! 100.96.1.0/24 and fd00:100:96:1::/64, host B (198.18.0.2) 100.96.2.0/24 and
//! fd00:100:96:2::/64; C (198.18.0.3) is a third VTEP in the L2 tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use crate::acl::{protocol_name, protocol_number, Acl, AclRule, AclSet, PortRange};
use crate::backend::{Backend, DeviceLayer, PacketBuf};
use crate::fdb::FdbConfig;
use crate::flannel::{FlannelBackend, FlannelConfig};
use crate::icmp::IcmpResponder;
use crate::policy::{
    AllowAll, Decision, Direction, FlowKey, Inner, Policed, Policy, PolicyContext,
    DEFAULT_REJECT_RATE,
};
use crate::table::{Cidr, Route, SubnetTable, TableSpec};
use crate::testutil::fixture;
use crate::verdict::{DropReason, Verdict};
use crate::vxlan::{VniConfig, VxlanBackend, VxlanConfig, VxlanMode};
use crate::wire::ethernet::{self, EthernetAddress, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::{
    icmpv4, icmpv6, ipv4, ipv6, vxlan, PROTO_HOPOPT, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPV6_FRAGMENT,
    PROTO_IPV6_OPTS, PROTO_TCP, PROTO_UDP,
};

// ---------------------------------------------------------------------------------------
// The cast and the packets
// ---------------------------------------------------------------------------------------

const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const C_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// An underlay address that is nobody's peer.
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);
const FLANNEL_PORT: u16 = 8285;
const VXLAN_PORT: u16 = vxlan::PORT_LINUX;

const A_POD: Ipv4Addr = Ipv4Addr::new(100, 96, 1, 5);
const B_POD: Ipv4Addr = Ipv4Addr::new(100, 96, 2, 7);
const A_POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0x96, 1, 0, 0, 0, 5);
const B_POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0x96, 2, 0, 0, 0, 7);

const VNI: u32 = 1;
const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0]);
const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x02, 0]);
/// The TAP's MAC in the L2 tests.
const MAC_TAP: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0a, 0]);
/// A machine on A's bridge, sending through the TAP.
const MAC_POD_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0a, 0x05]);
/// A machine behind B's bridge (learned from B's frames).
const MAC_BEHIND_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0b, 0x01]);
/// A machine behind C, by a static FDB entry.
const MAC_STATIC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0c, 0x01]);

/// The headroom every test buffer keeps: more than any `Policed` here needs.
const H: usize = 128;
/// Room after the packet in every test buffer.
const TAILROOM: usize = 128;

fn v4(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// Host A's flannel table: B owns 100.96.2.0/24 and fd00:100:96:2::/64.
fn flannel_tables_a() -> Vec<Arc<SubnetTable>> {
    let route = |s: &str| Route {
        subnet: s.parse().unwrap(),
        endpoint: v4(B_UNDERLAY, FLANNEL_PORT),
        vtep_mac: None,
    };
    let routes = [route("100.96.2.0/24"), route("fd00:100:96:2::/64")];
    vec![Arc::new(SubnetTable::new(1, &routes).unwrap())]
}

/// Host B's flannel table: A owns 100.96.1.0/24 and fd00:100:96:1::/64.
fn flannel_tables_b() -> Vec<Arc<SubnetTable>> {
    let route = |s: &str| Route {
        subnet: s.parse().unwrap(),
        endpoint: v4(A_UNDERLAY, FLANNEL_PORT),
        vtep_mac: None,
    };
    let routes = [route("100.96.1.0/24"), route("fd00:100:96:1::/64")];
    vec![Arc::new(SubnetTable::new(1, &routes).unwrap())]
}

fn flannel_a() -> FlannelBackend {
    FlannelBackend::new(FlannelConfig {
        local_v4: Some(Ipv4Addr::new(100, 96, 1, 0)),
        local_v6: Some("fd00:100:96:1::".parse().unwrap()),
        ..FlannelConfig::default()
    })
}

fn flannel_b() -> FlannelBackend {
    FlannelBackend::new(FlannelConfig {
        local_v4: Some(Ipv4Addr::new(100, 96, 2, 0)),
        local_v6: Some("fd00:100:96:2::".parse().unwrap()),
        ..FlannelConfig::default()
    })
}

/// Host A's VXLAN L2 VNI (a TAP): B and C are its VTEPs, MAC_STATIC sits behind C.
fn l2_tables() -> Vec<Arc<SubnetTable>> {
    let spec = TableSpec {
        routes: Vec::new(),
        vteps: vec![v4(B_UNDERLAY, VXLAN_PORT), v4(C_UNDERLAY, VXLAN_PORT)],
        fdb: vec![(MAC_STATIC, v4(C_UNDERLAY, VXLAN_PORT))],
    };
    vec![Arc::new(SubnetTable::build(1, &spec).unwrap())]
}

fn vxlan_l2() -> VxlanBackend {
    VxlanBackend::new(VxlanConfig {
        vnis: vec![VniConfig {
            vni: VNI,
            mode: VxlanMode::L2,
            vtep_mac: MAC_TAP,
            local_v4: None,
            local_v6: None,
            fdb: FdbConfig::default(),
            device: Some("weft-tap0".to_owned()),
        }],
        ..VxlanConfig::default()
    })
}

/// Host A's VXLAN L3 VNI (flannel.1): B owns 100.96.2.0/24 and fd00:100:96:2::/64.
fn l3_tables() -> Vec<Arc<SubnetTable>> {
    let route = |s: &str| Route {
        subnet: s.parse().unwrap(),
        endpoint: v4(B_UNDERLAY, VXLAN_PORT),
        vtep_mac: Some(MAC_B),
    };
    let routes = [route("100.96.2.0/24"), route("fd00:100:96:2::/64")];
    vec![Arc::new(SubnetTable::new(1, &routes).unwrap())]
}

fn vxlan_l3() -> VxlanBackend {
    VxlanBackend::new(VxlanConfig {
        vnis: vec![VniConfig {
            vni: VNI,
            mode: VxlanMode::L3,
            vtep_mac: MAC_A,
            local_v4: Some(Ipv4Addr::new(100, 96, 1, 0)),
            local_v6: Some("fd00:100:96:1::".parse().unwrap()),
            fdb: FdbConfig::default(),
            device: None,
        }],
        ..VxlanConfig::default()
    })
}

/// `packet` after `headroom` bytes, with TAILROOM spare bytes after it.
fn buffer(packet: &[u8], headroom: usize) -> Vec<u8> {
    let mut buf = vec![0u8; headroom + packet.len() + TAILROOM];
    buf[headroom..headroom + packet.len()].copy_from_slice(packet);
    buf
}

/// Hands `packet`, read from device `device`, to `b`; returns the verdict and the buffer.
fn from_device<B: Backend>(
    b: &mut B,
    tables: &[Arc<SubnetTable>],
    device: usize,
    packet: &[u8],
) -> (Verdict, Vec<u8>) {
    from_device_at(b, tables, device, packet, H, 0)
}

fn from_device_at<B: Backend>(
    b: &mut B,
    tables: &[Arc<SubnetTable>],
    device: usize,
    packet: &[u8],
    headroom: usize,
    now_ms: u64,
) -> (Verdict, Vec<u8>) {
    let mut buf = buffer(packet, headroom);
    let pkt = PacketBuf::new(&mut buf, headroom, packet.len()).unwrap();
    let v = b.handle_device_packet(tables, device, pkt, now_ms);
    (v, buf)
}

/// Hands the datagram payload `payload`, received from `source`, to `b`.
fn from_peer<B: Backend>(
    b: &mut B,
    tables: &[Arc<SubnetTable>],
    source: SocketAddr,
    payload: &[u8],
) -> (Verdict, Vec<u8>) {
    from_peer_at(b, tables, source, payload, H, 0)
}

fn from_peer_at<B: Backend>(
    b: &mut B,
    tables: &[Arc<SubnetTable>],
    source: SocketAddr,
    payload: &[u8],
    headroom: usize,
    now_ms: u64,
) -> (Verdict, Vec<u8>) {
    let mut buf = buffer(payload, headroom);
    let pkt = PacketBuf::new(&mut buf, headroom, payload.len()).unwrap();
    let v = b.handle_datagram(tables, source, pkt, now_ms);
    (v, buf)
}

/// A transport header stub of `len` bytes (at least 8): the two ports, a length field (as
/// UDP has it) and bytes counting up.
fn l4(src_port: u16, dst_port: u16, len: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..len).map(|i| i as u8).collect();
    b[0..2].copy_from_slice(&src_port.to_be_bytes());
    b[2..4].copy_from_slice(&dst_port.to_be_bytes());
    b[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    b[6..8].fill(0);
    b
}

/// An IPv4 packet, TTL 64, checksum filled, around `payload`.
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let repr = ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len: payload.len(),
        ttl: 64,
    };
    let mut bytes = vec![0u8; repr.buffer_len() + payload.len()];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut bytes[..]));
    bytes[ipv4::HEADER_LEN..].copy_from_slice(payload);
    bytes
}

/// An IPv6 packet, hop limit 64, whose first next header is `next_header`.
fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let repr = ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut bytes = vec![0u8; repr.buffer_len() + payload.len()];
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut bytes[..]));
    bytes[ipv6::HEADER_LEN..].copy_from_slice(payload);
    bytes
}

fn tcp_v4(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> Vec<u8> {
    ipv4_packet(src, dst, PROTO_TCP, &l4(src_port, dst_port, 32))
}

fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16, len: usize) -> Vec<u8> {
    ipv4_packet(src, dst, PROTO_UDP, &l4(src_port, dst_port, len))
}

fn tcp_v6(src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, dst_port: u16) -> Vec<u8> {
    ipv6_packet(src, dst, PROTO_TCP, &l4(src_port, dst_port, 32))
}

fn udp_v6(src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, dst_port: u16) -> Vec<u8> {
    ipv6_packet(src, dst, PROTO_UDP, &l4(src_port, dst_port, 40))
}

/// An ICMP echo request (with a valid ICMP checksum).
fn echo_v4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut message = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    message.extend(0..24u8);
    icmpv4::Packet::new_unchecked(&mut message[..]).fill_checksum();
    ipv4_packet(src, dst, PROTO_ICMP, &message)
}

/// Sets the fragment fields of an IPv4 packet (offset in bytes) and fixes the checksum.
fn fragment_v4(mut packet: Vec<u8>, more: bool, offset: u16) -> Vec<u8> {
    let mut p = ipv4::Packet::new_unchecked(&mut packet[..]);
    p.set_flags_and_frag_offset(false, more, offset);
    p.fill_checksum();
    packet
}

/// The packet as one router hop leaves it: TTL / hop limit one lower (what the flannel
/// backend does to what it forwards, before the policy sees it).
fn forwarded(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    if p[0] >> 4 == 4 {
        ipv4::Packet::new_unchecked(&mut p[..]).decrement_ttl();
    } else {
        p[7] -= 1;
    }
    p
}

/// An Ethernet frame around `payload`.
fn eth(dst: EthernetAddress, src: EthernetAddress, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; ethernet::HEADER_LEN + payload.len()];
    ethernet::Repr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut bytes[..]));
    bytes[ethernet::HEADER_LEN..].copy_from_slice(payload);
    bytes
}

/// A VXLAN header for `vni` followed by `frame`: a UDP payload.
fn vxlan_payload(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; vxlan::HEADER_LEN + frame.len()];
    vxlan::Repr { vni }.emit(&mut vxlan::Header::new_unchecked(&mut bytes[..]));
    bytes[vxlan::HEADER_LEN..].copy_from_slice(frame);
    bytes
}

/// An IPv4 ICMP error, checked (lengths, IP and ICMP checksums): (source, destination,
/// TTL, type, code, quote).
fn icmp_v4(bytes: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, u8, u8, Vec<u8>) {
    let ip = ipv4::Packet::new_checked(bytes).expect("an IPv4 packet");
    assert_eq!(usize::from(ip.total_len()), bytes.len(), "the whole range");
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    assert_eq!(ip.protocol(), PROTO_ICMP);
    assert!(bytes.len() <= 576);
    let icmp = icmpv4::Packet::new_checked(ip.payload()).expect("an ICMP header");
    assert!(icmp.verify_checksum(), "ICMP checksum");
    (
        ip.src_addr(),
        ip.dst_addr(),
        ip.ttl(),
        icmp.msg_type(),
        icmp.code(),
        icmp.data().to_vec(),
    )
}

/// An ICMPv6 error, checked likewise: (source, destination, hop limit, type, code, quote).
fn icmp_v6(bytes: &[u8]) -> (Ipv6Addr, Ipv6Addr, u8, u8, u8, Vec<u8>) {
    let ip = ipv6::Packet::new_checked(bytes).expect("an IPv6 packet");
    assert_eq!(ip.total_len(), bytes.len(), "the whole range");
    assert_eq!(ip.next_header(), PROTO_ICMPV6);
    assert!(bytes.len() <= 1280);
    let icmp = icmpv6::Packet::new_checked(ip.payload()).expect("an ICMPv6 header");
    assert!(
        icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()),
        "ICMPv6 checksum"
    );
    (
        ip.src_addr(),
        ip.dst_addr(),
        ip.hop_limit(),
        icmp.msg_type(),
        icmp.code(),
        icmp.data().to_vec(),
    )
}

/// Every range a verdict carries lies inside the buffer.
fn assert_in_bounds(v: &Verdict, buf_len: usize) {
    if let Some(range) = v.range() {
        assert!(
            range.start <= range.end && range.end <= buf_len,
            "{v:?} outside a buffer of {buf_len} bytes"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Policies for the tests
// ---------------------------------------------------------------------------------------

/// A policy that answers `decision` and records what it was asked (shared by its clones).
#[derive(Debug, Clone)]
struct Recorder {
    decision: Decision,
    seen: Arc<Mutex<Vec<(FlowKey, PolicyContext)>>>,
    ticks: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn new(decision: Decision) -> Recorder {
        Recorder {
            decision,
            seen: Arc::default(),
            ticks: Arc::default(),
        }
    }

    fn calls(&self) -> Vec<(FlowKey, PolicyContext)> {
        self.seen.lock().unwrap().clone()
    }

    /// The one call so far.
    fn only_call(&self) -> (FlowKey, PolicyContext) {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        calls[0]
    }
}

impl Policy for Recorder {
    fn judge(&mut self, flow: &FlowKey, ctx: &PolicyContext) -> Decision {
        self.seen.lock().unwrap().push((*flow, *ctx));
        self.decision
    }

    fn on_tick(&mut self, now_ms: u64) {
        self.ticks.lock().unwrap().push(now_ms);
    }
}

/// A closure policy that answers `decision` and counts its calls in `calls`.
fn counting(
    decision: Decision,
    calls: &Arc<AtomicUsize>,
) -> impl FnMut(&FlowKey, &PolicyContext) -> Decision + Send + 'static {
    let calls = calls.clone();
    move |_: &FlowKey, _: &PolicyContext| {
        calls.fetch_add(1, Ordering::Relaxed);
        decision
    }
}

/// The flow with these fields.
fn flow(src: IpAddr, dst: IpAddr, protocol: u8, ports: (u16, u16), fragment: bool) -> FlowKey {
    FlowKey {
        src,
        dst,
        protocol,
        src_port: ports.0,
        dst_port: ports.1,
        fragment,
    }
}

// ---------------------------------------------------------------------------------------
// FlowKey
// ---------------------------------------------------------------------------------------

#[test]
fn flow_of_captured_ipv4_tcp_udp_and_icmp() {
    let a = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let b = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    // The SYN has DF set: DF alone is no fragment.
    let syn = fixture("wire/ipv4-tcp-syn.hex");
    assert!(ipv4::Packet::new_checked(&syn[..]).unwrap().dont_frag());
    assert_eq!(
        FlowKey::of_ip(&syn),
        Some(flow(a, b, PROTO_TCP, (59140, 9), false))
    );
    let rst = fixture("wire/ipv4-tcp-rst.hex");
    assert_eq!(
        FlowKey::of_ip(&rst),
        Some(flow(b, a, PROTO_TCP, (9, 59140), false))
    );
    let udp = fixture("wire/ipv4-udp.hex");
    assert_eq!(
        FlowKey::of_ip(&udp),
        Some(flow(a, b, PROTO_UDP, (47729, 9999), false))
    );
    // ICMP has no ports, whatever its first bytes are.
    let echo = fixture("wire/ipv4-icmp-echo-request.hex");
    assert_eq!(
        FlowKey::of_ip(&echo),
        Some(flow(a, b, PROTO_ICMP, (0, 0), false))
    );
    // Another protocol with "port-like" bytes: no ports either (GRE, 47).
    let gre = ipv4_packet(A_POD, B_POD, 47, &l4(1234, 5678, 16));
    assert_eq!(
        FlowKey::of_ip(&gre),
        Some(flow(A_POD.into(), B_POD.into(), 47, (0, 0), false))
    );
    // SCTP has ports.
    let sctp = ipv4_packet(A_POD, B_POD, 132, &l4(5000, 36412, 16));
    assert_eq!(FlowKey::of_ip(&sctp).unwrap().dst_port, 36412);
}

#[test]
fn flow_of_built_packets() {
    let tcp = tcp_v4(A_POD, B_POD, 40000, 22);
    assert_eq!(
        FlowKey::of_ip(&tcp),
        Some(flow(
            A_POD.into(),
            B_POD.into(),
            PROTO_TCP,
            (40000, 22),
            false
        ))
    );
    let udp = udp_v4(B_POD, A_POD, 53, 33000, 20);
    assert_eq!(
        FlowKey::of_ip(&udp),
        Some(flow(
            B_POD.into(),
            A_POD.into(),
            PROTO_UDP,
            (53, 33000),
            false
        ))
    );
    // The same through of_packet on an L3 device.
    assert_eq!(
        FlowKey::of_packet(&tcp, DeviceLayer::L3),
        Inner::Ip(FlowKey::of_ip(&tcp).unwrap())
    );
}

#[test]
fn flow_of_ipv4_with_options_reads_the_ports_after_them() {
    // IHL 7: 8 bytes of options (NOPs and an end) in front of the UDP header.
    let plain = udp_v4(A_POD, B_POD, 1111, 2222, 16);
    let mut p = plain[..20].to_vec();
    p.extend_from_slice(&[1, 1, 1, 1, 1, 1, 1, 0]);
    p.extend_from_slice(&plain[20..]);
    p[0] = 0x47;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
    assert_eq!(
        FlowKey::of_ip(&p),
        Some(flow(
            A_POD.into(),
            B_POD.into(),
            PROTO_UDP,
            (1111, 2222),
            false
        ))
    );
}

#[test]
fn flow_of_ipv4_fragments_has_no_ports() {
    let whole = udp_v4(A_POD, B_POD, 1111, 2222, 64);
    // The first fragment (offset 0, MF): its ports are there, but later fragments of the
    // same datagram cannot have them, so none has.
    let first = fragment_v4(whole.clone(), true, 0);
    let key = FlowKey::of_ip(&first).unwrap();
    assert!(key.fragment);
    assert_eq!((key.src_port, key.dst_port), (0, 0));
    assert_eq!(
        (key.src, key.dst, key.protocol),
        (A_POD.into(), B_POD.into(), PROTO_UDP)
    );
    // A middle fragment (offset, MF) and the last one (offset, no MF).
    for (more, offset) in [(true, 1480), (false, 1480), (false, 8)] {
        let later = fragment_v4(whole.clone(), more, offset);
        assert_eq!(
            FlowKey::of_ip(&later),
            Some(flow(A_POD.into(), B_POD.into(), PROTO_UDP, (0, 0), true)),
            "more {more}, offset {offset}"
        );
    }
    // Not a fragment: no MF, offset 0 (DF or not).
    let df = {
        let mut p = whole.clone();
        let mut h = ipv4::Packet::new_unchecked(&mut p[..]);
        h.set_flags_and_frag_offset(true, false, 0);
        h.fill_checksum();
        p
    };
    assert!(!FlowKey::of_ip(&df).unwrap().fragment);
    assert_eq!(FlowKey::of_ip(&df).unwrap().dst_port, 2222);
}

/// Hop-by-hop options (8 bytes) then destination options (16 bytes), then `upper`.
fn hbh_and_dest_opts(upper: u8) -> Vec<u8> {
    let mut ext = vec![PROTO_IPV6_OPTS, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&[upper, 1, 1, 12]);
    ext.extend_from_slice(&[0; 12]);
    ext
}

#[test]
fn flow_of_ipv6_looks_through_extension_headers() {
    let mut payload = hbh_and_dest_opts(PROTO_TCP);
    payload.extend_from_slice(&l4(40000, 22, 32));
    let p = ipv6_packet(A_POD6, B_POD6, PROTO_HOPOPT, &payload);
    assert_eq!(
        FlowKey::of_ip(&p),
        Some(flow(
            A_POD6.into(),
            B_POD6.into(),
            PROTO_TCP,
            (40000, 22),
            false
        ))
    );
    // Without extension headers.
    assert_eq!(
        FlowKey::of_ip(&udp_v6(B_POD6, A_POD6, 53, 33000)),
        Some(flow(
            B_POD6.into(),
            A_POD6.into(),
            PROTO_UDP,
            (53, 33000),
            false
        ))
    );
    // The captured ICMPv6 echo: no ports.
    let echo = fixture("wire/ipv6-icmpv6-echo-request.hex");
    let key = FlowKey::of_ip(&echo).unwrap();
    assert_eq!(
        (key.protocol, key.src_port, key.dst_port, key.fragment),
        (PROTO_ICMPV6, 0, 0, false)
    );
    assert_eq!(key.src, "fd00:198:18::1".parse::<IpAddr>().unwrap());
    assert_eq!(key.dst, "fd00:198:18::2".parse::<IpAddr>().unwrap());
}

/// An IPv6 UDP packet with a fragment header (offset in bytes, M flag).
fn v6_fragment(offset: u16, more: bool) -> Vec<u8> {
    let mut payload = vec![PROTO_UDP, 0];
    payload.extend_from_slice(&((offset & !7) | u16::from(more)).to_be_bytes());
    payload.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    payload.extend_from_slice(&l4(1111, 2222, 40));
    ipv6_packet(A_POD6, B_POD6, PROTO_IPV6_FRAGMENT, &payload)
}

#[test]
fn flow_of_ipv6_fragments() {
    for (offset, more) in [(0, true), (1448, true), (1448, false)] {
        assert_eq!(
            FlowKey::of_ip(&v6_fragment(offset, more)),
            Some(flow(A_POD6.into(), B_POD6.into(), PROTO_UDP, (0, 0), true)),
            "offset {offset}, more {more}"
        );
    }
    // An atomic fragment (offset 0, no M) is the whole datagram: it has its ports.
    assert_eq!(
        FlowKey::of_ip(&v6_fragment(0, false)),
        Some(flow(
            A_POD6.into(),
            B_POD6.into(),
            PROTO_UDP,
            (1111, 2222),
            false
        ))
    );
}

#[test]
fn flow_of_what_is_no_ip_packet() {
    let tcp = tcp_v4(A_POD, B_POD, 1, 2);
    assert_eq!(FlowKey::of_ip(&[]), None);
    // Shorter than the header, or than the header length it claims.
    assert_eq!(FlowKey::of_ip(&tcp[..19]), None);
    let mut ihl15 = udp_v4(A_POD, B_POD, 1, 2, 60);
    ihl15[0] = 0x4f;
    assert_eq!(FlowKey::of_ip(&ihl15[..59]), None);
    assert!(FlowKey::of_ip(&ihl15).is_some(), "60 bytes hold IHL 15");
    // IHL below 5.
    for ihl in 0..5u8 {
        let mut p = tcp.clone();
        p[0] = 0x40 | ihl;
        assert_eq!(FlowKey::of_ip(&p), None, "IHL {ihl}");
    }
    // Other versions.
    for version in [0u8, 1, 5, 7, 15] {
        let mut p = tcp.clone();
        p[0] = (version << 4) | 5;
        assert_eq!(FlowKey::of_ip(&p), None, "version {version}");
    }
    // IPv6 shorter than its fixed header.
    let v6 = udp_v6(A_POD6, B_POD6, 1, 2);
    assert_eq!(FlowKey::of_ip(&v6[..39]), None);
    // The IP header alone, its TCP/UDP header cut before the ports: not a flow a policy
    // could judge by its ports (so it is dropped, not let through as "port 0").
    assert_eq!(FlowKey::of_ip(&tcp[..20]), None);
    assert_eq!(FlowKey::of_ip(&v6[..40]), None);
    assert_eq!(FlowKey::of_ip(&tcp[..23]), None);
    assert!(FlowKey::of_ip(&tcp[..24]).is_some());
}

#[test]
fn flow_of_ethernet_frames() {
    let l2 = DeviceLayer::L2;
    let tcp = tcp_v4(A_POD, B_POD, 40000, 80);
    let frame = eth(MAC_STATIC, MAC_POD_A, ETHERTYPE_IPV4, &tcp);
    assert_eq!(
        FlowKey::of_packet(&frame, l2),
        Inner::Ip(FlowKey::of_ip(&tcp).unwrap())
    );
    let v6 = udp_v6(A_POD6, B_POD6, 5353, 53);
    let frame6 = eth(MAC_STATIC, MAC_POD_A, ETHERTYPE_IPV6, &v6);
    assert_eq!(
        FlowKey::of_packet(&frame6, l2),
        Inner::Ip(FlowKey::of_ip(&v6).unwrap())
    );
    // ARP (the captured request and reply) and other ethertypes carry no IP packet.
    for name in [
        "wire/ethernet-arp-request.hex",
        "wire/ethernet-arp-reply.hex",
    ] {
        assert_eq!(
            FlowKey::of_packet(&fixture(name), l2),
            Inner::NotIp,
            "{name}"
        );
    }
    let lldp = eth(MAC_STATIC, MAC_POD_A, 0x88cc, &[0u8; 32]);
    assert_eq!(FlowKey::of_packet(&lldp, l2), Inner::NotIp);
    // Claims IP but is not: garbage, cut short, the bare header.
    let garbage = eth(MAC_STATIC, MAC_POD_A, ETHERTYPE_IPV4, &[0xff; 40]);
    assert_eq!(FlowKey::of_packet(&garbage, l2), Inner::Malformed);
    assert_eq!(FlowKey::of_packet(&frame[..14 + 19], l2), Inner::Malformed);
    assert_eq!(FlowKey::of_packet(&frame[..14], l2), Inner::Malformed);
    assert_eq!(FlowKey::of_packet(&frame6[..14 + 39], l2), Inner::Malformed);
    // Shorter than an Ethernet header: nothing can be said.
    for n in 0..14 {
        assert_eq!(FlowKey::of_packet(&frame[..n], l2), Inner::Malformed, "{n}");
    }
    // On an L3 device, the same bytes are no IP packet.
    assert_eq!(
        FlowKey::of_packet(&frame, DeviceLayer::L3),
        Inner::Malformed
    );
    assert_eq!(FlowKey::of_packet(&[], DeviceLayer::L3), Inner::Malformed);
}

#[test]
fn names_and_contexts() {
    assert_eq!(Direction::Egress.name(), "out");
    assert_eq!(Direction::Ingress.name(), "in");
    assert_eq!(Decision::Allow.name(), "allow");
    assert_eq!(Decision::Drop.name(), "deny");
    assert_eq!(Decision::Reject.name(), "reject");
    let peer = v4(B_UNDERLAY, FLANNEL_PORT);
    let ctx = PolicyContext::new(Direction::Ingress, 3, Some(peer));
    assert_eq!(
        (ctx.direction, ctx.device, ctx.peer),
        (Direction::Ingress, 3, Some(peer))
    );
    assert_eq!(DropReason::Policy.name(), "policy");
}

// ---------------------------------------------------------------------------------------
// Policed over the flannel backend
// ---------------------------------------------------------------------------------------

#[test]
fn flannel_egress_allow_is_the_bare_backends_verdict() {
    let tables = flannel_tables_a();
    let peer = v4(B_UNDERLAY, FLANNEL_PORT);
    for pkt in [
        tcp_v4(A_POD, B_POD, 40000, 80),
        echo_v4(A_POD, B_POD),
        udp_v6(A_POD6, B_POD6, 5353, 53),
    ] {
        let bare = from_device(&mut flannel_a(), &tables, 0, &pkt);
        let policy = Recorder::new(Decision::Allow);
        let mut policed = Policed::new(flannel_a(), policy.clone());
        let judged = from_device(&mut policed, &tables, 0, &pkt);
        assert_eq!(judged, bare, "same verdict, same bytes");
        assert!(
            matches!(judged.0, Verdict::SendToPeer { dest, .. } if dest == peer),
            "{:?}",
            judged.0
        );
        // Judged once, after the backend picked the peer.
        let (key, ctx) = policy.only_call();
        assert_eq!(key, FlowKey::of_ip(&pkt).unwrap());
        assert_eq!(ctx, PolicyContext::new(Direction::Egress, 0, Some(peer)));
    }
}

#[test]
fn flannel_egress_deny_drops() {
    let tables = flannel_tables_a();
    for pkt in [
        tcp_v4(A_POD, B_POD, 40000, 22),
        udp_v6(A_POD6, B_POD6, 5353, 53),
    ] {
        let policy = Recorder::new(Decision::Drop);
        let mut policed = Policed::new(flannel_a(), policy.clone());
        let (v, _) = from_device(&mut policed, &tables, 0, &pkt);
        assert_eq!(v, Verdict::Drop(DropReason::Policy));
        assert_eq!(policy.calls().len(), 1);
    }
}

#[test]
fn flannel_egress_reject_answers_admin_prohibited_into_the_device() {
    let tables = flannel_tables_a();
    let pkt = tcp_v4(A_POD, B_POD, 40000, 22);
    let policy = Recorder::new(Decision::Reject);
    let mut policed = Policed::new(flannel_a(), policy.clone());
    let (v, buf) = from_device(&mut policed, &tables, 0, &pkt);
    assert_eq!(v.drop_reason(), Some(DropReason::Policy));
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::Policy,
    } = v
    else {
        panic!("{v:?}")
    };
    // The error's headers went into the headroom, in front of the quote.
    assert_eq!(range, H - 28..H + pkt.len());
    let (src, dst, ttl, t, code, quote) = icmp_v4(&buf[range]);
    // From the refused packet's destination, to its source.
    assert_eq!((src, dst, ttl), (B_POD, A_POD, 64));
    assert_eq!((t, code), (3, 13));
    // The quote is the packet as the policy saw it (after the backend's TTL decrement).
    assert_eq!(quote, forwarded(&pkt));
    let (key, ctx) = policy.only_call();
    assert_eq!((key.dst_port, ctx.direction), (22, Direction::Egress));
    assert_eq!(ctx.peer, Some(v4(B_UNDERLAY, FLANNEL_PORT)));
}

#[test]
fn flannel_egress_reject_of_a_large_packet_quotes_a_prefix() {
    let tables = flannel_tables_a();
    let pkt = udp_v4(A_POD, B_POD, 40000, 9999, 1400);
    let mut policed = Policed::new(flannel_a(), Recorder::new(Decision::Reject));
    let (v, buf) = from_device(&mut policed, &tables, 0, &pkt);
    let Some(range) = v.range().cloned() else {
        panic!("{v:?}")
    };
    assert_eq!(range.len(), 576, "RFC 1812: at most 576 bytes");
    let (_, _, _, t, code, quote) = icmp_v4(&buf[range]);
    assert_eq!((t, code), (3, 13));
    assert_eq!(quote[..], forwarded(&pkt)[..576 - 28]);
}

#[test]
fn flannel_egress_reject_v6_answers_icmpv6_admin_prohibited() {
    let tables = flannel_tables_a();
    let pkt = tcp_v6(A_POD6, B_POD6, 40000, 443);
    let policy = Recorder::new(Decision::Reject);
    let mut policed = Policed::new(flannel_a(), policy.clone());
    let (v, buf) = from_device(&mut policed, &tables, 0, &pkt);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::Policy,
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(range, H - 48..H + pkt.len());
    let (src, dst, hops, t, code, quote) = icmp_v6(&buf[range]);
    assert_eq!((src, dst, hops), (B_POD6, A_POD6, 64));
    assert_eq!((t, code), (1, 1));
    assert_eq!(quote, forwarded(&pkt));
    let (key, ctx) = policy.only_call();
    assert_eq!(
        key,
        flow(A_POD6.into(), B_POD6.into(), PROTO_TCP, (40000, 443), false)
    );
    assert_eq!(ctx.peer, Some(v4(B_UNDERLAY, FLANNEL_PORT)));
}

#[test]
fn reject_never_answers_an_icmp_error_or_a_later_fragment() {
    let tables = flannel_tables_a();
    let mut policed = Policed::new(flannel_a(), Recorder::new(Decision::Reject));
    // An ICMP error (port unreachable) going out: refused, but no error about an error.
    let mut unreachable = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    unreachable.extend_from_slice(&udp_v4(B_POD, A_POD, 53, 33000, 16));
    icmpv4::Packet::new_unchecked(&mut unreachable[..]).fill_checksum();
    let error = ipv4_packet(A_POD, B_POD, PROTO_ICMP, &unreachable);
    let (v, _) = from_device(&mut policed, &tables, 0, &error);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    // A non-first fragment: refused silently (RFC 1812 4.3.2.7).
    let later = fragment_v4(udp_v4(A_POD, B_POD, 1, 2, 64), false, 1480);
    let (v, _) = from_device(&mut policed, &tables, 0, &later);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    // The first fragment is answered.
    let first = fragment_v4(udp_v4(A_POD, B_POD, 1, 2, 64), true, 0);
    let (v, _) = from_device(&mut policed, &tables, 0, &first);
    assert!(matches!(v, Verdict::ReplyToDevice { .. }), "{v:?}");
}

#[test]
fn reject_without_headroom_is_a_drop() {
    let tables = flannel_tables_a();
    let pkt = tcp_v4(A_POD, B_POD, 40000, 22);
    for headroom in [0, 10, 27] {
        let mut policed = Policed::new(flannel_a(), Recorder::new(Decision::Reject));
        let (v, buf) = from_device_at(&mut policed, &tables, 0, &pkt, headroom, 0);
        assert_eq!(v, Verdict::Drop(DropReason::Policy), "headroom {headroom}");
        assert_eq!(buf[..headroom], vec![0u8; headroom][..], "nothing written");
    }
}

#[test]
fn flannel_ingress_allow_and_deny() {
    let tables = flannel_tables_b();
    // Peers are known by address: any source port.
    let source = v4(A_UNDERLAY, 40001);
    for pkt in [
        tcp_v4(A_POD, B_POD, 40000, 22),
        udp_v6(A_POD6, B_POD6, 5353, 53),
    ] {
        let bare = from_peer(&mut flannel_b(), &tables, source, &pkt);
        assert!(
            matches!(bare.0, Verdict::DeliverToDevice { .. }),
            "{:?}",
            bare.0
        );
        let allow = Recorder::new(Decision::Allow);
        let mut policed = Policed::new(flannel_b(), allow.clone());
        assert_eq!(from_peer(&mut policed, &tables, source, &pkt), bare);
        let (key, ctx) = allow.only_call();
        assert_eq!(key, FlowKey::of_ip(&pkt).unwrap());
        assert_eq!(ctx, PolicyContext::new(Direction::Ingress, 0, Some(source)));

        let deny = Recorder::new(Decision::Drop);
        let mut policed = Policed::new(flannel_b(), deny.clone());
        let (v, _) = from_peer(&mut policed, &tables, source, &pkt);
        assert_eq!(v, Verdict::Drop(DropReason::Policy));
        assert_eq!(deny.only_call().1.direction, Direction::Ingress);
    }
}

#[test]
fn flannel_ingress_reject_answers_through_the_tunnel() {
    let tables = flannel_tables_b();
    let source = v4(A_UNDERLAY, 40001);
    let pkt = tcp_v4(A_POD, B_POD, 40000, 22);
    let policy = Recorder::new(Decision::Reject);
    let mut policed = Policed::new(flannel_b(), policy.clone());
    let (v, buf) = from_peer(&mut policed, &tables, source, &pkt);
    let Verdict::ReplyToPeer {
        dest,
        range,
        cause: Some(DropReason::Policy),
    } = v.clone()
    else {
        panic!("{v:?}")
    };
    assert_eq!(v.drop_reason(), Some(DropReason::Policy));
    // To the sender's subnet's endpoint (flannel's port), not the datagram's source port.
    assert_eq!(dest, v4(A_UNDERLAY, FLANNEL_PORT));
    // flannel's wire format: the datagram is the error itself, forwarded once (TTL 63).
    let (src, dst, ttl, t, code, quote) = icmp_v4(&buf[range]);
    assert_eq!((src, dst, ttl), (B_POD, A_POD, 63));
    assert_eq!((t, code), (3, 13));
    assert_eq!(quote, forwarded(&pkt));
    assert_eq!(policy.only_call().1.peer, Some(source));
}

#[test]
fn flannel_ingress_reject_v6() {
    let tables = flannel_tables_b();
    let source = v4(A_UNDERLAY, FLANNEL_PORT);
    let pkt = tcp_v6(A_POD6, B_POD6, 40000, 22);
    let mut policed = Policed::new(flannel_b(), Recorder::new(Decision::Reject));
    let (v, buf) = from_peer(&mut policed, &tables, source, &pkt);
    let Verdict::ReplyToPeer {
        dest,
        range,
        cause: Some(DropReason::Policy),
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(dest, source);
    let (src, dst, hops, t, code, quote) = icmp_v6(&buf[range]);
    assert_eq!((src, dst, hops), (B_POD6, A_POD6, 63));
    assert_eq!((t, code), (1, 1));
    assert_eq!(quote, forwarded(&pkt));
}

#[test]
fn what_the_backend_drops_or_answers_is_not_judged() {
    let calls = Arc::new(AtomicUsize::new(0));
    // Egress at A: no route, TTL 1, malformed, too big with DF.
    let tables = flannel_tables_a();
    let mut ttl1 = tcp_v4(A_POD, B_POD, 1, 2);
    let mut h = ipv4::Packet::new_unchecked(&mut ttl1[..]);
    h.set_ttl(1);
    h.fill_checksum();
    let mut big_df = udp_v4(A_POD, B_POD, 1, 2, 1480);
    let mut h = ipv4::Packet::new_unchecked(&mut big_df[..]);
    h.set_flags_and_frag_offset(true, false, 0);
    h.fill_checksum();
    let cases = [
        (
            tcp_v4(A_POD, Ipv4Addr::new(100, 96, 9, 9), 1, 2),
            DropReason::NoRoute,
        ),
        (ttl1, DropReason::TtlExceeded),
        (big_df, DropReason::TooBig),
        (vec![0x45, 0, 0, 20], DropReason::Malformed),
    ];
    for (pkt, reason) in cases {
        let bare = from_device(&mut flannel_a(), &tables, 0, &pkt);
        let mut policed = Policed::new(flannel_a(), counting(Decision::Drop, &calls));
        let judged = from_device(&mut policed, &tables, 0, &pkt);
        assert_eq!(judged, bare, "{reason:?}");
        assert_eq!(judged.0.drop_reason(), Some(reason));
    }
    // Ingress at B: unknown peer, spoofed source, TTL 1 (answered by the backend).
    let tables = flannel_tables_b();
    let mut ttl1 = tcp_v4(A_POD, B_POD, 1, 2);
    let mut h = ipv4::Packet::new_unchecked(&mut ttl1[..]);
    h.set_ttl(1);
    h.fill_checksum();
    let cases = [
        (
            v4(STRANGER, FLANNEL_PORT),
            tcp_v4(A_POD, B_POD, 1, 2),
            DropReason::UnknownPeer,
        ),
        (
            v4(A_UNDERLAY, FLANNEL_PORT),
            tcp_v4(Ipv4Addr::new(100, 96, 3, 5), B_POD, 1, 2),
            DropReason::SpoofedSource,
        ),
        (v4(A_UNDERLAY, FLANNEL_PORT), ttl1, DropReason::TtlExceeded),
    ];
    for (source, pkt, reason) in cases {
        let bare = from_peer(&mut flannel_b(), &tables, source, &pkt);
        let mut policed = Policed::new(flannel_b(), counting(Decision::Reject, &calls));
        let judged = from_peer(&mut policed, &tables, source, &pkt);
        assert_eq!(judged, bare, "{reason:?}");
        assert_eq!(judged.0.drop_reason(), Some(reason));
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0, "no packet was judged");
}

#[test]
fn rejections_are_rate_limited_per_direction_and_shared_by_clones() {
    let egress_tables = flannel_tables_a();
    let ingress_tables = flannel_tables_b();
    let pkt = tcp_v4(A_POD, B_POD, 40000, 22);
    // One error a second, one at once, per direction.
    let mut worker1 = Policed::new(flannel_a(), Recorder::new(Decision::Reject))
        .with_icmp(IcmpResponder::new(1, 1));
    let mut worker2 = worker1.clone();
    let (v, _) = from_device_at(&mut worker1, &egress_tables, 0, &pkt, H, 0);
    assert!(matches!(v, Verdict::ReplyToDevice { .. }), "{v:?}");
    // The budget is spent for both workers: the next refusal is silent.
    let (v, _) = from_device_at(&mut worker2, &egress_tables, 0, &pkt, H, 10);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    assert_eq!(worker1.icmp_rate_limited(), 1);
    assert_eq!(worker2.icmp_rate_limited(), 1);
    // The other direction has a budget of its own (these hosts are A, the tables say
    // who owns what).
    let mut host_b = Policed::new(flannel_b(), Recorder::new(Decision::Reject))
        .with_icmp(IcmpResponder::new(1, 1));
    let (v, _) = from_device_at(
        &mut host_b,
        &ingress_tables,
        0,
        &tcp_v4(B_POD, A_POD, 22, 40000),
        H,
        0,
    );
    assert!(matches!(v, Verdict::ReplyToDevice { .. }), "{v:?}");
    let source = v4(A_UNDERLAY, FLANNEL_PORT);
    let (v, _) = from_peer_at(&mut host_b, &ingress_tables, source, &pkt, H, 0);
    assert!(matches!(v, Verdict::ReplyToPeer { .. }), "{v:?}");
    let (v, _) = from_peer_at(&mut host_b, &ingress_tables, source, &pkt, H, 1);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    assert_eq!(host_b.icmp_rate_limited(), 1);
    // A second later there is a token again.
    let (v, _) = from_device_at(&mut worker1, &egress_tables, 0, &pkt, H, 2000);
    assert!(matches!(v, Verdict::ReplyToDevice { .. }), "{v:?}");
    // The default limit.
    assert_eq!(DEFAULT_REJECT_RATE, 100);
    let mut policed = Policed::new(flannel_a(), Recorder::new(Decision::Reject));
    let answered = (0..150)
        .filter(|_| {
            let (v, _) = from_device_at(&mut policed, &egress_tables, 0, &pkt, H, 5);
            matches!(v, Verdict::ReplyToDevice { .. })
        })
        .count();
    assert_eq!(answered, 100);
    assert_eq!(policed.icmp_rate_limited(), 50);
}

#[test]
fn policed_passes_the_backend_through() {
    let policy = Recorder::new(Decision::Allow);
    let mut policed = Policed::new(vxlan_l2(), policy.clone());
    assert_eq!(policed.devices(), 1);
    assert_eq!(policed.device_layer(0), Some(DeviceLayer::L2));
    assert_eq!(policed.device_layer(1), None);
    assert_eq!(policed.device_name(0), Some("weft-tap0"));
    assert_eq!(policed.device_name(1), None);
    assert_eq!(policed.inner().config().vnis[0].vni, VNI);
    assert_eq!(policed.policy().decision, Decision::Allow);
    // The inspector sees the wrapped backend.
    assert!(policed
        .inspect_target()
        .downcast_ref::<VxlanBackend>()
        .is_some());
    // Ticks reach the policy (and the backend: its FDB ages).
    let tables = l2_tables();
    let frame = eth(
        MAC_TAP,
        MAC_BEHIND_B,
        ETHERTYPE_IPV4,
        &tcp_v4(B_POD, A_POD, 1, 2),
    );
    let (v, _) = from_peer(
        &mut policed,
        &tables,
        v4(B_UNDERLAY, 50000),
        &vxlan_payload(VNI, &frame),
    );
    assert!(matches!(v, Verdict::DeliverToDevice { .. }), "{v:?}");
    assert_eq!(policed.inner().fdb(0).unwrap().len(), 1, "learned");
    policed.on_tick(1_000);
    policed.on_tick(10_000_000);
    assert_eq!(*policy.ticks.lock().unwrap(), vec![1_000, 10_000_000]);
    assert_eq!(policed.inner().fdb(0).unwrap().len(), 0, "aged out");
    // The flannel backend has one L3 device and no name.
    let policed = Policed::new(flannel_a(), AllowAll);
    assert_eq!(
        (
            policed.devices(),
            policed.device_layer(0),
            policed.device_name(0)
        ),
        (1, Some(DeviceLayer::L3), None)
    );
}

// ---------------------------------------------------------------------------------------
// AllowAll and headroom
// ---------------------------------------------------------------------------------------

#[test]
fn headroom_makes_room_for_a_rejection_only_when_judging() {
    let icmp_and_ethernet = crate::icmp::HEADROOM + ethernet::HEADER_LEN;
    assert_eq!(
        Policed::new(flannel_a(), AllowAll).headroom(),
        flannel_a().headroom()
    );
    assert_eq!(
        Policed::new(vxlan_l2(), AllowAll).headroom(),
        vxlan_l2().headroom()
    );
    let judged = Policed::new(flannel_a(), Recorder::new(Decision::Allow));
    assert_eq!(
        judged.headroom(),
        flannel_a().headroom() + icmp_and_ethernet
    );
    let judged = Policed::new(vxlan_l2(), counting(Decision::Allow, &Arc::default()));
    assert_eq!(judged.headroom(), vxlan_l2().headroom() + icmp_and_ethernet);
    assert!(judged.headroom() <= H, "the tests' buffers are big enough");
}

/// Packets of every kind the flannel backend sees from host A's device.
fn flannel_batch() -> Vec<Vec<u8>> {
    let mut ttl1 = tcp_v4(A_POD, B_POD, 1, 2);
    let mut h = ipv4::Packet::new_unchecked(&mut ttl1[..]);
    h.set_ttl(1);
    h.fill_checksum();
    vec![
        tcp_v4(A_POD, B_POD, 40000, 22),
        udp_v4(A_POD, B_POD, 40000, 53, 100),
        udp_v4(A_POD, B_POD, 40000, 53, 1460),
        echo_v4(A_POD, B_POD),
        fragment_v4(udp_v4(A_POD, B_POD, 1, 2, 64), true, 0),
        fragment_v4(udp_v4(A_POD, B_POD, 1, 2, 64), false, 1480),
        tcp_v4(A_POD, Ipv4Addr::new(100, 96, 9, 9), 1, 2),
        ttl1,
        tcp_v6(A_POD6, B_POD6, 40000, 443),
        udp_v6(A_POD6, B_POD6, 5353, 53),
        fixture("wire/ipv4-udp.hex"),
        fixture("wire/ipv6-icmpv6-echo-request.hex"),
        vec![0x45; 10],
        Vec::new(),
    ]
}

#[test]
fn allow_all_is_the_bare_backend() {
    // Flannel, both directions.
    let (tables_a, tables_b) = (flannel_tables_a(), flannel_tables_b());
    let mut bare_a = flannel_a();
    let mut bare_b = flannel_b();
    let mut policed_a = Policed::new(flannel_a(), AllowAll);
    let mut policed_b = Policed::new(flannel_b(), AllowAll);
    let source = v4(A_UNDERLAY, FLANNEL_PORT);
    for (i, pkt) in flannel_batch().iter().enumerate() {
        let now = i as u64;
        assert_eq!(
            from_device_at(&mut policed_a, &tables_a, 0, pkt, H, now),
            from_device_at(&mut bare_a, &tables_a, 0, pkt, H, now),
            "egress {i}"
        );
        assert_eq!(
            from_peer_at(&mut policed_b, &tables_b, source, pkt, H, now),
            from_peer_at(&mut bare_b, &tables_b, source, pkt, H, now),
            "ingress {i}"
        );
    }
    // VXLAN L2, frames of every kind, both directions.
    let tables = l2_tables();
    let mut bare = vxlan_l2();
    let mut policed = Policed::new(vxlan_l2(), AllowAll);
    let frames = [
        eth(
            MAC_STATIC,
            MAC_POD_A,
            ETHERTYPE_IPV4,
            &tcp_v4(A_POD, B_POD, 1, 22),
        ),
        eth(
            MAC_BEHIND_B,
            MAC_POD_A,
            ETHERTYPE_IPV4,
            &tcp_v4(A_POD, B_POD, 1, 22),
        ),
        eth(
            EthernetAddress::BROADCAST,
            MAC_POD_A,
            ETHERTYPE_IPV4,
            &udp_v4(A_POD, B_POD, 68, 67, 40),
        ),
        eth(
            MAC_STATIC,
            MAC_POD_A,
            ETHERTYPE_IPV6,
            &udp_v6(A_POD6, B_POD6, 1, 53),
        ),
        eth(MAC_STATIC, MAC_POD_A, ETHERTYPE_IPV4, &[0xff; 30]),
        fixture("wire/ethernet-arp-request.hex"),
        vec![0; 10],
    ];
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(
            from_device(&mut policed, &tables, 0, frame),
            from_device(&mut bare, &tables, 0, frame),
            "L2 egress {i}"
        );
        let mut reply = frame.clone();
        if reply.len() >= 12 {
            reply[..6].copy_from_slice(MAC_POD_A.as_bytes());
            reply[6..12].copy_from_slice(MAC_BEHIND_B.as_bytes());
        }
        let payload = vxlan_payload(VNI, &reply);
        let source = v4(B_UNDERLAY, 50000);
        assert_eq!(
            from_peer(&mut policed, &tables, source, &payload),
            from_peer(&mut bare, &tables, source, &payload),
            "L2 ingress {i}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Policed over the VXLAN backend, L2 (a TAP)
// ---------------------------------------------------------------------------------------

#[test]
fn l2_egress_ip_frames_are_judged_with_the_peer() {
    let tables = l2_tables();
    let frame = eth(
        MAC_STATIC,
        MAC_POD_A,
        ETHERTYPE_IPV4,
        &tcp_v4(A_POD, B_POD, 40000, 22),
    );
    let bare = from_device(&mut vxlan_l2(), &tables, 0, &frame);
    let allow = Recorder::new(Decision::Allow);
    let mut policed = Policed::new(vxlan_l2(), allow.clone());
    assert_eq!(from_device(&mut policed, &tables, 0, &frame), bare);
    let (key, ctx) = allow.only_call();
    assert_eq!(
        key,
        flow(A_POD.into(), B_POD.into(), PROTO_TCP, (40000, 22), false)
    );
    // The statically known MAC: the peer is its VTEP.
    assert_eq!(
        ctx,
        PolicyContext::new(Direction::Egress, 0, Some(v4(C_UNDERLAY, VXLAN_PORT)))
    );

    let deny = Recorder::new(Decision::Drop);
    let mut policed = Policed::new(vxlan_l2(), deny.clone());
    let (v, _) = from_device(&mut policed, &tables, 0, &frame);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    assert_eq!(deny.calls().len(), 1);

    // A flood (broadcast, or a MAC nobody knows): judged without a peer.
    let flooded = eth(
        EthernetAddress::BROADCAST,
        MAC_POD_A,
        ETHERTYPE_IPV4,
        &udp_v4(A_POD, B_POD, 68, 67, 40),
    );
    let deny = Recorder::new(Decision::Drop);
    let mut policed = Policed::new(vxlan_l2(), deny.clone());
    let (v, _) = from_device(&mut policed, &tables, 0, &flooded);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    assert_eq!(deny.only_call().1.peer, None);
}

#[test]
fn l2_egress_reject_answers_with_a_frame_back_to_the_sender() {
    let tables = l2_tables();
    let pkt = tcp_v4(A_POD, B_POD, 40000, 22);
    let frame = eth(MAC_STATIC, MAC_POD_A, ETHERTYPE_IPV4, &pkt);
    let mut policed = Policed::new(vxlan_l2(), Recorder::new(Decision::Reject));
    let (v, buf) = from_device(&mut policed, &tables, 0, &frame);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::Policy,
    } = v
    else {
        panic!("{v:?}")
    };
    // Ethernet + IPv4 + ICMP in front of the quoted IP packet (which stays in place).
    assert_eq!(range, H + 14 - 28 - 14..H + frame.len());
    let answer = ethernet::Frame::new_checked(&buf[range]).unwrap();
    // The MACs swapped: back to the sender, from the machine it wrote to.
    assert_eq!(
        (answer.dst_addr(), answer.src_addr(), answer.ethertype()),
        (MAC_POD_A, MAC_STATIC, ETHERTYPE_IPV4)
    );
    let (src, dst, ttl, t, code, quote) = icmp_v4(answer.payload());
    assert_eq!((src, dst, ttl), (B_POD, A_POD, 64));
    assert_eq!((t, code), (3, 13));
    // L2 mode does not touch the TTL: the quote is the packet as sent.
    assert_eq!(quote, pkt);
}

#[test]
fn l2_egress_reject_v6() {
    let tables = l2_tables();
    let pkt = udp_v6(A_POD6, B_POD6, 5353, 53);
    let frame = eth(MAC_STATIC, MAC_POD_A, ETHERTYPE_IPV6, &pkt);
    let mut policed = Policed::new(vxlan_l2(), Recorder::new(Decision::Reject));
    let (v, buf) = from_device(&mut policed, &tables, 0, &frame);
    let Verdict::ReplyToDevice {
        range,
        cause: DropReason::Policy,
        ..
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(range, H + 14 - 48 - 14..H + frame.len());
    let answer = ethernet::Frame::new_checked(&buf[range]).unwrap();
    assert_eq!(
        (answer.dst_addr(), answer.src_addr(), answer.ethertype()),
        (MAC_POD_A, MAC_STATIC, ETHERTYPE_IPV6)
    );
    let (src, dst, _, t, code, quote) = icmp_v6(answer.payload());
    assert_eq!((src, dst, t, code), (B_POD6, A_POD6, 1, 1));
    assert_eq!(quote, pkt);
}

#[test]
fn l2_reject_of_a_broadcast_or_without_room_is_a_drop() {
    let tables = l2_tables();
    let mut policed = Policed::new(vxlan_l2(), Recorder::new(Decision::Reject));
    // To a group MAC: no answer from a broadcast address.
    let flooded = eth(
        EthernetAddress::BROADCAST,
        MAC_POD_A,
        ETHERTYPE_IPV4,
        &tcp_v4(A_POD, B_POD, 1, 2),
    );
    let (v, _) = from_device(&mut policed, &tables, 0, &flooded);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    // Room for the IP and ICMP headers but not for the Ethernet header in front.
    let frame = eth(
        MAC_STATIC,
        MAC_POD_A,
        ETHERTYPE_IPV4,
        &tcp_v4(A_POD, B_POD, 1, 2),
    );
    let (v, _) = from_device_at(&mut policed, &tables, 0, &frame, 20, 0);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
}

#[test]
fn l2_frames_without_ip_are_not_judged() {
    let tables = l2_tables();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut policed = Policed::new(vxlan_l2(), counting(Decision::Drop, &calls));
    let mut bare = vxlan_l2();
    // ARP out of the TAP (broadcast request, flooded) and a unicast one to a known MAC.
    let request = fixture("wire/ethernet-arp-request.hex");
    assert_eq!(
        ethernet::Frame::new_checked(&request[..])
            .unwrap()
            .ethertype(),
        ETHERTYPE_ARP
    );
    let mut unicast = request.clone();
    unicast[..6].copy_from_slice(MAC_STATIC.as_bytes());
    let lldp = eth(MAC_STATIC, MAC_POD_A, 0x88cc, &[0u8; 32]);
    for frame in [&request, &unicast, &lldp] {
        let judged = from_device(&mut policed, &tables, 0, frame);
        assert_eq!(judged, from_device(&mut bare, &tables, 0, frame));
        assert!(
            matches!(judged.0, Verdict::Flood { .. } | Verdict::SendToPeer { .. }),
            "{:?}",
            judged.0
        );
    }
    // ARP into the TAP, from B.
    let reply = fixture("wire/ethernet-arp-reply.hex");
    let source = v4(B_UNDERLAY, 50000);
    let payload = vxlan_payload(VNI, &reply);
    let judged = from_peer(&mut policed, &tables, source, &payload);
    assert_eq!(judged, from_peer(&mut bare, &tables, source, &payload));
    assert!(
        matches!(judged.0, Verdict::DeliverToDevice { .. }),
        "{:?}",
        judged.0
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "the policy was never asked"
    );
    // A frame that claims IP but carries none that parses is dropped, unjudged.
    let garbage = eth(MAC_STATIC, MAC_POD_A, ETHERTYPE_IPV4, &[0xff; 30]);
    let (v, _) = from_device(&mut policed, &tables, 0, &garbage);
    assert_eq!(v, Verdict::Drop(DropReason::Malformed));
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    // An IP frame is.
    let ip = eth(
        MAC_STATIC,
        MAC_POD_A,
        ETHERTYPE_IPV4,
        &tcp_v4(A_POD, B_POD, 1, 2),
    );
    let (v, _) = from_device(&mut policed, &tables, 0, &ip);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[test]
fn l2_ingress_deny_and_reject() {
    let tables = l2_tables();
    let source = v4(B_UNDERLAY, 50000);
    let pkt = tcp_v4(B_POD, A_POD, 40000, 22);
    let frame = eth(MAC_POD_A, MAC_BEHIND_B, ETHERTYPE_IPV4, &pkt);
    let payload = vxlan_payload(VNI, &frame);

    let deny = Recorder::new(Decision::Drop);
    let mut policed = Policed::new(vxlan_l2(), deny.clone());
    let (v, _) = from_peer(&mut policed, &tables, source, &payload);
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    let (key, ctx) = deny.only_call();
    assert_eq!(key, FlowKey::of_ip(&pkt).unwrap());
    assert_eq!(ctx, PolicyContext::new(Direction::Ingress, 0, Some(source)));

    // Reject: the error goes back through the tunnel to the VTEP the sender's MAC was just
    // learned on, as a VXLAN frame of the same VNI with the MACs swapped.
    let mut policed = Policed::new(vxlan_l2(), Recorder::new(Decision::Reject));
    let (v, buf) = from_peer(&mut policed, &tables, source, &payload);
    let Verdict::ReplyToPeer {
        dest,
        range,
        cause: Some(DropReason::Policy),
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(dest, v4(B_UNDERLAY, VXLAN_PORT));
    let datagram = &buf[range];
    let header = vxlan::Header::new_checked(datagram).unwrap();
    assert_eq!((header.has_vni_flag(), header.vni()), (true, VNI));
    let answer = ethernet::Frame::new_checked(header.payload()).unwrap();
    assert_eq!(
        (answer.dst_addr(), answer.src_addr(), answer.ethertype()),
        (MAC_BEHIND_B, MAC_POD_A, ETHERTYPE_IPV4)
    );
    let (src, dst, ttl, t, code, quote) = icmp_v4(answer.payload());
    assert_eq!((src, dst, ttl, t, code), (A_POD, B_POD, 64, 3, 13));
    assert_eq!(quote, pkt);
}

#[test]
fn l2_ingress_reject_to_a_group_mac_is_a_drop() {
    let tables = l2_tables();
    let frame = eth(
        EthernetAddress::BROADCAST,
        MAC_BEHIND_B,
        ETHERTYPE_IPV4,
        &udp_v4(B_POD, A_POD, 68, 67, 40),
    );
    let mut policed = Policed::new(vxlan_l2(), Recorder::new(Decision::Reject));
    let (v, _) = from_peer(
        &mut policed,
        &tables,
        v4(B_UNDERLAY, 50000),
        &vxlan_payload(VNI, &frame),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
}

// ---------------------------------------------------------------------------------------
// Policed over the VXLAN backend, L3 (flannel.1)
// ---------------------------------------------------------------------------------------

#[test]
fn l3_vxlan_ingress_reject_is_encapsulated_toward_the_sender() {
    let tables = l3_tables();
    let source = v4(B_UNDERLAY, 49999);
    for pkt in [
        tcp_v4(B_POD, A_POD, 40000, 22),
        tcp_v6(B_POD6, A_POD6, 40000, 22),
    ] {
        let ethertype = if pkt[0] >> 4 == 4 {
            ETHERTYPE_IPV4
        } else {
            ETHERTYPE_IPV6
        };
        let payload = vxlan_payload(VNI, &eth(MAC_A, MAC_B, ethertype, &pkt));
        let bare = from_peer(&mut vxlan_l3(), &tables, source, &payload);
        assert!(
            matches!(bare.0, Verdict::DeliverToDevice { .. }),
            "{:?}",
            bare.0
        );

        let policy = Recorder::new(Decision::Reject);
        let mut policed = Policed::new(vxlan_l3(), policy.clone());
        let (v, buf) = from_peer(&mut policed, &tables, source, &payload);
        let Verdict::ReplyToPeer {
            dest,
            range,
            cause: Some(DropReason::Policy),
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(dest, v4(B_UNDERLAY, VXLAN_PORT));
        assert_eq!(policy.only_call().1.peer, Some(source));
        let header = vxlan::Header::new_checked(&buf[range]).unwrap();
        assert_eq!(header.vni(), VNI);
        let answer = ethernet::Frame::new_checked(header.payload()).unwrap();
        assert_eq!(
            (answer.src_addr(), answer.dst_addr(), answer.ethertype()),
            (MAC_A, MAC_B, ethertype)
        );
        if ethertype == ETHERTYPE_IPV4 {
            let (src, dst, _, t, code, quote) = icmp_v4(answer.payload());
            assert_eq!((src, dst, t, code), (A_POD, B_POD, 3, 13));
            assert_eq!(quote, pkt);
        } else {
            let (src, dst, _, t, code, quote) = icmp_v6(answer.payload());
            assert_eq!((src, dst, t, code), (A_POD6, B_POD6, 1, 1));
            assert_eq!(quote, pkt);
        }
    }
}

#[test]
fn l3_vxlan_egress_reject_answers_into_the_device() {
    let tables = l3_tables();
    let pkt = udp_v4(A_POD, B_POD, 40000, 53, 60);
    let policy = Recorder::new(Decision::Reject);
    let mut policed = Policed::new(vxlan_l3(), policy.clone());
    let (v, buf) = from_device(&mut policed, &tables, 0, &pkt);
    let Verdict::ReplyToDevice {
        range,
        cause: DropReason::Policy,
        ..
    } = v
    else {
        panic!("{v:?}")
    };
    // The backend had written its VXLAN and Ethernet headers into the headroom: the
    // error's headers replace them.
    let (src, dst, _, t, code, quote) = icmp_v4(&buf[range]);
    assert_eq!((src, dst, t, code), (B_POD, A_POD, 3, 13));
    assert_eq!(quote, pkt);
    assert_eq!(policy.only_call().1.peer, Some(v4(B_UNDERLAY, VXLAN_PORT)));
}

// ---------------------------------------------------------------------------------------
// Never a panic, never a range outside the buffer
// ---------------------------------------------------------------------------------------

/// A policy with a fixed answer.
#[derive(Debug, Clone, Copy)]
struct Fixed(Decision);

impl Policy for Fixed {
    fn judge(&mut self, _: &FlowKey, _: &PolicyContext) -> Decision {
        self.0
    }
}

/// Valid IP packets from A's pods to B's (and a few from elsewhere), to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut ext = hbh_and_dest_opts(PROTO_TCP);
    ext.extend_from_slice(&l4(40000, 22, 32));
    vec![
        tcp_v4(A_POD, B_POD, 40000, 22),
        udp_v4(A_POD, B_POD, 40000, 53, 60),
        echo_v4(A_POD, B_POD),
        fragment_v4(udp_v4(A_POD, B_POD, 1, 2, 64), true, 0),
        tcp_v6(A_POD6, B_POD6, 40000, 443),
        ipv6_packet(A_POD6, B_POD6, PROTO_HOPOPT, &ext),
        v6_fragment(0, true),
        fixture("wire/ipv4-udp.hex"),
    ]
}

/// Random bytes, or a seed with a few bytes changed and perhaps cut short.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let count = seeds().len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..160),
        (
            0..count,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            proptest::option::of(any::<usize>()),
        )
            .prop_map(|(i, changes, cut)| {
                let mut d = seeds().swap_remove(i);
                for (at, byte) in changes {
                    let at = at % d.len();
                    d[at] = byte;
                }
                if let Some(cut) = cut {
                    d.truncate(cut % (d.len() + 1));
                }
                d
            }),
    ]
}

fn decisions() -> impl Strategy<Value = Decision> {
    prop_oneof![
        Just(Decision::Allow),
        Just(Decision::Drop),
        Just(Decision::Reject)
    ]
}

fn headrooms() -> impl Strategy<Value = usize> {
    prop_oneof![Just(H), Just(110), Just(48), 0..H]
}

/// Checks a rejection the policy wrote: an ICMP admin-prohibited error, well-formed.
fn assert_rejection(bytes: &[u8]) {
    match bytes.first().map(|b| b >> 4) {
        Some(4) => {
            let (_, _, _, t, code, _) = icmp_v4(bytes);
            assert_eq!((t, code), (3, 13));
        }
        _ => {
            let (_, _, _, t, code, _) = icmp_v6(bytes);
            assert_eq!((t, code), (1, 1));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Flannel, both directions, any decision.
    #[test]
    fn policed_flannel_never_panics(
        data in hostile_bytes(), decision in decisions(), headroom in headrooms(),
    ) {
        let mut out = Policed::new(flannel_a(), Fixed(decision));
        let (v, buf) = from_device_at(&mut out, &flannel_tables_a(), 0, &data, headroom, 0);
        assert_in_bounds(&v, buf.len());
        if decision != Decision::Allow {
            // Whatever the backend would carry parses as IP, so it was judged.
            prop_assert!(!matches!(v, Verdict::SendToPeer { .. }), "{:?}", v);
        }
        if let Verdict::ReplyToDevice { range, cause: DropReason::Policy, .. } = &v {
            prop_assert_eq!(decision, Decision::Reject);
            assert_rejection(&buf[range.clone()]);
        }

        let mut into = Policed::new(flannel_b(), Fixed(decision));
        let source = v4(A_UNDERLAY, FLANNEL_PORT);
        let (v, buf) = from_peer_at(&mut into, &flannel_tables_b(), source, &data, headroom, 0);
        assert_in_bounds(&v, buf.len());
        if decision != Decision::Allow {
            prop_assert!(!matches!(v, Verdict::DeliverToDevice { .. }), "{:?}", v);
        }
        if let Verdict::ReplyToPeer { range, cause: Some(DropReason::Policy), .. } = &v {
            prop_assert_eq!(decision, Decision::Reject);
            assert_rejection(&buf[range.clone()]);
        }
    }

    /// VXLAN L2, both directions, any decision; frames around the bytes and the bytes as a
    /// frame.
    #[test]
    fn policed_l2_never_panics(
        data in hostile_bytes(), decision in decisions(), headroom in headrooms(),
        dst in prop_oneof![Just(MAC_STATIC), Just(MAC_BEHIND_B), Just(EthernetAddress::BROADCAST)],
        ethertype in prop_oneof![Just(ETHERTYPE_IPV4), Just(ETHERTYPE_IPV6), Just(ETHERTYPE_ARP)],
    ) {
        let tables = l2_tables();
        let framed = eth(dst, MAC_POD_A, ethertype, &data);
        for frame in [&framed, &data] {
            let judged = matches!(FlowKey::of_packet(frame, DeviceLayer::L2), Inner::Ip(_));
            let mut out = Policed::new(vxlan_l2(), Fixed(decision));
            let (v, buf) = from_device_at(&mut out, &tables, 0, frame, headroom, 0);
            assert_in_bounds(&v, buf.len());
            if judged && decision != Decision::Allow {
                prop_assert!(
                    !matches!(v, Verdict::SendToPeer { .. } | Verdict::Flood { .. }),
                    "{:?}", v
                );
            }
            if let Verdict::ReplyToDevice { range, cause: DropReason::Policy, .. } = &v {
                assert_rejection(&buf[range.start + 14..range.end]);
            }

            // The frame coming the other way, from B's side.
            let mut reply = frame.to_vec();
            if reply.len() >= 12 {
                reply[..6].copy_from_slice(MAC_POD_A.as_bytes());
                reply[6..12].copy_from_slice(MAC_BEHIND_B.as_bytes());
            }
            let mut into = Policed::new(vxlan_l2(), Fixed(decision));
            let source = v4(B_UNDERLAY, 50000);
            for payload in [vxlan_payload(VNI, &reply), reply.clone()] {
                let (v, buf) = from_peer_at(&mut into, &tables, source, &payload, headroom, 0);
                assert_in_bounds(&v, buf.len());
                if let Verdict::DeliverToDevice { range, .. } = &v {
                    if decision != Decision::Allow {
                        let delivered = FlowKey::of_packet(&buf[range.clone()], DeviceLayer::L2);
                        prop_assert!(!matches!(delivered, Inner::Ip(_)), "{:?}", delivered);
                    }
                }
                if let Verdict::ReplyToPeer { range, cause: Some(DropReason::Policy), .. } = &v {
                    prop_assert_eq!(decision, Decision::Reject);
                    // VXLAN header, Ethernet header, then the error.
                    assert_rejection(&buf[range.start + 8 + 14..range.end]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// ACLs: matching
// ---------------------------------------------------------------------------------------

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn tcp_flow(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> FlowKey {
    flow(
        src.into(),
        dst.into(),
        PROTO_TCP,
        (src_port, dst_port),
        false,
    )
}

#[test]
fn acl_first_match_wins() {
    let set = AclSet::new(
        vec![
            AclRule::new(Decision::Allow)
                .source(cidr("100.96.1.0/24"))
                .protocol(PROTO_TCP)
                .destination_ports(PortRange::new(22, 22)),
            AclRule::new(Decision::Reject)
                .protocol(PROTO_TCP)
                .destination_ports(PortRange::new(22, 22)),
            AclRule::new(Decision::Drop).source(cidr("100.96.0.0/16")),
        ],
        Decision::Allow,
    );
    let ingress = Direction::Ingress;
    // Matches all three: the first decides.
    assert_eq!(
        set.evaluate(&tcp_flow(A_POD, B_POD, 40000, 22), ingress),
        (Some(0), Decision::Allow)
    );
    // Not the first: the second.
    let other = Ipv4Addr::new(100, 96, 3, 5);
    assert_eq!(
        set.evaluate(&tcp_flow(other, B_POD, 40000, 22), ingress),
        (Some(1), Decision::Reject)
    );
    assert_eq!(
        set.evaluate(&tcp_flow(other, B_POD, 40000, 80), ingress),
        (Some(2), Decision::Drop)
    );
    // None: the default.
    let outside = Ipv4Addr::new(10, 0, 0, 1);
    assert_eq!(
        set.evaluate(&tcp_flow(outside, B_POD, 40000, 80), ingress),
        (None, Decision::Allow)
    );
    assert_eq!(set.rules().len(), 3);
    assert_eq!(set.default_action(), Decision::Allow);
    assert!(!set.is_allow_all());
    assert!(AclSet::allow_all().is_allow_all());
    assert!(!AclSet::new(Vec::new(), Decision::Drop).is_allow_all());
    assert!(!AclSet::new(vec![AclRule::new(Decision::Allow)], Decision::Allow).is_allow_all());
}

#[test]
fn acl_rule_fields() {
    let f = tcp_flow(A_POD, B_POD, 40000, 22);
    let (in_, out) = (Direction::Ingress, Direction::Egress);
    let any = AclRule::new(Decision::Drop);
    assert!(any.matches(&f, in_) && any.matches(&f, out));
    // Direction.
    let inbound = any.clone().direction(in_);
    assert!(inbound.matches(&f, in_));
    assert!(!inbound.matches(&f, out));
    let outbound = any.clone().direction(out);
    assert!(!outbound.matches(&f, in_) && outbound.matches(&f, out));
    // Source and destination networks, of either family.
    assert!(any.clone().source(cidr("100.96.1.0/24")).matches(&f, in_));
    assert!(any.clone().source(cidr("100.96.1.5/32")).matches(&f, in_));
    assert!(!any.clone().source(cidr("100.96.1.6/32")).matches(&f, in_));
    assert!(!any.clone().source(cidr("100.96.2.0/24")).matches(&f, in_));
    assert!(any.clone().source(cidr("0.0.0.0/0")).matches(&f, in_));
    assert!(any
        .clone()
        .destination(cidr("100.96.2.0/24"))
        .matches(&f, in_));
    assert!(!any
        .clone()
        .destination(cidr("100.96.1.0/24"))
        .matches(&f, in_));
    // An IPv4 network never matches an IPv6 flow, and the other way round.
    assert!(!any.clone().source(cidr("::/0")).matches(&f, in_));
    let f6 = flow(A_POD6.into(), B_POD6.into(), PROTO_TCP, (40000, 22), false);
    assert!(!any.clone().source(cidr("0.0.0.0/0")).matches(&f6, in_));
    assert!(any
        .clone()
        .source(cidr("fd00:100:96:1::/64"))
        .matches(&f6, in_));
    assert!(any
        .clone()
        .destination(cidr("fd00:100:96:2::/64"))
        .matches(&f6, in_));
    assert!(!any
        .clone()
        .destination(cidr("fd00:100:96:1::/64"))
        .matches(&f6, in_));
    // Protocol.
    assert!(any.clone().protocol(PROTO_TCP).matches(&f, in_));
    assert!(!any.clone().protocol(PROTO_UDP).matches(&f, in_));
    // Every field must match.
    let narrow = any
        .clone()
        .direction(in_)
        .source(cidr("100.96.1.0/24"))
        .destination(cidr("100.96.2.7/32"))
        .protocol(PROTO_TCP)
        .source_ports(PortRange::new(32768, 60999))
        .destination_ports(PortRange::new(22, 22));
    assert!(narrow.matches(&f, in_));
    assert!(!narrow.matches(&f, out));
    assert!(!narrow.matches(&tcp_flow(A_POD, B_POD, 1000, 22), in_));
    assert!(!narrow.matches(&tcp_flow(A_POD, B_POD, 40000, 23), in_));
    assert!(!narrow.matches(
        &tcp_flow(A_POD, Ipv4Addr::new(100, 96, 2, 8), 40000, 22),
        in_
    ));
}

#[test]
fn acl_port_ranges_are_inclusive() {
    let r = PortRange::new(1000, 2000);
    assert_eq!((r.first, r.last), (1000, 2000));
    assert_eq!(PortRange::new(2000, 1000), r, "bounds put in order");
    assert!(r.contains(1000) && r.contains(1500) && r.contains(2000));
    assert!(!r.contains(999) && !r.contains(2001));
    let all = PortRange::new(0, u16::MAX);
    assert!(all.contains(0) && all.contains(u16::MAX));

    let dst = AclRule::new(Decision::Drop).destination_ports(r);
    let src = AclRule::new(Decision::Drop).source_ports(r);
    let d = Direction::Egress;
    for (port, inside) in [(999, false), (1000, true), (2000, true), (2001, false)] {
        assert_eq!(
            dst.matches(&tcp_flow(A_POD, B_POD, 5, port), d),
            inside,
            "{port}"
        );
        assert_eq!(
            src.matches(&tcp_flow(A_POD, B_POD, port, 5), d),
            inside,
            "{port}"
        );
        // Each rule looks at its own port only.
        assert!(!dst.matches(&tcp_flow(A_POD, B_POD, port, 5), d), "{port}");
        assert!(!src.matches(&tcp_flow(A_POD, B_POD, 5, port), d), "{port}");
    }
    // UDP and SCTP have ports too.
    let udp = flow(A_POD.into(), B_POD.into(), PROTO_UDP, (5, 1500), false);
    let sctp = flow(A_POD.into(), B_POD.into(), 132, (5, 1500), false);
    assert!(dst.matches(&udp, d) && dst.matches(&sctp, d));
}

#[test]
fn acl_port_rules_never_match_packets_without_ports() {
    // Even a range that covers port 0, the port FlowKey gives packets without ports.
    let all = PortRange::new(0, u16::MAX);
    let dst = AclRule::new(Decision::Drop).destination_ports(all);
    let src = AclRule::new(Decision::Drop).source_ports(all);
    let d = Direction::Ingress;
    // A fragment (of a TCP datagram, from the packet bytes).
    let first = FlowKey::of_ip(&fragment_v4(tcp_v4(A_POD, B_POD, 1, 22), true, 0)).unwrap();
    let later = FlowKey::of_ip(&fragment_v4(tcp_v4(A_POD, B_POD, 1, 22), false, 8)).unwrap();
    let v6 = FlowKey::of_ip(&v6_fragment(0, true)).unwrap();
    for f in [first, later, v6] {
        assert!(f.fragment);
        assert!(!dst.matches(&f, d) && !src.matches(&f, d), "{f:?}");
        // The rest of the rule still applies to it.
        assert!(AclRule::new(Decision::Drop)
            .protocol(f.protocol)
            .matches(&f, d));
    }
    // Even a fragment whose key (built by hand) had ports.
    let odd = flow(A_POD.into(), B_POD.into(), PROTO_TCP, (1, 22), true);
    assert!(!AclRule::new(Decision::Drop)
        .destination_ports(PortRange::new(22, 22))
        .matches(&odd, d));
    // Protocols without ports: ICMP, ICMPv6, GRE.
    let echo = FlowKey::of_ip(&echo_v4(A_POD, B_POD)).unwrap();
    let echo6 = FlowKey::of_ip(&fixture("wire/ipv6-icmpv6-echo-request.hex")).unwrap();
    let gre = FlowKey::of_ip(&ipv4_packet(A_POD, B_POD, 47, &l4(1, 2, 16))).unwrap();
    for f in [echo, echo6, gre] {
        assert!(!f.fragment);
        assert!(!dst.matches(&f, d) && !src.matches(&f, d), "{f:?}");
        assert!(AclRule::new(Decision::Drop).matches(&f, d));
    }
    // As in a set: "deny everything to ports 0-1023" lets a ping through.
    let set = AclSet::new(
        vec![AclRule::new(Decision::Drop).destination_ports(PortRange::new(0, 1023))],
        Decision::Allow,
    );
    assert_eq!(set.evaluate(&echo, d), (None, Decision::Allow));
    assert_eq!(
        set.evaluate(&tcp_flow(A_POD, B_POD, 40000, 22), d),
        (Some(0), Decision::Drop)
    );
}

#[test]
fn acl_rules_display_as_weft_acl_list_shows_them() {
    let ssh = AclRule::new(Decision::Drop)
        .direction(Direction::Ingress)
        .protocol(PROTO_TCP)
        .source(cidr("100.96.1.0/24"))
        .destination_ports(PortRange::new(22, 22));
    assert_eq!(
        ssh.to_string(),
        "deny in tcp from 100.96.1.0/24 to any port 22"
    );
    assert_eq!(
        AclRule::new(Decision::Allow).to_string(),
        "allow any from any to any"
    );
    let dns = AclRule::new(Decision::Reject)
        .direction(Direction::Egress)
        .protocol(PROTO_UDP)
        .source_ports(PortRange::new(2000, 1000))
        .destination(cidr("fd00::/8"))
        .destination_ports(PortRange::new(53, 53));
    assert_eq!(
        dns.to_string(),
        "reject out udp from any port 1000-2000 to fd00::/8 port 53"
    );
    let gre = AclRule::new(Decision::Allow)
        .protocol(47)
        .destination(cidr("10.0.0.0/8"));
    assert_eq!(gre.to_string(), "allow 47 from any to 10.0.0.0/8");
    for (p, name) in [
        (1, "icmp"),
        (6, "tcp"),
        (17, "udp"),
        (58, "icmpv6"),
        (132, "sctp"),
    ] {
        assert_eq!(protocol_name(p), name);
        assert_eq!(protocol_number(name), Some(p));
        let rule = AclRule::new(Decision::Allow).protocol(p);
        assert_eq!(rule.to_string(), format!("allow {name} from any to any"));
    }
    for p in 0..=255u8 {
        assert_eq!(protocol_number(&protocol_name(p)), Some(p), "{p}");
    }
    assert_eq!(protocol_number("256"), None);
    assert_eq!(protocol_number("-1"), None);
    assert_eq!(protocol_number("TCP"), None);
    assert_eq!(protocol_number(""), None);
    assert_eq!(PortRange::new(80, 80).to_string(), "80");
    assert_eq!(PortRange::new(8080, 80).to_string(), "80-8080");
}

// ---------------------------------------------------------------------------------------
// ACLs: counters and replacement
// ---------------------------------------------------------------------------------------

fn ssh_deny() -> AclRule {
    AclRule::new(Decision::Drop)
        .protocol(PROTO_TCP)
        .destination_ports(PortRange::new(22, 22))
}

fn web_allow(port: u16) -> AclRule {
    AclRule::new(Decision::Allow)
        .protocol(PROTO_TCP)
        .destination_ports(PortRange::new(port, port))
}

fn egress() -> PolicyContext {
    PolicyContext::new(Direction::Egress, 0, None)
}

/// Judges `n` packets of `flow` with `policy`, checking each decision.
fn judge_n(policy: &mut impl Policy, flow: &FlowKey, n: usize, expected: Decision) {
    for _ in 0..n {
        assert_eq!(policy.judge(flow, &egress()), expected, "{flow:?}");
    }
}

#[test]
fn acl_hits_are_published_on_tick_and_on_drop() {
    let acl = Acl::new(AclSet::new(
        vec![ssh_deny(), web_allow(80)],
        Decision::Reject,
    ));
    let (ssh, web) = (
        tcp_flow(A_POD, B_POD, 40000, 22),
        tcp_flow(A_POD, B_POD, 40000, 80),
    );
    let other = tcp_flow(A_POD, B_POD, 40000, 443);
    let mut worker1 = acl.policy();
    let mut worker2 = worker1.clone();
    judge_n(&mut worker1, &ssh, 2, Decision::Drop);
    judge_n(&mut worker1, &web, 1, Decision::Allow);
    judge_n(&mut worker1, &other, 1, Decision::Reject);
    judge_n(&mut worker2, &ssh, 1, Decision::Drop);
    judge_n(&mut worker2, &other, 3, Decision::Reject);
    // Nothing is shared before a worker publishes.
    let set = acl.current();
    assert_eq!((set.hits(0), set.hits(1), set.default_hits()), (0, 0, 0));
    worker1.on_tick(1000);
    assert_eq!((set.hits(0), set.hits(1), set.default_hits()), (2, 1, 1));
    // Publishing twice does not count twice.
    worker1.on_tick(2000);
    assert_eq!((set.hits(0), set.hits(1), set.default_hits()), (2, 1, 1));
    // A worker that goes away publishes what it counted.
    drop(worker2);
    assert_eq!((set.hits(0), set.hits(1), set.default_hits()), (3, 1, 4));
    drop(worker1);
    assert_eq!((set.hits(0), set.hits(1), set.default_hits()), (3, 1, 4));
    assert_eq!(set.hits(2), 0, "no such rule");
    assert_eq!(set.hits(usize::MAX), 0);
}

#[test]
fn acl_workers_on_threads_count_into_the_same_totals() {
    let acl = Acl::new(AclSet::new(vec![ssh_deny()], Decision::Allow));
    let ssh = tcp_flow(A_POD, B_POD, 40000, 22);
    let web = tcp_flow(A_POD, B_POD, 40000, 80);
    let template = acl.policy();
    std::thread::scope(|s| {
        for worker in 0..4u64 {
            let mut policy = template.clone();
            s.spawn(move || {
                for i in 0..1000u64 {
                    let flow = if i % 4 == 0 { ssh } else { web };
                    policy.judge(&flow, &egress());
                    if i % 300 == 0 {
                        policy.on_tick(worker * 1000 + i);
                    }
                }
            });
        }
    });
    drop(template);
    let set = acl.current();
    assert_eq!(set.hits(0), 4 * 250);
    assert_eq!(set.default_hits(), 4 * 750);
}

#[test]
fn acl_replace_keeps_the_counters_of_identical_rules() {
    let acl = Acl::new(AclSet::new(vec![ssh_deny(), web_allow(80)], Decision::Drop));
    let (ssh, web) = (
        tcp_flow(A_POD, B_POD, 40000, 22),
        tcp_flow(A_POD, B_POD, 40000, 80),
    );
    let other = tcp_flow(A_POD, B_POD, 40000, 443);
    let mut worker = acl.policy();
    judge_n(&mut worker, &ssh, 3, Decision::Drop);
    judge_n(&mut worker, &web, 2, Decision::Allow);
    judge_n(&mut worker, &other, 1, Decision::Drop);
    worker.on_tick(0);
    // One more SSH packet, not yet published when the rules change.
    judge_n(&mut worker, &ssh, 1, Decision::Drop);
    let old = acl.current();
    assert_eq!((old.hits(0), old.hits(1), old.default_hits()), (3, 2, 1));

    // SSH stays (at another index), web changes (port 8080), a DNS rule is new; the
    // default stays.
    let dns = AclRule::new(Decision::Allow).protocol(PROTO_UDP);
    acl.replace(AclSet::new(
        vec![dns, ssh_deny(), web_allow(8080)],
        Decision::Drop,
    ));
    let new = acl.current();
    assert_eq!(new.rules()[1], ssh_deny());
    assert_eq!(new.hits(0), 0, "a new rule starts at 0");
    assert_eq!(new.hits(1), 3, "an identical rule keeps its count");
    assert_eq!(new.hits(2), 0, "a changed rule starts again");
    assert_eq!(new.default_hits(), 1, "the same default keeps its count");
    // The old set is unchanged for whoever still holds it.
    assert_eq!((old.hits(0), old.hits(1)), (3, 2));

    // The worker picks the new rules up on its next packet: port 80 is no longer allowed,
    // and the SSH hit it had not published yet lands in the kept counter.
    judge_n(&mut worker, &web, 1, Decision::Drop);
    assert_eq!(new.hits(1), 4);
    worker.on_tick(1000);
    assert_eq!(new.default_hits(), 2);
    judge_n(
        &mut worker,
        &tcp_flow(A_POD, B_POD, 40000, 8080),
        1,
        Decision::Allow,
    );
    worker.on_tick(2000);
    assert_eq!(new.hits(2), 1);
    // A new policy and clones of the old one see the new rules too.
    judge_n(&mut acl.policy(), &web, 1, Decision::Drop);
    judge_n(&mut worker.clone(), &web, 1, Decision::Drop);
    assert_eq!(new.default_hits(), 4);

    // Another default: its count starts again; the rules keep theirs.
    acl.replace(AclSet::new(vec![ssh_deny()], Decision::Allow));
    let newer = acl.current();
    assert_eq!((newer.hits(0), newer.default_hits()), (4, 0));
    judge_n(&mut worker, &web, 1, Decision::Allow);
    drop(worker);
    assert_eq!(newer.default_hits(), 1);
    assert_eq!(
        new.default_hits(),
        4,
        "hits after the replacement go to the new set"
    );
}

#[test]
fn acl_replace_gives_an_old_counter_to_one_rule_only() {
    let acl = Acl::new(AclSet::new(vec![ssh_deny()], Decision::Allow));
    let mut worker = acl.policy();
    judge_n(
        &mut worker,
        &tcp_flow(A_POD, B_POD, 1, 22),
        5,
        Decision::Drop,
    );
    worker.on_tick(0);
    acl.replace(AclSet::new(vec![ssh_deny(), ssh_deny()], Decision::Allow));
    let set = acl.current();
    assert_eq!((set.hits(0), set.hits(1)), (5, 0));
    // The rule that stayed still counts into the same counter as before.
    judge_n(
        &mut worker,
        &tcp_flow(A_POD, B_POD, 1, 22),
        1,
        Decision::Drop,
    );
    worker.on_tick(1);
    assert_eq!((set.hits(0), set.hits(1)), (6, 0));
}

#[test]
fn acl_tick_publishes_to_the_old_set_then_picks_up_the_new_one() {
    let acl = Acl::new(AclSet::new(vec![web_allow(80)], Decision::Drop));
    let web = tcp_flow(A_POD, B_POD, 40000, 80);
    let mut worker = acl.policy();
    judge_n(&mut worker, &web, 2, Decision::Allow);
    let old = acl.current();
    acl.replace(AclSet::new(vec![ssh_deny()], Decision::Allow));
    assert_eq!(old.hits(0), 0);
    worker.on_tick(0);
    // The hits counted under the old rules went to them, not to the new rule 0.
    assert_eq!(old.hits(0), 2);
    let new = acl.current();
    assert_eq!((new.hits(0), new.default_hits()), (0, 0));
    judge_n(&mut worker, &web, 1, Decision::Allow);
    worker.on_tick(1);
    assert_eq!((new.hits(0), new.default_hits()), (0, 1));
}

#[test]
fn acl_in_front_of_the_flannel_backend() {
    // Host B: no SSH in from anywhere, anything else in and out.
    let acl = Acl::new(AclSet::new(
        vec![AclRule::new(Decision::Reject)
            .direction(Direction::Ingress)
            .protocol(PROTO_TCP)
            .destination_ports(PortRange::new(22, 22))],
        Decision::Allow,
    ));
    let mut host_b = Policed::new(flannel_b(), acl.policy());
    let tables = flannel_tables_b();
    let source = v4(A_UNDERLAY, FLANNEL_PORT);
    let (v, _) = from_peer(
        &mut host_b,
        &tables,
        source,
        &tcp_v4(A_POD, B_POD, 40000, 22),
    );
    assert!(
        matches!(
            v,
            Verdict::ReplyToPeer {
                cause: Some(DropReason::Policy),
                ..
            }
        ),
        "{v:?}"
    );
    let (v, _) = from_peer(
        &mut host_b,
        &tables,
        source,
        &tcp_v4(A_POD, B_POD, 40000, 80),
    );
    assert!(matches!(v, Verdict::DeliverToDevice { .. }), "{v:?}");
    // Out to port 22 is another direction.
    let (v, _) = from_device(&mut host_b, &tables, 0, &tcp_v4(B_POD, A_POD, 40000, 22));
    assert!(matches!(v, Verdict::SendToPeer { .. }), "{v:?}");
    // The engine's tick (through the wrapper) publishes the counts.
    let set = acl.current();
    assert_eq!((set.hits(0), set.default_hits()), (0, 0));
    host_b.on_tick(1000);
    assert_eq!((set.hits(0), set.default_hits()), (1, 2));
}

#[test]
fn vlan_tags_do_not_carry_a_packet_past_a_policy() {
    let tcp = tcp_v4(A_POD, B_POD, 40000, 22);
    let l2 = DeviceLayer::L2;
    let untagged = eth(MAC_B, MAC_A, ETHERTYPE_IPV4, &tcp);
    let wanted = FlowKey::of_packet(&untagged, l2);
    assert!(matches!(wanted, Inner::Ip(f) if f.dst_port == 22));
    // One 802.1Q tag, and 802.1ad + 802.1Q.
    let mut one = untagged[..12].to_vec();
    one.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
    one.extend_from_slice(&tcp);
    assert_eq!(FlowKey::of_packet(&one, l2), wanted);
    let mut two = untagged[..12].to_vec();
    two.extend_from_slice(&[0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
    two.extend_from_slice(&tcp);
    assert_eq!(FlowKey::of_packet(&two, l2), wanted);
    // A third tag, or tags cut short: nothing a policy can judge, so it is dropped.
    let mut three = untagged[..12].to_vec();
    for _ in 0..3 {
        three.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    }
    three.extend_from_slice(&[0x08, 0x00]);
    three.extend_from_slice(&tcp);
    assert_eq!(FlowKey::of_packet(&three, l2), Inner::Malformed);
    assert_eq!(FlowKey::of_packet(&one[..15], l2), Inner::Malformed);
    // A tagged ARP frame is still not IP.
    let mut arp = untagged[..12].to_vec();
    arp.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    assert_eq!(FlowKey::of_packet(&arp, l2), Inner::NotIp);
}

#[test]
fn an_ipv6_extension_chain_that_does_not_end_is_not_a_flow() {
    // Nine destination-options headers (more than the parser walks), then TCP.
    let mut payload = Vec::new();
    for i in 0..9 {
        let next = if i == 8 { PROTO_TCP } else { 60 };
        payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    payload.extend_from_slice(&l4(40000, 22, 20));
    let long = ipv6_packet(A_POD6, B_POD6, 60, &payload);
    assert_eq!(FlowKey::of_ip(&long), None);
    assert_eq!(FlowKey::of_packet(&long, DeviceLayer::L3), Inner::Malformed);
    // Eight are walked.
    let mut payload = Vec::new();
    for i in 0..8 {
        let next = if i == 7 { PROTO_TCP } else { 60 };
        payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    payload.extend_from_slice(&l4(40000, 22, 20));
    let ok = FlowKey::of_ip(&ipv6_packet(A_POD6, B_POD6, 60, &payload)).unwrap();
    assert_eq!((ok.protocol, ok.dst_port), (PROTO_TCP, 22));
    // A chain cut short.
    let cut = ipv6_packet(A_POD6, B_POD6, 60, &[PROTO_TCP, 3]);
    assert_eq!(FlowKey::of_ip(&cut), None);
}
