//! End-to-end tests of the VXLAN backend: real `weft run` daemons in network namespaces,
//! against each other and against the Linux kernel's vxlan device programmed exactly the way
//! flanneld programs it (TESTBED.md, "The kernel as a peer"), in L3 mode (`flannel.1` as a
//! TUN) and in L2 mode (a TAP in a bridge, the seed's "vxlan + bridge").
//!
//! Every test builds its own two-host topology with unique names, so the tests run in
//! parallel; host 1 runs the kernel's vxlan or weft, host 2 always runs weft. All need root.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{daemon_report, link_counter, require_root, stat, wait_stat, weft_exe};
use weft_testbed::{
    add_bridge, add_kernel_flannel_device, add_kernel_flannel_peer, add_kernel_vxlan_bridge_port,
    l2_pod_addr, l2_pod_mac, overlay_addr, overlay_subnet, ping, tcp_transfer, underlay_addr,
    vtep_mac, BridgePod, ConfigFile, KernelNeighbour, Netns, PacketCapture, Pcap, TempDir, Testbed,
    VxlanConfig, WeftDaemon, L2_BRIDGE, L2_PREFIX_LEN, VXLAN_DEVICE, VXLAN_OVERLAY_MTU, VXLAN_PORT,
    VXLAN_VNI,
};

/// weft's TAP in the L2 tests.
const WEFT_L2_DEVICE: &str = "weft.1";
/// The kernel's vxlan device in the L2 test against the kernel.
const KERNEL_L2_DEVICE: &str = "vxlan0";
/// The size of every TCP transfer.
const TRANSFER_BYTES: u64 = 50 * 1024 * 1024;
/// How long one transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a capture may take to show a packet that was just sent.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);

/// What runs host 1's side of the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostA {
    /// The kernel's vxlan device; in L3 mode with the given kind of neighbour entry.
    Kernel(KernelNeighbour),
    /// `weft run`.
    Weft,
}

/// Two hosts joined by a veth; host 2 runs weft, host 1 the kernel's vxlan or weft.
/// Fields drop in order: daemons first, the namespaces last.
struct VxlanBed {
    /// weft on host 1, if host 1 is not the kernel.
    a: Option<WeftDaemon>,
    /// weft on host 2.
    b: WeftDaemon,
    /// The L2 pods: pod `.11` on host 1 and pod `.12` on host 2 (empty in L3).
    bridge_pods: Vec<BridgePod>,
    /// The configuration files (kept alive while the daemons run).
    _configs: Vec<ConfigFile>,
    /// The namespaces.
    bed: Testbed,
    /// host 1's kernel vxlan device, if it has one.
    kernel_device: Option<&'static str>,
}

impl VxlanBed {
    /// L3 (flannel's vxlan backend): `flannel.1` on both hosts, host 1 = `host_a`; with
    /// `pods`, pod `.2` behind `cni0` on each host.
    fn l3(name: &str, host_a: HostA, pods: bool) -> Self {
        require_root();
        let mut bed = Testbed::two_hosts(name).expect("build the two-host topology");
        if pods {
            bed.add_pod(1, 2, VXLAN_OVERLAY_MTU)
                .expect("add pod 2 to host 1");
            bed.add_pod(2, 2, VXLAN_OVERLAY_MTU)
                .expect("add pod 2 to host 2");
        }
        let mut configs = Vec::new();
        let a = match host_a {
            HostA::Kernel(neighbour) => {
                let netns = bed.host(1).netns();
                add_kernel_flannel_device(netns, 1, &vtep_mac(1))
                    .expect("program the kernel's flannel.1 on host 1");
                add_kernel_flannel_peer(netns, 2, &vtep_mac(2), neighbour)
                    .expect("program host 2 into the kernel's flannel.1 on host 1");
                None
            }
            HostA::Weft => {
                let config = VxlanConfig::l3(1, &[2])
                    .write()
                    .expect("write host 1's config");
                let daemon = start(&bed, 1, &config, VXLAN_DEVICE);
                configs.push(config);
                Some(daemon)
            }
        };
        let config = VxlanConfig::l3(2, &[1])
            .write()
            .expect("write host 2's config");
        let b = start(&bed, 2, &config, VXLAN_DEVICE);
        configs.push(config);
        Self {
            a,
            b,
            bridge_pods: Vec::new(),
            _configs: configs,
            bed,
            kernel_device: (host_a != HostA::Weft).then_some(VXLAN_DEVICE),
        }
    }

