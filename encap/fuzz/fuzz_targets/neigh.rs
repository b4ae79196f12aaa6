//! Fuzzes `neigh::answer` on arbitrary frames: never panics; answers exactly the ARP requests
//! and neighbour solicitations its docs say, with exactly the reply / advertisement bytes
//! they describe, inside the buffer; writes nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_encap as encap;

#[allow(dead_code)]
#[path = "../src/packet_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_neigh(data));
