//! Fuzzes `weft::control::config::Config::parse` with arbitrary bytes as UTF-8 text (lossy):
//! never panics; an error is one line naming the file; a configuration that parses parses
//! the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_fuzz::check_config(data));
