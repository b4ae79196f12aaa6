//! Byte-vector tests of every verdict of the UDP backend, on packets captured from the
//! kernel (fixtures/flannel, see its capture.sh) and on packets built field by field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;
use crate::table::{Route, SubnetTable};
use crate::testutil::fixture;
use crate::wire::{icmpv4, icmpv6, ipv4, ipv6, PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP};

const A_UNDERLAY: &str = "198.18.0.1";
const B_UNDERLAY: &str = "198.18.0.2";

/// Host A's view: B owns 100.96.2.0/24 and fd00:100:96:2::/64.
fn table() -> SubnetTable {
    let route = |s: &str| Route {
        subnet: s.parse().unwrap(),
        endpoint: format!("{B_UNDERLAY}:8285").parse().unwrap(),
        vtep_mac: None,
    };
    SubnetTable::new(1, &[route("100.96.2.0/24"), route("fd00:100:96:2::/64")]).unwrap()
}

fn backend() -> FlannelBackend {
    FlannelBackend::new(FlannelConfig {
        local_v4: Some(Ipv4Addr::new(100, 96, 1, 0)),
        local_v6: Some("fd00:100:96:1::".parse().unwrap()),
        ..FlannelConfig::default()
    })
}

/// `packet` placed after HEADROOM bytes of headroom in a buffer with room to spare.
fn buffer(packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADROOM + packet.len() + 64];
    buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
    buf
}

fn v4_packet(src: [u8; 4], dst: [u8; 4], ttl: u8, payload_len: usize, df: bool) -> Vec<u8> {
    let repr = ipv4::Repr {
        src_addr: Ipv4Addr::from(src),
        dst_addr: Ipv4Addr::from(dst),
        protocol: PROTO_UDP,
        payload_len,
        ttl,
    };
    let mut bytes = vec![0u8; repr.buffer_len() + payload_len];
    let mut p = ipv4::Packet::new_unchecked(&mut bytes[..]);
    repr.emit(&mut p);
    if df {
        p.set_flags_and_frag_offset(true, false, 0);
        p.fill_checksum();
    }
    for (i, b) in bytes[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    bytes
}

fn v6_packet(src: &str, dst: &str, hop_limit: u8, payload_len: usize) -> Vec<u8> {
    let repr = ipv6::Repr {
        src_addr: src.parse().unwrap(),
        dst_addr: dst.parse().unwrap(),
        next_header: PROTO_UDP,
        payload_len,
        hop_limit,
    };
    let mut bytes = vec![0u8; repr.buffer_len() + payload_len];
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut bytes[..]));
    bytes
}

fn peer_b() -> SocketAddr {
    format!("{B_UNDERLAY}:8285").parse().unwrap()
}

#[test]
fn kernel_echo_request_is_encapsulated_with_ttl_decremented() {
    let pkt = fixture("flannel/echo_request_v4.hex");
    let table = table();
    let mut buf = buffer(&pkt);
    let v = backend().handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0);
    let range = HEADROOM..HEADROOM + pkt.len();
    assert_eq!(
        v,
        Verdict::SendToPeer {
            dest: peer_b(),
            range: range.clone(),
            flow: None
        }
    );
    let out = ipv4::Packet::new_checked(&buf[range]).unwrap();
    assert_eq!(out.ttl(), 63);
    assert!(
        out.verify_checksum(),
        "RFC 1624 incremental update keeps the checksum valid"
    );
    // Everything but TTL and checksum is unchanged.
    let mut expected = pkt.clone();
    expected[8] -= 1;
    assert_eq!(&out.packet()[..8], &expected[..8]);
    assert_eq!(&out.packet()[9..10], &expected[9..10]);
    assert_eq!(&out.packet()[12..], &expected[12..]);
}

#[test]
fn encapsulation_matches_the_captured_wire_format() {
    // What weft put on the wire (captured on the underlay) is the inner packet, TTL - 1,
    // as the whole UDP payload, from port 8285 to port 8285.
    let datagram = fixture("flannel/datagram_v4.hex");
    let outer = ipv4::Packet::new_checked(&datagram[..]).unwrap();
    assert_eq!(outer.protocol(), PROTO_UDP);
    let udp = crate::wire::udp::Packet::new_checked(outer.payload()).unwrap();
    assert_eq!((udp.src_port(), udp.dst_port()), (8285, 8285));
    let pkt = fixture("flannel/echo_request_v4.hex");
    let mut buf = buffer(&pkt);
    let Verdict::SendToPeer { range, .. } =
        backend().handle_device_packet(&table(), &mut buf, HEADROOM, pkt.len(), 0)
    else {
        panic!("not sent")
    };
    assert_eq!(&buf[range], udp.payload());
}

