//! Byte-vector tests of every verdict and drop reason of the VXLAN backend, on frames
//! captured from the kernel's vxlan device (`fixtures/vxlan`, `fixtures/neigh`, see their
//! capture scripts) and on packets built field by field with the wire `Repr`s.
//!
//! The cast, as in the captures: host A (underlay 198.18.0.1, VTEP MAC 02:00:00:00:01:00,
//! overlay 100.96.1.0/24 and fd00:100:96:1::/64) runs weft in L3 mode; B (198.18.0.2,
//! 02:00:00:00:02:00, 100.96.2.0/24 and fd00:100:96:2::/64) is the kernel peer; C
//! (198.18.0.3) holds 100.96.3.0/24 but its lease carries no VTEP MAC. The L2 tests use a
//! TAP MAC of their own, with B and C as the VTEPs of the VNI.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use super::*;
use crate::backend::PacketBuf;
use crate::fdb::FdbConfig;
use crate::table::{Cidr, Route, SubnetTable, TableSpec};
use crate::testutil::fixture;
use crate::wire::ethernet::{self, EthernetAddress, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::{
    arp, icmpv4, icmpv6, ipv4, ipv6, udp, vxlan, PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP,
};

const VNI: u32 = 1;
const PORT: u16 = vxlan::PORT_LINUX;
/// The VXLAN header of VNI 1 as the kernel writes it (flags 0x08, reserved bits zero).
const HEADER_VNI1: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 0x01, 0];

const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0]);
const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x02, 0]);
const MAC_C: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x03, 0]);

const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const C_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// An underlay address that is nobody's peer.
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);

const A_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 96, 1, 0);
const B_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 96, 2, 0);
const A_OVERLAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0x96, 1, 0, 0, 0, 0);
const B_OVERLAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0x96, 2, 0, 0, 0, 0);
/// A pod behind A and one behind B.
const A_POD: Ipv4Addr = Ipv4Addr::new(100, 96, 1, 5);
const B_POD: Ipv4Addr = Ipv4Addr::new(100, 96, 2, 7);
const A_POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0x96, 1, 0, 0, 0, 5);
const B_POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0x96, 2, 0, 0, 0, 7);

/// The TAP's MAC in the L2 tests.
const MAC_TAP: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0a, 0]);
/// A machine behind B's bridge, learned from B's frames.
const MAC_BEHIND_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0b, 0x01]);
/// A machine behind C, by a static FDB entry of the configuration.
const MAC_STATIC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0c, 0x01]);

/// Room after the packet in every test buffer: a neighbour advertisement (86 bytes) may be
/// longer than the solicitation it answers.
const TAILROOM: usize = 128;

fn endpoint(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), PORT)
}

/// The same host sending from a hashed source port, as VTEPs do.
fn from_port(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn route(subnet: &str, at: Ipv4Addr, vtep_mac: Option<EthernetAddress>) -> Route {
    Route {
        subnet: subnet.parse().unwrap(),
        endpoint: endpoint(at),
        vtep_mac,
    }
}

/// Host A's routing table (device 0): B owns 100.96.2.0/24 and fd00:100:96:2::/64, C owns
/// 100.96.3.0/24 but has no VTEP MAC.
fn tables_a() -> Vec<Arc<SubnetTable>> {
    let routes = [
        route("100.96.2.0/24", B_UNDERLAY, Some(MAC_B)),
        route("fd00:100:96:2::/64", B_UNDERLAY, Some(MAC_B)),
        route("100.96.3.0/24", C_UNDERLAY, None),
    ];
    vec![Arc::new(SubnetTable::new(1, &routes).unwrap())]
}

/// An L3 VNI with host A's overlay addresses.
fn l3_vni(vni: u32, vtep_mac: EthernetAddress) -> VniConfig {
    VniConfig {
        device: None,
        vni,
        mode: VxlanMode::L3,
        vtep_mac,
        local_v4: Some(A_OVERLAY),
        local_v6: Some(A_OVERLAY6),
        fdb: FdbConfig::default(),
    }
}

fn l2_vni(vni: u32, vtep_mac: EthernetAddress, fdb: FdbConfig) -> VniConfig {
    VniConfig {
        device: None,
        vni,
        mode: VxlanMode::L2,
        vtep_mac,
        local_v4: None,
        local_v6: None,
        fdb,
    }
}

fn backend(vnis: Vec<VniConfig>) -> VxlanBackend {
    VxlanBackend::new(VxlanConfig {
        vnis,
        ..VxlanConfig::default()
    })
}

/// Host A: VNI 1 in L3 mode with the defaults (port 8472, underlay MTU 1500).
fn backend_a() -> VxlanBackend {
    backend(vec![l3_vni(VNI, MAC_A)])
}

/// `packet` after HEADROOM bytes of headroom, with TAILROOM spare bytes after it.
fn buffer(packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
    buf
}

/// Hands `packet`, read from device `device`, to the backend; returns the verdict and the
/// buffer the verdict's range points into.
fn from_device(
    b: &mut VxlanBackend,
    tables: &[Arc<SubnetTable>],
    device: usize,
    packet: &[u8],
    now_ms: u64,
) -> (Verdict, Vec<u8>) {
    let mut buf = buffer(packet);
    let v = b.handle_device_packet(
        tables,
        device,
        PacketBuf::new(&mut buf, HEADROOM, packet.len()).unwrap(),
        now_ms,
    );
    (v, buf)
}

/// Hands the datagram payload `payload`, received from `source`, to the backend.
fn from_peer(
    b: &mut VxlanBackend,
    tables: &[Arc<SubnetTable>],
    source: SocketAddr,
    payload: &[u8],
    now_ms: u64,
) -> (Verdict, Vec<u8>) {
    let mut buf = buffer(payload);
    let v = b.handle_datagram(
        tables,
        source,
        PacketBuf::new(&mut buf, HEADROOM, payload.len()).unwrap(),
        now_ms,
    );
    (v, buf)
}

/// An IPv4 UDP packet of `total_len` bytes (at least 28), TTL 64, ident `ident`.
fn udp_v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    total_len: usize,
    df: bool,
    ident: u16,
) -> Vec<u8> {
    let payload_len = total_len - ipv4::HEADER_LEN;
    let repr = ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: PROTO_UDP,
        payload_len,
        ttl: 64,
    };
    let mut bytes = vec![0u8; total_len];
    let mut p = ipv4::Packet::new_unchecked(&mut bytes[..]);
    repr.emit(&mut p);
    p.set_ident(ident);
    p.set_flags_and_frag_offset(df, false, 0);
    p.fill_checksum();
    write_udp(&mut bytes[ipv4::HEADER_LEN..], ports, ident);
    bytes
}

/// An IPv6 UDP packet of `total_len` bytes (at least 48), hop limit 64.
fn udp_v6(src: Ipv6Addr, dst: Ipv6Addr, ports: (u16, u16), total_len: usize) -> Vec<u8> {
    let payload_len = total_len - ipv6::HEADER_LEN;
    let repr = ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: PROTO_UDP,
        payload_len,
        hop_limit: 64,
    };
    let mut bytes = vec![0u8; total_len];
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut bytes[..]));
    write_udp(&mut bytes[ipv6::HEADER_LEN..], ports, 0);
    bytes
}

/// A UDP header (no checksum) and data bytes counting up from `seed`.
fn write_udp(datagram: &mut [u8], (src_port, dst_port): (u16, u16), seed: u16) {
    let len = u16::try_from(datagram.len()).unwrap();
    datagram[0..2].copy_from_slice(&src_port.to_be_bytes());
    datagram[2..4].copy_from_slice(&dst_port.to_be_bytes());
    datagram[4..6].copy_from_slice(&len.to_be_bytes());
    datagram[6..8].fill(0);
    for (i, b) in datagram[8..].iter_mut().enumerate() {
        *b = (i as u16).wrapping_add(seed) as u8;
    }
}

/// An Ethernet frame around `payload`.
fn frame(dst: EthernetAddress, src: EthernetAddress, ethertype: u16, payload: &[u8]) -> Vec<u8> {
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

/// A VXLAN header for `vni` (written by the wire `Repr`) followed by `frame`: a UDP payload.
fn vxlan_payload(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; vxlan::HEADER_LEN + frame.len()];
    vxlan::Repr { vni }.emit(&mut vxlan::Header::new_unchecked(&mut bytes[..]));
    bytes[vxlan::HEADER_LEN..].copy_from_slice(frame);
    bytes
}

/// A VXLAN header for `vni`, as bytes.
fn vxlan_header(vni: u32) -> [u8; 8] {
    let mut header = [0u8; 8];
    vxlan::Repr { vni }.emit(&mut vxlan::Header::new_unchecked(&mut header[..]));
    header
}

/// A datagram the kernel's vxlan device sent, from a capture of the outer packet.
struct KernelDatagram {
    /// The sending VTEP, with the hashed source port it used.
    source: SocketAddr,
    /// The receiving VTEP and the VXLAN port.
    dest: SocketAddr,
    /// The UDP payload: VXLAN header + inner Ethernet frame.
    payload: Vec<u8>,
}

fn kernel_datagram(name: &str) -> KernelDatagram {
    let bytes = fixture(name);
    let ip = ipv4::Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(ip.protocol(), PROTO_UDP, "{name} is not UDP");
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    let datagram = udp::Packet::new_checked(ip.payload()).unwrap();
    assert!(
        datagram.verify_checksum(src, dst),
        "{name}: bad UDP checksum"
    );
    KernelDatagram {
        source: SocketAddr::new(src, datagram.src_port()),
        dest: SocketAddr::new(dst, datagram.dst_port()),
        payload: datagram.payload().to_vec(),
    }
}

