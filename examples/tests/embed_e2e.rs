//! The embedding example carries traffic for real: two hosts in network namespaces, each
//! running `weft-embed` (the library on a TUN of its own), ping each other's overlay address.

use std::time::Duration;

use weft_testbed::{wait_until, Testbed};

#[test]
fn two_embedded_engines_ping_each_other() {
    if !weft_testbed::is_root() {
        panic!("this end-to-end test builds network namespaces: run it as root");
    }
    let exe = env!("CARGO_BIN_EXE_weft-embed");
    let bed = Testbed::two_hosts("wemb").expect("two hosts");
    let mut children = Vec::new();
    for (me, peer) in [(1u8, 2u8), (2, 1)] {
        let host = bed.host(me);
        let address = format!("{}/16", weft_testbed::overlay_addr(me));
        let listen = format!("{}:8285", weft_testbed::underlay_addr(me));
        let route = format!(
            "{}={}:8285",
            weft_testbed::overlay_subnet(peer),
            weft_testbed::underlay_addr(peer)
        );
        let argv = [
            exe,
            "--device",
            "vpn0",
            "--address",
            &address,
            "--listen",
            &listen,
            "--peer",
            &route,
            "--seconds",
            "60",
        ];
        children.push(host.netns().spawn(&argv).expect("start weft-embed"));
    }
    for me in [1u8, 2] {
        wait_until(
            Duration::from_secs(20),
            &format!("vpn0 to appear in host {me}"),
            || bed.host(me).netns().has_link("vpn0").unwrap_or(false),
        )
        .unwrap();
    }
    for (from, to) in [(1u8, 2u8), (2, 1)] {
        let summary =
            weft_testbed::ping(bed.host(from).netns(), weft_testbed::overlay_addr(to), 3).unwrap();
        assert!(
            summary.all_received(),
            "host {from} -> host {to}: {summary:?}"
        );
    }
    for mut child in children {
        assert!(
            child.is_running(),
            "weft-embed exited early: {}",
            child.stderr()
        );
        child.terminate(Duration::from_secs(5)).unwrap();
    }
    assert!(
        !bed.host(1).netns().has_link("vpn0").unwrap(),
        "the device goes with the process"
    );
}