    /// L2 ("vxlan + bridge"): a bridge `br0` on each host with one pod of `100.96.0.0/24`
    /// (`.11` on host 1, `.12` on host 2); host 2's weft TAP is enslaved to it, and so is
    /// host 1's weft TAP or kernel vxlan device (learning, flooding to host 2).
    fn l2(name: &str, host_a: HostA) -> Self {
        require_root();
        let bed = Testbed::two_hosts(name).expect("build the two-host topology");
        let mut bridge_pods = Vec::new();
        for host in [1, 2] {
            let netns = bed.host(host).netns();
            add_bridge(netns, L2_BRIDGE).expect("create br0");
            let pod = 10 + host;
            bridge_pods.push(
                BridgePod::attach(
                    netns,
                    L2_BRIDGE,
                    l2_pod_addr(pod),
                    L2_PREFIX_LEN,
                    &l2_pod_mac(pod),
                    VXLAN_OVERLAY_MTU,
                )
                .expect("attach a pod to br0"),
            );
        }
        let mut configs = Vec::new();
        let a = match host_a {
            HostA::Kernel(_) => {
                add_kernel_vxlan_bridge_port(
                    bed.host(1).netns(),
                    1,
                    KERNEL_L2_DEVICE,
                    L2_BRIDGE,
                    &[2],
                )
                .expect("add the kernel's vxlan0 to br0 on host 1");
                None
            }
            HostA::Weft => {
                let config = VxlanConfig::l2(1, WEFT_L2_DEVICE, L2_BRIDGE, &[2])
                    .write()
                    .expect("write host 1's config");
                let daemon = start(&bed, 1, &config, WEFT_L2_DEVICE);
                configs.push(config);
                Some(daemon)
            }
        };
        let config = VxlanConfig::l2(2, WEFT_L2_DEVICE, L2_BRIDGE, &[1])
            .write()
            .expect("write host 2's config");
        let b = start(&bed, 2, &config, WEFT_L2_DEVICE);
        configs.push(config);
        Self {
            a,
            b,
            bridge_pods,
            _configs: configs,
            bed,
            kernel_device: (host_a != HostA::Weft).then_some(KERNEL_L2_DEVICE),
        }
    }

    /// Host `index`'s namespace.
    fn host(&self, index: u8) -> &Netns {
        self.bed.host(index).netns()
    }

    /// weft on host 1.
    fn weft_a(&self) -> &WeftDaemon {
        self.a.as_ref().expect("host 1 runs weft in this test")
    }

    /// The daemons' logs and counters and the kernel's vxlan state, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        match (&self.a, self.kernel_device) {
            (Some(a), _) => text.push_str(&daemon_report("host 1", a)),
            (None, Some(device)) => text.push_str(&kernel_report(self.host(1), device)),
            (None, None) => {}
        }
        text.push_str(&daemon_report("host 2", &self.b));
        text
    }

    /// Pings `destination` from `netns` `count` times and requires every reply.
    fn assert_ping(&self, netns: &Netns, destination: Ipv4Addr, count: u32) {
        let summary = ping(netns, destination, count).expect("run ping");
        assert!(
            summary.all_received(),
            "ping {destination} from {}: {summary}\n{}\n{}",
            netns.name(),
            summary.output.trim(),
            self.logs()
        );
    }

    /// Sends [`TRANSFER_BYTES`] over TCP from `sender` to `destination` on `receiver` and
    /// requires it to arrive complete with a matching SHA-256.
    fn assert_transfer(
        &self,
        what: &str,
        sender: &Netns,
        receiver: &Netns,
        destination: Ipv4Addr,
        port: u16,
    ) {
        let transfer = tcp_transfer(
            sender,
            receiver,
            destination,
            port,
            TRANSFER_BYTES,
            TRANSFER_TIMEOUT,
        )
        .unwrap_or_else(|error| panic!("transfer {what}: {error}\n{}", self.logs()));
        assert!(transfer.intact(), "{what}: {transfer}\n{}", self.logs());
        eprintln!("50 MiB {what}: {transfer}");
    }
}

/// Starts weft on host `index` with `config`, panicking with the daemon's log if it fails.
fn start(bed: &Testbed, index: u8, config: &ConfigFile, device: &str) -> WeftDaemon {
    WeftDaemon::start(weft_exe(), bed.host(index).netns(), config.path(), device).unwrap_or_else(
        |error| {
            let text = std::fs::read_to_string(config.path()).unwrap_or_default();
            panic!("start weft on host {index}: {error}\nits configuration:\n{text}")
        },
    )
}

/// What the kernel's vxlan `device` in `netns` looks like: link, neighbours, FDB, routes.
fn kernel_report(netns: &Netns, device: &str) -> String {
    let mut text = format!(
        "--- kernel vxlan {device} on host 1 ({}) ---\n",
        netns.name()
    );
    let commands: [&[&str]; 4] = [
        &["ip", "-d", "-s", "link", "show", device],
        &["ip", "neigh", "show", "dev", device],
        &["bridge", "fdb", "show", "dev", device],
        &["ip", "route", "show"],
    ];
    for argv in commands {
        text.push_str(&format!("$ {}\n", argv.join(" ")));
        match netns.exec(argv) {
            Ok(output) => {
                text.push_str(&String::from_utf8_lossy(&output.stdout));
                text.push_str(&String::from_utf8_lossy(&output.stderr));
            }
            Err(error) => text.push_str(&format!("{error}\n")),
        }
    }
    text
}

/// Whether `endpoint` as weft prints it (`IP` or `IP:PORT`) is `address` (on port 8472, if
/// a port is printed).
fn is_endpoint(endpoint: &str, address: Ipv4Addr) -> bool {
    let with_port = format!("{address}:{VXLAN_PORT}");
    endpoint == address.to_string() || endpoint == with_port
}

// ---------------------------------------------------------------------------------------
// L3: the kernel's flannel.1 and weft.
// ---------------------------------------------------------------------------------------

