//! End-to-end tests of `weft flannel`: two hosts join one flannel network through a real etcd
//! (Debian's etcd-server, started by the test inside host 1's namespace and reached over the
//! underlay), lease distinct subnets, write subnet.env, route to each other, and keep their
//! tables in step with leases that come and go, an own lease deleted by an operator, and an
//! etcd that goes away and comes back. All need root.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use common::flannel::{
    find_lease, leased_subnet, peers, start_flannel, subnet_leases, vtep_mac_of, wait_peers,
    wait_written, with_client, write_previous_env, CHANGE_TIMEOUT, CONFIG_UDP, PREFIX, UP_TIMEOUT,
};
use common::{require_root, weft_exe};
use weft::control::etcd::{Client, EtcdConfig};
use weft_testbed::{
    ping, underlay_addr, wait_for, wait_until, EtcdServer, Netns, NsChild, TempDir, Testbed,
};

/// `weft flannel` on host `index`; host 1 finds the underlay interface with
/// `--iface-regex`, host 2 with `--iface-can-reach`.
fn start(bed: &Testbed, index: u8, endpoint: &str, dir: &Path) -> NsChild {
    let iface: &[&str] = if index == 1 {
        &["--iface-regex", "^u0$"]
    } else {
        &["--iface-can-reach", "198.18.0.1"]
    };
    start_flannel(bed, index, endpoint, dir, iface, &[], &[])
}

/// Runs etcd's own `etcdctl` (v3 API) against `endpoint` inside `netns`; its stdout.
fn etcdctl(netns: &Netns, endpoint: &str, args: &[&str]) -> String {
    let mut argv = vec!["env", "ETCDCTL_API=3", "etcdctl", "--endpoints", endpoint];
    argv.extend_from_slice(args);
    netns
        .exec_ok(&argv)
        .unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"))
}

