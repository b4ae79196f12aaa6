//! Lease keys and lease values, byte-exact with flanneld (FLANNEL.md §1.2, §1.3).
//!
//! A host's lease is the etcd key `<prefix>/subnets/<key>` whose value is the JSON of
//! flannel's `lease.LeaseAttrs` (`pkg/lease/lease.go`):
//!
//! - [`SubnetKey`]: `10.5.52.0-24`, or dual stack `10.5.52.0-24&fc00:0:0:1::-64`
//!   (`pkg/subnet/subnet.go MakeSubnetKey`). [`SubnetKey::parse`] reproduces
//!   `ParseSubnetKey` exactly, regular-expression quirks included: the expression
//!   `(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$` is anchored only at the end (so a
//!   whole etcd key parses too), its unescaped dots match any character, prefix lengths are
//!   read as 5-bit (IPv4, so at most 31) and 7-bit (IPv6, at most 127) numbers, and host
//!   bits are kept. What flanneld cannot parse gives `None`.
//! - [`LeaseAttrs`]: `PublicIP`, `PublicIPv6` (always written, `null` when absent), then
//!   `BackendType`, `BackendData`, `BackendV6Data` only when set, exactly as `json.Marshal`
//!   writes them: udp `{"PublicIP":"1.2.3.4","PublicIPv6":null}` (no backend type at all:
//!   flannel's udp backend never writes or reads one), vxlan
//!   `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`
//!   (`pkg/backend/vxlan/vxlan.go newSubnetAttrs`), host-gw
//!   `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}`
//!   (`pkg/backend/hostgw`). [`LeaseAttrs::parse`] reads values the way Go does
//!   (case-insensitive keys, unknown keys ignored, `PublicIPv6` optional).

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use weft_encap::wire::EthernetAddress;

use super::gojson;
use super::net::{go_ipv6_string, Ipv4Net, Ipv6Net};

/// The subnet(s) a lease key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubnetKey {
    /// The IPv4 subnet (every etcd-mode lease has one).
    pub ipv4: Ipv4Net,
    /// The IPv6 subnet of a dual-stack lease.
    pub ipv6: Option<Ipv6Net>,
}

/// Longer keys are not flannel's: [`SubnetKey::parse`] gives up on them without scanning.
const MAX_KEY_CHARS: usize = 4096;

/// One step of the key expression, matched by [`Matcher`].
#[derive(Clone, Copy)]
enum Op {
    /// Record the current position in capture slot n.
    Mark(usize),
    /// One or more ASCII digits, greedy.
    Digits,
    /// One or more of `[a-f0-9:]`, greedy.
    Hex,
    /// This exact character.
    Lit(char),
    /// Any character but a newline (Go's `.`).
    Any,
    /// Try the group that follows (greedy `?`); if it fails, continue at the given step.
    Opt(usize),
    /// End of the text (Go's `$` without the `m` flag).
    End,
}

/// `(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$` as steps; captures in slots 0..8.
const KEY_EXPR: [Op; 23] = [
    Op::Mark(0),
    Op::Digits,
    Op::Lit('.'),
    Op::Digits,
    Op::Any,
    Op::Digits,
    Op::Any,
    Op::Digits,
    Op::Mark(1),
    Op::Lit('-'),
    Op::Mark(2),
    Op::Digits,
    Op::Mark(3),
    Op::Opt(22),
    Op::Lit('&'),
    Op::Mark(4),
    Op::Hex,
    Op::Mark(5),
    Op::Lit('-'),
    Op::Mark(6),
    Op::Digits,
    Op::Mark(7),
    Op::End,
];

/// A backtracking matcher with leftmost-first (Perl/RE2 submatch) priorities, memoising
/// failed (position, step) pairs so that it runs in time linear in the steps tried.
struct Matcher<'a> {
    text: &'a [char],
    failed: Vec<bool>,
    marks: [usize; 8],
}

