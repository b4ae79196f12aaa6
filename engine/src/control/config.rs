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
use std::time::Duration;

use serde::Deserialize;
use weft_encap::acl::{protocol_number, AclRule, PortRange};
use weft_encap::policy::{Decision, Direction};
use weft_encap::table::{Cidr, Route};
use weft_encap::wire::EthernetAddress;

use crate::dataplane::engine::MAX_BUSY_POLL;

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
#[non_exhaustive]
pub enum BackendKind {
    /// flannel's UDP backend: the raw inner IP packet as the UDP payload.
    Udp,
    /// VXLAN (RFC 7348), like flannel's `vxlan` backend and the Linux vxlan device.
    Vxlan,
}

pub use weft_encap::vxlan::VxlanMode;

pub use crate::dataplane::engine::OffloadMode;

/// The most workers `[engine] workers` may ask for (a TUN has at most 256 queues).
pub const MAX_WORKERS: u32 = 64;

/// The default number of workers: one per CPU this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_WORKERS as usize)
}

/// `[vxlan]`: the settings of the VXLAN backend and of its first VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSettings {
    /// `vni`.
    pub vni: u32,
    /// `mode`.
    pub mode: VxlanMode,
    /// `vtep_mac`; `None` = generated once and kept in `mac_file`.
    pub vtep_mac: Option<EthernetAddress>,
    /// `mac_file`: where a generated VTEP MAC is kept across restarts.
    pub mac_file: PathBuf,
    /// `source_ports`: the UDP source port range of the per-flow hash.
    pub source_ports: (u16, u16),
    /// `source_sockets`: how many sockets are bound in that range.
    pub source_sockets: usize,
    /// `learning`: learn inner source MACs (L2).
    pub learning: bool,
    /// `proxy`: answer ARP requests and neighbour solicitations from the TAP for the
    /// addresses of the neighbour table (`[[neigh]]`, learnt ones) instead of flooding them
    /// (L2 VNIs), like the kernel vxlan device's `proxy`.
    pub proxy: bool,
    /// `neigh_learning`: learn the neighbour table from ARP and neighbour advertisements
    /// received from peers (L2).
    pub neigh_learning: bool,
    /// `fdb_max`: bound of the learned FDB (L2).
    pub fdb_max: usize,
    /// `fdb_ageing`: seconds until a learned entry is forgotten (L2).
    pub fdb_ageing_secs: u64,
    /// `group`: the multicast group (with `[listen] port`) that floods go to and that is
    /// joined to hear the other VTEPs (L2), like the kernel's `vxlan ... group`.
    pub group: Option<SocketAddr>,
    /// `group_interface`: the interface the group is joined on; `None` = the one that holds
    /// `[listen] address`.
    pub group_interface: Option<String>,
}

/// A further VNI (`[[vni]]`), with its own device and peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraVni {
    /// `vni`.
    pub vni: u32,
    /// `mode`.
    pub mode: VxlanMode,
    /// `device`: the device name.
    pub device: String,
    /// `address`: the device's address with its prefix length.
    pub address: Option<(IpAddr, u8)>,
    /// `bridge`: enslave the device to this bridge.
    pub bridge: Option<String>,
    /// `mtu`.
    pub mtu: Option<u32>,
    /// `vtep_mac`; `None` = generated and kept in `mac_file`.
    pub vtep_mac: Option<EthernetAddress>,
    /// `mac_file`.
    pub mac_file: PathBuf,
    /// `[[vni.peer]]` with a subnet.
    pub peers: Vec<Route>,
    /// `[[vni.peer]]` without a subnet.
    pub vteps: Vec<SocketAddr>,
    /// `[[vni.fdb]]`.
    pub fdb: Vec<(EthernetAddress, SocketAddr)>,
    /// `[[vni.neigh]]`.
    pub neigh: Vec<(IpAddr, EthernetAddress)>,
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
    /// `direct_routing`: a `[[peer]]` whose IPv4 endpoint is on the L2 segment of the
    /// underlay interface (the kernel reaches it out of that interface without a gateway)
    /// also gets a kernel route `<subnet> via <endpoint IP>`, so its traffic skips the
    /// tunnel (flannel's `DirectRouting`); re-checked every few seconds.
    pub direct_routing: bool,
    /// `[device]`.
    pub device: DeviceConfig,
    /// `[listen]` `address` and `port`.
    pub listen: SocketAddr,
    /// `[listen] address6` with `port`: an IPv6 address listened on too when `address` is
    /// IPv4 (a dual-stack underlay: peers of either family).
    pub listen6: Option<SocketAddr>,
    /// `[control] socket`: the control socket; a leading `@` means the abstract namespace.
    pub control_socket: String,
    /// `[metrics] listen`: where to serve Prometheus metrics, `/healthz` and `/readyz` over
    /// HTTP; `None` (the default) serves nothing.
    pub metrics: Option<SocketAddr>,
    /// `[icmp]`.
    pub icmp: IcmpConfig,
    /// `[validation]`.
    pub validation: ValidationConfig,
    /// `[engine] batch`: packets per batched system call (1-64; 1 behaves like flanneld).
    pub batch: usize,
    /// `[engine] workers`: worker threads, each with its own device queue and socket
    /// (default: the number of CPUs).
    pub workers: usize,
    /// `[engine] offload`: whether to use TUN offloads and UDP GSO/GRO.
    pub offload: OffloadMode,
    /// `[engine] busy_poll_us`: how long a worker keeps polling after its last packet
    /// before it sleeps (default 0: never busy-polls).
    pub busy_poll: Duration,
    /// `[[peer]]` with a subnet: the static routes.
    pub peers: Vec<Route>,
    /// `[[peer]]` without a subnet (VXLAN L2): VTEPs that get flooded frames.
    pub vteps: Vec<SocketAddr>,
    /// `[[fdb]]` (VXLAN L2): static MAC -> VTEP entries.
    pub fdb: Vec<(EthernetAddress, SocketAddr)>,
    /// `[[neigh]]` (VXLAN L2): static IP -> MAC entries the ARP/ND proxy answers with.
    pub neigh: Vec<(IpAddr, EthernetAddress)>,
    /// `[vxlan]`, when `backend = "vxlan"`.
    pub vxlan: Option<VxlanSettings>,
    /// `[[vni]]`: further VNIs.
    pub extra_vnis: Vec<ExtraVni>,
    /// `[[acl]]`: the rules every inner packet is judged by, in order (first match wins).
    pub acl: Vec<AclRule>,
    /// `[policy] default`: what happens to a packet no `[[acl]]` rule matches.
    pub acl_default: Decision,
}

/// The most `[[acl]]` rules a file may hold (each packet is checked against them in order).
pub const MAX_ACL_RULES: usize = 10_000;

/// `[device]`: the TUN device weft creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// `name`.
    pub name: String,
    /// `address`: this host's overlay IPv4 address, assigned with `network`'s prefix length
    /// (required but for VXLAN L2 mode).
    pub address: Option<Ipv4Addr>,
    /// `bridge`: enslave the device to this existing bridge (VXLAN L2).
    pub bridge: Option<String>,
    /// `address6`: this host's overlay IPv6 address, assigned with `network6`'s prefix length.
    pub address6: Option<Ipv6Addr>,
    /// `mtu`; `None` = underlay MTU minus the encapsulation overhead.
    pub mtu: Option<u32>,
    /// `persist`: the device (and every `[[vni]]` device) is made persistent and left
    /// configured when weft stops, so that a restarted weft adopts it again and traffic only
    /// pauses (no TCP connection through it breaks).
    pub persist: bool,
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
    direct_routing: Option<bool>,
    device: RawDevice,
    listen: RawListen,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    icmp: RawIcmp,
    #[serde(default)]
    validation: RawValidation,
    #[serde(default)]
    engine: RawEngine,
    vxlan: Option<RawVxlan>,
    #[serde(default)]
    peer: Vec<RawPeer>,
    #[serde(default)]
    fdb: Vec<RawFdb>,
    #[serde(default)]
    neigh: Vec<RawNeigh>,
    #[serde(default)]
    vni: Vec<RawVni>,
    #[serde(default)]
    acl: Vec<RawAcl>,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    action: String,
    direction: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    protocol: Option<RawNumberOrText>,
    ports: Option<RawNumberOrText>,
    source_ports: Option<RawNumberOrText>,
}

