//! Micro-benchmarks of the offload code (`weft_encap::offload`): what a 64 KB TCP
//! super-packet costs in userspace on each path.
//!
//! - `offload/split`: a TSO super-packet (44 segments of 1,432 bytes, as a TUN hands it
//!   over) cut into 44 datagrams with their headers and TCP checksums, behind a 22-byte
//!   VXLAN + Ethernet prefix (the transmit path);
//! - `offload/coalesce`: the same 44 segments offered to a `Coalescer` (each checksum
//!   verified) and merged into one super-packet's header and payload list (the receive
//!   path);
//! - `offload/checksum_64k`: one Internet checksum over 63,008 bytes, for scale.
//!
//! Each is measured with `weft-encap`'s portable checksum summer, then again (suffix
//! `_simd512` or `_simd256`) with the AVX-512 or AVX2 summer weft's engine installs on CPUs
//! that have them (`weft::accelerate_checksums`).
//!
//! Full run: `cargo bench -p weft-bench --bench offload`.
#![allow(missing_docs)] // criterion_group! / criterion_main! generate undocumented items.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_encap::offload::coalesce::Coalescer;
use weft_encap::offload::split::{split, split_layout};
use weft_encap::offload::vnet::{Gso, GsoKind};
use weft_encap::wire::checksum;

const MSS: usize = 1432;
const SEGMENTS: usize = 44;
const PREFIX: usize = 22;

/// A 22-byte prefix, then one IPv4 + TCP header whose length covers the whole super-packet
/// (with the pseudo-header sum in the checksum field, as the kernel leaves it), then the
/// payload.
fn super_packet() -> Vec<u8> {
    weft_testbed::tcp_super_packet(PREFIX, MSS, SEGMENTS, 1, true, |i| (i * 7 + 3) as u8)
}

fn offload(c: &mut Criterion) {
    let pkt = super_packet();
    let gso = Gso {
        kind: GsoKind::TcpV4,
        size: MSS as u16,
    };
    let layout = split_layout(&pkt, PREFIX, gso).expect("a valid super-packet");
    let mut out = vec![0u8; layout.total_len];
    let payload_bytes = (MSS * SEGMENTS) as u64;

    // Twice: with the portable checksum summer, then with the one weft's engine installs on
    // this CPU (AVX-512 or AVX2 where the CPU has them), named after its vector width.
    for summer in ["portable", "installed"] {
        let suffix = if summer == "portable" {
            String::new()
        } else {
            match weft::accelerate_checksums() {
                128 => continue, // nothing faster here: the same code again
                bits => format!("_simd{bits}"),
            }
        };
        let mut group = c.benchmark_group("offload");
        group.throughput(Throughput::Bytes(payload_bytes));
        group.bench_function(format!("split{suffix}"), |b| {
            b.iter(|| split(black_box(&pkt), PREFIX, gso, black_box(&mut out)).unwrap())
        });

        // The segments as they arrive on the other side: each a valid packet (prefix
        // stripped).
        split(&pkt, PREFIX, gso, &mut out).unwrap();
        let segments: Vec<&[u8]> = out
            .chunks(layout.segment_len)
            .map(|s| &s[PREFIX..])
            .collect();
        let mut coalescer = Coalescer::new(SEGMENTS);
        coalescer.clear();
        for (i, s) in segments.iter().enumerate() {
            assert!(coalescer.push(i as u32, s, 0));
        }
        assert_eq!(
            coalescer.groups().count(),
            1,
            "the segments merge into one packet"
        );
        group.bench_function(format!("coalesce{suffix}"), |b| {
            b.iter(|| {
                coalescer.clear();
                for (i, s) in segments.iter().enumerate() {
                    coalescer.push(i as u32, black_box(s), 0);
                }
                black_box(coalescer.groups().count())
            })
        });
        group.bench_function(format!("checksum_64k{suffix}"), |b| {
            b.iter(|| checksum::sum(black_box(&pkt[PREFIX + 40..]), 0))
        });
        group.finish();
    }
}

criterion_group!(benches, offload);
criterion_main!(benches);
