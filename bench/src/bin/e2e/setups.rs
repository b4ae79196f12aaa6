//! The setups compared on the same two-host topology, and how each is brought up and down.
//!
//! Every setup is brought up in the testbed's two host namespaces just before its
//! measurement and taken down right after it ([`Running`] owns whatever it created: kernel
//! links, daemons, configuration files), so the setups never coexist and each run starts
//! from the bare underlay.
//!
//! Every weft setup is the real daemon (`weft run`) on both hosts, configured only through
//! its configuration file; the kernel and weft vxlan setups share the testbed's flannel
//! conventions (VNI [`weft_testbed::VXLAN_VNI`], port [`weft_testbed::VXLAN_PORT`], device
//! [`VXLAN_DEVICE`], VTEP MACs [`vtep_mac`]), so they differ only in who carries the packets.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use weft_testbed::{
    add_kernel_flannel_device, add_kernel_flannel_peer, overlay_addr, underlay_addr, vtep_mac,
    ConfigFile, KernelNeighbour, Netns, StatsOutput, Testbed, VxlanConfig, WeftConfig, WeftDaemon,
    DEFAULT_DEVICE, VXLAN_DEVICE,
};

/// What the `weft-udp-batch1` configuration adds to the `weft-udp` one.
const BATCH1_SECTION: &str = "\n[engine]\nbatch = 1\n";

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
    /// `weft run` with the UDP backend and `[engine] batch = 1` (one packet per system call).
    #[value(name = "weft-udp-batch1")]
    WeftUdpBatch1,
    /// `weft run` with the VXLAN backend in L3 mode, mirroring `kernel-vxlan`.
    #[value(name = "weft-vxlan")]
    WeftVxlan,
}

impl Setup {
    /// Every setup, in report order.
    pub const ALL: [Setup; 5] = [
        Setup::Direct,
        Setup::KernelVxlan,
        Setup::WeftUdp,
        Setup::WeftUdpBatch1,
        Setup::WeftVxlan,
    ];

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::KernelVxlan => "kernel-vxlan",
            Setup::WeftUdp => "weft-udp",
            Setup::WeftUdpBatch1 => "weft-udp-batch1",
            Setup::WeftVxlan => "weft-vxlan",
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
                "`weft run` on both hosts with the `weft-udp` configuration plus `[engine] \
                 batch = 1` (one packet per system call, like flanneld's proxy)"
            }
            Setup::WeftVxlan => {
                "`weft run` on both hosts, VXLAN backend in L3 mode, mirroring `kernel-vxlan`: \
                 TUN `flannel.1` (MTU 1450 = underlay - 50), VNI 1, port 8472, VTEP MACs \
                 02:00:00:00:0N:00, one `[[peer]]` with subnet, endpoint and VTEP MAC; default \
                 batch and source sockets"
            }
        }
    }

    /// Whether weft processes carry the traffic (and their CPU time is measured).
    pub fn is_weft(self) -> bool {
        matches!(
            self,
            Setup::WeftUdp | Setup::WeftUdpBatch1 | Setup::WeftVxlan
        )
    }

    /// (client address in host 1, server address in host 2).
    pub fn addresses(self) -> (Ipv4Addr, Ipv4Addr) {
        match self {
            Setup::Direct => (underlay_addr(1), underlay_addr(2)),
            _ => (overlay_addr(1), overlay_addr(2)),
        }
    }

    /// The `weft run` configuration of host `host` (whose peer is host `peer`) and the device
    /// weft creates, for the weft setups.
    pub fn weft_config(self, host: u8, peer: u8) -> Option<(String, &'static str)> {
        match self {
            Setup::Direct | Setup::KernelVxlan => None,
            Setup::WeftUdp => Some((WeftConfig::udp(host, &[peer]).to_toml(), DEFAULT_DEVICE)),
            Setup::WeftUdpBatch1 => {
                let mut config = WeftConfig::udp(host, &[peer]).to_toml();
                config.push_str(BATCH1_SECTION);
                Some((config, DEFAULT_DEVICE))
            }
            Setup::WeftVxlan => Some((VxlanConfig::l3(host, &[peer]).to_toml(), VXLAN_DEVICE)),
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel link in a namespace, deleted on `Drop` (if it exists by then).
pub struct KernelLink<'a> {
    netns: &'a Netns,
    name: &'static str,
}

impl Drop for KernelLink<'_> {
    fn drop(&mut self) {
        if !self.netns.has_link(self.name).unwrap_or(true) {
            return;
        }
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
    /// The daemons of hosts 1 and 2 (dropped before their configuration files; boxed, as
    /// they are much larger than the other variants).
    Weft(Box<[WeftDaemon; 2]>, [ConfigFile; 2]),
}

/// Programs host `host`'s `flannel.1` toward `peer` exactly as flanneld does (TESTBED.md,
/// "The kernel as a peer"): the device, its address, and the peer's route, permanent
/// neighbour entry and FDB entry.
fn kernel_vxlan(netns: &Netns, host: u8, peer: u8) -> Result<KernelLink<'_>> {
    // The guard first, so a half-programmed device is removed too.
    let link = KernelLink {
        netns,
        name: VXLAN_DEVICE,
    };
    add_kernel_flannel_device(netns, host, &vtep_mac(host))?;
    add_kernel_flannel_peer(netns, peer, &vtep_mac(peer), KernelNeighbour::Permanent)?;
    Ok(link)
}

