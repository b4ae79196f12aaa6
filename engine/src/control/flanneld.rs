//! `weft flannel`: joining a flannel network the way flanneld does in etcd mode.
//!
//! The order follows flanneld's (FLANNEL.md §1, §3): pick the interface and the public IP,
//! read `<prefix>/config` from etcd (retried every second while it is missing, invalid or
//! etcd is unreachable, saying so in the log), lease a subnet (reuse the lease that holds our
//! public IP, else the subnet of the previous `subnet.env` if free, else a random free one;
//! created only if absent, bound to a 24 h etcd lease), write `subnet.env`, then run the
//! same daemon as `weft run` ([`daemon::run_config`]) with a route feed that keeps the
//! routing table in step with the other hosts' leases.
//!
//! The feed (`Follower`) applies the initial listing as one batch of route edits, then
//! watches `<prefix>/subnets/` from the listing's revision + 1 and applies each batch of
//! changes as one batch of edits. A compacted revision is recovered by listing again and
//! diffing (attributes included, so a new VTEP MAC is not missed); a lost connection is
//! retried with backoff from the last revision seen, and forwarding goes on with the last
//! table meanwhile. The host's own lease is renewed ahead of expiry (a new 24 h lease and a
//! put, as flanneld), and taken back if an operator deletes it (flanneld exits there).
//!
//! With `Backend.Type = "host-gw"` there is no device and no data plane: the lease says
//! `"BackendType":"host-gw"` (flanneld's form), `FLANNEL_MTU` is the interface's MTU, and
//! the feed programs one kernel route `<subnet> via <PublicIP> dev <iface>` per remote
//! host-gw lease (`DirectRoutes`), removed with the lease. A lease whose PublicIP the
//! kernel does not reach directly out of the interface (it has a gateway, or another
//! interface) is refused with one log line and gets no route. vxlan's `DirectRouting`
//! applies the same rule per lease: a host on this L2 segment gets the plain route and no
//! data-plane route, the others go through the VXLAN device. The kernel is asked again
//! every few seconds, and a host whose reachability changed is moved.
//!
//! Where weft differs from flanneld on purpose: a lost creation race lists again and
//! retries (flanneld exits); a reservation (a key without an etcd lease) is rewritten
//! without one; the own lease deleted at runtime is re-created.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_encap::acl::AclRule;
use weft_encap::policy::Decision;
use weft_encap::table::{Cidr, Route};
use weft_encap::wire::EthernetAddress;

use crate::control::config::{endpoint_problem, Config};
use crate::control::daemon::{self, DaemonError, RunOptions};
use crate::control::etcd::{Client, EtcdConfig, EtcdError, Kv, WatchEvent};
use crate::control::flannel::{
    choose_subnet, random_index, subnet_env, BackendConfig, Choice, Ipv4Net, Ipv6Net, LeaseAttrs,
    ListedLease, NetworkConfig, SubnetEnv, SubnetKey,
};
use crate::dataplane::routes::{RouteEdit, RouteTable};
use crate::sys::netlink::{Route as KernelRoute, RouteLookup};
use crate::sys::Netlink;

/// flanneld's lease time: every lease is bound to an etcd lease of 24 hours.
pub const SUBNET_TTL: Duration = Duration::from_secs(24 * 3600);
/// Set to a number of seconds to bind leases to etcd leases that short instead of
/// [`SUBNET_TTL`]: the end-to-end tests use it to see a renewal within seconds.
pub const TEST_LEASE_TTL: &str = "WEFT_TEST_FLANNEL_LEASE_TTL";
/// How often a lost creation race is retried (flanneld's `raceRetries`).
const RACE_RETRIES: usize = 10;
/// The longest wait between two attempts to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What `weft flannel` is told: flanneld's flags that weft serves.
#[derive(Debug, Clone)]
pub struct FlannelOptions {
    /// `--etcd-endpoints`, `--etcd-cafile/certfile/keyfile`, `--etcd-username/password`.
    pub etcd: EtcdConfig,
    /// `--etcd-prefix` (default `/coreos.com/network`).
    pub prefix: String,
    /// `--iface`: interface names or addresses, tried in order.
    pub iface: Vec<String>,
    /// `--iface-regex`: tried after `--iface`, each on every interface's addresses, then on
    /// the names.
    pub iface_regex: Vec<regex::Regex>,
    /// `--iface-can-reach`: the interface the kernel would send from to reach this address.
    pub iface_can_reach: Option<IpAddr>,
    /// `--public-ip`: the address to publish (default: the interface's).
    pub public_ip: Option<Ipv4Addr>,
    /// `--public-ipv6`: the IPv6 address to publish on a dual-stack vxlan network (default:
    /// the interface's first global IPv6 address).
    pub public_ipv6: Option<Ipv6Addr>,
    /// `--subnet-file` (default `/run/flannel/subnet.env`).
    pub subnet_file: PathBuf,
    /// `--subnet-lease-renew-margin`: renew this long before the lease expires.
    pub renew_margin: Duration,
    /// `--healthz-ip`/`--healthz-port`: where to answer `/healthz` and `/readyz`.
    pub healthz: Option<SocketAddr>,
    /// Where weft keeps its state (the VXLAN VTEP MAC).
    pub state_dir: PathBuf,
    /// `[engine] workers` for the data plane (default: the number of CPUs).
    pub workers: Option<usize>,
    /// `[metrics] listen` for the data plane: Prometheus metrics, `/healthz`, `/readyz`.
    pub metrics: Option<SocketAddr>,
    /// `--acl-file`: `[[acl]]` rules and `[policy] default` for the data plane (read once,
    /// when the daemon starts).
    pub acl: Option<(Vec<AclRule>, Decision)>,
    /// The file `acl` came from: SIGHUP reads it again.
    pub acl_file: Option<PathBuf>,
}

/// Why `weft flannel` could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlannelError {
    /// A flag's value cannot work.
    #[error("{flag} = {value:?}: {reason}")]
    Flag {
        /// The flag, e.g. `--iface`.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The etcd client could not be built (TLS files, endpoints).
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The network config asks for something `weft flannel` does not serve yet.
    #[error("{prefix}/config: {reason}")]
    Unsupported {
        /// The etcd prefix.
        prefix: String,
        /// What is not served.
        reason: String,
    },
    /// No free subnet is left in the network.
    #[error(
        "{prefix}/subnets: out of subnets: no free /{len} left between SubnetMin and SubnetMax"
    )]
    OutOfSubnets {
        /// The etcd prefix.
        prefix: String,
        /// The subnet length.
        len: u8,
    },
    /// A creation race was lost too many times in a row.
    #[error("{prefix}/subnets: lost the race for a subnet {RACE_RETRIES} times in a row")]
    Races {
        /// The etcd prefix.
        prefix: String,
    },
    /// `subnet.env` could not be written.
    #[error(transparent)]
    SubnetEnv(#[from] subnet_env::SubnetEnvError),
    /// The VTEP MAC could not be kept.
    #[error("{path}: cannot keep the VTEP MAC: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The daemon built from the lease failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The health endpoint could not listen.
    #[error("--healthz-ip/--healthz-port {addr}: {source}")]
    Healthz {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// The interface weft sends from: its name, IPv4 address, IPv6 address and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The interface name.
    pub name: String,
    /// Its first IPv4 address.
    pub addr: Ipv4Addr,
    /// Its first global IPv6 address (not link-local), if any: a dual-stack vxlan network's
    /// IPv6 underlay.
    pub addr6: Option<Ipv6Addr>,
    /// Its MTU.
    pub mtu: u32,
}

/// Picks the interface as flanneld does (`pkg/ipmatch`): the first `--iface` (name or
/// address) that has an IPv4 address, else the first `--iface-regex` match (on addresses,
/// then names), else the interface `--iface-can-reach` routes through, else the interface of
/// the default route, else the one that holds `--public-ip`.
pub fn choose_interface(options: &FlannelOptions) -> Result<Interface, FlannelError> {
    let netlink_err = |e: io::Error| FlannelError::Flag {
        flag: "--iface",
        value: options.iface.join(","),
        reason: format!("cannot list the interfaces: {e}"),
    };
    let mut nl = Netlink::open().map_err(netlink_err)?;
    let links = nl.links().map_err(netlink_err)?;
    let addrs = nl.addresses().map_err(netlink_err)?;
    let first_v4 = |index: u32| {
        addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) if a.index == index => Some(v4),
            _ => None,
        })
    };
    let first_v6 = |index: u32| {
        addrs.iter().find_map(|a| match a.addr {
            IpAddr::V6(v6)
                if a.index == index
                    && !v6.is_loopback()
                    && !v6.is_unspecified()
                    && (v6.segments()[0] & 0xffc0) != 0xfe80 =>
            {
                Some(v6)
            }
            _ => None,
        })
    };
    let found = |index: u32, addr: Ipv4Addr| {
        links.iter().find(|l| l.index == index).map(|l| Interface {
            name: l.name.clone(),
            addr,
            addr6: first_v6(index),
            mtu: l.mtu,
        })
    };
    for wanted in &options.iface {
        let hit = match wanted.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => addrs
                .iter()
                .find(|a| a.addr == IpAddr::V4(ip))
                .and_then(|a| found(a.index, ip)),
            // An IPv6 address names its interface, and is its IPv6 underlay address.
            Ok(IpAddr::V6(ip)) => addrs
                .iter()
                .find(|a| a.addr == IpAddr::V6(ip))
                .and_then(|a| first_v4(a.index).and_then(|v4| found(a.index, v4)))
                .map(|iface| Interface {
                    addr6: Some(ip),
                    ..iface
                }),
            Err(_) => links
                .iter()
                .find(|l| &l.name == wanted)
                .and_then(|l| first_v4(l.index).and_then(|a| found(l.index, a))),
        };
        if let Some(iface) = hit {
            return Ok(iface);
        }
    }
    for regex in &options.iface_regex {
        let by_addr = addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) if regex.is_match(&v4.to_string()) => found(a.index, v4),
            _ => None,
        });
        let by_name = || {
            links
                .iter()
                .filter(|l| regex.is_match(&l.name))
                .find_map(|l| first_v4(l.index).and_then(|a| found(l.index, a)))
        };
        if let Some(iface) = by_addr.or_else(by_name) {
            return Ok(iface);
        }
    }
    if let Some(target) = options.iface_can_reach {
        // The source address the kernel picks for `target` (a connected UDP socket sends
        // nothing) names the interface, as `ip route get` would.
        let source = std::net::UdpSocket::bind(match target {
            IpAddr::V4(_) => "0.0.0.0:0",
            IpAddr::V6(_) => "[::]:0",
        })
        .and_then(|s| s.connect((target, 9)).and_then(|()| s.local_addr()));
        let hit = match source {
            Ok(SocketAddr::V4(src)) => addrs
                .iter()
                .find(|a| a.addr == IpAddr::V4(*src.ip()))
                .and_then(|a| found(a.index, *src.ip())),
            _ => None,
        };
        return hit.ok_or_else(|| FlannelError::Flag {
            flag: "--iface-can-reach",
            value: target.to_string(),
            reason: "no route to it from an interface with an IPv4 address".into(),
        });
    }
    if !options.iface.is_empty() || !options.iface_regex.is_empty() {
        let mut value = options.iface.clone();
        value.extend(options.iface_regex.iter().map(|r| r.as_str().to_owned()));
        return Err(FlannelError::Flag {
            flag: if options.iface.is_empty() {
                "--iface-regex"
            } else {
                "--iface"
            },
            value: value.join(","),
            reason: "no matching interface with an IPv4 address".into(),
        });
    }
    if let Some(name) = default_route_interface() {
        if let Some(l) = links.iter().find(|l| l.name == name) {
            if let Some(iface) = first_v4(l.index).and_then(|a| found(l.index, a)) {
                return Ok(iface);
            }
        }
    }
    if let Some(ip) = options.public_ip {
        if let Some(iface) = addrs
            .iter()
            .find(|a| a.addr == IpAddr::V4(ip))
            .and_then(|a| found(a.index, ip))
        {
            return Ok(iface);
        }
    }
    Err(FlannelError::Flag {
        flag: "--iface",
        value: String::new(),
        reason: "no interface given, no IPv4 default route, and no interface holds --public-ip: \
                 name one with --iface"
            .into(),
    })
}

