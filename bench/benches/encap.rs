//! Micro-benchmarks of the pure data path (`weft-encap`): what one packet costs before any
//! system call.
//!
//! - `encap/<size>/<routes>`: `FlannelBackend::handle_device_packet` on an IPv4/UDP packet
//!   read from the device (64 or 1400 bytes), with 1 or 10,000 remote `/24` routes;
//! - `decap/<size>/<routes>`: `FlannelBackend::handle_datagram` on the same packet arriving
//!   from the peer that owns its source (peer and inner-source checks on, as by default);
//! - `lookup_v4/...`, `lookup_v6/...`: `SubnetTable::lookup_v4` / `lookup_v6`, hits and misses,
//!   one address at a time, and hits spread over 4,096 leases (4,096 buckets, not one hot one);
//! - `icmp/...`: `icmp::write_error` (net unreachable about a 1400-byte packet, IPv4 and IPv6);
//! - `checksum/1400B`: a full Internet checksum over 1400 bytes.
//!
//! Tables and packets come from `weft_bench::packets` (host 1 sends to host 2, as in the
//! testbed). Each encap/decap benchmark first checks the verdict it is about to time, so a
//! change that turns the fast path into a drop fails here instead of looking fast.
//!
//! The packet is modified in place (its TTL is decremented, with an incremental checksum
//! update). Each iteration undoes that by storing back the TTL byte and the two checksum
//! bytes saved beforehand: three byte stores inside the timed closure, cheaper and more
//! faithful than `iter_batched` with a fresh copy (which would time a 1400-byte memcpy's
//! cache effects and criterion's batching instead). Nothing in a timed closure allocates.
//!
//! Full run: `cargo bench -p weft-bench --bench encap`.
//! Short mode (CI): `cargo bench -p weft-bench --bench encap -- --warm-up-time 0.5
//! --measurement-time 1`; add a filter such as `encap/` to run one group.
#![allow(missing_docs)] // criterion_group! / criterion_main! generate undocumented items.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weft_bench::packets::{
    self, endpoint_v4, host_addr_v4, host_addr_v6, ipv4_udp, ipv6_udp, remote_routes_v4,
    remote_routes_v6, with_headroom, LOCAL_HOST, REMOTE_HOST, UNLEASED_HOST,
};
use weft_encap::flannel::{FlannelBackend, FlannelConfig, HEADROOM};
use weft_encap::icmp::{self, IcmpErrorKind};
use weft_encap::table::SubnetTable;
use weft_encap::verdict::Verdict;
use weft_encap::wire::checksum;

/// Inner packet sizes (IPv4 total length).
const SIZES: [usize; 2] = [64, 1400];
/// Table sizes (remote `/24` routes).
const ROUTE_COUNTS: [usize; 2] = [1, 10_000];
/// Offset of the IPv4 TTL byte.
const TTL: usize = 8;
/// Offset of the IPv4 header checksum.
const IP_CHECKSUM: usize = 10;

/// A packet in a data-path buffer, with what it takes to undo the in-place TTL decrement.
struct InPlace {
    buf: Vec<u8>,
    len: usize,
    ttl: u8,
    checksum: [u8; 2],
}

impl InPlace {
    fn new(packet: &[u8]) -> InPlace {
        let buf = with_headroom(packet, HEADROOM);
        let at = HEADROOM + IP_CHECKSUM;
        InPlace {
            ttl: buf[HEADROOM + TTL],
            checksum: [buf[at], buf[at + 1]],
            len: packet.len(),
            buf,
        }
    }

    /// Restores the TTL and header checksum (three byte stores, no copy of the packet).
    #[inline(always)]
    fn reset(&mut self) {
        self.buf[HEADROOM + TTL] = self.ttl;
        self.buf[HEADROOM + IP_CHECKSUM] = self.checksum[0];
        self.buf[HEADROOM + IP_CHECKSUM + 1] = self.checksum[1];
    }
}

/// The backend as the daemon configures it (checks on, 1500-byte underlay).
fn backend() -> FlannelBackend {
    FlannelBackend::new(FlannelConfig {
        local_v4: Some(host_addr_v4(LOCAL_HOST, 0)),
        ..FlannelConfig::default()
    })
}

fn tables() -> Vec<(usize, SubnetTable)> {
    ROUTE_COUNTS
        .iter()
        .map(|&n| (n, packets::table(&remote_routes_v4(n))))
        .collect()
}

