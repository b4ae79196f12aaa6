//! End-to-end tests of the offload data path: TUN super-packets split into UDP GSO trains,
//! UDP GRO trains coalesced into super-packets written to the TUN, several workers, hosts with
//! and without offloads side by side, the kernel's vxlan (veth offloads on) as a peer, many
//! concurrent flows, and the fallbacks when the kernel refuses offloads (fault injection
//! through `WEFT_FAULT_REFUSE_TUN_OFFLOAD` and `WEFT_FAULT_REFUSE_TUN_GSO_WRITE`).
//!
//! Every test builds its own two-host topology with unique names, so the tests run in
//! parallel. Each checks with `weft stats` that the path it is about really ran (or really
//! did not), besides the data arriving intact. All need root.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{daemon_report, require_root, weft_exe, COUNTER_TIMEOUT};
use weft_testbed::{
    add_kernel_flannel_device, add_kernel_flannel_peer, overlay_addr, tcp_transfer, tcp_transfers,
    vtep_mac, wait_until, ConfigFile, EngineConfig, KernelNeighbour, Netns, StatsOutput, Testbed,
    VxlanConfig, WeftConfig, WeftDaemon, DEFAULT_DEVICE, UDP_OVERLAY_MTU, VXLAN_DEVICE,
    VXLAN_OVERLAY_MTU,
};

const MIB: u64 = 1024 * 1024;
/// How long one 200 MiB transfer may take (it takes about a second on an idle machine).
const LARGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one 50 MiB transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(45);
/// The fault injections `weft run` reads.
const REFUSE_TUN_OFFLOAD: &str = "WEFT_FAULT_REFUSE_TUN_OFFLOAD";
const REFUSE_TUN_GSO_WRITE: &str = "WEFT_FAULT_REFUSE_TUN_GSO_WRITE";
/// Drop counters that must stay zero whenever weft talks to a correct peer.
const OFFLOAD_DROPS: [&str; 3] = ["drop_bad_checksum", "drop_bad_offload", "drop_bad_verdict"];

/// The encapsulation both weft hosts use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// flannel's UDP backend (`flannel0`, port 8285).
    Udp,
    /// The VXLAN backend in L3 mode (`flannel.1`, port 8472).
    VxlanL3,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Udp => "udp",
            Backend::VxlanL3 => "vxlan-l3",
        }
    }

    fn device(self) -> &'static str {
        match self {
            Backend::Udp => DEFAULT_DEVICE,
            Backend::VxlanL3 => VXLAN_DEVICE,
        }
    }

    fn pod_mtu(self) -> u32 {
        match self {
            Backend::Udp => UDP_OVERLAY_MTU,
            Backend::VxlanL3 => VXLAN_OVERLAY_MTU,
        }
    }

    /// Host `host`'s configuration with a route to `peer` and the `[engine]` keys `engine`.
    fn config(self, host: u8, peer: u8, engine: &EngineConfig) -> ConfigFile {
        let text = match self {
            Backend::Udp => WeftConfig::udp(host, &[peer])
                .with_engine(engine.clone())
                .to_toml(),
            Backend::VxlanL3 => VxlanConfig::l3(host, &[peer])
                .with_engine(engine.clone())
                .to_toml(),
        };
        ConfigFile::new(&text).unwrap_or_else(|error| panic!("write host {host}'s config: {error}"))
    }
}

/// How one weft host is started.
#[derive(Clone, Debug, Default)]
struct HostSetup {
    /// The `[engine]` section.
    engine: EngineConfig,
    /// Extra environment variables of `weft run`.
    env: Vec<(&'static str, &'static str)>,
}

impl HostSetup {
    fn engine(engine: EngineConfig) -> Self {
        Self {
            engine,
            env: Vec::new(),
        }
    }

    fn env(name: &'static str, value: &'static str) -> Self {
        Self {
            engine: EngineConfig::default(),
            env: vec![(name, value)],
        }
    }
}

/// What runs host 1's side of the overlay.
enum HostA {
    /// weft, started this way.
    Weft(HostSetup),
    /// The kernel's `flannel.1`, programmed as flanneld does (VXLAN only).
    Kernel,
}

