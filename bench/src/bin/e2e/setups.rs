//! The setups compared on the same two-host topology, and how each is brought up and down.
//!
//! Every setup is brought up in the testbed's two host namespaces just before its
//! measurement and taken down right after it ([`Running`] owns whatever it created: kernel
//! links, daemons, configuration files), so the setups never coexist and each run starts
//! from the bare underlay.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::ValueEnum;
use weft::testbed::{
    overlay_addr, underlay_addr, wait_until, ConfigFile, Netns, NsChild, Testbed, WeftConfig,
    WeftDaemon, DEFAULT_DEVICE, READY_TIMEOUT, UNDERLAY_IFNAME,
};

/// The kernel vxlan device's name, as flanneld names it for VNI 1.
const VXLAN_DEVICE: &str = "flannel.1";
/// What the engine child prints once it is up.
pub const READY_LINE: &str = "ready";
/// What the engine child prints before its counters when it stops.
pub const STATS_MARKER: &str = "--- stats ---";

/// One way of carrying host 1's traffic to host 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Setup {
    /// Plain veth between the underlay addresses, no tunnel: the ceiling.
    #[value(name = "direct")]
    Direct,
    /// The kernel's vxlan device, programmed the way flanneld programs it.
    #[value(name = "kernel-vxlan")]
    KernelVxlan,
    /// `weft run` with the UDP backend (batches of up to 64 packets).
    #[value(name = "weft-udp")]
    WeftUdp,
    /// The same engine with one packet per system call (run by this binary's `engine`
    /// subcommand, since `weft run` has no batch-size key).
    #[value(name = "weft-udp-batch1")]
    WeftUdpBatch1,
}

impl Setup {
    /// Every setup, in report order.
    pub const ALL: [Setup; 4] = [
        Setup::Direct,
        Setup::KernelVxlan,
        Setup::WeftUdp,
        Setup::WeftUdpBatch1,
    ];

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::KernelVxlan => "kernel-vxlan",
            Setup::WeftUdp => "weft-udp",
            Setup::WeftUdpBatch1 => "weft-udp-batch1",
        }
    }

    /// What the setup is, for the report.
    pub fn description(self) -> &'static str {
        match self {
            Setup::Direct => {
                "iperf3 198.18.0.1 -> 198.18.0.2 over the veth itself (MTU 1500), no tunnel"
            }
            Setup::KernelVxlan => {
                "Linux vxlan `flannel.1` (VNI 1, port 8472, MTU 1450, nolearning, static route + \
                 neighbour + FDB entry) on both hosts, as flanneld's vxlan backend programs it"
            }
            Setup::WeftUdp => {
                "`weft run` on both hosts, UDP backend, `flannel0` MTU 1472, default batch \
                 (up to 64 packets per recvmmsg/sendmmsg)"
            }
            Setup::WeftUdpBatch1 => {
                "the same engine and configuration with `batch_size(1)` (one packet per \
                 system call, like flanneld's proxy), run by `weft-e2e-bench engine`"
            }
        }
    }

    /// Whether weft processes carry the traffic (and their CPU time is measured).
    pub fn is_weft(self) -> bool {
        matches!(self, Setup::WeftUdp | Setup::WeftUdpBatch1)
    }

    /// (client address in host 1, server address in host 2).
    pub fn addresses(self) -> (Ipv4Addr, Ipv4Addr) {
        match self {
            Setup::Direct => (underlay_addr(1), underlay_addr(2)),
            _ => (overlay_addr(1), overlay_addr(2)),
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What bringing a setup up needs besides the testbed.
pub struct Programs {
    /// The `weft` binary (for `weft-udp`).
    pub weft: Option<PathBuf>,
    /// This binary (for `weft-udp-batch1`'s `engine` subcommand).
    pub this: PathBuf,
    /// Upper bound on an engine child's life, so it can never outlive the run by much.
    pub engine_lifetime: Duration,
}

/// A kernel link in a namespace, deleted on `Drop`.
pub struct KernelLink<'a> {
    netns: &'a Netns,
    name: &'static str,
}

impl Drop for KernelLink<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.netns.ip(&["link", "del", self.name]) {
            eprintln!(
                "warning: cannot delete {} in {}: {error}",
                self.name,
                self.netns.name()
            );
        }
    }
}