#[test]
fn two_weft_hosts_lease_route_and_follow_changes_through_etcd() {
    require_root();
    let bed = Testbed::two_hosts("fl-udp").expect("two hosts");
    let dir = TempDir::new("weft-flannel").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let mut etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();

    // Host 2 starts before the config exists: it waits for it (and says so).
    let d2 = start(&bed, 2, &endpoint, dir.path());
    wait_until(UP_TIMEOUT, "host 2 to say the config is missing", || {
        d2.stderr().contains("not found in etcd")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d2.stderr()));
    with_client(h1, &endpoint, |c| {
        c.put(format!("{PREFIX}/config"), CONFIG_UDP, 0).unwrap()
    });
    let d1 = start(&bed, 1, &endpoint, dir.path());
    let env1 = wait_written(dir.path(), 1, &d1);
    let env2 = wait_written(dir.path(), 2, &d2);
    for env in [&env1, &env2] {
        assert_eq!(env[0], "FLANNEL_NETWORK=100.96.0.0/16", "{env:?}");
        assert!(env[1].starts_with("FLANNEL_SUBNET=100.96."), "{env:?}");
        assert!(env[1].ends_with(".1/24"), "{env:?}");
        assert_eq!(&env[2..], ["FLANNEL_MTU=1472", "FLANNEL_IPMASQ=false"]);
    }
    let (s1, s2) = (leased_subnet(&env1), leased_subnet(&env2));
    assert_ne!(s1, s2, "two hosts, two subnets");
    for (index, log) in [(1, d1.stderr()), (2, d2.stderr())] {
        let want = format!("using interface u0 ({}, mtu 1500)", underlay_addr(index));
        assert!(log.contains(&want), "host {index}: {want:?} not in:\n{log}");
    }

    // The leases as flanneld writes them: a udp lease has no BackendType, and is bound to
    // a 24 h etcd lease.
    let leases = subnet_leases(h1, &endpoint);
    assert_eq!(leases.len(), 2, "{leases:?}");
    for (subnet, host) in [(s1, 1), (s2, 2)] {
        let key = format!("{PREFIX}/subnets/{subnet}-24");
        let kv = find_lease(&leases, &key);
        assert_eq!(
            kv.value_str().unwrap(),
            format!(
                r#"{{"PublicIP":"{}","PublicIPv6":null}}"#,
                underlay_addr(host)
            )
        );
        assert_ne!(kv.lease, 0, "{key} is bound to an etcd lease");
        let ttl = with_client(h1, &endpoint, |c| c.lease_time_to_live(kv.lease).unwrap());
        assert!(
            ttl.is_some_and(|t| t > 86_000 && t <= 86_400),
            "{key}: ttl {ttl:?}"
        );
    }

    // Traffic between the two leased subnets.
    let to2 = Ipv4Addr::from(u32::from(s2));
    wait_until(
        UP_TIMEOUT,
        "a ping from host 1 to host 2's flannel0",
        || ping(h1, to2, 1).is_ok_and(|s| s.all_received()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", d1.stderr(), d2.stderr()));

    // Read back with etcdctl, our leases are byte for byte what flanneld writes.
    for (subnet, host) in [(s1, 1), (s2, 2)] {
        let value = etcdctl(
            h1,
            &endpoint,
            &[
                "get",
                &format!("{PREFIX}/subnets/{subnet}-24"),
                "--print-value-only",
            ],
        );
        assert_eq!(
            value.trim_end(),
            format!(
                r#"{{"PublicIP":"{}","PublicIPv6":null}}"#,
                underlay_addr(host)
            )
        );
    }

    // A third host's lease written by hand as flanneld writes it (etcdctl, bound to an etcd
    // lease): both tables get its route; the etcd lease revoked (as when it expires): both
    // lose it.
    let third = "100.96.250.0-24";
    let granted = etcdctl(h1, &endpoint, &["lease", "grant", "86400"]);
    let lease_id = granted
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("etcdctl lease grant said {granted:?}"))
        .to_owned();
    etcdctl(
        h1,
        &endpoint,
        &[
            "put",
            &format!("--lease={lease_id}"),
            &format!("{PREFIX}/subnets/{third}"),
            r#"{"PublicIP":"198.18.0.9","PublicIPv6":null}"#,
        ],
    );
    let written = std::time::Instant::now();
    for (index, daemon) in [(1, &d1), (2, &d2)] {
        wait_peers(&bed, index, "the third host's route", daemon, |p| {
            p.contains("100.96.250.0/24 198.18.0.9:8285")
        });
        eprintln!(
            "host {index}: the hand-written lease became a route after {:?}",
            written.elapsed()
        );
    }
    etcdctl(h1, &endpoint, &["lease", "revoke", &lease_id]);
    for (index, daemon) in [(1, &d1), (2, &d2)] {
        wait_peers(&bed, index, "the third host's route removed", daemon, |p| {
            !p.contains("100.96.250.0/24")
        });
    }

    // An operator deletes host 1's lease: host 1 takes it back (same subnet).
    let own = format!("{PREFIX}/subnets/{s1}-24");
    with_client(h1, &endpoint, |c| c.delete(&own).unwrap());
    wait_until(CHANGE_TIMEOUT, "host 1 to take its lease back", || {
        with_client(h1, &endpoint, |c| c.get(&own).ok().flatten()).is_some()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d1.stderr()));
    let summary = ping(h1, to2, 2).expect("ping");
    assert!(
        summary.all_received(),
        "after the lease was taken back: {summary}"
    );

    // etcd goes away: forwarding goes on with the last table; it comes back: the watch
    // resumes and a new lease reaches host 2.
    etcd.stop().expect("stop etcd");
    let summary = ping(h1, to2, 3).expect("ping");
    assert!(summary.all_received(), "without etcd: {summary}");
    etcd.restart().expect("restart etcd");
    with_client(h1, &endpoint, |c| {
        c.put(
            format!("{PREFIX}/subnets/100.96.251.0-24"),
            r#"{"PublicIP":"198.18.0.10","PublicIPv6":null}"#,
            0,
        )
        .unwrap()
    });
    wait_peers(&bed, 2, "a lease added after etcd came back", &d2, |p| {
        p.contains("100.96.251.0/24 198.18.0.10:8285")
    });
    let summary = ping(h1, to2, 2).expect("ping");
    assert!(summary.all_received(), "after etcd came back: {summary}");
    let (log1, log2) = (d1.stderr(), d2.stderr());
    assert!(
        log1.contains(&format!("took our lease {s1}-24 back")),
        "{log1}"
    );
    assert!(log2.contains("watching the leases again"), "{log2}");
    // Neither host restarted: one subnet.env write each.
    for log in [&log1, &log2] {
        assert_eq!(log.matches("wrote ").count(), 1, "{log}");
    }
}

#[test]
fn flags_weft_does_not_serve_get_one_clear_line() {
    let out = std::process::Command::new(weft_exe())
        .args(["flannel", "--ip-masq"])
        .output()
        .expect("run weft");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--ip-masq") && err.contains("not served"),
        "{err}"
    );
    let out = std::process::Command::new(weft_exe())
        .args(["flannel"])
        .env("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "1440")
        .output()
        .expect("run weft");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--subnet-lease-renew-margin = \"1440\""),
        "{err}"
    );
    let out = std::process::Command::new(weft_exe())
        .args([
            "flannel",
            "--iface-regex",
            "eth(",
            "--etcd-endpoints",
            "127.0.0.1:2379",
        ])
        .output()
        .expect("run weft");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--iface-regex = \"eth(\": not a regular expression"),
        "{err}"
    );
}