/// Two hosts joined by a veth; host 2 runs weft, host 1 weft or the kernel's vxlan.
/// Fields drop in order: daemons first, the namespaces last.
struct Pair {
    a: Option<WeftDaemon>,
    b: WeftDaemon,
    _configs: Vec<ConfigFile>,
    bed: Testbed,
}

impl Pair {
    /// Builds the topology (with pod `.2` behind `cni0` on each host if `pods`) and starts
    /// the daemons.
    fn new(name: &str, backend: Backend, host_a: HostA, host_b: HostSetup, pods: bool) -> Self {
        require_root();
        let mut bed = Testbed::two_hosts(name).expect("build the two-host topology");
        if pods {
            for host in [1, 2] {
                bed.add_pod(host, 2, backend.pod_mtu())
                    .unwrap_or_else(|error| panic!("add pod 2 to host {host}: {error}"));
            }
        }
        let mut configs = Vec::new();
        let a = match host_a {
            HostA::Weft(setup) => {
                let config = backend.config(1, 2, &setup.engine);
                let daemon = start(&bed, 1, backend, &config, &setup.env);
                configs.push(config);
                Some(daemon)
            }
            HostA::Kernel => {
                assert_eq!(
                    backend,
                    Backend::VxlanL3,
                    "the kernel peer is a vxlan device"
                );
                let netns = bed.host(1).netns();
                add_kernel_flannel_device(netns, 1, &vtep_mac(1))
                    .expect("program the kernel's flannel.1 on host 1");
                add_kernel_flannel_peer(netns, 2, &vtep_mac(2), KernelNeighbour::Permanent)
                    .expect("program host 2 into the kernel's flannel.1 on host 1");
                None
            }
        };
        let config = backend.config(2, 1, &host_b.engine);
        let b = start(&bed, 2, backend, &config, &host_b.env);
        configs.push(config);
        Self {
            a,
            b,
            _configs: configs,
            bed,
        }
    }

    fn host(&self, index: u8) -> &Netns {
        self.bed.host(index).netns()
    }

    fn a(&self) -> &WeftDaemon {
        self.a.as_ref().expect("host 1 runs weft in this test")
    }

    /// The daemons' logs and counters, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        if let Some(a) = &self.a {
            text.push_str(&daemon_report("host 1", a));
        }
        text.push_str(&daemon_report("host 2", &self.b));
        text
    }

    /// Sends `bytes` over one TCP connection from `sender` to `destination:port` on
    /// `receiver` and requires it complete with a matching SHA-256.
    #[allow(clippy::too_many_arguments)]
    fn assert_transfer(
        &self,
        what: &str,
        sender: &Netns,
        receiver: &Netns,
        destination: Ipv4Addr,
        port: u16,
        bytes: u64,
        timeout: Duration,
    ) {
        let transfer = tcp_transfer(sender, receiver, destination, port, bytes, timeout)
            .unwrap_or_else(|error| panic!("transfer {what}: {error}\n{}", self.logs()));
        assert!(transfer.intact(), "{what}: {transfer}\n{}", self.logs());
        eprintln!("{} MiB {what}: {transfer}", bytes / MIB);
    }

    /// 50 MiB host 1 -> host 2 and host 2 -> host 1 (overlay addresses).
    fn assert_hosts_transfer_both_ways(&self, label: &str) {
        self.assert_transfer(
            &format!("{label}: host 1 -> host 2"),
            self.host(1),
            self.host(2),
            overlay_addr(2),
            5001,
            50 * MIB,
            TRANSFER_TIMEOUT,
        );
        self.assert_transfer(
            &format!("{label}: host 2 -> host 1"),
            self.host(2),
            self.host(1),
            overlay_addr(1),
            5002,
            50 * MIB,
            TRANSFER_TIMEOUT,
        );
    }
}

/// Starts weft on host `index`, panicking with the daemon's log and configuration if it fails.
fn start(
    bed: &Testbed,
    index: u8,
    backend: Backend,
    config: &ConfigFile,
    env: &[(&str, &str)],
) -> WeftDaemon {
    WeftDaemon::start_with_env(
        weft_exe(),
        bed.host(index).netns(),
        config.path(),
        backend.device(),
        env,
    )
    .unwrap_or_else(|error| {
        let text = std::fs::read_to_string(config.path()).unwrap_or_default();
        panic!("start weft on host {index} (env {env:?}): {error}\nits configuration:\n{text}")
    })
}