impl Matcher<'_> {
    fn run(&mut self, pos: usize, pc: usize) -> bool {
        let slot = pos * KEY_EXPR.len() + pc;
        if self.failed[slot] {
            return false;
        }
        let ok = self.step(pos, pc);
        if !ok {
            self.failed[slot] = true;
        }
        ok
    }

    fn step(&mut self, pos: usize, pc: usize) -> bool {
        let next = self.text.get(pos).copied();
        match KEY_EXPR[pc] {
            Op::Mark(n) => {
                self.marks[n] = pos;
                self.run(pos, pc + 1)
            }
            Op::Digits | Op::Hex => {
                let class = |c: &char| match KEY_EXPR[pc] {
                    Op::Digits => c.is_ascii_digit(),
                    _ => c.is_ascii_digit() || ('a'..='f').contains(c) || *c == ':',
                };
                let run = self.text[pos..].iter().take_while(|c| class(c)).count();
                (1..=run).rev().any(|n| self.run(pos + n, pc + 1))
            }
            Op::Lit(c) => next == Some(c) && self.run(pos + 1, pc + 1),
            Op::Any => matches!(next, Some(c) if c != '\n') && self.run(pos + 1, pc + 1),
            Op::Opt(skip) => {
                if self.run(pos, pc + 1) {
                    return true;
                }
                self.marks[4..8].fill(usize::MAX);
                self.run(pos, skip)
            }
            Op::End => pos == self.text.len(),
        }
    }
}

/// Go's `strconv.ParseUint(s, 10, bits)`: decimal digits, at most 2^bits - 1.
fn parse_uint_bits(s: &str, bits: u32) -> Option<u8> {
    let v: u64 = s.parse().ok()?;
    (v < 1 << bits).then_some(v as u8)
}

impl SubnetKey {
    /// A key for an IPv4 lease.
    pub fn new(ipv4: Ipv4Net) -> SubnetKey {
        SubnetKey { ipv4, ipv6: None }
    }

    /// A dual-stack key.
    pub fn dual_stack(ipv4: Ipv4Net, ipv6: Ipv6Net) -> SubnetKey {
        SubnetKey {
            ipv4,
            ipv6: Some(ipv6),
        }
    }

    /// Parses a lease key (just `10.5.52.0-24` or the whole etcd key) as flanneld's
    /// `ParseSubnetKey` does; `None` where flanneld gets nothing.
    pub fn parse(key: &str) -> Option<SubnetKey> {
        let text: Vec<char> = key.chars().take(MAX_KEY_CHARS + 1).collect();
        if text.len() > MAX_KEY_CHARS {
            return None;
        }
        let mut m = Matcher {
            text: &text,
            failed: vec![false; (text.len() + 1) * KEY_EXPR.len()],
            marks: [usize::MAX; 8],
        };
        // The leftmost start that matches decides, even if its groups do not parse.
        if !(0..=text.len()).any(|start| m.run(start, 0)) {
            return None;
        }
        let group =
            |i: usize| -> String { text[m.marks[2 * i]..m.marks[2 * i + 1]].iter().collect() };
        let addr: Ipv4Addr = group(0).parse().ok()?;
        let len = parse_uint_bits(&group(1), 5)?;
        let ipv4 = Ipv4Net::new(addr, len)?;
        if m.marks[4] == usize::MAX {
            return Some(SubnetKey::new(ipv4));
        }
        let addr6: Ipv6Addr = group(2).parse().ok()?;
        let len6 = parse_uint_bits(&group(3), 7)?;
        Some(SubnetKey::dual_stack(ipv4, Ipv6Net::new(addr6, len6)?))
    }
}

impl fmt::Display for SubnetKey {
    /// `MakeSubnetKey`: `10.5.52.0-24` or `10.5.52.0-24&fc00:0:0:1::-64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ipv4.addr(), self.ipv4.prefix_len())?;
        if let Some(v6) = self.ipv6 {
            write!(f, "&{}-{}", go_ipv6_string(v6.addr()), v6.prefix_len())?;
        }
        Ok(())
    }
}

/// A JSON value kept as text, compacted exactly as Go's `json.Marshal` writes a
/// `json.RawMessage` (so it re-encodes byte for byte).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawJson(String);