#[test]
fn received_datagram_is_delivered_with_ttl_decremented() {
    let pkt = fixture("flannel/echo_request_v4.hex");
    // At B: the datagram came from A, which owns 100.96.1.0/24.
    let table = SubnetTable::new(
        1,
        &[Route {
            subnet: "100.96.1.0/24".parse().unwrap(),
            endpoint: format!("{A_UNDERLAY}:8285").parse().unwrap(),
            vtep_mac: None,
        }],
    )
    .unwrap();
    let mut buf = buffer(&pkt);
    let v = backend().handle_datagram(
        &table,
        A_UNDERLAY.parse().unwrap(),
        &mut buf,
        HEADROOM,
        pkt.len(),
        0,
    );
    assert_eq!(
        v,
        Verdict::DeliverToDevice {
            device: 0,
            range: HEADROOM..HEADROOM + pkt.len()
        }
    );
    let out = ipv4::Packet::new_checked(&buf[HEADROOM..HEADROOM + pkt.len()]).unwrap();
    assert_eq!(out.ttl(), 63);
    assert!(out.verify_checksum());
}

#[test]
fn kernel_ipv6_echo_is_encapsulated_with_hop_limit_decremented() {
    let pkt = fixture("flannel/echo_request_v6.hex");
    let table = table();
    let mut buf = buffer(&pkt);
    let v = backend().handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0);
    assert_eq!(
        v,
        Verdict::SendToPeer {
            dest: peer_b(),
            range: HEADROOM..HEADROOM + pkt.len(),
            flow: None
        }
    );
    let out = ipv6::Packet::new_checked(&buf[HEADROOM..HEADROOM + pkt.len()]).unwrap();
    assert_eq!(
        out.hop_limit(),
        ipv6::Packet::new_checked(&pkt[..]).unwrap().hop_limit() - 1
    );
}

#[test]
fn no_route_answers_net_unreachable_into_the_device() {
    let pkt = v4_packet([100, 96, 1, 5], [100, 96, 9, 9], 64, 100, false);
    let mut buf = buffer(&pkt);
    let v = backend().handle_device_packet(&table(), &mut buf, HEADROOM, pkt.len(), 0);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::NoRoute,
    } = v
    else {
        panic!("{v:?}")
    };
    let ip = ipv4::Packet::new_checked(&buf[range.clone()]).unwrap();
    assert!(ip.verify_checksum());
    // From the unreachable destination (a local source would be a martian), to the sender.
    assert_eq!(ip.src_addr(), Ipv4Addr::new(100, 96, 9, 9));
    assert_eq!(ip.dst_addr(), Ipv4Addr::new(100, 96, 1, 5));
    assert_eq!(ip.protocol(), PROTO_ICMP);
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 0));
    assert!(icmp.verify_checksum());
    // The quote starts with the offending header, unmodified (TTL 64).
    assert_eq!(&icmp.data()[..20], &pkt[..20]);
}

#[test]
fn no_route_v6_answers_icmpv6_no_route() {
    let pkt = v6_packet("fd00:100:96:1::5", "fd00:100:96:9::9", 64, 60);
    let mut buf = buffer(&pkt);
    let v = backend().handle_device_packet(&table(), &mut buf, HEADROOM, pkt.len(), 0);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::NoRoute,
    } = v
    else {
        panic!("{v:?}")
    };
    let ip = ipv6::Packet::new_checked(&buf[range]).unwrap();
    assert_eq!(ip.next_header(), PROTO_ICMPV6);
    assert_eq!(
        ip.dst_addr(),
        "fd00:100:96:1::5".parse::<Ipv6Addr>().unwrap()
    );
    let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.code()), (1, 0));
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
}

#[test]
fn no_error_about_icmp_errors_or_non_first_fragments() {
    let table = table();
    let mut b = backend();
    // An ICMP error about something else, toward an unrouted destination.
    let mut pkt = v4_packet([100, 96, 1, 5], [100, 96, 9, 9], 64, 36, false);
    pkt[9] = PROTO_ICMP;
    pkt[20] = 3; // destination unreachable
    ipv4::Packet::new_unchecked(&mut pkt[..]).fill_checksum();
    let mut buf = buffer(&pkt);
    assert_eq!(
        b.handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0),
        Verdict::Drop(DropReason::NoRoute)
    );
    // A non-first fragment.
    let mut pkt = v4_packet([100, 96, 1, 5], [100, 96, 9, 9], 64, 100, false);
    let mut p = ipv4::Packet::new_unchecked(&mut pkt[..]);
    p.set_flags_and_frag_offset(false, false, 1480);
    p.fill_checksum();
    let mut buf = buffer(&pkt);
    assert_eq!(
        b.handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0),
        Verdict::Drop(DropReason::NoRoute)
    );
}

