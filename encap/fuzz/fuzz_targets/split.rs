//! Fuzzes `offload::split` (and `gso_header_for`, `finish_checksum`): never panics; when
//! Ok, every segment has a valid L4 checksum and the payload comes back whole, in order.
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

fuzz_target!(|data: &[u8]| checks::check_split(data));