impl RawJson {
    /// Checks that `text` is one JSON value and compacts it.
    pub fn new(text: &str) -> Result<RawJson, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(text)?;
        Ok(RawJson(gojson::compact(text)))
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `VNI` and `VtepMAC` of a vxlan lease's `BackendData` or `BackendV6Data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanData {
    /// `VNI` (a missing one reads as 0, as in Go).
    pub vni: u32,
    /// `VtepMAC`: the MAC address of the host's `flannel.<VNI>` (or `flannel-v6.<VNI>`).
    pub vtep_mac: EthernetAddress,
}

impl VxlanData {
    /// The `BackendData` JSON flanneld writes: `{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`.
    pub fn to_json(&self) -> RawJson {
        RawJson(format!(
            "{{\"VNI\":{},\"VtepMAC\":\"{}\"}}",
            self.vni, self.vtep_mac
        ))
    }
}

/// Why a lease value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Not a JSON object.
    #[error("the lease value is not a JSON object: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("the lease value has no {key}")]
    Missing {
        /// The field, e.g. `PublicIP` or `BackendData.VtepMAC`.
        key: &'static str,
    },
    /// A field has a value that cannot be used.
    #[error("the lease value's {key} = {value}: {reason}")]
    Invalid {
        /// The field.
        key: &'static str,
        /// The value as written (JSON text).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// `lease.LeaseAttrs`: what a host publishes about itself in its lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseAttrs {
    /// `PublicIP`: the host's underlay IPv4 address; also how flanneld recognises its own
    /// lease after a restart.
    pub public_ip: Ipv4Addr,
    /// `PublicIPv6`: the host's underlay IPv6 address (dual stack).
    pub public_ipv6: Option<Ipv6Addr>,
    /// `BackendType` (`"vxlan"`); `None` (or empty) is not written, as for udp.
    pub backend_type: Option<String>,
    /// `BackendData`: backend-specific, for vxlan see [`VxlanData`].
    pub backend_data: Option<RawJson>,
    /// `BackendV6Data`: the IPv6 counterpart of `BackendData`.
    pub backend_v6_data: Option<RawJson>,
}

const ATTR_FIELDS: &[&str] = &[
    "PublicIP",
    "PublicIPv6",
    "BackendType",
    "BackendData",
    "BackendV6Data",
];
const VXLAN_DATA_FIELDS: &[&str] = &["VNI", "VtepMAC"];

