//! The setups (rows of the report) compared on the same two-host topology, and how each is
//! brought up and down.
//!
//! Every setup is brought up in the testbed's two host namespaces just before its
//! measurements and taken down right after them ([`Running`] owns whatever it created: kernel
//! links, daemons, configuration files), so the setups never coexist and each one starts
//! from the bare underlay.
//!
//! Every weft setup is the real daemon (`weft run`) on both hosts, configured only through
//! its configuration file; the kernel and weft vxlan setups share the testbed's flannel
//! conventions (VNI [`VXLAN_VNI`](weft_testbed::VXLAN_VNI), port [`VXLAN_PORT`](weft_testbed::VXLAN_PORT), device [`VXLAN_DEVICE`], VTEP MACs
//! [`vtep_mac`]), so they differ only in who carries the packets.
//!
//! The underlay veth keeps the kernel's default offloads in every setup (nothing here runs
//! `ethtool -K`): the kernel vxlan reference sends its unsegmented, partially checksummed
//! super-frames across the veth, as it does between namespaces on any machine, and weft
//! has to accept them.

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

/// One way of carrying host 1's traffic to host 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Setup {
    /// Plain veth between the underlay addresses, no tunnel: the ceiling.
    #[value(name = "direct")]
    Direct,
    /// The kernel's vxlan device, programmed the way flanneld programs it: the reference.
    #[value(name = "kernel-vxlan")]
    KernelVxlan,
    /// `weft run` with the UDP backend and the engine's defaults.
    #[value(name = "weft-udp")]
    WeftUdp,
    /// `weft run` with the VXLAN backend in L3 mode, mirroring `kernel-vxlan`.
    #[value(name = "weft-vxlan")]
    WeftVxlan,
    /// `weft run` with the UDP backend the way flanneld works: offloads off, one packet per
    /// system call, one worker.
    #[value(name = "weft-udp-off-batch1")]
    WeftUdpOffBatch1,
    /// `weft run` with the UDP backend and `[engine] batch = 1` (offloads left to the engine).
    #[value(name = "weft-udp-batch1")]
    WeftUdpBatch1,
    /// `weft run` with the UDP backend and `[engine] busy_poll_us` (workers keep polling for
    /// a while after each packet instead of sleeping): latency bought with CPU time.
    #[value(name = "weft-udp-busy-poll")]
    WeftUdpBusyPoll,
}

/// The `busy_poll_us` of [`Setup::WeftUdpBusyPoll`]: longer than the 10 ms between the
/// latency measurement's pings, so the workers that carry them never go to sleep.
pub const BUSY_POLL_US: u32 = 20_000;

/// The `[engine]` keys of a weft configuration; only the keys that are set are written, so
/// a weft that does not know a key yet is only asked about it by the setups that need it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineKeys {
    /// `offload = "auto" | "off"`.
    pub offload: Option<&'static str>,
    /// `batch = 1..64`: packets per system call.
    pub batch: Option<u32>,
    /// `workers = N`: worker threads (the engine's default is the number of CPUs).
    pub workers: Option<u32>,
    /// `busy_poll_us = N`: how long a worker polls after its last packet.
    pub busy_poll_us: Option<u32>,
}

impl EngineKeys {
    /// The `[engine]` section as TOML (with a leading blank line), or nothing when no key is
    /// set.
    pub fn to_toml(self) -> String {
        let mut keys = String::new();
        if let Some(offload) = self.offload {
            keys.push_str(&format!("offload = \"{offload}\"\n"));
        }
        if let Some(batch) = self.batch {
            keys.push_str(&format!("batch = {batch}\n"));
        }
        if let Some(workers) = self.workers {
            keys.push_str(&format!("workers = {workers}\n"));
        }
        if let Some(us) = self.busy_poll_us {
            keys.push_str(&format!("busy_poll_us = {us}\n"));
        }
        if keys.is_empty() {
            keys
        } else {
            format!("\n[engine]\n{keys}")
        }
    }
}

impl Setup {
    /// Every setup, in report order.
    pub const ALL: [Setup; 7] = [
        Setup::Direct,
        Setup::KernelVxlan,
        Setup::WeftUdp,
        Setup::WeftVxlan,
        Setup::WeftUdpOffBatch1,
        Setup::WeftUdpBatch1,
        Setup::WeftUdpBusyPoll,
    ];

