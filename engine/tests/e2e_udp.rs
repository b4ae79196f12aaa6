//! End-to-end tests of the UDP backend: real `weft run` daemons in network namespaces, real
//! kernel routing, pings, TCP and forged datagrams. All tests need root; each builds its own
//! topology with unique names, so they run in parallel.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use common::{link_counter, send_datagram, stat, wait_stat, Payload, UdpCluster};
use weft_testbed::{
    overlay_addr, overlay_subnet, ping, tcp_transfer, underlay_addr, ConfigFile, Netns, NsChild,
    WeftConfig, WeftDaemon, DEFAULT_DEVICE, UDP_PORT,
};

/// Pings `destination` from `netns` `count` times and requires every reply.
fn assert_ping(cluster: &UdpCluster, netns: &Netns, destination: Ipv4Addr, count: u32) {
    let summary = ping(netns, destination, count).expect("run ping");
    assert!(
        summary.all_received(),
        "ping {destination} from {}: {summary}\n{}\n{}",
        netns.name(),
        summary.output.trim(),
        cluster.logs()
    );
}

#[test]
fn udp_hosts_ping_each_other_over_flannel0() {
    let cluster = UdpCluster::two_hosts("e2e-hostping", false);
    assert_ping(&cluster, cluster.host(1), overlay_addr(2), 3);
    assert_ping(&cluster, cluster.host(2), overlay_addr(1), 3);
    // Six echo requests and six replies went through each daemon.
    assert!(stat(&cluster.a, "tx_packets") >= 6, "{}", cluster.logs());
    assert!(stat(&cluster.b, "rx_packets") >= 6, "{}", cluster.logs());
}

#[test]
fn udp_pods_on_different_hosts_ping_each_other_through_cni0() {
    let cluster = UdpCluster::two_hosts("e2e-podping", true);
    let pod_a = cluster.bed.host(1).pod(2);
    let pod_b = cluster.bed.host(2).pod(2);
    assert_ping(&cluster, pod_a.netns(), pod_b.address(), 3);
    assert_ping(&cluster, pod_b.netns(), pod_a.address(), 3);
}

#[test]
fn udp_pod_to_pod_tcp_50mb_arrives_with_matching_sha256() {
    let cluster = UdpCluster::two_hosts("e2e-tcp", true);
    let pod_a = cluster.bed.host(1).pod(2);
    let pod_b = cluster.bed.host(2).pod(2);
    let transfer = tcp_transfer(
        pod_a.netns(),
        pod_b.netns(),
        pod_b.address(),
        5001,
        50 * 1024 * 1024,
        Duration::from_secs(90),
    )
    .unwrap_or_else(|error| panic!("transfer pod A -> pod B: {error}\n{}", cluster.logs()));
    assert!(transfer.intact(), "{transfer}\n{}", cluster.logs());
    eprintln!("50 MiB pod A -> pod B: {transfer}");
}

#[test]
fn udp_route_removed_at_runtime_gives_net_unreachable_and_returns_when_added() {
    let cluster = UdpCluster::two_hosts("e2e-route", false);
    let subnet_b = overlay_subnet(2);
    let endpoint_b = underlay_addr(2).to_string();
    let has_route_to_b = |daemon: &WeftDaemon| {
        let routes = daemon.peer_list().expect("weft peer list");
        routes
            .iter()
            .any(|route| route.subnet == subnet_b && route.endpoint.starts_with(&endpoint_b))
    };
    assert!(
        has_route_to_b(&cluster.a),
        "weft peer list lacks {subnet_b} before the removal"
    );
    assert_ping(&cluster, cluster.host(1), overlay_addr(2), 1);

    // The kernel's IPv6 router solicitations on flannel0 also count as drop_no_route, so the
    // ICMP error count pins down that this ping, and only it, was answered.
    let no_route_before = stat(&cluster.a, "drop_no_route");
    let icmp_before = stat(&cluster.a, "icmp_sent");
    cluster.a.peer_del(&subnet_b).expect("weft peer del");
    assert!(
        !has_route_to_b(&cluster.a),
        "weft peer list still shows {subnet_b}"
    );
    let summary = ping(cluster.host(1), overlay_addr(2), 1).expect("run ping");
    assert_eq!(summary.received, 0, "{}", summary.output);
    assert!(
        summary.output.contains("Unreachable"),
        "ping without a route should report the ICMP net unreachable weft writes back:\n{}\n{}",
        summary.output,
        cluster.logs()
    );
    wait_stat(&cluster.a, "drop_no_route", no_route_before + 1);
    wait_stat(&cluster.a, "icmp_sent", icmp_before + 1);
    assert_eq!(
        stat(&cluster.a, "icmp_sent"),
        icmp_before + 1,
        "one ping without a route, one ICMP net unreachable"
    );

    cluster
        .a
        .peer_add(&subnet_b, &endpoint_b)
        .expect("weft peer add");
    assert!(
        has_route_to_b(&cluster.a),
        "weft peer list lacks {subnet_b} after re-adding it"
    );
    assert_ping(&cluster, cluster.host(1), overlay_addr(2), 3);
}

