//! Synthetic inputs for the micro-benchmarks: well-formed packets and cluster-sized routing
//! tables, as plain bytes and values (nothing here touches a device or a socket).
//!
//! ## Address plan
//! A benchmark cluster follows the testbed's numbering and stretches it to large tables:
//!
//! - host `N` leases the IPv4 `/24` number `N` counted from `100.96.0.0` inside the flannel
//!   network `100.64.0.0/10` (which holds 16,384 `/24` leases), wrapping from
//!   `100.127.255.0/24` to `100.64.0.0/24`. Hosts 0-255 are therefore exactly the testbed's
//!   `100.96.N.0/24` ([`lease_v4`]);
//! - host `N` is reached at `198.18.0.0 + N`, port 8285, inside the `198.18.0.0/15`
//!   benchmark range, so host 2 is `198.18.0.2:8285` as in the testbed ([`endpoint_v4`]);
//! - IPv6: host `N` leases `fd00:100:96:N::/64` and is reached at `[fd00:198:18::N]:8285`.
//!
//! The benchmarks run on [`LOCAL_HOST`] and send to [`REMOTE_HOST`]. A table of `count`
//! remote routes ([`remote_routes_v4`]) always contains the remote host's route and never
//! the local host's own lease, as flannel's would.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use weft_encap::table::{Cidr, Route, SubnetTable};
use weft_encap::wire::{ipv4, ipv6, udp, PROTO_UDP};

/// The host the benchmarks run on (lease `100.96.1.0/24`).
pub const LOCAL_HOST: u16 = 1;
/// The host the benchmark packets go to (lease `100.96.2.0/24`, endpoint `198.18.0.2:8285`).
pub const REMOTE_HOST: u16 = 2;
/// A host number with no lease in any table built here (for lookup misses).
pub const UNLEASED_HOST: u16 = 16_000;
/// How many IPv4 `/24` leases the cluster network `100.64.0.0/10` holds.
pub const MAX_HOSTS_V4: usize = 1 << 14;
/// The flannel UDP port every endpoint uses.
pub const PORT: u16 = 8285;

/// The first address of the cluster network `100.64.0.0/10`.
const NETWORK_V4: u32 = 0x6440_0000;
/// `100.96.0.0`, where host 0's lease starts.
const HOST0_V4: u32 = 0x6460_0000;
/// `198.18.0.0`, where the underlay endpoints start.
const UNDERLAY_V4: u32 = 0xC612_0000;

/// The IPv4 `/24` leased by host `host` (`100.96.<host>.0/24` for hosts 0-255).
///
/// # Panics
/// If `host` is [`MAX_HOSTS_V4`] or more (the cluster network has no room for it).
pub fn lease_v4(host: u16) -> Cidr {
    assert!(
        usize::from(host) < MAX_HOSTS_V4,
        "host {host}: the /10 holds 16,384 /24s"
    );
    let offset = (HOST0_V4 - NETWORK_V4 + (u32::from(host) << 8)) % (1 << 22);
    Cidr::new(IpAddr::V4(Ipv4Addr::from(NETWORK_V4 + offset)), 24).expect("a /24 network")
}

/// The address `last` inside host `host`'s IPv4 lease, e.g. `100.96.2.7` for `(2, 7)`.
pub fn host_addr_v4(host: u16, last: u8) -> Ipv4Addr {
    match lease_v4(host).addr() {
        IpAddr::V4(net) => Ipv4Addr::from(u32::from(net) + u32::from(last)),
        IpAddr::V6(_) => unreachable!("lease_v4 is IPv4"),
    }
}

/// Host `host`'s underlay endpoint, `198.18.0.0 + host`, port [`PORT`].
pub fn endpoint_v4(host: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(UNDERLAY_V4 + u32::from(host))),
        PORT,
    )
}

/// The IPv6 `/64` leased by host `host`: `fd00:100:96:<host>::/64`.
pub fn lease_v6(host: u16) -> Cidr {
    let net = Ipv6Addr::new(0xfd00, 0x100, 0x96, host, 0, 0, 0, 0);
    Cidr::new(IpAddr::V6(net), 64).expect("a /64 network")
}

/// The address `fd00:100:96:<host>::<last>` inside host `host`'s IPv6 lease.
pub fn host_addr_v6(host: u16, last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x100, 0x96, host, 0, 0, 0, last)
}