impl LeaseAttrs {
    /// What flanneld's udp backend writes: only the public IP.
    pub fn udp(public_ip: Ipv4Addr) -> LeaseAttrs {
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: None,
            backend_data: None,
            backend_v6_data: None,
        }
    }

    /// What flanneld's host-gw backend writes (`pkg/backend/hostgw`): the public IP and the
    /// backend type, no backend data.
    pub fn host_gw(public_ip: Ipv4Addr) -> LeaseAttrs {
        LeaseAttrs {
            backend_type: Some("host-gw".into()),
            ..LeaseAttrs::udp(public_ip)
        }
    }

    /// What flanneld's vxlan backend writes for an IPv4 network.
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, vtep_mac: EthernetAddress) -> LeaseAttrs {
        LeaseAttrs {
            backend_type: Some("vxlan".into()),
            backend_data: Some(VxlanData { vni, vtep_mac }.to_json()),
            ..LeaseAttrs::udp(public_ip)
        }
    }

    /// What flanneld's vxlan backend writes for a dual-stack network: the IPv6 VTEP is the
    /// separate `flannel-v6.<VNI>` device with a MAC of its own.
    pub fn vxlan_dual_stack(
        public_ip: Ipv4Addr,
        public_ipv6: Ipv6Addr,
        vni: u32,
        vtep_mac: EthernetAddress,
        vtep_mac_v6: EthernetAddress,
    ) -> LeaseAttrs {
        LeaseAttrs {
            public_ipv6: Some(public_ipv6),
            backend_v6_data: Some(
                VxlanData {
                    vni,
                    vtep_mac: vtep_mac_v6,
                }
                .to_json(),
            ),
            ..LeaseAttrs::vxlan(public_ip, vni, vtep_mac)
        }
    }

    /// The lease value as flanneld writes it (`json.Marshal(LeaseAttrs)`), byte-exact.
    pub fn to_json(&self) -> String {
        let mut out = format!("{{\"PublicIP\":\"{}\",\"PublicIPv6\":", self.public_ip);
        match self.public_ipv6 {
            Some(v6) => out.push_str(&gojson::quote(&go_ipv6_string(v6))),
            None => out.push_str("null"),
        }
        if let Some(t) = self.backend_type.as_deref().filter(|t| !t.is_empty()) {
            out.push_str(",\"BackendType\":");
            out.push_str(&gojson::quote(t));
        }
        if let Some(d) = &self.backend_data {
            out.push_str(",\"BackendData\":");
            out.push_str(d.as_str());
        }
        if let Some(d) = &self.backend_v6_data {
            out.push_str(",\"BackendV6Data\":");
            out.push_str(d.as_str());
        }
        out.push('}');
        out
    }

    /// Reads a lease value the way Go's `json.Unmarshal` into `LeaseAttrs` does. Differences:
    /// a missing `PublicIP` is an error (Go would read `0.0.0.0`, which no peer can be
    /// reached at), and a `null` backend type or data counts as absent.
    pub fn parse(json: &[u8]) -> Result<LeaseAttrs, LeaseError> {
        let m = gojson::members(json).map_err(|e| LeaseError::Json(e.to_string()))?;
        let get = |name| gojson::present(&m, ATTR_FIELDS, name);
        let raw_ip = get("PublicIP").ok_or(LeaseError::Missing { key: "PublicIP" })?;
        let public_ip = gojson::as_str(raw_ip)
            .ok()
            .and_then(|s| parse_go_ip(&s))
            .and_then(|ip| match ip {
                std::net::IpAddr::V4(a) => Some(a),
                std::net::IpAddr::V6(a) => a.to_ipv4_mapped(),
            })
            .ok_or_else(|| LeaseError::Invalid {
                key: "PublicIP",
                value: gojson::show(raw_ip),
                reason: "not an IPv4 address",
            })?;
        let public_ipv6 = match get("PublicIPv6") {
            None => None,
            Some(raw) => Some(
                gojson::as_str(raw)
                    .ok()
                    .and_then(|s| parse_go_ip(&s))
                    .map(|ip| match ip {
                        std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
                        std::net::IpAddr::V6(a) => a,
                    })
                    .ok_or_else(|| LeaseError::Invalid {
                        key: "PublicIPv6",
                        value: gojson::show(raw),
                        reason: "not an IP address",
                    })?,
            ),
        };
        let backend_type = match get("BackendType") {
            None => None,
            Some(raw) => Some(gojson::as_str(raw).map_err(|()| LeaseError::Invalid {
                key: "BackendType",
                value: gojson::show(raw),
                reason: "not a string",
            })?),
        }
        .filter(|t| !t.is_empty());
        let raw_json = |name| {
            get(name).map(|raw: &serde_json::value::RawValue| RawJson(gojson::compact(raw.get())))
        };
        Ok(LeaseAttrs {
            public_ip,
            public_ipv6,
            backend_type,
            backend_data: raw_json("BackendData"),
            backend_v6_data: raw_json("BackendV6Data"),
        })
    }

    /// The `VNI` and `VtepMAC` in `BackendData` (read like Go's `vxlanLeaseAttrs`:
    /// case-insensitive keys, MAC in any 6-byte form `net.ParseMAC` takes). The caller checks
    /// `backend_type` first: flannel's vxlan backend skips leases whose type is not "vxlan".
    pub fn vxlan_data(&self) -> Result<VxlanData, LeaseError> {
        vxlan_data(
            self.backend_data.as_ref(),
            "BackendData",
            "BackendData.VNI",
            "BackendData.VtepMAC",
        )
    }

    /// The same for `BackendV6Data` (the `flannel-v6.<VNI>` VTEP of a dual-stack host).
    pub fn vxlan_v6_data(&self) -> Result<VxlanData, LeaseError> {
        vxlan_data(
            self.backend_v6_data.as_ref(),
            "BackendV6Data",
            "BackendV6Data.VNI",
            "BackendV6Data.VtepMAC",
        )
    }
}

