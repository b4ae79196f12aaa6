//! Go `encoding/json` semantics on top of serde_json, for the few things flannel needs.
//!
//! - [`members`] reads a JSON object keeping its members in order, raw;
//!   [`field`] picks the member Go would store into a struct field: keys are matched to
//!   field names exactly first, else case-insensitively (Go's `bytes.EqualFold`, whose
//!   only non-ASCII folds onto ASCII letters are U+212A KELVIN SIGN and U+017F LONG S),
//!   and when several members land on the same field the last one wins.
//! - [`compact`] and [`quote`] write JSON the way `json.Marshal` does (compact, with
//!   `<`, `>`, `&`, U+2028 and U+2029 escaped), so that re-encoded leases are byte-exact.

use core::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of one JSON object, in document order, values unparsed.
pub(crate) type Members = Vec<(String, Box<RawValue>)>;

struct Object(Members);

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(Object(out))
            }
            fn visit_unit<E>(self) -> Result<Object, E> {
                // Go: unmarshalling `null` into a struct leaves it unchanged.
                Ok(Object(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The members of the JSON object in `json` (`null` counts as an empty object).
pub(crate) fn members(json: &[u8]) -> Result<Members, serde_json::Error> {
    serde_json::from_slice::<Object>(json).map(|o| o.0)
}

/// The members of a raw JSON value that must be an object (or `null`).
pub(crate) fn members_of(raw: &RawValue) -> Result<Members, serde_json::Error> {
    members(raw.get().as_bytes())
}

fn fold(c: char) -> char {
    match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    }
}

fn equal_fold(a: &str, b: &str) -> bool {
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// Which of `fields` Go would store the member `key` into.
fn target<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| equal_fold(f, key)))
        .copied()
}

/// The raw value Go would end up with in struct field `name` (one of `fields`, the
/// struct's JSON field names), or `None` if no member maps to it.
pub(crate) fn field<'a>(members: &'a Members, fields: &[&str], name: &str) -> Option<&'a RawValue> {
    members
        .iter()
        .rev()
        .find(|(k, _)| target(k, fields) == Some(name))
        .map(|(_, v)| &**v)
}

/// Like [`field`], but a JSON `null` counts as absent (Go leaves the field unchanged).
pub(crate) fn present<'a>(
    members: &'a Members,
    fields: &[&str],
    name: &str,
) -> Option<&'a RawValue> {
    field(members, fields, name).filter(|v| v.get() != "null")
}

/// `raw` compacted the way `json.Marshal` writes a `json.RawMessage`.
pub(crate) fn compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            if escaped {
                escaped = false;
                out.push(c);
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                c => push_go_char(&mut out, c),
            }
        } else {
            match c {
                ' ' | '\t' | '\n' | '\r' => {}
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                c => out.push(c),
            }
        }
    }
    out
}

/// Appends `c` (inside a string) as Go's HTML-safe encoder does.
fn push_go_char(out: &mut String, c: char) {
    match c {
        '<' => out.push_str("\\u003c"),
        '>' => out.push_str("\\u003e"),
        '&' => out.push_str("\\u0026"),
        '\u{2028}' => out.push_str("\\u2028"),
        '\u{2029}' => out.push_str("\\u2029"),
        c => out.push(c),
    }
}

/// `s` as a JSON string literal, exactly as `json.Marshal` writes it.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => push_go_char(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// A raw value for an error message: compact, cut at 60 characters.
pub(crate) fn show(raw: &RawValue) -> String {
    let text = compact(raw.get());
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// A JSON boolean; `Err` for anything else.
pub(crate) fn as_bool(raw: &RawValue) -> Result<bool, ()> {
    serde_json::from_str::<bool>(raw.get()).map_err(|_| ())
}

/// A JSON integer literal (no fraction, no exponent: Go's `strconv.ParseInt`).
pub(crate) fn as_int(raw: &RawValue) -> Result<i64, ()> {
    serde_json::from_str::<i64>(raw.get()).map_err(|_| ())
}

/// A JSON non-negative integer literal (Go's `strconv.ParseUint`).
pub(crate) fn as_uint(raw: &RawValue) -> Result<u64, ()> {
    serde_json::from_str::<u64>(raw.get()).map_err(|_| ())
}

/// A JSON string.
pub(crate) fn as_str(raw: &RawValue) -> Result<String, ()> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["Network", "SubnetLen", "vni"];

    #[test]
    fn members_land_on_fields_like_go() {
        let m = members(br#"{"network":"a","NETWORK":"b","subnetlen":1}"#).unwrap();
        assert_eq!(field(&m, FIELDS, "Network").unwrap().get(), r#""b""#);
        assert_eq!(field(&m, FIELDS, "SubnetLen").unwrap().get(), "1");
        let m = members(br#"{"Network":"a","network":"b"}"#).unwrap();
        assert_eq!(field(&m, FIELDS, "Network").unwrap().get(), r#""b""#);
        let m = members("{\"\u{212A}\":1,\"vNi\":7}".as_bytes()).unwrap();
        assert_eq!(field(&m, &["k", "vni"], "k").unwrap().get(), "1");
        assert_eq!(field(&m, &["k", "vni"], "vni").unwrap().get(), "7");
        let m = members(br#"{"nope":1}"#).unwrap();
        assert!(field(&m, FIELDS, "Network").is_none());
        assert!(members(b"null").unwrap().is_empty());
        assert!(members(b"[1]").is_err());
        assert!(members(b"{").is_err());
    }

    #[test]
    fn kelvin_and_long_s_fold_like_go() {
        assert!(equal_fold("\u{212A}ey", "key"));
        assert!(equal_fold("\u{017F}ubnetlen", "SubnetLen"));
        assert!(!equal_fold("subnetlen", "SubnetLe"));
    }

    #[test]
    fn compact_and_quote_are_go_marshal() {
        assert_eq!(
            compact("{ \"VNI\" : 1,\n \"VtepMAC\": \"a b<>&\\\"\" }"),
            r#"{"VNI":1,"VtepMAC":"a b\u003c\u003e\u0026\""}"#
        );
        assert_eq!(quote("vx\"lan\n<\u{1}"), r#""vx\"lan\n\u003c\u0001""#);
    }
}
