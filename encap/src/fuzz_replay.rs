//! Runs the checks of the `wire`, `icmp`, `neigh`, `flannel` and `vxlan` fuzz targets
//! (`encap/fuzz/src/wire_checks.rs` and `packet_checks.rs`) on stable: the committed seeds
//! in `encap/fuzz/seeds/<target>/` (converted from `fixtures/`, plus every crash a fuzzer
//! found), and a few hundred random inputs per target, both raw bytes and inputs built from
//! packets that reach the deep paths (routed, spoofed, expired, too big, ARP/ND for the
//! VTEP...), so CI exercises them without nightly or cargo-fuzz.
//!
//! The offload targets (`split`, `coalesce`) are replayed by `offload/fuzz_replay.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use crate as encap;
use crate::testutil::fixture;
use crate::wire::{ipv4, ipv6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

#[allow(dead_code)]
#[path = "../fuzz/src/wire_checks.rs"]
mod wire_checks;

#[allow(dead_code)]
#[path = "../fuzz/src/packet_checks.rs"]
mod packet_checks;

/// The files of `encap/fuzz/seeds/<target>/`.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn wire_seeds() {
    for s in seeds("wire") {
        wire_checks::check_wire(&s);
    }
}

/// `bytes` with `new` written at `at`.
fn patched(bytes: &[u8], at: usize, new: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + new.len()].copy_from_slice(new);
    b
}

/// Edges every view must refuse with the right error (or accept), as `[view, bytes]`
/// inputs: the fuzzer finds them on its own, random bytes seldom do.
#[test]
fn wire_edges() {
    let udp4 = fixture("wire/ipv4-udp.hex");
    let arp = fixture("neigh/arp-request.hex")[14..].to_vec();
    let ns = fixture("neigh/ns.hex")[14..].to_vec();
    let vx = fixture("vxlan/outer-echo-request.hex")[28..].to_vec();
    let too_long = (udp4.len() as u16 + 1).to_be_bytes();
    for (view, bytes) in [
        (0u8, patched(&patched(&udp4, 0, &[0x4f]), 2, &[0, 40])),
        (0, patched(&udp4, 0, &[0x44])),
        (0, patched(&udp4, 0, &[0x65])),
        (0, patched(&udp4, 2, &too_long)),
        (0, [&udp4[..], &[0u8; 6]].concat()),
        (0, udp4[..19].to_vec()),
        (1, patched(&ns, 4, &[0, 33])),
        (1, patched(&ns, 0, &[0x45])),
        (2, patched(&udp4[20..], 4, &[0, 7])),
        (2, patched(&udp4[20..], 4, &[0, 8])),
        (6, patched(&arp, 0, &[0, 6])),
        (6, patched(&arp, 5, &[6])),
        (6, patched(&arp, 6, &[0, 3])),
        (7, patched(&vx, 0, &[0])),
        (7, vx[..7].to_vec()),
    ] {
        wire_checks::check_wire(&[&[view][..], &bytes].concat());
    }
}

#[test]
fn icmp_seeds() {
    for s in seeds("icmp") {
        packet_checks::check_icmp(&s);
    }
}

#[test]
fn neigh_seeds() {
    for s in seeds("neigh") {
        packet_checks::check_neigh(&s);
    }
}

#[test]
fn flannel_seeds() {
    for s in seeds("flannel") {
        packet_checks::check_flannel(&s);
    }
}

#[test]
fn vxlan_seeds() {
    for s in seeds("vxlan") {
        packet_checks::check_vxlan(&s);
    }
}

/// Inner IPv4 addresses that meet every case of the fuzz targets' tables: routed (nested
/// prefixes), a local pod, an IPv6-underlay peer's, unroutable, limited broadcast,
/// loopback, routed to a peer without a VTEP MAC, and 0.0.0.0/8.
const V4: [[u8; 4]; 10] = [
    [100, 96, 2, 5],
    [100, 96, 2, 200],
    [100, 96, 77, 1],
    [100, 96, 1, 5],
    [100, 96, 4, 9],
    [198, 18, 0, 2],
    [255, 255, 255, 255],
    [127, 0, 0, 1],
    [100, 96, 3, 3],
    [0, 0, 0, 7],
];

