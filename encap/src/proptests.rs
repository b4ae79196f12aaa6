//! Property tests (proptest, stable, part of `cargo test -p weft-encap`) of what the byte
//! vectors in each module's unit tests pin down by example:
//!
//! - RFC 1624: the incremental checksum update (`checksum::update16`, the TTL decrement
//!   of `ipv4::Packet` and of the UDP backend's forwarding) against a recomputation;
//! - `SubnetTable`: longest-prefix match (IPv4 and IPv6) against a linear reference over
//!   random route sets, and the peers it derives;
//! - `Fdb`: every operation against an obvious model (capacity bound, ageing, recency
//!   order, lookups), and the VXLAN backend's use of it: a statically pinned MAC is never
//!   learned, never moves, and always goes to its VTEP;
//! - offload: splitting a super-packet and coalescing the segments gives the super-packet
//!   back (the other direction, segments -> coalesce -> split, is in
//!   `offload/proptests.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use proptest::prelude::*;

use crate::backend::{Backend, PacketBuf};
use crate::fdb::{Fdb, FdbConfig};
use crate::flannel::{FlannelBackend, FlannelConfig};
use crate::offload::vnet::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use crate::offload::{split, split_layout, Coalescer, Gso, GsoKind};
use crate::table::{Cidr, Route, SubnetTable, TableError, TableSpec};
use crate::verdict::{DropReason, Verdict};
use crate::vxlan::{VniConfig, VxlanBackend, VxlanConfig, VxlanMode};
use crate::wire::checksum::{self, fold, update16};
use crate::wire::{ipv4, EthernetAddress};

// ---------------------------------------------------------------------------------------
// RFC 1624
// ---------------------------------------------------------------------------------------

