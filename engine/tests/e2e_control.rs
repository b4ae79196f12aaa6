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
    // A route added by root is logged as one line with its fields.
    cluster
        .a
        .control(&[
            "peer",
            "add",
            "--subnet",
            "100.96.8.0/24",
            "--endpoint",
            "198.18.0.8",
        ])
        .expect("peer add");
    let log = cluster.a.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("weft: info: peer route added")
                && l.contains("subnet=100.96.8.0/24")
                && l.contains("peer=198.18.0.8:8285")),
        "{log}"
    );
    // Thirty refusals within seconds are one or two log lines, not thirty.
    let log = cluster.a.log();
    let lines = log.matches("refused a client").count();
    assert!(log.contains("uid=65534"), "{log}");
    assert!((1..=3).contains(&lines), "{lines} refusal lines:\n{log}");
}

/// `GET path` from inside `netns` to `addr`: the status line and the body.
fn http_get(netns: &weft_testbed::Netns, addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let (addr, path) = (addr.to_owned(), path.to_owned());
    netns
        .run_inside(move || {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect to the metrics");
            write!(s, "GET {path} HTTP/1.1\r\nHost: weft\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            (
                head.lines().next().unwrap_or("").to_owned(),
                body.to_owned(),
            )
        })
        .expect("run inside the namespace")
}

#[test]
fn metrics_health_and_readiness_are_served_with_labelled_counters() {
    common::require_root();
    let bed = weft_testbed::Testbed::two_hosts("e2e-metrics").expect("two hosts");
    let toml = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:9156\"\n",
        weft_testbed::WeftConfig::udp(1, &[2])
            .with_engine(weft_testbed::EngineConfig::default().workers(2))
            .to_toml()
    );
    let config1 = weft_testbed::ConfigFile::new(&toml).unwrap();
    let config2 = weft_testbed::WeftConfig::udp(2, &[1]).write().unwrap();
    let exe = common::weft_exe();
    let h1 = bed.host(1).netns();
    let _b = weft_testbed::WeftDaemon::start(exe, bed.host(2).netns(), config2.path(), "flannel0")
        .unwrap();
    let a = weft_testbed::WeftDaemon::start(exe, h1, config1.path(), "flannel0")
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert!(weft_testbed::ping(h1, weft_testbed::overlay_addr(2), 2)
        .unwrap()
        .all_received());

    assert_eq!(
        http_get(h1, "127.0.0.1:9156", "/healthz").0,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        http_get(h1, "127.0.0.1:9156", "/readyz"),
        ("HTTP/1.1 200 OK".into(), "ready\n".into())
    );
    let (status, body) = http_get(h1, "127.0.0.1:9156", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let base = "backend=\"udp\",device=\"flannel0\"";
    for wanted in [
        format!("weft_tx_packets_total{{{base},worker=\"0\"}}"),
        format!("weft_tx_packets_total{{{base},worker=\"1\"}}"),
        format!("weft_drops_total{{{base},worker=\"0\",reason=\"no_route\"}}"),
        format!("weft_offload{{{base},feature=\"udp_gso\"}}"),
        format!("weft_workers{{{base}}} 2"),
        format!("weft_peers{{{base}}} 1"),
        format!("weft_device_up{{{base}}} 1"),
    ] {
        assert!(body.contains(&wanted), "missing {wanted}\n{body}");
    }
    // The packets counted per worker add up to what `weft stats` says.
    let tx: u64 = body
        .lines()
        .filter(|l| l.starts_with("weft_tx_packets_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(tx >= 2, "{body}");
    let stats_tx = a.stats().unwrap().get("tx_packets").unwrap();
    assert!(stats_tx >= tx, "{stats_tx} < {tx}");
}

/// `CapEff`, `CapPrm` and `CapBnd` of every thread of process `pid`.
fn thread_capabilities(pid: u32) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads") {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        out.push((
            name.trim().to_owned(),
            field("CapEff:"),
            field("CapPrm:"),
            field("CapBnd:"),
        ));
    }
    out
}

/// CAP_NET_ADMIN (12) alone, as /proc prints capability sets.
const NET_ADMIN_ONLY: &str = "0000000000001000";

#[test]
fn after_setup_the_daemon_keeps_only_cap_net_admin_in_every_thread() {
    let mut cluster = UdpCluster::two_hosts("e2e-caps", false);
    let pid = cluster.a.process().id();
    let threads = thread_capabilities(pid);
    assert!(threads.len() >= 3, "{threads:?}");
    for (name, eff, prm, bnd) in &threads {
        assert_eq!(
            (eff.as_str(), prm.as_str(), bnd.as_str()),
            (NET_ADMIN_ONLY, NET_ADMIN_ONLY, NET_ADMIN_ONLY),
            "thread {name}: {threads:?}"
        );
    }
    // And it still does its job, device upkeep included.
    assert!(stat(&cluster.a, "tx_packets") < u64::MAX);
    let h1 = cluster.host(1);
    assert!(weft_testbed::ping(h1, weft_testbed::overlay_addr(2), 1)
        .unwrap()
        .all_received());
}

#[test]
fn a_non_root_user_given_cap_net_admin_runs_the_daemon() {
    let mut cluster = UdpCluster::two_hosts("e2e-nonroot", false);
    // Host 1's root daemon makes way for one run by `nobody`.
    cluster
        .a
        .stop(std::time::Duration::from_secs(10))
        .expect("stop host 1's root daemon");
    let h1 = cluster.host(1);
    let exe = common::weft_exe();
    let config = cluster.configs[0].path().to_str().unwrap().to_owned();
    // /dev/net/tun is 0666 on Debian, but 0600 in some containers: the daemon gets a 0666
    // node of its own in a private mount namespace (the host's is left alone).
    let dev = weft_testbed::TempDir::new("weft-dev").unwrap();
    let dev = dev.path().to_str().unwrap().to_owned();
    // The capabilities the example systemd unit gives, with its NoNewPrivileges.
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/weft.service"),
    )
    .expect("examples/weft.service");
    assert!(unit.lines().any(|l| l == "NoNewPrivileges=yes"), "{unit}");
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities in the unit")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let script = format!(
        "mount -t tmpfs -o mode=755 tmpfs {dev} && mknod -m 666 {dev}/tun c 10 200 && \
         mount --bind {dev}/tun /dev/net/tun && exec setpriv --reuid=nobody --regid=nogroup \
         --clear-groups --no-new-privs --inh-caps={caps} --ambient-caps={caps} {} run \
         --config {config}",
        exe.to_str().unwrap()
    );
    let mut daemon = h1
        .spawn(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .expect("start weft as nobody");
    weft_testbed::wait_until(
        std::time::Duration::from_secs(20),
        "the daemon to come up",
        || {
            h1.exec(&[exe.to_str().unwrap(), "stats"])
                .is_ok_and(|o| o.status.success())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.stderr()));
    let summary = weft_testbed::ping(h1, weft_testbed::overlay_addr(2), 2).unwrap();
    assert!(summary.all_received(), "{summary}\n{}", daemon.stderr());
    let pid = daemon.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    for (name, eff, prm, _) in thread_capabilities(pid) {
        assert_eq!(
            (eff.as_str(), prm.as_str()),
            (NET_ADMIN_ONLY, NET_ADMIN_ONLY),
            "thread {name}"
        );
    }
    daemon.signal("TERM").unwrap();
    let exit = daemon
        .wait_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert!(exit.success(), "{exit}\n{}", daemon.stderr());
}
