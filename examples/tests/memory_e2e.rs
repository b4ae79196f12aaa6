//! The in-memory example runs its own checks: two engines on `MemoryDevice`s joined by UDP
//! sockets on 127.0.0.1. The test runs it inside a fresh network namespace (loopback only),
//! so not a datagram touches the host's own loopback.

use std::time::Duration;

use weft_testbed::Netns;

#[test]
fn two_engines_on_memory_devices_pass_their_checks() {
    if !weft_testbed::is_root() {
        panic!("this test creates a network namespace: run it as root");
    }
    let exe = env!("CARGO_BIN_EXE_weft-memory");
    // `Netns::new` brings the namespace's `lo` up.
    let netns = Netns::new("wmem").expect("a network namespace");
    let output = netns
        .exec_timeout(&[exe], Duration::from_secs(60))
        .expect("run weft-memory");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "weft-memory: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    for expected in [
        "A -> B: 100.96.1.5 > 100.96.2.7 ttl 62 ICMP type 8 code 0",
        "B -> A: 100.96.2.7 > 100.96.1.5 ttl 62 ICMP type 0 code 0",
        "A -> B: 100.96.1.5 > 100.96.2.7 ttl 62 UDP 40000 > 5353",
        "ICMP type 3 code 0",
        "--- engine A counters ---",
        "--- engine B counters ---",
        "tx_packets 2",
        "drop_no_route 1",
        "icmp_sent 1",
        "all checks passed",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}