fn encap_decap(c: &mut Criterion, tables: &[(usize, SubnetTable)]) {
    let outbound: Vec<(usize, Vec<u8>)> = SIZES
        .iter()
        .map(|&size| {
            (
                size,
                ipv4_udp(
                    host_addr_v4(LOCAL_HOST, 5),
                    host_addr_v4(REMOTE_HOST, 7),
                    size,
                ),
            )
        })
        .collect();
    let inbound: Vec<(usize, Vec<u8>)> = SIZES
        .iter()
        .map(|&size| {
            (
                size,
                ipv4_udp(
                    host_addr_v4(REMOTE_HOST, 7),
                    host_addr_v4(LOCAL_HOST, 5),
                    size,
                ),
            )
        })
        .collect();
    let peer_ip: IpAddr = endpoint_v4(REMOTE_HOST).ip();

    // ElementsAndBytes: criterion prints packets/s and bytes/s for each benchmark.
    let mut group = c.benchmark_group("encap");
    for (size, packet) in &outbound {
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: *size as u64,
        });
        for (routes, table) in tables {
            let mut backend = backend();
            let mut p = InPlace::new(packet);
            let verdict = backend.handle_device_packet(table, &mut p.buf, HEADROOM, p.len, 0);
            assert!(
                matches!(verdict, Verdict::SendToPeer { .. }),
                "encap: {verdict:?}"
            );
            p.reset();
            let id = BenchmarkId::new(format!("{size}B"), format!("{routes}_routes"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    let verdict = backend.handle_device_packet(
                        black_box(table),
                        black_box(&mut p.buf),
                        HEADROOM,
                        p.len,
                        0,
                    );
                    p.reset();
                    verdict
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("decap");
    for (size, packet) in &inbound {
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: *size as u64,
        });
        for (routes, table) in tables {
            let mut backend = backend();
            let mut p = InPlace::new(packet);
            let verdict = backend.handle_datagram(table, peer_ip, &mut p.buf, HEADROOM, p.len, 0);
            assert!(
                matches!(verdict, Verdict::DeliverToDevice { .. }),
                "decap: {verdict:?}"
            );
            p.reset();
            let id = BenchmarkId::new(format!("{size}B"), format!("{routes}_routes"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    let verdict = backend.handle_datagram(
                        black_box(table),
                        black_box(peer_ip),
                        black_box(&mut p.buf),
                        HEADROOM,
                        p.len,
                        0,
                    );
                    p.reset();
                    verdict
                })
            });
        }
    }
    group.finish();
}

fn lookups(c: &mut Criterion, tables: &[(usize, SubnetTable)]) {
    let mut group = c.benchmark_group("lookup_v4");
    let hit = host_addr_v4(REMOTE_HOST, 7);
    let miss = host_addr_v4(UNLEASED_HOST, 1);
    for (routes, table) in tables {
        assert!(table.lookup_v4(hit).is_some() && table.lookup_v4(miss).is_none());
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("hit", routes), |b| {
            b.iter(|| table.lookup_v4(black_box(hit)))
        });
        group.bench_function(BenchmarkId::new("miss", routes), |b| {
            b.iter(|| table.lookup_v4(black_box(miss)))
        });
    }
    // One hit in each of 4,096 leases spread over the 10,000-route table, as in a cluster
    // where traffic goes everywhere: 4,096 different buckets instead of one hot one.
    let (routes, big) = tables.last().expect("at least one table");
    let spread: Vec<_> = big
        .routes()
        .iter()
        .step_by((big.routes().len() / 4096).max(1))
        .take(4096)
        .map(|r| match r.subnet.addr() {
            IpAddr::V4(net) => std::net::Ipv4Addr::from(u32::from(net) + 9),
            IpAddr::V6(_) => unreachable!("IPv4 routes"),
        })
        .collect();
    assert!(spread.iter().all(|&a| big.lookup_v4(a).is_some()));
    group.throughput(Throughput::Elements(spread.len() as u64));
    group.bench_function(
        BenchmarkId::new(format!("hit_spread_{}", spread.len()), routes),
        |b| {
            b.iter(|| {
                let mut found = 0u32;
                for &addr in black_box(&spread) {
                    found += u32::from(big.lookup_v4(addr).is_some());
                }
                found
            })
        },
    );
    group.finish();

    let mut group = c.benchmark_group("lookup_v6");
    group.throughput(Throughput::Elements(1));
    let hit = host_addr_v6(REMOTE_HOST, 7);
    let miss = host_addr_v6(UNLEASED_HOST, 1);
    for routes in ROUTE_COUNTS {
        let table = packets::table(&remote_routes_v6(routes));
        assert!(table.lookup_v6(hit).is_some() && table.lookup_v6(miss).is_none());
        group.bench_function(BenchmarkId::new("hit", routes), |b| {
            b.iter(|| table.lookup_v6(black_box(hit)))
        });
        group.bench_function(BenchmarkId::new("miss", routes), |b| {
            b.iter(|| table.lookup_v6(black_box(miss)))
        });
    }
    group.finish();
}

fn icmp_and_checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("icmp");
    group.throughput(Throughput::Elements(1));
    // write_error only writes the new headers into the headroom and reads the quote, so the
    // buffer is the same before every iteration and needs no reset.
    let v4 = ipv4_udp(
        host_addr_v4(LOCAL_HOST, 5),
        host_addr_v4(UNLEASED_HOST, 1),
        1400,
    );
    let v6 = ipv6_udp(
        host_addr_v6(LOCAL_HOST, 5),
        host_addr_v6(UNLEASED_HOST, 1),
        1400,
    );
    for (name, packet, src) in [
        (
            "net_unreachable_v4_1400B",
            v4,
            IpAddr::V4(host_addr_v4(UNLEASED_HOST, 1)),
        ),
        (
            "no_route_v6_1400B",
            v6,
            IpAddr::V6(host_addr_v6(UNLEASED_HOST, 1)),
        ),
    ] {
        let mut buf = with_headroom(&packet, HEADROOM);
        let len = packet.len();
        let kind = IcmpErrorKind::NetUnreachable;
        assert!(
            icmp::write_error(&mut buf, HEADROOM, len, src, kind).is_some(),
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| icmp::write_error(black_box(&mut buf), HEADROOM, len, black_box(src), kind))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("checksum");
    let data = ipv4_udp(
        host_addr_v4(LOCAL_HOST, 5),
        host_addr_v4(REMOTE_HOST, 7),
        1400,
    );
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1400B", |b| b.iter(|| checksum::checksum(black_box(&data))));
    group.finish();
}

fn benches(c: &mut Criterion) {
    let tables = tables();
    encap_decap(c, &tables);
    lookups(c, &tables);
    icmp_and_checksum(c);
}

criterion_group!(encap, benches);
criterion_main!(encap);
