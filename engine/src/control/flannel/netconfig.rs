//! The flannel network config, `<prefix>/config` in etcd (FLANNEL.md §1.1).
//!
//! [`NetworkConfig::parse`] does what flanneld's `subnet.ParseConfig` followed by
//! `CheckNetworkConfig` does (flannel `pkg/subnet/config.go`), plus the backend's own parse
//! (`pkg/backend/udp/udp_amd64.go`, `pkg/backend/vxlan/vxlan.go parseVXLANConfig`):
//!
//! - Go `encoding/json` semantics: keys match field names case-insensitively, unknown keys
//!   are ignored, `null` leaves a field at its default.
//! - Defaults: `EnableIPv4` true; `SubnetLen` 24 for a Network of /22 or shorter, else the
//!   Network's length + 2 (a Network longer than /28 is too small); `SubnetMin` the second
//!   subnet, `SubnetMax` the start of the last one (inclusive); IPv6 likewise with 64, 124
//!   and 62; no `Backend` means type `udp`; the backend type is lower-cased.
//! - Validation with flanneld's reasons, each error naming the key and the value.
//!
//! What weft cannot serve is rejected here with one clear error rather than failing later:
//! backend types other than udp, vxlan and host-gw, vxlan `GBP` and `Learning`, host-gw on a
//! dual-stack network, and IPv6-only networks (`EnableIPv4: false`, which flanneld's etcd
//! mode cannot run either). An unknown backend type is named as flanneld names it
//! (`unknown backend type: <type>`).
//! Beyond flanneld, weft also rejects a `SubnetMin` above `SubnetMax` (flanneld would only
//! fail later with "out of subnets") and out-of-range ports, VNIs and MTUs.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::value::RawValue;

use super::gojson::{self, Members};
use super::net::{Ipv4Net, Ipv6Net};

/// The udp backend's default port (flannel `pkg/backend/udp`).
pub const DEFAULT_UDP_PORT: u16 = 8285;
/// The Linux kernel's default VXLAN port, used when the config's `Port` is 0 or absent.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// The vxlan backend's default VNI.
pub const DEFAULT_VNI: u32 = 1;
/// Bytes the vxlan backend takes off the underlay MTU (FLANNEL.md §2).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The config fields flanneld reads (`subnet.Config`; `BackendType` is `json:"-"`).
const CONFIG_FIELDS: &[&str] = &[
    "EnableIPv4",
    "EnableIPv6",
    "EnableNFTables",
    "Network",
    "IPv6Network",
    "SubnetMin",
    "SubnetMax",
    "IPv6SubnetMin",
    "IPv6SubnetMax",
    "SubnetLen",
    "IPv6SubnetLen",
    "Backend",
];
/// `parseBackendType`'s struct.
const TYPE_FIELDS: &[&str] = &["Type"];
/// The udp backend's struct.
const UDP_FIELDS: &[&str] = &["Port"];
/// `VXLANConfig`'s JSON tags.
const VXLAN_FIELDS: &[&str] = &["vni", "port", "mtu", "gbp", "learning", "directRouting"];

/// Why a flannel network config was rejected. Every variant names the key involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetConfigError {
    /// The document is not a JSON object.
    #[error("the flannel network config is not a JSON object: {0}")]
    Json(String),
    /// A required key is absent.
    #[error("{key} is missing: {reason}")]
    Missing {
        /// The key, e.g. `Network`.
        key: &'static str,
        /// What to do about it.
        reason: String,
    },
    /// A key has a value flanneld would reject too.
    #[error("{key} = {value}: {reason}")]
    Invalid {
        /// The key, e.g. `SubnetLen` or `Backend.Port`.
        key: &'static str,
        /// The value as written (JSON text).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A valid flannel setting that weft does not serve.
    #[error("{key} = {value}: {reason}")]
    Unsupported {
        /// The key, e.g. `Backend.Type`.
        key: &'static str,
        /// The value as written (JSON text).
        value: String,
        /// What weft serves instead.
        reason: String,
    },
}

fn invalid(key: &'static str, raw: &RawValue, reason: impl Into<String>) -> NetConfigError {
    NetConfigError::Invalid {
        key,
        value: gojson::show(raw),
        reason: reason.into(),
    }
}

fn unsupported(key: &'static str, raw: &RawValue, reason: impl Into<String>) -> NetConfigError {
    NetConfigError::Unsupported {
        key,
        value: gojson::show(raw),
        reason: reason.into(),
    }
}

