//! Multicast VXLAN, the seed's `group 224.1.1.1` experiments: three hosts on one switch,
//! host 1 with the kernel's vxlan device in group 239.1.1.1 on a bridge, hosts 2 and 3 with
//! weft in L2 mode in the same group on a bridge, and no peer listed anywhere. Broadcasts
//! (ARP) go to the group; every VTEP learns where the others' MACs are from what the group
//! carries, and the pods behind all three reach each other. And the seed's other form: a
//! vxlan device with an address of its own, no bridge (weft: an L2 TAP with an address).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use weft_testbed::{
    add_bridge, l2_pod_addr, l2_pod_mac, ping, underlay_addr, wait_until, BridgePod, ConfigFile,
    Netns, Testbed, VxlanConfig, WeftDaemon, L2_BRIDGE, L2_PREFIX_LEN, UNDERLAY_IFNAME,
    VXLAN_OVERLAY_MTU, VXLAN_PORT, VXLAN_VNI,
};

use common::{daemon_report, require_root, stat, weft_exe};

const GROUP: &str = "239.1.1.1";
const WEFT_DEVICE: &str = "weft.1";
const KERNEL_DEVICE: &str = "vxlan0";

/// The kernel's vxlan device `ifname` in the group, learning, on `bridge` when given, else
/// with `address` on it.
fn kernel_group_device(netns: &Netns, host: u8, ifname: &str, bridge: Option<&str>) {
    let vni = VXLAN_VNI.to_string();
    let local = underlay_addr(host).to_string();
    let port = VXLAN_PORT.to_string();
    netns
        .ip(&[
            "link",
            "add",
            ifname,
            "type",
            "vxlan",
            "id",
            &vni,
            "group",
            GROUP,
            "local",
            &local,
            "dev",
            UNDERLAY_IFNAME,
            "dstport",
            &port,
            "learning",
        ])
        .expect("add the kernel's vxlan device in the group");
    let mtu = VXLAN_OVERLAY_MTU.to_string();
    match bridge {
        Some(bridge) => {
            netns
                .ip(&["link", "set", ifname, "mtu", &mtu, "master", bridge, "up"])
                .expect("enslave it");
        }
        None => {
            netns
                .ip(&["link", "set", ifname, "mtu", &mtu, "up"])
                .unwrap();
            let cidr = format!("{}/{L2_PREFIX_LEN}", l2_pod_addr(10 + host));
            netns.ip(&["addr", "add", &cidr, "dev", ifname]).unwrap();
        }
    };
}

/// weft's L2 configuration of `host` in the group, with no peers: on `bridge`, or with an
/// address of its own.
fn weft_group_config(host: u8, bridge: Option<&str>) -> ConfigFile {
    ConfigFile::new(&weft_group_config_text(host, bridge)).expect("write the config")
}

/// The text of [`weft_group_config`].
fn weft_group_config_text(host: u8, bridge: Option<&str>) -> String {
    let mut config = VxlanConfig::l2(host, WEFT_DEVICE, bridge.unwrap_or(L2_BRIDGE), &[]);
    if bridge.is_none() {
        config.bridge = None;
    }
    let mut text =
        config
            .to_toml()
            .replacen("[vxlan]\n", &format!("[vxlan]\ngroup = \"{GROUP}\"\n"), 1);
    if bridge.is_none() {
        // The seed's "vxlan0 with an address": the TAP carries the host's address itself.
        text = text.replacen(
            "[device]\n",
            &format!("[device]\naddress = \"{}\"\n", l2_pod_addr(10 + host)),
            1,
        );
        text = text.replacen(
            "network = \"100.96.0.0/16\"",
            &format!("network = \"100.96.0.0/{L2_PREFIX_LEN}\""),
            1,
        );
    }
    assert!(text.contains("group = "), "{text}");
    text
}

fn start(bed: &Testbed, host: u8, config: &ConfigFile) -> WeftDaemon {
    WeftDaemon::start(
        weft_exe(),
        bed.host(host).netns(),
        config.path(),
        WEFT_DEVICE,
    )
    .unwrap_or_else(|e| panic!("start weft on host {host}: {e}"))
}

/// The kernel's learned FDB of `ifname`: `<mac> dst <ip>` entries.
fn kernel_fdb(netns: &Netns, ifname: &str) -> String {
    netns
        .exec_ok(&["bridge", "fdb", "show", "dev", ifname])
        .unwrap_or_default()
}

fn logs(daemons: &[&WeftDaemon], kernel: &Netns) -> String {
    let mut text: String = daemons.iter().map(|d| daemon_report("weft", d)).collect();
    text.push_str(&kernel_fdb(kernel, KERNEL_DEVICE));
    text
}

