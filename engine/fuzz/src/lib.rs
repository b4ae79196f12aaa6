//! The checks of weft's fuzz targets that need the `weft` crate (the packet-level targets
//! are in `encap/fuzz`, which needs only weft-encap).
//!
//! `cargo test --lib` (stable) replays them on the seeds in `seeds/<target>/` and on a few
//! hundred mutations of them, so the properties are checked without nightly.
#![forbid(unsafe_code)]

use std::path::Path;

use weft::control::config::Config;

/// The name the fuzzed text is parsed under: every error must start with it.
pub const FUZZ_PATH: &str = "fuzz.toml";

/// `Config::parse` of `data` (as UTF-8, invalid sequences replaced): never panics; an error
/// is a single line that starts with the file name (its `Display` is what `weft run`
/// prints); a configuration that parses names the file and parses again to the same value.
pub fn check_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new(FUZZ_PATH);
    match Config::parse(path, &text) {
        Ok(config) => {
            assert_eq!(config.path, path);
            assert_eq!(
                Config::parse(path, &text),
                Ok(config),
                "parse is deterministic"
            );
        }
        Err(e) => {
            let line = e.to_string();
            assert!(
                !line.contains('\n'),
                "an error of more than one line: {line:?}"
            );
            assert!(
                line.starts_with(FUZZ_PATH),
                "an error that does not name the file: {line:?}"
            );
            assert_eq!(e.path, path);
        }
    }
}

#[cfg(test)]
mod replay;