fn vxlan_data(
    data: Option<&RawJson>,
    key: &'static str,
    vni_key: &'static str,
    mac_key: &'static str,
) -> Result<VxlanData, LeaseError> {
    let data = data.ok_or(LeaseError::Missing { key })?;
    let m = gojson::members(data.as_str().as_bytes()).map_err(|_| LeaseError::Invalid {
        key,
        value: data.as_str().chars().take(60).collect(),
        reason: "not a JSON object",
    })?;
    let vni = match gojson::present(&m, VXLAN_DATA_FIELDS, "VNI") {
        None => 0,
        Some(raw) => gojson::as_uint(raw)
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| LeaseError::Invalid {
                key: vni_key,
                value: gojson::show(raw),
                reason: "not a 32-bit unsigned number",
            })?,
    };
    let raw_mac = gojson::present(&m, VXLAN_DATA_FIELDS, "VtepMAC")
        .ok_or(LeaseError::Missing { key: mac_key })?;
    let vtep_mac = gojson::as_str(raw_mac)
        .ok()
        .and_then(|s| parse_go_mac(&s))
        .ok_or_else(|| LeaseError::Invalid {
            key: mac_key,
            value: gojson::show(raw_mac),
            reason: "not a 6-byte MAC address",
        })?;
    Ok(VxlanData { vni, vtep_mac })
}

/// Go's `net.ParseIP`: dotted IPv4 or IPv6 text.
fn parse_go_ip(s: &str) -> Option<std::net::IpAddr> {
    s.parse().ok()
}

