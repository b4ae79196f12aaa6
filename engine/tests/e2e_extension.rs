//! weft as flanneld's `extension` backend: the four hooks driven exactly as flanneld drives
//! them (FLANNEL.md §5): the environment (flanneld's own plus the hook's variables), the
//! remote `BackendData` + "\n" on stdin, stdout and stderr captured together; on host 1 the
//! way flanneld >= 0.28.2 runs them (the command split on white space, no shell), on host 2
//! the way older flanneld did (`sh -c "<command>"`). Traffic must cross between the hosts'
//! subnets, and the hooks must be idempotent. Needs root.

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use common::{require_root, weft_exe};
use weft_testbed::{ping, underlay_addr, wait_until, Netns, TempDir, Testbed};

/// How flanneld runs a hook on this host.
#[derive(Clone, Copy)]
enum Exec {
    /// flanneld >= 0.28.2: `strings.Fields(cmd)`, then exec.
    Fields,
    /// Older flanneld: `sh -c cmd`.
    Shell,
}

/// Runs `command` in `netns` the way flanneld would, with `vars` added to the environment
/// and `stdin` + "\n" as input; returns (success, combined output trimmed).
fn run_hook(
    netns: &Netns,
    exec: Exec,
    command: &str,
    vars: &[(&str, String)],
    stdin: &str,
) -> (bool, String) {
    let argv: Vec<&str> = match exec {
        Exec::Fields => command.split_whitespace().collect(),
        Exec::Shell => vec!["sh", "-c", command],
    };
    let mut cmd = netns.command(&argv);
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the hook");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{stdin}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("the hook's output");
    let mut combined = String::from_utf8_lossy(&out.stdout).into_owned();
    combined.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), combined.trim().to_owned())
}

fn subnet(host: u8) -> String {
    format!("100.96.{host}.0/24")
}

#[test]
fn flanneld_extension_hooks_carry_traffic_under_both_execution_styles() {
    require_root();
    let bed = Testbed::two_hosts("ext").expect("two hosts");
    let dir = TempDir::new("weft-ext").expect("a temp dir");
    let weft = weft_exe().to_str().unwrap().to_owned();
    let hook = |host: u8, name: &str| {
        let state = dir.path().join(format!("h{host}"));
        format!("{weft} ext {name} --state-dir {}", state.display())
    };
    let exec = |host: u8| if host == 1 { Exec::Fields } else { Exec::Shell };

    for host in [1u8, 2] {
        let netns = bed.host(host).netns();
        // PreStartupCommand: one stable line, which flanneld stores as BackendData.
        let (ok, out) = run_hook(netns, exec(host), &hook(host, "pre"), &[], "");
        assert!(ok, "pre on host {host}: {out}");
        assert_eq!(out, "{\"Port\":8285}");
        // PostStartupCommand, with what flanneld passes after taking the lease.
        let vars = [
            ("NETWORK", "100.96.0.0/16".to_owned()),
            ("SUBNET", subnet(host)),
            ("IPV6SUBNET", "::/0".to_owned()),
            ("PUBLIC_IP", underlay_addr(host).to_string()),
            ("PUBLIC_IPV6", "<nil>".to_owned()),
        ];
        let (ok, out) = run_hook(netns, exec(host), &hook(host, "post"), &vars, "");
        assert!(ok, "post on host {host}: {out}");
        // flanneld calls post again after a restart: the running daemon is kept.
        let (ok, out) = run_hook(netns, exec(host), &hook(host, "post"), &vars, "");
        assert!(ok, "post again on host {host}: {out}");
    }
    // SubnetAddCommand for each other host's lease (twice: flanneld repeats it on every
    // renewal), with the remote BackendData on stdin.
    for (host, peer) in [(1u8, 2u8), (2, 1)] {
        let vars = [
            ("SUBNET", subnet(peer)),
            ("PUBLIC_IP", underlay_addr(peer).to_string()),
        ];
        for _ in 0..2 {
            let (ok, out) = run_hook(
                bed.host(host).netns(),
                exec(host),
                &hook(host, "add"),
                &vars,
                "{\"Port\":8285}",
            );
            assert!(ok, "add on host {host}: {out}");
        }
    }
    let to2 = Ipv4Addr::new(100, 96, 2, 0);
    let h1 = bed.host(1).netns();
    wait_until(
        Duration::from_secs(15),
        "a ping from host 1 to host 2",
        || ping(h1, to2, 1).is_ok_and(|s| s.all_received()),
    )
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.path().join("h1/extension.log")).unwrap_or_default();
        panic!("{e}\nhost 1's daemon:\n{log}")
    });
    let peers = h1
        .exec_ok(&[&weft, "peer", "list"])
        .expect("weft peer list");
    assert_eq!(peers.trim(), "100.96.2.0/24 198.18.0.2:8285");

    // SubnetRemoveCommand: the route goes (twice: idempotent), traffic stops.
    for _ in 0..2 {
        let (ok, out) = run_hook(
            h1,
            Exec::Fields,
            &hook(1, "remove"),
            &[
                ("SUBNET", subnet(2)),
                ("PUBLIC_IP", underlay_addr(2).to_string()),
            ],
            "{\"Port\":8285}",
        );
        assert!(ok, "remove on host 1: {out}");
    }
    let peers = h1.exec_ok(&[&weft, "peer", "list"]).expect("peer list");
    assert!(!peers.contains("100.96.2.0/24"), "{peers}");
    let summary = ping(h1, to2, 1).expect("ping");
    assert!(!summary.all_received(), "no route, no reply: {summary}");

    // A hook without flanneld's variables fails with one line naming the variable.
    let (ok, out) = run_hook(h1, Exec::Fields, &hook(1, "add"), &[], "");
    assert!(!ok);
    assert!(out.contains("SUBNET"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}
