//! The `weft run` configuration file (TOML): parsing and validation.
//!
//! [`Config::load`] reads and validates a file; [`Config::parse`] does the same for a string
//! (the path is only used in messages). Every problem becomes one [`ConfigError`] whose
//! `Display` is a single line naming the file, the key and the offending value.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default). The reference
//! of every key is the README's "Configuration" section.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weft_encap::table::{Cidr, Route};
use weft_encap::wire::EthernetAddress;

/// The default UDP port of the flannel UDP backend.
pub const DEFAULT_UDP_PORT: u16 = 8285;
/// The default UDP port of the VXLAN backend (Linux's and flannel's default; IANA's is 4789).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// A configuration problem: which file, which key, which value, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// The key, e.g. `[device] address` or `[[peer]] #2 subnet`; empty for whole-file errors.
    pub key: String,
    /// The offending value as written, if there is one.
    pub value: Option<String>,
    /// What is wrong, and what to do.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        match (&self.key.is_empty(), &self.value) {
            (true, _) => {}
            (false, Some(v)) => write!(f, "{} = {:?}: ", self.key, v)?,
            (false, None) => write!(f, "{}: ", self.key)?,
        }
        // One line, whatever the source error looked like.
        let problem = self
            .problem
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        f.write_str(&problem)
    }
}

impl std::error::Error for ConfigError {}

/// Which encapsulation the daemon speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// flannel's UDP backend: the raw inner IP packet as the UDP payload.
    Udp,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `backend`.
    pub backend: BackendKind,
    /// `network`: the whole IPv4 overlay (flannel's `Network`).
    pub network: Cidr,
    /// `network6`: the whole IPv6 overlay, if any.
    pub network6: Option<Cidr>,
    /// `underlay_mtu`: the MTU of the underlay path; `None` = read from the interface that
    /// holds the listen address.
    pub underlay_mtu: Option<u32>,
    /// `[device]`.
    pub device: DeviceConfig,
    /// `[listen]`.
    pub listen: SocketAddr,
    /// `[control] socket`: the control socket; a leading `@` means the abstract namespace.
    pub control_socket: String,
    /// `[icmp]`.
    pub icmp: IcmpConfig,
    /// `[validation]`.
    pub validation: ValidationConfig,
    /// `[engine] batch`: packets per batched system call (1-64; 1 behaves like flanneld).
    pub batch: usize,
    /// `[[peer]]`: the static routes.
    pub peers: Vec<Route>,
}

/// `[device]`: the TUN device weft creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// `name`.
    pub name: String,
    /// `address`: this host's overlay IPv4 address, assigned with `network`'s prefix length.
    pub address: Ipv4Addr,
    /// `address6`: this host's overlay IPv6 address, assigned with `network6`'s prefix length.
    pub address6: Option<Ipv6Addr>,
    /// `mtu`; `None` = underlay MTU minus the encapsulation overhead.
    pub mtu: Option<u32>,
}

/// `[icmp]`: the rate limit of generated ICMP errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpConfig {
    /// `rate`: errors per second.
    pub rate: u32,
    /// `burst`: errors at once.
    pub burst: u32,
}

/// `[validation]`: what received datagrams are checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationConfig {
    /// `check_peer`: drop datagrams from underlay addresses that are not peers.
    pub check_peer: bool,
    /// `check_inner_source`: drop inner packets whose source is outside the sender's subnets.
    pub check_inner_source: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    backend: String,
    network: String,
    network6: Option<String>,
    underlay_mtu: Option<i64>,
    device: RawDevice,
    listen: RawListen,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    icmp: RawIcmp,
    #[serde(default)]
    validation: RawValidation,
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    peer: Vec<RawPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    #[serde(default = "default_device_name")]
    name: String,
    address: String,
    address6: Option<String>,
    mtu: Option<i64>,
}