/// The IPv6 half of a dual-stack network (`EnableIPv6: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6NetworkConfig {
    /// `IPv6Network`, host bits cleared.
    pub network: Ipv6Net,
    /// `IPv6SubnetLen`: the prefix length of every host's IPv6 subnet.
    pub subnet_len: u8,
    /// `IPv6SubnetMin`: the lowest subnet address that may be allocated.
    pub subnet_min: Ipv6Addr,
    /// `IPv6SubnetMax`: the highest subnet address that may be allocated (inclusive).
    pub subnet_max: Ipv6Addr,
}

/// The vxlan backend's settings (`VXLANConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanConfig {
    /// `VNI` (default 1).
    pub vni: u32,
    /// `Port`, with 0 resolved to the kernel default 8472.
    pub port: u16,
    /// `MTU`: the *underlay* MTU; `None` means "the external interface's MTU". The overlay
    /// device gets this minus [`VXLAN_OVERHEAD`].
    pub mtu: Option<u32>,
    /// `DirectRouting`: a host whose public IP is on this host's L2 segment (the kernel
    /// routes to it without a gateway, out of the interface) is reached by a plain route
    /// `<subnet> via <PublicIP>` (as host-gw), the others through the VXLAN device.
    pub direct_routing: bool,
}

/// The backend a flannel network uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendConfig {
    /// flannel's `udp` backend (also the default when `Backend` is absent).
    Udp {
        /// `Port` (default 8285): both ends send from and to it.
        port: u16,
    },
    /// flannel's `vxlan` backend.
    Vxlan(VxlanConfig),
    /// flannel's `host-gw` backend: no tunnel, one kernel route `<subnet> via <PublicIP>`
    /// per remote lease; every host must be on the same L2 segment.
    HostGw,
}

impl BackendConfig {
    /// The backend type as flanneld names it (`"udp"`, `"vxlan"`, `"host-gw"`).
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendConfig::Udp { .. } => "udp",
            BackendConfig::Vxlan(_) => "vxlan",
            BackendConfig::HostGw => "host-gw",
        }
    }
}

/// A validated flannel network config with flanneld's defaults filled in.
///
/// IPv4 is always enabled (weft rejects `EnableIPv4: false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `Network`, host bits cleared.
    pub network: Ipv4Net,
    /// `SubnetLen`: the prefix length of every host's subnet.
    pub subnet_len: u8,
    /// `SubnetMin`: the lowest subnet address that may be allocated.
    pub subnet_min: Ipv4Addr,
    /// `SubnetMax`: the highest subnet address that may be allocated (inclusive).
    pub subnet_max: Ipv4Addr,
    /// The IPv6 half when `EnableIPv6` is true.
    pub ipv6: Option<Ipv6NetworkConfig>,
    /// `EnableNFTables`: flanneld masquerades with nftables instead of iptables (no effect on
    /// the data plane).
    pub enable_nftables: bool,
    /// `Backend`.
    pub backend: BackendConfig,
}

impl NetworkConfig {
    /// Parses and validates the JSON stored at `<prefix>/config`.
    pub fn parse(json: &[u8]) -> Result<NetworkConfig, NetConfigError> {
        let m = gojson::members(json).map_err(|e| NetConfigError::Json(e.to_string()))?;
        let get = |name| gojson::present(&m, CONFIG_FIELDS, name);

        let enable_ipv4 = opt_bool(get("EnableIPv4"), "EnableIPv4")?.unwrap_or(true);
        if !enable_ipv4 {
            return Err(NetConfigError::Unsupported {
                key: "EnableIPv4",
                value: "false".into(),
                reason: "IPv6-only networks are not supported (flanneld's etcd mode cannot run \
                         them either); remove EnableIPv4 or set it to true"
                    .into(),
            });
        }
        let enable_ipv6 = opt_bool(get("EnableIPv6"), "EnableIPv6")?.unwrap_or(false);
        let enable_nftables = opt_bool(get("EnableNFTables"), "EnableNFTables")?.unwrap_or(false);

        let (network, subnet_len, subnet_min, subnet_max) = ipv4_half(&m)?;
        let ipv6 = if enable_ipv6 {
            Some(ipv6_half(&m)?)
        } else {
            None
        };
        let backend = backend(gojson::field(&m, CONFIG_FIELDS, "Backend"))?;
        if backend == BackendConfig::HostGw && ipv6.is_some() {
            return Err(NetConfigError::Unsupported {
                key: "EnableIPv6",
                value: "true".into(),
                reason: "weft's host-gw backend routes IPv4 only; use vxlan for a dual-stack \
                         network, or remove EnableIPv6"
                    .into(),
            });
        }
        Ok(NetworkConfig {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            ipv6,
            enable_nftables,
            backend,
        })
    }
}

