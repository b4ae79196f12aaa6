//! Runs the fuzz targets' checks (`encap/fuzz/src/checks.rs`) on stable: hand-made seeds,
//! the committed seed corpus in `encap/fuzz/seeds/`, and a few hundred random inputs, so CI
//! exercises them without nightly or cargo-fuzz.

use proptest::prelude::*;

use super::testpkt::*;
use crate::offload as offload_api;
use crate::wire;

#[allow(dead_code)]
#[path = "../../fuzz/src/checks.rs"]
mod checks;

/// A split input in the fuzz format: `[kind, size_hi, size_lo, l3, mode, mtu_hi, mtu_lo, pkt]`.
fn split_input(kind: u8, size: u16, l3: usize, mode: u8, mtu: u16, pkt: &[u8]) -> Vec<u8> {
    let mut d = vec![kind];
    d.extend_from_slice(&size.to_be_bytes());
    d.push(l3 as u8);
    d.push(mode);
    d.extend_from_slice(&mtu.to_be_bytes());
    d.extend_from_slice(pkt);
    d
}

fn seeds_split() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let payload = pattern(5000);
    for (kind, f) in [
        (0u8, Flow::v4_tcp()),
        (1, Flow::v6_tcp().with_opts(vec![1; 12])),
        (2, Flow::v4_udp()),
        (0x82, Flow::v6_udp()),
    ] {
        for l3 in [0usize, 14, 22] {
            let pkt = [vec![0x5a; l3], f.packet_partial(9, 9, ACK | PSH, &payload)].concat();
            for (size, mode, mtu) in [
                (1448u16, 0u8, 1500u16),
                (1, 1, 60),
                (4999, 2, 9000),
                (7, 0, 1280),
            ] {
                v.push(split_input(kind, size, l3, mode, mtu, &pkt));
            }
        }
    }
    v
}

fn seeds_coalesce() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for l3 in [0u8, 14, 22] {
        for mode in [1u8, 3] {
            // A clean flow, then the same with mutations (checksums recomputed with mode 3).
            v.push(vec![l3, mode, 69, 0, 0x05, 0xa8, 40, 2]);
            v.push(vec![
                l3, mode, 10, 1, 0x02, 0x00, 20, 0, 3, 0, 40, 0x08, 5, 0, 20, 0x01,
            ]);
        }
    }
    for l3 in [0u8, 14] {
        // UDP flows (mode bit 2), alone and interleaved with TCP (bit 3), v4 and v6.
        for mode in [5u8, 7, 13, 15] {
            v.push(vec![l3, mode, 69, 0, 0x05, 0xa8, 40, 0]);
            v.push(vec![l3, mode, 69, 1, 0x02, 0x00, 70, 0]);
            // A mutated UDP length, checksum, TTL; a shorter datagram in the middle.
            v.push(vec![
                l3, mode, 30, 0, 0x01, 0x00, 12, 0, 2, 0, 24, 0x01, 5, 0, 26, 0xff, 7, 0, 8, 0x01,
            ]);
        }
    }
    let mut raw = vec![0u8, 2, 64];
    let mut raw_udp = vec![0u8, 2, 64];
    for (i, (t, u)) in Flow::v4_tcp()
        .segments(0, 0, 100, &pattern(1000), ACK | PSH)
        .into_iter()
        .zip(Flow::v4_udp().segments(0, 0, 100, &pattern(950), 0))
        .enumerate()
    {
        raw.extend_from_slice(&(t.len() as u16).to_be_bytes());
        raw.extend_from_slice(&t);
        for p in [&t, &u] {
            raw_udp.extend_from_slice(&(p.len() as u16).to_be_bytes());
            raw_udp.extend_from_slice(p);
        }
        if i == 4 {
            // A zero-checksum datagram of the flow.
            let mut z = u.clone();
            z[26..28].fill(0);
            raw_udp.extend_from_slice(&(z.len() as u16).to_be_bytes());
            raw_udp.extend_from_slice(&z);
        }
    }
    v.push(raw);
    v.push(raw_udp);
    v
}

fn corpus_files(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect()
}

#[test]
fn split_seeds_and_corpus() {
    for d in seeds_split().iter().chain(&corpus_files("split")) {
        checks::check_split(d);
    }
}

#[test]
fn coalesce_seeds_and_corpus() {
    for d in seeds_coalesce().iter().chain(&corpus_files("coalesce")) {
        checks::check_coalesce(d);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn split_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        checks::check_split(&data);
    }

    #[test]
    fn split_random_headers_on_a_real_packet(
        kind in 0u8..6, size in 1u16..2000, l3 in 0usize..40, mode in 0u8..4, mtu in 0u16..3000,
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..4),
    ) {
        let f = match kind % 4 { 0 => Flow::v4_tcp(), 1 => Flow::v6_tcp(), 2 => Flow::v4_udp(), _ => Flow::v6_udp() };
        let mut pkt = [vec![0; l3], f.packet_partial(1, 2, ACK, &pattern(2500))].concat();
        for (at, x) in flips {
            let at = at % pkt.len();
            pkt[at] ^= x;
        }
        checks::check_split(&split_input(kind, size, l3, mode, mtu, &pkt));
    }

    #[test]
    fn coalesce_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        checks::check_coalesce(&data);
    }

    #[test]
    fn coalesce_mutated_flows(
        l3 in 0u8..30, mode in prop_oneof![Just(1u8), Just(3u8), Just(5u8), Just(7u8), Just(13u8), Just(15u8)],
        cap in any::<u8>(),
        flow in proptest::collection::vec(any::<u8>(), 5),
        muts in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        let d = [vec![l3, mode, cap], flow, muts].concat();
        checks::check_coalesce(&d);
    }
}
