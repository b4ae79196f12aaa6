//! Fuzzes `offload::Coalescer`: never panics; every member range lies in its packet, every
//! packet is in exactly one group, merged groups re-segment into their members.
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