#[test]
fn expiring_ttl_answers_time_exceeded() {
    let table = table();
    let pkt = v4_packet([100, 96, 1, 5], [100, 96, 2, 7], 1, 100, false);
    let mut buf = buffer(&pkt);
    let v = backend().handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::TtlExceeded,
    } = v
    else {
        panic!("{v:?}")
    };
    let ip = ipv4::Packet::new_checked(&buf[range]).unwrap();
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.code()), (11, 0));
    assert_eq!(ip.dst_addr(), Ipv4Addr::new(100, 96, 1, 5));
    // Hop limit 1 over IPv6 likewise.
    let pkt = v6_packet("fd00:100:96:1::5", "fd00:100:96:2::7", 1, 40);
    let mut buf = buffer(&pkt);
    let v = backend().handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::TtlExceeded,
    } = v
    else {
        panic!("{v:?}")
    };
    let ip = ipv6::Packet::new_checked(&buf[range]).unwrap();
    assert_eq!(
        icmpv6::Packet::new_checked(ip.payload())
            .unwrap()
            .msg_type(),
        3
    );
}

#[test]
fn ttl_running_out_on_receive_is_answered_through_the_tunnel() {
    let table = table();
    // At A, from B: an inner packet from B's pod with TTL 1.
    let pkt = v4_packet([100, 96, 2, 7], [100, 96, 1, 5], 1, 100, false);
    let mut buf = buffer(&pkt);
    let v = backend().handle_datagram(
        &table,
        B_UNDERLAY.parse().unwrap(),
        &mut buf,
        HEADROOM,
        pkt.len(),
        0,
    );
    let Verdict::ReplyToPeer {
        dest,
        range,
        cause: Some(DropReason::TtlExceeded),
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(dest, peer_b());
    let ip = ipv4::Packet::new_checked(&buf[range]).unwrap();
    assert_eq!(
        ip.src_addr(),
        Ipv4Addr::new(100, 96, 1, 0),
        "from A's own overlay address"
    );
    assert_eq!(ip.dst_addr(), Ipv4Addr::new(100, 96, 2, 7));
    assert_eq!(
        icmpv4::Packet::new_checked(ip.payload())
            .unwrap()
            .msg_type(),
        11
    );
}

#[test]
fn too_big_with_df_answers_frag_needed_with_the_mtu() {
    let table = table();
    let mut b = FlannelBackend::new(FlannelConfig {
        max_payload: 1000,
        ..FlannelConfig::default()
    });
    let pkt = v4_packet([100, 96, 1, 5], [100, 96, 2, 7], 64, 1200, true);
    let mut buf = buffer(&pkt);
    let v = b.handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::TooBig,
    } = v
    else {
        panic!("{v:?}")
    };
    let ip = ipv4::Packet::new_checked(&buf[range]).unwrap();
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 4));
    assert_eq!(icmp.rest_of_header() & 0xffff, 1000, "next-hop MTU");
    // Without DF the packet goes out (the kernel fragments the outer datagram).
    let pkt = v4_packet([100, 96, 1, 5], [100, 96, 2, 7], 64, 1200, false);
    let mut buf = buffer(&pkt);
    assert!(matches!(
        b.handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0),
        Verdict::SendToPeer { .. }
    ));
    // IPv6 is never fragmented on the way: packet too big, never below 1280.
    let pkt = v6_packet("fd00:100:96:1::5", "fd00:100:96:2::7", 64, 1400);
    let mut buf = buffer(&pkt);
    let Verdict::ReplyToDevice {
        device: 0,
        range,
        cause: DropReason::TooBig,
    } = b.handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 0)
    else {
        panic!()
    };
    let ip = ipv6::Packet::new_checked(&buf[range]).unwrap();
    let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.rest_of_header()), (2, 1280));
}