/// Go's `net.ParseMAC`, 6-byte forms only: `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff`,
/// `aabb.ccdd.eeff` (hex digits of either case).
fn parse_go_mac(s: &str) -> Option<EthernetAddress> {
    let b = s.as_bytes();
    let hex = |pair: &[u8]| -> Option<u8> {
        if !pair.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u8::from_str_radix(core::str::from_utf8(pair).ok()?, 16).ok()
    };
    let mut out = [0u8; 6];
    if b.len() == 17 && (b[2] == b':' || b[2] == b'-') {
        let sep = b[2];
        for (i, byte) in out.iter_mut().enumerate() {
            if i < 5 && b[3 * i + 2] != sep {
                return None;
            }
            *byte = hex(&b[3 * i..3 * i + 2])?;
        }
        Some(EthernetAddress(out))
    } else if b.len() == 14 && b[4] == b'.' && b[9] == b'.' {
        for (i, byte) in out.iter_mut().enumerate() {
            let at = (i / 2) * 5 + (i % 2) * 2;
            *byte = hex(&b[at..at + 2])?;
        }
        Some(EthernetAddress(out))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<String> {
        SubnetKey::parse(s).map(|k| k.to_string())
    }

    fn mac(s: &str) -> EthernetAddress {
        s.parse().unwrap()
    }

    const LEASE_UDP: &[u8] = include_bytes!("../../../../fixtures/flannel/lease-udp.json");
    const LEASE_VXLAN: &[u8] = include_bytes!("../../../../fixtures/flannel/lease-vxlan.json");
    const LEASE_VXLAN_DUAL: &[u8] =
        include_bytes!("../../../../fixtures/flannel/lease-vxlan-dual-stack.json");

    fn text(b: &[u8]) -> &str {
        core::str::from_utf8(b).unwrap().trim_end()
    }

    #[test]
    fn key_round_trips() {
        for k in [
            "10.5.52.0-24",
            "10.5.52.0-24&fc00:0:0:1::-64",
            "0.0.0.0-0",
            "10.5.52.1-24",
            "255.255.255.252-31&::-127",
        ] {
            assert_eq!(key(k).as_deref(), Some(k), "{k}");
        }
        let k = SubnetKey::parse("10.5.52.0-24&fc00:0:0:1::-64").unwrap();
        assert_eq!(
            k.ipv4,
            Ipv4Net::new("10.5.52.0".parse().unwrap(), 24).unwrap()
        );
        assert_eq!(k.ipv6, Ipv6Net::new("fc00:0:0:1::".parse().unwrap(), 64));
        // Host bits are kept, as in flanneld.
        assert_eq!(
            SubnetKey::parse("10.5.52.1-24").unwrap().ipv4.addr(),
            "10.5.52.1".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn key_display_is_make_subnet_key() {
        let v4: Ipv4Net = Ipv4Net::new("10.5.52.0".parse().unwrap(), 24).unwrap();
        assert_eq!(SubnetKey::new(v4).to_string(), "10.5.52.0-24");
        let v6 = Ipv6Net::new("FC00:0000:0:1::".parse().unwrap(), 64).unwrap();
        assert_eq!(
            SubnetKey::dual_stack(v4, v6).to_string(),
            "10.5.52.0-24&fc00:0:0:1::-64"
        );
        // Go prints an IPv4-mapped IPv6 address as plain IPv4 (which the key expression
        // then cannot read back: flanneld has the same blind spot).
        let mapped = Ipv6Net::new("::ffff:10.0.0.0".parse().unwrap(), 120).unwrap();
        let k = SubnetKey::dual_stack(v4, mapped).to_string();
        assert_eq!(k, "10.5.52.0-24&10.0.0.0-120");
        assert_eq!(SubnetKey::parse(&k), None);
    }

    #[test]
    fn key_parse_follows_the_regexp() {
        // Anchored at the end only: whole etcd keys parse.
        assert_eq!(
            key("/coreos.com/network/subnets/10.5.52.0-24").as_deref(),
            Some("10.5.52.0-24")
        );
        assert_eq!(
            key("/coreos.com/network/subnets/10.5.52.0-24&fc00::-64").as_deref(),
            Some("10.5.52.0-24&fc00::-64")
        );
        // The leftmost match decides: "1.2.3.4.5-24" matches from "2".
        assert_eq!(key("1.2.3.4.5-24").as_deref(), Some("2.3.4.5-24"));
        // Unescaped dots match anything, so these match but the address does not parse.
        assert_eq!(key("10x5.52.0-24"), None);
        assert_eq!(key("10.5x52y0-24"), None);
        assert_eq!(key("10.5-52.0-24"), None);
        // Prefix lengths are 5-bit (IPv4) and 7-bit (IPv6) numbers.
        assert_eq!(key("10.5.52.0-31").as_deref(), Some("10.5.52.0-31"));
        assert_eq!(key("10.5.52.0-32"), None);
        assert_eq!(key("10.5.52.0-024").as_deref(), Some("10.5.52.0-24"));
        assert_eq!(key("10.5.52.0-99999999999999999999999"), None);
        assert_eq!(key("10.5.52.0-24&fc00::-128"), None);
        // Upper-case IPv6 is outside [a-f\d:], and then nothing matches up to the end.
        assert_eq!(key("10.5.52.0-24&FC00::-64"), None);
        // Trailing junk, a trailing newline, missing parts, leading zeros, non-ASCII.
        assert_eq!(key("10.5.52.0-24x"), None);
        assert_eq!(key("10.5.52.0-24\n"), None);
        assert_eq!(key("10.5.52.0"), None);
        assert_eq!(key("10.5.52-24"), None);
        // The leftmost match starts at 0 and Go's ParseIP rejects leading zeros.
        assert_eq!(key("010.5.52.0-24"), None);
    }

    #[test]
    fn key_parse_rejects_junk_without_panicking() {
        for junk in [
            "",
            "-",
            "&",
            "1.2.3.4-",
            "1.2.3.4-24&",
            "1.2.3.4-24&::-",
            "é.1.2.3-24",
            "1.2.3.4-24&:::::-64",
            "1.2é3.4-24",
        ] {
            assert_eq!(key(junk), None, "{junk:?}");
        }
        let long = "9".repeat(3000) + ".1.2.3-24";
        assert_eq!(key(&long), None);
        assert_eq!(key(&"1.".repeat(5000)), None);
        // Long but within the limit: only the last four numbers match.
        let many = "1.1.1.".repeat(600) + "1-24";
        assert_eq!(key(&many).as_deref(), Some("1.1.1.1-24"));
        let too_long = "1.1.1.".repeat(700) + "1-24";
        assert_eq!(key(&too_long), None);
    }

    #[test]
    fn udp_lease_json_is_byte_exact() {
        let attrs = LeaseAttrs::udp("1.2.3.4".parse().unwrap());
        assert_eq!(attrs.to_json(), text(LEASE_UDP));
        assert_eq!(
            attrs.to_json(),
            r#"{"PublicIP":"1.2.3.4","PublicIPv6":null}"#
        );
        assert_eq!(LeaseAttrs::parse(LEASE_UDP).unwrap(), attrs);
    }

    #[test]
    fn host_gw_lease_json_is_byte_exact() {
        let attrs = LeaseAttrs::host_gw("198.18.0.1".parse().unwrap());
        let flanneld = r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}"#;
        assert_eq!(attrs.to_json(), flanneld);
        assert_eq!(LeaseAttrs::parse(flanneld.as_bytes()).unwrap(), attrs);
    }

    #[test]
    fn vxlan_lease_json_is_byte_exact() {
        let attrs = LeaseAttrs::vxlan("192.168.64.3".parse().unwrap(), 1, mac("c6:d2:32:6f:8f:44"));
        assert_eq!(attrs.to_json(), text(LEASE_VXLAN));
        let parsed = LeaseAttrs::parse(LEASE_VXLAN).unwrap();
        assert_eq!(parsed, attrs);
        assert_eq!(parsed.backend_type.as_deref(), Some("vxlan"));
        assert_eq!(
            parsed.vxlan_data().unwrap(),
            VxlanData {
                vni: 1,
                vtep_mac: mac("c6:d2:32:6f:8f:44")
            }
        );
        assert!(matches!(
            parsed.vxlan_v6_data(),
            Err(LeaseError::Missing {
                key: "BackendV6Data"
            })
        ));
    }

    #[test]
    fn dual_stack_lease_json_is_byte_exact() {
        let attrs = LeaseAttrs::vxlan_dual_stack(
            "192.168.64.3".parse().unwrap(),
            "fd00:198:18::3".parse().unwrap(),
            1,
            mac("c6:d2:32:6f:8f:44"),
            mac("c6:d2:32:6f:8f:46"),
        );
        assert_eq!(attrs.to_json(), text(LEASE_VXLAN_DUAL));
        let parsed = LeaseAttrs::parse(LEASE_VXLAN_DUAL).unwrap();
        assert_eq!(parsed, attrs);
        assert_eq!(
            parsed.vxlan_v6_data().unwrap().vtep_mac,
            mac("c6:d2:32:6f:8f:46")
        );
    }

    #[test]
    fn lease_parse_is_tolerant_like_go() {
        let a = LeaseAttrs::parse(
            br#"{ "publicip" : "10.0.0.1", "backendtype":"vxlan", "BACKENDDATA": { "vni" : 7, "vtepmac" : "C6-D2-32-6F-8F-44" }, "Other": 1 }"#,
        )
        .unwrap();
        assert_eq!(a.public_ip, "10.0.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(a.public_ipv6, None);
        assert_eq!(
            a.backend_data.as_ref().unwrap().as_str(),
            r#"{"vni":7,"vtepmac":"C6-D2-32-6F-8F-44"}"#
        );
        assert_eq!(
            a.vxlan_data().unwrap(),
            VxlanData {
                vni: 7,
                vtep_mac: mac("c6:d2:32:6f:8f:44")
            }
        );
        assert_eq!(
            a.to_json(),
            r#"{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"vni":7,"vtepmac":"C6-D2-32-6F-8F-44"}}"#
        );
        let a = LeaseAttrs::parse(
            br#"{"PublicIP":"10.0.0.1","BackendData":{"VtepMAC":"c6d2.326f.8f44"}}"#,
        )
        .unwrap();
        assert_eq!(
            a.vxlan_data().unwrap(),
            VxlanData {
                vni: 0,
                vtep_mac: mac("c6:d2:32:6f:8f:44")
            }
        );
        let a = LeaseAttrs::parse(
            br#"{"PublicIP":"10.0.0.1","PublicIPv6":"FC00::1","BackendType":""}"#,
        )
        .unwrap();
        assert_eq!(a.public_ipv6, Some("fc00::1".parse().unwrap()));
        assert_eq!(a.backend_type, None);
        assert_eq!(
            a.to_json(),
            r#"{"PublicIP":"10.0.0.1","PublicIPv6":"fc00::1"}"#
        );
    }

    #[test]
    fn lease_parse_errors() {
        assert!(matches!(
            LeaseAttrs::parse(b"{}"),
            Err(LeaseError::Missing { key: "PublicIP" })
        ));
        assert!(matches!(
            LeaseAttrs::parse(br#"{"PublicIP":null}"#),
            Err(LeaseError::Missing { key: "PublicIP" })
        ));
        assert_eq!(
            LeaseAttrs::parse(br#"{"PublicIP":"fc00::1"}"#)
                .unwrap_err()
                .to_string(),
            "the lease value's PublicIP = \"fc00::1\": not an IPv4 address"
        );
        assert!(matches!(
            LeaseAttrs::parse(br#"{"PublicIP":"1.2.3.4","PublicIPv6":""}"#),
            Err(LeaseError::Invalid {
                key: "PublicIPv6",
                ..
            })
        ));
        assert!(matches!(LeaseAttrs::parse(b"[]"), Err(LeaseError::Json(_))));
        assert!(matches!(
            LeaseAttrs::parse(b"{\"PublicIP\""),
            Err(LeaseError::Json(_))
        ));
        let a = LeaseAttrs::parse(
            br#"{"PublicIP":"1.2.3.4","BackendData":{"VNI":-1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        )
        .unwrap();
        assert!(matches!(
            a.vxlan_data(),
            Err(LeaseError::Invalid {
                key: "BackendData.VNI",
                ..
            })
        ));
        let a = LeaseAttrs::parse(br#"{"PublicIP":"1.2.3.4","BackendData":{"VNI":1}}"#).unwrap();
        assert!(matches!(
            a.vxlan_data(),
            Err(LeaseError::Missing {
                key: "BackendData.VtepMAC"
            })
        ));
        for bad in [
            "c6:d2:32:6f:8f",
            "c6:d2-32:6f:8f:44",
            "g6:d2:32:6f:8f:44",
            "c6d2.326f.8f4",
            "",
            "00:00:5e:00:53:01:00:01",
        ] {
            let json = format!(r#"{{"PublicIP":"1.2.3.4","BackendData":{{"VtepMAC":"{bad}"}}}}"#);
            let a = LeaseAttrs::parse(json.as_bytes()).unwrap();
            assert!(
                matches!(
                    a.vxlan_data(),
                    Err(LeaseError::Invalid {
                        key: "BackendData.VtepMAC",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let a = LeaseAttrs::parse(br#"{"PublicIP":"1.2.3.4","BackendData":[1]}"#).unwrap();
        assert!(matches!(
            a.vxlan_data(),
            Err(LeaseError::Invalid {
                key: "BackendData",
                ..
            })
        ));
    }

    #[test]
    fn raw_json_compacts_and_validates() {
        assert_eq!(
            RawJson::new(" { \"a\" : [1, 2] } ").unwrap().as_str(),
            r#"{"a":[1,2]}"#
        );
        assert!(RawJson::new("{").is_err());
        assert!(RawJson::new("1 2").is_err());
    }
}
