//! The ARP/ND proxy of L2 mode ([`VxlanConfig::proxy`]) and the neighbour entries learnt
//! from peers ([`VxlanConfig::neigh_learning`]): requests read from the TAP answered into
//! it, byte-checked, and everything that must still be flooded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use super::*;
use crate::backend::PacketBuf;
use crate::fdb::FdbConfig;
use crate::table::{SubnetTable, TableSpec};
use crate::wire::ethernet::{self, EthernetAddress, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use crate::wire::{arp, icmpv6, ipv6, vxlan, PROTO_ICMPV6};

const VNI: u32 = 1;
/// The TAP's own MAC.
const MAC_TAP: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0a, 0]);
/// A pod on this host's bridge, asking.
const MAC_POD_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0xaa, 0, 0x0b]);
const POD_A: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 11);
const POD_A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x11);
/// A pod behind VTEP B, in the neighbour table.
const MAC_POD_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0xaa, 0, 0x0c]);
const POD_B: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 12);
const POD_B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x12);
/// An address nobody told the table about.
const POD_UNKNOWN: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 99);
const B_UNDERLAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 8472);
/// Spare bytes after every frame (an advertisement may be longer than its solicitation).
const TAILROOM: usize = 128;

/// VNI 1 in L2 mode, B its VTEP, with these static neighbour entries.
fn table(neigh: &[(IpAddr, EthernetAddress)]) -> Vec<Arc<SubnetTable>> {
    let spec = TableSpec {
        vteps: vec![B_UNDERLAY],
        ..TableSpec::default()
    };
    let t = SubnetTable::build(1, &spec)
        .unwrap()
        .with_neigh(neigh.iter().copied());
    vec![Arc::new(t)]
}

/// The table of a host that was told where pod B is.
fn knows_b() -> Vec<Arc<SubnetTable>> {
    table(&[
        (IpAddr::V4(POD_B), MAC_POD_B),
        (IpAddr::V6(POD_B6), MAC_POD_B),
    ])
}

fn backend(proxy: bool, neigh_learning: bool, ageing_ms: u64) -> VxlanBackend {
    VxlanBackend::new(VxlanConfig {
        vnis: vec![VniConfig {
            vni: VNI,
            mode: VxlanMode::L2,
            vtep_mac: MAC_TAP,
            local_v4: None,
            local_v6: None,
            fdb: FdbConfig {
                max_entries: 16,
                ageing_ms,
            },
            device: None,
        }],
        proxy,
        neigh_learning,
        ..VxlanConfig::default()
    })
}

/// Hands `frame`, read from the TAP, to the backend; returns the verdict and the buffer.
fn from_tap(b: &mut VxlanBackend, tables: &[Arc<SubnetTable>], frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; HEADROOM + frame.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let pkt = PacketBuf::new(&mut buf, HEADROOM, frame.len()).unwrap();
    let v = b.handle_device_packet(tables, 0, pkt, 1_000);
    (v, buf)
}

/// Hands `frame`, received from B inside VNI 1, to the backend at `now_ms`.
fn from_b(b: &mut VxlanBackend, tables: &[Arc<SubnetTable>], frame: &[u8], now_ms: u64) -> Verdict {
    let mut buf = vec![0u8; HEADROOM + vxlan::HEADER_LEN + frame.len()];
    let at = HEADROOM + vxlan::HEADER_LEN;
    vxlan::Repr { vni: VNI }.emit(&mut vxlan::Header::new_unchecked(&mut buf[HEADROOM..at]));
    buf[at..].copy_from_slice(frame);
    let pkt = PacketBuf::new(&mut buf, HEADROOM, vxlan::HEADER_LEN + frame.len()).unwrap();
    b.handle_datagram(tables, B_UNDERLAY, pkt, now_ms)
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

/// An ARP packet in a frame from `sender_mac` to `eth_dst`.
fn arp_frame(
    eth_dst: EthernetAddress,
    operation: u16,
    sender: (EthernetAddress, Ipv4Addr),
    target: (EthernetAddress, Ipv4Addr),
) -> Vec<u8> {
    let mut packet = [0u8; arp::PACKET_LEN];
    arp::Repr {
        operation,
        sender_hardware_addr: sender.0,
        sender_protocol_addr: sender.1,
        target_hardware_addr: target.0,
        target_protocol_addr: target.1,
    }
    .emit(&mut arp::Packet::new_unchecked(&mut packet[..]));
    frame(eth_dst, sender.0, ETHERTYPE_ARP, &packet)
}

/// Pod A's broadcast ARP request for `target`, as Linux sends it (42 bytes).
fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let zero = EthernetAddress::default();
    arp_frame(
        EthernetAddress::BROADCAST,
        arp::OP_REQUEST,
        (MAC_POD_A, POD_A),
        (zero, target),
    )
}

