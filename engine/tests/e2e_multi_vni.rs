//! Several VNIs on one UDP socket: VNI 1 in L3 mode on `flannel.1` (the overlay 100.96.0.0/16)
//! and VNI 2 in L2 mode on a TAP (100.96.200.0/24, one L2 segment across both hosts), served
//! by one weft per host on the one port 8472, each VNI with its own device and peers.

use std::time::Duration;

use weft_testbed::{wait_until, ConfigFile, Testbed, WeftDaemon};

fn config(me: u8, peer: u8) -> String {
    format!(
        r#"backend = "vxlan"
network = "100.96.0.0/16"
[device]
name = "flannel.1"
address = "100.96.{me}.0"
[listen]
address = "198.18.0.{me}"
[vxlan]
vni = 1
vtep_mac = "02:00:00:00:0{me}:00"
[[peer]]
subnet = "100.96.{peer}.0/24"
endpoint = "198.18.0.{peer}"
vtep_mac = "02:00:00:00:0{peer}:00"
[[vni]]
vni = 2
mode = "l2"
device = "weft2"
address = "100.96.200.{me}/24"
vtep_mac = "02:00:00:00:0{me}:02"
[[vni.peer]]
endpoint = "198.18.0.{peer}"
"#
    )
}

#[test]
fn two_vnis_share_one_socket_each_with_its_device_and_peers() {
    assert!(
        weft_testbed::is_root(),
        "this end-to-end test builds network namespaces: run it as root"
    );
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let bed = Testbed::two_hosts("wvni").unwrap();
    let mut daemons = Vec::new();
    for (me, peer) in [(1u8, 2u8), (2, 1)] {
        let file = ConfigFile::new(&config(me, peer)).unwrap();
        let daemon =
            WeftDaemon::start(exe, bed.host(me).netns(), file.path(), "flannel.1").unwrap();
        daemons.push((daemon, file));
    }
    let a = bed.host(1).netns();

    // One UDP socket per worker (one worker per CPU by default) listens on 8472 for both
    // VNIs: not one per VNI.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let listening = a
        .exec_ok(&["ss", "-H", "-u", "-l", "-n", "sport", "= :8472"])
        .unwrap();
    assert_eq!(
        listening.lines().count(),
        workers,
        "one socket per worker on 8472: {listening}"
    );
    // Each VNI has its own device: a TUN for L3, a TAP (with its VTEP MAC) for L2.
    assert!(a.has_link("flannel.1").unwrap() && a.has_link("weft2").unwrap());
    let tap = a.ip(&["-o", "link", "show", "weft2"]).unwrap();
    assert!(tap.contains("link/ether 02:00:00:00:01:02"), "{tap}");

    // VNI 1 (L3) and VNI 2 (L2) both carry traffic, both ways.
    for (from, to) in [
        (1u8, "100.96.2.0"),
        (2, "100.96.1.0"),
        (1, "100.96.200.2"),
        (2, "100.96.200.1"),
    ] {
        let ns = bed.host(from).netns();
        wait_until(
            Duration::from_secs(10),
            &format!("ping from host {from} to {to}"),
            || {
                ns.exec(&["ping", "-c", "1", "-W", "1", to])
                    .is_ok_and(|o| o.status.success())
            },
        )
        .unwrap();
    }

    // VNI 2 learned the other host's TAP MAC; VNI 1 (L3) keeps no FDB.
    let (daemon_a, _) = &daemons[0];
    let fdb = daemon_a.fdb_list(Some(2)).unwrap();
    assert!(
        fdb.iter().any(|e| e.learned
            && e.mac == "02:00:00:00:02:02"
            && e.endpoint.starts_with("198.18.0.2")),
        "{fdb:?}"
    );
    assert!(daemon_a.fdb_list(None).unwrap().is_empty());
    // Routes are per VNI.
    let vni1 = daemon_a.vxlan_peer_list().unwrap();
    assert_eq!(vni1.len(), 1, "{vni1:?}");
    let out = daemon_a.control(&["peer", "list", "--vni", "2"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let vni2 = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(vni2, "vtep 198.18.0.2:8472");
    // A VNI this host does not serve is refused by name.
    let out = daemon_a.control(&["peer", "list", "--vni", "3"]).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("VNI 3 is not served"),
        "{out:?}"
    );
}