fn opt_bool(raw: Option<&RawValue>, key: &'static str) -> Result<Option<bool>, NetConfigError> {
    raw.map(|r| gojson::as_bool(r).map_err(|()| invalid(key, r, "must be true or false")))
        .transpose()
}

fn opt_uint(raw: Option<&RawValue>, key: &'static str) -> Result<Option<u64>, NetConfigError> {
    raw.map(|r| {
        gojson::as_uint(r).map_err(|()| invalid(key, r, "must be a non-negative whole number"))
    })
    .transpose()
}

fn opt_int(raw: Option<&RawValue>, key: &'static str) -> Result<Option<i64>, NetConfigError> {
    raw.map(|r| gojson::as_int(r).map_err(|()| invalid(key, r, "must be a whole number")))
        .transpose()
}

/// The default subnet length and the too-small check shared by both families
/// (`CheckNetworkConfig`): `(too_small_above, default_len, prefix_le)`.
fn default_subnet_len(prefix: u8, too_small_above: u8, default_len: u8) -> Option<u8> {
    if prefix > too_small_above {
        None
    } else if prefix <= default_len - 2 {
        Some(default_len)
    } else {
        Some(prefix + 2)
    }
}

type Ipv4Half = (Ipv4Net, u8, Ipv4Addr, Ipv4Addr);

fn ipv4_half(m: &Members) -> Result<Ipv4Half, NetConfigError> {
    let get = |name| gojson::present(m, CONFIG_FIELDS, name);
    const MISSING: &str = "please define a correct Network parameter in the flannel config, \
                           e.g. \"Network\": \"10.5.0.0/16\"";
    let raw_net = get("Network").ok_or(NetConfigError::Missing {
        key: "Network",
        reason: MISSING.into(),
    })?;
    let network = gojson::as_str(raw_net)
        .ok()
        .and_then(|s| Ipv4Net::parse_cidr(&s))
        .ok_or_else(|| invalid("Network", raw_net, "not an IPv4 CIDR such as 10.5.0.0/16"))?;
    if network.prefix_len() == 0 && u32::from(network.addr()) == 0 {
        // flanneld's IP4Net.Empty(): 0.0.0.0/0 counts as "not set".
        return Err(invalid("Network", raw_net, MISSING));
    }

    let subnet_len = match opt_uint(get("SubnetLen"), "SubnetLen")?.filter(|&l| l > 0) {
        Some(len) => {
            let raw = get("SubnetLen").expect("present: it parsed");
            if len > 30 {
                return Err(invalid("SubnetLen", raw, "must be less than /31"));
            }
            if len < u64::from(network.prefix_len()) + 2 {
                return Err(invalid(
                    "SubnetLen",
                    raw,
                    format!(
                        "network must be able to accommodate at least four subnets \
                         (Network {network} needs a SubnetLen of at least {})",
                        network.prefix_len() + 2
                    ),
                ));
            }
            len as u8
        }
        None => default_subnet_len(network.prefix_len(), 28, 24).ok_or_else(|| {
            invalid(
                "Network",
                raw_net,
                "network is too small. Minimum useful network prefix is /28",
            )
        })?,
    };

    let size = 1u32 << (32 - subnet_len);
    let first = u32::from(network.addr());
    let last_start = u32::from(network.last_addr()) & !(size - 1);
    let bound = |key: &'static str, default: u32| -> Result<Ipv4Addr, NetConfigError> {
        let Some(raw) = get(key) else {
            return Ok(Ipv4Addr::from(default));
        };
        let addr = gojson::as_str(raw)
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| invalid(key, raw, "not an IPv4 address such as 10.5.1.0"))?;
        if addr.is_unspecified() {
            // flanneld: 0.0.0.0 means "not set".
            return Ok(Ipv4Addr::from(default));
        }
        if !network.contains(addr) {
            return Err(invalid(
                key,
                raw,
                format!("{key} is not in the range of the Network {network}"),
            ));
        }
        if u32::from(addr) & (size - 1) != 0 {
            return Err(invalid(
                key,
                raw,
                format!("{key} is not on a SubnetLen boundary (/{subnet_len})"),
            ));
        }
        Ok(addr)
    };
    let subnet_min = bound("SubnetMin", first + size)?;
    let subnet_max = bound("SubnetMax", last_start)?;
    if subnet_min > subnet_max {
        return Err(NetConfigError::Invalid {
            key: "SubnetMin",
            value: format!("\"{subnet_min}\""),
            reason: format!("above SubnetMax {subnet_max}: no subnet could ever be allocated"),
        });
    }
    Ok((network, subnet_len, subnet_min, subnet_max))
}

