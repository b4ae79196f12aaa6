//! Fuzzes every wire view's `new_checked` on arbitrary bytes (the first byte picks the view),
//! then every accessor, `Repr` round trip and checksum filler of the views that parsed,
//! following payloads a few levels deep: never panics, never reads past the end, and agrees
//! with an independent reading of each format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_encap as encap;

#[allow(dead_code)]
#[path = "../src/wire_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_wire(data));