/// Bytes that are often 0x00 or 0xff, so sums sit on the carries and on 0x0000 / 0xffff.
fn edgy_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), len.clone()),
        proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff), any::<u8>()], len),
    ]
}

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A valid IPv4 header of `4 * ihl` bytes (options from `opts`), TTL `ttl`, checksum filled.
fn ipv4_header(ihl: usize, ttl: u8, fields: &[u8], opts: &[u8]) -> Vec<u8> {
    let hl = ihl * 4;
    let mut h = vec![0u8; hl];
    h[0] = 0x40 | ihl as u8;
    h[1..8].copy_from_slice(&fields[..7]);
    h[2..4].copy_from_slice(&(hl as u16).to_be_bytes());
    h[8] = ttl;
    h[9] = fields[7];
    h[12..20].copy_from_slice(&fields[8..16]);
    for (i, b) in h[20..].iter_mut().enumerate() {
        *b = opts[i % opts.len()];
    }
    let mut p = ipv4::Packet::new_checked(&mut h[..]).unwrap();
    p.fill_checksum();
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Changing one 16-bit word of checksummed data: `update16` (RFC 1624 eqn. 3) gives
    /// what a recomputation gives, and the data still verifies. (Not when the data becomes
    /// all zeros: then eqn. 3 gives 0x0000 where a recomputation gives 0xffff, both "zero"
    /// in one's complement; an IPv4 header is never all zeros.)
    #[test]
    fn update16_equals_recomputation(
        data in edgy_bytes(4..128), csum_word in any::<usize>(), word in any::<usize>(),
        new in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
    ) {
        let mut d = data;
        d.truncate(d.len() & !1);
        let words = d.len() / 2;
        let c_at = 2 * (csum_word % words);
        let mut w_at = 2 * (word % words);
        if w_at == c_at {
            w_at = (w_at + 2) % d.len();
        }
        d[c_at..c_at + 2].fill(0);
        let c = checksum::checksum(&d);
        d[c_at..c_at + 2].copy_from_slice(&c.to_be_bytes());
        prop_assert_eq!(checksum::checksum(&d), 0);
        let old = rd16(&d, w_at);
        d[w_at..w_at + 2].copy_from_slice(&new.to_be_bytes());
        let updated = update16(c, old, new);
        d[c_at..c_at + 2].fill(0);
        let recomputed = checksum::checksum(&d);
        if d.iter().all(|&b| b == 0) {
            prop_assert_eq!((updated, recomputed), (0, 0xffff));
        } else {
            prop_assert_eq!(updated, recomputed);
            d[c_at..c_at + 2].copy_from_slice(&updated.to_be_bytes());
            prop_assert_eq!(checksum::checksum(&d), 0);
        }
    }

    /// `ipv4::Packet::decrement_ttl` on random headers with options: the patched checksum
    /// is the recomputed one, for every TTL (0 wraps to 255, still consistent). Half the
    /// headers are made (through the identification field) to carry a checksum next to the
    /// one's complement edges: 0x0000, 0xffff, and 0xfeff, which becomes +0 after the update.
    #[test]
    fn decrement_ttl_equals_recomputation(
        ihl in 5usize..=15, ttl in any::<u8>(), fields in edgy_bytes(16..17),
        opts in edgy_bytes(1..8),
        target in prop_oneof![Just(None), Just(Some(0u16)), Just(Some(0xffff)), Just(Some(0xfeff)), Just(Some(0x00ff)), any::<u16>().prop_map(Some)],
    ) {
        let mut h = ipv4_header(ihl, ttl, &fields, &opts);
        if let Some(target) = target {
            // ident x and checksum `target` with everything else summing to s: valid when
            // s + x + target is 0xffff in one's complement.
            h[4..6].fill(0);
            h[10..12].fill(0);
            let s = fold(checksum::sum(&h, 0));
            let x = !fold(u64::from(s) + u64::from(target));
            h[4..6].copy_from_slice(&x.to_be_bytes());
            h[10..12].copy_from_slice(&target.to_be_bytes());
            prop_assume!(checksum::checksum(&h) == 0);
        }
        let before = h.clone();
        let mut p = ipv4::Packet::new_checked(&mut h[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(p.decrement_ttl(), ttl.wrapping_sub(1));
        prop_assert!(p.verify_checksum());
        let patched = p.checksum();
        p.fill_checksum();
        // A valid checksum that is not the computed one (0xffff where a recomputation
        // gives 0x0000) may stay so; any other must become the recomputed one.
        let canonical = {
            let mut c = before.clone();
            c[10..12].fill(0);
            checksum::checksum(&c) == rd16(&before, 10)
        };
        if canonical {
            prop_assert_eq!(p.checksum(), patched);
        }
        // Only the TTL and the checksum changed.
        prop_assert_eq!((&h[..8], h[9], &h[12..]), (&before[..8], before[9], &before[12..]));
    }

    /// The same through the UDP backend: a forwarded IPv4 packet (options, DF or not, any
    /// payload) leaves with TTL - 1 and the checksum a recomputation gives.
    #[test]
    fn forwarded_ttl_decrement_equals_recomputation(
        ihl in 5usize..=15, ttl in 2u8..=255, fields in edgy_bytes(16..17),
        opts in edgy_bytes(1..8), payload in 0usize..200, datagram in any::<bool>(),
    ) {
        let mut fields = fields;
        // From 100.96.2.x (B's) to 100.96.1.x (ours) as a datagram, or the other way as a
        // device packet; not a fragment.
        let (src, dst) = if datagram { ([100, 96, 2, 9], [100, 96, 1, 5]) } else { ([100, 96, 1, 5], [100, 96, 2, 9]) };
        fields[8..12].copy_from_slice(&src);
        fields[12..16].copy_from_slice(&dst);
        fields[5] &= 0x40;
        fields[6] = 0;
        let mut pkt = ipv4_header(ihl, ttl, &fields, &opts);
        let total = pkt.len() + payload;
        pkt.resize(total, 0x3c);
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ipv4::Packet::new_checked(&mut pkt[..]).unwrap().fill_checksum();
        let table = SubnetTable::new(1, &[
            Route { subnet: "100.96.2.0/24".parse().unwrap(), endpoint: "198.18.0.2:8285".parse().unwrap(), vtep_mac: None },
        ]).unwrap();
        let mut b = FlannelBackend::new(FlannelConfig { max_payload: 65535, ..FlannelConfig::default() });
        let mut buf = vec![0u8; 48 + total];
        buf[48..].copy_from_slice(&pkt);
        let v = if datagram {
            b.handle_datagram(&table, "198.18.0.2".parse().unwrap(), &mut buf, 48, total, 0)
        } else {
            b.handle_device_packet(&table, &mut buf, 48, total, 0)
        };
        let range = match v {
            Verdict::SendToPeer { range, .. } | Verdict::DeliverToDevice { range, .. } => range,
            other => return Err(TestCaseError::fail(format!("not forwarded: {other:?}"))),
        };
        let mut out = ipv4::Packet::new_checked(&mut buf[range]).unwrap();
        prop_assert_eq!(out.ttl(), ttl - 1);
        prop_assert!(out.verify_checksum());
        let patched = out.checksum();
        out.fill_checksum();
        prop_assert_eq!(out.checksum(), patched);
    }
}

// ---------------------------------------------------------------------------------------
// Longest-prefix match
// ---------------------------------------------------------------------------------------

/// Network bases the random routes cluster around, so that they nest and overlap.
const V4_BASES: [u32; 4] = [0x6460_0000, 0x6460_0200, 0x0a00_0000, 0xc612_0000];
const V6_BASES: [u128; 3] = [
    0xfd00_0100_0096_0000_0000_0000_0000_0000,
    0xfd00_0100_0096_0002_0000_0000_0000_0000,
    0x2001_0db8_0000_0000_0000_0000_0000_0000,
];

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// A route spec: (IPv6, base, low bits, prefix length, peer).
type RouteSpec = (bool, usize, u128, u8, u8);

fn route_specs() -> impl Strategy<Value = Vec<RouteSpec>> {
    proptest::collection::vec(
        (
            any::<bool>(),
            0usize..4,
            any::<u128>(),
            prop_oneof![0u8..=8, 8u8..=32, 16u8..=28, 40u8..=72, 0u8..=128],
            0u8..6,
        ),
        0..40,
    )
}

/// The address near base `base` with the low bits `low` (a few of them, so addresses
/// cluster and hit the routes).
fn near(v6: bool, base: usize, low: u128, spread: u32) -> IpAddr {
    if v6 {
        let b = V6_BASES[base % V6_BASES.len()];
        IpAddr::V6(Ipv6Addr::from(b ^ (low & ((1u128 << spread.min(127)) - 1))))
    } else {
        let b = V4_BASES[base % V4_BASES.len()];
        IpAddr::V4(Ipv4Addr::from(
            b ^ ((low as u32) & ((1u32 << spread.min(31)) - 1)),
        ))
    }
}

/// The routes of `specs`: networks with host bits cleared, one endpoint per subnet (the
/// first wins), peer `n` at 198.18.0.n:8285 (IPv4 and IPv6 underlays mixed).
fn routes_of(specs: &[RouteSpec]) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    for &(v6, base, low, len, peer) in specs {
        let (addr, len) = if v6 {
            let IpAddr::V6(a) = near(true, base, low, 40) else {
                unreachable!()
            };
            (IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask6(len))), len)
        } else {
            let len = len.min(32);
            let IpAddr::V4(a) = near(false, base, low, 20) else {
                unreachable!()
            };
            (IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask4(len))), len)
        };
        let subnet = Cidr::new(addr, len).unwrap();
        if routes.iter().any(|r| r.subnet == subnet) {
            continue;
        }
        let endpoint = if peer == 5 {
            "[fd00:198:18::5]:8285".parse().unwrap()
        } else {
            SocketAddr::from(([198, 18, 0, peer], 8285))
        };
        routes.push(Route {
            subnet,
            endpoint,
            vtep_mac: None,
        });
    }
    routes
}

