//! IPv6 end to end: an IPv6 underlay (fd00:198:18::/64) and an IPv6 overlay
//! (fd00:100:96::/48) next to the IPv4 one, for both backends, weft on both hosts.

use std::time::Duration;

use weft_testbed::{wait_until, ConfigFile, Testbed, WeftDaemon};

const UDP: &str = "udp";
const VXLAN: &str = "vxlan";

/// Host `me`'s configuration for `backend`, with an IPv4 and an IPv6 overlay: over an IPv6
/// underlay alone, or (`dual`) over a dual-stack one (`[listen] address` and `address6`,
/// IPv4 peers over IPv4, two workers).
fn config_for(backend: &str, me: u8, peer: u8, dual: bool) -> String {
    let (port, vxlan, mac) = if backend == VXLAN {
        (
            8472,
            format!("[vxlan]\nvni = 7\nvtep_mac = \"02:00:00:00:0{me}:00\"\n"),
            format!("vtep_mac = \"02:00:00:00:0{peer}:00\"\n"),
        )
    } else {
        (8285, String::new(), String::new())
    };
    let (listen, endpoint4) = if dual {
        (
            format!("address = \"198.18.0.{me}\"\naddress6 = \"fd00:198:18::{me}\"\n"),
            format!("198.18.0.{peer}"),
        )
    } else {
        (
            format!("address = \"fd00:198:18::{me}\"\n"),
            format!("fd00:198:18::{peer}"),
        )
    };
    let engine = if dual { "[engine]\nworkers = 2\n" } else { "" };
    format!(
        r#"backend = "{backend}"
network = "100.96.0.0/16"
network6 = "fd00:100:96::/48"
[device]
name = "weft6"
address = "100.96.{me}.0"
address6 = "fd00:100:96:{me}::1"
[listen]
{listen}port = {port}
{engine}{vxlan}[[peer]]
subnet = "100.96.{peer}.0/24"
endpoint = "{endpoint4}"
{mac}[[peer]]
subnet = "fd00:100:96:{peer}::/64"
endpoint = "fd00:198:18::{peer}"
{mac}"#
    )
}

fn config(backend: &str, me: u8, peer: u8) -> String {
    config_for(backend, me, peer, false)
}

fn ping6(bed: &Testbed, from: u8, to: &str) -> bool {
    let out = bed
        .host(from)
        .netns()
        .exec(&["ping", "-6", "-c", "1", "-W", "1", to])
        .unwrap();
    out.status.success()
}

/// Two hosts with an IPv6 underlay address next to the IPv4 one, weft on both with the
/// configuration `config(backend, me, peer)` gives; checks that the device MTU leaves room
/// for the IPv6 underlay's longer headers.
fn start_pair(
    name: &str,
    backend: &str,
    config: fn(&str, u8, u8) -> String,
) -> (Testbed, Vec<(WeftDaemon, ConfigFile)>) {
    assert!(
        weft_testbed::is_root(),
        "this end-to-end test builds network namespaces: run it as root"
    );
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let bed = Testbed::two_hosts(&format!("{name}{}", &backend[..1])).unwrap();
    for n in [1u8, 2] {
        weft_testbed::add_underlay_addr6(bed.host(n).netns(), n).unwrap();
    }
    let mut daemons = Vec::new();
    for (me, peer) in [(1u8, 2u8), (2, 1)] {
        let file = ConfigFile::new(&config(backend, me, peer)).unwrap();
        let daemon = WeftDaemon::start(exe, bed.host(me).netns(), file.path(), "weft6").unwrap();
        daemons.push((daemon, file));
    }
    let link = bed
        .host(1)
        .netns()
        .ip(&["-o", "link", "show", "weft6"])
        .unwrap();
    let expected = if backend == UDP {
        "mtu 1452"
    } else {
        "mtu 1430"
    };
    assert!(link.contains(expected), "{backend}: {link}");
    (bed, daemons)
}