impl Setup {
    /// Brings the setup up on hosts 1 and 2 of `bed`; the weft setups run the `weft` binary.
    pub fn bring_up<'a>(self, bed: &'a Testbed, weft: Option<&Path>) -> Result<Running<'a>> {
        let (a, b) = (bed.host(1).netns(), bed.host(2).netns());
        if let (Some((config_a, device)), Some((config_b, _))) =
            (self.weft_config(1, 2), self.weft_config(2, 1))
        {
            let weft = weft.context("no weft binary was given")?;
            let configs = [ConfigFile::new(&config_a)?, ConfigFile::new(&config_b)?];
            let daemon_a = WeftDaemon::start(weft, a, configs[0].path(), device)?;
            let daemon_b = WeftDaemon::start(weft, b, configs[1].path(), device)?;
            return Ok(Running::Weft(Box::new([daemon_a, daemon_b]), configs));
        }
        Ok(match self {
            Setup::KernelVxlan => {
                Running::KernelVxlan([kernel_vxlan(a, 1, 2)?, kernel_vxlan(b, 2, 1)?])
            }
            _ => Running::Direct,
        })
    }
}

/// `numerator / denominator` of weft's counters, if both exist and the denominator is not 0.
pub fn counter_ratio(stats: &StatsOutput, numerator: &str, denominator: &str) -> Option<f64> {
    let d = stats.get(denominator).filter(|&d| d > 0)?;
    Some(stats.get(numerator)? as f64 / d as f64)
}

/// Counters of the weft processes of a run (`weft stats`): (host 1, host 2).
pub type WeftStats = (StatsOutput, StatsOutput);