#[test]
fn udp_datagram_from_unknown_underlay_address_is_dropped_before_the_device() {
    let cluster = UdpCluster::switched_with_stranger("e2e-unknown");
    assert_dropped_by_host_2(&cluster, "drop_unknown_peer", || {
        // A well-formed packet that even claims host 1's subnet, but from 198.18.0.3.
        send_datagram(
            cluster.host(3),
            underlay_addr(3),
            underlay_addr(2),
            Payload::Ipv4Echo {
                source: Ipv4Addr::new(100, 96, 1, 9),
                destination: overlay_addr(2),
            },
        )
    });
}

#[test]
fn udp_datagram_from_a_peer_with_foreign_inner_source_is_dropped_as_spoofed() {
    let cluster = UdpCluster::two_hosts("e2e-spoof", false);
    assert_dropped_by_host_2(&cluster, "drop_spoofed_source", || {
        // From host 1's own underlay address, but the inner source is outside 100.96.1.0/24.
        send_datagram(
            cluster.host(1),
            underlay_addr(1),
            underlay_addr(2),
            Payload::Ipv4Echo {
                source: Ipv4Addr::new(100, 96, 7, 7),
                destination: overlay_addr(2),
            },
        )
    });
}

#[test]
fn udp_garbage_datagram_from_a_peer_is_dropped_as_malformed() {
    let cluster = UdpCluster::two_hosts("e2e-garbage", false);
    assert_dropped_by_host_2(&cluster, "drop_malformed", || {
        send_datagram(
            cluster.host(1),
            underlay_addr(1),
            underlay_addr(2),
            Payload::Garbage,
        )
    });
}

/// Runs `send` (which sends one hostile datagram to host 2) and checks that host 2's weft
/// counted exactly one `drop_counter` and delivered nothing: neither weft's `rx_packets` nor
/// the kernel's count of packets written into host 2's device moved. Then, as the control of
/// that check, a real ping from host 1 does move both, so host 2 still works.
fn assert_dropped_by_host_2(cluster: &UdpCluster, drop_counter: &str, send: impl FnOnce()) {
    let device_before = link_counter(cluster.host(2), DEFAULT_DEVICE, "rx_packets");
    let delivered_before = stat(&cluster.b, "rx_packets");
    let dropped_before = stat(&cluster.b, drop_counter);
    send();
    wait_stat(&cluster.b, drop_counter, dropped_before + 1);
    assert_eq!(
        stat(&cluster.b, drop_counter),
        dropped_before + 1,
        "one datagram, one drop"
    );
    assert_eq!(
        stat(&cluster.b, "rx_packets"),
        delivered_before,
        "weft on host 2 counted the hostile datagram as delivered\n{}",
        cluster.logs()
    );
    assert_eq!(
        link_counter(cluster.host(2), DEFAULT_DEVICE, "rx_packets"),
        device_before,
        "the hostile datagram reached host 2's {DEFAULT_DEVICE}\n{}",
        cluster.logs()
    );

    assert_ping(cluster, cluster.host(1), overlay_addr(2), 1);
    assert!(
        link_counter(cluster.host(2), DEFAULT_DEVICE, "rx_packets") > device_before,
        "a real ping did not move host 2's {DEFAULT_DEVICE} rx_packets counter"
    );
    assert!(
        stat(&cluster.b, "rx_packets") > delivered_before,
        "a real ping did not move weft's rx_packets on host 2"
    );
}