/// Host `host`'s IPv6 underlay endpoint, `[fd00:198:18::<host>]:8285`.
pub fn endpoint_v6(host: u16) -> SocketAddr {
    let ip = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, host);
    SocketAddr::new(IpAddr::V6(ip), PORT)
}

/// The hosts of a table of `count` remote routes: [`REMOTE_HOST`] first, then every other
/// host in ascending order, never [`LOCAL_HOST`] or [`UNLEASED_HOST`].
fn remote_hosts(count: usize, max_hosts: usize) -> impl Iterator<Item = u16> {
    assert!(
        count >= 1,
        "a table of remote routes holds at least the remote host"
    );
    // Two hosts are never remote routes: the local one and the one kept unleased.
    assert!(
        count <= max_hosts - 2,
        "{count} routes do not fit the address plan"
    );
    let others = (0..=u16::MAX)
        .take(max_hosts)
        .filter(|&h| h != LOCAL_HOST && h != REMOTE_HOST && h != UNLEASED_HOST);
    std::iter::once(REMOTE_HOST).chain(others).take(count)
}

/// `count` IPv4 routes of the cluster as the local host sees them: the remote host's
/// (`100.96.2.0/24` via `198.18.0.2:8285`) and `count - 1` other leases.
///
/// # Panics
/// If `count` is 0 or more than [`MAX_HOSTS_V4`] - 2.
pub fn remote_routes_v4(count: usize) -> Vec<Route> {
    remote_hosts(count, MAX_HOSTS_V4)
        .map(|h| Route {
            subnet: lease_v4(h),
            endpoint: endpoint_v4(h),
            vtep_mac: None,
        })
        .collect()
}

/// `count` IPv6 routes, likewise (`fd00:100:96:2::/64` via `[fd00:198:18::2]:8285` first).
///
/// # Panics
/// If `count` is 0 or more than 65,534.
pub fn remote_routes_v6(count: usize) -> Vec<Route> {
    remote_hosts(count, 1 << 16)
        .map(|h| Route {
            subnet: lease_v6(h),
            endpoint: endpoint_v6(h),
            vtep_mac: None,
        })
        .collect()
}

/// A routing snapshot of `routes` (generation 1).
///
/// # Panics
/// If the routes do not form a table (they always do when built by this module).
pub fn table(routes: &[Route]) -> SubnetTable {
    SubnetTable::new(1, routes).expect("the address plan has no duplicate subnets")
}

/// An IPv4/UDP packet of exactly `total_len` bytes from `src` to `dst`: TTL 64, DF set,
/// ports 40000 -> 5201, a counting payload, both checksums filled.
///
/// # Panics
/// If `total_len` is below 28 (the two headers) or above 65535.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, total_len: usize) -> Vec<u8> {
    let header = ipv4::HEADER_LEN + udp::HEADER_LEN;
    assert!(
        (header..=65535).contains(&total_len),
        "IPv4/UDP length {total_len}"
    );
    let mut bytes = vec![0u8; total_len];
    let ip = ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: PROTO_UDP,
        payload_len: total_len - ipv4::HEADER_LEN,
        ttl: 64,
    };
    let mut packet = ipv4::Packet::new_unchecked(&mut bytes[..]);
    ip.emit(&mut packet);
    packet.set_flags_and_frag_offset(true, false, 0);
    packet.fill_checksum();
    fill_udp(packet.payload_mut(), IpAddr::V4(src), IpAddr::V4(dst));
    bytes
}

/// An IPv6/UDP packet of exactly `total_len` bytes from `src` to `dst`: hop limit 64,
/// ports 40000 -> 5201, a counting payload, the UDP checksum filled.
///
/// # Panics
/// If `total_len` is below 48 (the two headers) or above 65575.
pub fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, total_len: usize) -> Vec<u8> {
    let header = ipv6::HEADER_LEN + udp::HEADER_LEN;
    assert!(
        (header..=65535 + ipv6::HEADER_LEN).contains(&total_len),
        "IPv6/UDP length {total_len}"
    );
    let mut bytes = vec![0u8; total_len];
    let ip = ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: PROTO_UDP,
        payload_len: total_len - ipv6::HEADER_LEN,
        hop_limit: 64,
    };
    ip.emit(&mut ipv6::Packet::new_unchecked(&mut bytes[..]));
    fill_udp(
        &mut bytes[ipv6::HEADER_LEN..],
        IpAddr::V6(src),
        IpAddr::V6(dst),
    );
    bytes
}