/// The captured pairs: an inner Ethernet frame as seen on the sender's `flannel.1`, and the
/// outer packet carrying it as seen on the receiver's underlay.
const KERNEL_CAPTURES: [(&str, &str); 2] = [
    (
        "vxlan/inner-echo-request.hex",
        "vxlan/outer-echo-request.hex",
    ),
    ("vxlan/inner-echo-reply.hex", "vxlan/outer-echo-reply.hex"),
];

/// The UDP payload B sends A for `ip_packet`: VNI 1, Ethernet B -> A with `ethertype`.
fn l3_datagram_from_b(ip_packet: &[u8], ethertype: u16) -> Vec<u8> {
    vxlan_payload(VNI, &frame(MAC_A, MAC_B, ethertype, ip_packet))
}

/// The echo reply B's kernel sent to A, as the UDP payload A receives.
fn kernel_reply_payload() -> Vec<u8> {
    kernel_datagram("vxlan/outer-echo-reply.hex").payload
}

/// Every range a verdict carries lies inside the buffer.
fn assert_in_bounds(v: &Verdict, buf_len: usize) {
    let range = match v {
        Verdict::SendToPeer { range, .. }
        | Verdict::SendTrain { range, .. }
        | Verdict::Flood { range, .. }
        | Verdict::DeliverToDevice { range, .. }
        | Verdict::ReplyToDevice { range, .. }
        | Verdict::AnswerToDevice { range, .. }
        | Verdict::ReplyToPeer { range, .. } => range,
        Verdict::Drop(_) => return,
    };
    assert!(
        range.start <= range.end && range.end <= buf_len,
        "{v:?} outside a buffer of {buf_len} bytes"
    );
}

// ---------------------------------------------------------------- L3: device -> peer

#[test]
fn encapsulation_is_byte_identical_to_the_kernels() {
    // Configured like the captured kernel devices (VNI, port, both VTEP MACs, all read
    // from the capture), weft's UDP payload for the inner packet is the kernel's, byte for
    // byte. Only the UDP source port and checksum (outside the payload) may differ.
    for (inner_name, outer_name) in KERNEL_CAPTURES {
        let kernel = kernel_datagram(outer_name);
        let inner = fixture(inner_name);
        let eth = ethernet::Frame::new_checked(&inner[..]).unwrap();
        let (our_mac, peer_mac) = (eth.src_addr(), eth.dst_addr());
        assert_eq!(eth.ethertype(), ETHERTYPE_IPV4);
        let packet = eth.payload().to_vec();
        let ip = ipv4::Packet::new_checked(&packet[..]).unwrap();
        let header = vxlan::Header::new_checked(&kernel.payload[..]).unwrap();
        assert!(header.has_vni_flag());
        let vni = header.vni();
        assert_eq!(
            (vni, kernel.dest.port()),
            (1, 8472),
            "flannel.1 as flanneld makes it"
        );
        let lease = Route {
            subnet: Cidr::containing(IpAddr::V4(ip.dst_addr()), 24).unwrap(),
            endpoint: kernel.dest,
            vtep_mac: Some(peer_mac),
        };
        let tables = [Arc::new(SubnetTable::new(1, &[lease]).unwrap())];
        let mut b = VxlanBackend::new(VxlanConfig {
            vnis: vec![l3_vni(vni, our_mac)],
            port: kernel.dest.port(),
            ..VxlanConfig::default()
        });
        let (v, buf) = from_device(&mut b, &tables, 0, &packet, 0);
        let Verdict::SendToPeer { dest, range, flow } = v else {
            panic!("{inner_name}: {v:?}")
        };
        assert_eq!(dest, kernel.dest, "{inner_name}: to the peer's endpoint");
        assert!(flow.is_some(), "a hashed source port, like the kernel's");
        assert_eq!(range, HEADROOM - L3_ENCAP_LEN..HEADROOM + packet.len());
        assert_eq!(
            &buf[range.clone()],
            &kernel.payload[..],
            "{inner_name}: weft's UDP payload differs from the kernel's"
        );
        // The TTL is the one the packet came out of the device with.
        let sent = ipv4::Packet::new_checked(&buf[HEADROOM..range.end]).unwrap();
        assert_eq!(sent.ttl(), ip.ttl());
        assert!(sent.verify_checksum());
    }
}

#[test]
fn encapsulation_puts_the_headers_in_the_headroom() {
    let tables = tables_a();
    let packet = udp_v4(A_POD, B_POD, (4000, 53), 100, true, 7);
    let (v, buf) = from_device(&mut backend_a(), &tables, 0, &packet, 0);
    let Verdict::SendToPeer { dest, range, flow } = v else {
        panic!("{v:?}")
    };
    assert_eq!(dest, endpoint(B_UNDERLAY));
    assert!(flow.is_some());
    assert_eq!(range, HEADROOM - 22..HEADROOM + 100);
    let out = &buf[range];
    assert_eq!(out[..8], HEADER_VNI1);
    assert_eq!(out[8..22], frame(MAC_B, MAC_A, ETHERTYPE_IPV4, &[])[..]);
    assert_eq!(
        &out[22..],
        &packet[..],
        "the inner packet, TTL and all, unchanged"
    );
    // Nothing before the headers was touched.
    assert!(buf[..HEADROOM - 22].iter().all(|&b| b == 0));
}

#[test]
fn ipv6_is_encapsulated_with_its_ethertype() {
    let tables = tables_a();
    let packet = udp_v6(A_POD6, B_POD6, (4000, 53), 120);
    let (v, buf) = from_device(&mut backend_a(), &tables, 0, &packet, 0);
    let Verdict::SendToPeer { dest, range, flow } = v else {
        panic!("{v:?}")
    };
    assert_eq!(dest, endpoint(B_UNDERLAY));
    assert!(flow.is_some());
    let out = &buf[range];
    assert_eq!(out[..8], HEADER_VNI1);
    assert_eq!(out[8..22], frame(MAC_B, MAC_A, ETHERTYPE_IPV6, &[])[..]);
    assert_eq!(&out[22..], &packet[..], "hop limit untouched");
}

#[test]
fn the_flow_hash_follows_the_flow() {
    let tables = tables_a();
    let mut b = backend_a();
    let mut flow_of = |packet: &[u8]| match from_device(&mut b, &tables, 0, packet, 0).0 {
        Verdict::SendToPeer { flow: Some(f), .. } => f,
        v => panic!("{v:?}"),
    };
    // Same addresses, protocol and ports; other ident, payload and length.
    let one = flow_of(&udp_v4(A_POD, B_POD, (4000, 53), 100, true, 1));
    let two = flow_of(&udp_v4(A_POD, B_POD, (4000, 53), 300, false, 2));
    assert_eq!(one, two, "one flow, one source port");
    let other_port = flow_of(&udp_v4(A_POD, B_POD, (4001, 53), 100, true, 1));
    let other_host = flow_of(&udp_v4(
        A_POD,
        Ipv4Addr::new(100, 96, 2, 8),
        (4000, 53),
        100,
        true,
        1,
    ));
    assert_ne!(one, other_port);
    assert_ne!(one, other_host);
    let six = flow_of(&udp_v6(A_POD6, B_POD6, (4000, 53), 100));
    assert_eq!(six, flow_of(&udp_v6(A_POD6, B_POD6, (4000, 53), 500)));
    assert_ne!(six, flow_of(&udp_v6(A_POD6, B_POD6, (4000, 54), 100)));
}

#[test]
fn bytes_after_the_ip_packet_are_not_sent() {
    let tables = tables_a();
    let packet = udp_v4(A_POD, B_POD, (4000, 53), 60, false, 1);
    let mut padded = packet.clone();
    padded.extend_from_slice(&[0xee; 5]);
    let (v, buf) = from_device(&mut backend_a(), &tables, 0, &padded, 0);
    let Verdict::SendToPeer { range, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(range, HEADROOM - 22..HEADROOM + packet.len());
    assert_eq!(&buf[HEADROOM..range.end], &packet[..]);
}

#[test]
fn no_route_answers_net_unreachable_into_the_device() {
    let tables = tables_a();
    let unrouted = Ipv4Addr::new(100, 96, 9, 9);
    let packet = udp_v4(A_POD, unrouted, (4000, 53), 100, false, 1);
    let (v, buf) = from_device(&mut backend_a(), &tables, 0, &packet, 0);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::NoRoute,
    } = v
    else {
        panic!("{v:?}")
    };
    let ip = ipv4::Packet::new_checked(&buf[range]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (unrouted, A_POD));
    assert_eq!(ip.protocol(), PROTO_ICMP);
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.code()),
        (icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_NET_UNREACHABLE)
    );
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.data(), &packet[..], "the whole offender is quoted");

    let unrouted6: Ipv6Addr = "fd00:100:96:9::9".parse().unwrap();
    let packet = udp_v6(A_POD6, unrouted6, (4000, 53), 100);
    let (v, buf) = from_device(&mut backend_a(), &tables, 0, &packet, 0);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::NoRoute,
    } = v
    else {
        panic!("{v:?}")
    };
    let ip = ipv6::Packet::new_checked(&buf[range]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (unrouted6, A_POD6));
    assert_eq!(ip.next_header(), PROTO_ICMPV6);
    let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.code()),
        (icmpv6::TYPE_DEST_UNREACHABLE, icmpv6::CODE_NO_ROUTE)
    );
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
}