/// One snapshot of `daemon`'s counters.
fn snapshot(daemon: &WeftDaemon) -> StatsOutput {
    daemon
        .stats()
        .unwrap_or_else(|error| panic!("weft stats in {}: {error}", daemon.netns()))
}

/// The counter `name` of a snapshot; panics (showing all counters) if weft does not report it.
fn counter(stats: &StatsOutput, label: &str, name: &str) -> u64 {
    stats.get(name).unwrap_or_else(|| {
        panic!("weft stats on {label} has no counter {name}; it printed:\n{stats}")
    })
}

/// Waits (at most [`COUNTER_TIMEOUT`]) until every counter of `names` is above zero on
/// `daemon`; panics naming the ones that stayed zero, with both daemons' logs and counters.
fn assert_positive(pair: &Pair, daemon: &WeftDaemon, label: &str, names: &[&str]) {
    let mut zero = Vec::new();
    let what = format!("{names:?} > 0 on {label}");
    let reached = wait_until(COUNTER_TIMEOUT, &what, || {
        let stats = snapshot(daemon);
        zero = names
            .iter()
            .filter(|name| counter(&stats, label, name) == 0)
            .map(|name| name.to_string())
            .collect();
        zero.is_empty()
    });
    assert!(
        reached.is_ok(),
        "on {label} these counters stayed 0: {zero:?}\n{}",
        pair.logs()
    );
}