fn default_device_name() -> String {
    "flannel0".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: String,
    port: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIcmp {
    rate: Option<i64>,
    burst: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    check_peer: Option<bool>,
    check_inner_source: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    batch: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    subnet: String,
    endpoint: String,
    vtep_mac: Option<String>,
}

/// Builds errors for one file.
struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: &str, value: Option<&str>, problem: impl fmt::Display) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            key: key.to_owned(),
            value: value.map(str::to_owned),
            problem: problem.to_string(),
        }
    }

    fn cidr(&self, key: &str, value: &str) -> Result<Cidr, ConfigError> {
        value
            .parse::<Cidr>()
            .map_err(|e| self.err(key, Some(value), e))
    }

    fn ip(&self, key: &str, value: &str) -> Result<IpAddr, ConfigError> {
        value
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| self.err(key, Some(value), "not an IPv4 or IPv6 address"))
    }

    fn ranged(&self, key: &str, value: i64, lo: i64, hi: i64) -> Result<u32, ConfigError> {
        if (lo..=hi).contains(&value) {
            Ok(value as u32)
        } else {
            Err(self.err(
                key,
                Some(&value.to_string()),
                format!("must be between {lo} and {hi}"),
            ))
        }
    }
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT`, with `default_port` when none is given.
pub fn parse_endpoint(value: &str, default_port: u16) -> Option<SocketAddr> {
    let value = value.trim();
    if let Ok(sa) = value.parse::<SocketAddr>() {
        return Some(sa);
    }
    value
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

/// Converts a TOML byte offset into a 1-based line and column.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: String::new(),
            value: None,
            problem: format!("cannot read the configuration file: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Validates configuration `text`; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx { path };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| line_col(text, s.start));
            let problem = match at {
                Some((line, col)) => format!("line {line} column {col}: {}", e.message()),
                None => e.message().to_owned(),
            };
            ctx.err("", None, format!("not valid weft configuration: {problem}"))
        })?;

        let backend = match raw.backend.as_str() {
            "udp" => BackendKind::Udp,
            other => {
                return Err(ctx.err("backend", Some(other), "unknown backend; expected \"udp\""))
            }
        };

        let network = ctx.cidr("network", &raw.network)?;
        if !network.is_ipv4() {
            return Err(ctx.err(
                "network",
                Some(&raw.network),
                "must be an IPv4 network; put an IPv6 overlay in network6",
            ));
        }
        let network6 = match &raw.network6 {
            Some(v) => {
                let c = ctx.cidr("network6", v)?;
                if c.is_ipv4() {
                    return Err(ctx.err("network6", Some(v), "must be an IPv6 network"));
                }
                Some(c)
            }
            None => None,
        };

        let underlay_mtu = raw
            .underlay_mtu
            .map(|m| ctx.ranged("underlay_mtu", m, 576, 65535))
            .transpose()?;

        // [device]
        let d = &raw.device;
        if d.name.is_empty() || d.name.len() > 15 || d.name.contains(['/', ' ']) {
            return Err(ctx.err(
                "[device] name",
                Some(&d.name),
                "a device name is 1-15 characters without '/' or spaces",
            ));
        }
        let address = match ctx.ip("[device] address", &d.address)? {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => {
                return Err(ctx.err(
                    "[device] address",
                    Some(&d.address),
                    "must be IPv4; put the IPv6 address in [device] address6",
                ))
            }
        };
        if !network.contains(IpAddr::V4(address)) {
            return Err(ctx.err(
                "[device] address",
                Some(&d.address),
                format!("is outside network {network}"),
            ));
        }
        let address6 = match &d.address6 {
            Some(v) => {
                let IpAddr::V6(a) = ctx.ip("[device] address6", v)? else {
                    return Err(ctx.err("[device] address6", Some(v), "must be IPv6"));
                };
                match network6 {
                    Some(n) if n.contains(IpAddr::V6(a)) => {}
                    Some(n) => {
                        return Err(ctx.err(
                            "[device] address6",
                            Some(v),
                            format!("is outside network6 {n}"),
                        ))
                    }
                    None => {
                        return Err(ctx.err(
                            "[device] address6",
                            Some(v),
                            "needs network6 to be set",
                        ))
                    }
                }
                Some(a)
            }
            None => None,
        };
        let mtu = d
            .mtu
            .map(|m| ctx.ranged("[device] mtu", m, 576, 65535))
            .transpose()?;

        // [listen]
        let listen_ip = ctx.ip("[listen] address", &raw.listen.address)?;
        let port = match raw.listen.port {
            Some(p) => ctx.ranged("[listen] port", p, 1, 65535)? as u16,
            None => DEFAULT_UDP_PORT,
        };
        let listen = SocketAddr::new(listen_ip, port);

        let control_socket = raw
            .control
            .socket
            .clone()
            .unwrap_or_else(|| default_control_socket(&d.name));
        if control_socket.is_empty() || control_socket == "@" {
            return Err(ctx.err(
                "[control] socket",
                Some(&control_socket),
                "give a path, or @name for the abstract namespace",
            ));
        }

        let icmp = IcmpConfig {
            rate: raw
                .icmp
                .rate
                .map(|r| ctx.ranged("[icmp] rate", r, 0, 1_000_000))
                .transpose()?
                .unwrap_or(100),
            burst: raw
                .icmp
                .burst
                .map(|b| ctx.ranged("[icmp] burst", b, 0, 1_000_000))
                .transpose()?
                .unwrap_or(50),
        };
        let validation = ValidationConfig {
            check_peer: raw.validation.check_peer.unwrap_or(true),
            check_inner_source: raw.validation.check_inner_source.unwrap_or(true),
        };

        let batch = match raw.engine.batch {
            Some(b) => ctx.ranged("[engine] batch", b, 1, 64)? as usize,
            None => 64,
        };

        // [[peer]]
        let mut peers: Vec<Route> = Vec::with_capacity(raw.peer.len());
        for (i, p) in raw.peer.iter().enumerate() {
            let n = i + 1;
            let key = |k: &str| format!("[[peer]] #{n} {k}");
            let subnet = ctx.cidr(&key("subnet"), &p.subnet)?;
            let inside = if subnet.is_ipv4() {
                network.covers(&subnet)
            } else {
                network6.is_some_and(|n6| n6.covers(&subnet))
            };
            if !inside {
                let net = if subnet.is_ipv4() {
                    network.to_string()
                } else {
                    network6.map_or("network6 (not set)".to_owned(), |n| n.to_string())
                };
                return Err(ctx.err(&key("subnet"), Some(&p.subnet), format!("is outside {net}")));
            }
            if subnet.contains(IpAddr::V4(address))
                || address6.is_some_and(|a| subnet.contains(IpAddr::V6(a)))
            {
                return Err(ctx.err(
                    &key("subnet"),
                    Some(&p.subnet),
                    "contains this host's own [device] address",
                ));
            }
            if let Some((j, other)) = peers
                .iter()
                .enumerate()
                .find(|(_, r)| r.subnet.overlaps(&subnet))
            {
                return Err(ctx.err(
                    &key("subnet"),
                    Some(&p.subnet),
                    format!("overlaps [[peer]] #{} subnet {}", j + 1, other.subnet),
                ));
            }
            let endpoint = parse_endpoint(&p.endpoint, port).ok_or_else(|| {
                ctx.err(
                    &key("endpoint"),
                    Some(&p.endpoint),
                    "expected IP or IP:PORT",
                )
            })?;
            if endpoint.is_ipv4() != listen.is_ipv4() {
                return Err(ctx.err(
                    &key("endpoint"),
                    Some(&p.endpoint),
                    format!("is of another address family than [listen] address {listen_ip}"),
                ));
            }
            let vtep_mac = match &p.vtep_mac {
                Some(v) => Some(v.parse::<EthernetAddress>().map_err(|_| {
                    ctx.err(
                        &key("vtep_mac"),
                        Some(v),
                        "expected a MAC like 02:00:00:00:01:00",
                    )
                })?),
                None => None,
            };
            peers.push(Route {
                subnet,
                endpoint,
                vtep_mac,
            });
        }

        Ok(Config {
            path: path.to_owned(),
            backend,
            network,
            network6,
            underlay_mtu,
            device: DeviceConfig {
                name: d.name.clone(),
                address,
                address6,
                mtu,
            },
            listen,
            control_socket,
            icmp,
            validation,
            batch,
            peers,
        })
    }
}

/// The default control socket of a device: `@weft/<device>` in the abstract namespace,
/// which is private to the network namespace, so each host of a test bed has its own.
pub fn default_control_socket(device: &str) -> String {
    format!("@weft/{device}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
backend = "udp"
network = "100.96.0.0/16"
[device]
name = "flannel0"
address = "100.96.1.0"
[listen]
address = "198.18.0.1"
port = 8285
[[peer]]
subnet = "100.96.2.0/24"
endpoint = "198.18.0.2"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/weft/weft.toml"), text)
    }

    fn err_line(text: &str) -> String {
        let e = parse(text).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(
            e.starts_with("/etc/weft/weft.toml: "),
            "names the file: {e}"
        );
        e
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(c.backend, BackendKind::Udp);
        assert_eq!(c.network.to_string(), "100.96.0.0/16");
        assert_eq!(c.device.name, "flannel0");
        assert_eq!(c.device.address, Ipv4Addr::new(100, 96, 1, 0));
        assert_eq!(c.listen, "198.18.0.1:8285".parse().unwrap());
        assert_eq!(c.control_socket, "@weft/flannel0");
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].subnet.to_string(), "100.96.2.0/24");
        assert_eq!(c.peers[0].endpoint, "198.18.0.2:8285".parse().unwrap());
        assert_eq!(
            c.icmp,
            IcmpConfig {
                rate: 100,
                burst: 50
            }
        );
        assert!(c.validation.check_peer && c.validation.check_inner_source);
    }

    #[test]
    fn defaults_and_optional_keys() {
        let c = parse(
            r#"
backend = "udp"
network = "100.96.0.0/16"
network6 = "fd00:100:96::/48"
underlay_mtu = 9000
[device]
address = "100.96.1.0"
address6 = "fd00:100:96:1::"
mtu = 1400
[listen]
address = "198.18.0.1"
[control]
socket = "/run/weft.sock"
[icmp]
rate = 10
burst = 1
[validation]
check_peer = false
[engine]
batch = 1
[[peer]]
subnet = "fd00:100:96:2::/64"
endpoint = "198.18.0.2:9999"
"#,
        )
        .unwrap();
        assert_eq!(c.device.name, "flannel0");
        assert_eq!(c.listen.port(), DEFAULT_UDP_PORT);
        assert_eq!(c.underlay_mtu, Some(9000));
        assert_eq!(c.device.mtu, Some(1400));
        assert_eq!(c.device.address6, Some("fd00:100:96:1::".parse().unwrap()));
        assert_eq!(c.control_socket, "/run/weft.sock");
        assert!(!c.validation.check_peer && c.validation.check_inner_source);
        assert_eq!(c.batch, 1);
        assert_eq!(c.peers[0].endpoint, "198.18.0.2:9999".parse().unwrap());
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = err_line(&ISSUE_EXAMPLE.replace("100.96.2.0/24", "100.96.2.0/33"));
        assert!(e.contains("[[peer]] #1 subnet = \"100.96.2.0/33\""), "{e}");
        let e =
            err_line(&ISSUE_EXAMPLE.replace("address = \"100.96.1.0\"", "address = \"10.0.0.1\""));
        assert!(
            e.contains("[device] address = \"10.0.0.1\"") && e.contains("outside network"),
            "{e}"
        );
        let e = err_line(&format!(
            "{ISSUE_EXAMPLE}[[peer]]\nsubnet = \"100.96.2.128/25\"\nendpoint = \"198.18.0.3\"\n"
        ));
        assert!(
            e.contains("[[peer]] #2 subnet = \"100.96.2.128/25\"") && e.contains("overlaps"),
            "{e}"
        );
        let e = err_line(&ISSUE_EXAMPLE.replace("port = 8285", "port = 70000"));
        assert!(e.contains("[listen] port = \"70000\""), "{e}");
        let e = err_line(&ISSUE_EXAMPLE.replace("backend = \"udp\"", "backend = \"gre\""));
        assert!(e.contains("backend = \"gre\""), "{e}");
        let e =
            err_line(&ISSUE_EXAMPLE.replace("endpoint = \"198.18.0.2\"", "endpoint = \"nowhere\""));
        assert!(e.contains("[[peer]] #1 endpoint = \"nowhere\""), "{e}");
        let e = err_line(&ISSUE_EXAMPLE.replace("100.96.2.0/24", "100.96.1.0/24"));
        assert!(e.contains("own [device] address"), "{e}");
        let e = err_line(&ISSUE_EXAMPLE.replace("100.96.2.0/24", "100.97.2.0/24"));
        assert!(e.contains("outside 100.96.0.0/16"), "{e}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_are_one_line() {
        let e = err_line("backend = \"udp\"\nnetwork = [\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err_line(&ISSUE_EXAMPLE.replace("[listen]", "[listen]\nadress = \"x\""));
        assert!(e.contains("adress"), "{e}");
        let e = err_line("backend = \"udp\"\n");
        assert!(e.contains("missing field"), "{e}");
    }

    #[test]
    fn missing_file() {
        let e = Config::load(Path::new("/nonexistent/weft.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/weft.toml: cannot read"), "{e}");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("198.18.0.2", 8285),
            Some("198.18.0.2:8285".parse().unwrap())
        );
        assert_eq!(
            parse_endpoint("198.18.0.2:1", 8285),
            Some("198.18.0.2:1".parse().unwrap())
        );
        assert_eq!(
            parse_endpoint("fd00:198:18::2", 1),
            Some("[fd00:198:18::2]:1".parse().unwrap())
        );
        assert_eq!(
            parse_endpoint("[fd00::2]:7", 1),
            Some("[fd00::2]:7".parse().unwrap())
        );
        assert_eq!(parse_endpoint("x", 1), None);
    }
}