/// A value written either as a number or as a string (`ports = 80`, `ports = "80-90"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawNumberOrText {
    Number(i64),
    Text(String),
}

impl RawNumberOrText {
    fn text(&self) -> String {
        match self {
            RawNumberOrText::Number(n) => n.to_string(),
            RawNumberOrText::Text(t) => t.clone(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<String>,
}

/// A file of `[[acl]]` rules and `[policy]` only (`weft flannel --acl-file`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAclFile {
    #[serde(default)]
    acl: Vec<RawAcl>,
    #[serde(default)]
    policy: RawPolicy,
}

/// Reads a file that holds only `[[acl]]` rules and a `[policy]` section (keys as in the
/// `weft run` file): the rules and the default action.
pub fn load_acl_file(path: &Path) -> Result<(Vec<AclRule>, Decision), ConfigError> {
    let ctx = Ctx { path };
    let text = read_regular_file(path, MAX_CONFIG_BYTES)
        .map_err(|e| ctx.err("", None, format!("cannot read the ACL file: {e}")))?;
    let raw: RawAclFile = toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|s| line_col(&text, s.start));
        let problem = match at {
            Some((line, col)) => format!("line {line} column {col}: {}", e.message()),
            None => e.message().to_owned(),
        };
        ctx.err("", None, format!("not a valid ACL file: {problem}"))
    })?;
    let rules = acl_rules(&ctx, &raw.acl)?;
    let default = match &raw.policy.default {
        Some(v) => decision(&ctx, "[policy] default", v)?,
        None => Decision::Allow,
    };
    Ok((rules, default))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    vni: Option<i64>,
    mode: Option<String>,
    vtep_mac: Option<String>,
    mac_file: Option<PathBuf>,
    source_ports: Option<String>,
    source_sockets: Option<i64>,
    learning: Option<bool>,
    proxy: Option<bool>,
    neigh_learning: Option<bool>,
    fdb_max: Option<i64>,
    fdb_ageing: Option<i64>,
    group: Option<String>,
    group_interface: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFdb {
    mac: String,
    endpoint: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeigh {
    ip: String,
    mac: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVni {
    vni: i64,
    mode: Option<String>,
    device: String,
    address: Option<String>,
    bridge: Option<String>,
    mtu: Option<i64>,
    vtep_mac: Option<String>,
    mac_file: Option<PathBuf>,
    #[serde(default)]
    peer: Vec<RawPeer>,
    #[serde(default)]
    fdb: Vec<RawFdb>,
    #[serde(default)]
    neigh: Vec<RawNeigh>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    #[serde(default = "default_device_name")]
    name: String,
    address: Option<String>,
    address6: Option<String>,
    mtu: Option<i64>,
    bridge: Option<String>,
    #[serde(default)]
    persist: bool,
}

fn default_device_name() -> String {
    "flannel0".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: String,
    address6: Option<String>,
    port: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
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
    workers: Option<i64>,
    offload: Option<String>,
    busy_poll_us: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    subnet: Option<String>,
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

/// Where a list of `[[peer]]` entries lives, for validating it.
struct PeerScope {
    /// `[[peer]]` or `[[vni]] #2 peer`.
    prefix: String,
    /// Subnets must lie in one of these; empty = anywhere.
    networks: Vec<Cidr>,
    /// This host's addresses on the device, which no subnet may contain.
    local: Vec<IpAddr>,
    /// The listen addresses (endpoints must be of one of their families).
    listen: Listen,
    /// The VXLAN mode, `None` for the UDP backend.
    mode: Option<VxlanMode>,
}

/// `[listen]`: the address, and the IPv6 one of a dual-stack underlay; the port is the
/// endpoints' default.
#[derive(Debug, Clone, Copy)]
struct Listen {
    addr: SocketAddr,
    addr6: Option<SocketAddr>,
}

impl Ctx<'_> {
    fn device_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        match device_name_problem(name) {
            Some(why) => Err(self.err(key, Some(name), why)),
            None => Ok(()),
        }
    }

    fn mac(&self, key: &str, value: &str) -> Result<EthernetAddress, ConfigError> {
        let mac = value
            .parse::<EthernetAddress>()
            .map_err(|_| self.err(key, Some(value), "expected a MAC like 02:00:00:00:01:00"))?;
        if !mac.is_unicast() || mac == EthernetAddress::default() {
            return Err(self.err(key, Some(value), "must be a unicast MAC address"));
        }
        Ok(mac)
    }

    fn endpoint(&self, key: &str, value: &str, listen: Listen) -> Result<SocketAddr, ConfigError> {
        let endpoint = parse_endpoint(value, listen.addr.port())
            .ok_or_else(|| self.err(key, Some(value), "expected IP or IP:PORT"))?;
        let reachable = endpoint.is_ipv4() == listen.addr.is_ipv4()
            || (endpoint.is_ipv6() && listen.addr6.is_some());
        if !reachable {
            return Err(self.err(
                key,
                Some(value),
                format!(
                    "is of another address family than [listen] address {}{}",
                    listen.addr.ip(),
                    if listen.addr.is_ipv4() {
                        " (set [listen] address6 for IPv6 peers)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if let Some(why) = endpoint_problem(endpoint.ip()) {
            return Err(self.err(key, Some(value), why));
        }
        let own = [Some(listen.addr), listen.addr6];
        if own.iter().flatten().any(|a| a.ip() == endpoint.ip()) {
            return Err(self.err(key, Some(value), "is this host's own [listen] address"));
        }
        Ok(endpoint)
    }

    fn mode(&self, key: &str, value: Option<&str>) -> Result<VxlanMode, ConfigError> {
        match value {
            None | Some("l3") => Ok(VxlanMode::L3),
            Some("l2") => Ok(VxlanMode::L2),
            Some(other) => Err(self.err(key, Some(other), "expected \"l3\" or \"l2\"")),
        }
    }

    fn vni(&self, key: &str, value: i64) -> Result<u32, ConfigError> {
        self.ranged(key, value, 0, i64::from(weft_encap::wire::vxlan::VNI_MAX))
    }

    fn vxlan(
        &self,
        raw: Option<&RawVxlan>,
        device: &str,
        listen: SocketAddr,
    ) -> Result<VxlanSettings, ConfigError> {
        let default = RawVxlan::default();
        let raw = raw.unwrap_or(&default);
        let source_ports = match &raw.source_ports {
            Some(text) => {
                let bad = || {
                    self.err(
                        "[vxlan] source_ports",
                        Some(text),
                        "expected LOW-HIGH, e.g. \"32768-60999\"",
                    )
                };
                let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
                let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
                let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
                if lo == 0 || lo > hi {
                    return Err(bad());
                }
                (lo, hi)
            }
            None => (32768, 60999),
        };
        Ok(VxlanSettings {
            vni: raw
                .vni
                .map(|v| self.vni("[vxlan] vni", v))
                .transpose()?
                .unwrap_or(1),
            mode: self.mode("[vxlan] mode", raw.mode.as_deref())?,
            vtep_mac: raw
                .vtep_mac
                .as_deref()
                .map(|m| self.mac("[vxlan] vtep_mac", m))
                .transpose()?,
            mac_file: raw
                .mac_file
                .clone()
                .unwrap_or_else(|| default_mac_file(device, listen)),
            source_ports,
            source_sockets: raw
                .source_sockets
                .map(|n| self.ranged("[vxlan] source_sockets", n, 0, 64))
                .transpose()?
                .unwrap_or(8) as usize,
            group: match &raw.group {
                None => None,
                Some(text) => {
                    let ip = self.ip("[vxlan] group", text)?;
                    if !ip.is_multicast() {
                        return Err(self.err(
                            "[vxlan] group",
                            Some(text),
                            "is not a multicast address (224.0.0.0/4 or ff00::/8)",
                        ));
                    }
                    if ip.is_ipv4() != listen.is_ipv4() {
                        return Err(self.err(
                            "[vxlan] group",
                            Some(text),
                            "is of another address family than [listen] address",
                        ));
                    }
                    Some(SocketAddr::new(ip, listen.port()))
                }
            },
            group_interface: match &raw.group_interface {
                None => None,
                Some(name) => {
                    self.device_name("[vxlan] group_interface", name)?;
                    Some(name.clone())
                }
            },
            learning: raw.learning.unwrap_or(true),
            proxy: raw.proxy.unwrap_or(false),
            neigh_learning: raw.neigh_learning.unwrap_or(false),
            fdb_max: raw
                .fdb_max
                .map(|n| self.ranged("[vxlan] fdb_max", n, 0, 1_000_000))
                .transpose()?
                .unwrap_or(4096) as usize,
            fdb_ageing_secs: u64::from(
                raw.fdb_ageing
                    .map(|n| self.ranged("[vxlan] fdb_ageing", n, 0, 1_000_000))
                    .transpose()?
                    .unwrap_or(300),
            ),
        })
    }

    fn peers(
        &self,
        scope: &PeerScope,
        raw: &[RawPeer],
    ) -> Result<(Vec<Route>, Vec<SocketAddr>), ConfigError> {
        let mut routes: Vec<(usize, Route)> = Vec::with_capacity(raw.len());
        let mut vteps = Vec::new();
        let mut endpoints: Vec<(usize, SocketAddr)> = Vec::with_capacity(raw.len());
        for (i, p) in raw.iter().enumerate() {
            let n = i + 1;
            let key = |k: &str| format!("{} #{n} {k}", scope.prefix);
            let endpoint = self.endpoint(&key("endpoint"), &p.endpoint, scope.listen)?;
            if let Some((j, other)) = endpoints
                .iter()
                .find(|(_, e)| e.ip() == endpoint.ip() && e.port() != endpoint.port())
            {
                return Err(self.err(
                    &key("endpoint"),
                    Some(&p.endpoint),
                    format!(
                        "shares its address with {} #{j} endpoint {other} on another port; \
                         datagrams are told apart by address only, so one address is one peer",
                        scope.prefix
                    ),
                ));
            }
            endpoints.push((n, endpoint));
            let vtep_mac = p
                .vtep_mac
                .as_deref()
                .map(|m| self.mac(&key("vtep_mac"), m))
                .transpose()?;
            let Some(subnet_text) = &p.subnet else {
                if scope.mode != Some(VxlanMode::L2) {
                    return Err(self.err(
                        &key("subnet"),
                        None,
                        "is required (only VXLAN l2 peers may omit it)",
                    ));
                }
                vteps.push(endpoint);
                continue;
            };
            let subnet = self.cidr(&key("subnet"), subnet_text)?;
            if !scope.networks.is_empty() && !scope.networks.iter().any(|net| net.covers(&subnet)) {
                let nets: Vec<String> = scope.networks.iter().map(|c| c.to_string()).collect();
                return Err(self.err(
                    &key("subnet"),
                    Some(subnet_text),
                    format!("is outside {}", nets.join(" and ")),
                ));
            }
            if scope.local.iter().any(|a| subnet.contains(*a)) {
                return Err(self.err(
                    &key("subnet"),
                    Some(subnet_text),
                    "contains this host's own [device] address",
                ));
            }
            if let Some((j, other)) = routes.iter().find(|(_, r)| r.subnet.overlaps(&subnet)) {
                return Err(self.err(
                    &key("subnet"),
                    Some(subnet_text),
                    format!("overlaps {} #{} subnet {}", scope.prefix, j, other.subnet),
                ));
            }
            if scope.mode == Some(VxlanMode::L3) && vtep_mac.is_none() {
                return Err(self.err(
                    &key("vtep_mac"),
                    None,
                    "is required in VXLAN l3 mode (the peer's VTEP MAC)",
                ));
            }
            routes.push((
                n,
                Route {
                    subnet,
                    endpoint,
                    vtep_mac,
                },
            ));
        }
        Ok((routes.into_iter().map(|(_, r)| r).collect(), vteps))
    }

    fn fdb(
        &self,
        prefix: &str,
        raw: &[RawFdb],
        listen: Listen,
        l2: bool,
    ) -> Result<Vec<(EthernetAddress, SocketAddr)>, ConfigError> {
        let mut out = Vec::with_capacity(raw.len());
        for (i, f) in raw.iter().enumerate() {
            let key = |k: &str| format!("{prefix} #{} {k}", i + 1);
            if !l2 {
                return Err(self.err(
                    &key("mac"),
                    Some(&f.mac),
                    "static FDB entries need VXLAN l2 mode",
                ));
            }
            out.push((
                self.mac(&key("mac"), &f.mac)?,
                self.endpoint(&key("endpoint"), &f.endpoint, listen)?,
            ));
        }
        Ok(out)
    }

    fn neigh(
        &self,
        prefix: &str,
        raw: &[RawNeigh],
        l2: bool,
    ) -> Result<Vec<(IpAddr, EthernetAddress)>, ConfigError> {
        let mut out: Vec<(IpAddr, EthernetAddress)> = Vec::with_capacity(raw.len());
        for (i, e) in raw.iter().enumerate() {
            let key = |k: &str| format!("{prefix} #{} {k}", i + 1);
            if !l2 {
                return Err(self.err(
                    &key("ip"),
                    Some(&e.ip),
                    "static neighbour entries need VXLAN l2 mode",
                ));
            }
            let ip = self.ip(&key("ip"), &e.ip)?;
            let unicast = match ip {
                IpAddr::V4(a) => {
                    !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback())
                }
                IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
            };
            if !unicast {
                return Err(self.err(&key("ip"), Some(&e.ip), "must be a unicast address"));
            }
            if let Some(j) = out.iter().position(|(other, _)| *other == ip) {
                return Err(self.err(
                    &key("ip"),
                    Some(&e.ip),
                    format!("is given twice (also {prefix} #{})", j + 1),
                ));
            }
            out.push((ip, self.mac(&key("mac"), &e.mac)?));
        }
        Ok(out)
    }

    fn extra_vni(&self, n: usize, raw: &RawVni, listen: Listen) -> Result<ExtraVni, ConfigError> {
        let key = |k: &str| format!("[[vni]] #{n} {k}");
        let vni = self.vni(&key("vni"), raw.vni)?;
        let mode = self.mode(&key("mode"), raw.mode.as_deref())?;
        self.device_name(&key("device"), &raw.device)?;
        let address = match &raw.address {
            Some(text) => {
                let bad = || {
                    self.err(
                        &key("address"),
                        Some(text),
                        "expected ADDRESS/LENGTH, e.g. \"100.97.2.1/24\"",
                    )
                };
                let (ip, len) = text.split_once('/').ok_or_else(bad)?;
                let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
                let len: u8 = len.trim().parse().map_err(|_| bad())?;
                Cidr::containing(ip, len).map_err(|_| bad())?;
                Some((ip, len))
            }
            None if mode == VxlanMode::L3 => {
                return Err(self.err(&key("address"), None, "is required in l3 mode"));
            }
            None => None,
        };
        if let Some(b) = &raw.bridge {
            self.device_name(&key("bridge"), b)?;
            if mode != VxlanMode::L2 {
                return Err(self.err(
                    &key("bridge"),
                    Some(b),
                    "only an l2 device can be enslaved to a bridge",
                ));
            }
        }
        let scope = PeerScope {
            prefix: format!("[[vni]] #{n} peer"),
            networks: Vec::new(),
            local: address.map(|(a, _)| a).into_iter().collect(),
            listen,
            mode: Some(mode),
        };
        let (peers, vteps) = self.peers(&scope, &raw.peer)?;
        let fdb = self.fdb(
            &format!("[[vni]] #{n} fdb"),
            &raw.fdb,
            listen,
            mode == VxlanMode::L2,
        )?;
        let neigh = self.neigh(
            &format!("[[vni]] #{n} neigh"),
            &raw.neigh,
            mode == VxlanMode::L2,
        )?;
        Ok(ExtraVni {
            vni,
            mode,
            device: raw.device.clone(),
            address,
            bridge: raw.bridge.clone(),
            mtu: raw
                .mtu
                .map(|m| self.ranged(&key("mtu"), m, 576, 65535))
                .transpose()?,
            vtep_mac: raw
                .vtep_mac
                .as_deref()
                .map(|m| self.mac(&key("vtep_mac"), m))
                .transpose()?,
            mac_file: raw
                .mac_file
                .clone()
                .unwrap_or_else(|| default_mac_file(&raw.device, listen.addr)),
            peers,
            vteps,
            fdb,
            neigh,
        })
    }
}

/// The largest configuration file weft reads.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads `path` as UTF-8 if it is a regular file of at most `limit` bytes. It is opened
/// without blocking, so a FIFO (or a device) in its place is an error, not a hang.
fn read_regular_file(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or socket)",
        ));
    }
    if meta.len() > limit {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} bytes, more than the {limit} weft reads", meta.len()),
        ));
    }
    let mut text = String::new();
    file.take(limit).read_to_string(&mut text)?;
    Ok(text)
}