/// The solicited-node group of `target` and its MAC.
fn solicited_node(target: Ipv6Addr) -> (Ipv6Addr, EthernetAddress) {
    let t = target.octets();
    let mut group = [0u8; 16];
    group[..2].copy_from_slice(&[0xff, 0x02]);
    group[11..13].copy_from_slice(&[0x01, 0xff]);
    group[13..].copy_from_slice(&t[13..]);
    (
        Ipv6Addr::from(group),
        EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]),
    )
}

/// A neighbour solicitation for `target` from `src` (`::` for duplicate address
/// detection), with pod A's source link-layer option unless `src` is unspecified.
fn solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    let option = !src.is_unspecified();
    let message_len = 24 + if option { 8 } else { 0 };
    let mut packet = vec![0u8; ipv6::HEADER_LEN + message_len];
    ipv6::Repr {
        src_addr: src,
        dst_addr: group,
        next_header: PROTO_ICMPV6,
        payload_len: message_len,
        hop_limit: 255,
    }
    .emit(&mut ipv6::Packet::new_unchecked(
        &mut packet[..ipv6::HEADER_LEN],
    ));
    let mut icmp = icmpv6::Packet::new_unchecked(&mut packet[ipv6::HEADER_LEN..]);
    icmp.set_msg_type(icmpv6::TYPE_NEIGHBOR_SOLICITATION);
    icmp.set_code(0);
    icmp.set_rest_of_header(0);
    let data = icmp.data_mut();
    data[..16].copy_from_slice(&target.octets());
    if option {
        data[16] = 1;
        data[17] = 1;
        data[18..24].copy_from_slice(&MAC_POD_A.0);
    }
    icmp.fill_checksum(&src, &group);
    frame(group_mac, MAC_POD_A, ETHERTYPE_IPV6, &packet)
}

/// The answer of an [`Verdict::AnswerToDevice`] for device 0, starting where the request
/// did.
fn answer_of(v: &Verdict, buf: &[u8]) -> Vec<u8> {
    match v {
        Verdict::AnswerToDevice { device: 0, range } => {
            assert_eq!(range.start, HEADROOM, "written where the request was");
            buf[range.clone()].to_vec()
        }
        v => panic!("expected an answer into the TAP, got {v:?}"),
    }
}

fn is_flood(v: &Verdict) -> bool {
    matches!(v, Verdict::Flood { device: 0, .. })
}