fn ipv6_half(m: &Members) -> Result<Ipv6NetworkConfig, NetConfigError> {
    let get = |name| gojson::present(m, CONFIG_FIELDS, name);
    const MISSING: &str = "please define a correct IPv6Network parameter in the flannel config, \
                           e.g. \"IPv6Network\": \"fc00::/48\"";
    let raw_net = get("IPv6Network").ok_or(NetConfigError::Missing {
        key: "IPv6Network",
        reason: MISSING.into(),
    })?;
    let network = gojson::as_str(raw_net)
        .ok()
        .and_then(|s| Ipv6Net::parse_cidr(&s))
        .ok_or_else(|| invalid("IPv6Network", raw_net, "not an IPv6 CIDR such as fc00::/48"))?;
    if network.prefix_len() == 0 && u128::from(network.addr()) == 0 {
        return Err(invalid("IPv6Network", raw_net, MISSING));
    }

    let subnet_len = match opt_uint(get("IPv6SubnetLen"), "IPv6SubnetLen")?.filter(|&l| l > 0) {
        Some(len) => {
            let raw = get("IPv6SubnetLen").expect("present: it parsed");
            if len > 126 {
                return Err(invalid("IPv6SubnetLen", raw, "must be less than /127"));
            }
            if len < u64::from(network.prefix_len()) + 2 {
                return Err(invalid(
                    "IPv6SubnetLen",
                    raw,
                    format!(
                        "network must be able to accommodate at least four subnets \
                         (IPv6Network {network} needs an IPv6SubnetLen of at least {})",
                        network.prefix_len() + 2
                    ),
                ));
            }
            len as u8
        }
        None => default_subnet_len(network.prefix_len(), 124, 64).ok_or_else(|| {
            invalid(
                "IPv6Network",
                raw_net,
                "IPv6Network is too small. Minimum useful network prefix is /124",
            )
        })?,
    };

    let size = 1u128 << (128 - u32::from(subnet_len));
    let first = u128::from(network.addr());
    let last_start = u128::from(network.last_addr()) & !(size - 1);
    let bound = |key: &'static str, default: u128| -> Result<Ipv6Addr, NetConfigError> {
        let Some(raw) = get(key) else {
            return Ok(Ipv6Addr::from(default));
        };
        let addr = gojson::as_str(raw)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .ok_or_else(|| invalid(key, raw, "not an IPv6 address such as fc00:0:0:1::"))?;
        if addr.is_unspecified() {
            return Ok(Ipv6Addr::from(default));
        }
        if !network.contains(addr) {
            return Err(invalid(
                key,
                raw,
                format!("{key} is not in the range of the IPv6Network {network}"),
            ));
        }
        if u128::from(addr) & (size - 1) != 0 {
            return Err(invalid(
                key,
                raw,
                format!("{key} is not on a SubnetLen boundary (/{subnet_len})"),
            ));
        }
        Ok(addr)
    };
    let subnet_min = bound("IPv6SubnetMin", first + size)?;
    let subnet_max = bound("IPv6SubnetMax", last_start)?;
    if subnet_min > subnet_max {
        return Err(NetConfigError::Invalid {
            key: "IPv6SubnetMin",
            value: format!("\"{subnet_min}\""),
            reason: format!("above IPv6SubnetMax {subnet_max}: no subnet could ever be allocated"),
        });
    }
    Ok(Ipv6NetworkConfig {
        network,
        subnet_len,
        subnet_min,
        subnet_max,
    })
}

fn backend(raw: Option<&RawValue>) -> Result<BackendConfig, NetConfigError> {
    let Some(raw) = raw else {
        return Ok(BackendConfig::Udp {
            port: DEFAULT_UDP_PORT,
        });
    };
    let m = match gojson::members_of(raw) {
        Ok(m) if raw.get() != "null" => m,
        _ => {
            return Err(invalid(
                "Backend",
                raw,
                "must be a JSON object such as {\"Type\":\"vxlan\"}",
            ))
        }
    };
    let (type_name, raw_type) = match gojson::present(&m, TYPE_FIELDS, "Type") {
        Some(r) => (
            gojson::as_str(r).map_err(|()| invalid("Backend.Type", r, "must be a string"))?,
            gojson::show(r),
        ),
        None => (String::new(), "\"\"".to_string()),
    };
    match type_name.to_lowercase().as_str() {
        "udp" => {
            let get = |name| gojson::present(&m, UDP_FIELDS, name);
            let port = match opt_int(get("Port"), "Backend.Port")? {
                None => DEFAULT_UDP_PORT,
                Some(p) => u16::try_from(p).ok().filter(|&p| p != 0).ok_or_else(|| {
                    invalid(
                        "Backend.Port",
                        get("Port").expect("present: it parsed"),
                        "must be a UDP port from 1 to 65535",
                    )
                })?,
            };
            Ok(BackendConfig::Udp { port })
        }
        "vxlan" => vxlan(&m).map(BackendConfig::Vxlan),
        // flanneld's host-gw backend reads no keys of its own.
        "host-gw" => Ok(BackendConfig::HostGw),
        lower => Err(NetConfigError::Unsupported {
            key: "Backend.Type",
            value: raw_type,
            reason: format!("unknown backend type: {lower} (weft serves udp, vxlan and host-gw)"),
        }),
    }
}