impl Running<'_> {
    /// The process ids of the weft processes (none for the kernel setups).
    pub fn weft_pids(&mut self) -> Vec<u32> {
        match self {
            Running::Weft(daemons, _) => daemons.iter_mut().map(|d| d.process().id()).collect(),
            Running::Direct | Running::KernelVxlan(_) => Vec::new(),
        }
    }

    /// Fails if a weft process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let Running::Weft(daemons, _) = self else {
            return Ok(());
        };
        let mut exited = Vec::new();
        for daemon in daemons.iter_mut() {
            if let Some(status) = daemon.process().try_wait()? {
                exited.push(format!(
                    "weft in {} exited ({status}): {}",
                    daemon.netns(),
                    daemon.log()
                ));
            }
        }
        if !exited.is_empty() {
            bail!("{}", exited.join("\n"));
        }
        Ok(())
    }

    /// Takes the setup down and returns weft's counters (none for the kernel setups).
    pub fn finish(self) -> Result<Option<WeftStats>> {
        Ok(match self {
            Running::Direct => None,
            Running::KernelVxlan(links) => {
                drop(links);
                None
            }
            Running::Weft(daemons, configs) => {
                let stats = (daemons[0].stats()?, daemons[1].stats()?);
                drop(daemons);
                drop(configs);
                Some(stats)
            }
        })
    }
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
            Setup::WeftVxlan.addresses(),
            (Ipv4Addr::new(100, 96, 1, 0), Ipv4Addr::new(100, 96, 2, 0))
        );
        let weft: Vec<_> = Setup::ALL.into_iter().filter(|s| s.is_weft()).collect();
        assert_eq!(
            weft,
            [Setup::WeftUdp, Setup::WeftUdpBatch1, Setup::WeftVxlan]
        );
    }

    #[test]
    fn weft_configs_differ_only_where_the_setups_do() {
        assert_eq!(Setup::Direct.weft_config(1, 2), None);
        assert_eq!(Setup::KernelVxlan.weft_config(1, 2), None);
        let (udp, udp_device) = Setup::WeftUdp.weft_config(1, 2).unwrap();
        let (batch1, batch1_device) = Setup::WeftUdpBatch1.weft_config(1, 2).unwrap();
        assert_eq!((udp_device, batch1_device), ("flannel0", "flannel0"));
        assert!(!udp.contains("[engine]"), "{udp}");
        assert_eq!(batch1, format!("{udp}\n[engine]\nbatch = 1\n"));

        let (vxlan, device) = Setup::WeftVxlan.weft_config(2, 1).unwrap();
        assert_eq!(device, "flannel.1");
        for expected in [
            "backend = \"vxlan\"",
            "name = \"flannel.1\"\naddress = \"100.96.2.0\"",
            "address = \"198.18.0.2\"\nport = 8472",
            "[vxlan]\nvni = 1\nmode = \"l3\"\nvtep_mac = \"02:00:00:00:02:00\"",
            "[[peer]]\nsubnet = \"100.96.1.0/24\"\nendpoint = \"198.18.0.1\"\n\
             vtep_mac = \"02:00:00:00:01:00\"",
        ] {
            assert!(vxlan.contains(expected), "{expected:?} not in:\n{vxlan}");
        }
        // No MTU key: weft derives 1450 from the underlay, as the kernel setup sets it.
        assert!(!vxlan.contains("mtu"), "{vxlan}");
    }

    #[test]
    fn batch1_config_is_valid_for_weft() {
        let (text, _) = Setup::WeftUdpBatch1.weft_config(1, 2).unwrap();
        let config = weft::control::config::Config::parse(Path::new("batch1.toml"), &text).unwrap();
        assert_eq!(config.batch, 1);
        let (text, _) = Setup::WeftVxlan.weft_config(1, 2).unwrap();
        let config = weft::control::config::Config::parse(Path::new("vxlan.toml"), &text).unwrap();
        assert_eq!(config.batch, 64);
        assert_eq!(config.peers.len(), 1);
    }

    #[test]
    fn counter_ratios() {
        let c = StatsOutput::parse("tx_packets 640\nsend_batches 10\n\nrecv_batches 0\n").unwrap();
        assert_eq!(c.get("tx_packets"), Some(640));
        assert_eq!(counter_ratio(&c, "tx_packets", "send_batches"), Some(64.0));
        assert_eq!(counter_ratio(&c, "tx_packets", "recv_batches"), None);
        assert_eq!(counter_ratio(&c, "tx_packets", "missing"), None);
        assert_eq!(counter_ratio(&c, "missing", "send_batches"), None);
    }
}
