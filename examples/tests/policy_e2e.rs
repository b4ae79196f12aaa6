//! The policy example for real: two hosts in network namespaces, each running `weft-policy`
//! (one TCP port allowed between the two subnets): that port connects, another port and
//! ping do not, and the engines count the refused packets as `drop_policy`.

use std::time::Duration;

use weft_testbed::{tcp_connect, tcp_listeners, wait_until, ConnectOutcome, Testbed};

#[test]
fn only_the_allowed_port_gets_through() {
    if !weft_testbed::is_root() {
        panic!("this end-to-end test builds network namespaces: run it as root");
    }
    let exe = env!("CARGO_BIN_EXE_weft-policy");
    let bed = Testbed::two_hosts("wpol").expect("two hosts");
    let mut children = Vec::new();
    for (me, peer) in [(1u8, 2u8), (2, 1)] {
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
            "--port",
            "5001",
            "--seconds",
            "120",
        ];
        children.push(
            bed.host(me)
                .netns()
                .spawn(&argv)
                .expect("start weft-policy"),
        );
    }
    for (me, child) in [1u8, 2].into_iter().zip(&mut children) {
        wait_until(Duration::from_secs(20), "weft-policy to be up", || {
            child.stdout().contains("up: only TCP port 5001") || !child.is_running()
        })
        .unwrap();
        assert!(child.is_running(), "host {me}: {}", child.stderr());
    }
    let b = bed.host(2).netns();
    let _listeners = tcp_listeners(b, &[5001, 5002]).unwrap();
    let a = bed.host(1).netns();
    let to = weft_testbed::overlay_addr(2).into();
    let connect = |port| tcp_connect(a, to, port, Duration::from_secs(3)).unwrap();
    assert_eq!(connect(5001), ConnectOutcome::Connected);
    assert_eq!(connect(5002), ConnectOutcome::Timeout);
    let ping = weft_testbed::ping(a, weft_testbed::overlay_addr(2), 2).unwrap();
    assert_eq!(ping.received, 0, "{ping:?}");

    let mut dropped = 0;
    for mut child in children {
        let status = child.terminate(Duration::from_secs(5)).unwrap();
        assert!(status.success(), "{status}: {}", child.stderr());
        let out = child.stdout();
        let count = out
            .lines()
            .find_map(|l| l.strip_prefix("drop_policy "))
            .unwrap_or_else(|| panic!("no drop_policy counter in:\n{out}"));
        dropped += count.trim().parse::<u64>().unwrap();
    }
    // The SYNs to 5002 (with retransmissions) and the pings, on either side.
    assert!(dropped >= 3, "drop_policy {dropped}");
}