#[test]
fn udp_restarted_peer_recovers_while_the_other_side_keeps_running() {
    let mut cluster = UdpCluster::two_hosts("e2e-restart", false);
    assert_ping(&cluster, cluster.host(1), overlay_addr(2), 2);

    let status = cluster
        .b
        .stop(Duration::from_secs(10))
        .unwrap_or_else(|error| panic!("stop weft on host 2: {error}\n{}", cluster.logs()));
    assert!(
        status.success(),
        "weft should exit 0 on SIGTERM, got {status}\n{}",
        cluster.logs()
    );
    assert!(
        !cluster
            .host(2)
            .has_link(DEFAULT_DEVICE)
            .expect("list links"),
        "{DEFAULT_DEVICE} is still there after weft exited"
    );
    // Host 1 keeps sending into the void (host 2 answers ICMP port unreachable).
    let summary = ping(cluster.host(1), overlay_addr(2), 2).expect("run ping");
    assert_eq!(summary.received, 0, "{}", summary.output);
    assert!(
        cluster.a.process().is_running(),
        "weft on host 1 died while host 2 was down\n{}",
        cluster.logs()
    );

    cluster.b = common::start_daemon(&cluster.bed, 2, &cluster.configs[1]);
    let recovered = weft_testbed::wait_until(
        Duration::from_secs(20),
        "ping host 1 -> host 2 to work again after host 2's weft restarted",
        || {
            ping(cluster.host(1), overlay_addr(2), 1)
                .map(|summary| summary.all_received())
                .unwrap_or(false)
        },
    );
    if let Err(error) = recovered {
        panic!("{error}\n{}", cluster.logs());
    }
    assert_ping(&cluster, cluster.host(2), overlay_addr(1), 2);
}

/// How long a rejected `weft run` may take to exit.
const REJECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A namespace for one bad-configuration case, with `u0` holding 198.18.0.1/24 so that the
/// standard listen address exists there.
fn config_namespace(name: &str) -> Netns {
    common::require_root();
    let netns = Netns::new(name).expect("create a namespace");
    netns
        .ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"])
        .expect("create a veth pair inside the namespace");
    netns
        .ip(&["addr", "add", "198.18.0.1/24", "dev", "u0"])
        .expect("address u0");
    for link in ["u0", "u1"] {
        netns.ip(&["link", "set", link, "up"]).expect("bring up");
    }
    netns
}

/// Runs `weft run --config <config>` in `netns` (after `wrapper`, e.g. a setpriv command),
/// without any log-level override, and returns how it exited and its stderr; fails the test
/// if it is still running after [`REJECT_TIMEOUT`].
fn run_rejected(netns: &Netns, wrapper: &[&str], config: &Path) -> (ExitStatus, String) {
    let exe = common::weft_exe().to_string_lossy();
    let config = config.to_string_lossy();
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.extend_from_slice(&[
        "env",
        "-u",
        "RUST_LOG",
        "-u",
        "WEFT_LOG",
        "-u",
        "RUST_BACKTRACE",
    ]);
    argv.extend_from_slice(&[&exe, "run", "--config", &config]);
    let mut child: NsChild = netns.spawn(&argv).expect("start weft run");
    let status = child.wait_timeout(REJECT_TIMEOUT).unwrap_or_else(|_| {
        panic!(
            "weft run --config {config} should have refused to start, but it is still running \
             after {REJECT_TIMEOUT:?}; stderr:\n{}",
            child.stderr()
        )
    });
    (status, child.stderr())
}

/// Checks that a rejected start failed with exactly one line on stderr, no panic, containing
/// every string of `required` and at least one string of each group in `any_of`; and that it
/// left no device behind.
fn assert_one_line_error(
    netns: &Netns,
    status: ExitStatus,
    stderr: &str,
    required: &[&str],
    any_of: &[&[&str]],
) {
    assert!(
        !status.success() && status.code().is_some(),
        "weft run should exit with a failure code, got {status}; stderr:\n{stderr}"
    );
    let message = stderr.trim_end();
    assert!(
        !message.is_empty(),
        "weft run failed ({status}) without saying why"
    );
    assert_eq!(
        message.lines().count(),
        1,
        "weft run should print exactly one line on stderr, got:\n{stderr}"
    );
    eprintln!("weft run refused to start ({status}): {message}");
    let lowercase = message.to_lowercase();
    assert!(
        !lowercase.contains("panicked") && !lowercase.contains("backtrace"),
        "weft run panicked instead of reporting: {message}"
    );
    for needle in required {
        assert!(
            message.contains(needle),
            "the error should mention {needle:?}: {message}"
        );
    }
    for group in any_of {
        assert!(
            group.iter().any(|needle| message.contains(needle)),
            "the error should mention one of {group:?}: {message}"
        );
    }
    assert!(
        !netns.has_link(DEFAULT_DEVICE).expect("list links"),
        "a failed weft run left {DEFAULT_DEVICE} behind"
    );
}

/// Writes host 1's standard configuration with `edit` applied to its text, runs weft with it
/// and checks the one-line error names the file and everything in `any_of`.
fn assert_config_rejected(name: &str, edit: impl FnOnce(String) -> String, any_of: &[&[&str]]) {
    let netns = config_namespace(name);
    let text = edit(WeftConfig::udp(1, &[2]).to_toml());
    let config = ConfigFile::new(&text).expect("write the config");
    let (status, stderr) = run_rejected(&netns, &[], config.path());
    let path = config.path().to_string_lossy();
    assert_one_line_error(&netns, status, &stderr, &[&path], any_of);
}