/// Requires each `(name, value)` of `expected` on `daemon` right now.
fn assert_counters(pair: &Pair, daemon: &WeftDaemon, label: &str, expected: &[(&str, u64)]) {
    let stats = snapshot(daemon);
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(name, value)| counter(&stats, label, name) != *value)
        .map(|(name, value)| {
            format!(
                "{name} = {} (expected {value})",
                counter(&stats, label, name)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "on {label}: {}\n{}",
        wrong.join(", "),
        pair.logs()
    );
}

/// The counters and gauges of the offload path, printed at the end of every test.
const OFFLOAD_COUNTERS: [&str; 17] = [
    "workers",
    "offload_checksum_bits",
    "offload_tun_vnet_hdr",
    "offload_tun_tso",
    "offload_tun_gso_write",
    "offload_udp_gso",
    "offload_udp_gro",
    "device_rx_super",
    "device_rx_segments",
    "gso_trains",
    "gso_fallbacks",
    "gro_trains",
    "device_tx_super",
    "coalesced_packets",
    "drop_bad_checksum",
    "drop_bad_offload",
    "drop_bad_verdict",
];

/// Prints [`OFFLOAD_COUNTERS`] of every weft daemon of `pair` (shown with `--nocapture`).
fn print_offload_counters(pair: &Pair, what: &str) {
    for (daemon, label) in [(pair.a.as_ref(), "host 1"), (Some(&pair.b), "host 2")] {
        let Some(daemon) = daemon else { continue };
        let stats = snapshot(daemon);
        let values: Vec<String> = OFFLOAD_COUNTERS
            .iter()
            .map(|name| match stats.get(name) {
                Some(value) => format!("{name}={value}"),
                None => format!("{name}=(missing)"),
            })
            .collect();
        eprintln!("{what}, {label}: {}", values.join(" "));
    }
}

/// Every `drop_bad_*` counter of [`OFFLOAD_DROPS`] is zero on `daemon`.
fn assert_no_offload_drops(pair: &Pair, daemon: &WeftDaemon, label: &str) {
    let expected: Vec<(&str, u64)> = OFFLOAD_DROPS.iter().map(|name| (*name, 0)).collect();
    assert_counters(pair, daemon, label, &expected);
}

/// 200 MiB host 1 -> host 2 with offloads (auto) and two workers on both hosts; the sender
/// must have split super-packets into GSO trains, the receiver coalesced GRO trains.
fn large_transfer_with_offloads_and_two_workers(name: &str, backend: Backend) {
    let setup = || HostSetup::engine(EngineConfig::default().workers(2));
    let pair = Pair::new(name, backend, HostA::Weft(setup()), setup(), false);
    pair.assert_transfer(
        &format!("{}: host 1 -> host 2", backend.name()),
        pair.host(1),
        pair.host(2),
        overlay_addr(2),
        5001,
        200 * MIB,
        LARGE_TIMEOUT,
    );
    print_offload_counters(&pair, backend.name());
    assert_positive(
        &pair,
        pair.a(),
        "host 1 (sender)",
        &["device_rx_super", "gso_trains"],
    );
    assert_positive(
        &pair,
        &pair.b,
        "host 2 (receiver)",
        &["gro_trains", "coalesced_packets"],
    );
    // The daemons run on this CPU: they sum checksums with the vectors this process would.
    let bits = u64::from(weft::accelerate_checksums());
    for (daemon, label) in [(pair.a(), "host 1"), (&pair.b, "host 2")] {
        assert_counters(
            &pair,
            daemon,
            label,
            &[("workers", 2), ("offload_checksum_bits", bits)],
        );
        assert_no_offload_drops(&pair, daemon, label);
    }
}

#[test]
fn udp_200mb_with_offloads_and_two_workers() {
    large_transfer_with_offloads_and_two_workers("off-udp200", Backend::Udp);
}

#[test]
fn vxlan_l3_200mb_with_offloads_and_two_workers() {
    large_transfer_with_offloads_and_two_workers("off-vx200", Backend::VxlanL3);
}

#[test]
fn offload_host_and_plain_host_interoperate() {
    for (name, backend) in [("off-mix-u", Backend::Udp), ("off-mix-v", Backend::VxlanL3)] {
        let plain = HostSetup::engine(EngineConfig::default().offload("off").batch(1));
        let pair = Pair::new(
            name,
            backend,
            HostA::Weft(HostSetup::default()),
            plain,
            false,
        );
        pair.assert_hosts_transfer_both_ways(backend.name());
        print_offload_counters(&pair, backend.name());
        // Host 1 really used its offloads (so the mix was a mix) ...
        assert_positive(
            &pair,
            pair.a(),
            &format!("host 1 ({}, offload auto)", backend.name()),
            &["device_rx_super", "gso_trains"],
        );
        // ... and host 2 none.
        let label = format!("host 2 ({}, offload off, batch 1)", backend.name());
        assert_counters(
            &pair,
            &pair.b,
            &label,
            &[
                ("offload_tun_vnet_hdr", 0),
                ("gso_trains", 0),
                ("device_rx_super", 0),
                ("device_tx_super", 0),
            ],
        );
        assert_no_offload_drops(&pair, pair.a(), "host 1");
        assert_no_offload_drops(&pair, &pair.b, &label);
    }
}

#[test]
fn kernel_vxlan_with_offloads_on_and_weft_pods_both_ways() {
    let pair = Pair::new(
        "off-kvx",
        Backend::VxlanL3,
        HostA::Kernel,
        HostSetup::default(),
        true,
    );
    let pod_a = pair.bed.host(1).pod(2);
    let pod_b = pair.bed.host(2).pod(2);
    let transfers: [(&str, &Netns, &Netns, Ipv4Addr, u16); 4] = [
        (
            "pod A (kernel) -> pod B (weft)",
            pod_a.netns(),
            pod_b.netns(),
            pod_b.address(),
            5001,
        ),
        (
            "pod B (weft) -> pod A (kernel)",
            pod_b.netns(),
            pod_a.netns(),
            pod_a.address(),
            5002,
        ),
        (
            "host A (kernel) -> host B (weft)",
            pair.host(1),
            pair.host(2),
            overlay_addr(2),
            5003,
        ),
        (
            "host B (weft) -> host A (kernel)",
            pair.host(2),
            pair.host(1),
            overlay_addr(1),
            5004,
        ),
    ];
    for (what, sender, receiver, destination, port) in transfers {
        pair.assert_transfer(
            what,
            sender,
            receiver,
            destination,
            port,
            50 * MIB,
            TRANSFER_TIMEOUT,
        );
    }
    print_offload_counters(&pair, "kernel vxlan and weft");
    // The kernel's TSO frames crossed the veth whole; weft wrote them to its device as GSO
    // super-packets (their inner TCP checksums are only partial: nothing may be "fixed" into
    // a drop).
    assert_positive(&pair, &pair.b, "host 2 (weft)", &["device_tx_super"]);
    assert_counters(&pair, &pair.b, "host 2 (weft)", &[("drop_bad_checksum", 0)]);
    assert_no_offload_drops(&pair, &pair.b, "host 2 (weft)");
}

#[test]
fn many_concurrent_flows_are_all_delivered() {
    const FLOWS: u16 = 32;
    let setup = || HostSetup::engine(EngineConfig::default().workers(2));
    let pair = Pair::new(
        "off-flows",
        Backend::Udp,
        HostA::Weft(setup()),
        setup(),
        false,
    );
    let ports: Vec<u16> = (0..FLOWS).map(|i| 6000 + i).collect();
    let bytes = 3 * MIB / 2;
    let transfers = tcp_transfers(
        pair.host(1),
        pair.host(2),
        overlay_addr(2),
        &ports,
        bytes,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|error| panic!("{FLOWS} concurrent flows: {error}\n{}", pair.logs()));
    print_offload_counters(&pair, "concurrent flows");
    let broken: Vec<String> = ports
        .iter()
        .zip(&transfers)
        .filter(|(_, transfer)| !transfer.intact())
        .map(|(port, transfer)| format!("port {port}: {transfer}"))
        .collect();
    assert!(
        broken.is_empty(),
        "{} of {FLOWS} flows arrived incomplete or changed:\n{}\n{}",
        broken.len(),
        broken.join("\n"),
        pair.logs()
    );
    let distinct: BTreeSet<&str> = transfers.iter().map(|t| t.sent_sha256.as_str()).collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "every flow carried its own data"
    );
    let slowest = transfers
        .iter()
        .map(|t| t.elapsed)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{FLOWS} flows of {bytes} bytes each, all intact; the slowest took {:.3} s",
        slowest.as_secs_f64()
    );
    // The daemons run on this CPU: they sum checksums with the vectors this process would.
    let bits = u64::from(weft::accelerate_checksums());
    for (daemon, label) in [(pair.a(), "host 1"), (&pair.b, "host 2")] {
        assert_counters(
            &pair,
            daemon,
            label,
            &[("workers", 2), ("offload_checksum_bits", bits)],
        );
        assert_no_offload_drops(&pair, daemon, label);
    }
}