/// The interface of the IPv4 default route, from `/proc/net/route` (this namespace's).
fn default_route_interface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [iface, "00000000", _, _, _, _, _, "00000000", ..] => Some((*iface).to_owned()),
            _ => None,
        }
    })
}

/// Backoff between attempts to reach etcd: 100 ms doubling to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }

    fn wait(&mut self, stop: &AtomicBool) {
        sleep_unless(stop, self.0);
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }

    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

/// Sleeps `total` in short steps, returning early when `stop` turns true.
fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// Logs `message` unless it is the same as the last one logged through `last`.
fn log_once(last: &mut String, message: String) {
    if *last != message {
        tracing::warn!("{message}");
        *last = message;
    }
}

/// Reads `<prefix>/config` until it exists and is valid, retrying every second (flanneld's
/// `getConfig`), with one log line per distinct problem.
fn wait_for_config(client: &Client, prefix: &str, stop: &AtomicBool) -> Option<NetworkConfig> {
    let key = format!("{prefix}/config");
    let mut last = String::new();
    while !stop.load(Ordering::SeqCst) {
        match client.get(&key) {
            Ok(Some(kv)) => match NetworkConfig::parse(&kv.value) {
                Ok(config) => return Some(config),
                Err(e) => log_once(&mut last, format!("{key}: {e}; retrying")),
            },
            Ok(None) => log_once(
                &mut last,
                format!("{key}: not found in etcd (create it with the etcd v3 API); retrying"),
            ),
            Err(e) => log_once(&mut last, format!("{e}; retrying")),
        }
        sleep_unless(stop, Duration::from_secs(1));
    }
    None
}

/// The subnet(s) of the previous subnet.env, as [`subnet_env::read_previous`] reads them.
type Previous = Option<(Ipv4Net, Option<Ipv6Net>)>;

/// What this host holds in etcd.
#[derive(Debug, Clone)]
struct OwnLease {
    key: SubnetKey,
    /// When the etcd lease expires (`None` for a reservation).
    expires: Option<Instant>,
}

impl OwnLease {
    /// Our lease at `key`, bound to the etcd lease `lease` granted just now.
    fn bound(key: SubnetKey, lease: crate::control::etcd::Lease) -> Self {
        OwnLease {
            key,
            expires: Some(Instant::now() + Duration::from_secs(lease.ttl.max(0) as u64)),
        }
    }
}

/// The etcd side of `weft flannel`: the network, this host's identity and its lease.
struct Manager {
    client: Arc<Client>,
    prefix: String,
    network: NetworkConfig,
    public_ip: Ipv4Addr,
    /// Our IPv6 underlay address on a dual-stack vxlan network.
    public_ipv6: Option<Ipv6Addr>,
    /// Our attributes (public IP, and for vxlan the VNI and VTEP MAC).
    attrs: LeaseAttrs,
    /// The etcd lease time of our lease ([`SUBNET_TTL`]).
    ttl: Duration,
}

impl Manager {
    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    fn key_path(&self, key: &SubnetKey) -> String {
        format!("{}{key}", self.subnets_prefix())
    }

    /// Every parsable lease under `<prefix>/subnets/`, and the listing's revision.
    fn list(&self) -> Result<(Vec<(ListedLease, Kv)>, i64), EtcdError> {
        let listing = self.client.range_prefix(self.subnets_prefix())?;
        let prefix = self.subnets_prefix();
        let mut leases = Vec::with_capacity(listing.kvs.len());
        for kv in listing.kvs {
            let Some(parsed) = parse_lease(&prefix, &kv) else {
                continue;
            };
            leases.push((parsed, kv));
        }
        Ok((leases, listing.revision))
    }

    /// Takes a subnet (FLANNEL.md §1.4), retrying etcd errors with backoff and a lost race
    /// by listing again.
    fn acquire(
        &self,
        previous: Previous,
        stop: &AtomicBool,
    ) -> Result<Option<OwnLease>, FlannelError> {
        let mut backoff = Backoff::new();
        let mut races = 0;
        let mut last = String::new();
        while !stop.load(Ordering::SeqCst) {
            match self.try_acquire(previous) {
                Ok(Some(own)) => return Ok(Some(own)),
                Ok(None) => {
                    races += 1;
                    tracing::info!("another host took the subnet first; listing again");
                    if races >= RACE_RETRIES {
                        return Err(FlannelError::Races {
                            prefix: self.prefix.clone(),
                        });
                    }
                }
                Err(AcquireError::OutOfSubnets) => {
                    return Err(FlannelError::OutOfSubnets {
                        prefix: self.prefix.clone(),
                        len: self.network.subnet_len,
                    })
                }
                Err(AcquireError::Etcd(e)) => {
                    log_once(&mut last, format!("acquiring a subnet: {e}; retrying"));
                    backoff.wait(stop);
                }
            }
        }
        Ok(None)
    }

    /// One attempt: `Ok(None)` when the race for a new subnet was lost.
    fn try_acquire(&self, previous: Previous) -> Result<Option<OwnLease>, AcquireError> {
        let (leases, _) = self.list()?;
        let listed: Vec<ListedLease> = leases.iter().map(|(l, _)| l.clone()).collect();
        let allocation = choose_subnet(
            &self.network,
            &listed,
            self.public_ip,
            previous,
            &mut random_index,
        );
        for key in &allocation.delete {
            tracing::info!("deleting our lease {key}: it no longer fits the network config");
            self.client.delete(self.key_path(key))?;
        }
        match allocation.choice {
            Choice::Reuse { key, reservation } => {
                let own = self.write_own(key, reservation)?;
                tracing::info!(
                    "reusing {} {key} (it holds our public IP {})",
                    if reservation { "reservation" } else { "lease" },
                    self.public_ip
                );
                Ok(Some(own))
            }
            Choice::Previous(key) | Choice::New(key) => {
                let Some(own) = self.create_own(key)? else {
                    return Ok(None);
                };
                tracing::info!(
                    "leased {key} for {} s{}",
                    self.ttl.as_secs(),
                    if matches!(allocation.choice, Choice::Previous(_)) {
                        " (the subnet of the previous subnet.env)"
                    } else {
                        ""
                    }
                );
                Ok(Some(own))
            }
            Choice::OutOfSubnets => Err(AcquireError::OutOfSubnets),
        }
    }