#[test]
fn vxlan_l3_kernel_and_weft_hosts_and_pods_ping_each_other() {
    let bed = VxlanBed::l3("vx-kping", HostA::Kernel(KernelNeighbour::Permanent), true);
    let routes = bed.b.vxlan_peer_list().expect("weft peer list");
    assert!(
        routes.iter().any(|route| {
            route.subnet.as_deref() == Some(overlay_subnet(1).as_str())
                && is_endpoint(&route.endpoint, underlay_addr(1))
                && route.vtep_mac.as_deref() == Some(vtep_mac(1).as_str())
        }),
        "weft peer list on host 2 lacks `100.96.1.0/24 198.18.0.1 02:00:00:00:01:00`: {routes:?}"
    );

    bed.assert_ping(bed.host(1), overlay_addr(2), 3);
    bed.assert_ping(bed.host(2), overlay_addr(1), 3);
    let pod_a = bed.bed.host(1).pod(2);
    let pod_b = bed.bed.host(2).pod(2);
    bed.assert_ping(pod_a.netns(), pod_b.address(), 3);
    bed.assert_ping(pod_b.netns(), pod_a.address(), 3);
    // 12 echo requests and replies crossed, half each way.
    assert!(stat(&bed.b, "tx_packets") >= 12, "{}", bed.logs());
    assert!(stat(&bed.b, "rx_packets") >= 12, "{}", bed.logs());
}

#[test]
fn vxlan_l3_kernel_and_weft_tcp_50mb_both_ways_arrives_with_matching_sha256() {
    let bed = VxlanBed::l3("vx-ktcp", HostA::Kernel(KernelNeighbour::Permanent), true);
    let pod_a = bed.bed.host(1).pod(2);
    let pod_b = bed.bed.host(2).pod(2);
    bed.assert_transfer(
        "pod A (kernel) -> pod B (weft)",
        pod_a.netns(),
        pod_b.netns(),
        pod_b.address(),
        5001,
    );
    bed.assert_transfer(
        "pod B (weft) -> pod A (kernel)",
        pod_b.netns(),
        pod_a.netns(),
        pod_a.address(),
        5002,
    );
    bed.assert_transfer(
        "host A (kernel) -> host B (weft)",
        bed.host(1),
        bed.host(2),
        overlay_addr(2),
        5003,
    );
    bed.assert_transfer(
        "host B (weft) -> host A (kernel)",
        bed.host(2),
        bed.host(1),
        overlay_addr(1),
        5004,
    );
}

#[test]
fn vxlan_l3_kernel_without_neighbour_entry_resolves_weft_by_arp() {
    let bed = VxlanBed::l3("vx-karp", HostA::Kernel(KernelNeighbour::Arp), false);
    let gateway = overlay_addr(2).to_string();
    let neighbour = bed
        .host(1)
        .ip(&["neigh", "show", &gateway, "dev", VXLAN_DEVICE])
        .expect("ip neigh show");
    assert!(
        !neighbour.contains("lladdr"),
        "the kernel already knows 100.96.2.0 before any traffic: {neighbour}"
    );

    bed.assert_ping(bed.host(1), overlay_addr(2), 3);
    assert!(
        stat(&bed.b, "neigh_replies") > 0,
        "the kernel reached weft without weft answering its ARP request\n{}",
        bed.logs()
    );
    let neighbour = bed
        .host(1)
        .ip(&["neigh", "show", &gateway, "dev", VXLAN_DEVICE])
        .expect("ip neigh show");
    assert!(
        neighbour.contains(&format!("lladdr {}", vtep_mac(2))),
        "the kernel resolved 100.96.2.0 to something else than weft's VTEP MAC: {neighbour}\n{}",
        bed.logs()
    );
    bed.assert_ping(bed.host(2), overlay_addr(1), 3);
}

// ---------------------------------------------------------------------------------------
// L3: weft and weft.
// ---------------------------------------------------------------------------------------

#[test]
fn vxlan_l3_weft_and_weft_ping_both_ways_and_tcp_arrives_intact() {
    let bed = VxlanBed::l3("vx-wl3", HostA::Weft, true);
    bed.assert_ping(bed.host(1), overlay_addr(2), 3);
    bed.assert_ping(bed.host(2), overlay_addr(1), 3);
    let pod_a = bed.bed.host(1).pod(2);
    let pod_b = bed.bed.host(2).pod(2);
    bed.assert_ping(pod_a.netns(), pod_b.address(), 2);
    bed.assert_ping(pod_b.netns(), pod_a.address(), 2);
    bed.assert_transfer(
        "pod A (weft) -> pod B (weft)",
        pod_a.netns(),
        pod_b.netns(),
        pod_b.address(),
        5001,
    );
    assert!(stat(bed.weft_a(), "tx_packets") > 0, "{}", bed.logs());
}

// ---------------------------------------------------------------------------------------
// L2: TAPs in bridges.
// ---------------------------------------------------------------------------------------

/// Waits until `daemon`'s FDB has `mac` learned at `vtep`.
fn assert_learned(bed: &VxlanBed, daemon: &WeftDaemon, mac: &str, vtep: Ipv4Addr) {
    let mut last = Vec::new();
    let learned = weft_testbed::wait_until(
        Duration::from_secs(5),
        &format!(
            "weft fdb list in {} to show {mac} learned at {vtep}",
            daemon.netns()
        ),
        || {
            last = daemon.fdb_list(None).expect("weft fdb list");
            last.iter().any(|entry| {
                entry.mac.eq_ignore_ascii_case(mac)
                    && entry.learned
                    && is_endpoint(&entry.endpoint, vtep)
            })
        },
    );
    if let Err(error) = learned {
        panic!("{error}; the FDB: {last:?}\n{}", bed.logs());
    }
}

