//! Fuzzes `FlannelBackend::handle_device_packet` and `handle_datagram` (inherent and `Backend`
//! trait) on arbitrary packets with a small fixed route table: every verdict equals a
//! reference written from the module docs, its range lies in the buffer and holds an IP
//! packet with its TTL lowered or a valid ICMP error; nothing else in the buffer changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_encap as encap;

#[allow(dead_code)]
#[path = "../src/packet_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_flannel(data));