    /// Creates our lease at `key`, bound to a fresh etcd lease, only if the key is absent;
    /// `None` (and the etcd lease revoked) if it exists.
    fn create_own(&self, key: SubnetKey) -> Result<Option<OwnLease>, EtcdError> {
        let lease = self.client.lease_grant(self.ttl.as_secs() as i64)?;
        let created =
            self.client
                .create_if_absent(self.key_path(&key), self.attrs.to_json(), lease.id)?;
        if !created {
            let _ = self.client.lease_revoke(lease.id);
            return Ok(None);
        }
        // etcd only keeps two hosts off one whole key: on a dual-stack network two new keys
        // may share their IPv6 half. The one created later gives its key back and tries again.
        if key.ipv6.is_some() && self.lost_ipv6_race(&key)? {
            let _ = self.client.lease_revoke(lease.id);
            return Ok(None);
        }
        Ok(Some(OwnLease::bound(key, lease)))
    }

    /// Whether another lease, created before ours at `key`, holds our IPv6 subnet.
    fn lost_ipv6_race(&self, key: &SubnetKey) -> Result<bool, EtcdError> {
        let prefix = self.subnets_prefix();
        let listing = self.client.range_prefix(&prefix)?;
        let ours = self.key_path(key);
        let Some(mine) = listing
            .kvs
            .iter()
            .find(|kv| kv.key_str() == Some(ours.as_str()))
        else {
            return Ok(true); // gone already: try again
        };
        Ok(listing.kvs.iter().any(|kv| {
            kv.create_revision < mine.create_revision
                && parse_lease(&prefix, kv).is_some_and(|l| l.key != *key && l.key.ipv6 == key.ipv6)
        }))
    }

    /// Writes our value at `key`: bound to a fresh etcd lease, or without a lease for a
    /// reservation.
    fn write_own(&self, key: SubnetKey, reservation: bool) -> Result<OwnLease, EtcdError> {
        if reservation {
            self.client
                .put(self.key_path(&key), self.attrs.to_json(), 0)?;
            return Ok(OwnLease { key, expires: None });
        }
        let lease = self.client.lease_grant(self.ttl.as_secs() as i64)?;
        self.client
            .put(self.key_path(&key), self.attrs.to_json(), lease.id)?;
        Ok(OwnLease::bound(key, lease))
    }

    /// The public IP of a lease this host should route to: not ours, inside the network,
    /// with a usable PublicIP (else one warning and `None`).
    fn remote_ip(&self, own: &SubnetKey, key: &SubnetKey, attrs: &LeaseAttrs) -> Option<Ipv4Addr> {
        if key.ipv4 == own.ipv4 || !self.network.network.contains(key.ipv4.addr()) {
            return None;
        }
        let ip = attrs.public_ip;
        if let Some(why) =
            endpoint_problem(IpAddr::V4(ip)).or((ip == self.public_ip).then_some("is ours"))
        {
            tracing::warn!("lease {key}: PublicIP {ip} {why}; ignored");
            return None;
        }
        Some(ip)
    }

    /// The subnet and gateway of the plain kernel route a lease may get instead of the
    /// data plane: every valid host-gw lease (flanneld's host-gw skips leases of another
    /// BackendType), and with vxlan `DirectRouting` every lease that has an IPv4 route
    /// (`engine`, from [`Manager::route_for`]). Whether the host is really on this host's
    /// L2 segment is the kernel's to say ([`DirectRoutes::place`]).
    fn direct_target(
        &self,
        own: &SubnetKey,
        key: &SubnetKey,
        attrs: &LeaseAttrs,
        engine: &[Route],
    ) -> Option<(Ipv4Net, Ipv4Addr)> {
        match self.network.backend {
            BackendConfig::HostGw => {
                let ip = self.remote_ip(own, key, attrs)?;
                if attrs.backend_type.as_deref() != Some("host-gw") {
                    tracing::warn!(
                        "lease {key}: BackendType {:?} is not host-gw; ignored",
                        attrs.backend_type.as_deref().unwrap_or("")
                    );
                    return None;
                }
                Some((key.ipv4, ip))
            }
            BackendConfig::Vxlan(v) if v.direct_routing => engine
                .iter()
                .any(|r| r.subnet == key.ipv4.cidr())
                .then_some((key.ipv4, attrs.public_ip)),
            _ => None,
        }
    }

    /// The routes through the data plane to the host of a lease, if it is one this host
    /// should route to: its IPv4 subnet, and on a dual-stack udp network its IPv6 subnet too
    /// (carried to the same IPv4 endpoint). None for host-gw (no data plane).
    fn route_for(&self, own: &SubnetKey, key: &SubnetKey, attrs: &LeaseAttrs) -> Vec<Route> {
        if self.network.backend == BackendConfig::HostGw {
            return Vec::new();
        }
        let Some(ip) = self.remote_ip(own, key, attrs) else {
            return Vec::new();
        };
        match self.network.backend {
            BackendConfig::Udp { port } => {
                let endpoint = SocketAddr::new(IpAddr::V4(ip), port);
                let mut routes = vec![Route {
                    subnet: key.ipv4.cidr(),
                    endpoint,
                    vtep_mac: None,
                }];
                if let (Some(v6), Some(net6)) = (key.ipv6, self.network.ipv6) {
                    if Some(v6) != own.ipv6 && net6.network.contains(v6.addr()) {
                        routes.push(Route {
                            subnet: v6.cidr(),
                            endpoint,
                            vtep_mac: None,
                        });
                    }
                }
                routes
            }
            BackendConfig::Vxlan(v) => {
                if attrs.backend_type.as_deref() != Some("vxlan") {
                    return Vec::new();
                }
                let data = match attrs.vxlan_data() {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!("lease {key}: {e}; ignored");
                        return Vec::new();
                    }
                };
                let mut routes = vec![Route {
                    subnet: key.ipv4.cidr(),
                    endpoint: SocketAddr::new(IpAddr::V4(ip), v.port),
                    vtep_mac: Some(data.vtep_mac),
                }];
                if let Some(route) = self.vxlan_v6_route(own, key, attrs, v.port) {
                    routes.push(route);
                }
                routes
            }
            BackendConfig::HostGw => Vec::new(),
        }
    }
}

impl Manager {
    /// On a dual-stack vxlan network, the route to a lease's IPv6 subnet: to its PublicIPv6
    /// with the VTEP MAC of its BackendV6Data (flanneld's `flannel-v6.<VNI>`). A lease
    /// without them (a host that has no IPv6) gets no IPv6 route.
    fn vxlan_v6_route(
        &self,
        own: &SubnetKey,
        key: &SubnetKey,
        attrs: &LeaseAttrs,
        port: u16,
    ) -> Option<Route> {
        let (v6, net6) = (key.ipv6?, self.network.ipv6?);
        if Some(v6) == own.ipv6 || !net6.network.contains(v6.addr()) {
            return None;
        }
        let Some(ip6) = attrs.public_ipv6 else {
            tracing::warn!("lease {key}: no PublicIPv6; its IPv6 subnet is not routed");
            return None;
        };
        let ours = (Some(ip6) == self.public_ipv6).then_some("is ours");
        if let Some(why) = endpoint_problem(IpAddr::V6(ip6)).or(ours) {
            tracing::warn!("lease {key}: PublicIPv6 {ip6} {why}; its IPv6 subnet is not routed");
            return None;
        }
        match attrs.vxlan_v6_data() {
            Ok(data) => Some(Route {
                subnet: v6.cidr(),
                endpoint: SocketAddr::new(IpAddr::V6(ip6), port),
                vtep_mac: Some(data.vtep_mac),
            }),
            Err(e) => {
                tracing::warn!("lease {key}: {e}; its IPv6 subnet is not routed");
                None
            }
        }
    }
}

/// One log line per route a lease change adds or removes, with its fields.
fn log_edits(edits: &[RouteEdit]) {
    for edit in edits {
        match edit {
            RouteEdit::Insert(r) => tracing::info!(
                subnet = %r.subnet,
                peer = %r.endpoint,
                vtep_mac = %r.vtep_mac.map_or_else(|| "-".to_owned(), |m| m.to_string()),
                "lease route added"
            ),
            RouteEdit::Remove(subnet) => {
                tracing::info!(subnet = %subnet, "lease route removed")
            }
            _ => {}
        }
    }
}

/// Why one acquisition attempt failed.
enum AcquireError {
    OutOfSubnets,
    Etcd(EtcdError),
}

impl From<EtcdError> for AcquireError {
    fn from(e: EtcdError) -> Self {
        AcquireError::Etcd(e)
    }
}

/// A lease listed or watched under `prefix`, if its key and value parse (others are logged
/// and skipped, as flanneld does).
fn parse_lease(prefix: &str, kv: &Kv) -> Option<ListedLease> {
    let name = kv.key_str()?.strip_prefix(prefix)?;
    let Some(key) = SubnetKey::parse(name) else {
        tracing::warn!("{prefix}{name}: not a subnet key; ignored");
        return None;
    };
    match LeaseAttrs::parse(&kv.value) {
        Ok(attrs) => Some(ListedLease {
            key,
            attrs,
            reservation: kv.lease == 0,
        }),
        Err(e) => {
            tracing::warn!("{prefix}{name}: {e}; ignored");
            None
        }
    }
}

