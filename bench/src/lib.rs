//! # weft-bench: weft's benchmarks
//!
//! Two kinds of measurement live in this package:
//!
//! - `benches/encap.rs`: criterion micro-benchmarks of the pure data path in `weft-encap`
//!   (encapsulation and decapsulation decisions, longest-prefix lookups, ICMP error
//!   synthesis, checksums). Run them with `cargo bench -p weft-bench --bench encap`; a short
//!   mode for CI adds `-- --warm-up-time 0.5 --measurement-time 1`.
//! - `src/bin/e2e.rs`, the `weft-e2e-bench` binary: TCP throughput with iperf3 between two
//!   hosts in network namespaces, for plain veth, the kernel's vxlan and `weft run` (UDP
//!   backend with the default batch and with `[engine] batch = 1`, VXLAN backend mirroring the
//!   kernel's), with medians and ratios against the references measured in the same run; a
//!   short mode for CI is `--quick`. See `RESULTS.md`.
//!
//! The library itself only holds what both share or what a bench needs to build its inputs:
//! [`packets`], the synthetic packets and routing tables the micro-benchmarks feed to the
//! data path.

pub mod packets;
