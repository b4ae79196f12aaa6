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
//! - `src/bin/soak.rs`, the `weft-soak` binary: traffic, route churn and hostile datagrams
//!   for a given time, watching the daemons for leaks (see the README's "Soak").
//!
//! The library itself only holds what they share or what a bench needs to build its inputs:
//! [`packets`], the synthetic packets and routing tables the micro-benchmarks feed to the
//! data path, and [`weft_binary`], where the runners find the daemon.

pub mod packets;

use std::path::{Path, PathBuf};

/// The weft binary a runner drives: `explicit` (its `--weft`), else `$WEFT_BIN`, else `weft`
/// next to the running executable; an error naming where it looked if there is none.
pub fn weft_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let path = match (explicit, std::env::var_os("WEFT_BIN")) {
        (Some(path), _) => path.to_owned(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => std::env::current_exe()
            .context("finding this executable")?
            .with_file_name("weft"),
    };
    anyhow::ensure!(
        path.is_file(),
        "no weft binary at {}: build it with `cargo build --release -p weft`, or pass --weft \
         PATH or set WEFT_BIN",
        path.display()
    );
    Ok(path)
}