/// How often the kernel is asked again how the hosts of plain routes are reached.
const DIRECT_RECHECK: Duration = Duration::from_secs(3);

/// How the kernel reaches a remote host's PublicIP, by its answer to `ip route get`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    /// On this host's L2 segment: a unicast route out of our interface, without a gateway.
    Direct,
    /// Through a router.
    Gateway(IpAddr),
    /// Out of another interface (index), or of none.
    OtherInterface(Option<u32>),
    /// Over several next hops.
    Multipath,
    /// Not a unicast destination (local, broadcast, unreachable, blackhole).
    NotUnicast,
    /// No route at all (the kernel's error).
    NoRoute(String),
}

impl Reach {
    /// Decides from the kernel's answer whether a host is on the L2 segment of interface
    /// `iface` (flanneld's DirectRouting asks for one route without a gateway; weft also
    /// wants it out of the interface weft uses).
    fn of(lookup: &io::Result<RouteLookup>, iface: u32) -> Reach {
        match lookup {
            Err(e) => Reach::NoRoute(e.to_string()),
            Ok(l) if !l.unicast => Reach::NotUnicast,
            Ok(l) if l.multipath => Reach::Multipath,
            Ok(RouteLookup {
                gateway: Some(gw), ..
            }) => Reach::Gateway(*gw),
            Ok(l) if l.oif != Some(iface) => Reach::OtherInterface(l.oif),
            Ok(_) => Reach::Direct,
        }
    }
}

/// Why `reach` is not direct (through `iface`), in words for the log.
fn describe_reach(nl: &mut Netlink, reach: &Reach, iface: &str) -> String {
    match reach {
        Reach::Direct => "directly connected".into(),
        Reach::Gateway(gw) => format!("the kernel routes it via the gateway {gw}"),
        Reach::OtherInterface(Some(index)) => {
            let name = nl
                .link_by_index(*index)
                .ok()
                .flatten()
                .map_or_else(|| format!("#{index}"), |l| l.name);
            format!("the kernel routes it out of {name}, not {iface}")
        }
        Reach::OtherInterface(None) => "the kernel names no interface for it".into(),
        Reach::Multipath => "the kernel routes it over several next hops".into(),
        Reach::NotUnicast => "it is not a unicast destination".into(),
        Reach::NoRoute(e) => format!("the kernel has no route to it: {e}"),
    }
}

/// `direct_routing = true` of `weft run`: a route feed that, at start and every
/// [`DIRECT_RECHECK`], gives each IPv4 route of the running table whose IPv4 endpoint the
/// kernel reaches directly out of the underlay interface (the one holding `listen`) a
/// kernel route `<subnet> via <endpoint IP> dev <iface>`. It is more specific than the
/// device's network route, so that traffic skips weft; the table keeps the route (`weft
/// peer list` shows it), and a peer removed from it (SIGHUP, `weft peer del`) or no longer
/// on the segment loses its kernel route. The kernel routes go when the daemon stops.
pub(crate) fn static_peers_feed(listen: IpAddr) -> daemon::RouteFeed {
    Box::new(move |routes, stop| {
        let opened = Netlink::open().and_then(|mut nl| {
            let link = nl.link_with_address(listen)?;
            Ok((nl, link))
        });
        let (mut nl, iface) = match opened {
            Ok((nl, Some(link))) => (nl, link),
            Ok((_, None)) => {
                tracing::warn!("direct_routing: no interface holds {listen}; off");
                return;
            }
            Err(e) => {
                tracing::warn!("direct_routing: {e}; off");
                return;
            }
        };
        let kernel_route = |subnet: Cidr, gateway: Ipv4Addr| KernelRoute {
            dst: subnet.addr(),
            prefix_len: subnet.prefix_len(),
            oif: iface.index,
            gateway: Some(IpAddr::V4(gateway)),
            onlink: false,
        };
        let mut installed: BTreeMap<Cidr, Ipv4Addr> = BTreeMap::new();
        let mut tunnelled: BTreeMap<Cidr, Ipv4Addr> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            let mut wanted = BTreeMap::new();
            let mut through = BTreeMap::new();
            for r in routes.routes() {
                let (IpAddr::V4(_), IpAddr::V4(gw)) = (r.subnet.addr(), r.endpoint.ip()) else {
                    continue;
                };
                let reach = Reach::of(&nl.route_get(IpAddr::V4(gw)), iface.index);
                if reach == Reach::Direct {
                    wanted.insert(r.subnet, gw);
                } else {
                    if tunnelled.get(&r.subnet) != Some(&gw) {
                        let why = describe_reach(&mut nl, &reach, &iface.name);
                        tracing::info!(
                            "[[peer]] {}: {gw} is not on the L2 segment of {} ({why}); \
                             through weft",
                            r.subnet,
                            iface.name
                        );
                    }
                    through.insert(r.subnet, gw);
                }
            }
            tunnelled = through;
            for (subnet, gw) in &installed {
                if wanted.get(subnet) != Some(gw) {
                    let _ = nl.del_route(&kernel_route(*subnet, *gw));
                    tracing::info!("[[peer]] {subnet}: removed the route via {gw}");
                }
            }
            let mut now = BTreeMap::new();
            for (subnet, gw) in wanted {
                match nl.add_route(&kernel_route(subnet, gw)) {
                    Ok(()) => {
                        if installed.get(&subnet) != Some(&gw) {
                            tracing::info!(
                                "[[peer]] {subnet}: route via {gw} dev {} (on this L2 segment)",
                                iface.name
                            );
                        }
                        now.insert(subnet, gw);
                    }
                    Err(e) => {
                        tracing::warn!("[[peer]] {subnet}: route via {gw} dev {}: {e}", iface.name)
                    }
                }
            }
            installed = now;
            sleep_unless(&stop, DIRECT_RECHECK);
        }
        for (subnet, gw) in installed {
            let _ = nl.del_route(&kernel_route(subnet, gw));
        }
    })
}

/// Which plain kernel routes a [`DirectRoutes`] programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirectMode {
    /// flanneld's host-gw: every lease gets `<subnet> via <PublicIP>`, or nothing.
    HostGw,
    /// vxlan `DirectRouting`: a lease on the L2 segment gets `<subnet> via <PublicIP>`, the
    /// others go through the VXLAN device.
    DirectRouting,
}

/// A lease that may be routed by a plain kernel route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirectPeer {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    /// Whether its kernel route is installed.
    direct: bool,
}

/// The plain kernel routes `<subnet> via <PublicIP> dev <iface>` of host-gw and vxlan
/// DirectRouting, programmed through rtnetlink, one per remote lease on this host's L2
/// segment.
struct DirectRoutes {
    nl: Netlink,
    mode: DirectMode,
    iface: String,
    index: u32,
    /// Every lease that had a target, by key.
    peers: BTreeMap<SubnetKey, DirectPeer>,
    /// When the kernel was last asked again.
    checked: Instant,
}

impl DirectRoutes {
    /// Plain routes out of `iface` (in this thread's network namespace).
    fn open(mode: DirectMode, iface: &Interface) -> io::Result<DirectRoutes> {
        let mut nl = Netlink::open()?;
        let link = nl
            .link_by_name(&iface.name)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the interface is gone"))?;
        Ok(DirectRoutes {
            nl,
            mode,
            iface: iface.name.clone(),
            index: link.index,
            peers: BTreeMap::new(),
            checked: Instant::now(),
        })
    }

    fn kernel_route(&self, subnet: Ipv4Net, gateway: Ipv4Addr) -> KernelRoute {
        KernelRoute {
            // The kernel wants no host bits (flannel keeps them in a key).
            dst: IpAddr::V4(subnet.network().addr()),
            prefix_len: subnet.prefix_len(),
            oif: self.index,
            gateway: Some(IpAddr::V4(gateway)),
            onlink: false,
        }
    }

    fn reach(&mut self, gateway: Ipv4Addr) -> Reach {
        Reach::of(&self.nl.route_get(IpAddr::V4(gateway)), self.index)
    }

    /// Why `reach` is not direct, in words for the log.
    fn describe(&mut self, reach: &Reach) -> String {
        describe_reach(&mut self.nl, reach, &self.iface)
    }

