//! The testbed itself, on pure-kernel topologies (no weft involved): the namespaces, links,
//! pods and guards the end-to-end tests rely on. All tests need root.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use weft_testbed::{
    ping, tcp_transfer, tcp_transfers, underlay_addr, Netns, Testbed, TestbedError, WeftConfig,
    UDP_OVERLAY_MTU,
};

fn require_root() {
    assert!(
        weft_testbed::is_root(),
        "the testbed creates network namespaces: run as root (./.ci/run, or `sudo -E cargo test -p weft-testbed`)"
    );
}

/// The names of the interfaces of the root namespace.
fn root_links() -> BTreeSet<String> {
    let mut command = std::process::Command::new("ip");
    command.args(["-o", "link", "show"]);
    let output = weft_testbed::run_command(command, Duration::from_secs(10)).expect("ip link show");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

#[test]
fn two_hosts_reach_each_other_over_the_veth() {
    require_root();
    let bed = Testbed::two_hosts("tb-pair").expect("build two hosts");
    let summary = ping(bed.host(1).netns(), underlay_addr(2), 2).expect("ping");
    assert!(summary.all_received(), "{}", summary.output);
    let summary = ping(bed.host(2).netns(), underlay_addr(1), 2).expect("ping");
    assert!(summary.all_received(), "{}", summary.output);
}

#[test]
fn switched_hosts_reach_each_other_through_the_bridge() {
    require_root();
    let mut bed = Testbed::switched("tb-switch", 2).expect("build a switch with two hosts");
    bed.add_host(100).expect("add host 100");
    for (from, to) in [(1, 2), (2, 100), (100, 1)] {
        let summary = ping(bed.host(from).netns(), underlay_addr(to), 2).expect("ping");
        assert!(
            summary.all_received(),
            "host {from} -> host {to}: {}",
            summary.output
        );
    }
    assert!(matches!(
        bed.add_host(2),
        Err(TestbedError::Invalid(message)) if message.contains('2')
    ));
}

#[test]
fn pods_on_two_hosts_talk_over_kernel_routes_and_tcp_arrives_intact() {
    require_root();
    let mut bed = Testbed::two_hosts("tb-pods").expect("build two hosts");
    bed.add_pod(1, 2, UDP_OVERLAY_MTU).expect("pod on host 1");
    bed.add_pod(1, 3, UDP_OVERLAY_MTU)
        .expect("second pod on host 1");
    bed.add_pod(2, 2, UDP_OVERLAY_MTU).expect("pod on host 2");
    // host-gw style routes, so the pod plumbing is checked without weft.
    bed.host(1)
        .netns()
        .ip(&["route", "add", "100.96.2.0/24", "via", "198.18.0.2"])
        .expect("route on host 1");
    bed.host(2)
        .netns()
        .ip(&["route", "add", "100.96.1.0/24", "via", "198.18.0.1"])
        .expect("route on host 2");

    let pod_a = bed.host(1).pod(2);
    let pod_a2 = bed.host(1).pod(3);
    let pod_b = bed.host(2).pod(2);
    assert_eq!(pod_b.address(), Ipv4Addr::new(100, 96, 2, 2));
    for (from, to) in [(pod_a, pod_b), (pod_b, pod_a), (pod_a, pod_a2)] {
        let summary = ping(from.netns(), to.address(), 2).expect("ping");
        assert!(
            summary.all_received(),
            "{} -> {}: {}",
            from.address(),
            to.address(),
            summary.output
        );
    }
    let transfer = tcp_transfer(
        pod_a.netns(),
        pod_b.netns(),
        pod_b.address(),
        5001,
        2 * 1024 * 1024,
        Duration::from_secs(30),
    )
    .expect("transfer");
    assert!(transfer.intact(), "{transfer}");
}

#[test]
fn building_topologies_adds_nothing_to_the_root_namespace() {
    require_root();
    let before = root_links();
    let mut bed = Testbed::switched("tb-root", 2).expect("build a switch");
    bed.add_pod(1, 2, UDP_OVERLAY_MTU).expect("add a pod");
    let pair = Testbed::two_hosts("tb-root2").expect("build two hosts");
    let added: Vec<String> = root_links().difference(&before).cloned().collect();
    let ours = ["u0", "p1", "p2", "br0", "cni0", "veth2", "eth0"];
    let leaked: Vec<&String> = added
        .iter()
        .filter(|name| ours.contains(&name.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "interfaces in the root namespace: {leaked:?}"
    );
    drop((bed, pair));
}

#[test]
fn dropping_a_namespace_kills_its_processes_and_deletes_it() {
    require_root();
    let netns = Netns::new("tb-drop").expect("create a namespace");
    let name = netns.name().to_owned();
    let mut sleeper = netns.spawn(&["sleep", "60"]).expect("spawn sleep");
    weft_testbed::wait_until(
        Duration::from_secs(5),
        "sleep to show up in the namespace",
        || {
            netns
                .pids()
                .map(|pids| pids.contains(&sleeper.id()))
                .unwrap_or(false)
        },
    )
    .expect("sleep runs in the namespace");
    drop(netns);
    let status = sleeper
        .wait_timeout(Duration::from_secs(5))
        .expect("sleep was killed when its namespace was dropped");
    assert!(!status.success());
    let listing = weft_testbed::run_command(
        {
            let mut command = std::process::Command::new("ip");
            command.args(["netns", "list"]);
            command
        },
        Duration::from_secs(10),
    )
    .expect("ip netns list");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        !listing
            .lines()
            .any(|line| line.split_whitespace().next() == Some(&name)),
        "{name} still listed:\n{listing}"
    );
}

#[test]
fn dropping_a_child_guard_terminates_the_process() {
    require_root();
    let netns = Netns::new("tb-child").expect("create a namespace");
    let child = netns.spawn(&["sleep", "60"]).expect("spawn sleep");
    let pid = child.id();
    drop(child);
    assert!(
        !netns.pids().expect("ip netns pids").contains(&pid),
        "sleep ({pid}) survived its guard"
    );
}

#[test]
fn commands_time_out_and_waits_name_what_they_awaited() {
    require_root();
    let netns = Netns::new("tb-timeout").expect("create a namespace");
    let error = netns
        .exec_timeout(&["sleep", "30"], Duration::from_millis(200))
        .expect_err("sleep 30 cannot finish in 200 ms");
    assert!(
        matches!(error, TestbedError::CommandTimeout { .. }),
        "{error}"
    );
    let error =
        weft_testbed::wait_until(Duration::from_millis(50), "the moon to turn blue", || false)
            .expect_err("the condition never holds");
    assert!(
        error.to_string().contains("the moon to turn blue"),
        "{error}"
    );
    let error = netns.exec_ok(&["false"]).expect_err("false fails");
    assert!(
        matches!(error, TestbedError::CommandFailed { .. }),
        "{error}"
    );
}

#[test]
fn sysctl_and_links_are_per_namespace() {
    require_root();
    let mut bed = Testbed::two_hosts("tb-sysctl").expect("build two hosts");
    bed.add_pod(1, 2, UDP_OVERLAY_MTU).expect("add a pod");
    let forwarding = |netns: &Netns| {
        netns
            .exec_ok(&["sysctl", "-n", "net.ipv4.ip_forward"])
            .expect("read ip_forward")
            .trim()
            .to_owned()
    };
    assert_eq!(forwarding(bed.host(1).netns()), "1");
    assert_eq!(forwarding(bed.host(2).netns()), "0");
    assert!(bed.host(1).netns().has_link("cni0").expect("list links"));
    assert!(!bed.host(2).netns().has_link("cni0").expect("list links"));
    assert!(bed.host(2).netns().has_link("u0").expect("list links"));
}

#[test]
fn udp_config_has_the_documented_shape() {
    let expected = "backend = \"udp\"\nnetwork = \"100.96.0.0/16\"\n\n\
                    [device]\nname = \"flannel0\"\naddress = \"100.96.1.0\"\n\n\
                    [listen]\naddress = \"198.18.0.1\"\nport = 8285\n\n\
                    [[peer]]\nsubnet = \"100.96.2.0/24\"\nendpoint = \"198.18.0.2\"\n";
    assert_eq!(WeftConfig::udp(1, &[2]).to_toml(), expected);
    let file = WeftConfig::udp(1, &[2]).write().expect("write config");
    let path = file.path().to_owned();
    assert_eq!(std::fs::read_to_string(&path).expect("read back"), expected);
    drop(file);
    assert!(!path.exists(), "{} outlived its guard", path.display());
}

#[test]
fn concurrent_transfers_over_the_veth_each_arrive_intact() {
    require_root();
    let bed = Testbed::two_hosts("tb-flows").expect("build two hosts");
    let ports: Vec<u16> = (6001..6009).collect();
    let transfers = tcp_transfers(
        bed.host(1).netns(),
        bed.host(2).netns(),
        underlay_addr(2),
        &ports,
        256 * 1024,
        Duration::from_secs(30),
    )
    .expect("concurrent transfers");
    assert_eq!(transfers.len(), ports.len());
    for (port, transfer) in ports.iter().zip(&transfers) {
        assert!(transfer.intact(), "port {port}: {transfer}");
    }
    // Every flow carried data of its own.
    let hashes: BTreeSet<&str> = transfers.iter().map(|t| t.sent_sha256.as_str()).collect();
    assert_eq!(hashes.len(), ports.len());
}

#[test]
fn concurrent_transfers_name_the_flows_that_did_not_finish() {
    require_root();
    let bed = Testbed::two_hosts("tb-stall").expect("build two hosts");
    // Nobody has 198.18.0.9: no connection is made, so no listener ever finishes.
    let error = tcp_transfers(
        bed.host(1).netns(),
        bed.host(2).netns(),
        Ipv4Addr::new(198, 18, 0, 9),
        &[6101, 6102],
        1024,
        Duration::from_millis(500),
    )
    .expect_err("no listener can get a connection");
    let text = error.to_string();
    assert!(
        text.contains("port 6101") && text.contains("port 6102"),
        "{text}"
    );
}

#[test]
fn spawned_processes_get_the_extra_environment() {
    require_root();
    let netns = Netns::new("tb-env").expect("create a namespace");
    let mut child = netns
        .spawn_with_env(
            &["sh", "-c", "printf %s \"$WEFT_TESTBED_PROBE\""],
            &[("WEFT_TESTBED_PROBE", "yes")],
        )
        .expect("spawn sh");
    let status = child
        .wait_timeout(Duration::from_secs(10))
        .expect("sh exits");
    assert!(status.success());
    assert_eq!(child.stdout(), "yes");
}
