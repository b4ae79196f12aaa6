//! Test-only helpers: loading the captured fixtures.

use std::path::PathBuf;

/// The path of `fixtures/<name>` in the workspace.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
        .join(name)
}

/// Parses hex text: `#` starts a comment running to the end of the line; whitespace is
/// ignored; everything else must be pairs of hex digits. `None` on anything else.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.bytes().filter(|b| !b.is_ascii_whitespace()))
        .collect();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

/// The bytes of the hex fixture `fixtures/<name>`, e.g. `fixture("wire/ipv4-udp.hex")`.
///
/// Panics with the path if the file cannot be read or is not valid hex (tests only).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    parse_hex(&text).unwrap_or_else(|| panic!("fixture {} is not valid hex", path.display()))
}

#[test]
fn parse_hex_handles_comments_and_whitespace() {
    assert_eq!(
        parse_hex("# hi\n45 00\n  0a# tail\nFF\n"),
        Some(vec![0x45, 0, 0x0a, 0xff])
    );
    assert_eq!(parse_hex(""), Some(vec![]));
    assert_eq!(parse_hex("4"), None);
    assert_eq!(parse_hex("zz"), None);
    assert_eq!(parse_hex("+1"), None);
}
