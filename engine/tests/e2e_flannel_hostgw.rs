//! End-to-end tests of `weft flannel` without encapsulation, with a real etcd
//! (198.18.0.100) and hosts in namespaces:
//!
//! - host-gw: three hosts on one switch lease their subnets with flanneld's host-gw lease,
//!   create no device, route every other host's subnet via its PublicIP (`ip route`), and
//!   their pods reach each other; a lease written by hand as flanneld writes it gets its
//!   route on every host and loses it when its etcd lease is revoked; a lease whose
//!   PublicIP is behind a router is refused with one log line and gets no route.
//! - vxlan DirectRouting: host 2 shares host 1's L2 segment, host 3 is behind a router.
//!   Host 1 reaches host 2 by a plain route (plain ICMP on the wire, weft's counters stay),
//!   and host 3 through weft (VXLAN on the wire, counters grow).
//! - `weft run` with `direct_routing = true`: the same rule for static `[[peer]]`s, the
//!   kernel route going with its peer (`weft peer del`).
//!
//! All need root.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::flannel::{
    find_lease, peers, put_config, start_flannel, subnet_file, subnet_leases, with_client,
    write_previous_env, PREFIX, UP_TIMEOUT,
};
use common::{require_root, weft_exe};
use weft_testbed::{
    ping, pod_addr, routed_underlay_addr, underlay_addr, wait_until, EtcdServer, NsChild,
    PacketCapture, Pcap, StatsOutput, TempDir, Testbed, UNDERLAY_IFNAME, UNDERLAY_MTU,
    VXLAN_OVERLAY_MTU, VXLAN_PORT,
};

/// How long a lease change may take to reach a host's routes.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// The namespace that runs etcd, on the underlay at 198.18.0.100.
const ETCD_HOST: u8 = 100;
/// The pod on each host: `100.96.<host>.2`.
const POD: u8 = 2;

/// Pins host `index` to 100.96.<index>.0/24 through a previous subnet.env.
fn pin_subnet(dir: &Path, index: u8) {
    write_previous_env(dir, index, &format!("100.96.{index}.1"), 1);
}

/// subnet.env as flanneld writes it for host `index` with `mtu`.
fn subnet_env(index: u8, mtu: u32) -> String {
    format!(
        "FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET=100.96.{index}.1/24\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n"
    )
}

/// Every daemon's log, for failure messages.
fn logs(hosts: &[u8], daemons: &[NsChild]) -> String {
    hosts
        .iter()
        .zip(daemons)
        .map(|(h, d)| format!("--- host {h} ---\n{}", d.stderr()))
        .collect()
}

/// `ip -4 route show` in host `index`.
fn kernel_routes(bed: &Testbed, index: u8) -> String {
    bed.host(index)
        .netns()
        .ip(&["-4", "route", "show"])
        .unwrap_or_default()
}

/// Polls host `index`'s kernel routes until `ok` holds; panics with them and the logs.
fn wait_routes(
    bed: &Testbed,
    index: u8,
    what: &str,
    logs: impl Fn() -> String,
    ok: impl Fn(&str) -> bool,
) {
    let mut last = String::new();
    if wait_until(CHANGE_TIMEOUT, what, || {
        last = kernel_routes(bed, index);
        ok(&last)
    })
    .is_err()
    {
        panic!("host {index}: {what}; ip route:\n{last}\n{}", logs());
    }
}

/// Starts `weft flannel --iface u0` on every host of `hosts` (pinned to its subnet) and
/// waits for each subnet.env with `mtu`.
fn start_all(bed: &Testbed, hosts: &[u8], endpoint: &str, dir: &Path, mtu: u32) -> Vec<NsChild> {
    let daemons: Vec<NsChild> = hosts
        .iter()
        .map(|&h| {
            pin_subnet(dir, h);
            start_flannel(
                bed,
                h,
                endpoint,
                dir,
                &["--iface", UNDERLAY_IFNAME],
                &[],
                &[],
            )
        })
        .collect();
    for &host in hosts {
        let path = subnet_file(dir, host);
        let want = subnet_env(host, mtu);
        wait_until(UP_TIMEOUT, &format!("host {host}'s subnet.env"), || {
            std::fs::read_to_string(&path).is_ok_and(|t| t == want)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}: {:?}\n{}",
                path.display(),
                std::fs::read_to_string(&path),
                logs(hosts, &daemons)
            )
        });
    }
    daemons
}