    fn add(&mut self, key: &SubnetKey, subnet: Ipv4Net, gateway: Ipv4Addr) -> bool {
        let route = self.kernel_route(subnet, gateway);
        match self.nl.add_route(&route) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(
                    "lease {key}: route {subnet} via {gateway} dev {}: {e}",
                    self.iface
                );
                false
            }
        }
    }

    fn delete(&mut self, key: &SubnetKey, peer: &DirectPeer) {
        let route = self.kernel_route(peer.subnet, peer.gateway);
        match self.nl.del_route(&route) {
            Ok(()) => tracing::info!(
                "lease {key}: removed the route {} via {} dev {}",
                peer.subnet,
                peer.gateway,
                self.iface
            ),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) => {}
            Err(e) => tracing::error!(
                "lease {key}: removing the route {} via {} dev {}: {e}",
                peer.subnet,
                peer.gateway,
                self.iface
            ),
        }
    }

    /// Places lease `key` with `target` (its subnet and PublicIP; `None`: no plain route
    /// wanted, e.g. the lease is gone): a kernel route if the kernel reaches the PublicIP
    /// directly out of our interface, else none (host-gw refuses the lease with one log
    /// line; DirectRouting leaves it to the data plane). Returns whether the lease is on
    /// a plain route now.
    fn place(&mut self, key: SubnetKey, target: Option<(Ipv4Net, Ipv4Addr)>) -> bool {
        let previous = self.peers.remove(&key);
        let Some((subnet, gateway)) = target else {
            if let Some(p) = previous.filter(|p| p.direct) {
                self.delete(&key, &p);
            }
            return false;
        };
        let reach = self.reach(gateway);
        let same = previous.filter(|p| p.subnet == subnet && p.gateway == gateway);
        if let Some(p) =
            previous.filter(|p| p.direct && (reach != Reach::Direct || Some(*p) != same))
        {
            self.delete(&key, &p);
        }
        let direct = reach == Reach::Direct && self.add(&key, subnet, gateway);
        if direct && !same.is_some_and(|p| p.direct) {
            tracing::info!(
                "lease {key}: route {subnet} via {gateway} dev {} (on this L2 segment)",
                self.iface
            );
        } else if !direct && same.is_none_or(|p| p.direct) && reach != Reach::Direct {
            let why = self.describe(&reach);
            match self.mode {
                DirectMode::HostGw => tracing::warn!(
                    "lease {key}: refused: PublicIP {gateway} is not on the L2 segment of {} \
                     ({why}); host-gw routes {subnet} only to a host on it; no route",
                    self.iface
                ),
                DirectMode::DirectRouting => tracing::info!(
                    "lease {key}: PublicIP {gateway} is not on the L2 segment of {} ({why}); \
                     {subnet} goes through the VXLAN device",
                    self.iface
                ),
            }
        }
        self.peers.insert(
            key,
            DirectPeer {
                subnet,
                gateway,
                direct,
            },
        );
        direct
    }

    /// At most every [`DIRECT_RECHECK`]: the leases whose reachability changed (to be
    /// placed again); plain routes that stay are written again (`ip route replace`), which
    /// puts back one someone deleted.
    fn recheck(&mut self) -> Vec<SubnetKey> {
        if self.checked.elapsed() < DIRECT_RECHECK {
            return Vec::new();
        }
        self.checked = Instant::now();
        let peers: Vec<(SubnetKey, DirectPeer)> =
            self.peers.iter().map(|(k, p)| (*k, *p)).collect();
        let mut switched = Vec::new();
        for (key, peer) in peers {
            let direct = self.reach(peer.gateway) == Reach::Direct;
            if direct != peer.direct {
                switched.push(key);
            } else if direct {
                let route = self.kernel_route(peer.subnet, peer.gateway);
                if let Err(e) = self.nl.add_route(&route) {
                    tracing::warn!(
                        "lease {key}: route {} via {} dev {}: {e}",
                        peer.subnet,
                        peer.gateway,
                        self.iface
                    );
                }
            }
        }
        switched
    }
}

/// The route feed: keeps the routing table in step with `<prefix>/subnets/`, renews and
/// defends our own lease.
struct Follower {
    manager: Manager,
    own: OwnLease,
    renew_margin: Duration,
    /// What the table holds, by subnet key: the lease values last applied.
    known: BTreeMap<SubnetKey, LeaseAttrs>,
    /// Set once the first listing of the leases is in the table (readiness).
    synced: Arc<AtomicBool>,
    /// The plain kernel routes of host-gw and vxlan DirectRouting (`None` otherwise).
    direct: Option<DirectRoutes>,
}

/// What the watch thread reports.
enum Watched {
    Batch(i64, Vec<WatchEvent>),
    Failed(EtcdError),
}

impl Follower {
    fn run(mut self, routes: RouteTable, stop: Arc<AtomicBool>) {
        let mut backoff = Backoff::new();
        let mut revision = loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match self.resync(&routes) {
                Ok(rev) => {
                    self.synced.store(true, Ordering::SeqCst);
                    break rev;
                }
                Err(e) => {
                    tracing::warn!("listing the leases: {e}; retrying");
                    backoff.wait(&stop);
                }
            }
        };
        let mut last = String::new();
        while !stop.load(Ordering::SeqCst) {
            let (tx, rx) = mpsc::channel();
            let watch = match self
                .manager
                .client
                .watch_prefix(self.manager.subnets_prefix(), revision + 1)
            {
                Ok(w) => w,
                Err(e) => {
                    log_once(&mut last, format!("watching the leases: {e}; retrying"));
                    self.maintain_own();
                    backoff.wait(&stop);
                    if e.is_compacted() {
                        if let Ok(rev) = self.resync(&routes) {
                            revision = rev;
                        }
                    }
                    continue;
                }
            };
            if !last.is_empty() {
                tracing::info!("watching the leases again from revision {}", revision + 1);
                last.clear();
            }
            backoff.reset();
            let spawned = std::thread::Builder::new()
                .name("weft-etcd-watch".into())
                .spawn(move || {
                    let mut watch = watch;
                    loop {
                        let msg = match watch.recv() {
                            Ok(batch) => Watched::Batch(batch.revision, batch.events),
                            Err(e) => Watched::Failed(e),
                        };
                        let failed = matches!(msg, Watched::Failed(_));
                        if tx.send(msg).is_err() || failed {
                            return;
                        }
                    }
                });
            if spawned.is_err() {
                backoff.wait(&stop);
                continue;
            }
            // Until the watch fails or the daemon stops.
            loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                self.maintain_own();
                self.recheck_direct(&routes);
                match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(Watched::Batch(rev, events)) => {
                        self.apply_events(&routes, &events, &stop);
                        revision = revision.max(rev);
                    }
                    Ok(Watched::Failed(e)) if e.is_compacted() => {
                        tracing::warn!("{e}: listing the leases again");
                        match self.resync(&routes) {
                            Ok(rev) => revision = rev,
                            Err(e) => tracing::warn!("listing the leases: {e}"),
                        }
                        break;
                    }
                    Ok(Watched::Failed(e)) => {
                        log_once(&mut last, format!("the lease watch ended: {e}; retrying"));
                        backoff.wait(&stop);
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        }
    }

    /// Lists every lease and applies the difference from what is known (added, changed,
    /// gone) as one batch; returns the listing's revision.
    fn resync(&mut self, routes: &RouteTable) -> Result<i64, EtcdError> {
        let (leases, revision) = self.manager.list()?;
        let listed: BTreeMap<SubnetKey, LeaseAttrs> =
            leases.into_iter().map(|(l, _)| (l.key, l.attrs)).collect();
        let mut edits = Vec::new();
        let known = std::mem::take(&mut self.known);
        for (key, old) in &known {
            if !listed.contains_key(key) {
                self.lease_changed(key, Some(old), None, &mut edits);
            }
        }
        for (key, attrs) in &listed {
            let old = known.get(key);
            if old != Some(attrs) {
                self.lease_changed(key, old, Some(attrs), &mut edits);
            }
        }
        let n = edits.len();
        log_edits(&edits);
        if let Err(e) = routes.apply(edits) {
            tracing::error!("applying {n} lease change(s): {e}");
        } else if n > 0 {
            tracing::info!("{n} route change(s) from {} lease(s)", listed.len());
        }
        self.known = listed;
        Ok(revision)
    }

    /// Applies one watch batch as one batch of route edits; takes our own lease back if it
    /// was deleted.
    fn apply_events(&mut self, routes: &RouteTable, events: &[WatchEvent], stop: &AtomicBool) {
        let prefix = self.manager.subnets_prefix();
        let mut edits = Vec::new();
        let mut own_deleted = false;
        for event in events {
            match event {
                WatchEvent::Put(kv) => {
                    let Some(lease) = parse_lease(&prefix, kv) else {
                        continue;
                    };
                    if lease.key == self.own.key {
                        continue;
                    }
                    let old = self.known.insert(lease.key, lease.attrs.clone());
                    if old.as_ref() == Some(&lease.attrs) {
                        continue;
                    }
                    self.lease_changed(&lease.key, old.as_ref(), Some(&lease.attrs), &mut edits);
                }
                WatchEvent::Delete { key, .. } => {
                    let Some(name) = std::str::from_utf8(key)
                        .ok()
                        .and_then(|k| k.strip_prefix(&prefix))
                    else {
                        continue;
                    };
                    let Some(key) = SubnetKey::parse(name) else {
                        continue;
                    };
                    if key == self.own.key {
                        own_deleted = true;
                        continue;
                    }
                    if let Some(old) = self.known.remove(&key) {
                        self.lease_changed(&key, Some(&old), None, &mut edits);
                    }
                }
            }
        }
        let n = edits.len();
        if n > 0 {
            log_edits(&edits);
            match routes.apply(edits) {
                Ok(_) => tracing::info!("{n} route change(s) from the lease watch"),
                Err(e) => tracing::error!("applying {n} lease change(s): {e}"),
            }
        }
        if own_deleted {
            tracing::warn!("our lease {} was deleted; taking it back", self.own.key);
            self.take_back(stop);
        }
    }