/// Replaces exactly one occurrence of `from` in `text`.
fn replace_once(text: String, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in:\n{text}");
    text.replacen(from, to, 1)
}

#[test]
fn bad_config_unparsable_file_is_rejected_in_one_line() {
    assert_config_rejected(
        "e2e-cfg-parse",
        |text| {
            replace_once(
                text,
                "network = \"100.96.0.0/16\"",
                "network = \"100.96.0.0/16",
            )
        },
        &[&["network", "line 2", ":2:"]],
    );
}

#[test]
fn bad_config_invalid_cidr_is_rejected_naming_key_and_value() {
    assert_config_rejected(
        "e2e-cfg-cidr",
        |text| replace_once(text, "\"100.96.0.0/16\"", "\"100.96.0.0/33\""),
        &[&["network"], &["100.96.0.0/33"]],
    );
}

#[test]
fn bad_config_overlapping_peer_subnets_are_rejected_naming_them() {
    assert_config_rejected(
        "e2e-cfg-overlap",
        |mut text| {
            text.push_str("\n[[peer]]\nsubnet = \"100.96.2.128/25\"\nendpoint = \"198.18.0.3\"\n");
            text
        },
        &[&["subnet"], &["100.96.2.128/25", "100.96.2.0/24"]],
    );
}

#[test]
fn bad_config_device_address_outside_network_is_rejected_naming_it() {
    assert_config_rejected(
        "e2e-cfg-outside",
        |text| {
            let text = replace_once(text, "\"100.96.0.0/16\"", "\"100.96.0.0/17\"");
            replace_once(
                text,
                "address = \"100.96.1.0\"",
                "address = \"100.96.200.0\"",
            )
        },
        &[&["address"], &["100.96.200.0"]],
    );
}

#[test]
fn bad_config_listen_port_in_use_is_rejected_naming_it() {
    let netns = config_namespace("e2e-cfg-port");
    let port = UDP_PORT.to_string();
    let blocker_script = format!(
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('198.18.0.1', {port}))\n\
         time.sleep(60)\n"
    );
    let _blocker = netns
        .spawn(&["python3", "-c", &blocker_script])
        .expect("start the port blocker");
    let filter = format!("sport = :{port}");
    weft_testbed::wait_until(
        Duration::from_secs(10),
        "python3 to hold UDP port 8285",
        || {
            netns
                .exec(&["ss", "-H", "-l", "-u", "-n", &filter])
                .map(|out| !out.stdout.is_empty())
                .unwrap_or(false)
        },
    )
    .expect("port blocker is up");
    let config = WeftConfig::udp(1, &[2]).write().expect("write the config");
    let (status, stderr) = run_rejected(&netns, &[], config.path());
    let path = config.path().to_string_lossy();
    assert_one_line_error(&netns, status, &stderr, &[&path, &port], &[]);
}

#[test]
fn bad_config_missing_file_is_rejected_naming_it() {
    let netns = config_namespace("e2e-cfg-missing");
    let dir = weft_testbed::TempDir::new("e2e-missing").expect("temp dir");
    let missing = dir.path().join("no-such-weft.toml");
    let (status, stderr) = run_rejected(&netns, &[], &missing);
    let path = missing.to_string_lossy();
    assert_one_line_error(&netns, status, &stderr, &[&path], &[]);
}

#[test]
fn run_without_permission_on_the_tun_device_fails_in_one_line() {
    let netns = config_namespace("e2e-notun");
    let config = WeftConfig::udp(1, &[2]).write().expect("write the config");
    let (status, stderr) = run_rejected(
        &netns,
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ],
        config.path(),
    );
    assert_one_line_error(
        &netns,
        status,
        &stderr,
        &[],
        &[&["tun", "TUN", DEFAULT_DEVICE]],
    );
}

#[test]
fn demo_runs_a_transfer_and_shows_nonzero_counters() {
    common::require_root();
    let mut command = Command::new(common::weft_exe());
    command.arg("demo");
    let output =
        weft_testbed::run_command(command, Duration::from_secs(150)).expect("run weft demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "weft demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("transfer") && stdout.contains("sha256 match"),
        "weft demo shows no intact transfer:\n{stdout}"
    );
    for counter in ["tx_packets", "rx_packets"] {
        let values: Vec<u64> = stdout
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(counter))
                    .then(|| fields.next().and_then(|value| value.parse().ok()))
                    .flatten()
            })
            .collect();
        assert_eq!(
            values.len(),
            2,
            "weft demo should show {counter} of both daemons:\n{stdout}"
        );
        assert!(
            values.iter().all(|&value| value > 0),
            "weft demo shows a zero {counter}:\n{stdout}"
        );
    }
}