/// Pings between every ordered pair of pods of `hosts`: the first may wait for routes,
/// then three more must all come back.
fn ping_all(bed: &Testbed, hosts: &[u8], logs: impl Fn() -> String) {
    for &from in hosts {
        for to in hosts.iter().copied().filter(|&to| to != from) {
            let source = bed.host(from).pod(POD).netns();
            let destination = pod_addr(to, POD);
            wait_until(
                UP_TIMEOUT,
                &format!("a ping from pod {} to {destination}", pod_addr(from, POD)),
                || ping(source, destination, 1).is_ok_and(|s| s.all_received()),
            )
            .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
            let summary = ping(source, destination, 3).expect("ping");
            assert!(
                summary.all_received(),
                "pod {} -> {destination}: {summary}\n{}",
                pod_addr(from, POD),
                summary.output
            );
        }
    }
}

#[test]
fn three_host_gw_hosts_route_to_each_other_without_a_device() {
    require_root();
    const HOSTS: [u8; 3] = [1, 2, 3];
    let mut bed = Testbed::switched("flhgw", 3).expect("three switched hosts");
    bed.add_host(ETCD_HOST).expect("the etcd namespace");
    bed.add_router().expect("a router to a second segment");
    for host in HOSTS {
        bed.add_pod(host, POD, UNDERLAY_MTU).expect("a pod");
    }
    let dir = TempDir::new("flhgw").expect("a temp dir");
    let etcd_ns = bed.host(ETCD_HOST).netns();
    let etcd = EtcdServer::start(etcd_ns, underlay_addr(ETCD_HOST)).expect("etcd");
    let endpoint = etcd.endpoint();
    put_config(
        etcd_ns,
        &endpoint,
        r#"{"Network":"100.96.0.0/16","Backend":{"Type":"host-gw"}}"#,
    );

    // FLANNEL_MTU is the interface's MTU, as flanneld's host-gw writes it.
    let daemons = start_all(&bed, &HOSTS, &endpoint, dir.path(), UNDERLAY_MTU);
    let all_logs = || logs(&HOSTS, &daemons);

    // Each lease exactly as flanneld's host-gw writes it, bound to a 24 h etcd lease.
    let leases = subnet_leases(etcd_ns, &endpoint);
    assert_eq!(leases.len(), 3, "{leases:?}");
    for host in HOSTS {
        let key = format!("{PREFIX}/subnets/100.96.{host}.0-24");
        let kv = find_lease(&leases, &key);
        assert_eq!(
            kv.value_str().unwrap(),
            format!(
                r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"host-gw"}}"#,
                underlay_addr(host)
            ),
            "{key}"
        );
        assert_ne!(kv.lease, 0, "{key} is bound to an etcd lease");
    }

    // Every host routes the other two subnets via their PublicIP on u0, and has no device.
    for host in HOSTS {
        wait_routes(&bed, host, "routes to the other hosts", all_logs, |r| {
            HOSTS.iter().filter(|&&o| o != host).all(|&o| {
                r.contains(&format!(
                    "100.96.{o}.0/24 via {} dev {UNDERLAY_IFNAME}",
                    underlay_addr(o)
                ))
            })
        });
        let routes = kernel_routes(&bed, host);
        assert!(
            !routes.contains(&format!("100.96.{host}.0/24 via")),
            "host {host} routes its own subnet away:\n{routes}"
        );
        let links = bed.host(host).netns().ip(&["-o", "link", "show"]).unwrap();
        assert!(
            !links.contains("flannel"),
            "host {host} has a tunnel device:\n{links}"
        );
    }
    ping_all(&bed, &HOSTS, all_logs);

    // A lease written by hand as flanneld's host-gw writes it, on the segment: routed by
    // every host, then gone with its etcd lease.
    let key = format!("{PREFIX}/subnets/100.96.8.0-24");
    let lease_id = with_client(etcd_ns, &endpoint, |c| {
        let lease = c.lease_grant(86_400).unwrap();
        c.put(
            &key,
            r#"{"PublicIP":"198.18.0.8","PublicIPv6":null,"BackendType":"host-gw"}"#,
            lease.id,
        )
        .unwrap();
        lease.id
    });
    for host in HOSTS {
        wait_routes(
            &bed,
            host,
            "the hand-written lease's route",
            all_logs,
            |r| r.contains("100.96.8.0/24 via 198.18.0.8 dev u0"),
        );
    }
    with_client(etcd_ns, &endpoint, |c| c.lease_revoke(lease_id).unwrap());
    for host in HOSTS {
        wait_routes(
            &bed,
            host,
            "the revoked lease's route gone",
            all_logs,
            |r| !r.contains("100.96.8.0"),
        );
    }

    // A lease whose PublicIP is behind the router: refused with one line, no route.
    let behind = routed_underlay_addr(9);
    with_client(etcd_ns, &endpoint, |c| {
        let lease = c.lease_grant(86_400).unwrap();
        c.put(
            format!("{PREFIX}/subnets/100.96.9.0-24"),
            format!(r#"{{"PublicIP":"{behind}","PublicIPv6":null,"BackendType":"host-gw"}}"#),
            lease.id,
        )
        .unwrap();
    });
    let refused =
        format!("lease 100.96.9.0-24: refused: PublicIP {behind} is not on the L2 segment");
    for (&host, daemon) in HOSTS.iter().zip(&daemons) {
        wait_until(CHANGE_TIMEOUT, &format!("host {host} to refuse it"), || {
            daemon.stderr().contains(&refused)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", all_logs()));
        let log = daemon.stderr();
        assert_eq!(log.matches(&refused).count(), 1, "host {host}:\n{log}");
        assert!(log.contains("via the gateway 198.18.0.254"), "{log}");
        let routes = kernel_routes(&bed, host);
        assert!(!routes.contains("100.96.9.0"), "host {host}:\n{routes}");
    }
    // Still refused after a few rechecks, still one line; the others still flow.
    ping_all(&bed, &[1, 2], all_logs);
    for (&host, daemon) in HOSTS.iter().zip(&daemons) {
        assert_eq!(daemon.stderr().matches(&refused).count(), 1, "host {host}");
        assert!(!kernel_routes(&bed, host).contains("100.96.9.0"));
    }

    let mut daemons = daemons;
    for (&host, daemon) in HOSTS.iter().zip(daemons.iter_mut()) {
        assert!(
            daemon.is_running(),
            "host {host} exited:\n{}",
            daemon.stderr()
        );
    }
    drop(daemons);
    drop(etcd);
}

/// `weft stats --device flannel.1` of host `index`'s daemon: its `tx_packets`.
fn tx_packets(bed: &Testbed, index: u8) -> u64 {
    let argv = [
        weft_exe().to_str().unwrap(),
        "stats",
        "--device",
        "flannel.1",
    ];
    let out = bed.host(index).netns().exec_ok(&argv).expect("weft stats");
    StatsOutput::parse(&out)
        .and_then(|s| s.get("tx_packets"))
        .unwrap_or_else(|| panic!("no tx_packets in:\n{out}"))
}

/// The IPv4 packets of an Ethernet capture as (destination, protocol, UDP destination
/// port).
fn ipv4_packets(pcap: &Pcap) -> Vec<(Ipv4Addr, u8, Option<u16>)> {
    assert_eq!(pcap.link_type, Pcap::ETHERNET);
    pcap.packets
        .iter()
        .filter(|p| p.len() >= 34 && p[12..14] == [0x08, 0x00])
        .map(|p| {
            let ip = &p[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let port = (ip[9] == 17 && ip.len() >= ihl + 4)
                .then(|| u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]));
            (dst, ip[9], port)
        })
        .collect()
}

#[test]
fn direct_routing_skips_encapsulation_on_the_same_segment_only() {
    require_root();
    const HOSTS: [u8; 3] = [1, 2, 3];
    let mut bed = Testbed::switched("fldr", 2).expect("two switched hosts");
    bed.add_host(ETCD_HOST).expect("the etcd namespace");
    bed.add_routed_host(3).expect("host 3 behind a router");
    for host in HOSTS {
        bed.add_pod(host, POD, VXLAN_OVERLAY_MTU).expect("a pod");
    }
    let dir = TempDir::new("fldr").expect("a temp dir");
    let etcd_ns = bed.host(ETCD_HOST).netns();
    let etcd = EtcdServer::start(etcd_ns, underlay_addr(ETCD_HOST)).expect("etcd");
    let endpoint = etcd.endpoint();
    put_config(
        etcd_ns,
        &endpoint,
        r#"{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#,
    );
    let daemons = start_all(&bed, &HOSTS, &endpoint, dir.path(), VXLAN_OVERLAY_MTU);
    let all_logs = || logs(&HOSTS, &daemons);
    let host3 = routed_underlay_addr(3);

    // Hosts 1 and 2 route each other directly, and host 3 through weft; host 3 routes both
    // through weft.
    for (host, other) in [(1u8, 2u8), (2, 1)] {
        wait_routes(
            &bed,
            host,
            "a direct route to its neighbour",
            all_logs,
            |r| {
                r.contains(&format!(
                    "100.96.{other}.0/24 via {} dev u0",
                    underlay_addr(other)
                ))
            },
        );
        let want = format!("100.96.3.0/24 {host3}:{VXLAN_PORT}");
        wait_until(CHANGE_TIMEOUT, "host 3 in weft's table", || {
            peers(&bed, host).contains(&want)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", peers(&bed, host), all_logs()));
        let table = peers(&bed, host);
        assert!(
            !table.contains(&format!("100.96.{other}.0/24")),
            "host {host}: the direct neighbour is in weft's table too:\n{table}"
        );
        assert!(!kernel_routes(&bed, host).contains("100.96.3.0/24 via"));
    }
    wait_until(CHANGE_TIMEOUT, "hosts 1 and 2 in host 3's table", || {
        let t = peers(&bed, 3);
        [1, 2].iter().all(|&o| {
            t.contains(&format!(
                "100.96.{o}.0/24 {}:{VXLAN_PORT}",
                underlay_addr(o)
            ))
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", peers(&bed, 3), all_logs()));
    assert!(!kernel_routes(&bed, 3).contains("100.96.1.0/24 via"));
    let log3 = daemons[2].stderr();
    assert!(
        log3.contains("100.96.1.0/24 goes through the VXLAN device"),
        "{log3}"
    );
    ping_all(&bed, &HOSTS, all_logs);

    // Host 1 -> host 2: plain ICMP on u0 to the pod, weft's counters stay.
    let capture =
        PacketCapture::start(bed.host(1).netns(), UNDERLAY_IFNAME, &["ip"]).expect("tcpdump");
    let before = tx_packets(&bed, 1);
    let summary = ping(bed.host(1).pod(POD).netns(), pod_addr(2, POD), 3).expect("ping");
    assert!(summary.all_received(), "pod 1 -> pod 2: {summary}");
    assert_eq!(
        tx_packets(&bed, 1),
        before,
        "traffic to host 2 went through weft\n{}",
        all_logs()
    );
    let plain = |p: &(Ipv4Addr, u8, Option<u16>)| p.0 == pod_addr(2, POD) && p.1 == 1;
    let mut seen = Vec::new();
    wait_until(
        CHANGE_TIMEOUT,
        "3 plain ICMP packets to pod 2 on u0",
        || {
            seen = capture
                .packets()
                .map(|p| ipv4_packets(&p))
                .unwrap_or_default();
            seen.iter().filter(|p| plain(p)).count() >= 3
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    assert!(
        !seen
            .iter()
            .any(|p| p.0 == underlay_addr(2) && p.2 == Some(VXLAN_PORT)),
        "VXLAN to host 2: {seen:?}"
    );

    // Host 1 -> host 3: VXLAN on the wire, counters grow.
    let summary = ping(bed.host(1).pod(POD).netns(), pod_addr(3, POD), 3).expect("ping");
    assert!(summary.all_received(), "pod 1 -> pod 3: {summary}");
    assert!(
        tx_packets(&bed, 1) >= before + 3,
        "traffic to host 3 did not go through weft"
    );
    wait_until(CHANGE_TIMEOUT, "VXLAN packets to host 3 on u0", || {
        seen = capture
            .packets()
            .map(|p| ipv4_packets(&p))
            .unwrap_or_default();
        seen.iter()
            .filter(|p| p.0 == host3 && p.2 == Some(VXLAN_PORT))
            .count()
            >= 3
    })
    .unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    assert!(
        !seen.iter().any(|p| p.0 == pod_addr(3, POD)),
        "plain packets to pod 3 on u0: {seen:?}"
    );
    drop(capture);

    let mut daemons = daemons;
    for (&host, daemon) in HOSTS.iter().zip(daemons.iter_mut()) {
        assert!(
            daemon.is_running(),
            "host {host} exited:\n{}",
            daemon.stderr()
        );
    }
    drop(daemons);
    drop(etcd);
}

#[test]
fn weft_run_direct_routing_routes_peers_on_the_segment_around_the_tunnel() {
    use weft_testbed::{ConfigFile, VxlanConfig, WeftDaemon, VXLAN_DEVICE};
    require_root();
    const HOSTS: [u8; 3] = [1, 2, 3];
    let mut bed = Testbed::switched("wrdr", 2).expect("two switched hosts");
    bed.add_routed_host(3).expect("host 3 behind a router");
    for host in HOSTS {
        bed.add_pod(host, POD, VXLAN_OVERLAY_MTU).expect("a pod");
    }
    // weft run's vxlan L3 configurations, with every peer at its real underlay address and
    // `direct_routing = true` on hosts 1 and 2.
    let configs: Vec<ConfigFile> = HOSTS
        .iter()
        .map(|&h| {
            let others: Vec<u8> = HOSTS.iter().copied().filter(|&o| o != h).collect();
            let mut config = VxlanConfig::l3(h, &others);
            config.listen_address = bed.host(h).underlay_addr();
            for (peer, &o) in config.peers.iter_mut().zip(&others) {
                peer.endpoint = bed.host(o).underlay_addr().to_string();
            }
            let direct = if h == 3 {
                ""
            } else {
                "direct_routing = true\n"
            };
            ConfigFile::new(&format!("{direct}{}", config.to_toml())).expect("a config file")
        })
        .collect();
    let daemons: Vec<WeftDaemon> = HOSTS
        .iter()
        .zip(&configs)
        .map(|(&h, c)| {
            WeftDaemon::start(weft_exe(), bed.host(h).netns(), c.path(), VXLAN_DEVICE)
                .expect("weft run")
        })
        .collect();
    let all_logs = || {
        HOSTS
            .iter()
            .zip(&daemons)
            .map(|(h, d)| format!("--- host {h} ---\n{}", d.log()))
            .collect::<String>()
    };
    for (host, other) in [(1u8, 2u8), (2, 1)] {
        wait_routes(
            &bed,
            host,
            "a direct route to its neighbour",
            all_logs,
            |r| {
                r.contains(&format!(
                    "100.96.{other}.0/24 via {} dev u0",
                    underlay_addr(other)
                ))
            },
        );
        assert!(!kernel_routes(&bed, host).contains("100.96.3.0/24 via"));
    }
    ping_all(&bed, &HOSTS, all_logs);

    // Host 1 -> host 2 skips weft; host 1 -> host 3 goes through it.
    let tx = |d: &WeftDaemon| d.stats().expect("stats").get("tx_packets").unwrap();
    let before = tx(&daemons[0]);
    let summary = ping(bed.host(1).pod(POD).netns(), pod_addr(2, POD), 3).expect("ping");
    assert!(summary.all_received(), "pod 1 -> pod 2: {summary}");
    assert_eq!(tx(&daemons[0]), before, "{}", all_logs());
    let summary = ping(bed.host(1).pod(POD).netns(), pod_addr(3, POD), 3).expect("ping");
    assert!(summary.all_received(), "pod 1 -> pod 3: {summary}");
    assert!(tx(&daemons[0]) >= before + 3, "{}", all_logs());

    // `weft peer del` takes the kernel route with it.
    daemons[0].peer_del("100.96.2.0/24").expect("peer del");
    wait_routes(
        &bed,
        1,
        "the direct route gone with its peer",
        all_logs,
        |r| !r.contains("100.96.2.0/24 via"),
    );
    drop(daemons);
}