    /// The route edits (into `edits`) and kernel routes for one lease going from `old` to
    /// `new` (`None`: absent): the data-plane routes of `old` removed, then `new` placed
    /// either on a plain kernel route (host-gw, DirectRouting to a host on this L2
    /// segment) or on data-plane routes.
    fn lease_changed(
        &mut self,
        key: &SubnetKey,
        old: Option<&LeaseAttrs>,
        new: Option<&LeaseAttrs>,
        edits: &mut Vec<RouteEdit>,
    ) {
        let own = self.own.key;
        if let Some(old) = old {
            for route in self.manager.route_for(&own, key, old) {
                edits.push(RouteEdit::Remove(route.subnet));
            }
        }
        let mut routes = new.map_or_else(Vec::new, |a| self.manager.route_for(&own, key, a));
        if let Some(direct) = &mut self.direct {
            let target = new.and_then(|a| self.manager.direct_target(&own, key, a, &routes));
            if direct.place(*key, target) {
                routes.retain(|r| r.subnet != key.ipv4.cidr());
            }
        }
        edits.extend(routes.into_iter().map(RouteEdit::Insert));
    }

    /// Every [`DIRECT_RECHECK`]: asks the kernel again how each host of a plain route (or
    /// candidate for one) is reached, moves those whose answer changed between a plain
    /// route and the data plane, and puts back plain routes someone deleted.
    fn recheck_direct(&mut self, routes: &RouteTable) {
        let Some(direct) = &mut self.direct else {
            return;
        };
        let switched = direct.recheck();
        if switched.is_empty() {
            return;
        }
        let mut edits = Vec::new();
        for key in switched {
            if let Some(attrs) = self.known.get(&key).cloned() {
                self.lease_changed(&key, Some(&attrs), Some(&attrs), &mut edits);
            }
        }
        let n = edits.len();
        if n > 0 {
            log_edits(&edits);
            match routes.apply(edits) {
                Ok(_) => tracing::info!("{n} route change(s) from a change of reachability"),
                Err(e) => tracing::error!("applying {n} reachability change(s): {e}"),
            }
        }
    }

    /// Re-creates our deleted lease (same subnet and value) if nobody else took it.
    fn take_back(&mut self, stop: &AtomicBool) {
        let mut backoff = Backoff::new();
        while !stop.load(Ordering::SeqCst) {
            let attempt = self.manager.create_own(self.own.key);
            match attempt {
                Ok(Some(own)) => {
                    tracing::info!("took our lease {} back", own.key);
                    self.own = own;
                    return;
                }
                Ok(None) => {
                    tracing::error!(
                        "our subnet {} was taken by another host; keeping to it until restart",
                        self.own.key
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!("taking our lease back: {e}; retrying");
                    backoff.wait(stop);
                }
            }
        }
    }

    /// Renews our lease when it is within the renewal margin of expiring (a new 24 h lease
    /// and a put, as flanneld); retries a failure on the next call.
    fn maintain_own(&mut self) {
        let Some(expires) = self.own.expires else {
            return;
        };
        if Instant::now() + self.renew_margin < expires {
            return;
        }
        match self.manager.write_own(self.own.key, false) {
            Ok(own) => {
                tracing::info!("renewed our lease {}", own.key);
                self.own = own;
            }
            Err(e) => {
                tracing::warn!("renewing our lease {}: {e}; retrying", self.own.key);
                // Do not hammer etcd: try again in a minute, as flanneld does (the next
                // attempt comes when `now + margin` reaches this).
                self.own.expires =
                    Some(Instant::now() + self.renew_margin + Duration::from_secs(60));
            }
        }
    }
}

/// Readiness for `/readyz`: set once `subnet.env` is written.
type Ready = Arc<AtomicBool>;

/// Answers `GET /healthz` (always 200 "flanneld is running") and `GET /readyz` (503 "flanneld
/// is not ready yet" until ready, then 200 "flanneld is ready") as flanneld does, one short
/// connection at a time with a deadline.
fn serve_health(addr: SocketAddr, ready: Ready) -> Result<(), FlannelError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| FlannelError::Healthz { addr, source })?;
    std::thread::Builder::new()
        .name("weft-healthz".into())
        .spawn(move || {
            // This thread only answers on a bound socket: it needs no capability at all.
            crate::control::provision::drop_thread_capabilities();
            for stream in listener.incoming().flatten() {
                let _ = answer_health(stream, &ready);
            }
        })
        .map_err(|source| FlannelError::Healthz { addr, source })?;
    Ok(())
}

fn answer_health(stream: TcpStream, ready: &AtomicBool) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    io::BufReader::new((&stream).take(4096)).read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/healthz" => ("200 OK", "flanneld is running"),
        "/readyz" if ready.load(Ordering::SeqCst) => ("200 OK", "flanneld is ready"),
        "/readyz" => ("503 Service Unavailable", "flanneld is not ready yet"),
        _ => ("404 Not Found", "not found"),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(out.as_bytes())
}

/// The `weft run` configuration for our lease: the device, the listening address, the
/// backend; no peers (the route feed adds them). `None` for host-gw, which has no data
/// plane.
fn daemon_config(
    prefix: &str,
    network: &NetworkConfig,
    iface: &Interface,
    listen6: Option<Ipv6Addr>,
    own: &OwnLease,
    vtep_mac: Option<EthernetAddress>,
    options: &FlannelOptions,
) -> Result<Option<Config>, DaemonError> {
    let mut text = String::new();
    let address = own.key.ipv4.addr();
    let (backend, device, port) = match network.backend {
        BackendConfig::Udp { port } => ("udp", "flannel0".to_owned(), port),
        BackendConfig::Vxlan(v) => ("vxlan", format!("flannel.{}", v.vni), v.port),
        BackendConfig::HostGw => return Ok(None),
    };
    let _ = writeln!(text, "backend = \"{backend}\"");
    let _ = writeln!(text, "network = \"{}\"", network.network);
    if let Some(net6) = network.ipv6 {
        let _ = writeln!(text, "network6 = \"{}\"", net6.network.cidr());
    }
    if let BackendConfig::Vxlan(v) = network.backend {
        if let Some(mtu) = v.mtu {
            let _ = writeln!(text, "underlay_mtu = {mtu}");
        }
    }
    let _ = writeln!(
        text,
        "\n[device]\nname = \"{device}\"\naddress = \"{address}\""
    );
    if let Some(v6) = own.key.ipv6 {
        let _ = writeln!(text, "address6 = \"{}\"", v6.addr());
    }
    let _ = writeln!(
        text,
        "\n[listen]\naddress = \"{}\"\nport = {port}",
        iface.addr
    );
    if let Some(addr6) = listen6 {
        let _ = writeln!(text, "address6 = \"{addr6}\"");
    }
    if let (BackendConfig::Vxlan(v), Some(mac)) = (network.backend, vtep_mac) {
        let _ = writeln!(
            text,
            "\n[vxlan]\nvni = {}\nmode = \"l3\"\nvtep_mac = \"{mac}\"",
            v.vni
        );
    }
    if let Some(w) = options.workers {
        let _ = writeln!(text, "\n[engine]\nworkers = {w}");
    }
    if let Some(addr) = options.metrics {
        let _ = writeln!(text, "\n[metrics]\nlisten = \"{addr}\"");
    }
    let path = PathBuf::from(format!("etcd:{prefix}/config"));
    let mut config = Config::parse(&path, &text)?;
    if let Some((rules, default)) = &options.acl {
        config.acl = rules.clone();
        config.acl_default = *default;
    }
    Ok(Some(config))
}

/// [`SUBNET_TTL`], unless [`TEST_LEASE_TTL`] says otherwise.
fn lease_ttl() -> Duration {
    match std::env::var(TEST_LEASE_TTL)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(secs) if secs > 0 => {
            tracing::warn!("{TEST_LEASE_TTL} is set: leases last {secs} s instead of 24 h");
            Duration::from_secs(secs)
        }
        _ => SUBNET_TTL,
    }
}