/// A brought-up setup. Dropping it takes the setup down (daemons are stopped, links
/// deleted); [`Running::finish`] does the same and collects weft's counters.
pub enum Running<'a> {
    /// Nothing to run.
    Direct,
    /// The vxlan links of hosts 1 and 2.
    KernelVxlan([KernelLink<'a>; 2]),
    /// The daemons of hosts 1 and 2 (dropped before their configuration files).
    Weft([WeftDaemon; 2], [ConfigFile; 2]),
    /// The engine children of hosts 1 and 2.
    Engine([NsChild; 2], [ConfigFile; 2]),
}

/// A vxlan VTEP MAC for host `host` (locally administered).
fn vtep_mac(host: u8) -> String {
    format!("02:00:00:00:{host:02x}:00")
}

/// Programs host `host`'s `flannel.1` toward `peer` exactly as TESTBED.md shows ("The
/// kernel as a peer"); the commands are written out as there (no argument has spaces).
fn kernel_vxlan<'a>(netns: &'a Netns, host: u8, peer: u8) -> Result<KernelLink<'a>> {
    let (dev, underlay) = (VXLAN_DEVICE, UNDERLAY_IFNAME);
    let (local, address) = (underlay_addr(host), overlay_addr(host));
    let (peer_underlay, peer_overlay) = (underlay_addr(peer), overlay_addr(peer));
    let (mac, peer_mac) = (vtep_mac(host), vtep_mac(peer));
    netns.ip(&words(&format!(
        "link add {dev} type vxlan id 1 local {local} dev {underlay} dstport 8472 nolearning"
    )))?;
    let link = KernelLink { netns, name: dev };
    for command in [
        format!("link set {dev} address {mac} mtu 1450 up"),
        format!("addr add {address}/32 dev {dev}"),
        format!("route add {peer_overlay}/24 via {peer_overlay} dev {dev} onlink"),
        format!("neigh add {peer_overlay} lladdr {peer_mac} dev {dev} nud permanent"),
    ] {
        netns.ip(&words(&command))?;
    }
    let fdb = format!("bridge fdb add {peer_mac} dev {dev} dst {peer_underlay} self permanent");
    netns.exec_ok(&words(&fdb))?;
    Ok(link)
}

/// The space-separated words of `command`.
fn words(command: &str) -> Vec<&str> {
    command.split_whitespace().collect()
}

/// Starts `this engine --config <config> --batch 1` in `netns` and waits for its ready line.
fn engine_child(netns: &Netns, programs: &Programs, config: &Path) -> Result<NsChild> {
    let this = programs.this.to_string_lossy();
    let config = config.to_string_lossy();
    let lifetime = programs.engine_lifetime.as_secs().to_string();
    let argv = [
        &this,
        "engine",
        "--config",
        &config,
        "--batch",
        "1",
        "--lifetime",
        &lifetime,
    ];
    let mut child = netns.spawn(&argv)?;
    let what = format!(
        "the batch-1 engine in {} to print `{READY_LINE}`",
        netns.name()
    );
    let waited = wait_until(READY_TIMEOUT, &what, || {
        !child.is_running() || child.stdout().lines().any(|line| line == READY_LINE)
    });
    if let Some(status) = child.try_wait()? {
        bail!(
            "the batch-1 engine in {} exited ({status}): {}",
            netns.name(),
            child.stderr().trim()
        );
    }
    waited.with_context(|| format!("its stderr so far: {}", child.stderr().trim()))?;
    Ok(child)
}

impl Setup {
    /// Brings the setup up on hosts 1 and 2 of `bed`.
    pub fn bring_up<'a>(self, bed: &'a Testbed, programs: &Programs) -> Result<Running<'a>> {
        let (a, b) = (bed.host(1).netns(), bed.host(2).netns());
        Ok(match self {
            Setup::Direct => Running::Direct,
            Setup::KernelVxlan => {
                Running::KernelVxlan([kernel_vxlan(a, 1, 2)?, kernel_vxlan(b, 2, 1)?])
            }
            Setup::WeftUdp => {
                let weft = programs
                    .weft
                    .as_deref()
                    .context("no weft binary was given")?;
                let configs = [
                    WeftConfig::udp(1, &[2]).write()?,
                    WeftConfig::udp(2, &[1]).write()?,
                ];
                let daemon_a = WeftDaemon::start(weft, a, configs[0].path(), DEFAULT_DEVICE)?;
                let daemon_b = WeftDaemon::start(weft, b, configs[1].path(), DEFAULT_DEVICE)?;
                Running::Weft([daemon_a, daemon_b], configs)
            }
            Setup::WeftUdpBatch1 => {
                let configs = [
                    WeftConfig::udp(1, &[2]).write()?,
                    WeftConfig::udp(2, &[1]).write()?,
                ];
                let child_a = engine_child(a, programs, configs[0].path())?;
                let child_b = engine_child(b, programs, configs[1].path())?;
                Running::Engine([child_a, child_b], configs)
            }
        })
    }
}

/// weft's counters by name, as `weft stats` prints them (`name value` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(BTreeMap<String, u64>);

impl Counters {
    /// Parses `name value` lines; `None` if a non-empty line has another shape.
    pub fn parse(text: &str) -> Option<Counters> {
        let mut counters = BTreeMap::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let mut fields = line.split_whitespace();
            let (Some(name), Some(value), None) = (fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            counters.insert(name.to_owned(), value.parse().ok()?);
        }
        Some(Counters(counters))
    }

