//! Fuzzes `offload::Coalescer` (UDP merging off and on): never panics; every member range
//! lies in its packet, every packet is in exactly one group, merged groups re-segment into
//! their members, each flow stays in order.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(unused_imports)]
mod offload_api {
    pub use weft_encap::offload::*;
}
#[allow(unused_imports)]
mod wire {
    pub use weft_encap::wire::*;
}
#[allow(dead_code)]
#[path = "../src/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_coalesce(data));