/// Runs `weft flannel` until SIGINT/SIGTERM.
pub fn run(options: FlannelOptions) -> Result<(), FlannelError> {
    // SIGINT/SIGTERM before the daemon is up (waiting for the config, for etcd, for a
    // lease) stop the waits and end cleanly, as flanneld's handler does; once the daemon
    // runs, its own handler takes over.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|source| FlannelError::Daemon(DaemonError::Signals(source)))?;
    }
    let ready: Ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = options.healthz {
        serve_health(addr, ready.clone())?;
    }
    let iface = choose_interface(&options)?;
    let public_ip = options.public_ip.unwrap_or(iface.addr);
    tracing::info!(
        "using interface {} ({}, mtu {}), public IP {public_ip}",
        iface.name,
        iface.addr,
        iface.mtu
    );
    let client = Arc::new(Client::new(options.etcd.clone())?);
    let prefix = options.prefix.trim_end_matches('/').to_owned();
    let Some(network) = wait_for_config(&client, &prefix, &stop) else {
        tracing::info!("stopped while waiting for the network config");
        return Ok(());
    };
    if network.backend == BackendConfig::HostGw && public_ip != iface.addr {
        // flanneld's host-gw refuses it too: the other hosts route to our PublicIP as a
        // next hop on their L2 segment.
        return Err(FlannelError::Flag {
            flag: "--public-ip",
            value: public_ip.to_string(),
            reason: format!(
                "differs from {}'s address {}: the host-gw backend ({prefix}/config) needs \
                 the other hosts to reach this host directly at its interface address (no NAT)",
                iface.name, iface.addr
            ),
        });
    }
    // A dual-stack vxlan network has an IPv6 VTEP too, on the interface's IPv6 address.
    let vxlan_v6 = network.ipv6.is_some() && matches!(network.backend, BackendConfig::Vxlan(_));
    let underlay6 = if vxlan_v6 {
        let Some(addr6) = iface.addr6 else {
            return Err(FlannelError::Flag {
                flag: "--iface",
                value: iface.name.clone(),
                reason: format!(
                    "has no global IPv6 address, which {prefix}/config (EnableIPv6 with the \
                     vxlan backend) needs for the IPv6 VTEP"
                ),
            });
        };
        let public = options.public_ipv6.unwrap_or(addr6);
        tracing::info!("IPv6 VTEP on {addr6}, public IPv6 {public}");
        Some((addr6, public))
    } else {
        None
    };
    // A vxlan host keeps its VTEP MAC: the one in our old lease, else the state file.
    let mac_file = options.state_dir.join("vtep-mac");
    let vtep_mac = match network.backend {
        BackendConfig::Udp { .. } | BackendConfig::HostGw => None,
        BackendConfig::Vxlan(_) => Some(previous_mac(&client, &prefix, public_ip, &mac_file)?),
    };
    // One device carries both families, so the IPv6 VTEP has the same MAC (flanneld's
    // flannel-v6.<VNI> has a MAC of its own; peers only need it to be the one published).
    let attrs = match (network.backend, vtep_mac, underlay6) {
        (BackendConfig::Vxlan(v), Some(mac), Some((_, public6))) => {
            LeaseAttrs::vxlan_dual_stack(public_ip, public6, v.vni, mac, mac)
        }
        (BackendConfig::Vxlan(v), Some(mac), None) => LeaseAttrs::vxlan(public_ip, v.vni, mac),
        (BackendConfig::HostGw, _, _) => LeaseAttrs::host_gw(public_ip),
        _ => LeaseAttrs::udp(public_ip),
    };
    let manager = Manager {
        client,
        prefix: prefix.clone(),
        network: network.clone(),
        public_ip,
        public_ipv6: underlay6.map(|(_, public)| public),
        attrs,
        ttl: lease_ttl(),
    };
    let previous = subnet_env::read_previous(&options.subnet_file);
    let Some(own) = manager.acquire(previous, &stop)? else {
        tracing::info!("stopped before a subnet was leased");
        return Ok(());
    };
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    // The device carries both families: over a dual-stack underlay its packets must fit
    // the IPv6 one's 20 more bytes of headers.
    let overhead = match network.backend {
        // host-gw: no encapsulation, FLANNEL_MTU is the interface's MTU (as flanneld).
        BackendConfig::HostGw => 0,
        BackendConfig::Udp { .. } => 28,
        BackendConfig::Vxlan(_) if underlay6.is_some() => 70,
        BackendConfig::Vxlan(_) => 50,
    };
    let underlay_mtu = match network.backend {
        BackendConfig::Vxlan(v) => v.mtu.unwrap_or(iface.mtu),
        BackendConfig::Udp { .. } | BackendConfig::HostGw => iface.mtu,
    };
    SubnetEnv {
        network: network.network,
        subnet: own.key.ipv4,
        ipv6: network
            .ipv6
            .zip(own.key.ipv6)
            .map(|(net6, v6)| (net6.network, v6)),
        mtu: underlay_mtu.saturating_sub(overhead),
        ipmasq: false,
    }
    .write_atomic(&options.subnet_file)?;
    tracing::info!("wrote {}", options.subnet_file.display());
    let config = daemon_config(
        &prefix,
        &network,
        &iface,
        underlay6.map(|(addr6, _)| addr6),
        &own,
        vtep_mac,
        &options,
    )?;
    ready.store(true, Ordering::SeqCst);
    let mode = match network.backend {
        BackendConfig::HostGw => Some(DirectMode::HostGw),
        BackendConfig::Vxlan(v) if v.direct_routing => Some(DirectMode::DirectRouting),
        _ => None,
    };
    let direct = match mode {
        Some(mode) => Some(
            DirectRoutes::open(mode, &iface).map_err(|e| FlannelError::Flag {
                flag: "--iface",
                value: iface.name.clone(),
                reason: format!("cannot route through it: {e}"),
            })?,
        ),
        None => None,
    };
    let synced = Arc::new(AtomicBool::new(false));
    let follower = Follower {
        manager,
        own,
        renew_margin: options.renew_margin,
        known: BTreeMap::new(),
        synced: synced.clone(),
        direct,
    };
    let Some(config) = config else {
        // host-gw: no device, no data plane; the feed programs kernel routes until
        // SIGINT/SIGTERM.
        if options.workers.is_some() || options.metrics.is_some() || options.acl.is_some() {
            tracing::warn!(
                "host-gw has no data plane: --workers, --metrics-listen and --acl-file are \
                 not used"
            );
        }
        tracing::info!(
            "host-gw: no tunnel device; every other host's subnet is routed via its PublicIP \
             dev {}",
            iface.name
        );
        // Routes need CAP_NET_ADMIN; etcd and the health endpoint need nothing.
        crate::control::provision::drop_capabilities();
        follower.run(RouteTable::default(), stop);
        tracing::info!("stopped");
        return Ok(());
    };
    daemon::run_config(
        config,
        RunOptions {
            reload_on_sighup: false,
            feed: Some(Box::new(move |routes, stop| follower.run(routes, stop))),
            table_ready: Some(synced),
            acl_file: options.acl_file.clone(),
        },
    )?;
    Ok(())
}