/// Writes a UDP header over all of `datagram`, a counting payload and the checksum.
fn fill_udp(datagram: &mut [u8], src: IpAddr, dst: IpAddr) {
    for (i, byte) in datagram.iter_mut().enumerate().skip(udp::HEADER_LEN) {
        *byte = i as u8;
    }
    let repr = udp::Repr {
        src_port: 40000,
        dst_port: 5201,
        payload_len: datagram.len() - udp::HEADER_LEN,
    };
    let mut datagram = udp::Packet::new_unchecked(datagram);
    repr.emit(&mut datagram);
    datagram.fill_checksum(src, dst);
}

/// `packet` behind `headroom` zero bytes, the buffer layout the data path works in
/// (`buf[headroom..]` is the packet).
pub fn with_headroom(packet: &[u8], headroom: usize) -> Vec<u8> {
    let mut buf = vec![0u8; headroom + packet.len()];
    buf[headroom..].copy_from_slice(packet);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_encap::wire::checksum;

    #[test]
    fn address_plan_matches_the_testbed_for_small_hosts() {
        assert_eq!(lease_v4(0).to_string(), "100.96.0.0/24");
        assert_eq!(lease_v4(REMOTE_HOST).to_string(), "100.96.2.0/24");
        assert_eq!(lease_v4(256).to_string(), "100.97.0.0/24");
        assert_eq!(lease_v4(8191).to_string(), "100.127.255.0/24");
        assert_eq!(lease_v4(8192).to_string(), "100.64.0.0/24");
        assert_eq!(lease_v4(16383).to_string(), "100.95.255.0/24");
        assert_eq!(host_addr_v4(2, 7), Ipv4Addr::new(100, 96, 2, 7));
        assert_eq!(endpoint_v4(REMOTE_HOST), "198.18.0.2:8285".parse().unwrap());
        assert_eq!(lease_v6(2).to_string(), "fd00:100:96:2::/64");
        assert_eq!(endpoint_v6(2), "[fd00:198:18::2]:8285".parse().unwrap());
    }

    #[test]
    fn remote_tables_hold_the_remote_host_and_never_the_local_one() {
        for count in [1, 10_000, MAX_HOSTS_V4 - 2] {
            let t = table(&remote_routes_v4(count));
            assert_eq!(t.routes().len(), count);
            let peer = t.lookup_v4(host_addr_v4(REMOTE_HOST, 7)).unwrap();
            assert_eq!(t.peer(peer).unwrap().endpoint, endpoint_v4(REMOTE_HOST));
            assert_eq!(t.lookup_v4(host_addr_v4(LOCAL_HOST, 5)), None);
            assert_eq!(t.lookup_v4(host_addr_v4(UNLEASED_HOST, 1)), None);
        }
        let t = table(&remote_routes_v6(10_000));
        assert_eq!(t.routes().len(), 10_000);
        assert!(t.lookup_v6(host_addr_v6(REMOTE_HOST, 7)).is_some());
        assert_eq!(t.lookup_v6(host_addr_v6(UNLEASED_HOST, 1)), None);
    }

    #[test]
    fn packets_are_well_formed_with_valid_checksums() {
        let (src, dst) = (host_addr_v4(1, 5), host_addr_v4(2, 7));
        for len in [28, 64, 1400] {
            let bytes = ipv4_udp(src, dst, len);
            let p = ipv4::Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(usize::from(p.total_len()), len);
            assert!(p.verify_checksum() && p.dont_frag() && p.ttl() == 64);
            let d = udp::Packet::new_checked(p.payload()).unwrap();
            assert!(d.verify_checksum(src.into(), dst.into()));
        }
        let (src, dst) = (host_addr_v6(1, 5), host_addr_v6(2, 7));
        let bytes = ipv6_udp(src, dst, 1400);
        let p = ipv6::Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.total_len(), 1400);
        let d = udp::Packet::new_checked(p.payload()).unwrap();
        assert!(d.verify_checksum(src.into(), dst.into()));
        // The IPv4 header checksum over the whole header is 0 when correct.
        let bytes = ipv4_udp(host_addr_v4(1, 5), host_addr_v4(2, 7), 64);
        assert_eq!(checksum::checksum(&bytes[..ipv4::HEADER_LEN]), 0);
    }

    #[test]
    fn headroom_puts_the_packet_at_the_end() {
        let buf = with_headroom(&[1, 2, 3], 4);
        assert_eq!(buf, [0, 0, 0, 0, 1, 2, 3]);
    }
}