    /// The name used on the command line (`--only`) and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::KernelVxlan => "kernel-vxlan",
            Setup::WeftUdp => "weft-udp",
            Setup::WeftVxlan => "weft-vxlan",
            Setup::WeftUdpOffBatch1 => "weft-udp-off-batch1",
            Setup::WeftUdpBatch1 => "weft-udp-batch1",
            Setup::WeftUdpBusyPoll => "weft-udp-busy-poll",
        }
    }

    /// The row label of the report.
    pub fn label(self) -> &'static str {
        match self {
            Setup::Direct => "direct veth",
            Setup::KernelVxlan => "kernel vxlan",
            Setup::WeftUdp => "weft udp",
            Setup::WeftVxlan => "weft vxlan",
            Setup::WeftUdpOffBatch1 => "weft udp, offload off, batch 1",
            Setup::WeftUdpBatch1 => "weft udp, batch 1",
            Setup::WeftUdpBusyPoll => "weft udp, busy poll",
        }
    }

    /// What the setup is, for the report.
    pub fn description(self) -> &'static str {
        match self {
            Setup::Direct => "the veth itself, 198.18.0.1 -> 198.18.0.2 (MTU 1500), no tunnel",
            Setup::KernelVxlan => {
                "Linux vxlan `flannel.1` (VNI 1, port 8472, MTU 1450, nolearning, static route + \
                 neighbour + FDB entry) on both hosts, as flanneld's vxlan backend programs it; \
                 the veth's offloads left on"
            }
            Setup::WeftUdp => {
                "`weft run` on both hosts, UDP backend, `flannel0` MTU 1472, the engine's \
                 defaults (no `[engine]` keys except `workers` with `--workers`)"
            }
            Setup::WeftVxlan => {
                "`weft run` on both hosts, VXLAN backend in L3 mode, mirroring `kernel vxlan`: \
                 TUN `flannel.1` (MTU 1450), VNI 1, port 8472, VTEP MACs 02:00:00:00:0N:00, one \
                 `[[peer]]` with subnet, endpoint and VTEP MAC; the engine's defaults"
            }
            Setup::WeftUdpOffBatch1 => {
                "`weft run` UDP as flanneld works: `[engine] offload = \"off\"`, `batch = 1`, \
                 `workers = 1` (one packet per system call, whatever `--workers` says)"
            }
            Setup::WeftUdpBatch1 => {
                "`weft run` UDP with `[engine] batch = 1` (one packet per recvmmsg/sendmmsg; \
                 offloads as the engine decides)"
            }
            Setup::WeftUdpBusyPoll => {
                "`weft run` UDP with `[engine] busy_poll_us = 20000`: a worker keeps polling \
                 for 20 ms after its last packet instead of sleeping (CPU time for latency)"
            }
        }
    }

    /// Whether weft processes carry the traffic (and their CPU time is measured).
    pub fn is_weft(self) -> bool {
        !matches!(self, Setup::Direct | Setup::KernelVxlan)
    }

    /// (client address in host 1, server address in host 2).
    pub fn addresses(self) -> (Ipv4Addr, Ipv4Addr) {
        match self {
            Setup::Direct => (underlay_addr(1), underlay_addr(2)),
            _ => (overlay_addr(1), overlay_addr(2)),
        }
    }

    /// The `[engine]` keys of a weft setup; `workers` is `--workers` (if given).
    pub fn engine_keys(self, workers: Option<u32>) -> EngineKeys {
        match self {
            Setup::WeftUdpOffBatch1 => EngineKeys {
                offload: Some("off"),
                batch: Some(1),
                workers: Some(1),
                busy_poll_us: None,
            },
            Setup::WeftUdpBatch1 => EngineKeys {
                batch: Some(1),
                workers,
                ..EngineKeys::default()
            },
            Setup::WeftUdpBusyPoll => EngineKeys {
                busy_poll_us: Some(BUSY_POLL_US),
                workers,
                ..EngineKeys::default()
            },
            _ => EngineKeys {
                workers,
                ..EngineKeys::default()
            },
        }
    }

    /// The `weft run` configuration of host `host` (whose peer is host `peer`) and the device
    /// weft creates, for the weft setups.
    pub fn weft_config(
        self,
        host: u8,
        peer: u8,
        workers: Option<u32>,
    ) -> Option<(String, &'static str)> {
        let (mut config, device) = match self {
            Setup::Direct | Setup::KernelVxlan => return None,
            Setup::WeftUdp
            | Setup::WeftUdpOffBatch1
            | Setup::WeftUdpBatch1
            | Setup::WeftUdpBusyPoll => (WeftConfig::udp(host, &[peer]).to_toml(), DEFAULT_DEVICE),
            Setup::WeftVxlan => (VxlanConfig::l3(host, &[peer]).to_toml(), VXLAN_DEVICE),
        };
        config.push_str(&self.engine_keys(workers).to_toml());
        Some((config, device))
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
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
    /// The vxlan links of hosts 1 and 2 (held to be deleted on `Drop`).
    KernelVxlan {
        /// Host 1's and host 2's `flannel.1`.
        _links: [KernelLink<'a>; 2],
    },
    /// The daemons of hosts 1 and 2, dropped before their configuration files.
    Weft {
        /// Host 1's and host 2's daemon (boxed, as they are much larger than the other
        /// variants).
        daemons: Box<[WeftDaemon; 2]>,
        /// Their configuration files (held to be removed on `Drop`).
        _configs: [ConfigFile; 2],
    },
}

/// Programs host `host`'s `flannel.1` toward `peer` exactly as flanneld does (TESTBED.md,
/// "The kernel as a peer"): the testbed's `add_kernel_flannel_device` (which leaves the
/// veth's offloads on: the reference is measured as the kernel runs by default), and the
/// peer's route, permanent neighbour entry and FDB entry.
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
    /// Brings the setup up on hosts 1 and 2 of `bed`; the weft setups run the `weft` binary
    /// (with `[engine] workers = workers` when given).
    pub fn bring_up<'a>(
        self,
        bed: &'a Testbed,
        weft: Option<&Path>,
        workers: Option<u32>,
    ) -> Result<Running<'a>> {
        let (a, b) = (bed.host(1).netns(), bed.host(2).netns());
        if let (Some((config_a, device)), Some((config_b, _))) = (
            self.weft_config(1, 2, workers),
            self.weft_config(2, 1, workers),
        ) {
            let weft = weft.context("no weft binary was given")?;
            let configs = [ConfigFile::new(&config_a)?, ConfigFile::new(&config_b)?];
            let daemon_a = WeftDaemon::start(weft, a, configs[0].path(), device)?;
            let daemon_b = WeftDaemon::start(weft, b, configs[1].path(), device)?;
            return Ok(Running::Weft {
                daemons: Box::new([daemon_a, daemon_b]),
                _configs: configs,
            });
        }
        Ok(match self {
            Setup::KernelVxlan => Running::KernelVxlan {
                _links: [kernel_vxlan(a, 1, 2)?, kernel_vxlan(b, 2, 1)?],
            },
            _ => Running::Direct,
        })
    }
}