#[test]
fn refused_offloads_fall_back_and_still_carry_traffic() {
    let pair = Pair::new(
        "off-fault",
        Backend::Udp,
        HostA::Weft(HostSetup::env(REFUSE_TUN_OFFLOAD, "1")),
        HostSetup::env(REFUSE_TUN_GSO_WRITE, "1"),
        false,
    );
    pair.assert_hosts_transfer_both_ways("udp, refused offloads");
    print_offload_counters(&pair, "refused offloads");
    // Host 1: vnet headers, but the kernel "refused" TSO: no super-packets came out of it.
    assert_counters(
        &pair,
        pair.a(),
        "host 1 (TUNSETOFFLOAD refused)",
        &[
            ("offload_tun_vnet_hdr", 1),
            ("offload_tun_tso", 0),
            ("device_rx_super", 0),
        ],
    );
    // Host 2: the write probe "failed": every packet was written one by one.
    assert_counters(
        &pair,
        &pair.b,
        "host 2 (GSO writes refused)",
        &[
            ("offload_tun_gso_write", 0),
            ("coalesced_packets", 0),
            ("device_tx_super", 0),
        ],
    );
    // The controls: the half of each host that was not refused still ran (host 2 read
    // super-packets, host 1 wrote coalesced ones), so the zeros above come from the faults.
    assert_positive(
        &pair,
        &pair.b,
        "host 2 (its TSO was not refused)",
        &["device_rx_super"],
    );
    assert_positive(
        &pair,
        pair.a(),
        "host 1 (its GSO writes were not refused)",
        &["coalesced_packets"],
    );
    assert_no_offload_drops(&pair, pair.a(), "host 1");
    assert_no_offload_drops(&pair, &pair.b, "host 2");
}