#[test]
fn icmp_errors_are_rate_limited() {
    let table = table();
    let mut b = FlannelBackend::new(FlannelConfig {
        icmp_rate: 1,
        icmp_burst: 2,
        ..FlannelConfig::default()
    });
    let pkt = v4_packet([100, 96, 1, 5], [100, 96, 9, 9], 64, 20, false);
    let mut replies = 0;
    for _ in 0..10 {
        let mut buf = buffer(&pkt);
        match b.handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 5_000) {
            Verdict::ReplyToDevice { .. } => replies += 1,
            Verdict::Drop(DropReason::NoRoute) => {}
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(replies, 2);
    assert_eq!(Backend::icmp_rate_limited(&b), 8);
    let mut buf = buffer(&pkt);
    assert!(matches!(
        b.handle_device_packet(&table, &mut buf, HEADROOM, pkt.len(), 6_000),
        Verdict::ReplyToDevice { .. }
    ));
}

#[test]
fn a_forged_ttl_flood_from_a_peer_leaves_the_hosts_own_errors_their_budget() {
    let table = table();
    let mut b = FlannelBackend::new(FlannelConfig {
        local_v4: Some(Ipv4Addr::new(100, 96, 1, 0)),
        max_payload: 1000,
        icmp_rate: 1,
        icmp_burst: 2,
        ..FlannelConfig::default()
    });
    // A peer floods TTL=1 packets: its budget of time-exceeded errors runs out.
    let forged = v4_packet([100, 96, 2, 7], [100, 96, 1, 5], 1, 20, false);
    let mut answered = 0;
    for _ in 0..50 {
        let mut buf = buffer(&forged);
        let from_b = B_UNDERLAY.parse().unwrap();
        match b.handle_datagram(&table, from_b, &mut buf, HEADROOM, forged.len(), 5_000) {
            Verdict::ReplyToPeer { .. } => answered += 1,
            Verdict::Drop(DropReason::TtlExceeded) => {}
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(answered, 2, "the peer's budget");
    // This host's own too-big packet still gets its fragmentation-needed error.
    let local = v4_packet([100, 96, 1, 5], [100, 96, 2, 7], 64, 1200, true);
    let mut buf = buffer(&local);
    assert!(
        matches!(
            b.handle_device_packet(&table, &mut buf, HEADROOM, local.len(), 5_000),
            Verdict::ReplyToDevice {
                cause: DropReason::TooBig,
                ..
            }
        ),
        "the host's own error was suppressed by the peer's flood"
    );
}

#[test]
fn decap_validation_drops_and_names_the_reason() {
    let table = table();
    let mut b = backend();
    let from_b: IpAddr = B_UNDERLAY.parse().unwrap();
    let mut run = |src: IpAddr, pkt: &[u8], len: usize| {
        let mut buf = buffer(pkt);
        b.handle_datagram(&table, src, &mut buf, HEADROOM, len, 0)
    };
    let good = v4_packet([100, 96, 2, 7], [100, 96, 1, 5], 64, 100, false);
    assert!(matches!(
        run(from_b, &good, good.len()),
        Verdict::DeliverToDevice { .. }
    ));
    // Not a peer.
    assert_eq!(
        run("198.18.0.3".parse().unwrap(), &good, good.len()),
        Verdict::Drop(DropReason::UnknownPeer)
    );
    // A peer, but an inner source outside its subnets.
    let spoofed = v4_packet([100, 96, 7, 7], [100, 96, 1, 5], 64, 100, false);
    assert_eq!(
        run(from_b, &spoofed, spoofed.len()),
        Verdict::Drop(DropReason::SpoofedSource)
    );
    // Malformed: garbage, bad version, header length, total length vs. datagram length.
    assert_eq!(
        run(from_b, b"hello, world", 12),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(run(from_b, &[], 0), Verdict::Drop(DropReason::Malformed));
    let mut bad = good.clone();
    bad[0] = 0x55;
    assert_eq!(
        run(from_b, &bad, bad.len()),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut bad = good.clone();
    bad[0] = 0x44; // IHL 4
    assert_eq!(
        run(from_b, &bad, bad.len()),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(
        run(from_b, &good, good.len() - 1),
        Verdict::Drop(DropReason::Malformed),
        "truncated"
    );
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 9]);
    assert_eq!(
        run(from_b, &longer, longer.len()),
        Verdict::Drop(DropReason::Malformed),
        "trailing bytes"
    );
    // A length beyond the buffer never panics.
    assert_eq!(
        run(from_b, &good, usize::MAX),
        Verdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn validation_can_be_turned_off() {
    let table = table();
    let mut b = FlannelBackend::new(FlannelConfig {
        check_peer: false,
        check_inner_source: false,
        ..FlannelConfig::default()
    });
    let spoofed = v4_packet([100, 96, 7, 7], [100, 96, 1, 5], 64, 100, false);
    let mut buf = buffer(&spoofed);
    let v = b.handle_datagram(
        &table,
        "198.18.0.3".parse().unwrap(),
        &mut buf,
        HEADROOM,
        spoofed.len(),
        0,
    );
    assert!(matches!(v, Verdict::DeliverToDevice { .. }), "{v:?}");
}

#[test]
fn malformed_device_packets_are_counted_not_sent() {
    let table = table();
    let mut b = backend();
    for junk in [&b""[..], b"\x45", b"\x60\x00\x00\x00", &[0u8; 40][..]] {
        let mut buf = buffer(junk);
        assert_eq!(
            b.handle_device_packet(&table, &mut buf, HEADROOM, junk.len(), 0),
            Verdict::Drop(DropReason::Malformed)
        );
    }
}

#[test]
fn without_headroom_errors_are_dropped_not_written() {
    let pkt = v4_packet([100, 96, 1, 5], [100, 96, 9, 9], 64, 20, false);
    let mut buf = pkt.clone();
    let len = buf.len();
    assert_eq!(
        backend().handle_device_packet(&table(), &mut buf, 0, len, 0),
        Verdict::Drop(DropReason::NoRoute)
    );
}

#[test]
fn hostile_inputs_never_panic() {
    let table = table();
    let mut b = backend();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = v4_packet([100, 96, 2, 7], [100, 96, 1, 5], 64, 60, false);
    // Every verdict's range lies in the buffer; what is delivered or sent is a whole,
    // well-formed IP packet of the length its header says; and the generator reaches both
    // outcomes, not only drops.
    let check = |v: &Verdict, buf: &[u8]| -> bool {
        let range = match v {
            Verdict::Drop(_) => return false,
            Verdict::SendToPeer { range, .. }
            | Verdict::SendTrain { range, .. }
            | Verdict::Flood { range, .. }
            | Verdict::DeliverToDevice { range, .. }
            | Verdict::ReplyToDevice { range, .. }
            | Verdict::AnswerToDevice { range, .. }
            | Verdict::ReplyToPeer { range, .. } => range.clone(),
        };
        assert!(
            range.start <= range.end && range.end <= buf.len(),
            "{v:?} outside {} bytes",
            buf.len()
        );
        let inner = parse_inner(&buf[range.clone()]).unwrap_or_else(|| panic!("{v:?}: not IP"));
        assert_eq!(inner.len, range.len(), "{v:?}");
        true
    };
    let (mut delivered, mut sent) = (0, 0);
    for _ in 0..20_000 {
        let mut pkt = base.clone();
        let flips = next() % 6;
        for _ in 0..flips {
            let i = (next() as usize) % pkt.len();
            pkt[i] = next() as u8;
        }
        // Whole half the time, cut anywhere otherwise.
        let len = if next() % 2 == 0 {
            pkt.len()
        } else {
            (next() as usize) % (pkt.len() + 1)
        };
        let mut buf = buffer(&pkt);
        let v = b.handle_datagram(
            &table,
            B_UNDERLAY.parse().unwrap(),
            &mut buf,
            HEADROOM,
            len,
            0,
        );
        delivered += usize::from(check(&v, &buf));
        let mut buf = buffer(&pkt);
        let v = b.handle_device_packet(&table, &mut buf, HEADROOM, len, next() % 100_000);
        sent += usize::from(check(&v, &buf));
    }
    assert!(
        delivered > 1000 && sent > 100,
        "{delivered} delivered, {sent} sent or answered"
    );
}

#[test]
fn inner_destinations_never_reached_through_a_tunnel_are_dropped() {
    let table = table();
    let mut b = backend();
    let from_b: IpAddr = B_UNDERLAY.parse().unwrap();
    for dst in [[255, 255, 255, 255], [127, 0, 0, 1], [0, 0, 0, 0]] {
        let pkt = v4_packet([100, 96, 2, 7], dst, 64, 20, false);
        let mut buf = buffer(&pkt);
        let v = b.handle_datagram(&table, from_b, &mut buf, HEADROOM, pkt.len(), 0);
        assert_eq!(v, Verdict::Drop(DropReason::BadDestination), "{dst:?}");
    }
    for dst in ["::1", "::"] {
        let pkt = v6_packet("fd00:100:96:2::7", dst, 64, 20);
        let mut buf = buffer(&pkt);
        let v = b.handle_datagram(&table, from_b, &mut buf, HEADROOM, pkt.len(), 0);
        assert_eq!(v, Verdict::Drop(DropReason::BadDestination), "{dst}");
    }
}