/// Why the kernel would refuse `name` as a network device name (`dev_valid_name`, and
/// `%` which it would take as a pattern for a number), or `None` if it takes it.
pub fn device_name_problem(name: &str) -> Option<&'static str> {
    const IFNAMSIZ: usize = 16;
    if name.is_empty() {
        Some("a device name cannot be empty")
    } else if name.len() >= IFNAMSIZ {
        Some("a device name is at most 15 bytes")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not device names")
    } else if name.contains(['/', ':']) {
        Some("a device name cannot contain '/' or ':'")
    } else if name.bytes().any(|b| b.is_ascii_whitespace() || b == 0x0b) {
        Some("a device name cannot contain whitespace")
    } else if name.contains('%') {
        Some("a device name cannot contain '%' (the kernel would take it as a pattern)")
    } else {
        None
    }
}

/// Why `ip` cannot be a peer's underlay address, or `None` if it can be.
pub fn endpoint_problem(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("is the unspecified address, no host's")
    } else if ip.is_loopback() {
        Some("is a loopback address, this host itself")
    } else if ip.is_multicast() {
        Some("is a multicast address (weft sends to one host per peer)")
    } else if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("is the broadcast address")
    } else {
        None
    }
}

/// Where a generated VTEP MAC is kept: one file per device and listen address, so several
/// daemons on one machine (e.g. test hosts in namespaces) keep theirs apart.
pub fn default_mac_file(device: &str, listen: SocketAddr) -> PathBuf {
    PathBuf::from(format!("/var/lib/weft/vtep-{device}-{}.mac", listen.ip()))
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
    ///
    /// Only a regular file of at most [`MAX_CONFIG_BYTES`] is read: a FIFO, a device or a
    /// socket in its place is refused at once rather than waited on.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |problem: String| ConfigError {
            path: path.to_owned(),
            key: String::new(),
            value: None,
            problem,
        };
        let text = read_regular_file(path, MAX_CONFIG_BYTES)
            .map_err(|e| err(format!("cannot read the configuration file: {e}")))?;
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
            "vxlan" => BackendKind::Vxlan,
            other => {
                return Err(ctx.err(
                    "backend",
                    Some(other),
                    "unknown backend; expected \"udp\" or \"vxlan\"",
                ))
            }
        };
        if backend == BackendKind::Udp
            && (raw.vxlan.is_some()
                || !raw.fdb.is_empty()
                || !raw.neigh.is_empty()
                || !raw.vni.is_empty())
        {
            let key = if raw.vxlan.is_some() {
                "[vxlan]"
            } else if !raw.fdb.is_empty() {
                "[[fdb]]"
            } else if !raw.neigh.is_empty() {
                "[[neigh]]"
            } else {
                "[[vni]]"
            };
            return Err(ctx.err(key, None, "only applies to backend = \"vxlan\""));
        }

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

        // [listen]
        let listen_ip = ctx.ip("[listen] address", &raw.listen.address)?;
        let default_port = match backend {
            BackendKind::Udp => DEFAULT_UDP_PORT,
            BackendKind::Vxlan => DEFAULT_VXLAN_PORT,
        };
        let port = match raw.listen.port {
            Some(p) => ctx.ranged("[listen] port", p, 1, 65535)? as u16,
            None => default_port,
        };
        let listen = SocketAddr::new(listen_ip, port);
        let listen6 = match &raw.listen.address6 {
            None => None,
            Some(text) => match ctx.ip("[listen] address6", text)? {
                IpAddr::V6(v6) if listen.is_ipv4() => Some(SocketAddr::new(IpAddr::V6(v6), port)),
                IpAddr::V6(_) => {
                    return Err(ctx.err(
                        "[listen] address6",
                        Some(text),
                        "needs an IPv4 [listen] address (the two make a dual-stack underlay)",
                    ))
                }
                IpAddr::V4(_) => {
                    return Err(ctx.err("[listen] address6", Some(text), "not an IPv6 address"))
                }
            },
        };
        let both = Listen {
            addr: listen,
            addr6: listen6,
        };
        // An overlay that holds the underlay would route the tunnel's own datagrams into it.
        for (key, net, text) in [
            ("network", Some(network), raw.network.as_str()),
            ("network6", network6, raw.network6.as_deref().unwrap_or("")),
        ] {
            let Some(net) = net else { continue };
            if net.prefix_len() == 0 {
                return Err(ctx.err(
                    key,
                    Some(text),
                    "covers every address, the underlay's too; give the overlay's own range",
                ));
            }
            if let Some(a) = [Some(listen), listen6]
                .into_iter()
                .flatten()
                .find(|a| net.contains(a.ip()))
            {
                return Err(ctx.err(
                    key,
                    Some(text),
                    format!(
                        "contains the underlay address {} ([listen]): the tunnel's own datagrams would be routed into it",
                        a.ip()
                    ),
                ));
            }
        }

        // [vxlan]
        let vxlan = match backend {
            BackendKind::Udp => None,
            BackendKind::Vxlan => Some(ctx.vxlan(raw.vxlan.as_ref(), &raw.device.name, listen)?),
        };
        let mode = vxlan.as_ref().map(|v| v.mode);
        let l2 = mode == Some(VxlanMode::L2);
        if let Some(v) = &vxlan {
            if let (Some(group), false) = (v.group, l2) {
                return Err(ctx.err(
                    "[vxlan] group",
                    Some(&group.ip().to_string()),
                    "needs mode = \"l2\" (a TAP, with [device] address for the seed's vxlan0 with an address, or on a bridge)",
                ));
            }
            if let (Some(name), None) = (&v.group_interface, v.group) {
                return Err(ctx.err(
                    "[vxlan] group_interface",
                    Some(name),
                    "only applies with [vxlan] group",
                ));
            }
        }

        // [device]
        let d = &raw.device;
        ctx.device_name("[device] name", &d.name)?;
        let address = match &d.address {
            Some(text) => {
                let a = match ctx.ip("[device] address", text)? {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => {
                        return Err(ctx.err(
                            "[device] address",
                            Some(text),
                            "must be IPv4; put the IPv6 address in [device] address6",
                        ))
                    }
                };
                if !network.contains(IpAddr::V4(a)) {
                    return Err(ctx.err(
                        "[device] address",
                        Some(text),
                        format!("is outside network {network}"),
                    ));
                }
                Some(a)
            }
            None if l2 => None,
            None => {
                return Err(ctx.err(
                    "[device] address",
                    None,
                    "is required (this host's overlay address, e.g. \"100.96.1.0\")",
                ))
            }
        };
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
        if let Some(b) = &d.bridge {
            ctx.device_name("[device] bridge", b)?;
            if !l2 {
                return Err(ctx.err(
                    "[device] bridge",
                    Some(b),
                    "only a VXLAN l2 device (a TAP) can be enslaved to a bridge",
                ));
            }
        }

        // One device packet must fit one datagram, and IPv6 needs 1,280 bytes.
        let overhead = {
            let outer = if listen.is_ipv4() && listen6.is_none() {
                28
            } else {
                48
            };
            match backend {
                BackendKind::Udp => outer,
                BackendKind::Vxlan => outer + weft_encap::vxlan::L3_ENCAP_LEN as u32,
            }
        };
        let min_mtu = if address6.is_some() { 1280 } else { 576 };
        match (mtu, underlay_mtu) {
            (Some(m), _) if m + overhead > 65_535 => {
                return Err(ctx.err(
                    "[device] mtu",
                    Some(&m.to_string()),
                    format!("does not fit one UDP datagram with the {overhead} bytes of encapsulation (at most {})", 65_535 - overhead),
                ))
            }
            (Some(m), _) if m < min_mtu => {
                return Err(ctx.err(
                    "[device] mtu",
                    Some(&m.to_string()),
                    format!("is below {min_mtu}, which IPv6 on the device needs"),
                ))
            }
            (None, Some(u)) if u.saturating_sub(overhead) < min_mtu => {
                return Err(ctx.err(
                    "underlay_mtu",
                    Some(&u.to_string()),
                    format!(
                        "leaves a device MTU of {} after {overhead} bytes of encapsulation, below the {min_mtu} the device needs{}",
                        u.saturating_sub(overhead),
                        if address6.is_some() { " for IPv6" } else { "" }
                    ),
                ))
            }
            _ => {}
        }

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
        let metrics = match &raw.metrics.listen {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                ctx.err(
                    "[metrics] listen",
                    Some(text),
                    "expected IP:PORT, e.g. \"127.0.0.1:9156\"",
                )
            })?),
        };

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
        let workers = match raw.engine.workers {
            Some(w) => ctx.ranged("[engine] workers", w, 1, i64::from(MAX_WORKERS))? as usize,
            None => default_workers(),
        };
        let offload = match raw.engine.offload.as_deref() {
            None | Some("auto") => OffloadMode::Auto,
            Some("off") => OffloadMode::Off,
            Some(other) => {
                return Err(ctx.err(
                    "[engine] offload",
                    Some(other),
                    "expected \"auto\" or \"off\"",
                ))
            }
        };

        let max_us = i64::try_from(MAX_BUSY_POLL.as_micros()).unwrap_or(i64::MAX);
        let busy_poll = match raw.engine.busy_poll_us {
            Some(us) => {
                Duration::from_micros(ctx.ranged("[engine] busy_poll_us", us, 0, max_us)? as u64)
            }
            None => Duration::ZERO,
        };

        // [[peer]], [[fdb]]
        let mut local: Vec<IpAddr> = address.map(IpAddr::V4).into_iter().collect();
        local.extend(address6.map(IpAddr::V6));
        let scope = PeerScope {
            prefix: "[[peer]]".to_owned(),
            networks: [Some(network), network6].into_iter().flatten().collect(),
            local,
            listen: both,
            mode,
        };
        let (peers, vteps) = ctx.peers(&scope, &raw.peer)?;
        let fdb = ctx.fdb("[[fdb]]", &raw.fdb, both, l2)?;
        let neigh = ctx.neigh("[[neigh]]", &raw.neigh, l2)?;

        // [[vni]]
        let mut extra_vnis = Vec::with_capacity(raw.vni.len());
        for (i, v) in raw.vni.iter().enumerate() {
            extra_vnis.push(ctx.extra_vni(i + 1, v, both)?);
        }
        let mut seen = vec![(vxlan.as_ref().map_or(0, |v| v.vni), d.name.as_str())];
        for (i, v) in extra_vnis.iter().enumerate() {
            let key = format!("[[vni]] #{}", i + 1);
            if seen.iter().any(|(n, _)| *n == v.vni) {
                return Err(ctx.err(
                    &format!("{key} vni"),
                    Some(&v.vni.to_string()),
                    "is served twice",
                ));
            }
            if seen.iter().any(|(_, dev)| *dev == v.device) {
                return Err(ctx.err(&format!("{key} device"), Some(&v.device), "is used twice"));
            }
            seen.push((v.vni, v.device.as_str()));
        }

        // The ARP/ND proxy answers what a TAP reads: it needs an l2 VNI.
        if let Some(v) = &vxlan {
            let any_l2 = l2 || extra_vnis.iter().any(|e| e.mode == VxlanMode::L2);
            for (key, on) in [
                ("[vxlan] proxy", v.proxy),
                ("[vxlan] neigh_learning", v.neigh_learning),
            ] {
                if on && !any_l2 {
                    return Err(ctx.err(
                        key,
                        Some("true"),
                        "needs VXLAN l2 mode (mode = \"l2\", or a [[vni]] with mode = \"l2\"): \
                         it answers ARP and neighbour solicitations read from a TAP",
                    ));
                }
            }
        }

        let acl = acl_rules(&ctx, &raw.acl)?;
        let acl_default = match &raw.policy.default {
            Some(v) => decision(&ctx, "[policy] default", v)?,
            None => Decision::Allow,
        };

        Ok(Config {
            path: path.to_owned(),
            backend,
            network,
            network6,
            underlay_mtu,
            direct_routing: raw.direct_routing.unwrap_or(false),
            device: DeviceConfig {
                name: d.name.clone(),
                address,
                address6,
                mtu,
                bridge: d.bridge.clone(),
                persist: d.persist,
            },
            listen,
            listen6,
            control_socket,
            metrics,
            icmp,
            validation,
            batch,
            workers,
            offload,
            busy_poll,
            peers,
            vteps,
            fdb,
            neigh,
            vxlan,
            extra_vnis,
            acl,
            acl_default,
        })
    }
}