    /// The counter `name`, if weft reported it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied()
    }

    /// `numerator / denominator`, if both exist and the denominator is not 0.
    pub fn ratio(&self, numerator: &str, denominator: &str) -> Option<f64> {
        let d = self.get(denominator).filter(|&d| d > 0)?;
        Some(self.get(numerator)? as f64 / d as f64)
    }
}

/// The counters of a running `weft run` (`weft stats` in its namespace).
fn daemon_counters(daemon: &WeftDaemon) -> Result<Counters> {
    let output = daemon.control(&["stats"])?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "`weft stats` in {} failed ({}): {}",
        daemon.netns(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Counters::parse(&text).with_context(|| format!("unexpected `weft stats` output: {text}"))
}

/// Counters of the weft processes of a run: (host 1, host 2).
pub type WeftStats = (Counters, Counters);

impl Running<'_> {
    /// The process ids of the weft processes (none for the kernel setups).
    pub fn weft_pids(&mut self) -> Vec<u32> {
        match self {
            Running::Weft(daemons, _) => daemons.iter_mut().map(|d| d.process().id()).collect(),
            Running::Engine(children, _) => children.iter().map(NsChild::id).collect(),
            Running::Direct | Running::KernelVxlan(_) => Vec::new(),
        }
    }

    /// Fails if a weft process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let mut exited = Vec::new();
        match self {
            Running::Weft(daemons, _) => {
                for daemon in daemons {
                    if let Some(status) = daemon.process().try_wait()? {
                        exited.push(format!(
                            "weft in {} exited ({status}): {}",
                            daemon.netns(),
                            daemon.log()
                        ));
                    }
                }
            }
            Running::Engine(children, _) => {
                for child in children {
                    if let Some(status) = child.try_wait()? {
                        exited.push(format!(
                            "`{}` exited ({status}): {}",
                            child.command(),
                            child.stderr()
                        ));
                    }
                }
            }
            Running::Direct | Running::KernelVxlan(_) => {}
        }
        if !exited.is_empty() {
            bail!("{}", exited.join("\n"));
        }
        Ok(())
    }

    /// Takes the setup down and returns weft's counters (none for the kernel setups).
    pub fn finish(self) -> Result<Option<WeftStats>> {
        let stats = match self {
            Running::Direct => None,
            Running::KernelVxlan(links) => {
                drop(links);
                None
            }
            Running::Weft(daemons, configs) => {
                let stats = (daemon_counters(&daemons[0])?, daemon_counters(&daemons[1])?);
                drop(daemons);
                drop(configs);
                Some(stats)
            }
            Running::Engine(mut children, configs) => {
                let mut stats = Vec::new();
                for child in &mut children {
                    child.signal("TERM")?;
                    let status = child.wait_timeout(Duration::from_secs(10))?;
                    if !status.success() {
                        bail!(
                            "`{}` exited ({status}): {}",
                            child.command(),
                            child.stderr().trim()
                        );
                    }
                    stats.push(engine_stats(child)?);
                }
                drop(children);
                drop(configs);
                let b = stats.pop().expect("two children");
                Some((stats.pop().expect("two children"), b))
            }
        };
        Ok(stats)
    }
}

/// The counters an engine child printed after [`STATS_MARKER`] when it stopped.
fn engine_stats(child: &NsChild) -> Result<Counters> {
    let stdout = child.stdout();
    let Some((_, text)) = stdout.split_once(STATS_MARKER) else {
        bail!("`{}` printed no counters: {stdout}", child.command());
    };
    Counters::parse(text).with_context(|| format!("counters of `{}`: {text}", child.command()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_addresses_follow_the_testbed() {
        for setup in Setup::ALL {
            assert_eq!(Setup::from_str(setup.name(), false), Ok(setup));
        }
        assert_eq!(Setup::Direct.addresses().1, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(
            Setup::WeftUdp.addresses(),
            (Ipv4Addr::new(100, 96, 1, 0), Ipv4Addr::new(100, 96, 2, 0))
        );
        assert_eq!(vtep_mac(2), "02:00:00:00:02:00");
    }

    #[test]
    fn counters_parse_and_divide() {
        let c = Counters::parse("tx_packets 640\nsend_batches 10\n\nrecv_batches 0\n").unwrap();
        assert_eq!(c.get("tx_packets"), Some(640));
        assert_eq!(c.ratio("tx_packets", "send_batches"), Some(64.0));
        assert_eq!(c.ratio("tx_packets", "recv_batches"), None);
        assert_eq!(c.ratio("tx_packets", "missing"), None);
        assert_eq!(Counters::parse("tx_packets"), None);
        assert_eq!(Counters::parse("tx_packets x"), None);
    }
}
