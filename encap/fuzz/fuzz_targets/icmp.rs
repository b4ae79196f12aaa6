//! Fuzzes `icmp::write_error` and `IcmpResponder::error` on arbitrary offenders: the result is
//! exactly what the docs say, lies inside the buffer and is a valid ICMP/ICMPv6 error with
//! correct checksums quoting the offender; the rate limit holds per direction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_encap as encap;

#[allow(dead_code)]
#[path = "../src/packet_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_icmp(data));
