//! End-to-end test of the ARP/ND proxy of VXLAN L2 mode (`[vxlan] proxy`, the kernel vxlan
//! device's `proxy` flag), in the seed's "distributed control center" setup: host 1 is told
//! where the remote pod is (a static `[[fdb]]` entry for its MAC, `[[neigh]]` entries for
//! its addresses), so a local pod's ARP request or neighbour solicitation is answered on
//! host 1 and never flooded, and the ping that follows goes straight to host 2. Host 2 runs
//! the proxy with `neigh_learning`: it learns host 1's pod from the ARP that crosses to it.
//!
//! Two hosts joined by a veth, a bridge `br0` on each with one pod (`100.96.0.11` and
//! `fd00:96::11` on host 1, `.12` / `::12` on host 2) and weft's TAP `weft.1`. Needs root.

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use common::{daemon_report, require_root, stat, wait_stat, weft_exe};
use weft_testbed::{
    add_bridge, l2_pod_addr, l2_pod_mac, ping, underlay_addr, BridgePod, ConfigFile, Netns,
    Testbed, VxlanConfig, WeftDaemon, L2_BRIDGE, L2_PREFIX_LEN, VXLAN_OVERLAY_MTU,
};

/// weft's TAP on both hosts.
const DEVICE: &str = "weft.1";
/// How often an exchange is retried when unrelated multicast (IPv6 router solicitations,
/// MLD reports of the freshly created interfaces) happened to be flooded meanwhile.
const ATTEMPTS: usize = 8;

/// The IPv6 address of pod `pod`: `fd00:96::<pod>`.
fn pod_addr6(pod: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, u16::from(pod))
}

/// Host 1's configuration: weft's L2 configuration with the proxy on, and the remote pod
/// (`.12`) made known the way an agent would: its MAC behind host 2, its addresses at its
/// MAC.
fn host1_config() -> String {
    let base = VxlanConfig::l2(1, DEVICE, L2_BRIDGE, &[2]).to_toml();
    assert!(base.contains("[vxlan]\n"), "{base}");
    let mut text = base.replacen("[vxlan]\n", "[vxlan]\nproxy = true\n", 1);
    let mac = l2_pod_mac(12);
    text.push_str(&format!(
        "\n[[fdb]]\nmac = \"{mac}\"\nendpoint = \"{}\"\n",
        underlay_addr(2)
    ));
    for ip in [IpAddr::V4(l2_pod_addr(12)), IpAddr::V6(pod_addr6(12))] {
        text.push_str(&format!("\n[[neigh]]\nip = \"{ip}\"\nmac = \"{mac}\"\n"));
    }
    text
}

/// Host 2's configuration: the proxy with an empty table that it learns from peers.
fn host2_config() -> String {
    let base = VxlanConfig::l2(2, DEVICE, L2_BRIDGE, &[1]).to_toml();
    base.replacen(
        "[vxlan]\n",
        "[vxlan]\nproxy = true\nneigh_learning = true\n",
        1,
    )
}

/// The two hosts, their pods and daemons. Fields drop in order: daemons, pods, namespaces.
struct ProxyBed {
    a: WeftDaemon,
    b: WeftDaemon,
    pods: Vec<BridgePod>,
    _configs: Vec<ConfigFile>,
    _bed: Testbed,
}

impl ProxyBed {
    fn new(name: &str) -> Self {
        require_root();
        let bed = Testbed::two_hosts(name).expect("build the two-host topology");
        let mut pods = Vec::new();
        for host in [1u8, 2] {
            let netns = bed.host(host).netns();
            add_bridge(netns, L2_BRIDGE).expect("create br0");
            let n = 10 + host;
            let pod = BridgePod::attach(
                netns,
                L2_BRIDGE,
                l2_pod_addr(n),
                L2_PREFIX_LEN,
                &l2_pod_mac(n),
                VXLAN_OVERLAY_MTU,
            )
            .expect("attach a pod to br0");
            let cidr = format!("{}/64", pod_addr6(n));
            pod.netns()
                .ip(&["addr", "add", &cidr, "dev", "eth0", "nodad"])
                .expect("give the pod an IPv6 address");
            pods.push(pod);
        }
        let configs = vec![
            ConfigFile::new(&host1_config()).expect("write host 1's config"),
            ConfigFile::new(&host2_config()).expect("write host 2's config"),
        ];
        let start = |index: u8, config: &ConfigFile| {
            WeftDaemon::start(weft_exe(), bed.host(index).netns(), config.path(), DEVICE)
                .unwrap_or_else(|error| {
                    let text = std::fs::read_to_string(config.path()).unwrap_or_default();
                    panic!("start weft on host {index}: {error}\nits configuration:\n{text}")
                })
        };
        let a = start(1, &configs[0]);
        let b = start(2, &configs[1]);
        Self {
            a,
            b,
            pods,
            _configs: configs,
            _bed: bed,
        }
    }

    fn pod(&self, host: u8) -> &Netns {
        self.pods[usize::from(host - 1)].netns()
    }

    fn logs(&self) -> String {
        format!(
            "{}{}",
            daemon_report("host 1", &self.a),
            daemon_report("host 2", &self.b)
        )
    }

    /// Pings `destination` from pod `host` `count` times; requires every reply.
    fn assert_ping(&self, host: u8, destination: IpAddr, count: u32) {
        let summary = ping(self.pod(host), destination, count).expect("run ping");
        assert!(
            summary.all_received(),
            "ping {destination} from pod {host}: {summary}\n{}\n{}",
            summary.output.trim(),
            self.logs()
        );
    }