#[test]
fn an_arp_request_for_a_static_entry_is_answered_into_the_tap() {
    let tables = knows_b();
    let mut b = backend(true, false, 0);
    let (v, buf) = from_tap(&mut b, &tables, &arp_request(POD_B));
    let reply = answer_of(&v, &buf);
    // As pod B itself would answer: from B's MAC to A's, operation reply, B's binding as
    // the sender, A's as the target; 42 bytes.
    let expected = arp_frame(
        MAC_POD_A,
        arp::OP_REPLY,
        (MAC_POD_B, POD_B),
        (MAC_POD_A, POD_A),
    );
    assert_eq!(reply, expected);
    let eth = ethernet::Frame::new_checked(&reply[..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (MAC_POD_B, MAC_POD_A));
    let p = arp::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(p.operation(), arp::OP_REPLY);
    assert_eq!(
        (p.sender_hardware_addr(), p.sender_protocol_addr()),
        (MAC_POD_B, POD_B)
    );
    assert_eq!(
        (p.target_hardware_addr(), p.target_protocol_addr()),
        (MAC_POD_A, POD_A)
    );
    assert_eq!(v.drop_reason(), None, "nothing is dropped");
    // Padded to the Ethernet minimum by the bridge: the same 42-byte answer.
    let mut padded = arp_request(POD_B);
    padded.resize(60, 0);
    let (v, buf) = from_tap(&mut b, &tables, &padded);
    assert_eq!(answer_of(&v, &buf), expected);
}

#[test]
fn requests_the_proxy_does_not_answer_are_flooded_as_before() {
    let tables = knows_b();
    let mut b = backend(true, false, 0);
    let zero = EthernetAddress::default();
    let cases = [
        ("an unknown address", arp_request(POD_UNKNOWN)),
        (
            "an ARP probe (RFC 5227)",
            arp_frame(
                EthernetAddress::BROADCAST,
                arp::OP_REQUEST,
                (MAC_POD_A, Ipv4Addr::UNSPECIFIED),
                (zero, POD_B),
            ),
        ),
        (
            "gratuitous ARP",
            arp_frame(
                EthernetAddress::BROADCAST,
                arp::OP_REQUEST,
                (MAC_POD_A, POD_B),
                (zero, POD_B),
            ),
        ),
        (
            "an ARP reply",
            arp_frame(
                EthernetAddress::BROADCAST,
                arp::OP_REPLY,
                (MAC_POD_A, POD_A),
                (zero, POD_B),
            ),
        ),
        (
            "duplicate address detection (RFC 4862)",
            solicitation(Ipv6Addr::UNSPECIFIED, POD_B6),
        ),
        (
            "a solicitation for an unknown address",
            solicitation(POD_A6, Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x99)),
        ),
    ];
    for (what, request) in &cases {
        let (v, _) = from_tap(&mut b, &tables, request);
        assert!(is_flood(&v), "{what}: {v:?}");
    }
    // Without `proxy`, even a known address is flooded, as it always was.
    let mut off = backend(false, false, 0);
    for request in [arp_request(POD_B), solicitation(POD_A6, POD_B6)] {
        let (v, _) = from_tap(&mut off, &tables, &request);
        assert!(is_flood(&v), "{v:?}");
    }
}

#[test]
fn a_neighbour_solicitation_for_a_static_entry_is_answered_with_its_mac() {
    let tables = knows_b();
    let mut b = backend(true, false, 0);
    let (v, buf) = from_tap(&mut b, &tables, &solicitation(POD_A6, POD_B6));
    let na = answer_of(&v, &buf);
    assert_eq!(na.len(), 86);
    let eth = ethernet::Frame::new_checked(&na[..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (MAC_POD_B, MAC_POD_A));
    assert_eq!(eth.ethertype(), ETHERTYPE_IPV6);
    let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (POD_B6, POD_A6));
    assert_eq!(
        (ip.next_header(), ip.hop_limit(), ip.payload_len()),
        (PROTO_ICMPV6, 255, 32)
    );
    let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT);
    assert_eq!(icmp.code(), 0);
    assert!(
        icmp.verify_checksum(&POD_B6, &POD_A6),
        "a valid ICMPv6 checksum"
    );
    assert_eq!(
        icmp.rest_of_header(),
        0x6000_0000,
        "Solicited and Override, not Router"
    );
    assert_eq!(&icmp.data()[..16], &POD_B6.octets(), "the target");
    assert_eq!(
        &icmp.data()[16..18],
        &[2, 1],
        "a target link-layer address option"
    );
    assert_eq!(&icmp.data()[18..24], &MAC_POD_B.0, "carrying B's MAC");
}

#[test]
fn neighbours_learnt_from_peers_are_answered_for_until_they_age() {
    let tables = table(&[]);
    let mut b = backend(true, true, 60_000);
    let worker2 = b.clone();
    // B's pod answers someone's ARP: the reply crosses the tunnel to us.
    let reply = arp_frame(
        MAC_POD_A,
        arp::OP_REPLY,
        (MAC_POD_B, POD_B),
        (MAC_POD_A, POD_A),
    );
    let v = from_b(&mut b, &tables, &reply, 1_000);
    assert!(
        matches!(v, Verdict::DeliverToDevice { .. }),
        "delivered as before: {v:?}"
    );
    let learnt = worker2.neigh_cache(0).unwrap().entries();
    assert_eq!(
        learnt,
        [(IpAddr::V4(POD_B), MAC_POD_B, 1_000)],
        "shared by the workers"
    );
    let (v, buf) = from_tap(&mut b, &tables, &arp_request(POD_B));
    assert_eq!(
        &answer_of(&v, &buf)[..12],
        &[MAC_POD_A.0, MAC_POD_B.0].concat()[..]
    );
    // Aged (60 s after it was learnt): flooded again, and dropped by the tick.
    let mut late = vec![0u8; HEADROOM + 42 + TAILROOM];
    late[HEADROOM..HEADROOM + 42].copy_from_slice(&arp_request(POD_B));
    let pkt = PacketBuf::new(&mut late, HEADROOM, 42).unwrap();
    assert!(is_flood(&b.handle_device_packet(&tables, 0, pkt, 61_000)));
    b.on_tick(61_000);
    assert!(b.neigh_cache(0).unwrap().is_empty());
}