#[test]
fn vxlan_l2_weft_and_weft_pods_ping_and_fdb_learns_the_remote_pod() {
    let bed = VxlanBed::l2("vx-wl2", HostA::Weft);
    let (pod_a, pod_b) = (&bed.bridge_pods[0], &bed.bridge_pods[1]);
    bed.assert_ping(pod_a.netns(), pod_b.address(), 3);
    bed.assert_ping(pod_b.netns(), pod_a.address(), 3);
    assert_learned(&bed, &bed.b, pod_a.mac(), underlay_addr(1));
    assert_learned(&bed, bed.weft_a(), pod_b.mac(), underlay_addr(2));
    // TCP through both TAPs with offloads: host 1 reads the bridge's super-frames and
    // splits them, host 2 writes coalesced super-frames into its TAP.
    bed.assert_transfer(
        "L2 pod A (weft) -> pod B (weft)",
        pod_a.netns(),
        pod_b.netns(),
        pod_b.address(),
        5003,
    );
    let sender = bed.weft_a();
    for name in ["device_rx_super", "gso_trains"] {
        wait_stat(sender, name, 1);
    }
    for name in ["gro_trains", "coalesced_packets", "device_tx_super"] {
        wait_stat(&bed.b, name, 1);
    }
    for daemon in [sender, &bed.b] {
        for drop in ["drop_bad_checksum", "drop_bad_offload", "drop_bad_verdict"] {
            assert_eq!(stat(daemon, drop), 0, "{drop}\n{}", bed.logs());
        }
    }
}

#[test]
fn vxlan_l2_kernel_bridge_and_weft_pods_ping_tcp_and_fdb_learns_the_kernel_side_pod() {
    let bed = VxlanBed::l2("vx-kl2", HostA::Kernel(KernelNeighbour::Arp));
    let (pod_a, pod_b) = (&bed.bridge_pods[0], &bed.bridge_pods[1]);
    bed.assert_ping(pod_a.netns(), pod_b.address(), 3);
    bed.assert_ping(pod_b.netns(), pod_a.address(), 3);
    assert_learned(&bed, &bed.b, pod_a.mac(), underlay_addr(1));
    // The kernel, learning too, must have put weft's pod behind 198.18.0.2.
    let fdb = bed
        .host(1)
        .exec_ok(&["bridge", "fdb", "show", "dev", KERNEL_L2_DEVICE])
        .expect("bridge fdb show");
    assert!(
        fdb.lines()
            .any(|line| line.starts_with(pod_b.mac()) && line.contains("dst 198.18.0.2")),
        "the kernel did not learn {} at 198.18.0.2:\n{fdb}\n{}",
        pod_b.mac(),
        bed.logs()
    );
    bed.assert_transfer(
        "L2 pod A (kernel) -> pod B (weft)",
        pod_a.netns(),
        pod_b.netns(),
        pod_b.address(),
        5001,
    );
    bed.assert_transfer(
        "L2 pod B (weft) -> pod A (kernel)",
        pod_b.netns(),
        pod_a.netns(),
        pod_a.address(),
        5002,
    );
}

// ---------------------------------------------------------------------------------------
// Hostile datagrams.
// ---------------------------------------------------------------------------------------

/// A VXLAN datagram to forge: header fields, inner Ethernet addresses, an inner ICMP echo
/// request, and an optional cut.
#[derive(Clone, Debug)]
struct Forged {
    flags: u8,
    vni: u32,
    dst_mac: String,
    src_mac: String,
    inner_source: Ipv4Addr,
    inner_destination: Ipv4Addr,
    /// Send only the first this many bytes of the UDP payload.
    truncate: Option<usize>,
}

impl Forged {
    /// What the kernel or weft on host 1 would send to host 2 for a ping from 100.96.1.0 to
    /// 100.96.2.0.
    fn valid() -> Self {
        Self {
            flags: 0x08,
            vni: VXLAN_VNI,
            dst_mac: vtep_mac(2),
            src_mac: vtep_mac(1),
            inner_source: overlay_addr(1),
            inner_destination: overlay_addr(2),
            truncate: None,
        }
    }
}

/// Builds one VXLAN datagram in Python and sends it from `bind` (ephemeral port) to
/// `destination:port`.
const FORGE_VXLAN: &str = r#"
import socket, struct, sys

(bind, destination, port, flags, vni, dst_mac, src_mac,
 inner_source, inner_destination, truncate) = sys.argv[1:11]

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def mac(text):
    return bytes(int(octet, 16) for octet in text.split(":"))

icmp = struct.pack("!BBHHH", 8, 0, 0, 0x7778, 1) + b"weft vxlan end-to-end forged frame"
icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
ip = struct.pack(
    "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0x4321, 0x4000, 64, 1, 0,
    socket.inet_aton(inner_source), socket.inet_aton(inner_destination))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
frame = mac(dst_mac) + mac(src_mac) + struct.pack("!H", 0x0800) + ip + icmp
header = struct.pack("!B3sI", int(flags), b"\0\0\0", int(vni) << 8)
payload = header + frame
if int(truncate) >= 0:
    payload = payload[:int(truncate)]

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((bind, 0))
sent = sock.sendto(payload, (destination, int(port)))
print("sent", sent, "bytes from", sock.getsockname())
"#;