/// The same for IPv6 (and a multicast destination).
const V6: [Ipv6Addr; 7] = [
    Ipv6Addr::new(0xfd00, 0x100, 0x96, 2, 0, 0, 0, 5),
    Ipv6Addr::new(0xfd00, 0x100, 0x96, 1, 0, 0, 0, 5),
    Ipv6Addr::new(0xfd00, 0x100, 0x96, 3, 0, 0, 0, 5),
    Ipv6Addr::new(0xfd00, 0x100, 0x96, 4, 0, 0, 0, 1),
    Ipv6Addr::LOCALHOST,
    Ipv6Addr::UNSPECIFIED,
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
];

/// An IP packet built field by field: `v6`, source and destination picked from `V4`/`V6`,
/// TTL, payload length, DF, protocol (ICMP/ICMPv6 ones start with an echo request, or an
/// error type with `err`).
#[allow(clippy::too_many_arguments)]
fn ip_packet(
    v6: bool,
    src: usize,
    dst: usize,
    ttl: u8,
    payload: usize,
    df: bool,
    proto: u8,
    err: bool,
) -> Vec<u8> {
    let mut p;
    if v6 {
        let next_header = if proto == PROTO_ICMP {
            PROTO_ICMPV6
        } else {
            proto
        };
        let repr = ipv6::Repr {
            src_addr: V6[src % V6.len()],
            dst_addr: V6[dst % V6.len()],
            next_header,
            payload_len: payload,
            hop_limit: ttl,
        };
        p = vec![0u8; 40 + payload];
        repr.emit(&mut ipv6::Packet::new_unchecked(&mut p[..]));
    } else {
        let repr = ipv4::Repr {
            src_addr: Ipv4Addr::from(V4[src % V4.len()]),
            dst_addr: Ipv4Addr::from(V4[dst % V4.len()]),
            protocol: proto,
            payload_len: payload,
            ttl,
        };
        p = vec![0u8; 20 + payload];
        let mut ip = ipv4::Packet::new_unchecked(&mut p[..]);
        repr.emit(&mut ip);
        ip.set_flags_and_frag_offset(df, false, 0);
        ip.fill_checksum();
    }
    let hdr = if v6 { 40 } else { 20 };
    for (i, b) in p[hdr..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    if proto == PROTO_ICMP && payload > 0 {
        p[hdr] = match (v6, err) {
            (false, false) => 8,
            (false, true) => 11,
            (true, false) => 128,
            (true, true) => 3,
        };
    }
    p
}

/// One packet of a structured backend input.
#[derive(Debug, Clone)]
enum Pkt {
    /// `ip_packet(v6, src, dst, ttl, len, df, proto, err)`.
    Ip(bool, usize, usize, u8, usize, bool, u8, bool),
    /// A captured packet or frame (index into `captured()`).
    Captured(usize),
    /// Raw bytes.
    Raw(Vec<u8>),
}

/// Captured packets and frames: inner IP packets, Ethernet frames for the L2 VNI, and ARP /
/// ND bodies (without their Ethernet header: the VXLAN wrap adds one to the VTEP MAC).
fn captured() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "flannel/echo_request_v4.hex",
        "flannel/echo_request_v6.hex",
        "wire/ipv4-tcp-syn.hex",
        "wire/ipv4-offender-1428-df.hex",
        "wire/ipv6-offender-1448.hex",
        "vxlan/inner-echo-request.hex",
        "vxlan/inner-echo-reply.hex",
        "neigh/arp-request.hex",
        "neigh/ns.hex",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect();
    for n in ["neigh/arp-request.hex", "neigh/ns.hex", "neigh/ns-dad.hex"] {
        v.push(fixture(n)[14..].to_vec());
    }
    v
}

fn pkt_strategy() -> impl Strategy<Value = Pkt> {
    let ip = (
        any::<bool>(),
        0usize..16,
        0usize..16,
        prop_oneof![Just(0u8), Just(1), Just(2), Just(64), Just(255)],
        prop_oneof![0usize..64, 1200usize..1300, 1400usize..1520],
        any::<bool>(),
        prop_oneof![
            Just(PROTO_UDP),
            Just(PROTO_TCP),
            Just(PROTO_ICMP),
            Just(44u8)
        ],
        any::<bool>(),
    )
        .prop_map(|(v6, s, d, ttl, len, df, proto, err)| {
            Pkt::Ip(v6, s, d, ttl, len, df, proto, err)
        });
    prop_oneof![
        6 => ip,
        3 => (0usize..12).prop_map(Pkt::Captured),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Pkt::Raw),
    ]
}

/// One record of a structured input: op, aux, the packet, bytes to flip, padding to add.
type Rec = (u8, u8, Pkt, Vec<(usize, u8)>, usize);