fn vxlan(m: &Members) -> Result<VxlanConfig, NetConfigError> {
    let get = |name| gojson::present(m, VXLAN_FIELDS, name);
    let vni = match opt_int(get("vni"), "Backend.VNI")? {
        None => DEFAULT_VNI,
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|&v| v < 1 << 24)
            .ok_or_else(|| {
                invalid(
                    "Backend.VNI",
                    get("vni").expect("present: it parsed"),
                    "must be a VXLAN network identifier from 0 to 16777215",
                )
            })?,
    };
    let port = match opt_int(get("port"), "Backend.Port")? {
        None | Some(0) => DEFAULT_VXLAN_PORT,
        Some(p) => u16::try_from(p).ok().ok_or_else(|| {
            invalid(
                "Backend.Port",
                get("port").expect("present: it parsed"),
                "must be a UDP port from 1 to 65535 (0 means the kernel default 8472)",
            )
        })?,
    };
    let mtu = match opt_int(get("mtu"), "Backend.MTU")? {
        None | Some(0) => None,
        Some(v) => Some(
            u32::try_from(v)
                .ok()
                .filter(|v| (68 + VXLAN_OVERHEAD..=65535).contains(v))
                .ok_or_else(|| {
                    invalid(
                        "Backend.MTU",
                        get("mtu").expect("present: it parsed"),
                        "the underlay MTU must be from 118 to 65535 (VXLAN takes 50 bytes and \
                         the overlay needs at least 68)",
                    )
                })?,
        ),
    };
    let flags = [
        (
            "gbp",
            "Backend.GBP",
            "VXLAN group-based policy is not supported by weft",
        ),
        (
            "learning",
            "Backend.Learning",
            "VXLAN learning is not supported by weft (it programs the forwarding table from \
             the leases, as flanneld does by default); remove it or set it to false",
        ),
    ];
    for (field, key, reason) in flags {
        if opt_bool(get(field), key)? == Some(true) {
            return Err(unsupported(key, get(field).expect("present"), reason));
        }
    }
    let direct_routing = opt_bool(get("directRouting"), "Backend.DirectRouting")?.unwrap_or(false);
    Ok(VxlanConfig {
        vni,
        port,
        mtu,
        direct_routing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<NetworkConfig, NetConfigError> {
        NetworkConfig::parse(json.as_bytes())
    }

    fn err(json: &str) -> String {
        parse(json).expect_err(json).to_string()
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn flannel_md_vxlan_example() {
        let c = NetworkConfig::parse(include_bytes!(
            "../../../../fixtures/flannel/config-vxlan.json"
        ))
        .unwrap();
        assert_eq!(c.network.to_string(), "10.5.0.0/16");
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, v4("10.5.1.0"));
        assert_eq!(c.subnet_max, v4("10.5.255.0"));
        assert_eq!(c.ipv6, None);
        assert!(!c.enable_nftables);
        assert_eq!(
            c.backend,
            BackendConfig::Vxlan(VxlanConfig {
                vni: 1,
                port: 8472,
                mtu: None,
                direct_routing: false
            })
        );
        assert_eq!(c.backend.type_name(), "vxlan");
    }

    #[test]
    fn no_backend_means_udp_8285() {
        let c = NetworkConfig::parse(include_bytes!(
            "../../../../fixtures/flannel/config-udp.json"
        ))
        .unwrap();
        assert_eq!(c.backend, BackendConfig::Udp { port: 8285 });
        assert_eq!(c.backend.type_name(), "udp");
        let c = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"UDP","Port":9000}}"#).unwrap();
        assert_eq!(c.backend, BackendConfig::Udp { port: 9000 });
        let c = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Port":null}}"#).unwrap();
        assert_eq!(c.backend, BackendConfig::Udp { port: 8285 });
    }

    #[test]
    fn default_subnet_len_rules() {
        let len = |net: &str| {
            parse(&format!(r#"{{"Network":"{net}"}}"#))
                .unwrap()
                .subnet_len
        };
        assert_eq!(len("10.0.0.0/8"), 24);
        assert_eq!(len("10.5.0.0/22"), 24);
        assert_eq!(len("10.5.0.0/23"), 25);
        assert_eq!(len("10.5.0.0/24"), 26);
        assert_eq!(len("10.5.0.0/28"), 30);
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/29"}"#),
            "Network = \"10.5.0.0/29\": network is too small. Minimum useful network prefix is /28"
        );
        // A /24 network split into /26s: min is the second, max the last.
        let c = parse(r#"{"Network":"10.5.7.0/24"}"#).unwrap();
        assert_eq!(
            (c.subnet_min, c.subnet_max),
            (v4("10.5.7.64"), v4("10.5.7.192"))
        );
        // Host bits of Network are dropped like net.ParseCIDR does.
        let c = parse(r#"{"Network":"10.5.3.4/16"}"#).unwrap();
        assert_eq!(c.network.to_string(), "10.5.0.0/16");
        assert_eq!(c.subnet_min, v4("10.5.1.0"));
    }

    #[test]
    fn explicit_subnet_len_checks() {
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetLen":31}"#),
            "SubnetLen = 31: must be less than /31"
        );
        let e = err(r#"{"Network":"10.5.0.0/16","SubnetLen":17}"#);
        assert!(
            e.starts_with(
                "SubnetLen = 17: network must be able to accommodate at least four subnets"
            ),
            "{e}"
        );
        let c = parse(r#"{"Network":"10.5.0.0/16","SubnetLen":18}"#).unwrap();
        assert_eq!(
            (c.subnet_len, c.subnet_min, c.subnet_max),
            (18, v4("10.5.64.0"), v4("10.5.192.0"))
        );
        let c = parse(r#"{"Network":"10.5.0.0/16","SubnetLen":0}"#).unwrap();
        assert_eq!(c.subnet_len, 24, "0 means unset");
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetLen":-1}"#),
            "SubnetLen = -1: must be a non-negative whole number"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetLen":"24"}"#),
            "SubnetLen = \"24\": must be a non-negative whole number"
        );
    }

    #[test]
    fn subnet_min_max_checks() {
        let c =
            parse(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}"#)
                .unwrap();
        assert_eq!(
            (c.subnet_min, c.subnet_max),
            (v4("10.5.10.0"), v4("10.5.20.0"))
        );
        let c = parse(r#"{"Network":"10.5.0.0/16","SubnetMin":"0.0.0.0"}"#).unwrap();
        assert_eq!(c.subnet_min, v4("10.5.1.0"), "0.0.0.0 means unset");
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}"#),
            "SubnetMin = \"10.6.0.0\": SubnetMin is not in the range of the Network 10.5.0.0/16"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetMax":"10.6.0.0"}"#),
            "SubnetMax = \"10.6.0.0\": SubnetMax is not in the range of the Network 10.5.0.0/16"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.128"}"#),
            "SubnetMin = \"10.5.1.128\": SubnetMin is not on a SubnetLen boundary (/24)"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetMax":"10.5.9.1"}"#),
            "SubnetMax = \"10.5.9.1\": SubnetMax is not on a SubnetLen boundary (/24)"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9"}"#),
            "SubnetMin = \"10.5.9\": not an IPv4 address such as 10.5.1.0"
        );
        assert!(err(
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.20.0","SubnetMax":"10.5.10.0"}"#
        )
        .starts_with("SubnetMin = \"10.5.20.0\": above SubnetMax 10.5.10.0"));
    }

    #[test]
    fn network_required_and_ipv4() {
        assert!(
            err("{}").starts_with("Network is missing: please define a correct Network parameter")
        );
        assert!(err(r#"{"Network":null}"#).starts_with("Network is missing"));
        assert_eq!(
            err(r#"{"Network":"fc00::/48"}"#),
            "Network = \"fc00::/48\": not an IPv4 CIDR such as 10.5.0.0/16"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0"}"#),
            "Network = \"10.5.0.0\": not an IPv4 CIDR such as 10.5.0.0/16"
        );
        assert!(
            err(r#"{"Network":"0.0.0.0/0"}"#).starts_with("Network = \"0.0.0.0/0\": please define")
        );
        assert!(err("[1,2]").starts_with("the flannel network config is not a JSON object"));
        assert!(err("{\"Network\":").starts_with("the flannel network config is not a JSON object"));
        assert!(err("").starts_with("the flannel network config is not a JSON object"));
    }

    #[test]
    fn keys_are_case_insensitive_and_unknown_keys_ignored() {
        let c = parse(
            r#"{"network":"10.5.0.0/16","SUBNETLEN":25,"subnetmin":"10.5.0.128","Whatever":[1],
                "backend":{"type":"VXLAN","VNI":7,"Port":4789,"mtu":9000,"GBP":false,"learning":false,"directrouting":false,"extra":1}}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_len, 25);
        assert_eq!(c.subnet_min, v4("10.5.0.128"));
        assert_eq!(
            c.backend,
            BackendConfig::Vxlan(VxlanConfig {
                vni: 7,
                port: 4789,
                mtu: Some(9000),
                direct_routing: false
            })
        );
        // Both members land on the Network field; as in Go, the last one wins.
        let c = parse(r#"{"Network":"10.5.0.0/16","network":"10.6.0.0/16"}"#).unwrap();
        assert_eq!(
            c.network.to_string(),
            "10.6.0.0/16",
            "Go: the last member wins"
        );
    }

    #[test]
    fn enable_flags() {
        let e = parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}"#)
            .unwrap_err();
        assert!(
            matches!(
                e,
                NetConfigError::Unsupported {
                    key: "EnableIPv4",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e
            .to_string()
            .starts_with("EnableIPv4 = false: IPv6-only networks are not supported"));
        let c =
            parse(r#"{"Network":"10.5.0.0/16","EnableIPv4":true,"EnableNFTables":true}"#).unwrap();
        assert!(c.enable_nftables);
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","EnableIPv6":"yes"}"#),
            "EnableIPv6 = \"yes\": must be true or false"
        );
        // IPv6 keys are ignored while EnableIPv6 is off.
        let c = parse(r#"{"Network":"10.5.0.0/16","IPv6Network":"junk"}"#).unwrap();
        assert_eq!(c.ipv6, None);
    }

    #[test]
    fn ipv6_defaults_and_checks() {
        let c = NetworkConfig::parse(include_bytes!(
            "../../../../fixtures/flannel/config-dual-stack.json"
        ))
        .unwrap();
        let v6c = c.ipv6.unwrap();
        assert_eq!(v6c.network.to_string(), "fc00::/48");
        assert_eq!(v6c.subnet_len, 64);
        assert_eq!(v6c.subnet_min, v6("fc00:0:0:1::"));
        assert_eq!(v6c.subnet_max, v6("fc00:0:0:ffff::"));
        let six = |extra: &str| {
            parse(&format!(
                r#"{{"Network":"10.5.0.0/16","EnableIPv6":true{extra}}}"#
            ))
        };
        let len = |net: &str| {
            six(&format!(r#","IPv6Network":"{net}""#))
                .unwrap()
                .ipv6
                .unwrap()
                .subnet_len
        };
        assert_eq!(len("fc00::/62"), 64);
        assert_eq!(len("fc00::/63"), 65);
        assert_eq!(len("fc00::/124"), 126);
        let e = six(r#","IPv6Network":"fc00::/125""#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "IPv6Network = \"fc00::/125\": IPv6Network is too small. Minimum useful network prefix is /124"
        );
        assert!(six("")
            .unwrap_err()
            .to_string()
            .starts_with("IPv6Network is missing"));
        let e = six(r#","IPv6Network":"fc00::/48","IPv6SubnetLen":127"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "IPv6SubnetLen = 127: must be less than /127");
        let e = six(r#","IPv6Network":"fc00::/48","IPv6SubnetLen":49"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("IPv6SubnetLen = 49: network must be able"),
            "{e}"
        );
        let e = six(r#","IPv6Network":"fc00::/48","IPv6SubnetMin":"fd00::""#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("IPv6SubnetMin = \"fd00::\": IPv6SubnetMin is not in the range"),
            "{e}"
        );
        let e = six(r#","IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:5::1""#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "IPv6SubnetMax = \"fc00:0:0:5::1\": IPv6SubnetMax is not on a SubnetLen boundary"
            ),
            "{e}"
        );
        let e = six(r#","IPv6Network":"10.0.0.0/8""#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("IPv6Network = \"10.0.0.0/8\": not an IPv6 CIDR"),
            "{e}"
        );
        let c = six(
            r#","ipv6network":"fc00::/48","IPV6SUBNETMIN":"fc00:0:0:10::","ipv6SubnetMax":"::""#,
        )
        .unwrap();
        let v6c = c.ipv6.unwrap();
        assert_eq!(v6c.subnet_min, v6("fc00:0:0:10::"));
        assert_eq!(v6c.subnet_max, v6("fc00:0:0:ffff::"), ":: means unset");
    }

    #[test]
    fn backend_type_errors() {
        for ty in ["extension", "wireguard", "ipip", "alloc", "hostgw"] {
            let e = err(&format!(
                r#"{{"Network":"10.5.0.0/16","Backend":{{"Type":"{ty}"}}}}"#
            ));
            assert_eq!(
                e,
                format!(
                    "Backend.Type = \"{ty}\": unknown backend type: {ty} (weft serves udp, \
                     vxlan and host-gw)"
                )
            );
        }
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"IPIP"}}"#),
            "Backend.Type = \"IPIP\": unknown backend type: ipip (weft serves udp, vxlan and \
             host-gw)"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","Backend":{}}"#),
            "Backend.Type = \"\": unknown backend type:  (weft serves udp, vxlan and host-gw)"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","Backend":"vxlan"}"#),
            "Backend = \"vxlan\": must be a JSON object such as {\"Type\":\"vxlan\"}"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","Backend":{"Type":1}}"#),
            "Backend.Type = 1: must be a string"
        );
    }

    #[test]
    fn host_gw_backend() {
        for ty in ["host-gw", "Host-GW", "HOST-GW"] {
            let c = parse(&format!(
                r#"{{"Network":"100.96.0.0/16","Backend":{{"Type":"{ty}","Port":1,"extra":true}}}}"#
            ))
            .unwrap();
            assert_eq!(c.backend, BackendConfig::HostGw, "{ty}");
            assert_eq!(c.backend.type_name(), "host-gw");
            assert_eq!(c.subnet_len, 24);
        }
        let e = err(
            r#"{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:100:96::/48","Backend":{"Type":"host-gw"}}"#,
        );
        assert!(
            e.starts_with("EnableIPv6 = true: weft's host-gw backend routes IPv4 only"),
            "{e}"
        );
    }

    #[test]
    fn vxlan_options() {
        let vx = |opts: &str| {
            parse(&format!(
                r#"{{"Network":"10.5.0.0/16","Backend":{{"Type":"vxlan"{opts}}}}}"#
            ))
        };
        let e = vx(r#","GBP":true"#).unwrap_err();
        assert!(matches!(
            e,
            NetConfigError::Unsupported {
                key: "Backend.GBP",
                ..
            }
        ));
        assert!(e
            .to_string()
            .starts_with("Backend.GBP = true: VXLAN group-based policy is not supported"));
        let e = vx(r#","Learning":true"#).unwrap_err().to_string();
        assert!(
            e.starts_with("Backend.Learning = true: VXLAN learning is not supported"),
            "{e}"
        );
        for (opts, direct) in [
            (r#","DirectRouting":true"#, true),
            (r#","directRouting":true"#, true),
            (r#","directrouting":false"#, false),
            (r#","DirectRouting":null"#, false),
            ("", false),
        ] {
            assert_eq!(
                vx(opts).unwrap().backend,
                BackendConfig::Vxlan(VxlanConfig {
                    vni: 1,
                    port: 8472,
                    mtu: None,
                    direct_routing: direct
                }),
                "{opts}"
            );
        }
        let e = vx(r#","DirectRouting":"yes""#).unwrap_err().to_string();
        assert_eq!(e, "Backend.DirectRouting = \"yes\": must be true or false");
        let e = vx(r#","GBP":1"#).unwrap_err().to_string();
        assert_eq!(e, "Backend.GBP = 1: must be true or false");
        assert_eq!(
            vx(r#","Port":0"#).unwrap().backend,
            BackendConfig::Vxlan(VxlanConfig {
                vni: 1,
                port: 8472,
                mtu: None,
                direct_routing: false
            })
        );
        let e = vx(r#","Port":65536"#).unwrap_err().to_string();
        assert!(
            e.starts_with("Backend.Port = 65536: must be a UDP port"),
            "{e}"
        );
        let e = vx(r#","VNI":16777216"#).unwrap_err().to_string();
        assert!(
            e.starts_with("Backend.VNI = 16777216: must be a VXLAN network identifier"),
            "{e}"
        );
        let e = vx(r#","VNI":1.5"#).unwrap_err().to_string();
        assert_eq!(e, "Backend.VNI = 1.5: must be a whole number");
        assert_eq!(
            vx(r#","VNI":0"#).unwrap().backend,
            BackendConfig::Vxlan(VxlanConfig {
                vni: 0,
                port: 8472,
                mtu: None,
                direct_routing: false
            })
        );
        let e = vx(r#","MTU":100"#).unwrap_err().to_string();
        assert!(
            e.starts_with("Backend.MTU = 100: the underlay MTU must be from 118"),
            "{e}"
        );
        assert_eq!(
            vx(r#","MTU":0"#).unwrap().backend,
            BackendConfig::Vxlan(VxlanConfig {
                vni: 1,
                port: 8472,
                mtu: None,
                direct_routing: false
            })
        );
        let e = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Port":0}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "Backend.Port = 0: must be a UDP port from 1 to 65535");
    }
}
