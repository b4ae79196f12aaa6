//! Fuzzes `VxlanBackend` (two L3 VNIs and an L2 VNI with a small FDB), both `handle_*` paths:
//! every verdict equals a reference written from the module docs, with exactly the bytes it
//! computes (encapsulations, ARP/ND answers, ICMP errors); the FDB stays bounded and never
//! learns a statically pinned MAC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_encap as encap;

#[allow(dead_code)]
#[path = "../src/packet_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_vxlan(data));