/// Longest-prefix match the linear way.
fn linear_lookup(routes: &[Route], a: IpAddr) -> Option<SocketAddr> {
    let contains = |r: &Route| match (r.subnet.addr(), a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            u32::from(a) & mask4(r.subnet.prefix_len()) == u32::from(n)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            u128::from(a) & mask6(r.subnet.prefix_len()) == u128::from(n)
        }
        _ => false,
    };
    routes
        .iter()
        .filter(|r| contains(r))
        .max_by_key(|r| r.subnet.prefix_len())
        .map(|r| r.endpoint)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `SubnetTable::lookup` (one hash map per prefix length, longest first) agrees with a
    /// linear scan for addresses near, inside, at the edges of and outside the routes; the
    /// peers group the routes by endpoint and own exactly their subnets.
    #[test]
    fn lpm_matches_linear_reference(
        specs in route_specs(),
        probes in proptest::collection::vec((any::<bool>(), 0usize..4, any::<u128>(), 0u32..40), 1..60),
    ) {
        let routes = routes_of(&specs);
        let table = SubnetTable::new(3, &routes).unwrap();
        prop_assert_eq!(table.routes().len(), routes.len());
        prop_assert!(table.routes().windows(2).all(|w| w[0].subnet < w[1].subnet));
        let mut addrs: Vec<IpAddr> = probes.iter().map(|&(v6, b, low, spread)| near(v6, b, low, spread)).collect();
        for r in &routes {
            // The first and last address of every route, and one past each end.
            match r.subnet.addr() {
                IpAddr::V4(n) => {
                    let n = u32::from(n);
                    let last = n | !mask4(r.subnet.prefix_len());
                    addrs.extend([n, last, n.wrapping_sub(1), last.wrapping_add(1)].map(|a| IpAddr::V4(a.into())));
                }
                IpAddr::V6(n) => {
                    let n = u128::from(n);
                    let last = n | !mask6(r.subnet.prefix_len());
                    addrs.extend([n, last, n.wrapping_sub(1), last.wrapping_add(1)].map(|a| IpAddr::V6(a.into())));
                }
            }
        }
        for a in addrs {
            let got = table.lookup(a).map(|id| table.peer(id).unwrap().endpoint);
            prop_assert_eq!(got, linear_lookup(&routes, a), "lookup({})", a);
            match a {
                IpAddr::V4(v4) => prop_assert_eq!(table.lookup_v4(v4), table.lookup(a)),
                IpAddr::V6(v6) => prop_assert_eq!(table.lookup_v6(v6), table.lookup(a)),
            }
        }
        for r in &routes {
            let id = table.peer_by_endpoint(r.endpoint.ip()).unwrap();
            let peer = table.peer(id).unwrap();
            prop_assert_eq!(peer.endpoint, r.endpoint);
            prop_assert!(peer.subnets.contains(&r.subnet));
            prop_assert!(peer.owns(r.subnet.addr()));
        }
        let peers: std::collections::HashSet<SocketAddr> = routes.iter().map(|r| r.endpoint).collect();
        prop_assert_eq!(table.peers().len(), peers.len());
        prop_assert_eq!(table.flood_peers().len(), peers.len());
    }

    /// The same subnet routed to two endpoints is refused; routed twice to one, merged.
    #[test]
    fn duplicate_subnets(specs in route_specs(), pick in any::<usize>()) {
        let routes = routes_of(&specs);
        prop_assume!(!routes.is_empty());
        let r = routes[pick % routes.len()];
        let other = SocketAddr::from(([198, 18, 1, 1], 8285));
        let mut dup = routes.clone();
        dup.push(Route { endpoint: other, ..r });
        prop_assert_eq!(SubnetTable::new(0, &dup).unwrap_err(), TableError::DuplicateSubnet(r.subnet));
        let mut same = routes.clone();
        same.push(r);
        prop_assert_eq!(SubnetTable::new(0, &same).unwrap().routes().len(), routes.len());
    }
}