/// The VTEP MAC of our previous lease (the one with our public IP), else the one kept in
/// `file` (generated there the first time).
fn previous_mac(
    client: &Client,
    prefix: &str,
    public_ip: Ipv4Addr,
    file: &Path,
) -> Result<EthernetAddress, FlannelError> {
    let subnets = format!("{prefix}/subnets/");
    if let Ok(listing) = client.range_prefix(&subnets) {
        for kv in &listing.kvs {
            if let Some(lease) = parse_lease(&subnets, kv) {
                if lease.attrs.public_ip == public_ip {
                    if let Ok(data) = lease.attrs.vxlan_data() {
                        if let Err(e) = daemon::store_vtep_mac(file, data.vtep_mac) {
                            tracing::warn!("{}: cannot keep the VTEP MAC: {e}", file.display());
                        }
                        return Ok(data.vtep_mac);
                    }
                }
            }
        }
    }
    daemon::vtep_mac(None, file).map_err(|source| FlannelError::State {
        path: file.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manager for host 198.18.0.1 (fd00:198:18::1) on the network `config`; its etcd
    /// client is never used.
    fn manager(config: &str) -> Manager {
        let network = NetworkConfig::parse(config.as_bytes()).unwrap();
        Manager {
            client: Arc::new(Client::new(EtcdConfig::new(["http://127.0.0.1:9"])).unwrap()),
            prefix: "/coreos.com/network".into(),
            public_ip: Ipv4Addr::new(198, 18, 0, 1),
            public_ipv6: Some("fd00:198:18::1".parse().unwrap()),
            attrs: LeaseAttrs::udp(Ipv4Addr::new(198, 18, 0, 1)),
            ttl: SUBNET_TTL,
            network,
        }
    }

    fn routes(m: &Manager, key: &str, value: &str) -> Vec<String> {
        let own = SubnetKey::parse("100.96.1.0-24&fd00:100:96:1::-64").unwrap();
        let key = SubnetKey::parse(key).unwrap();
        let attrs = LeaseAttrs::parse(value.as_bytes()).unwrap();
        m.route_for(&own, &key, &attrs)
            .iter()
            .map(|r| match r.vtep_mac {
                Some(mac) => format!("{} {} {mac}", r.subnet, r.endpoint),
                None => format!("{} {}", r.subnet, r.endpoint),
            })
            .collect()
    }

    const VXLAN_DS: &str = r#"{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:100:96::/48","Backend":{"Type":"vxlan"}}"#;

    #[test]
    fn a_dual_stack_vxlan_lease_is_routed_over_both_underlays() {
        let m = manager(VXLAN_DS);
        let value = r#"{"PublicIP":"198.18.0.2","PublicIPv6":"fd00:198:18::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:02:00"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:02:06"}}"#;
        assert_eq!(
            routes(&m, "100.96.2.0-24&fd00:100:96:2::-64", value),
            [
                "100.96.2.0/24 198.18.0.2:8472 02:00:00:00:02:00",
                "fd00:100:96:2::/64 [fd00:198:18::2]:8472 02:00:00:00:02:06",
            ]
        );
        // Our own lease is never a route.
        assert!(routes(&m, "100.96.1.0-24&fd00:100:96:1::-64", value).is_empty());
    }

    #[test]
    fn a_dual_stack_vxlan_lease_without_an_ipv6_vtep_gets_its_ipv4_route_only() {
        let m = manager(VXLAN_DS);
        let v4_only = r#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:02:00"}}"#;
        let expected = ["100.96.2.0/24 198.18.0.2:8472 02:00:00:00:02:00"];
        assert_eq!(
            routes(&m, "100.96.2.0-24&fd00:100:96:2::-64", v4_only),
            expected
        );
        // A PublicIPv6 without BackendV6Data, or one that is ours, is not routed either.
        let no_data = r#"{"PublicIP":"198.18.0.2","PublicIPv6":"fd00:198:18::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:02:00"}}"#;
        assert_eq!(
            routes(&m, "100.96.2.0-24&fd00:100:96:2::-64", no_data),
            expected
        );
        let ours = r#"{"PublicIP":"198.18.0.2","PublicIPv6":"fd00:198:18::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:02:00"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:02:06"}}"#;
        assert_eq!(
            routes(&m, "100.96.2.0-24&fd00:100:96:2::-64", ours),
            expected
        );
        // An IPv4-only key on the dual-stack network: the IPv4 route.
        assert_eq!(routes(&m, "100.96.2.0-24", v4_only), expected);
    }

    #[test]
    fn a_dual_stack_udp_lease_carries_ipv6_to_the_ipv4_endpoint() {
        let m = manager(
            r#"{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:100:96::/48"}"#,
        );
        assert_eq!(
            routes(
                &m,
                "100.96.2.0-24&fd00:100:96:2::-64",
                r#"{"PublicIP":"198.18.0.2","PublicIPv6":null}"#
            ),
            [
                "100.96.2.0/24 198.18.0.2:8285",
                "fd00:100:96:2::/64 198.18.0.2:8285"
            ]
        );
    }

    fn lookup(
        oif: Option<u32>,
        gateway: Option<&str>,
        unicast: bool,
        multipath: bool,
    ) -> io::Result<RouteLookup> {
        Ok(RouteLookup {
            oif,
            gateway: gateway.map(|g| g.parse().unwrap()),
            unicast,
            multipath,
        })
    }

    #[test]
    fn reach_follows_the_kernels_answer() {
        assert_eq!(
            Reach::of(&lookup(Some(2), None, true, false), 2),
            Reach::Direct
        );
        assert_eq!(
            Reach::of(&lookup(Some(2), Some("198.18.0.254"), true, false), 2),
            Reach::Gateway("198.18.0.254".parse().unwrap())
        );
        assert_eq!(
            Reach::of(&lookup(Some(3), None, true, false), 2),
            Reach::OtherInterface(Some(3))
        );
        assert_eq!(
            Reach::of(&lookup(None, None, true, false), 2),
            Reach::OtherInterface(None)
        );
        assert_eq!(
            Reach::of(&lookup(Some(1), None, false, false), 2),
            Reach::NotUnicast
        );
        assert_eq!(
            Reach::of(&lookup(Some(2), None, true, true), 2),
            Reach::Multipath
        );
        let unreachable = Err(io::Error::from_raw_os_error(libc::ENETUNREACH));
        assert!(matches!(Reach::of(&unreachable, 2), Reach::NoRoute(_)));
    }

    fn target(m: &Manager, key: &str, value: &str) -> Option<String> {
        let own = SubnetKey::parse("100.96.1.0-24").unwrap();
        let key = SubnetKey::parse(key).unwrap();
        let attrs = LeaseAttrs::parse(value.as_bytes()).unwrap();
        let engine = m.route_for(&own, &key, &attrs);
        m.direct_target(&own, &key, &attrs, &engine)
            .map(|(subnet, gw)| format!("{subnet} via {gw}"))
    }

    const HOST_GW: &str = r#"{"Network":"100.96.0.0/16","Backend":{"Type":"host-gw"}}"#;
    const HOST_GW_LEASE: &str =
        r#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"host-gw"}"#;
    const VXLAN_LEASE: &str = r#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:02:00"}}"#;

    #[test]
    fn host_gw_leases_get_kernel_routes_only() {
        let m = manager(HOST_GW);
        // No data plane: never an engine route.
        assert!(routes(&m, "100.96.2.0-24", HOST_GW_LEASE).is_empty());
        assert_eq!(
            target(&m, "100.96.2.0-24", HOST_GW_LEASE).as_deref(),
            Some("100.96.2.0/24 via 198.18.0.2")
        );
        // flanneld's host-gw skips leases of other backends, our own, ours by PublicIP,
        // and subnets outside the network.
        assert_eq!(target(&m, "100.96.2.0-24", VXLAN_LEASE), None);
        assert_eq!(
            target(
                &m,
                "100.96.2.0-24",
                r#"{"PublicIP":"198.18.0.2","PublicIPv6":null}"#
            ),
            None
        );
        assert_eq!(target(&m, "100.96.1.0-24", HOST_GW_LEASE), None);
        let ours = r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}"#;
        assert_eq!(target(&m, "100.96.2.0-24", ours), None);
        assert_eq!(target(&m, "10.5.2.0-24", HOST_GW_LEASE), None);
    }

    #[test]
    fn direct_routing_targets_the_vxlan_leases_it_would_route() {
        let direct = manager(
            r#"{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#,
        );
        assert_eq!(
            target(&direct, "100.96.2.0-24", VXLAN_LEASE).as_deref(),
            Some("100.96.2.0/24 via 198.18.0.2")
        );
        // A lease vxlan would not route is no candidate either.
        assert_eq!(target(&direct, "100.96.2.0-24", HOST_GW_LEASE), None);
        // Without DirectRouting: the data plane only.
        let plain = manager(r#"{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan"}}"#);
        assert_eq!(target(&plain, "100.96.2.0-24", VXLAN_LEASE), None);
        assert_eq!(
            routes(&plain, "100.96.2.0-24", VXLAN_LEASE),
            ["100.96.2.0/24 198.18.0.2:8472 02:00:00:00:02:00"]
        );
    }

    #[test]
    fn direct_routes_follow_the_kernels_reachability() {
        use crate::sys::test_support::{in_private_netns, ip, skip_unless_root};
        skip_unless_root!();
        in_private_netns(|| {
            ip(&[
                "link", "add", "wtd0", "type", "veth", "peer", "name", "wtd1",
            ]);
            ip(&["link", "set", "wtd0", "up"]);
            ip(&["link", "set", "wtd1", "up"]);
            ip(&["addr", "add", "198.18.0.1/24", "dev", "wtd0"]);
            ip(&["route", "add", "198.19.0.0/24", "via", "198.18.0.254"]);
            let iface = Interface {
                name: "wtd0".into(),
                addr: Ipv4Addr::new(198, 18, 0, 1),
                addr6: None,
                mtu: 1500,
            };
            let mut d = DirectRoutes::open(DirectMode::HostGw, &iface).unwrap();
            let net = |s: &str| Ipv4Net::parse_cidr(s).unwrap();
            let k2 = SubnetKey::parse("100.96.2.0-24").unwrap();
            let k9 = SubnetKey::parse("100.96.9.0-24").unwrap();
            let shown = || ip(&["-4", "route", "show"]);

            assert!(d.place(
                k2,
                Some((net("100.96.2.0/24"), "198.18.0.2".parse().unwrap()))
            ));
            assert!(
                shown().contains("100.96.2.0/24 via 198.18.0.2 dev wtd0"),
                "{}",
                shown()
            );
            // Behind the router: refused, no route.
            assert!(!d.place(
                k9,
                Some((net("100.96.9.0/24"), "198.19.0.9".parse().unwrap()))
            ));
            assert!(!shown().contains("100.96.9.0"), "{}", shown());
            // A new PublicIP moves the route; a deleted route is put back by the recheck.
            assert!(d.place(
                k2,
                Some((net("100.96.2.0/24"), "198.18.0.3".parse().unwrap()))
            ));
            assert!(
                shown().contains("100.96.2.0/24 via 198.18.0.3 dev wtd0"),
                "{}",
                shown()
            );
            ip(&["route", "del", "100.96.2.0/24"]);
            d.checked = Instant::now() - DIRECT_RECHECK;
            assert!(d.recheck().is_empty());
            assert!(
                shown().contains("100.96.2.0/24 via 198.18.0.3"),
                "{}",
                shown()
            );
            // The router's segment becomes ours: the recheck says so, placing adds the route.
            ip(&["route", "del", "198.19.0.0/24"]);
            ip(&["addr", "add", "198.19.0.1/24", "dev", "wtd0"]);
            d.checked = Instant::now() - DIRECT_RECHECK;
            assert_eq!(d.recheck(), [k9]);
            assert!(d.place(
                k9,
                Some((net("100.96.9.0/24"), "198.19.0.9".parse().unwrap()))
            ));
            assert!(
                shown().contains("100.96.9.0/24 via 198.19.0.9 dev wtd0"),
                "{}",
                shown()
            );
            // Gone leases take their routes with them.
            assert!(!d.place(k2, None));
            assert!(!d.place(k9, None));
            assert!(!shown().contains("100.96."), "{}", shown());
        });
    }
}