#[test]
fn a_route_without_vtep_mac_is_dropped() {
    let packet = udp_v4(
        A_POD,
        Ipv4Addr::new(100, 96, 3, 7),
        (4000, 53),
        100,
        false,
        1,
    );
    let (v, buf) = from_device(&mut backend_a(), &tables_a(), 0, &packet, 0);
    assert_eq!(v, Verdict::Drop(DropReason::NoVtepMac));
    assert_eq!(buf, buffer(&packet), "nothing written");
}

/// The ICMP error of a TooBig verdict: (type, code, rest of header).
fn too_big_answer(v: &Verdict, buf: &[u8]) -> (u8, u8, u32) {
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::TooBig,
    } = v
    else {
        panic!("{v:?}")
    };
    let answer = &buf[range.clone()];
    if answer[0] >> 4 == 4 {
        let ip = ipv4::Packet::new_checked(answer).unwrap();
        let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        (icmp.msg_type(), icmp.code(), icmp.rest_of_header())
    } else {
        let ip = ipv6::Packet::new_checked(answer).unwrap();
        let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        (icmp.msg_type(), icmp.code(), icmp.rest_of_header())
    }
}

#[test]
fn too_big_with_df_answers_with_the_device_mtu() {
    let tables = tables_a();
    // The defaults: underlay MTU 1500, so 1472 bytes of UDP payload and a device MTU of
    // 1450 (underlay MTU - 50, as flannel sets flannel.1).
    let mut b = backend_a();
    assert_eq!(b.config().max_payload, 1472);
    let fits = udp_v4(A_POD, B_POD, (4000, 53), 1450, true, 1);
    let (v, _) = from_device(&mut b, &tables, 0, &fits, 0);
    assert!(
        matches!(v, Verdict::SendToPeer { ref range, .. } if range.len() == 1472),
        "{v:?}"
    );
    let over = udp_v4(A_POD, B_POD, (4000, 53), 1451, true, 1);
    let (v, buf) = from_device(&mut b, &tables, 0, &over, 0);
    assert_eq!(
        too_big_answer(&v, &buf),
        (
            icmpv4::TYPE_DEST_UNREACHABLE,
            icmpv4::CODE_FRAG_NEEDED,
            1450
        )
    );
    // IPv6 is never fragmented on the way.
    let fits6 = udp_v6(A_POD6, B_POD6, (4000, 53), 1450);
    assert!(matches!(
        from_device(&mut b, &tables, 0, &fits6, 0).0,
        Verdict::SendToPeer { .. }
    ));
    let over6 = udp_v6(A_POD6, B_POD6, (4000, 53), 1451);
    let (v, buf) = from_device(&mut b, &tables, 0, &over6, 0);
    assert_eq!(
        too_big_answer(&v, &buf),
        (icmpv6::TYPE_PACKET_TOO_BIG, 0, 1450)
    );

    // A narrow underlay: max_payload 1000, so room for 978 bytes of inner packet.
    let mut b = VxlanBackend::new(VxlanConfig {
        vnis: vec![l3_vni(VNI, MAC_A)],
        max_payload: 1000,
        ..VxlanConfig::default()
    });
    let fits = udp_v4(A_POD, B_POD, (4000, 53), 978, true, 1);
    assert!(matches!(
        from_device(&mut b, &tables, 0, &fits, 0).0,
        Verdict::SendToPeer { .. }
    ));
    let over = udp_v4(A_POD, B_POD, (4000, 53), 1200, true, 1);
    let (v, buf) = from_device(&mut b, &tables, 0, &over, 0);
    assert_eq!(
        too_big_answer(&v, &buf),
        (icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_FRAG_NEEDED, 978),
        "MTU = max_payload - 22"
    );
    // Without DF it goes out; the underlay fragments the outer datagram.
    let no_df = udp_v4(A_POD, B_POD, (4000, 53), 1200, false, 1);
    let (v, _) = from_device(&mut b, &tables, 0, &no_df, 0);
    assert!(
        matches!(v, Verdict::SendToPeer { ref range, .. } if range.len() == 1222),
        "{v:?}"
    );
    // IPv6: packet too big, never below the IPv6 minimum MTU.
    let over6 = udp_v6(A_POD6, B_POD6, (4000, 53), 1400);
    let (v, buf) = from_device(&mut b, &tables, 0, &over6, 0);
    assert_eq!(
        too_big_answer(&v, &buf),
        (icmpv6::TYPE_PACKET_TOO_BIG, 0, 1280)
    );
}

#[test]
fn ipv6_packets_up_to_the_minimum_mtu_are_always_carried() {
    // RFC 8200 section 5: a link that cannot carry 1280-byte packets must fragment and
    // reassemble below IPv6. With room for 978 bytes, a 1200-byte IPv6 packet gets a
    // packet too big with MTU 1280 back: the sender is already below it, resends the same
    // packet, and the path is a black hole. It should go out (the underlay fragments the
    // outer datagram, as for IPv4 without DF).
    let mut b = VxlanBackend::new(VxlanConfig {
        vnis: vec![l3_vni(VNI, MAC_A)],
        max_payload: 1000,
        ..VxlanConfig::default()
    });
    let packet = udp_v6(A_POD6, B_POD6, (4000, 53), 1200);
    let (v, _) = from_device(&mut b, &tables_a(), 0, &packet, 0);
    assert!(matches!(v, Verdict::SendToPeer { .. }), "{v:?}");
}

#[test]
fn without_headroom_nothing_is_written() {
    let tables = tables_a();
    let packet = udp_v4(A_POD, B_POD, (4000, 53), 100, false, 1);
    // Exactly the 22 bytes the headers need: fine.
    let mut buf = vec![0u8; 22 + packet.len()];
    buf[22..].copy_from_slice(&packet);
    let v = backend_a().handle_device_packet(
        &tables,
        0,
        PacketBuf::new(&mut buf, 22, packet.len()).unwrap(),
        0,
    );
    assert!(
        matches!(v, Verdict::SendToPeer { ref range, .. } if *range == (0..buf.len())),
        "{v:?}"
    );
    assert_eq!(buf[..8], HEADER_VNI1);
    // One byte less.
    let mut buf = vec![0u8; 21 + packet.len()];
    buf[21..].copy_from_slice(&packet);
    let before = buf.clone();
    let v = backend_a().handle_device_packet(
        &tables,
        0,
        PacketBuf::new(&mut buf, 21, packet.len()).unwrap(),
        0,
    );
    assert_eq!(v, Verdict::Drop(DropReason::Malformed));
    assert_eq!(buf, before);
    // An ICMP error needs more headroom still: without it, the drop is silent.
    let unrouted = udp_v4(
        A_POD,
        Ipv4Addr::new(100, 96, 9, 9),
        (4000, 53),
        100,
        false,
        1,
    );
    let mut buf = vec![0u8; 22 + unrouted.len()];
    buf[22..].copy_from_slice(&unrouted);
    let v = backend_a().handle_device_packet(
        &tables,
        0,
        PacketBuf::new(&mut buf, 22, unrouted.len()).unwrap(),
        0,
    );
    assert_eq!(v, Verdict::Drop(DropReason::NoRoute));
}

#[test]
fn malformed_device_packets_are_dropped() {
    let tables = tables_a();
    let mut b = backend_a();
    let packet = udp_v4(A_POD, B_POD, (4000, 53), 100, false, 1);
    for junk in [
        &b""[..],
        b"\x45",
        b"\x60\x00\x00\x00",
        &[0u8; 40][..],
        &packet[..99],
    ] {
        assert_eq!(
            from_device(&mut b, &tables, 0, junk, 0).0,
            Verdict::Drop(DropReason::Malformed),
            "{junk:02x?}"
        );
    }
    // A length or start past the buffer.
    let mut buf = buffer(&packet);
    // Such a packet cannot even be handed over: the bounds are checked once, here.
    assert!(PacketBuf::new(&mut buf, HEADROOM, usize::MAX).is_none());
    let len = buf.len();
    // Such a packet cannot even be handed over: the bounds are checked once, here.
    assert!(PacketBuf::new(&mut buf, len + 1, 0).is_none());
    // A device (VNI index) the backend does not have, or one without a table.
    assert_eq!(
        from_device(&mut b, &tables, 1, &packet, 0).0,
        Verdict::Drop(DropReason::UnknownVni)
    );
    assert_eq!(
        from_device(&mut b, &[], 0, &packet, 0).0,
        Verdict::Drop(DropReason::UnknownVni)
    );
}

// ---------------------------------------------------------------- L3: peer -> device

#[test]
fn kernel_datagrams_are_decapsulated_to_the_inner_packet() {
    // Each direction of the capture, received by weft configured as the receiving kernel
    // device was: from the sending VTEP's address (and its hashed source port).
    for (inner_name, outer_name) in KERNEL_CAPTURES {
        let kernel = kernel_datagram(outer_name);
        let inner = fixture(inner_name);
        let eth = ethernet::Frame::new_checked(&inner[..]).unwrap();
        let (peer_mac, our_mac) = (eth.src_addr(), eth.dst_addr());
        let packet = eth.payload().to_vec();
        let ip = ipv4::Packet::new_checked(&packet[..]).unwrap();
        let lease = Route {
            subnet: Cidr::containing(IpAddr::V4(ip.src_addr()), 24).unwrap(),
            endpoint: SocketAddr::new(kernel.source.ip(), kernel.dest.port()),
            vtep_mac: Some(peer_mac),
        };
        assert_ne!(kernel.source.port(), kernel.dest.port());
        let tables = [Arc::new(SubnetTable::new(1, &[lease]).unwrap())];
        let vni = vxlan::Header::new_checked(&kernel.payload[..])
            .unwrap()
            .vni();
        let mut b = backend(vec![l3_vni(vni, our_mac)]);
        let (v, buf) = from_peer(&mut b, &tables, kernel.source, &kernel.payload, 0);
        let range = HEADROOM + 22..HEADROOM + kernel.payload.len();
        assert_eq!(
            v,
            Verdict::DeliverToDevice {
                device: 0,
                range: range.clone()
            },
            "{outer_name}"
        );
        assert_eq!(
            &buf[range],
            &packet[..],
            "{outer_name}: exactly the inner packet"
        );
    }
}