/// `allow`, `deny` or `reject`.
fn decision(ctx: &Ctx<'_>, key: &str, value: &str) -> Result<Decision, ConfigError> {
    match value {
        "allow" => Ok(Decision::Allow),
        "deny" => Ok(Decision::Drop),
        "reject" => Ok(Decision::Reject),
        _ => Err(ctx.err(
            key,
            Some(value),
            "expected \"allow\", \"deny\" (drop silently) or \"reject\" (drop and answer with ICMP administratively prohibited)",
        )),
    }
}

/// `N` or `N-M`, ports 0-65535.
fn port_range(ctx: &Ctx<'_>, key: &str, value: &str) -> Result<PortRange, ConfigError> {
    let bad = || {
        ctx.err(
            key,
            Some(value),
            "expected a port (0-65535) or a range FIRST-LAST",
        )
    };
    let (first, last) = value.split_once('-').unwrap_or((value, value));
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(ctx.err(key, Some(value), "the range's first port is above its last"));
    }
    Ok(PortRange::new(first, last))
}

/// `[[acl]]` and `[policy]`.
fn acl_rules(ctx: &Ctx<'_>, raw: &[RawAcl]) -> Result<Vec<AclRule>, ConfigError> {
    if raw.len() > MAX_ACL_RULES {
        return Err(ctx.err(
            "[[acl]]",
            Some(&raw.len().to_string()),
            format!("too many rules (at most {MAX_ACL_RULES})"),
        ));
    }
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = |field: &str| format!("[[acl]] #{} {field}", i + 1);
        let mut rule = AclRule::new(decision(ctx, &key("action"), &r.action)?);
        match r.direction.as_deref() {
            None | Some("both") => {}
            Some("in") => rule = rule.direction(Direction::Ingress),
            Some("out") => rule = rule.direction(Direction::Egress),
            Some(other) => {
                return Err(ctx.err(
                    &key("direction"),
                    Some(other),
                    "expected \"in\" (from peers to this host), \"out\" (from this host to peers) or \"both\"",
                ))
            }
        }
        if let Some(v) = &r.source {
            rule = rule.source(ctx.cidr(&key("source"), v)?);
        }
        if let Some(v) = &r.destination {
            rule = rule.destination(ctx.cidr(&key("destination"), v)?);
        }
        if let (Some(s), Some(d)) = (rule.source, rule.destination) {
            if s.is_ipv4() != d.is_ipv4() {
                return Err(ctx.err(
                    &key("destination"),
                    r.destination.as_deref(),
                    "is of another address family than source: the rule could never match",
                ));
            }
        }
        if let Some(v) = &r.protocol {
            let text = v.text();
            let protocol = protocol_number(&text).ok_or_else(|| {
                ctx.err(
                    &key("protocol"),
                    Some(&text),
                    "expected tcp, udp, icmp, icmpv6, sctp or a protocol number 0-255",
                )
            })?;
            let family = rule.source.or(rule.destination).map(|c| c.is_ipv4());
            let wrong_icmp = matches!((protocol, family), (1, Some(false)) | (58, Some(true)));
            if wrong_icmp {
                return Err(ctx.err(
                    &key("protocol"),
                    Some(&text),
                    "is the ICMP of the other address family than the rule's networks: the rule could never match",
                ));
            }
            rule = rule.protocol(protocol);
        }
        for (field, value) in [("ports", &r.ports), ("source_ports", &r.source_ports)] {
            let Some(value) = value else { continue };
            let text = value.text();
            if !matches!(rule.protocol, Some(6 | 17 | 132)) {
                return Err(ctx.err(
                    &key(field),
                    Some(&text),
                    "ports need protocol = \"tcp\", \"udp\" or \"sctp\"",
                ));
            }
            let range = port_range(ctx, &key(field), &text)?;
            rule = match field {
                "ports" => rule.destination_ports(range),
                _ => rule.source_ports(range),
            };
        }
        rules.push(rule);
    }
    Ok(rules)
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
        assert_eq!(c.device.address, Some(Ipv4Addr::new(100, 96, 1, 0)));
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
direct_routing = true
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
workers = 3
offload = "off"
[[peer]]
subnet = "fd00:100:96:2::/64"
endpoint = "198.18.0.2:9999"
"#,
        )
        .unwrap();
        assert_eq!(c.device.name, "flannel0");
        assert_eq!(c.listen.port(), DEFAULT_UDP_PORT);
        assert_eq!(c.underlay_mtu, Some(9000));
        assert!(c.direct_routing);
        assert_eq!(c.device.mtu, Some(1400));
        assert_eq!(c.device.address6, Some("fd00:100:96:1::".parse().unwrap()));
        assert_eq!(c.control_socket, "/run/weft.sock");
        assert!(!c.validation.check_peer && c.validation.check_inner_source);
        assert_eq!(c.batch, 1);
        assert_eq!((c.workers, c.offload), (3, OffloadMode::Off));
        assert_eq!(c.peers[0].endpoint, "198.18.0.2:9999".parse().unwrap());
    }

    #[test]
    fn only_a_regular_file_of_bounded_size_is_loaded() {
        let dir = weft_testbed::TempDir::new("weft-config-load").unwrap();
        let fifo = dir.path().join("weft.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opened without blocking: an error at once, not a wait for a writer.
        let e = Config::load(&fifo).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") && e.contains("weft.toml"),
            "{e}"
        );
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
        let good = dir.path().join("good.toml");
        std::fs::write(&good, ISSUE_EXAMPLE).unwrap();
        assert_eq!(Config::load(&good).unwrap().device.name, "flannel0");
    }

    #[test]
    fn peer_endpoints_that_cannot_work_are_refused_by_key() {
        for (endpoint, why) in [
            ("0.0.0.0", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("224.0.0.5", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("198.18.0.1", "own [listen] address"),
        ] {
            let text = ISSUE_EXAMPLE.replace(
                "endpoint = \"198.18.0.2\"",
                &format!("endpoint = \"{endpoint}\""),
            );
            let e = err_line(&text);
            assert!(
                e.contains(&format!("[[peer]] #1 endpoint = \"{endpoint}\"")) && e.contains(why),
                "{endpoint}: {e}"
            );
        }
    }

    #[test]
    fn peers_sharing_an_address_on_other_ports_are_refused_naming_both() {
        let text = format!(
            "{ISSUE_EXAMPLE}[[peer]]\nsubnet = \"100.96.3.0/24\"\nendpoint = \"198.18.0.2:9000\"\n"
        );
        let e = err_line(&text);
        assert!(
            e.contains("[[peer]] #2 endpoint = \"198.18.0.2:9000\"")
                && e.contains("[[peer]] #1 endpoint 198.18.0.2:8285"),
            "{e}"
        );
        // The same endpoint for two subnets is one peer, as before.
        let same = format!(
            "{ISSUE_EXAMPLE}[[peer]]\nsubnet = \"100.96.3.0/24\"\nendpoint = \"198.18.0.2:8285\"\n"
        );
        assert_eq!(parse(&same).unwrap().peers.len(), 2);
    }

    #[test]
    fn an_overlay_that_would_swallow_the_underlay_is_refused() {
        let e = err_line(&ISSUE_EXAMPLE.replace("\"100.96.0.0/16\"", "\"0.0.0.0/0\""));
        assert!(
            e.contains("network = \"0.0.0.0/0\"") && e.contains("every address"),
            "{e}"
        );
        let e = err_line(
            &ISSUE_EXAMPLE
                .replace("network = \"100.96.0.0/16\"", "network = \"198.0.0.0/8\"")
                .replace("address = \"100.96.1.0\"", "address = \"198.96.1.0\"")
                .replace("subnet = \"100.96.2.0/24\"", "subnet = \"198.96.2.0/24\""),
        );
        assert!(
            e.contains("network = \"198.0.0.0/8\"") && e.contains("underlay address 198.18.0.1"),
            "{e}"
        );
        let e = err_line(&ISSUE_EXAMPLE.replace(
            "network = \"100.96.0.0/16\"",
            "network = \"100.96.0.0/16\"\nnetwork6 = \"::/0\"",
        ));
        assert!(e.contains("network6 = \"::/0\""), "{e}");
    }

    #[test]
    fn a_device_mtu_that_cannot_fit_one_datagram_is_refused() {
        let with = |extra: &str| {
            ISSUE_EXAMPLE.replace(
                "name = \"flannel0\"",
                &format!("name = \"flannel0\"\n{extra}"),
            )
        };
        let e = err_line(&with("mtu = 65535"));
        assert!(
            e.contains("[device] mtu = \"65535\"") && e.contains("at most 65507"),
            "{e}"
        );
        assert_eq!(parse(&with("mtu = 65507")).unwrap().device.mtu, Some(65507));
        // IPv6 on the device needs 1280.
        let v6 = ISSUE_EXAMPLE
            .replace(
                "network = \"100.96.0.0/16\"",
                "network = \"100.96.0.0/16\"\nnetwork6 = \"fd00:100:96::/48\"",
            )
            .replace(
                "address = \"100.96.1.0\"",
                "address = \"100.96.1.0\"\naddress6 = \"fd00:100:96:1::1\"\nmtu = 1000",
            );
        let e = err_line(&v6);
        assert!(
            e.contains("[device] mtu = \"1000\"") && e.contains("1280"),
            "{e}"
        );
        // An underlay MTU that leaves too little.
        let small = format!(
            "underlay_mtu = 600\n{}",
            ISSUE_EXAMPLE
                .replace("backend = \"udp\"", "backend = \"vxlan\"")
                .replace("port = 8285", "port = 8472")
                .replace(
                    "endpoint = \"198.18.0.2\"",
                    "endpoint = \"198.18.0.2\"\nvtep_mac = \"02:00:00:00:02:00\""
                )
        );
        let e = err_line(&small);
        assert!(
            e.contains("underlay_mtu = \"600\"") && e.contains("550"),
            "{e}"
        );
    }

    #[test]
    fn device_names_are_checked_as_the_kernel_does_in_bytes() {
        for bad in [
            "",
            ".",
            "..",
            "flannel:0",
            "flan nel",
            "flannel\t0",
            "weft%d",
            "a/b",
            "sixteen-bytes-xx",
            // 12 characters but 16 bytes.
            "éééé-flannel",
        ] {
            let text = ISSUE_EXAMPLE.replace("name = \"flannel0\"", &format!("name = {bad:?}"));
            let e = err_line(&text);
            assert!(e.contains("[device] name"), "{bad:?}: {e}");
        }
        for good in [
            "flannel0",
            "flannel.1",
            "flannel-v6.1",
            "fifteen-bytes-x",
            "weft_0",
        ] {
            let text = ISSUE_EXAMPLE.replace("name = \"flannel0\"", &format!("name = {good:?}"));
            assert_eq!(parse(&text).unwrap().device.name, good);
        }
        assert!(device_name_problem("tab\x0bname").is_some());
    }

    #[test]
    fn a_dual_stack_underlay_takes_peers_of_both_families() {
        let text = ISSUE_EXAMPLE
            .replace(
                "address = \"198.18.0.1\"\n",
                "address = \"198.18.0.1\"\naddress6 = \"fd00:198:18::1\"\n",
            )
            .replace(
                "network = \"100.96.0.0/16\"",
                "network = \"100.96.0.0/16\"\nnetwork6 = \"fd00:100:96::/48\"",
            )
            + "[[peer]]\nsubnet = \"fd00:100:96:2::/64\"\nendpoint = \"fd00:198:18::2\"\n";
        let c = parse(&text).unwrap();
        assert_eq!(c.listen6, Some("[fd00:198:18::1]:8285".parse().unwrap()));
        assert_eq!(
            c.peers[1].endpoint,
            "[fd00:198:18::2]:8285".parse().unwrap()
        );
        assert_eq!(c.peers[0].endpoint, "198.18.0.2:8285".parse().unwrap());

        // Without address6, an IPv6 endpoint is refused, with the way out.
        let without = text.replace("address6 = \"fd00:198:18::1\"\n", "");
        let e = err_line(&without);
        assert!(
            e.contains("[[peer]] #2 endpoint = \"fd00:198:18::2\"")
                && e.contains("set [listen] address6"),
            "{e}"
        );
        // address6 must be IPv6, next to an IPv4 address.
        let e = err_line(&text.replace("fd00:198:18::1", "198.18.0.9"));
        assert!(
            e.contains("[listen] address6 = \"198.18.0.9\"") && e.contains("not an IPv6"),
            "{e}"
        );
        let v6_listen = text.replace("address = \"198.18.0.1\"", "address = \"fd00:198:18::9\"");
        let e = err_line(&v6_listen);
        assert!(
            e.contains("[listen] address6") && e.contains("needs an IPv4"),
            "{e}"
        );
        let e = err_line(&text.replace("fd00:198:18::1", "nonsense"));
        assert!(e.contains("[listen] address6 = \"nonsense\""), "{e}");
    }

    #[test]
    fn engine_keys_default_and_are_checked() {
        let c = parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(
            (c.workers, c.offload),
            (default_workers(), OffloadMode::Auto)
        );
        let e = err_line(&format!("{ISSUE_EXAMPLE}\n[engine]\noffload = \"fast\"\n"));
        assert!(
            e.contains("[engine] offload = \"fast\"") && e.contains("auto"),
            "{e}"
        );
        let e = err_line(&format!("{ISSUE_EXAMPLE}\n[engine]\nworkers = 0\n"));
        assert!(
            e.contains("[engine] workers = \"0\"") || e.contains("[engine] workers"),
            "{e}"
        );
        assert_eq!(c.busy_poll, Duration::ZERO);
        let c = parse(&format!("{ISSUE_EXAMPLE}\n[engine]\nbusy_poll_us = 250\n")).unwrap();
        assert_eq!(c.busy_poll, Duration::from_micros(250));
        let e = err_line(&format!("{ISSUE_EXAMPLE}\n[engine]\nbusy_poll_us = -1\n"));
        assert!(
            e.contains("[engine] busy_poll_us = \"-1\"") && e.contains("between 0 and 1000000"),
            "{e}"
        );
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

    const VXLAN_EXAMPLE: &str = r#"
backend = "vxlan"
network = "100.96.0.0/16"
[device]
name = "flannel.1"
address = "100.96.2.0"
[listen]
address = "198.18.0.2"
port = 8472
[vxlan]
vni = 1
vtep_mac = "02:00:00:00:02:00"
[[peer]]
subnet = "100.96.1.0/24"
endpoint = "198.18.0.1"
vtep_mac = "02:00:00:00:01:00"
"#;

    #[test]
    fn the_documented_vxlan_example_parses() {
        let c = parse(VXLAN_EXAMPLE).unwrap();
        assert_eq!(c.backend, BackendKind::Vxlan);
        let v = c.vxlan.as_ref().unwrap();
        assert_eq!((v.vni, v.mode), (1, VxlanMode::L3));
        assert_eq!(v.vtep_mac, Some("02:00:00:00:02:00".parse().unwrap()));
        assert_eq!(v.source_ports, (32768, 60999));
        assert_eq!(c.listen.port(), 8472);
        assert_eq!(
            c.peers[0].vtep_mac,
            Some("02:00:00:00:01:00".parse().unwrap())
        );
        assert_eq!(c.peers[0].endpoint.port(), 8472);
        // The port defaults to 8472 for vxlan.
        let c = parse(&VXLAN_EXAMPLE.replace("port = 8472\n", "")).unwrap();
        assert_eq!(c.listen.port(), DEFAULT_VXLAN_PORT);
        assert_eq!(
            c.vxlan.unwrap().mac_file,
            PathBuf::from("/var/lib/weft/vtep-flannel.1-198.18.0.2.mac")
        );
    }

    #[test]
    fn vxlan_l2_neighbour_proxy_keys() {
        let l2 = r#"
backend = "vxlan"
network = "100.96.0.0/16"
network6 = "fd00:96::/64"
[device]
name = "weft0"
bridge = "br0"
[listen]
address = "198.18.0.1"
[vxlan]
mode = "l2"
proxy = true
neigh_learning = true
[[peer]]
endpoint = "198.18.0.2"
[[neigh]]
ip = "100.96.0.12"
mac = "02:00:00:aa:00:0c"
[[neigh]]
ip = "fd00:96::12"
mac = "02:00:00:aa:00:0c"
[[vni]]
vni = 2
mode = "l2"
device = "weft2"
[[vni.neigh]]
ip = "100.97.0.5"
mac = "02:00:00:bb:00:05"
"#;
        let c = parse(l2).unwrap();
        let v = c.vxlan.as_ref().unwrap();
        assert!(v.proxy && v.neigh_learning);
        let mac: EthernetAddress = "02:00:00:aa:00:0c".parse().unwrap();
        assert_eq!(
            c.neigh,
            [
                ("100.96.0.12".parse::<IpAddr>().unwrap(), mac),
                ("fd00:96::12".parse::<IpAddr>().unwrap(), mac)
            ]
        );
        assert_eq!(c.extra_vnis[0].neigh.len(), 1);
        // Off by default.
        let c = parse(&l2.replace("proxy = true\nneigh_learning = true\n", "")).unwrap();
        let v = c.vxlan.as_ref().unwrap();
        assert!(!v.proxy && !v.neigh_learning);
        for (bad, want) in [
            (
                ("ip = \"100.96.0.12\"", "ip = \"224.0.0.1\""),
                "[[neigh]] #1 ip = \"224.0.0.1\"",
            ),
            (
                ("ip = \"100.96.0.12\"", "ip = \"nonsense\""),
                "[[neigh]] #1 ip",
            ),
            (
                ("ip = \"fd00:96::12\"", "ip = \"100.96.0.12\""),
                "is given twice",
            ),
            (
                ("mac = \"02:00:00:bb:00:05\"", "mac = \"ff:ff:ff:ff:ff:ff\""),
                "[[vni]] #1 neigh #1 mac",
            ),
        ] {
            let e = err_line(&l2.replace(bad.0, bad.1));
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        // L3 refuses the proxy, naming the key, and static entries; the UDP backend too.
        let e = err_line(&VXLAN_EXAMPLE.replace("[vxlan]", "[vxlan]\nproxy = true"));
        assert!(
            e.contains("[vxlan] proxy = \"true\"") && e.contains("l2 mode"),
            "{e}"
        );
        let e = err_line(&VXLAN_EXAMPLE.replace("[vxlan]", "[vxlan]\nneigh_learning = true"));
        assert!(
            e.contains("[vxlan] neigh_learning") && e.contains("l2 mode"),
            "{e}"
        );
        let e = err_line(&format!(
            "{VXLAN_EXAMPLE}[[neigh]]\nip = \"100.96.0.12\"\nmac = \"02:00:00:aa:00:0c\"\n"
        ));
        assert!(e.contains("[[neigh]] #1 ip") && e.contains("l2"), "{e}");
        let e = err_line(&format!(
            "{ISSUE_EXAMPLE}[[neigh]]\nip = \"100.96.0.12\"\nmac = \"02:00:00:aa:00:0c\"\n"
        ));
        assert!(e.contains("[[neigh]]") && e.contains("only applies"), "{e}");
    }

    #[test]
    fn vxlan_l2_with_vteps_fdb_and_more_vnis() {
        let c = parse(
            r#"
backend = "vxlan"
network = "100.96.0.0/16"
[device]
name = "weft0"
bridge = "br0"
[listen]
address = "198.18.0.2"
[vxlan]
mode = "l2"
source_ports = "40000-40015"
source_sockets = 4
fdb_ageing = 60
[[peer]]
endpoint = "198.18.0.1"
[[fdb]]
mac = "02:00:00:00:aa:01"
endpoint = "198.18.0.3"
[[vni]]
vni = 2
mode = "l3"
device = "weft2"
address = "100.97.2.0/16"
[[vni.peer]]
subnet = "100.97.1.0/24"
endpoint = "198.18.0.1"
vtep_mac = "02:00:00:00:01:02"
"#,
        )
        .unwrap();
        assert_eq!(c.device.address, None);
        assert_eq!(c.device.bridge.as_deref(), Some("br0"));
        let v = c.vxlan.as_ref().unwrap();
        assert_eq!(
            (v.mode, v.source_ports, v.source_sockets, v.fdb_ageing_secs),
            (VxlanMode::L2, (40000, 40015), 4, 60)
        );
        assert_eq!(
            c.vteps,
            vec!["198.18.0.1:8472".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.fdb.len(), 1);
        assert_eq!(c.extra_vnis.len(), 1);
        let extra = &c.extra_vnis[0];
        assert_eq!(
            (extra.vni, extra.mode, extra.device.as_str()),
            (2, VxlanMode::L3, "weft2")
        );
        assert_eq!(extra.peers.len(), 1);
    }

    #[test]
    fn vxlan_errors_name_key_and_value() {
        let e = err_line(&VXLAN_EXAMPLE.replace("vtep_mac = \"02:00:00:00:01:00\"\n", ""));
        assert!(
            e.contains("[[peer]] #1 vtep_mac") && e.contains("required in VXLAN l3"),
            "{e}"
        );
        let e = err_line(&VXLAN_EXAMPLE.replace("vni = 1", "vni = 16777216"));
        assert!(e.contains("[vxlan] vni = \"16777216\""), "{e}");
        let e = err_line(&VXLAN_EXAMPLE.replace("vni = 1", "mode = \"l4\""));
        assert!(e.contains("[vxlan] mode = \"l4\""), "{e}");
        let e = err_line(&VXLAN_EXAMPLE.replace("02:00:00:00:02:00", "01:00:5e:00:00:01"));
        assert!(
            e.contains("[vxlan] vtep_mac") && e.contains("unicast"),
            "{e}"
        );
        let e = err_line(&VXLAN_EXAMPLE.replace("subnet = \"100.96.1.0/24\"\n", ""));
        assert!(e.contains("[[peer]] #1 subnet") && e.contains("l2"), "{e}");
        let e = err_line(&VXLAN_EXAMPLE.replace("address = \"100.96.2.0\"\n", ""));
        assert!(
            e.contains("[device] address") && e.contains("required"),
            "{e}"
        );
        let e = err_line(&format!("{VXLAN_EXAMPLE}[vxlan]\n"));
        assert!(e.contains("line 17") && e.contains("duplicate"), "{e}");
        let e = err_line(&VXLAN_EXAMPLE.replace("[vxlan]", "[vxlan]\nsource_ports = \"9-1\""));
        assert!(e.contains("[vxlan] source_ports = \"9-1\""), "{e}");
        let e = err_line(&ISSUE_EXAMPLE.replace("[listen]", "[vxlan]\nvni = 1\n[listen]"));
        assert!(e.contains("[vxlan]") && e.contains("only applies"), "{e}");
        let e = err_line(&format!(
            "{VXLAN_EXAMPLE}[[fdb]]\nmac = \"02:00:00:00:aa:01\"\nendpoint = \"198.18.0.3\"\n"
        ));
        assert!(e.contains("[[fdb]] #1 mac") && e.contains("l2"), "{e}");
        let e = err_line(&format!(
            "{VXLAN_EXAMPLE}[[vni]]\nvni = 1\nmode = \"l2\"\ndevice = \"x2\"\n"
        ));
        assert!(
            e.contains("[[vni]] #1 vni = \"1\"") && e.contains("twice"),
            "{e}"
        );
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

    #[test]
    fn acl_rules_are_read_in_order_with_the_default() {
        let text = format!(
            "{ISSUE_EXAMPLE}\n[[acl]]\naction = \"allow\"\ndirection = \"in\"\nsource = \"100.96.1.0/24\"\n\
             protocol = \"tcp\"\nports = \"5000-5010\"\n\n[[acl]]\naction = \"reject\"\nprotocol = 17\n\
             source_ports = 53\n\n[policy]\ndefault = \"deny\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.acl.len(), 2);
        assert_eq!(
            c.acl[0].to_string(),
            "allow in tcp from 100.96.1.0/24 to any port 5000-5010"
        );
        assert_eq!(c.acl[1].to_string(), "reject udp from any port 53 to any");
        assert_eq!(c.acl_default, Decision::Drop);
        let plain = parse(ISSUE_EXAMPLE).unwrap();
        assert!(plain.acl.is_empty());
        assert_eq!(plain.acl_default, Decision::Allow);
    }

    #[test]
    fn bad_acl_rules_name_the_rule_key_and_value() {
        let rule = |body: &str| err_line(&format!("{ISSUE_EXAMPLE}\n[[acl]]\n{body}\n"));
        for (body, wanted) in [
            ("action = \"drop\"", "[[acl]] #1 action = \"drop\""),
            (
                "action = \"deny\"\ndirection = \"up\"",
                "[[acl]] #1 direction = \"up\"",
            ),
            (
                "action = \"deny\"\nsource = \"100.96.1.5/24\"",
                "[[acl]] #1 source",
            ),
            (
                "action = \"deny\"\nprotocol = \"tcpp\"",
                "[[acl]] #1 protocol = \"tcpp\"",
            ),
            ("action = \"deny\"\nports = 80", "ports need protocol"),
            (
                "action = \"deny\"\nprotocol = \"tcp\"\nports = \"90-80\"",
                "first port is above",
            ),
            (
                "action = \"deny\"\nprotocol = \"tcp\"\nports = 70000",
                "[[acl]] #1 ports = \"70000\"",
            ),
            (
                "action = \"deny\"\nsource = \"100.96.1.0/24\"\ndestination = \"fd00::/8\"",
                "another address family",
            ),
            (
                "action = \"deny\"\nsource = \"fd00::/8\"\nprotocol = \"icmp\"",
                "the ICMP of the other",
            ),
            ("action = \"deny\"\nport = 80", "unknown field"),
        ] {
            let e = rule(body);
            assert!(e.contains(wanted), "{body:?}: {e}");
        }
        let e = err_line(&format!("{ISSUE_EXAMPLE}\n[policy]\ndefault = \"maybe\"\n"));
        assert!(e.contains("[policy] default = \"maybe\""), "{e}");
    }

    #[test]
    fn an_acl_file_holds_rules_and_the_default_only() {
        let dir = std::env::temp_dir().join(format!("weft-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acl.toml");
        std::fs::write(
            &path,
            "[[acl]]\naction = \"deny\"\nprotocol = \"icmp\"\n[policy]\ndefault = \"allow\"\n",
        )
        .unwrap();
        let (rules, default) = load_acl_file(&path).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].to_string(), "deny icmp from any to any");
        assert_eq!(default, Decision::Allow);
        std::fs::write(&path, "backend = \"udp\"\n").unwrap();
        let e = load_acl_file(&path).unwrap_err().to_string();
        assert!(e.contains("acl.toml") && e.contains("unknown field"), "{e}");
        std::fs::write(&path, "[[acl]]\naction = \"deny\"\nports = 80\n").unwrap();
        let e = load_acl_file(&path).unwrap_err().to_string();
        assert!(e.contains("[[acl]] #1 ports"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_multicast_group_is_read_and_checked() {
        let l2 = "backend = \"vxlan\"\nnetwork = \"100.96.0.0/16\"\n[device]\nname = \"weft0\"\n\
                  [listen]\naddress = \"198.18.0.1\"\n[vxlan]\nmode = \"l2\"\nvtep_mac = \"02:00:00:00:01:00\"\n";
        let c = parse(&format!("{l2}group = \"239.1.1.1\"\n")).unwrap();
        let v = c.vxlan.unwrap();
        assert_eq!(v.group, Some("239.1.1.1:8472".parse().unwrap()));
        assert_eq!(v.group_interface, None);
        assert!(c.peers.is_empty() && c.vteps.is_empty());
        let c = parse(&format!(
            "{l2}group = \"239.1.1.1\"\ngroup_interface = \"u0\"\n"
        ))
        .unwrap();
        assert_eq!(c.vxlan.unwrap().group_interface.as_deref(), Some("u0"));
        for (extra, wanted) in [
            ("group = \"198.18.0.9\"\n", "not a multicast address"),
            ("group = \"ff05::101\"\n", "another address family"),
            ("group = \"nope\"\n", "[vxlan] group = \"nope\""),
            (
                "group_interface = \"u0\"\n",
                "only applies with [vxlan] group",
            ),
            (
                "group = \"239.1.1.1\"\ngroup_interface = \"a/b\"\n",
                "[vxlan] group_interface",
            ),
        ] {
            let e = err_line(&format!("{l2}{extra}"));
            assert!(e.contains(wanted), "{extra:?}: {e}");
        }
        let l3 = l2.replace("mode = \"l2\"", "mode = \"l3\"").replace(
            "name = \"weft0\"",
            "name = \"weft0\"\naddress = \"100.96.1.0\"",
        );
        let e = err_line(&format!("{l3}group = \"239.1.1.1\"\n"));
        assert!(e.contains("needs mode = \"l2\""), "{e}");
    }
}