/// Sends `forged` from host 1's underlay address (a known peer) to weft on host 2.
fn send_forged(netns: &Netns, forged: &Forged) {
    let args = [
        underlay_addr(1).to_string(),
        underlay_addr(2).to_string(),
        VXLAN_PORT.to_string(),
        forged.flags.to_string(),
        forged.vni.to_string(),
        forged.dst_mac.clone(),
        forged.src_mac.clone(),
        forged.inner_source.to_string(),
        forged.inner_destination.to_string(),
        forged
            .truncate
            .map_or_else(|| "-1".to_owned(), |len| len.to_string()),
    ];
    let mut argv = vec!["python3", "-c", FORGE_VXLAN];
    argv.extend(args.iter().map(String::as_str));
    netns
        .exec_ok(&argv)
        .unwrap_or_else(|error| panic!("send a forged datagram from {}: {error}", netns.name()));
}

/// Every `drop_*` counter of `daemon`.
fn drop_counters(daemon: &WeftDaemon) -> BTreeMap<String, u64> {
    daemon
        .stats()
        .expect("weft stats")
        .iter()
        .filter(|(name, _)| name.starts_with("drop_"))
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// Sends `forged` from host 1 to weft on host 2 (weft and weft, L3) and checks that exactly
/// `drop_counter` went up, by one, no other drop counter moved, and nothing was delivered:
/// neither weft's `rx_packets` nor the kernel's count of packets written into host 2's
/// `flannel.1`. Then, as the control of that check, a real ping does move both.
fn assert_forged_dropped(name: &str, drop_counter: &str, forged: Forged) {
    let bed = VxlanBed::l3(name, HostA::Weft, false);
    let device_before = link_counter(bed.host(2), VXLAN_DEVICE, "rx_packets");
    let delivered_before = stat(&bed.b, "rx_packets");
    let drops_before = drop_counters(&bed.b);
    assert!(
        drops_before.contains_key(drop_counter),
        "weft stats has no counter {drop_counter}: {drops_before:?}"
    );

    send_forged(bed.host(1), &forged);
    wait_stat(&bed.b, drop_counter, drops_before[drop_counter] + 1);
    let drops_after = drop_counters(&bed.b);
    let moved: BTreeMap<&str, (u64, u64)> = drops_after
        .iter()
        .filter_map(|(name, &after)| {
            let before = drops_before.get(name).copied().unwrap_or(0);
            (after != before).then_some((name.as_str(), (before, after)))
        })
        .collect();
    assert_eq!(
        moved,
        BTreeMap::from([(
            drop_counter,
            (drops_before[drop_counter], drops_before[drop_counter] + 1)
        )]),
        "one forged datagram ({forged:?}) should move exactly {drop_counter}, by one\n{}",
        bed.logs()
    );
    assert_eq!(
        stat(&bed.b, "rx_packets"),
        delivered_before,
        "weft on host 2 counted the forged datagram as delivered\n{}",
        bed.logs()
    );
    assert_eq!(
        link_counter(bed.host(2), VXLAN_DEVICE, "rx_packets"),
        device_before,
        "the forged datagram reached host 2's {VXLAN_DEVICE}\n{}",
        bed.logs()
    );

    bed.assert_ping(bed.host(1), overlay_addr(2), 1);
    assert!(
        link_counter(bed.host(2), VXLAN_DEVICE, "rx_packets") > device_before,
        "a real ping did not move host 2's {VXLAN_DEVICE} rx_packets"
    );
    assert!(
        stat(&bed.b, "rx_packets") > delivered_before,
        "a real ping did not move weft's rx_packets on host 2"
    );
}

#[test]
fn vxlan_forged_valid_frame_is_delivered_so_the_forger_is_sound() {
    let bed = VxlanBed::l3("vx-fvalid", HostA::Weft, false);
    let device_before = link_counter(bed.host(2), VXLAN_DEVICE, "rx_packets");
    let delivered_before = stat(&bed.b, "rx_packets");
    let drops_before = drop_counters(&bed.b);
    send_forged(bed.host(1), &Forged::valid());
    wait_stat(&bed.b, "rx_packets", delivered_before + 1);
    weft_testbed::wait_until(
        Duration::from_secs(5),
        "the forged echo request to reach host 2's flannel.1",
        || link_counter(bed.host(2), VXLAN_DEVICE, "rx_packets") > device_before,
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", bed.logs()));
    assert_eq!(drop_counters(&bed.b), drops_before, "{}", bed.logs());
}

#[test]
fn vxlan_datagram_with_unknown_vni_is_dropped() {
    let forged = Forged {
        vni: 2,
        ..Forged::valid()
    };
    assert_forged_dropped("vx-fvni", "drop_unknown_vni", forged);
}

#[test]
fn vxlan_datagram_without_i_flag_is_dropped() {
    let forged = Forged {
        flags: 0x00,
        ..Forged::valid()
    };
    assert_forged_dropped("vx-fflag", "drop_vxlan_no_i_flag", forged);
}

#[test]
fn vxlan_datagram_shorter_than_header_and_ethernet_is_dropped() {
    // 8 bytes of VXLAN header and 13 of the 14 bytes of the inner Ethernet header.
    let forged = Forged {
        truncate: Some(8 + 13),
        ..Forged::valid()
    };
    assert_forged_dropped("vx-fshort", "drop_vxlan_too_short", forged);
}

#[test]
fn vxlan_frame_with_weft_own_source_mac_is_dropped() {
    let forged = Forged {
        src_mac: vtep_mac(2),
        ..Forged::valid()
    };
    assert_forged_dropped("vx-fown", "drop_own_source_mac", forged);
}

// ---------------------------------------------------------------------------------------
// The wire: weft's encapsulation next to the kernel's.
// ---------------------------------------------------------------------------------------

/// The fields of one captured VXLAN-in-UDP-in-IPv4 datagram.
#[derive(Debug)]
struct VxlanDatagram {
    source: Ipv4Addr,
    destination: Ipv4Addr,
    fragmented: bool,
    source_port: u16,
    destination_port: u16,
    /// The UDP length field.
    udp_len: usize,
    /// The 8-byte VXLAN header.
    header: [u8; 8],
    /// The inner Ethernet frame.
    frame: Vec<u8>,
}

impl VxlanDatagram {
    /// Parses an Ethernet frame captured on the underlay; `None` if it is no IPv4/UDP
    /// datagram with at least a VXLAN and an Ethernet header.
    fn parse(outer: &[u8]) -> Option<Self> {
        if outer.get(12..14)? != [0x08, 0x00] {
            return None;
        }
        let ip = outer.get(14..)?;
        let header_len = usize::from(ip.first()? & 0x0f) * 4;
        if ip[0] >> 4 != 4 || *ip.get(9)? != 17 || header_len < 20 {
            return None;
        }
        let total_len = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
        let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
        let udp = ip.get(header_len..total_len)?;
        let payload = udp.get(8..)?;
        Some(Self {
            source: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            destination: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            fragmented: fragment & 0x3fff != 0,
            source_port: u16::from_be_bytes([udp[0], udp[1]]),
            destination_port: u16::from_be_bytes([udp[2], udp[3]]),
            udp_len: usize::from(u16::from_be_bytes([udp[4], udp[5]])),
            header: payload.get(..8)?.try_into().ok()?,
            frame: payload.get(8..)?.to_vec(),
        })
    }

    /// The inner IP packet, if the inner frame carries IPv4.
    fn inner_ip(&self) -> Option<&[u8]> {
        ethernet_ipv4(&self.frame)
    }
}

/// The IPv4 packet of an Ethernet frame, trimmed to its total length (no padding).
fn ethernet_ipv4(frame: &[u8]) -> Option<&[u8]> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    trim_ipv4(frame.get(14..)?)
}

/// `packet` cut to its IPv4 total length; `None` if it is no IPv4 packet.
fn trim_ipv4(packet: &[u8]) -> Option<&[u8]> {
    if packet.first()? >> 4 != 4 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    packet.get(..total_len)
}

/// The IPv4 packet of a captured packet of link type `link_type`.
fn captured_ipv4(link_type: u32, packet: &[u8]) -> Option<&[u8]> {
    match link_type {
        Pcap::ETHERNET => ethernet_ipv4(packet),
        // LINKTYPE_RAW, and DLT_RAW's values on some systems.
        Pcap::RAW | 12 | 14 => trim_ipv4(packet),
        _ => None,
    }
}

/// Whether `ip` is an ICMP echo request (`type_ == 8`) or reply (`0`) from `source` to
/// `destination`.
fn is_echo(ip: &[u8], type_: u8, source: Ipv4Addr, destination: Ipv4Addr) -> bool {
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    ip.len() > header_len
        && ip[9] == 1
        && ip[12..16] == source.octets()
        && ip[16..20] == destination.octets()
        && ip[header_len] == type_
}

/// Waits until `capture` holds a packet whose IPv4 content satisfies `wanted`; returns the
/// whole captured packet.
fn wait_captured(
    capture: &PacketCapture,
    what: &str,
    wanted: impl Fn(&[u8]) -> bool,
) -> (u32, Vec<u8>) {
    let mut seen = 0;
    weft_testbed::wait_for(CAPTURE_TIMEOUT, what, || {
        let pcap = capture.packets().expect("read the capture");
        seen = pcap.packets.len();
        let link_type = pcap.link_type;
        pcap.packets
            .into_iter()
            .find(|packet| captured_ipv4(link_type, packet).is_some_and(&wanted))
            .map(|packet| (link_type, packet))
    })
    .unwrap_or_else(|error| panic!("{error} ({seen} packets in {})", capture.path().display()))
}

/// Waits until the underlay capture holds the VXLAN datagram from `source` whose inner IPv4
/// packet satisfies `wanted`.
fn wait_datagram(
    capture: &PacketCapture,
    what: &str,
    source: Ipv4Addr,
    wanted: impl Fn(&[u8]) -> bool,
) -> VxlanDatagram {
    let mut seen = 0;
    weft_testbed::wait_for(CAPTURE_TIMEOUT, what, || {
        let pcap = capture.packets().expect("read the capture");
        seen = pcap.packets.len();
        pcap.packets
            .iter()
            .filter_map(|packet| VxlanDatagram::parse(packet))
            .find(|datagram| datagram.source == source && datagram.inner_ip().is_some_and(&wanted))
    })
    .unwrap_or_else(|error| panic!("{error} ({seen} packets in {})", capture.path().display()))
}

#[test]
fn vxlan_l3_weft_encapsulation_on_the_wire_matches_the_kernel() {
    let bed = VxlanBed::l3("vx-wire", HostA::Kernel(KernelNeighbour::Permanent), false);
    let port = VXLAN_PORT.to_string();
    let underlay = PacketCapture::start(bed.host(2), "u0", &["udp", "dst", "port", &port])
        .expect("capture host 2's u0");
    let kernel_device = PacketCapture::start(bed.host(1), VXLAN_DEVICE, &["icmp"])
        .expect("capture flannel.1 of host 1");
    let weft_device = PacketCapture::start(bed.host(2), VXLAN_DEVICE, &["icmp"])
        .expect("capture flannel.1 of host 2");

    bed.assert_ping(bed.host(1), overlay_addr(2), 1);
    let (a, b) = (overlay_addr(1), overlay_addr(2));
    let request = |ip: &[u8]| is_echo(ip, 8, a, b);
    let reply = |ip: &[u8]| is_echo(ip, 0, b, a);

    let by_kernel = wait_datagram(
        &underlay,
        "the kernel's encapsulated echo request on u0",
        underlay_addr(1),
        request,
    );
    let by_weft = wait_datagram(
        &underlay,
        "weft's encapsulated echo reply on u0",
        underlay_addr(2),
        reply,
    );
    let logs = bed.logs();
    eprintln!("kernel: {by_kernel:?}\nweft:   {by_weft:?}");

    // The outer headers: both to port 8472, unfragmented, lengths consistent, and the
    // 8-byte VXLAN header byte for byte the kernel's: I flag, VNI 1, reserved bits zero.
    let expected_header = [0x08, 0, 0, 0, 0, 0, 0x01, 0];
    assert_eq!(
        by_kernel.header, expected_header,
        "the kernel's VXLAN header"
    );
    assert_eq!(
        by_weft.header, expected_header,
        "weft's VXLAN header\n{logs}"
    );
    for datagram in [&by_kernel, &by_weft] {
        assert_eq!(
            datagram.destination_port, VXLAN_PORT,
            "{datagram:?}\n{logs}"
        );
        assert!(!datagram.fragmented, "{datagram:?}\n{logs}");
        assert_eq!(
            datagram.udp_len,
            8 + 8 + datagram.frame.len(),
            "UDP length of {datagram:?}\n{logs}"
        );
    }
    // RFC 7348 section 5: a per-flow source port, by default from Linux's ephemeral range.
    assert!(
        (32768..=60999).contains(&by_weft.source_port),
        "weft's UDP source port {} is outside the default source_ports 32768-60999\n{logs}",
        by_weft.source_port
    );
    assert_eq!(by_weft.destination, underlay_addr(1));
    // Request and reply are the same size, so the encapsulations must be too.
    assert_eq!(
        by_weft.udp_len, by_kernel.udp_len,
        "the echo reply's datagram differs in size from the echo request's\n{logs}"
    );

    // The inner Ethernet headers: source = the sender's VTEP MAC, destination = the
    // receiver's, ethertype IPv4; weft's is the kernel's mirrored.
    let mac_bytes = |mac: String| -> Vec<u8> {
        mac.split(':')
            .map(|octet| u8::from_str_radix(octet, 16).expect("hex"))
            .collect()
    };
    let (mac_a, mac_b) = (mac_bytes(vtep_mac(1)), mac_bytes(vtep_mac(2)));
    assert_eq!(
        by_kernel.frame[..6],
        mac_b[..],
        "kernel: inner destination MAC"
    );
    assert_eq!(
        by_kernel.frame[6..12],
        mac_a[..],
        "kernel: inner source MAC"
    );
    assert_eq!(
        by_weft.frame[..6],
        mac_a[..],
        "weft: inner destination MAC\n{logs}"
    );
    assert_eq!(
        by_weft.frame[6..12],
        mac_b[..],
        "weft: inner source MAC\n{logs}"
    );
    assert_eq!(
        by_weft.frame[12..14],
        [0x08, 0x00],
        "weft: inner ethertype\n{logs}"
    );

    // The inner packets: what weft read from its TUN went out unchanged (TTL included), and
    // what the kernel sent arrived in weft's TUN unchanged.
    let (_, reply_read) =
        wait_captured(&weft_device, "the echo reply on host 2's flannel.1", reply);
    let (link_type, request_written) = wait_captured(
        &weft_device,
        "the echo request on host 2's flannel.1",
        request,
    );
    let request_written = captured_ipv4(link_type, &request_written)
        .expect("IPv4")
        .to_vec();
    let reply_read = captured_ipv4(link_type, &reply_read)
        .expect("IPv4")
        .to_vec();
    assert_eq!(
        by_weft.inner_ip(),
        Some(&reply_read[..]),
        "weft's inner packet differs from what it read from flannel.1\n{logs}"
    );
    assert_eq!(
        by_kernel.inner_ip(),
        Some(&request_written[..]),
        "weft wrote into flannel.1 something else than the kernel's inner packet\n{logs}"
    );

    // And the kernel: its frame on the wire is the one on its device, and weft's frame is
    // exactly what the kernel's device received.
    let (_, kernel_sent) = wait_captured(
        &kernel_device,
        "the echo request on host 1's flannel.1",
        request,
    );
    let (_, kernel_received) = wait_captured(
        &kernel_device,
        "the echo reply on host 1's flannel.1",
        reply,
    );
    assert_eq!(
        by_kernel.frame, kernel_sent,
        "the kernel's own frame on the wire"
    );
    assert_eq!(
        ethernet_ipv4(&by_weft.frame),
        ethernet_ipv4(&kernel_received),
        "the kernel's flannel.1 received another packet than weft sent\n{logs}"
    );
    assert_eq!(
        by_weft.frame[..14],
        kernel_received[..14],
        "the kernel's flannel.1 received another Ethernet header than weft sent\n{logs}"
    );
}

// ---------------------------------------------------------------------------------------
// The VTEP MAC.
// ---------------------------------------------------------------------------------------

/// The `vtep_mac <mac>` of weft's `up:` log line.
fn logged_vtep_mac(daemon: &WeftDaemon) -> String {
    weft_testbed::wait_for(
        Duration::from_secs(5),
        &format!("weft in {} to log `up: ... vtep_mac <mac>`", daemon.netns()),
        || {
            let log = daemon.log();
            let line = log.lines().find(|line| line.contains("up:"))?;
            let mut words = line.split(|c: char| c.is_whitespace() || c == ',' || c == ')');
            words.find(|word| *word == "vtep_mac")?;
            words.find(|word| !word.is_empty()).map(str::to_owned)
        },
    )
    .unwrap_or_else(|error| panic!("{error}; its log:\n{}", daemon.log()))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let octets: Vec<u8> = text
        .split(':')
        .map(|octet| (octet.len() == 2).then(|| u8::from_str_radix(octet, 16).ok())?)
        .collect::<Option<_>>()?;
    octets.try_into().ok()
}

#[test]
fn vxlan_generated_vtep_mac_is_locally_administered_unicast_and_kept_across_restarts() {
    require_root();
    let bed = Testbed::two_hosts("vx-mac").expect("build the two-host topology");
    let state = TempDir::new("vx-macfile").expect("temporary directory");
    let mac_file = state.path().join("vtep.mac");
    let mut config = VxlanConfig::l3(2, &[1]);
    config.vtep_mac = None;
    config.mac_file = Some(mac_file.clone());
    let config = config.write().expect("write the config");

    let mut first = start(&bed, 2, &config, VXLAN_DEVICE);
    let generated = logged_vtep_mac(&first);
    let octets = parse_mac(&generated)
        .unwrap_or_else(|| panic!("weft logged vtep_mac {generated:?}, not a MAC"));
    assert_eq!(
        octets[0] & 0x03,
        0x02,
        "{generated} should be locally administered (bit 1) and unicast (bit 0 clear)"
    );
    assert_ne!(octets, [0x02, 0, 0, 0, 0, 0], "{generated} looks unset");
    let stored = std::fs::read_to_string(&mac_file)
        .unwrap_or_else(|error| panic!("read {}: {error}", mac_file.display()));
    assert!(
        stored.to_lowercase().contains(&generated.to_lowercase()),
        "{} holds {stored:?}, not {generated}",
        mac_file.display()
    );
    let status = first
        .stop(Duration::from_secs(10))
        .expect("stop the first weft");
    assert!(status.success(), "weft should exit 0 on SIGTERM: {status}");
    drop(first);

    let second = start(&bed, 2, &config, VXLAN_DEVICE);
    let again = logged_vtep_mac(&second);
    assert!(
        again.eq_ignore_ascii_case(&generated),
        "the VTEP MAC changed across a restart: {generated} then {again}\n{}",
        second.log()
    );
}

/// `(rx_queue, drops)` summed over the UDP sockets bound to local `port` in `netns`, from
/// `/proc/net/udp`.
fn udp_socket_queue_and_drops(netns: &Netns, port: u16) -> (u64, u64) {
    let text = netns
        .exec_ok(&["cat", "/proc/net/udp"])
        .expect("read /proc/net/udp");
    let port_hex = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx_queue:rx_queue tr:tm retrnsmt uid timeout inode ref pointer drops
            if !f.get(1)?.ends_with(&port_hex) {
                return None;
            }
            let rx = u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()?;
            let drops = f.get(12)?.parse::<u64>().ok()?;
            Some((rx, drops))
        })
        .fold((0, 0), |(q, d), (rx, drops)| (q + rx, d + drops))
}