#[test]
fn decapsulation_drops_name_the_reason() {
    let tables = tables_a();
    let mut b = backend_a();
    let good = kernel_reply_payload();
    let from_b = from_port(B_UNDERLAY, 41986);
    let mut run = |payload: &[u8]| from_peer(&mut b, &tables, from_b, payload, 0).0;
    assert!(matches!(
        run(&good),
        Verdict::DeliverToDevice { device: 0, .. }
    ));
    let edit = |at: usize, bytes: &[u8]| {
        let mut p = good.clone();
        p[at..at + bytes.len()].copy_from_slice(bytes);
        p
    };
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("VNI 2", edit(4, &[0, 0, 2]), DropReason::UnknownVni),
        ("VNI 0x010001", edit(4, &[1, 0, 1]), DropReason::UnknownVni),
        ("no flags", edit(0, &[0]), DropReason::VxlanNoIFlag),
        (
            "every flag but I",
            edit(0, &[0xf7]),
            DropReason::VxlanNoIFlag,
        ),
        (
            "our own source MAC",
            edit(8 + 6, &MAC_A.0),
            DropReason::OwnSourceMac,
        ),
        (
            "to another VTEP",
            edit(8, &MAC_C.0),
            DropReason::WrongDestMac,
        ),
        (
            "to broadcast",
            edit(8, &[0xff; 6]),
            DropReason::WrongDestMac,
        ),
        (
            "LLDP",
            edit(8 + 12, &[0x88, 0xcc]),
            DropReason::UnsupportedEthertype,
        ),
        (
            "VLAN tag",
            edit(8 + 12, &[0x81, 0x00]),
            DropReason::UnsupportedEthertype,
        ),
        (
            "IPv4 as IPv6",
            edit(8 + 12, &[0x86, 0xdd]),
            DropReason::Malformed,
        ),
        ("not IP", edit(8 + 14, &[0x55]), DropReason::Malformed),
        (
            "IP header cut",
            good[..8 + 14 + 19].to_vec(),
            DropReason::Malformed,
        ),
        (
            "IP packet cut",
            good[..good.len() - 1].to_vec(),
            DropReason::Malformed,
        ),
        (
            "no IP packet",
            good[..8 + 14].to_vec(),
            DropReason::Malformed,
        ),
    ];
    for (what, payload, reason) in &cases {
        assert_eq!(run(payload), Verdict::Drop(*reason), "{what}");
    }
    // Shorter than the VXLAN header plus an Ethernet header, at every length.
    for n in 0..vxlan::HEADER_LEN + ethernet::HEADER_LEN {
        assert_eq!(
            run(&good[..n]),
            Verdict::Drop(DropReason::VxlanTooShort),
            "truncated to {n}"
        );
    }
    // From an underlay address that is not a peer.
    assert_eq!(
        from_peer(&mut b, &tables, from_port(STRANGER, 41986), &good, 0).0,
        Verdict::Drop(DropReason::UnknownPeer)
    );
    // A length past the buffer.
    let mut buf = buffer(&good);
    // Such a packet cannot even be handed over: the bounds are checked once, here.
    assert!(PacketBuf::new(&mut buf, HEADROOM, usize::MAX).is_none());
    let len = buf.len();
    // Such a packet cannot even be handed over: the bounds are checked once, here.
    assert!(PacketBuf::new(&mut buf, len - 10, 22).is_none());
    // A VNI the backend serves but no table for it.
    assert_eq!(
        from_peer(&mut b, &[], from_b, &good, 0).0,
        Verdict::Drop(DropReason::UnknownVni)
    );
}

#[test]
fn inner_sources_outside_the_senders_subnets_are_spoofed() {
    let tables = tables_a();
    let mut b = backend_a();
    let from_b = from_port(B_UNDERLAY, 50000);
    for src in [
        Ipv4Addr::new(100, 96, 3, 7), // C's
        A_POD,                        // our own
        Ipv4Addr::new(10, 0, 0, 1),   // nobody's
    ] {
        let packet = udp_v4(src, A_POD, (53, 4000), 100, false, 1);
        let payload = l3_datagram_from_b(&packet, ETHERTYPE_IPV4);
        assert_eq!(
            from_peer(&mut b, &tables, from_b, &payload, 0).0,
            Verdict::Drop(DropReason::SpoofedSource),
            "{src}"
        );
    }
    let packet = udp_v6("fd00:100:96:3::7".parse().unwrap(), A_POD6, (53, 4000), 100);
    let payload = l3_datagram_from_b(&packet, ETHERTYPE_IPV6);
    assert_eq!(
        from_peer(&mut b, &tables, from_b, &payload, 0).0,
        Verdict::Drop(DropReason::SpoofedSource)
    );
    // The same packet from C's own pod, but sent by B's VTEP: still spoofed.
    let packet = udp_v4(
        Ipv4Addr::new(100, 96, 3, 7),
        A_POD,
        (53, 4000),
        100,
        false,
        1,
    );
    let payload = l3_datagram_from_b(&packet, ETHERTYPE_IPV4);
    assert_eq!(
        from_peer(&mut b, &tables, from_b, &payload, 0).0,
        Verdict::Drop(DropReason::SpoofedSource)
    );
}

#[test]
fn validation_can_be_turned_off() {
    let tables = tables_a();
    let spoofed = udp_v4(Ipv4Addr::new(10, 0, 0, 1), A_POD, (53, 4000), 100, false, 1);
    let payload = l3_datagram_from_b(&spoofed, ETHERTYPE_IPV4);
    let stranger = from_port(STRANGER, 50000);
    let mut open = VxlanBackend::new(VxlanConfig {
        vnis: vec![l3_vni(VNI, MAC_A)],
        check_peer: false,
        check_inner_source: false,
        ..VxlanConfig::default()
    });
    let (v, buf) = from_peer(&mut open, &tables, stranger, &payload, 0);
    let Verdict::DeliverToDevice { device: 0, range } = v else {
        panic!("{v:?}")
    };
    assert_eq!(&buf[range], &spoofed[..]);
    // Only the peer check off: a stranger owns no subnet, so its packets are spoofed.
    let mut half = VxlanBackend::new(VxlanConfig {
        vnis: vec![l3_vni(VNI, MAC_A)],
        check_peer: false,
        ..VxlanConfig::default()
    });
    let good = udp_v4(B_POD, A_POD, (53, 4000), 100, false, 1);
    let payload = l3_datagram_from_b(&good, ETHERTYPE_IPV4);
    assert_eq!(
        from_peer(&mut half, &tables, stranger, &payload, 0).0,
        Verdict::Drop(DropReason::SpoofedSource)
    );
}

#[test]
fn reserved_bits_are_ignored_on_receive() {
    let tables = tables_a();
    let mut payload = kernel_reply_payload();
    // Every reserved bit set: the flags byte but for I, the 24 bits after it and the
    // last byte.
    payload[0] = 0xff;
    payload[1..4].fill(0xff);
    payload[7] = 0xff;
    let (v, buf) = from_peer(&mut backend_a(), &tables, endpoint(B_UNDERLAY), &payload, 0);
    let Verdict::DeliverToDevice { device: 0, range } = v else {
        panic!("{v:?}")
    };
    assert_eq!(&buf[range], &fixture("vxlan/inner-echo-reply.hex")[14..]);
}

#[test]
fn ethernet_padding_is_not_delivered() {
    // A 28-byte IPv4 packet in a frame padded to the 60-byte Ethernet minimum.
    let packet = udp_v4(B_POD, A_POD, (53, 4000), 28, false, 1);
    let mut padded = packet.clone();
    padded.resize(46, 0);
    let payload = l3_datagram_from_b(&padded, ETHERTYPE_IPV4);
    let (v, buf) = from_peer(
        &mut backend_a(),
        &tables_a(),
        endpoint(B_UNDERLAY),
        &payload,
        0,
    );
    let start = HEADROOM + 22;
    assert_eq!(
        v,
        Verdict::DeliverToDevice {
            device: 0,
            range: start..start + 28
        }
    );
    assert_eq!(&buf[start..start + 28], &packet[..]);
}

#[test]
fn ipv6_inner_packets_are_delivered() {
    let packet = udp_v6(B_POD6, A_POD6, (53, 4000), 100);
    let payload = l3_datagram_from_b(&packet, ETHERTYPE_IPV6);
    let (v, buf) = from_peer(
        &mut backend_a(),
        &tables_a(),
        from_port(B_UNDERLAY, 1),
        &payload,
        0,
    );
    let Verdict::DeliverToDevice { device: 0, range } = v else {
        panic!("{v:?}")
    };
    assert_eq!(&buf[range], &packet[..], "hop limit untouched");
    // An IPv6 packet under the IPv4 ethertype is malformed.
    let payload = l3_datagram_from_b(&packet, ETHERTYPE_IPV4);
    assert_eq!(
        from_peer(
            &mut backend_a(),
            &tables_a(),
            endpoint(B_UNDERLAY),
            &payload,
            0
        )
        .0,
        Verdict::Drop(DropReason::Malformed)
    );
}