fn run(backend: &str) {
    let (bed, daemons) = start_pair("w6", backend, config);
    for (from, to) in [(1u8, "fd00:100:96:2::1"), (2, "fd00:100:96:1::1")] {
        wait_until(
            Duration::from_secs(10),
            &format!("{backend}: ping6 from host {from} to {to}"),
            || ping6(&bed, from, to),
        )
        .unwrap();
    }
    for (from, to) in [(1u8, 2u8), (2, 1)] {
        let summary =
            weft_testbed::ping(bed.host(from).netns(), weft_testbed::overlay_addr(to), 2).unwrap();
        assert!(
            summary.all_received(),
            "{backend}: IPv4 over the IPv6 underlay, {from} -> {to}"
        );
    }
    let stats = daemons[0].0.stats().unwrap();
    assert!(stats.get("tx_packets").unwrap() >= 3, "{backend}: {stats}");
    assert_eq!(stats.get("drop_malformed"), Some(0), "{backend}: {stats}");
}

#[test]
fn udp_backend_over_an_ipv6_underlay_carries_ipv6_and_ipv4() {
    run(UDP);
}

#[test]
fn vxlan_backend_over_an_ipv6_underlay_carries_ipv6_and_ipv4() {
    run(VXLAN);
}

fn dual_stack_config(backend: &str, me: u8, peer: u8) -> String {
    config_for(backend, me, peer, true)
}

/// How many packets `capture` has seen so far.
fn captured(capture: &weft_testbed::PacketCapture) -> usize {
    capture.packets().map_or(0, |p| p.packets.len())
}

fn run_dual_stack(backend: &str) {
    // The one device carries both families: its MTU fits the IPv6 underlay's headers.
    let (bed, daemons) = start_pair("wd", backend, dual_stack_config);

    let port = if backend == UDP { "8285" } else { "8472" };
    let h2 = bed.host(2).netns();
    let v6 =
        weft_testbed::PacketCapture::start(h2, "u0", &["ip6", "and", "udp", "port", port]).unwrap();
    let v4 =
        weft_testbed::PacketCapture::start(h2, "u0", &["ip", "and", "udp", "port", port]).unwrap();
    wait_until(
        Duration::from_secs(10),
        &format!("{backend}: ping6 from host 1 to host 2"),
        || ping6(&bed, 1, "fd00:100:96:2::1"),
    )
    .unwrap();
    wait_until(
        Duration::from_secs(5),
        &format!("{backend}: the IPv6 pings in the IPv6 underlay's capture"),
        || captured(&v6) > 0,
    )
    .unwrap();
    let v4_before = captured(&v4);
    let v6_before = captured(&v6);
    let summary =
        weft_testbed::ping(bed.host(1).netns(), weft_testbed::overlay_addr(2), 3).unwrap();
    assert!(summary.all_received(), "{backend}: IPv4: {summary}");
    // IPv4 went over the IPv4 underlay (request and reply each way), not the IPv6 one.
    wait_until(
        Duration::from_secs(5),
        &format!("{backend}: the IPv4 pings in the IPv4 capture"),
        || captured(&v4) >= v4_before + 6,
    )
    .unwrap();
    assert_eq!(
        captured(&v6),
        v6_before,
        "{backend}: IPv4 pings on the IPv6 underlay"
    );
    drop((v4, v6));

    // Several TCP flows over each family at once, through both workers.
    let h1 = bed.host(1).netns();
    let dest6: std::net::Ipv6Addr = "fd00:100:96:2::1".parse().unwrap();
    let flows6 = weft_testbed::tcp_transfers(
        h1,
        h2,
        dest6,
        &[5001, 5002, 5003, 5004],
        8 << 20,
        Duration::from_secs(60),
    )
    .unwrap();
    let flows4 = weft_testbed::tcp_transfers(
        h2,
        h1,
        weft_testbed::overlay_addr(1),
        &[5005, 5006, 5007, 5008],
        8 << 20,
        Duration::from_secs(60),
    )
    .unwrap();
    for t in flows6.iter().chain(&flows4) {
        assert!(t.intact(), "{backend}: {t}");
    }
    let stats = daemons[0].0.stats().unwrap();
    assert_eq!(stats.get("drop_malformed"), Some(0), "{backend}: {stats}");
    assert_eq!(stats.get("drop_io_error"), Some(0), "{backend}: {stats}");
}

#[test]
fn udp_backend_over_a_dual_stack_underlay_carries_each_family_over_its_own() {
    run_dual_stack(UDP);
}

#[test]
fn vxlan_backend_over_a_dual_stack_underlay_carries_each_family_over_its_own() {
    run_dual_stack(VXLAN);
}