#[test]
fn vxlan_source_port_sockets_take_nothing_in() {
    let bed = VxlanBed::l3("vx-srcq", HostA::Weft, false);
    let h2 = bed.bed.host(2).netns();
    // Host 2's weft sockets other than the VXLAN port: its per-flow source ports.
    let listing = h2
        .exec_ok(&["ss", "-u", "-a", "-n", "-H"])
        .expect("ss in host 2");
    let source_port = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| local.strip_prefix("198.18.0.2:"))
        .filter_map(|p| p.parse::<u16>().ok())
        .find(|&p| p != VXLAN_PORT)
        .unwrap_or_else(|| panic!("no source-port socket in:\n{listing}"));
    // Anyone on the underlay sends junk to it.
    let target = source_port.to_string();
    bed.host(1)
        .exec_ok(&[
            "python3",
            "-c",
            "import socket, sys\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for _ in range(300):\n    s.sendto(b'x' * 1000, (sys.argv[1], int(sys.argv[2])))",
            "198.18.0.2",
            &target,
        ])
        .expect("send junk to a source port");
    let mut last = (0, 0);
    weft_testbed::wait_until(
        Duration::from_secs(10),
        "the kernel to drop the junk at the source-port socket",
        || {
            last = udp_socket_queue_and_drops(h2, source_port);
            last.1 > 0
        },
    )
    .unwrap_or_else(|e| panic!("{e}: (rx_queue, drops) = {last:?}\n{listing}"));
    assert_eq!(last.0, 0, "nothing queued at port {source_port}: {last:?}");
    // The tunnel still works.
    bed.assert_ping(bed.host(1), overlay_addr(2), 2);
}