#[test]
fn what_is_learnt_and_what_is_not() {
    let static_mac = EthernetAddress([0x02, 0, 0, 0xaa, 0, 0x77]);
    let tables = table(&[(IpAddr::V4(POD_B), static_mac)]);
    let mut b = backend(true, true, 0);
    let zero = EthernetAddress::default();
    // A request announces its sender; a static entry is not shadowed by what is heard.
    let request = arp_frame(
        EthernetAddress::BROADCAST,
        arp::OP_REQUEST,
        (MAC_POD_B, POD_B),
        (zero, POD_A),
    );
    from_b(&mut b, &tables, &request, 0);
    assert!(b.neigh_cache(0).unwrap().is_empty(), "POD_B is static");
    let (v, buf) = from_tap(&mut b, &tables, &arp_request(POD_B));
    assert_eq!(
        &answer_of(&v, &buf)[6..12],
        &static_mac.0,
        "the static entry answers"
    );
    // A probe teaches nothing; another sender is learnt.
    let probe = arp_frame(
        EthernetAddress::BROADCAST,
        arp::OP_REQUEST,
        (MAC_POD_A, Ipv4Addr::UNSPECIFIED),
        (zero, POD_A),
    );
    from_b(&mut b, &tables, &probe, 0);
    assert!(b.neigh_cache(0).unwrap().is_empty());
    let other = arp_frame(
        EthernetAddress::BROADCAST,
        arp::OP_REQUEST,
        (MAC_POD_A, POD_UNKNOWN),
        (zero, POD_A),
    );
    from_b(&mut b, &tables, &other, 0);
    assert_eq!(b.neigh_cache(0).unwrap().len(), 1);
    // Without neigh_learning nothing is learnt.
    let mut quiet = backend(true, false, 0);
    from_b(&mut quiet, &tables, &other, 0);
    assert!(quiet.neigh_cache(0).unwrap().is_empty());
    // Frames read from the TAP teach nothing either (only peers' frames do).
    let mut b = backend(false, true, 0);
    from_tap(&mut b, &tables, &other);
    assert!(b.neigh_cache(0).unwrap().is_empty());
}

#[test]
fn an_l3_vni_never_proxies() {
    // proxy is an L2 setting: an L3 VNI (a TUN, no ARP) routes as before.
    let mut b = VxlanBackend::new(VxlanConfig {
        vnis: vec![VniConfig {
            vni: VNI,
            mode: VxlanMode::L3,
            vtep_mac: MAC_TAP,
            local_v4: Some(Ipv4Addr::new(100, 96, 1, 0)),
            local_v6: None,
            fdb: FdbConfig::default(),
            device: None,
        }],
        proxy: true,
        ..VxlanConfig::default()
    });
    let (v, _) = from_tap(&mut b, &knows_b(), &arp_request(POD_B));
    assert!(
        matches!(v, Verdict::Drop(_)),
        "an ARP frame is no IP packet: {v:?}"
    );
}

#[test]
fn hostile_frames_from_the_tap_never_panic_with_the_proxy_on() {
    let tables = knows_b();
    let mut b = backend(true, true, 0);
    let seeds = [arp_request(POD_B), solicitation(POD_A6, POD_B6)];
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut answered = 0;
    for i in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut f = seeds[i % 2].clone();
        for k in 0..(x % 3) {
            let at = (x >> (8 + 8 * k)) as usize % f.len();
            f[at] = (x >> (32 + 4 * k)) as u8;
        }
        f.truncate(f.len() - (x >> 60) as usize % 8);
        let (v, buf) = from_tap(&mut b, &tables, &f);
        if let Some(r) = v.range() {
            assert!(r.start <= r.end && r.end <= buf.len(), "{v:?}");
        }
        answered += usize::from(matches!(v, Verdict::AnswerToDevice { .. }));
        let _ = from_b(&mut b, &tables, &f, 0);
    }
    assert!(answered > 0);
}