    /// `weft <args>` against `daemon`; requires success and returns its output lines.
    fn weft(&self, daemon: &WeftDaemon, args: &[&str]) -> Vec<String> {
        let output = daemon.control(args).expect("run weft");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "weft {}: {}{}",
            args.join(" "),
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout.lines().map(str::to_owned).collect()
    }

    /// Forgets pod `host`'s neighbours, pings `destination` once from it, and returns how
    /// much `daemon`'s `neigh_proxied` and `flood_packets` grew across the exchange. Retried
    /// while unrelated multicast was flooded meanwhile, so a flood counted is the exchange's.
    fn resolve_and_ping(&self, host: u8, daemon: &WeftDaemon, destination: IpAddr) -> (u64, u64) {
        for _ in 0..ATTEMPTS {
            self.pod(host)
                .exec(&["ip", "neigh", "flush", "dev", "eth0"])
                .expect("flush the pod's neighbours (nothing to flush is fine)");
            // Let what the flush or the last attempt set off settle first.
            std::thread::sleep(Duration::from_millis(300));
            let (proxied, floods) = (stat(daemon, "neigh_proxied"), stat(daemon, "flood_packets"));
            self.assert_ping(host, destination, 1);
            std::thread::sleep(Duration::from_millis(300));
            let grown = (
                stat(daemon, "neigh_proxied") - proxied,
                stat(daemon, "flood_packets") - floods,
            );
            // A proxied exchange floods nothing: any flood is noise unless nothing was
            // proxied (then the request itself was flooded, which is what the caller
            // wants to see).
            if grown.1 == 0 || grown.0 == 0 {
                return grown;
            }
            eprintln!("flooded meanwhile ({grown:?}); again");
        }
        panic!(
            "the flood count kept moving across every attempt\n{}",
            self.logs()
        );
    }
}

#[test]
fn vxlan_l2_proxy_answers_arp_and_nd_locally_and_learns_from_peers() {
    let bed = ProxyBed::new("vx-np");
    let pod_b4 = IpAddr::V4(l2_pod_addr(12));
    let pod_b6 = IpAddr::V6(pod_addr6(12));
    let mac_b = l2_pod_mac(12);

    // IPv4: pod A's ARP request for pod B is answered by host 1, not flooded.
    let (proxied, flooded) = bed.resolve_and_ping(1, &bed.a, pod_b4);
    assert_eq!(
        (proxied, flooded),
        (1, 0),
        "one ARP answered on host 1, nothing flooded\n{}",
        bed.logs()
    );
    let neigh = bed
        .pod(1)
        .exec_ok(&["ip", "neigh", "show", &pod_b4.to_string()])
        .expect("ip neigh show");
    assert!(
        neigh.to_ascii_lowercase().contains(&mac_b),
        "pod A resolved pod B to its MAC: {neigh}"
    );
    bed.assert_ping(1, pod_b4, 3);

    // IPv6: the neighbour solicitation likewise.
    let (proxied, flooded) = bed.resolve_and_ping(1, &bed.a, pod_b6);
    assert_eq!(
        (proxied, flooded),
        (1, 0),
        "one solicitation answered on host 1, nothing flooded\n{}",
        bed.logs()
    );
    bed.assert_ping(1, pod_b6, 3);

    // The table through the control socket.
    let list = bed.weft(&bed.a, &["neigh", "list"]);
    for ip in [pod_b4, pod_b6] {
        let line = format!("{ip} {mac_b} static");
        assert!(list.contains(&line), "{line} in {list:?}");
    }
    // Without the entry, the request is flooded again (and still resolved, by pod B).
    bed.weft(&bed.a, &["neigh", "del", "--ip", &pod_b4.to_string()]);
    assert!(!bed
        .weft(&bed.a, &["neigh", "list"])
        .iter()
        .any(|l| l.starts_with(&format!("{pod_b4} "))));
    let (proxied, flooded) = bed.resolve_and_ping(1, &bed.a, pod_b4);
    assert_eq!(proxied, 0, "nothing to answer with\n{}", bed.logs());
    assert!(flooded >= 1, "the ARP request was flooded\n{}", bed.logs());
    // Put back at runtime: answered locally again.
    bed.weft(
        &bed.a,
        &["neigh", "add", "--ip", &pod_b4.to_string(), "--mac", &mac_b],
    );
    let (proxied, flooded) = bed.resolve_and_ping(1, &bed.a, pod_b4);
    assert_eq!((proxied, flooded), (1, 0), "{}", bed.logs());

    // Host 2 learnt pod A from the ARP that crossed to it (pod A's replies to pod B's
    // requests), and answers pod B's next request for pod A itself.
    let pod_a4 = IpAddr::V4(l2_pod_addr(11));
    let learned = format!("{pod_a4} {} learned", l2_pod_mac(11));
    let mut last = Vec::new();
    let found = weft_testbed::wait_until(Duration::from_secs(5), &learned, || {
        last = bed.weft(&bed.b, &["neigh", "list"]);
        last.contains(&learned)
    });
    if let Err(error) = found {
        panic!("{error}: {last:?}\n{}", bed.logs());
    }
    let (proxied, _) = bed.resolve_and_ping(2, &bed.b, pod_a4);
    assert_eq!(
        proxied,
        1,
        "answered on host 2 from what it learnt\n{}",
        bed.logs()
    );
    wait_stat(&bed.b, "neigh_proxied", 1);
    for daemon in [&bed.a, &bed.b] {
        assert_eq!(stat(daemon, "drop_bad_verdict"), 0, "{}", bed.logs());
    }
}
