//! End-to-end tests of the daemon's control socket as an operator and a local attacker on
//! the same host meet it: clients that are refused, and clients that misbehave, against a
//! real `weft run`. All need root.

mod common;

use common::{stat, UdpCluster};

/// `weft <args>` as the unprivileged user `nobody`, inside host 1's namespace: its exit
/// status and stderr.
fn as_nobody(cluster: &UdpCluster, args: &[&str]) -> (bool, String) {
    let exe = common::weft_exe();
    let mut argv = vec![
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        exe.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    let out = cluster.host(1).exec(&argv).expect("run weft as nobody");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_refused_client_is_told_permission_denied_every_time_and_the_log_stays_short() {
    let cluster = UdpCluster::two_hosts("e2e-ctl-refuse", false);
    for i in 0..30 {
        // `peer add` writes a longer request than `stats`; both are refused in words.
        let args: &[&str] = if i % 2 == 0 {
            &["stats"]
        } else {
            &[
                "peer",
                "add",
                "--subnet",
                "100.96.9.0/24",
                "--endpoint",
                "198.18.0.9",
            ]
        };
        let (ok, stderr) = as_nobody(&cluster, args);
        assert!(!ok, "attempt {i}: a refused client must fail");
        assert!(
            stderr.contains("permission denied") && !stderr.contains("Broken pipe"),
            "attempt {i}: {stderr}"
        );
    }
    // Root is still served, and nothing was added.
    assert!(stat(&cluster.a, "tx_packets") < u64::MAX);
    let peers = cluster.a.control(&["peer", "list"]).expect("peer list");
    assert!(!String::from_utf8_lossy(&peers.stdout).contains("100.96.9.0"));
    // Thirty refusals within seconds are one or two log lines, not thirty.
    let log = cluster.a.log();
    let lines = log.matches("refused a client").count();
    assert!((1..=3).contains(&lines), "{lines} refusal lines:\n{log}");
}