#[test]
fn weft_and_the_kernel_in_one_multicast_group_reach_each_other_and_learn() {
    require_root();
    let bed = Testbed::switched("wmcb", 3).expect("three hosts on a switch");
    let mut pods = Vec::new();
    for host in 1..=3u8 {
        let netns = bed.host(host).netns();
        add_bridge(netns, L2_BRIDGE).expect("create br0");
        let pod = 10 + host;
        pods.push(
            BridgePod::attach(
                netns,
                L2_BRIDGE,
                l2_pod_addr(pod),
                L2_PREFIX_LEN,
                &l2_pod_mac(pod),
                VXLAN_OVERLAY_MTU,
            )
            .expect("a pod on br0"),
        );
    }
    kernel_group_device(bed.host(1).netns(), 1, KERNEL_DEVICE, Some(L2_BRIDGE));
    let configs = [
        weft_group_config(2, Some(L2_BRIDGE)),
        weft_group_config(3, Some(L2_BRIDGE)),
    ];
    let b = start(&bed, 2, &configs[0]);
    let c = start(&bed, 3, &configs[1]);
    let kernel = bed.host(1).netns();

    // The group is the only flood target; no peer is configured.
    let peers = b.vxlan_peer_list().unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(
        (peers[0].subnet.as_deref(), peers[0].endpoint.as_str()),
        (None, format!("{GROUP}:{VXLAN_PORT}").as_str())
    );

    for (from, to) in [(0usize, 12u8), (0, 13), (1, 13), (1, 11), (2, 11), (2, 12)] {
        let summary = ping(pods[from].netns(), l2_pod_addr(to), 3).unwrap();
        assert!(
            summary.all_received(),
            "pod {} -> pod {to}: {summary}\n{}",
            11 + from,
            logs(&[&b, &c], kernel)
        );
    }

    // Each side learnt where the others' pods are from what it received.
    for (daemon, host) in [(&b, 2u8), (&c, 3)] {
        let fdb = daemon.fdb_list(None).unwrap();
        for other in (1..=3u8).filter(|&h| h != host) {
            let mac = l2_pod_mac(10 + other);
            let vtep = format!("{}:{VXLAN_PORT}", underlay_addr(other));
            assert!(
                fdb.iter()
                    .any(|e| e.learned && e.mac.eq_ignore_ascii_case(&mac) && e.endpoint == vtep),
                "host {host} learnt {mac} at {vtep}: {fdb:?}"
            );
        }
    }
    let fdb = kernel_fdb(kernel, KERNEL_DEVICE);
    for other in [2u8, 3] {
        let entry = format!("{} dst {}", l2_pod_mac(10 + other), underlay_addr(other));
        assert!(fdb.contains(&entry), "the kernel learnt {entry}:\n{fdb}");
    }
    // Nothing was dropped as coming from an unknown peer: the group's members are heard.
    assert_eq!(stat(&b, "drop_unknown_peer"), 0);
    assert_eq!(stat(&c, "drop_unknown_peer"), 0);
}

#[test]
fn the_seeds_vxlan0_with_an_address_in_a_group() {
    require_root();
    let bed = Testbed::switched("wmca", 2).expect("two hosts on a switch");
    kernel_group_device(bed.host(1).netns(), 1, KERNEL_DEVICE, None);
    let config = weft_group_config(2, None);
    let b = start(&bed, 2, &config);
    let kernel = bed.host(1).netns();
    let to: Ipv4Addr = l2_pod_addr(12);
    wait_until(Duration::from_secs(10), "ping over the group", || {
        ping(kernel, to, 1).is_ok_and(|p| p.all_received())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&b], kernel)));
    let back = ping(bed.host(2).netns(), l2_pod_addr(11), 3).unwrap();
    assert!(back.all_received(), "{back}\n{}", logs(&[&b], kernel));
}

#[test]
fn an_ipv6_group_over_an_ipv6_underlay() {
    require_root();
    let bed = Testbed::switched("wmc6", 2).expect("two hosts on a switch");
    const GROUP6: &str = "ff05::101";
    for host in [1u8, 2] {
        weft_testbed::add_underlay_addr6(bed.host(host).netns(), host).unwrap();
    }
    // Host 1: the kernel's vxlan0 with an address, in the IPv6 group.
    let kernel = bed.host(1).netns();
    let vni = VXLAN_VNI.to_string();
    let port = VXLAN_PORT.to_string();
    let local = weft_testbed::underlay_addr6(1).to_string();
    kernel
        .ip(&[
            "link",
            "add",
            KERNEL_DEVICE,
            "type",
            "vxlan",
            "id",
            &vni,
            "group",
            GROUP6,
            "local",
            &local,
            "dev",
            UNDERLAY_IFNAME,
            "dstport",
            &port,
            "learning",
        ])
        .unwrap();
    let mtu = (VXLAN_OVERLAY_MTU - 20).to_string();
    kernel
        .ip(&["link", "set", KERNEL_DEVICE, "mtu", &mtu, "up"])
        .unwrap();
    let cidr = format!("{}/{L2_PREFIX_LEN}", l2_pod_addr(11));
    kernel
        .ip(&["addr", "add", &cidr, "dev", KERNEL_DEVICE])
        .unwrap();
    // Host 2: weft's TAP with an address, listening on the IPv6 underlay, same group.
    let text = weft_group_config_text(2, None)
        .replacen(
            &format!("address = \"{}\"\nport", underlay_addr(2)),
            &format!("address = \"{}\"\nport", weft_testbed::underlay_addr6(2)),
            1,
        )
        .replacen(GROUP, GROUP6, 1);
    assert!(
        text.contains(GROUP6) && text.contains("fd00:198:18::2"),
        "{text}"
    );
    let config = ConfigFile::new(&text).unwrap();
    let b = start(&bed, 2, &config);
    let to = l2_pod_addr(12);
    wait_until(Duration::from_secs(10), "ping over the IPv6 group", || {
        ping(kernel, to, 1).is_ok_and(|p| p.all_received())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&b], kernel)));
    let fdb = kernel_fdb(kernel, KERNEL_DEVICE);
    assert!(
        fdb.contains(&format!("dst {}", weft_testbed::underlay_addr6(2))),
        "the kernel learnt weft's VTEP over IPv6:\n{fdb}"
    );
}