/// A structured input: `cfg` then records `[op, aux, len, packet]`, each packet with a few
/// bytes flipped and maybe padding after it; `wrap` sets op bit 1 on every record.
fn backend_input(cfg: u8, records: &[Rec], captured: &[Vec<u8>], wrap: bool) -> Vec<u8> {
    let mut d = vec![cfg];
    for (op, aux, pkt, flips, pad) in records {
        let mut p = match pkt {
            Pkt::Ip(v6, s, dst, ttl, len, df, proto, err) => {
                ip_packet(*v6, *s, *dst, *ttl, *len, *df, *proto, *err)
            }
            Pkt::Captured(i) => captured[i % captured.len()].clone(),
            Pkt::Raw(b) => b.clone(),
        };
        for &(at, x) in flips {
            if !p.is_empty() {
                let at = at % p.len();
                p[at] ^= x;
            }
        }
        p.extend(std::iter::repeat_n(0u8, *pad));
        d.push(if wrap { op | 2 } else { *op });
        d.push(*aux);
        d.extend_from_slice(&(p.len() as u16).to_be_bytes());
        d.extend_from_slice(&p);
    }
    d
}

fn records_strategy() -> impl Strategy<Value = Vec<Rec>> {
    proptest::collection::vec(
        (
            any::<u8>(),
            any::<u8>(),
            pkt_strategy(),
            prop_oneof![
                3 => Just(Vec::new()),
                1 => proptest::collection::vec((any::<usize>(), any::<u8>()), 1..3),
            ],
            prop_oneof![3 => Just(0usize), 1 => 1usize..8],
        ),
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn wire_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        wire_checks::check_wire(&data);
    }

    #[test]
    fn wire_mutated_packets(
        view in 0u8..8, pkt in pkt_strategy(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let captured = captured();
        let d = backend_input(0, &[(0, 0, pkt, flips, 0)], &captured, false);
        // [view] + the packet (skipping the record header).
        let mut input = vec![view];
        input.extend_from_slice(&d[5..]);
        wire_checks::check_wire(&input);
        // The same as the payload of an IPv4 Ethernet frame.
        let mut eth = vec![5u8, 2, 0, 0, 0, 1, 0, 2, 0, 0, 0, 2, 0, 0x08, 0x00];
        eth.extend_from_slice(&d[5..]);
        wire_checks::check_wire(&eth);
    }

    #[test]
    fn icmp_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        packet_checks::check_icmp(&data);
    }

    #[test]
    fn icmp_built_offenders(
        sel in any::<u8>(), head in any::<u8>(), tail in any::<u8>(), mtu in any::<u32>(),
        flags in 0u8..16, pkt in pkt_strategy(),
    ) {
        let captured = captured();
        let d = backend_input(0, &[(0, 0, pkt, vec![], 0)], &captured, false);
        let mut input = vec![sel, 48 + head % 32, tail];
        input.extend_from_slice(&mtu.to_be_bytes());
        input.push(flags);
        input.extend_from_slice(&d[5..]);
        packet_checks::check_icmp(&input);
    }

    #[test]
    fn neigh_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        packet_checks::check_neigh(&data);
    }

    #[test]
    fn neigh_mutated_requests(
        cfg in any::<u8>(), head in any::<u8>(), tail in any::<u8>(), which in 0usize..5,
        flips in proptest::collection::vec((0usize..86, any::<u8>()), 0..3),
    ) {
        let names = ["neigh/arp-request.hex", "neigh/ns.hex", "neigh/ns-dad.hex", "neigh/arp-reply.hex", "neigh/na.hex"];
        let mut frame = fixture(names[which]);
        for (at, x) in flips {
            let at = at % frame.len();
            frame[at] ^= x;
        }
        let mut input = vec![cfg & 0x3c, head, tail];
        input.extend_from_slice(&frame);
        packet_checks::check_neigh(&input);
    }

    #[test]
    fn flannel_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        packet_checks::check_flannel(&data);
    }

    #[test]
    fn flannel_built_packets(cfg in any::<u8>(), records in records_strategy()) {
        let captured = captured();
        packet_checks::check_flannel(&backend_input(cfg, &records, &captured, false));
    }

    #[test]
    fn vxlan_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        packet_checks::check_vxlan(&data);
    }

    #[test]
    fn vxlan_built_packets(cfg in any::<u8>(), records in records_strategy(), wrap in any::<bool>()) {
        let captured = captured();
        packet_checks::check_vxlan(&backend_input(cfg, &records, &captured, wrap));
    }
}
