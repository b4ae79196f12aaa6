//! Replays `check_config` on stable: every seed in `seeds/config/` (valid configurations of
//! each kind, plus every crash a fuzzer found), then a few hundred mutations of them (bytes
//! flipped, inserted, deleted, lines swapped, dictionary tokens from `config.dict` spliced
//! in), with a fixed-seed generator so a failure reproduces.

use std::path::{Path, PathBuf};

use super::check_config;

/// `engine/fuzz`: the manifest directory, or its `fuzz/` when this file is included by a
/// test of the `weft` crate (`#[path = "../fuzz/src/lib.rs"] mod fuzz;` in `engine/tests/`).
fn fuzz_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("seeds/config").is_dir() {
        manifest.to_path_buf()
    } else {
        manifest.join("fuzz")
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("seeds/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// The tokens of `config.dict` (libFuzzer's dictionary format: `"..."` per line, `\xNN` and
/// `\"` escapes).
fn dictionary() -> Vec<Vec<u8>> {
    let path = fuzz_dir().join("config.dict");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let body = l.strip_prefix('"')?.strip_suffix('"')?;
            let mut out = Vec::new();
            let mut chars = body.bytes();
            while let Some(c) = chars.next() {
                match c {
                    b'\\' => match chars.next()? {
                        b'x' => {
                            let hex = [chars.next()?, chars.next()?];
                            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
                        }
                        other => out.push(other),
                    },
                    c => out.push(c),
                }
            }
            Some(out)
        })
        .collect()
}

/// xorshift64: a fixed sequence, so a failing mutation is found again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(input: &mut Vec<u8>, dict: &[Vec<u8>], rng: &mut Rng) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let at = at.min(input.len() - 1);
                input[at] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 if at < input.len() => {
                let end = (at + 1 + rng.below(8)).min(input.len());
                input.drain(at..end);
            }
            3 => {
                let token = &dict[rng.below(dict.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 => {
                // Swap two lines.
                let text = String::from_utf8_lossy(input).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                    *input = lines.join("\n").into_bytes();
                }
            }
            _ => {
                // Duplicate a line (a key or a table twice).
                let text = String::from_utf8_lossy(input).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let l = lines[rng.below(lines.len())].to_owned();
                    input.splice(at..at, format!("\n{l}\n").into_bytes());
                }
            }
        }
    }
}

#[test]
fn config_seeds_parse_or_fail_on_one_line() {
    for s in seeds() {
        check_config(&s);
    }
}

#[test]
fn config_seeds_that_are_valid_configurations_parse() {
    let ok = seeds()
        .iter()
        .filter(|s| {
            let text = String::from_utf8_lossy(s);
            weft::control::config::Config::parse(Path::new("x.toml"), &text).is_ok()
        })
        .count();
    assert!(
        ok >= 4,
        "only {ok} seeds parse: the fuzzer would start from errors only"
    );
}

#[test]
fn config_mutations() {
    let seeds = seeds();
    let dict = dictionary();
    assert!(dict.len() > 40, "config.dict: {} tokens", dict.len());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..600 {
        let mut input = seeds[i % seeds.len()].clone();
        mutate(&mut input, &dict, &mut rng);
        check_config(&input);
    }
    // Random bytes, too.
    for _ in 0..200 {
        let n = rng.below(300);
        let input: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        check_config(&input);
    }
}