/// Counters of the weft processes of a run (`weft stats`): (host 1, host 2).
pub type WeftStats = (StatsOutput, StatsOutput);

/// `after - before` of the counter `name`, if both have it.
fn delta(before: &StatsOutput, after: &StatsOutput, name: &str) -> Option<u64> {
    Some(after.get(name)?.saturating_sub(before.get(name)?))
}

/// How `numerator` grew per unit of `denominator` between two readings of the same weft's
/// counters; `None` if a counter is missing or the denominator did not grow.
pub fn counter_ratio(
    before: &StatsOutput,
    after: &StatsOutput,
    numerator: &str,
    denominator: &str,
) -> Option<f64> {
    let d = delta(before, after, denominator).filter(|&d| d > 0)?;
    Some(delta(before, after, numerator)? as f64 / d as f64)
}

impl Running<'_> {
    /// The process ids of the weft processes (none for the kernel setups).
    pub fn weft_pids(&mut self) -> Vec<u32> {
        match self {
            Running::Weft { daemons, .. } => daemons.iter_mut().map(|d| d.process().id()).collect(),
            Running::Direct | Running::KernelVxlan { .. } => Vec::new(),
        }
    }

    /// weft's counters now (none for the kernel setups).
    pub fn stats(&self) -> Result<Option<WeftStats>> {
        Ok(match self {
            Running::Weft { daemons, .. } => Some((daemons[0].stats()?, daemons[1].stats()?)),
            Running::Direct | Running::KernelVxlan { .. } => None,
        })
    }

    /// Fails if a weft process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let Running::Weft { daemons, .. } = self else {
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
        let stats = self.stats()?;
        drop(self);
        Ok(stats)
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
            [
                Setup::WeftUdp,
                Setup::WeftVxlan,
                Setup::WeftUdpOffBatch1,
                Setup::WeftUdpBatch1,
                Setup::WeftUdpBusyPoll
            ]
        );
    }

    #[test]
    fn engine_keys_are_written_only_when_set() {
        assert_eq!(EngineKeys::default().to_toml(), "");
        assert_eq!(
            Setup::WeftUdpOffBatch1.engine_keys(Some(2)).to_toml(),
            "\n[engine]\noffload = \"off\"\nbatch = 1\nworkers = 1\n"
        );
        assert_eq!(
            Setup::WeftUdpBatch1.engine_keys(None).to_toml(),
            "\n[engine]\nbatch = 1\n"
        );
        assert_eq!(
            Setup::WeftVxlan.engine_keys(Some(2)).to_toml(),
            "\n[engine]\nworkers = 2\n"
        );
        assert_eq!(
            Setup::WeftUdpBusyPoll.engine_keys(None).to_toml(),
            "\n[engine]\nbusy_poll_us = 20000\n"
        );
    }

    #[test]
    fn weft_configs_differ_only_where_the_setups_do() {
        assert_eq!(Setup::Direct.weft_config(1, 2, None), None);
        assert_eq!(Setup::KernelVxlan.weft_config(1, 2, Some(2)), None);
        let (udp, udp_device) = Setup::WeftUdp.weft_config(1, 2, None).unwrap();
        let (batch1, batch1_device) = Setup::WeftUdpBatch1.weft_config(1, 2, None).unwrap();
        let (flanneld, _) = Setup::WeftUdpOffBatch1.weft_config(1, 2, None).unwrap();
        assert_eq!((udp_device, batch1_device), ("flannel0", "flannel0"));
        assert!(!udp.contains("[engine]"), "{udp}");
        assert_eq!(batch1, format!("{udp}\n[engine]\nbatch = 1\n"));
        assert_eq!(
            flanneld,
            format!("{udp}\n[engine]\noffload = \"off\"\nbatch = 1\nworkers = 1\n")
        );
        let (workers, _) = Setup::WeftUdp.weft_config(1, 2, Some(3)).unwrap();
        assert_eq!(workers, format!("{udp}\n[engine]\nworkers = 3\n"));

        let (vxlan, device) = Setup::WeftVxlan.weft_config(2, 1, None).unwrap();
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
        assert!(!vxlan.contains("[engine]"), "{vxlan}");
    }

    #[test]
    fn batch1_config_is_valid_for_weft() {
        let (text, _) = Setup::WeftUdpBatch1.weft_config(1, 2, None).unwrap();
        let config = weft::control::config::Config::parse(Path::new("batch1.toml"), &text).unwrap();
        assert_eq!(config.batch, 1);
        let (text, _) = Setup::WeftVxlan.weft_config(1, 2, None).unwrap();
        let config = weft::control::config::Config::parse(Path::new("vxlan.toml"), &text).unwrap();
        assert_eq!(config.batch, 64);
        assert_eq!(config.peers.len(), 1);
    }

    #[test]
    fn counter_ratios_are_taken_over_deltas() {
        let before =
            StatsOutput::parse("tx_packets 100\nsend_batches 5\nrecv_batches 3\n").unwrap();
        let after =
            StatsOutput::parse("tx_packets 740\nsend_batches 15\nrecv_batches 3\n").unwrap();
        assert_eq!(
            counter_ratio(&before, &after, "tx_packets", "send_batches"),
            Some(64.0)
        );
        assert_eq!(
            counter_ratio(&before, &after, "tx_packets", "recv_batches"),
            None
        );
        assert_eq!(
            counter_ratio(&before, &after, "tx_packets", "missing"),
            None
        );
        assert_eq!(
            counter_ratio(&before, &after, "missing", "send_batches"),
            None
        );
    }
}