/// What flanneld's vxlan backend writes for a host (FLANNEL.md §1.3).
fn vxlan_lease(public_ip: Ipv4Addr, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

#[test]
fn a_weft_host_and_a_flanneld_style_kernel_vxlan_host_share_one_network() {
    require_root();
    let bed = Testbed::two_hosts("fl-vx").expect("two hosts");
    let dir = TempDir::new("weft-flannel-vx").expect("a temp dir");
    let (h1, h2) = (bed.host(1).netns(), bed.host(2).netns());
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    let config = r#"{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan"}}"#;
    with_client(h1, &endpoint, |c| {
        c.put(format!("{PREFIX}/config"), config, 0).unwrap()
    });

    // Host 2 is a flanneld vxlan host: the kernel's flannel.1, and its lease as flanneld
    // writes it, bound to a 24 h etcd lease.
    let mac2 = "02:00:00:00:02:00";
    weft_testbed::add_kernel_flannel_device(h2, 2, mac2).expect("flannel.1 on host 2");
    with_client(h1, &endpoint, |c| {
        let lease = c.lease_grant(86_400).unwrap();
        c.put(
            format!("{PREFIX}/subnets/100.96.2.0-24"),
            vxlan_lease(underlay_addr(2), mac2),
            lease.id,
        )
        .unwrap()
    });

    // Host 1 is weft, whose previous subnet.env said 100.96.1.0/24 (with a stale MTU, so
    // that the rewrite shows).
    write_previous_env(dir.path(), 1, "100.96.1.1", 1);
    let d1 = start(&bed, 1, &endpoint, dir.path());
    let env = wait_written(dir.path(), 1, &d1);
    assert_eq!(
        env,
        [
            "FLANNEL_NETWORK=100.96.0.0/16",
            "FLANNEL_SUBNET=100.96.1.1/24",
            "FLANNEL_MTU=1450",
            "FLANNEL_IPMASQ=false"
        ]
    );
    let own_key = format!("{PREFIX}/subnets/100.96.1.0-24");
    let value = with_client(h1, &endpoint, |c| c.get(&own_key).unwrap())
        .unwrap_or_else(|| panic!("no {own_key}\n{}", d1.stderr()));
    let mac1 = vtep_mac_of(value.value_str().unwrap(), underlay_addr(1));

    // The flanneld host programs weft's host from its lease, as flanneld would.
    weft_testbed::add_kernel_flannel_peer(h2, 1, &mac1, weft_testbed::KernelNeighbour::Permanent)
        .expect("host 2's route, neighbour and FDB entry for host 1");
    let to2 = Ipv4Addr::new(100, 96, 2, 0);
    wait_until(UP_TIMEOUT, "a ping from weft to the kernel host", || {
        ping(h1, to2, 1).is_ok_and(|s| s.all_received())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", d1.stderr(), peers(&bed, 1)));
    let transfer = weft_testbed::tcp_transfer(
        h2,
        h1,
        Ipv4Addr::new(100, 96, 1, 0),
        5001,
        20 << 20,
        Duration::from_secs(45),
    )
    .unwrap_or_else(|e| panic!("kernel -> weft: {e}\n{}", d1.stderr()));
    assert!(transfer.intact(), "{transfer}");

    // weft restarts: same subnet, same VTEP MAC, so the flanneld host's static entries still
    // reach it without being reprogrammed.
    drop(d1);
    let d1 = start(&bed, 1, &endpoint, dir.path());
    wait_until(UP_TIMEOUT, "host 1 to reuse its lease", || {
        d1.stderr().contains("reusing lease 100.96.1.0-24")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d1.stderr()));
    let value = with_client(h1, &endpoint, |c| c.get(&own_key).unwrap()).expect("own lease");
    assert_eq!(
        vtep_mac_of(value.value_str().unwrap(), underlay_addr(1)),
        mac1,
        "the VTEP MAC survived the restart"
    );
    wait_until(UP_TIMEOUT, "a ping after the restart", || {
        ping(h1, to2, 1).is_ok_and(|s| s.all_received())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d1.stderr()));
}

/// Packets the kernel's device `name` in `netns` has received.
fn rx_packets(netns: &Netns, name: &str) -> u64 {
    let out = netns
        .ip(&["-j", "-s", "link", "show", "dev", name])
        .unwrap_or_else(|e| panic!("ip -s link show {name}: {e}"));
    let json: serde_json::Value = serde_json::from_str(&out).expect("ip's JSON");
    json[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rx packets in {out}"))
}

#[test]
fn a_dual_stack_vxlan_network_reaches_a_flanneld_style_kernel_host_over_both_underlays() {
    require_root();
    let bed = Testbed::two_hosts("fl-vx6").expect("two hosts");
    let dir = TempDir::new("weft-flannel-vx6").expect("a temp dir");
    let (h1, h2) = (bed.host(1).netns(), bed.host(2).netns());
    for n in [1, 2] {
        weft_testbed::add_underlay_addr6(bed.host(n).netns(), n).expect("IPv6 underlay");
    }
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    let config = r#"{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:100:96::/48","Backend":{"Type":"vxlan"}}"#;
    with_client(h1, &endpoint, |c| {
        c.put(format!("{PREFIX}/config"), config, 0).unwrap()
    });

    // Host 2 is a dual-stack flanneld vxlan host: the kernel's flannel.1 over the IPv4
    // underlay and flannel-v6.1 (a MAC of its own) over the IPv6 one, and its lease as
    // flanneld writes it.
    let (mac2, mac2v6) = ("02:00:00:00:02:00", "02:00:00:00:02:06");
    let v6_2: Ipv6Addr = "fd00:100:96:2::".parse().unwrap();
    weft_testbed::add_kernel_flannel_device(h2, 2, mac2).expect("flannel.1 on host 2");
    weft_testbed::add_kernel_flannel_v6_device(h2, 2, mac2v6, v6_2).expect("flannel-v6.1");
    with_client(h1, &endpoint, |c| {
        let lease = c.lease_grant(86_400).unwrap();
        c.put(
            format!("{PREFIX}/subnets/100.96.2.0-24&fd00:100:96:2::-64"),
            format!(
                r#"{{"PublicIP":"198.18.0.2","PublicIPv6":"fd00:198:18::2","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac2}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac2v6}"}}}}"#
            ),
            lease.id,
        )
        .unwrap()
    });

    // Host 1 is weft; its previous subnet.env (flanneld's dual-stack form) gives it
    // 100.96.1.0/24 and fd00:100:96:1::/64.
    let previous = common::flannel::subnet_file(dir.path(), 1);
    std::fs::create_dir_all(previous.parent().unwrap()).unwrap();
    std::fs::write(
        &previous,
        "FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET=100.96.1.1/24\n\
         FLANNEL_IPV6_NETWORK=fd00:100:96::/48\nFLANNEL_IPV6_SUBNET=fd00:100:96:1::1/64\n\
         FLANNEL_MTU=1\nFLANNEL_IPMASQ=false\n",
    )
    .unwrap();
    // The interface is named by its IPv6 address, which is also the IPv6 VTEP's.
    let iface = ["--iface", "fd00:198:18::1"];
    let d1 = start_flannel(&bed, 1, &endpoint, dir.path(), &iface, &[], &[]);
    let env = wait_written(dir.path(), 1, &d1);
    assert_eq!(env.len(), 6, "{env:?}");
    assert_eq!(env[1], "FLANNEL_SUBNET=100.96.1.1/24");
    let subnet6 = env[3]
        .strip_prefix("FLANNEL_IPV6_SUBNET=")
        .and_then(|s| s.strip_suffix("::1/64"))
        .unwrap_or_else(|| panic!("{env:?}"))
        .to_owned();
    // One device carries both families: its MTU leaves room for the IPv6 underlay.
    assert_eq!(env[4], "FLANNEL_MTU=1430", "{env:?}");
    let v6_1: Ipv6Addr = format!("{subnet6}::").parse().unwrap();
    assert_eq!(
        v6_1,
        "fd00:100:96:1::".parse::<Ipv6Addr>().unwrap(),
        "{env:?}"
    );

    // Our lease is flanneld's dual-stack vxlan form, byte for byte; the IPv6 VTEP has our
    // one MAC.
    let key = format!("{PREFIX}/subnets/100.96.1.0-24&{v6_1}-64");
    let value = with_client(h1, &endpoint, |c| c.get(&key).unwrap())
        .unwrap_or_else(|| panic!("no {key}\n{}", d1.stderr()));
    let value = value.value_str().unwrap().to_owned();
    let head = r#"{"PublicIP":"198.18.0.1","PublicIPv6":"fd00:198:18::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":""#;
    let mac1 = value
        .strip_prefix(head)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("not flanneld's form: {value}"))
        .to_owned();
    assert_eq!(
        value,
        format!(r#"{head}{mac1}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac1}"}}}}"#)
    );

    // weft routes host 2's IPv6 subnet to its IPv6 underlay address.
    wait_peers(
        &bed,
        1,
        "host 2's IPv6 route over the IPv6 underlay",
        &d1,
        |list| {
            list.contains("fd00:100:96:2::/64 [fd00:198:18::2]:8472")
                && list.contains("100.96.2.0/24 198.18.0.2:8472")
        },
    );

    // The flanneld host programs weft's host from its lease, both families.
    weft_testbed::add_kernel_flannel_peer(h2, 1, &mac1, weft_testbed::KernelNeighbour::Permanent)
        .expect("host 2's IPv4 entries for host 1");
    weft_testbed::add_kernel_flannel_v6_peer(
        h2,
        &format!("{v6_1}/64"),
        v6_1,
        weft_testbed::underlay_addr6(1),
        &mac1,
    )
    .expect("host 2's IPv6 entries for host 1");

    let before = rx_packets(h2, weft_testbed::VXLAN_V6_DEVICE);
    wait_until(
        UP_TIMEOUT,
        "an IPv6 ping from weft to the kernel host",
        || ping(h1, v6_2, 1).is_ok_and(|s| s.all_received()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", d1.stderr(), peers(&bed, 1)));
    // flannel-v6.1 only hears the IPv6 underlay: the pings came that way.
    assert!(
        rx_packets(h2, weft_testbed::VXLAN_V6_DEVICE) > before,
        "flannel-v6.1 received nothing"
    );
    let summary = ping(h1, Ipv4Addr::new(100, 96, 2, 0), 2).expect("ping");
    assert!(summary.all_received(), "IPv4 next to IPv6: {summary}");

    // TCP both ways over IPv6, the kernel's offloads on: its super-frames reach weft whole.
    for (from, to, dest) in [(h2, h1, v6_1), (h1, h2, v6_2)] {
        let transfer =
            weft_testbed::tcp_transfer(from, to, dest, 5001, 20 << 20, Duration::from_secs(45))
                .unwrap_or_else(|e| panic!("to {dest}: {e}\n{}", d1.stderr()));
        assert!(transfer.intact(), "to {dest}: {transfer}");
    }
}

#[test]
fn a_dual_stack_udp_network_leases_both_families_and_carries_ipv6() {
    require_root();
    let bed = Testbed::two_hosts("fl-ds").expect("two hosts");
    let dir = TempDir::new("weft-flannel-ds").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    let config = r#"{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:100:96::/48","Backend":{"Type":"udp"}}"#;
    with_client(h1, &endpoint, |c| {
        c.put(format!("{PREFIX}/config"), config, 0).unwrap()
    });
    let d1 = start(&bed, 1, &endpoint, dir.path());
    let d2 = start(&bed, 2, &endpoint, dir.path());
    let mut v6 = Vec::new();
    for (index, daemon) in [(1, &d1), (2, &d2)] {
        let env = wait_written(dir.path(), index, daemon);
        assert_eq!(env.len(), 6, "{env:?}");
        assert_eq!(env[0], "FLANNEL_NETWORK=100.96.0.0/16");
        assert_eq!(env[2], "FLANNEL_IPV6_NETWORK=fd00:100:96::/48");
        let subnet6 = env[3]
            .strip_prefix("FLANNEL_IPV6_SUBNET=")
            .and_then(|s| s.strip_suffix("::1/64"))
            .unwrap_or_else(|| panic!("{env:?}"));
        assert!(subnet6.starts_with("fd00:100:96:"), "{env:?}");
        assert_eq!(&env[4..], ["FLANNEL_MTU=1472", "FLANNEL_IPMASQ=false"]);
        // The key is flanneld's dual-stack form; a udp lease still carries only PublicIP.
        let v4 = leased_subnet(&env);
        let key = format!("{PREFIX}/subnets/{v4}-24&{subnet6}::-64");
        let kv = with_client(h1, &endpoint, |c| c.get(&key).unwrap())
            .unwrap_or_else(|| panic!("no {key}\n{}", daemon.stderr()));
        assert_eq!(
            kv.value_str().unwrap(),
            format!(
                r#"{{"PublicIP":"{}","PublicIPv6":null}}"#,
                underlay_addr(index)
            )
        );
        v6.push(format!("{subnet6}::"));
    }
    assert_ne!(v6[0], v6[1]);
    // IPv6 between the hosts' overlay addresses, over the IPv4 underlay.
    wait_until(UP_TIMEOUT, "an IPv6 ping from host 1 to host 2", || {
        h1.exec(&["ping", "-6", "-n", "-c", "1", "-W", "1", &v6[1]])
            .is_ok_and(|o| o.status.success())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", d1.stderr(), peers(&bed, 1)));
    let list = peers(&bed, 1);
    assert!(
        list.contains(&format!("{}/64 198.18.0.2:8285", v6[1])),
        "{list}"
    );
}

#[test]
fn the_own_lease_is_renewed_ahead_of_expiry() {
    require_root();
    let bed = Testbed::two_hosts("fl-renew").expect("two hosts");
    let dir = TempDir::new("weft-flannel-renew").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    with_client(h1, &endpoint, |c| {
        c.put(format!("{PREFIX}/config"), CONFIG_UDP, 0).unwrap()
    });
    // Leases of 64 s renewed 1 minute ahead: the first renewal is due after ~4 s.
    let d1 = start_flannel(
        &bed,
        1,
        &endpoint,
        dir.path(),
        &["--iface", "u0"],
        &["--subnet-lease-renew-margin", "1"],
        &[("WEFT_TEST_FLANNEL_LEASE_TTL", "64")],
    );
    let env = wait_written(dir.path(), 1, &d1);
    let key = format!("{PREFIX}/subnets/{}-24", leased_subnet(&env));
    let first = with_client(h1, &endpoint, |c| c.get(&key).unwrap())
        .expect("our lease")
        .lease;
    assert_ne!(first, 0);
    let renewed = wait_for(
        Duration::from_secs(30),
        "a renewal (a new etcd lease)",
        || {
            let kv = with_client(h1, &endpoint, |c| c.get(&key).unwrap())?;
            (kv.lease != 0 && kv.lease != first).then_some(kv)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", d1.stderr()));
    assert_eq!(
        renewed.value_str().unwrap(),
        r#"{"PublicIP":"198.18.0.1","PublicIPv6":null}"#
    );
    let ttl = with_client(h1, &endpoint, |c| {
        c.lease_time_to_live(renewed.lease).unwrap()
    });
    assert!(ttl.is_some_and(|t| t > 55), "the new lease's ttl: {ttl:?}");
    assert!(d1.stderr().contains("renewed our lease"), "{}", d1.stderr());
}

#[test]
fn etcd_over_tls_and_with_a_password_is_reached_through_the_flags() {
    require_root();
    let dir = TempDir::new("weft-flannel-sec").expect("a temp dir");
    assert!(
        weft_testbed::make_test_certificates(dir.path(), underlay_addr(1)).expect("openssl"),
        "openssl is needed (the CI installs it)"
    );
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // TLS with client certificates: --etcd-cafile/certfile/keyfile.
    let bed = Testbed::two_hosts("fl-tls").expect("two hosts");
    let h1 = bed.host(1).netns();
    let tls = weft_testbed::EtcdTls {
        cert_file: dir.path().join("server.pem"),
        key_file: dir.path().join("server.key"),
        ca_file: dir.path().join("ca.pem"),
    };
    let etcd = EtcdServer::start_tls(h1, underlay_addr(1), tls).expect("etcd over TLS");
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    h1.run_inside(|| {
        let mut config = EtcdConfig::new([endpoint.as_str()]);
        config.ca_file = Some(dir.path().join("ca.pem"));
        config.cert_file = Some(dir.path().join("client.pem"));
        config.key_file = Some(dir.path().join("client.key"));
        Client::new(config)
            .unwrap()
            .put(format!("{PREFIX}/config"), CONFIG_UDP, 0)
            .unwrap()
    })
    .unwrap();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let d2 = start_flannel(
        &bed,
        2,
        &endpoint,
        dir.path(),
        &["--iface", "u0"],
        &[
            "--etcd-cafile",
            &ca,
            "--etcd-certfile",
            &cert,
            "--etcd-keyfile",
            &key,
        ],
        &[],
    );
    let env = wait_written(dir.path(), 2, &d2);
    assert!(env[1].starts_with("FLANNEL_SUBNET=100.96."), "{env:?}");
    drop(d2);
    drop(etcd);

    // Username and password: --etcd-username/--etcd-password (the password from the
    // environment, as FLANNELD_ETCD_PASSWORD).
    let bed = Testbed::two_hosts("fl-auth").expect("two hosts");
    let h1 = bed.host(1).netns();
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd");
    let endpoint = etcd.endpoint();
    with_client(h1, &endpoint, |c| {
        c.put(format!("{PREFIX}/config"), CONFIG_UDP, 0).unwrap()
    });
    etcd.enable_auth("s3cret").expect("enable etcd auth");
    let d2 = start_flannel(
        &bed,
        2,
        &endpoint,
        &dir.path().join("auth"),
        &["--iface", "u0", "--etcd-username", "root"],
        &[],
        &[("FLANNELD_ETCD_PASSWORD", "s3cret")],
    );
    let env = wait_written(&dir.path().join("auth"), 2, &d2);
    assert!(env[1].starts_with("FLANNEL_SUBNET=100.96."), "{env:?}");
}

/// `weft flannel --acl-file`: the rules guard the host's data plane, `weft acl list` shows
/// them, SIGHUP reads the file again, and a broken file on SIGHUP keeps the running rules.
#[test]
fn an_acl_file_is_in_force_and_sighup_reads_it_again() {
    require_root();
    let bed = Testbed::two_hosts("fl-acl").expect("two hosts");
    let dir = TempDir::new("weft-flannel-acl").expect("a temp dir");
    let h1 = bed.host(1).netns();
    let etcd = EtcdServer::start(h1, underlay_addr(1)).expect("etcd in host 1");
    let endpoint = etcd.endpoint();
    with_client(h1, &endpoint, |c| {
        c.put(format!("{PREFIX}/config"), CONFIG_UDP, 0).unwrap()
    });
    let acl = dir.path().join("acl.toml");
    let deny_icmp = "[[acl]]\naction = \"deny\"\nprotocol = \"icmp\"\n";
    std::fs::write(&acl, deny_icmp).unwrap();
    let acl_arg = acl.to_str().unwrap();
    let iface: &[&str] = &["--iface", "u0"];
    let mut d1 = start_flannel(&bed, 1, &endpoint, dir.path(), iface, &[], &[]);
    let mut d2 = start_flannel(
        &bed,
        2,
        &endpoint,
        dir.path(),
        iface,
        &["--acl-file", acl_arg],
        &[],
    );
    wait_written(dir.path(), 1, &d1);
    let env2 = wait_written(dir.path(), 2, &d2);
    let to2 = Ipv4Addr::from(u32::from(leased_subnet(&env2)));
    let h2 = bed.host(2).netns();
    let acl_list = || {
        let out = h2
            .exec(&[weft_exe().to_str().unwrap(), "acl", "list"])
            .expect("weft acl list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(UP_TIMEOUT, "host 2's data plane with its acl", || {
        acl_list().starts_with("1 deny icmp from any to any hits ")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d2.stderr()));
    // Host 2 drops ICMP coming in: host 1's pings get nothing back.
    let ping1 = ping(h1, to2, 3).unwrap();
    assert_eq!(ping1.received, 0, "{ping1:?}\n{}", acl_list());

    // The file changes: ICMP is allowed now; SIGHUP puts it in force.
    std::fs::write(&acl, "[[acl]]\naction = \"allow\"\nprotocol = \"icmp\"\n").unwrap();
    d2.signal("HUP").unwrap();
    wait_until(UP_TIMEOUT, "the reloaded acl", || {
        acl_list().starts_with("1 allow icmp from any to any hits ")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d2.stderr()));
    wait_until(UP_TIMEOUT, "a ping through the allowed rule", || {
        ping(h1, to2, 1).is_ok_and(|s| s.all_received())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d2.stderr()));

    // A broken file is refused and the running rules stay.
    std::fs::write(&acl, "[[acl]]\naction = \"maybe\"\n").unwrap();
    d2.signal("HUP").unwrap();
    wait_until(UP_TIMEOUT, "the refused reload in the log", || {
        d2.stderr()
            .contains("reload failed, keeping the running acl")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d2.stderr()));
    assert!(acl_list().starts_with("1 allow icmp"), "{}", acl_list());
    assert!(d2.is_running());
    d1.terminate(Duration::from_secs(5)).unwrap();
}