// ---------------------------------------------------------------- L3: ARP and ND

/// An ARP request from `sender` for `target`, broadcast, built with the wire `Repr`s.
fn arp_request(sender_mac: EthernetAddress, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut packet = [0u8; arp::PACKET_LEN];
    arp::Repr {
        operation: arp::OP_REQUEST,
        sender_hardware_addr: sender_mac,
        sender_protocol_addr: sender_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target_ip,
    }
    .emit(&mut arp::Packet::new_unchecked(&mut packet[..]));
    frame(
        EthernetAddress::BROADCAST,
        sender_mac,
        ETHERTYPE_ARP,
        &packet,
    )
}

#[test]
fn arp_request_for_our_vtep_address_is_answered_through_the_tunnel() {
    let tables = tables_a();
    let request = arp_request(MAC_B, B_OVERLAY, A_OVERLAY);
    let mut payload = vxlan_payload(VNI, &request);
    payload[1] = 0x5a; // reserved bits of the request are not echoed
                       // From B's hashed source port: the answer goes to the VXLAN port.
    let (v, buf) = from_peer(
        &mut backend_a(),
        &tables,
        from_port(B_UNDERLAY, 41986),
        &payload,
        0,
    );
    let range = HEADROOM..HEADROOM + 8 + 42;
    assert_eq!(
        v,
        Verdict::ReplyToPeer {
            dest: endpoint(B_UNDERLAY),
            range: range.clone(),
            cause: None
        }
    );
    assert_eq!(v.drop_reason(), None);
    let out = &buf[range];
    assert_eq!(out[..8], HEADER_VNI1);
    let eth = ethernet::Frame::new_checked(&out[8..]).unwrap();
    assert_eq!(
        (eth.dst_addr(), eth.src_addr(), eth.ethertype()),
        (MAC_B, MAC_A, ETHERTYPE_ARP)
    );
    let reply = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(
        reply,
        arp::Repr {
            operation: arp::OP_REPLY,
            sender_hardware_addr: MAC_A,
            sender_protocol_addr: A_OVERLAY,
            target_hardware_addr: MAC_B,
            target_protocol_addr: B_OVERLAY,
        }
    );
    // A request padded to the Ethernet minimum is answered the same way.
    let mut padded = request.clone();
    padded.resize(60, 0);
    let (v, buf2) = from_peer(
        &mut backend_a(),
        &tables,
        endpoint(B_UNDERLAY),
        &vxlan_payload(VNI, &padded),
        0,
    );
    let Verdict::ReplyToPeer { range, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(&buf2[range], out);
}

#[test]
fn answers_go_to_the_configured_port_with_the_vni_of_the_request() {
    let tables = tables_a();
    let vni = 0x12_3456;
    let mut b = VxlanBackend::new(VxlanConfig {
        vnis: vec![l3_vni(vni, MAC_A)],
        port: vxlan::PORT_IANA,
        ..VxlanConfig::default()
    });
    let payload = vxlan_payload(vni, &arp_request(MAC_B, B_OVERLAY, A_OVERLAY));
    let (v, buf) = from_peer(&mut b, &tables, from_port(B_UNDERLAY, 8472), &payload, 0);
    let Verdict::ReplyToPeer {
        dest,
        range,
        cause: None,
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(dest, SocketAddr::new(IpAddr::V4(B_UNDERLAY), 4789));
    assert_eq!(buf[range][..8], [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
}

#[test]
fn arp_and_nd_answers_equal_the_kernels() {
    // Weft standing in for the kernel at 198.18.0.2 of fixtures/neigh (same MAC, same
    // addresses) answers the captured requests with the kernel's own answers, byte for byte.
    let kernel_mac = EthernetAddress([0x02, 0, 0xc6, 0x12, 0, 0x02]);
    let mut b = backend(vec![VniConfig {
        local_v4: Some(Ipv4Addr::new(198, 18, 0, 2)),
        local_v6: Some("fd00:198:18::2".parse().unwrap()),
        ..l3_vni(VNI, kernel_mac)
    }]);
    // The requester's VTEP is a peer (its lease is 100.96.1.0/24).
    let tables = [Arc::new(
        SubnetTable::new(1, &[route("100.96.1.0/24", A_UNDERLAY, Some(MAC_A))]).unwrap(),
    )];
    for (request, answer) in [
        ("neigh/arp-request.hex", "neigh/arp-reply.hex"),
        ("neigh/ns.hex", "neigh/na.hex"),
        ("neigh/ns-dad.hex", "neigh/na-dad.hex"),
    ] {
        let payload = vxlan_payload(VNI, &fixture(request));
        let (v, buf) = from_peer(&mut b, &tables, from_port(A_UNDERLAY, 33333), &payload, 0);
        let Verdict::ReplyToPeer {
            dest,
            range,
            cause: None,
        } = v
        else {
            panic!("{request}: {v:?}")
        };
        assert_eq!(dest, endpoint(A_UNDERLAY), "{request}");
        assert_eq!(buf[range.clone()][..8], HEADER_VNI1, "{request}");
        assert_eq!(
            &buf[range.start + 8..range.end],
            &fixture(answer)[..],
            "{request}"
        );
    }
}

/// A neighbour solicitation from B's VTEP (MAC_B, fd00:100:96:2::) for `target`, sent to
/// its solicited-node group: the kernel's captured solicitation (fixtures/neigh/ns.hex)
/// with the addresses replaced and the checksum recomputed.
fn solicitation_for(target: Ipv6Addr) -> Vec<u8> {
    let mut f = fixture("neigh/ns.hex");
    // Ethernet 14 | IPv6 40 | NS: type, code, checksum, reserved, target 16 | SLLA option 8.
    assert_eq!(f.len(), 86);
    assert_eq!(
        (f[54], f[78], f[79]),
        (icmpv6::TYPE_NEIGHBOR_SOLICITATION, 1, 1)
    );
    let t = target.octets();
    let mut group = [0u8; 16];
    group[..2].copy_from_slice(&[0xff, 0x02]);
    group[11..13].copy_from_slice(&[0x01, 0xff]);
    group[13..].copy_from_slice(&t[13..]);
    f[..6].copy_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    f[6..12].copy_from_slice(&MAC_B.0);
    f[22..38].copy_from_slice(&B_OVERLAY6.octets());
    f[38..54].copy_from_slice(&group);
    f[62..78].copy_from_slice(&t);
    f[80..86].copy_from_slice(&MAC_B.0);
    icmpv6::Packet::new_checked(&mut f[54..])
        .unwrap()
        .fill_checksum(&B_OVERLAY6, &Ipv6Addr::from(group));
    f
}

#[test]
fn neighbour_solicitation_for_our_vtep_address_is_answered_through_the_tunnel() {
    let solicitation = solicitation_for(A_OVERLAY6);
    let payload = vxlan_payload(VNI, &solicitation);
    let (v, buf) = from_peer(
        &mut backend_a(),
        &tables_a(),
        from_port(B_UNDERLAY, 41986),
        &payload,
        0,
    );
    let range = HEADROOM..HEADROOM + 8 + 86;
    assert_eq!(
        v,
        Verdict::ReplyToPeer {
            dest: endpoint(B_UNDERLAY),
            range: range.clone(),
            cause: None
        }
    );
    let out = &buf[range];
    assert_eq!(out[..8], HEADER_VNI1);
    let eth = ethernet::Frame::new_checked(&out[8..]).unwrap();
    assert_eq!(
        (eth.dst_addr(), eth.src_addr(), eth.ethertype()),
        (MAC_B, MAC_A, ETHERTYPE_IPV6)
    );
    let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (A_OVERLAY6, B_OVERLAY6));
    assert_eq!((ip.next_header(), ip.hop_limit()), (PROTO_ICMPV6, 255));
    let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(&A_OVERLAY6, &B_OVERLAY6));
    assert_eq!(
        (icmp.msg_type(), icmp.code(), icmp.rest_of_header()),
        (icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT, 0, 0x6000_0000),
        "solicited, override"
    );
    let data = icmp.data();
    assert_eq!(&data[..16], &A_OVERLAY6.octets());
    assert_eq!(&data[16..18], &[2, 1], "target link-layer address option");
    assert_eq!(&data[18..24], &MAC_A.0);
}

#[test]
fn neighbour_requests_not_for_us_are_not_answered() {
    let tables = tables_a();
    let from_b = endpoint(B_UNDERLAY);
    let not_answered = |v: &Verdict| matches!(v, Verdict::Drop(_));
    // ARP for another address (broadcast, so not ours either).
    let other = vxlan_payload(
        VNI,
        &arp_request(MAC_B, B_OVERLAY, Ipv4Addr::new(100, 96, 1, 77)),
    );
    let v = from_peer(&mut backend_a(), &tables, from_b, &other, 0).0;
    assert!(not_answered(&v), "{v:?}");
    // Our address, but no IPv4 address configured.
    let ours = vxlan_payload(VNI, &arp_request(MAC_B, B_OVERLAY, A_OVERLAY));
    let mut mute = backend(vec![VniConfig {
        local_v4: None,
        local_v6: None,
        ..l3_vni(VNI, MAC_A)
    }]);
    let v = from_peer(&mut mute, &tables, from_b, &ours, 0).0;
    assert!(not_answered(&v), "{v:?}");
    let ns = vxlan_payload(VNI, &solicitation_for(A_OVERLAY6));
    let v = from_peer(&mut mute, &tables, from_b, &ns, 0).0;
    assert!(not_answered(&v), "{v:?}");
    // A solicitation for another address.
    let ns = vxlan_payload(VNI, &solicitation_for("fd00:100:96:1::77".parse().unwrap()));
    let v = from_peer(&mut backend_a(), &tables, from_b, &ns, 0).0;
    assert!(not_answered(&v), "{v:?}");
    // A request for our address from a stranger is not answered either.
    let v = from_peer(&mut backend_a(), &tables, endpoint(STRANGER), &ours, 0).0;
    assert_eq!(v, Verdict::Drop(DropReason::UnknownPeer));
    // Nor one that claims to come from our own MAC.
    let own = vxlan_payload(VNI, &arp_request(MAC_A, B_OVERLAY, A_OVERLAY));
    let v = from_peer(&mut backend_a(), &tables, from_b, &own, 0).0;
    assert_eq!(v, Verdict::Drop(DropReason::OwnSourceMac));
}

#[test]
fn an_advertisement_longer_than_the_solicitation_needs_room() {
    // A solicitation without options (78 bytes) is answered with 86: with room after it
    // in the buffer it is answered, without it nothing is written.
    let tables = tables_a();
    let from_b = endpoint(B_UNDERLAY);
    let mut bare = solicitation_for(A_OVERLAY6);
    bare.truncate(78);
    ipv6::Packet::new_unchecked(&mut bare[14..]).set_payload_len(24);
    let group = ipv6::Packet::new_checked(&bare[14..]).unwrap().dst_addr();
    icmpv6::Packet::new_checked(&mut bare[54..])
        .unwrap()
        .fill_checksum(&B_OVERLAY6, &group);
    let payload = vxlan_payload(VNI, &bare);
    let (v, buf) = from_peer(&mut backend_a(), &tables, from_b, &payload, 0);
    let Verdict::ReplyToPeer {
        dest,
        range,
        cause: None,
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(dest, from_b);
    assert_eq!(range, HEADROOM..HEADROOM + 8 + 86);
    let eth = ethernet::Frame::new_checked(&buf[range.start + 8..range.end]).unwrap();
    assert_eq!(eth.dst_addr(), MAC_B, "no option: to the frame's source");
    let mut exact = payload.clone();
    let v = backend_a().handle_datagram(
        &tables,
        from_b,
        PacketBuf::new(&mut exact, 0, payload.len()).unwrap(),
        0,
    );
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    assert_eq!(exact, payload, "nothing written");
}

// ---------------------------------------------------------------- L2

/// The L2 VNI's table: B and C are its VTEPs; MAC_STATIC sits behind C.
fn l2_table() -> Arc<SubnetTable> {
    let spec = TableSpec {
        routes: Vec::new(),
        vteps: vec![endpoint(B_UNDERLAY), endpoint(C_UNDERLAY)],
        fdb: vec![(MAC_STATIC, endpoint(C_UNDERLAY))],
    };
    Arc::new(SubnetTable::build(1, &spec).unwrap())
}

fn l2_backend(learning: bool, fdb: FdbConfig) -> VxlanBackend {
    VxlanBackend::new(VxlanConfig {
        vnis: vec![l2_vni(VNI, MAC_TAP, fdb)],
        learning,
        ..VxlanConfig::default()
    })
}

/// A frame of `len` bytes (at least 42) carrying an IPv4 UDP packet.
fn l2_frame(dst: EthernetAddress, src: EthernetAddress, len: usize) -> Vec<u8> {
    let packet = udp_v4(
        A_POD,
        B_POD,
        (4000, 53),
        len - ethernet::HEADER_LEN,
        false,
        1,
    );
    frame(dst, src, ETHERTYPE_IPV4, &packet)
}

/// Where an L2 verdict sends the frame: `Some(dest)` for one VTEP, `None` for a flood of
/// device 0. Checks the VXLAN header and the frame behind it.
fn l2_destination(v: &Verdict, buf: &[u8], sent: &[u8]) -> Option<SocketAddr> {
    let (dest, range, flow) = match v {
        Verdict::SendToPeer { dest, range, flow } => (Some(*dest), range, flow),
        Verdict::Flood {
            device: 0,
            range,
            flow,
        } => (None, range, flow),
        _ => panic!("{v:?}"),
    };
    assert!(flow.is_some(), "{v:?}");
    assert_eq!(*range, HEADROOM - 8..HEADROOM + sent.len());
    assert_eq!(buf[range.start..HEADROOM], HEADER_VNI1);
    assert_eq!(
        &buf[HEADROOM..range.end],
        sent,
        "the frame itself is unchanged"
    );
    dest
}

/// Sends a frame to `dst` from the TAP at `now_ms`; returns where it went.
fn l2_send(
    b: &mut VxlanBackend,
    tables: &[Arc<SubnetTable>],
    dst: EthernetAddress,
    now_ms: u64,
) -> Option<SocketAddr> {
    let sent = l2_frame(dst, MAC_TAP, 100);
    let (v, buf) = from_device(b, tables, 0, &sent, now_ms);
    l2_destination(&v, &buf, &sent)
}

/// Receives a frame from `src_mac` behind the VTEP at `vtep` at `now_ms`; returns the verdict.
fn l2_receive(
    b: &mut VxlanBackend,
    tables: &[Arc<SubnetTable>],
    vtep: SocketAddr,
    src_mac: EthernetAddress,
    now_ms: u64,
) -> Verdict {
    let frame = l2_frame(MAC_TAP, src_mac, 100);
    let (v, buf) = from_peer(b, tables, vtep, &vxlan_payload(VNI, &frame), now_ms);
    if let Verdict::DeliverToDevice { range, .. } = &v {
        assert_eq!(&buf[range.clone()], &frame[..], "the whole inner frame");
    }
    v
}

#[test]
fn l2_broadcast_multicast_and_unknown_unicast_are_flooded() {
    let tables = [l2_table()];
    let mut b = l2_backend(true, FdbConfig::default());
    for dst in [
        MAC_BEHIND_B,                                    // unknown unicast
        EthernetAddress::BROADCAST,                      // broadcast
        EthernetAddress([0x01, 0, 0x5e, 0, 0, 0x01]),    // IPv4 multicast
        EthernetAddress([0x33, 0x33, 0xff, 0, 0, 0x01]), // IPv6 multicast
    ] {
        assert_eq!(l2_send(&mut b, &tables, dst, 0), None, "{dst} is flooded");
    }
    // The flood carries a flow hash like any frame, the same for the same flow.
    let sent = l2_frame(EthernetAddress::BROADCAST, MAC_TAP, 100);
    let flow = |b: &mut VxlanBackend| match from_device(b, &tables, 0, &sent, 0).0 {
        Verdict::Flood { flow, .. } => flow,
        v => panic!("{v:?}"),
    };
    assert_eq!(flow(&mut b), flow(&mut b));
}

#[test]
fn l2_learns_the_vtep_of_a_source_mac() {
    let tables = [l2_table()];
    let mut b = l2_backend(true, FdbConfig::default());
    assert_eq!(l2_send(&mut b, &tables, MAC_BEHIND_B, 0), None);
    // B's VTEP sends from a hashed source port; the frame is delivered whole.
    let v = l2_receive(
        &mut b,
        &tables,
        from_port(B_UNDERLAY, 47000),
        MAC_BEHIND_B,
        10,
    );
    assert_eq!(
        v,
        Verdict::DeliverToDevice {
            device: 0,
            range: HEADROOM + 8..HEADROOM + 8 + 100
        }
    );
    assert_eq!(b.fdb(0).unwrap().len(), 1);
    // Now known: to B, at the VXLAN port.
    assert_eq!(
        l2_send(&mut b, &tables, MAC_BEHIND_B, 20),
        Some(endpoint(B_UNDERLAY))
    );
    // The machine moves behind C.
    l2_receive(
        &mut b,
        &tables,
        from_port(C_UNDERLAY, 47001),
        MAC_BEHIND_B,
        30,
    );
    assert_eq!(
        l2_send(&mut b, &tables, MAC_BEHIND_B, 40),
        Some(endpoint(C_UNDERLAY))
    );
    // Multicast and broadcast sources are never learned.
    for src in [
        EthernetAddress::BROADCAST,
        EthernetAddress([0x01, 0, 0x5e, 0, 0, 9]),
    ] {
        l2_receive(&mut b, &tables, endpoint(B_UNDERLAY), src, 50);
    }
    assert_eq!(b.fdb(0).unwrap().len(), 1);
}

#[test]
fn l2_static_fdb_entries_send_to_their_vtep() {
    let tables = [l2_table()];
    let mut b = l2_backend(true, FdbConfig::default());
    assert_eq!(
        l2_send(&mut b, &tables, MAC_STATIC, 0),
        Some(endpoint(C_UNDERLAY))
    );
    // They never age.
    assert_eq!(
        l2_send(&mut b, &tables, MAC_STATIC, 10_000_000),
        Some(endpoint(C_UNDERLAY))
    );
}

#[test]
fn l2_learning_does_not_move_a_static_entry() {
    // The kernel never migrates a permanent FDB entry (drivers/net/vxlan, vxlan_snoop:
    // "Don't migrate static entries, drop packets"; it drops the frame).
    let tables = [l2_table()];
    let mut b = l2_backend(true, FdbConfig::default());
    l2_receive(&mut b, &tables, endpoint(B_UNDERLAY), MAC_STATIC, 0);
    assert_eq!(
        l2_send(&mut b, &tables, MAC_STATIC, 1),
        Some(endpoint(C_UNDERLAY)),
        "B took over MAC_STATIC, which the configuration puts behind C"
    );
}

#[test]
fn l2_learned_entries_age_out() {
    let tables = [l2_table()];
    let fdb = FdbConfig {
        max_entries: 16,
        ageing_ms: 10_000,
    };
    let mut b = l2_backend(true, fdb);
    l2_receive(&mut b, &tables, endpoint(B_UNDERLAY), MAC_BEHIND_B, 1_000);
    assert_eq!(
        l2_send(&mut b, &tables, MAC_BEHIND_B, 10_999),
        Some(endpoint(B_UNDERLAY)),
        "alive until ageing_ms after it was learned"
    );
    assert_eq!(
        l2_send(&mut b, &tables, MAC_BEHIND_B, 11_000),
        None,
        "aged: flooded"
    );
    // Each received frame refreshes the entry.
    l2_receive(&mut b, &tables, endpoint(B_UNDERLAY), MAC_BEHIND_B, 20_000);
    l2_receive(&mut b, &tables, endpoint(B_UNDERLAY), MAC_BEHIND_B, 25_000);
    assert_eq!(
        l2_send(&mut b, &tables, MAC_BEHIND_B, 34_999),
        Some(endpoint(B_UNDERLAY))
    );
    // The periodic tick removes aged entries without a lookup.
    b.on_tick(34_999);
    assert_eq!(b.fdb(0).unwrap().len(), 1);
    b.on_tick(35_000);
    assert!(b.fdb(0).unwrap().is_empty());
    assert_eq!(l2_send(&mut b, &tables, MAC_BEHIND_B, 35_001), None);
}

#[test]
fn l2_learning_can_be_turned_off() {
    let tables = [l2_table()];
    let mut b = l2_backend(false, FdbConfig::default());
    let v = l2_receive(&mut b, &tables, endpoint(B_UNDERLAY), MAC_BEHIND_B, 0);
    assert!(
        matches!(v, Verdict::DeliverToDevice { device: 0, .. }),
        "{v:?}"
    );
    assert!(b.fdb(0).unwrap().is_empty());
    assert_eq!(l2_send(&mut b, &tables, MAC_BEHIND_B, 1), None);
    // Static entries still apply.
    assert_eq!(
        l2_send(&mut b, &tables, MAC_STATIC, 1),
        Some(endpoint(C_UNDERLAY))
    );
}

#[test]
fn l2_frames_too_big_for_the_underlay_are_dropped() {
    let tables = [l2_table()];
    let mut b = VxlanBackend::new(VxlanConfig {
        vnis: vec![l2_vni(VNI, MAC_TAP, FdbConfig::default())],
        max_payload: 1000,
        ..VxlanConfig::default()
    });
    let fits = l2_frame(EthernetAddress::BROADCAST, MAC_TAP, 992);
    let (v, buf) = from_device(&mut b, &tables, 0, &fits, 0);
    assert_eq!(l2_destination(&v, &buf, &fits), None);
    let over = l2_frame(EthernetAddress::BROADCAST, MAC_TAP, 993);
    let (v, buf) = from_device(&mut b, &tables, 0, &over, 0);
    assert_eq!(v, Verdict::Drop(DropReason::TooBig));
    assert_eq!(buf, buffer(&over), "nothing written");
}

#[test]
fn l2_receive_drops_name_the_reason() {
    let tables = [l2_table()];
    let mut b = l2_backend(true, FdbConfig::default());
    // Our own MAC as the source: dropped, and not learned.
    assert_eq!(
        l2_receive(&mut b, &tables, endpoint(B_UNDERLAY), MAC_TAP, 0),
        Verdict::Drop(DropReason::OwnSourceMac)
    );
    // From an address that is no VTEP of the VNI: dropped, and not learned.
    assert_eq!(
        l2_receive(&mut b, &tables, endpoint(STRANGER), MAC_BEHIND_B, 0),
        Verdict::Drop(DropReason::UnknownPeer)
    );
    assert!(b.fdb(0).unwrap().is_empty());
    let good = vxlan_payload(VNI, &l2_frame(MAC_TAP, MAC_BEHIND_B, 100));
    for n in 0..22 {
        assert_eq!(
            from_peer(&mut b, &tables, endpoint(B_UNDERLAY), &good[..n], 0).0,
            Verdict::Drop(DropReason::VxlanTooShort),
            "truncated to {n}"
        );
    }
    let mut no_flag = good.clone();
    no_flag[0] = 0;
    assert_eq!(
        from_peer(&mut b, &tables, endpoint(B_UNDERLAY), &no_flag, 0).0,
        Verdict::Drop(DropReason::VxlanNoIFlag)
    );
    let mut other_vni = good.clone();
    other_vni[6] = 2;
    assert_eq!(
        from_peer(&mut b, &tables, endpoint(B_UNDERLAY), &other_vni, 0).0,
        Verdict::Drop(DropReason::UnknownVni)
    );
    assert!(b.fdb(0).unwrap().is_empty());
    // The bare Ethernet header is a frame (the bridge judges it).
    let (v, _) = from_peer(&mut b, &tables, endpoint(B_UNDERLAY), &good[..22], 0);
    assert!(
        matches!(v, Verdict::DeliverToDevice { ref range, .. } if range.len() == 14),
        "{v:?}"
    );
}

#[test]
fn l2_malformed_device_frames_and_missing_headroom() {
    let tables = [l2_table()];
    let mut b = l2_backend(true, FdbConfig::default());
    for n in 0..ethernet::HEADER_LEN {
        assert_eq!(
            from_device(&mut b, &tables, 0, &[0xff; 14][..n], 0).0,
            Verdict::Drop(DropReason::Malformed),
            "{n} bytes"
        );
    }
    let sent = l2_frame(EthernetAddress::BROADCAST, MAC_TAP, 100);
    // Exactly the 8 bytes of the VXLAN header in front: fine; 7: nothing written.
    let mut buf = vec![0u8; 8 + sent.len()];
    buf[8..].copy_from_slice(&sent);
    let v = b.handle_device_packet(
        &tables,
        0,
        PacketBuf::new(&mut buf, 8, sent.len()).unwrap(),
        0,
    );
    assert!(
        matches!(v, Verdict::Flood { ref range, .. } if *range == (0..buf.len())),
        "{v:?}"
    );
    let mut buf = vec![0u8; 7 + sent.len()];
    buf[7..].copy_from_slice(&sent);
    let before = buf.clone();
    let v = b.handle_device_packet(
        &tables,
        0,
        PacketBuf::new(&mut buf, 7, sent.len()).unwrap(),
        0,
    );
    assert_eq!(v, Verdict::Drop(DropReason::Malformed));
    assert_eq!(buf, before);
}

#[test]
fn two_vnis_are_two_devices() {
    const MAC_TAP2: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0a, 0x02]);
    let tables = [l2_table(), l2_table()];
    let mut b = VxlanBackend::new(VxlanConfig {
        vnis: vec![
            l2_vni(1, MAC_TAP, FdbConfig::default()),
            l2_vni(2, MAC_TAP2, FdbConfig::default()),
        ],
        ..VxlanConfig::default()
    });
    // Received: VNI 2 goes to device 1, VNI 1 to device 0.
    let inner = l2_frame(MAC_TAP2, MAC_BEHIND_B, 100);
    let (v, _) = from_peer(
        &mut b,
        &tables,
        endpoint(B_UNDERLAY),
        &vxlan_payload(2, &inner),
        0,
    );
    assert!(
        matches!(v, Verdict::DeliverToDevice { device: 1, .. }),
        "{v:?}"
    );
    let inner = l2_frame(MAC_TAP, MAC_BEHIND_B, 100);
    let (v, _) = from_peer(
        &mut b,
        &tables,
        endpoint(B_UNDERLAY),
        &vxlan_payload(1, &inner),
        0,
    );
    assert!(
        matches!(v, Verdict::DeliverToDevice { device: 0, .. }),
        "{v:?}"
    );
    let (v, _) = from_peer(
        &mut b,
        &tables,
        endpoint(B_UNDERLAY),
        &vxlan_payload(3, &inner),
        0,
    );
    assert_eq!(v, Verdict::Drop(DropReason::UnknownVni));
    // Each device's frames carry its own VNI, and floods are per device.
    let sent = l2_frame(EthernetAddress::BROADCAST, MAC_TAP2, 100);
    let (v, buf) = from_device(&mut b, &tables, 1, &sent, 0);
    let Verdict::Flood {
        device: 1, range, ..
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(buf[range][..8], vxlan_header(2));
    // Each VNI learns on its own: MAC_BEHIND_B was learned on both, then moves on VNI 2.
    let inner = l2_frame(MAC_TAP2, MAC_BEHIND_B, 100);
    let (v, _) = from_peer(
        &mut b,
        &tables,
        endpoint(C_UNDERLAY),
        &vxlan_payload(2, &inner),
        1,
    );
    assert!(
        matches!(v, Verdict::DeliverToDevice { device: 1, .. }),
        "{v:?}"
    );
    let to = |b: &mut VxlanBackend, device: usize| {
        let sent = l2_frame(MAC_BEHIND_B, MAC_TAP, 100);
        match from_device(b, &tables, device, &sent, 2).0 {
            Verdict::SendToPeer { dest, .. } => dest,
            v => panic!("{v:?}"),
        }
    };
    assert_eq!(to(&mut b, 0), endpoint(B_UNDERLAY));
    assert_eq!(to(&mut b, 1), endpoint(C_UNDERLAY));
    assert_eq!(b.fdb(0).unwrap().len(), 1);
    assert_eq!(b.fdb(1).unwrap().len(), 1);
    assert!(b.fdb(2).is_none());
}

#[test]
fn l3_and_l2_vnis_side_by_side() {
    // VNI 1 is flannel.1 (L3, the kernel capture), VNI 7 an L2 segment.
    let tables = [tables_a().remove(0), l2_table()];
    let mut b = backend(vec![
        l3_vni(VNI, MAC_A),
        l2_vni(7, MAC_TAP, FdbConfig::default()),
    ]);
    let (v, buf) = from_peer(
        &mut b,
        &tables,
        endpoint(B_UNDERLAY),
        &kernel_reply_payload(),
        0,
    );
    let Verdict::DeliverToDevice { device: 0, range } = v else {
        panic!("{v:?}")
    };
    assert_eq!(&buf[range], &fixture("vxlan/inner-echo-reply.hex")[14..]);
    let inner = l2_frame(MAC_TAP, MAC_BEHIND_B, 100);
    let (v, buf) = from_peer(
        &mut b,
        &tables,
        endpoint(B_UNDERLAY),
        &vxlan_payload(7, &inner),
        0,
    );
    let Verdict::DeliverToDevice { device: 1, range } = v else {
        panic!("{v:?}")
    };
    assert_eq!(&buf[range], &inner[..], "L2 keeps the Ethernet header");
    // Device 0 takes IP packets, device 1 frames.
    let packet = udp_v4(A_POD, B_POD, (4000, 53), 100, false, 1);
    assert!(matches!(
        from_device(&mut b, &tables, 0, &packet, 0).0,
        Verdict::SendToPeer { .. }
    ));
    let sent = l2_frame(MAC_BEHIND_B, MAC_TAP, 100);
    let (v, buf) = from_device(&mut b, &tables, 1, &sent, 0);
    let Verdict::SendToPeer { dest, range, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(dest, endpoint(B_UNDERLAY));
    assert_eq!(buf[range][..8], vxlan_header(7));
}

// ---------------------------------------------------------------- hostile input

/// Overwrites up to five bytes (mostly in the headers) and, one time in three, picks a
/// shorter length: what the hostile-input test feeds the backend.
fn mutate(mut bytes: Vec<u8>, next: &mut impl FnMut() -> u64) -> (Vec<u8>, usize) {
    for _ in 0..next() % 6 {
        let span = if next() % 4 == 0 {
            bytes.len()
        } else {
            bytes.len().min(64)
        };
        let i = (next() as usize) % span;
        bytes[i] = next() as u8;
    }
    let len = if next() % 3 == 0 {
        (next() as usize) % (bytes.len() + 1)
    } else {
        bytes.len()
    };
    (bytes, len)
}

#[test]
fn hostile_inputs_never_panic() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // VNI 1 L3 (host A), VNI 2 L2; once strict, once with every check off.
    let tables = [tables_a().remove(0), l2_table()];
    let vnis = || {
        vec![
            l3_vni(1, MAC_A),
            l2_vni(
                2,
                MAC_TAP,
                FdbConfig {
                    max_entries: 8,
                    ageing_ms: 500,
                },
            ),
        ]
    };
    let mut backends = [
        backend(vnis()),
        VxlanBackend::new(VxlanConfig {
            vnis: vnis(),
            check_peer: false,
            check_inner_source: false,
            max_payload: 600,
            ..VxlanConfig::default()
        }),
    ];
    let datagrams = [
        kernel_reply_payload(),
        vxlan_payload(1, &arp_request(MAC_B, B_OVERLAY, A_OVERLAY)),
        vxlan_payload(1, &solicitation_for(A_OVERLAY6)),
        vxlan_payload(
            1,
            &frame(
                MAC_A,
                MAC_B,
                ETHERTYPE_IPV6,
                &udp_v6(B_POD6, A_POD6, (1, 2), 80),
            ),
        ),
        vxlan_payload(2, &l2_frame(MAC_TAP, MAC_BEHIND_B, 120)),
        vxlan_payload(2, &l2_frame(EthernetAddress::BROADCAST, MAC_STATIC, 60)),
    ];
    let packets = [
        fixture("vxlan/inner-echo-request.hex")[14..].to_vec(),
        udp_v4(A_POD, Ipv4Addr::new(100, 96, 9, 9), (1, 2), 700, true, 3),
        udp_v6(A_POD6, B_POD6, (1, 2), 90),
        l2_frame(MAC_BEHIND_B, MAC_TAP, 100),
        l2_frame(EthernetAddress::BROADCAST, MAC_TAP, 700),
    ];
    let sources = [B_UNDERLAY, C_UNDERLAY, STRANGER];
    let mut delivered_or_sent = 0;
    for round in 0..20_000u64 {
        let now = round * 7;
        let b = &mut backends[(next() % 2) as usize];
        // A datagram, at a random offset, with a random amount of room after it.
        let base = datagrams[(next() as usize) % datagrams.len()].clone();
        let (payload, len) = mutate(base, &mut next);
        let start = (next() as usize) % (HEADROOM + 1);
        let mut buf = vec![0u8; start + payload.len() + (next() as usize) % 100];
        buf[start..start + payload.len()].copy_from_slice(&payload);
        let source = from_port(sources[(next() as usize) % sources.len()], next() as u16);
        let v = b.handle_datagram(
            &tables,
            source,
            PacketBuf::new(&mut buf, start, len).unwrap(),
            now,
        );
        assert_in_bounds(&v, buf.len());
        if let Verdict::DeliverToDevice { ref range, .. } = v {
            assert!(range.start >= start && range.end <= start + len, "{v:?}");
            delivered_or_sent += 1;
        }
        // A device packet, on a random device (2 does not exist).
        let base = packets[(next() as usize) % packets.len()].clone();
        let (packet, len) = mutate(base, &mut next);
        let start = (next() as usize) % (HEADROOM + 1);
        let mut buf = vec![0u8; start + packet.len() + (next() as usize) % 100];
        buf[start..start + packet.len()].copy_from_slice(&packet);
        let device = (next() % 3) as usize;
        let v = b.handle_device_packet(
            &tables,
            device,
            PacketBuf::new(&mut buf, start, len).unwrap(),
            now,
        );
        assert_in_bounds(&v, buf.len());
        if matches!(v, Verdict::SendToPeer { .. } | Verdict::Flood { .. }) {
            delivered_or_sent += 1;
        }
        if round % 1000 == 0 {
            b.on_tick(now);
        }
    }
    // The generator must reach the interesting paths, not only rejections.
    assert!(
        delivered_or_sent > 5_000,
        "only {delivered_or_sent} got through"
    );
}

#[test]
fn inner_destinations_never_reached_through_a_tunnel_are_dropped() {
    let tables = tables_a();
    let mut b = backend_a();
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(0, 1, 2, 3),
    ] {
        let pkt = udp_v4(B_POD, dst, (1000, 2000), 60, false, 1);
        let payload = l3_datagram_from_b(&pkt, ETHERTYPE_IPV4);
        let (v, _) = from_peer(&mut b, &tables, endpoint(B_UNDERLAY), &payload, 0);
        assert_eq!(v, Verdict::Drop(DropReason::BadDestination), "{dst}");
    }
    for dst in [Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED] {
        let pkt = udp_v6(B_POD6, dst, (1000, 2000), 80);
        let payload = l3_datagram_from_b(&pkt, ETHERTYPE_IPV6);
        let (v, _) = from_peer(&mut b, &tables, endpoint(B_UNDERLAY), &payload, 0);
        assert_eq!(v, Verdict::Drop(DropReason::BadDestination), "{dst}");
    }
    // The control: a pod on this host is delivered.
    let pkt = udp_v4(B_POD, A_POD, (1000, 2000), 60, false, 1);
    let payload = l3_datagram_from_b(&pkt, ETHERTYPE_IPV4);
    let (v, _) = from_peer(&mut b, &tables, endpoint(B_UNDERLAY), &payload, 0);
    assert!(matches!(v, Verdict::DeliverToDevice { .. }), "{v:?}");
}

#[test]
fn arp_answers_are_rate_limited_for_the_whole_engine() {
    let tables = tables_a();
    let b = backend_a();
    // Two clones (two workers) share the limit.
    let mut workers = [b.clone(), b];
    let payload = vxlan_payload(VNI, &arp_request(MAC_B, B_OVERLAY, A_OVERLAY));
    let mut answered = 0;
    for i in 0..500 {
        let (v, _) = from_peer(
            &mut workers[i % 2],
            &tables,
            endpoint(B_UNDERLAY),
            &payload,
            1_000,
        );
        match v {
            Verdict::ReplyToPeer { .. } => answered += 1,
            Verdict::Drop(DropReason::NeighRateLimited) => {}
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(
        answered, NEIGH_ANSWER_BURST as usize,
        "the burst, then nothing"
    );
    // A second later the rate has refilled the bucket.
    let (v, _) = from_peer(
        &mut workers[0],
        &tables,
        endpoint(B_UNDERLAY),
        &payload,
        2_000,
    );
    assert!(matches!(v, Verdict::ReplyToPeer { .. }), "{v:?}");
}