// ---------------------------------------------------------------------------------------
// FDB
// ---------------------------------------------------------------------------------------

use crate::fdb::model::Model as FdbModel;

/// MAC `n`: a few unicast addresses, the all-zero one and group addresses.
fn fdb_mac(n: u8) -> EthernetAddress {
    match n % 12 {
        9 => EthernetAddress::default(),
        10 => EthernetAddress::BROADCAST,
        11 => EthernetAddress([0x33, 0x33, 0, 0, 0, n]),
        k => EthernetAddress([0x02, 0, 0, 0, 0x10, k]),
    }
}

fn fdb_vtep(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 1 + n % 4], 8472))
}

#[derive(Debug, Clone)]
enum FdbOp {
    Learn(u8, u8),
    Lookup(u8),
    Expire,
    RemoveEndpoint(u8),
}

fn fdb_ops() -> impl Strategy<Value = Vec<(FdbOp, u16, bool)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                6 => (any::<u8>(), any::<u8>()).prop_map(|(m, v)| FdbOp::Learn(m, v)),
                4 => any::<u8>().prop_map(FdbOp::Lookup),
                1 => Just(FdbOp::Expire),
                1 => any::<u8>().prop_map(FdbOp::RemoveEndpoint),
            ],
            prop_oneof![Just(0u16), 0u16..20, 0u16..400],
            prop_oneof![9 => Just(false), 1 => Just(true)],
        ),
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every `Fdb` operation against `FdbModel`: the same results and the same entries in
    /// the same recency order; at most `max_entries`; `last_seen` never increases from the
    /// most to the least recently learned (so ageing pops a suffix); after `expire` nothing
    /// aged is left; a lookup never returns an aged entry; time never runs backward.
    #[test]
    fn fdb_matches_model(
        max in prop_oneof![Just(0usize), 1usize..4, 4usize..10],
        ageing in prop_oneof![Just(0u64), Just(1), 10u64..100, Just(1000)],
        ops in fdb_ops(),
    ) {
        let mut f = Fdb::new(FdbConfig { max_entries: max, ageing_ms: ageing });
        let mut m = FdbModel::new(max, ageing);
        let mut now = 0u64;
        for (op, dt, stale) in ops {
            now += u64::from(dt);
            // Now and then a time from the past.
            let t = if stale { now.saturating_sub(150) } else { now };
            match op {
                FdbOp::Learn(a, v) => prop_assert_eq!(f.learn(fdb_mac(a), fdb_vtep(v), t), m.learn(fdb_mac(a), fdb_vtep(v), t)),
                FdbOp::Lookup(a) => {
                    let got = f.lookup(&fdb_mac(a), t);
                    prop_assert_eq!(got, m.lookup(&fdb_mac(a), t));
                }
                FdbOp::Expire => {
                    prop_assert_eq!(f.expire(t), m.expire(t));
                    prop_assert!(f.entries().all(|(_, _, seen)| ageing == 0 || m.now - seen < ageing));
                }
                FdbOp::RemoveEndpoint(v) => prop_assert_eq!(f.remove_endpoint(fdb_vtep(v)), m.remove_endpoint(fdb_vtep(v))),
            }
            let listing: Vec<_> = f.entries().collect();
            prop_assert!(f.len() <= max);
            prop_assert_eq!(f.len(), listing.len());
            prop_assert_eq!(&listing, &m.entries);
            prop_assert!(listing.windows(2).all(|w| w[0].2 >= w[1].2));
            prop_assert!(listing.iter().all(|(mac, _, _)| mac.is_unicast() && *mac != EthernetAddress::default()));
        }
    }
}

// The VXLAN backend's L2 forwarding over its FDB.

const MAC_TAP: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0a, 0]);
/// Pinned behind VTEP 198.18.0.2 (a heard VTEP) and 198.18.0.9 (known only from its static
/// entry).
const PINNED: [(EthernetAddress, [u8; 4]); 2] = [
    (EthernetAddress([0x02, 0, 0, 0, 0x0c, 1]), [198, 18, 0, 2]),
    (EthernetAddress([0x02, 0, 0, 0, 0x0c, 2]), [198, 18, 0, 9]),
];

/// MAC `n` of the L2 property: the pinned ones, a few others, group addresses.
fn l2_mac(n: u8) -> EthernetAddress {
    match n % 8 {
        0 | 1 => PINNED[usize::from(n % 8)].0,
        6 => EthernetAddress::BROADCAST,
        7 => EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]),
        k => EthernetAddress([0x02, 0, 0, 0, 0x20, k]),
    }
}

/// A frame from `src` to `dst`, 60 bytes.
fn l2_frame(dst: EthernetAddress, src: EthernetAddress) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The VXLAN backend in L2 mode, frames received from VTEPs and frames from the TAP,
    /// against `FdbModel` plus the static entries: a frame to a pinned MAC always goes to
    /// its VTEP; a frame from a pinned MAC through another VTEP is dropped as spoofed and
    /// learns nothing, through its own VTEP it is delivered and learns nothing either; any
    /// other unicast source is learned (VTEP address, the VXLAN port); a frame to a learned
    /// MAC goes to where the model says, anything else is flooded; the FDB stays bounded
    /// and never holds a pinned MAC.
    #[test]
    fn vxlan_l2_static_entries_are_never_learned_over(
        max in 1usize..6, ageing in prop_oneof![Just(0u64), 50u64..2000],
        steps in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<u8>(), 0u8..4, 0u16..300, any::<u16>()), 0..80),
    ) {
        let vni = VniConfig {
            vni: 7,
            mode: VxlanMode::L2,
            vtep_mac: MAC_TAP,
            local_v4: None,
            local_v6: None,
            fdb: FdbConfig { max_entries: max, ageing_ms: ageing },
            device: None,
        };
        let mut b = VxlanBackend::new(VxlanConfig { vnis: vec![vni], check_peer: false, ..VxlanConfig::default() });
        let spec = TableSpec {
            routes: vec![],
            vteps: vec!["198.18.0.2:8472".parse().unwrap(), "198.18.0.3:8472".parse().unwrap()],
            fdb: PINNED.iter().map(|&(m, ip)| (m, SocketAddr::from((ip, 8472)))).collect(),
        };
        let tables = [Arc::new(SubnetTable::build(1, &spec).unwrap())];
        let mut model = FdbModel::new(max, ageing);
        let mut now = 0u64;
        for (received, a, c, vtep, dt, port) in steps {
            now += u64::from(dt);
            let (x, y) = (l2_mac(a), l2_mac(c));
            let vtep_ip = [198, 18, 0, [2, 3, 9, 77][usize::from(vtep)]];
            let mut buf = vec![0u8; 48 + 8 + 60];
            if received {
                // A frame from `x` to `y` through VTEP `vtep_ip`, from a hashed port.
                buf[48..56].copy_from_slice(&[0x08, 0, 0, 0, 0, 0, 7, 0]);
                buf[56..].copy_from_slice(&l2_frame(y, x));
                let source = SocketAddr::from((vtep_ip, port));
                let pkt = PacketBuf::new(&mut buf, 48, 68).unwrap();
                let v = b.handle_datagram(&tables, source, pkt, now);
                let pinned = PINNED.iter().find(|p| p.0 == x);
                if !x.is_unicast() || x == EthernetAddress::default() {
                    prop_assert_eq!(v, Verdict::Drop(DropReason::Malformed));
                } else if pinned.is_some_and(|p| p.1 != vtep_ip) {
                    prop_assert_eq!(v, Verdict::Drop(DropReason::SpoofedSource));
                } else {
                    prop_assert_eq!(v, Verdict::DeliverToDevice { device: 0, range: 56..116 });
                    if pinned.is_none() {
                        model.learn(x, SocketAddr::from((vtep_ip, 8472)), now);
                    }
                }
            } else {
                // A frame from the TAP to `y`.
                buf[48..108].copy_from_slice(&l2_frame(y, x));
                let pkt = PacketBuf::new(&mut buf, 48, 60).unwrap();
                let v = b.handle_device_packet(&tables, 0, pkt, now);
                let range = 40..108;
                let expected = match PINNED.iter().find(|p| p.0 == y) {
                    Some(&(_, ip)) => Some(SocketAddr::from((ip, 8472))),
                    None if y.is_unicast() => model.lookup(&y, now),
                    None => None,
                };
                match (v, expected) {
                    (Verdict::SendToPeer { dest, range: r, .. }, Some(e)) => {
                        prop_assert_eq!((dest, r), (e, range));
                    }
                    (Verdict::Flood { device: 0, range: r, .. }, None) => prop_assert_eq!(r, range),
                    (v, e) => return Err(TestCaseError::fail(format!("{v:?}, expected {e:?}"))),
                }
            }
            let f = b.fdb(0).unwrap();
            prop_assert!(f.len() <= max);
            for (m, ep, _) in f.entries() {
                prop_assert!(PINNED.iter().all(|p| p.0 != m), "learned pinned {}", m);
                prop_assert_eq!(ep.port(), 8472);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Split, then coalesce
// ---------------------------------------------------------------------------------------

/// A super-packet as the kernel hands it over: IPv4 (DF or not, sequential IDs expected)
/// or IPv6, TCP (ACK or ACK|PSH, options) or UDP, the L4 checksum field holding the folded
/// pseudo-header sum (a partial checksum).
fn super_packet(v6: bool, udp: bool, df: bool, psh: bool, opts: usize, payload: &[u8]) -> Vec<u8> {
    let l4_hdr = if udp { 8 } else { 20 + opts * 4 };
    let l4_len = l4_hdr + payload.len();
    let mut p = Vec::new();
    let proto = if udp { 17u8 } else { 6 };
    if v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, if df { 0x40 } else { 0 }, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&[10, 244, 1, 5, 10, 244, 2, 9]);
        let c = checksum::checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let ip_hdr = p.len();
    p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    if udp {
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
    } else {
        p.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 1]);
        p.push(((l4_hdr / 4) << 4) as u8);
        p.push(if psh { 0x18 } else { 0x10 });
        p.extend_from_slice(&[0x01, 0xf6, 0, 0, 0, 0]);
        p.extend(std::iter::repeat_n(1u8, opts * 4)); // NOPs
    }
    p.extend_from_slice(payload);
    let pseudo = if v6 {
        let a = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap());
        checksum::pseudo_header_v6(&a(8), &a(24), proto, l4_len as u32)
    } else {
        let a = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
        checksum::pseudo_header_v4(a(12), a(16), proto, l4_len as u32)
    };
    let at = ip_hdr + if udp { 6 } else { 16 };
    p[at..at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Split-then-coalesce identity: a TCP or UDP super-packet (IPv4 or IPv6, behind a
    /// prefix) cut by `split` into `gso_size` segments, pushed through a `Coalescer`, comes
    /// back as one group whose bytes are the super-packet, byte for byte (partial checksum
    /// included), under a vnet header that says what the kernel said: the GSO type and
    /// size, `NEEDS_CSUM` at the L4 checksum, the header length.
    #[test]
    fn split_then_coalesce_is_identity(
        v6 in any::<bool>(), udp in any::<bool>(), df in any::<bool>(), psh in any::<bool>(),
        opts in 0usize..=10, mss in 1usize..1500, n in 2usize..40, last in 1usize..1500,
        l3 in prop_oneof![Just(0usize), Just(14), Just(22)], seed in any::<u8>(),
    ) {
        let last = last.min(mss);
        let payload: Vec<u8> = (0..(n - 1) * mss + last).map(|i| (i * 31) as u8 ^ seed).collect();
        let sup = [vec![0xee; l3], super_packet(v6, udp, df, psh, if udp { 0 } else { opts }, &payload)].concat();
        prop_assume!(sup.len() - l3 <= 65_535);
        let kind = match (udp, v6) {
            (true, _) => GsoKind::UdpL4,
            (false, false) => GsoKind::TcpV4,
            (false, true) => GsoKind::TcpV6,
        };
        let gso = Gso { kind, size: mss as u16 };
        let lay = split_layout(&sup, l3, gso).unwrap();
        prop_assert_eq!(lay.segments, n);
        let mut out = vec![0u8; lay.total_len];
        split(&sup, l3, gso, &mut out).unwrap();
        let segs: Vec<&[u8]> = out.chunks(lay.segment_len).collect();
        let mut c = Coalescer::new(n);
        c.set_udp(udp);
        for (i, s) in segs.iter().enumerate() {
            prop_assert!(c.push(i as u32, s, l3));
        }
        let groups: Vec<_> = c.groups().collect();
        prop_assert_eq!(groups.len(), 1, "one group");
        let g = &groups[0];
        prop_assert!(g.is_merged());
        prop_assert_eq!(g.members.len(), n);
        let mut bytes = g.header.to_vec();
        for m in g.members {
            bytes.extend_from_slice(&segs[m.id as usize][m.range.clone()]);
        }
        prop_assert_eq!(&bytes, &sup, "coalesced != the super-packet");
        let ip_hdr = if v6 { 40 } else { 20 };
        let l4_hdr = if udp { 8 } else { 20 + opts * 4 };
        prop_assert_eq!(g.hdr.flags, F_NEEDS_CSUM);
        prop_assert_eq!(g.hdr.gso_type, match kind { GsoKind::UdpL4 => GSO_UDP_L4, GsoKind::TcpV4 => GSO_TCPV4, _ => GSO_TCPV6 });
        prop_assert_eq!(usize::from(g.hdr.gso_size), mss);
        prop_assert_eq!(usize::from(g.hdr.csum_start), l3 + ip_hdr);
        prop_assert_eq!(g.hdr.csum_offset, if udp { 6 } else { 16 });
        prop_assert_eq!(usize::from(g.hdr.hdr_len), l3 + ip_hdr + l4_hdr);
        prop_assert_eq!(g.hdr.gso(), Ok(Some(gso)));
    }
}
