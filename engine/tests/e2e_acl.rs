//! `[[acl]]` rules in the daemon, end to end: two hosts with a pod each, weft on both (the
//! UDP backend and the VXLAN one), rules on the receiving host (ingress) and on the sending
//! host (egress). An allowed flow goes through and is counted on its rule; a denied one
//! times out; a rejected one fails at once with "no route to host" (the ICMP
//! administratively-prohibited error weft sends back); a SIGHUP that changes the rules
//! leaves a long transfer that stays allowed running, byte for byte.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use weft_testbed::{
    pod_addr, wait_until, ConfigFile, ConnectOutcome, Netns, NsChild, Testbed, VxlanConfig,
    WeftConfig, WeftDaemon, DEFAULT_DEVICE, UDP_OVERLAY_MTU, VXLAN_DEVICE, VXLAN_OVERLAY_MTU,
};

use common::{require_root, stat, wait_stat, weft_exe};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Udp,
    Vxlan,
}

/// Host 2's rules: about TCP from host 1's pods, coming in.
const RECEIVER_RULES: &str = r#"
[[acl]]
action = "allow"
direction = "in"
protocol = "tcp"
ports = 5001

[[acl]]
action = "deny"
direction = "in"
protocol = "tcp"
ports = "5002"

[[acl]]
action = "reject"
direction = "in"
source = "100.96.1.0/24"
protocol = "tcp"
ports = "5003-5003"
"#;

/// Host 1's rule: TCP to port 5004, going out, is rejected before it leaves.
const SENDER_RULES: &str = r#"
[[acl]]
action = "reject"
direction = "out"
protocol = "tcp"
ports = 5004
"#;

/// Two hosts with pod 2 each and weft on both, host `h` with `rules[h - 1]` appended to its
/// configuration.
struct AclBed {
    daemons: Vec<WeftDaemon>,
    configs: Vec<ConfigFile>,
    bed: Testbed,
}

impl AclBed {
    fn new(name: &str, kind: Kind, rules: [&str; 2]) -> AclBed {
        require_root();
        let mut bed = Testbed::two_hosts(name).expect("two hosts");
        let mtu = match kind {
            Kind::Udp => UDP_OVERLAY_MTU,
            Kind::Vxlan => VXLAN_OVERLAY_MTU,
        };
        for host in [1, 2] {
            bed.add_pod(host, 2, mtu).expect("a pod");
        }
        let (mut daemons, mut configs) = (Vec::new(), Vec::new());
        for (host, other) in [(1u8, 2u8), (2, 1)] {
            let (base, device) = match kind {
                Kind::Udp => (WeftConfig::udp(host, &[other]).to_toml(), DEFAULT_DEVICE),
                Kind::Vxlan => (VxlanConfig::l3(host, &[other]).to_toml(), VXLAN_DEVICE),
            };
            let config = ConfigFile::new(&format!("{base}{}", rules[usize::from(host) - 1]))
                .expect("write the config");
            let daemon =
                WeftDaemon::start(weft_exe(), bed.host(host).netns(), config.path(), device)
                    .unwrap_or_else(|e| panic!("start weft on host {host}: {e}"));
            daemons.push(daemon);
            configs.push(config);
        }
        AclBed {
            daemons,
            configs,
            bed,
        }
    }

    fn pod(&self, host: u8) -> &Netns {
        self.bed.host(host).pod(2).netns()
    }

    fn daemon(&self, host: u8) -> &WeftDaemon {
        &self.daemons[usize::from(host) - 1]
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {} ---\n{}", d.netns(), d.log()))
            .collect()
    }
}

/// Listens on `ports` in `netns` until dropped.
fn listen(netns: &Netns, ports: &[u16]) -> NsChild {
    weft_testbed::tcp_listeners(netns, ports).expect("start the listeners")
}

/// What a TCP connect from `netns` to `to:port` comes to within 4 s.
fn connect(netns: &Netns, to: Ipv4Addr, port: u16) -> ConnectOutcome {
    weft_testbed::tcp_connect(netns, to.into(), port, Duration::from_secs(4))
        .expect("run the connect probe")
}

fn rules_allow_deny_and_reject_both_ways(name: &str, kind: Kind) {
    let bed = AclBed::new(name, kind, [SENDER_RULES, RECEIVER_RULES]);
    let _listener = listen(bed.pod(2), &[5001, 5002, 5003, 5004]);
    let to = pod_addr(2, 2);
    let (sender, receiver) = (bed.daemon(1), bed.daemon(2));

    assert_eq!(
        connect(bed.pod(1), to, 5001),
        ConnectOutcome::Connected,
        "{}",
        bed.logs()
    );
    wait_stat(receiver, "acl_rule_1_hits", 1);

    assert_eq!(
        connect(bed.pod(1), to, 5002),
        ConnectOutcome::Timeout,
        "{}",
        bed.logs()
    );
    wait_stat(receiver, "acl_rule_2_hits", 1);

    assert_eq!(
        connect(bed.pod(1), to, 5003),
        ConnectOutcome::Unreachable,
        "{}",
        bed.logs()
    );
    wait_stat(receiver, "acl_rule_3_hits", 1);
    assert!(stat(receiver, "icmp_sent") >= 1);

    // Rejected on the way out, by the sending host.
    assert_eq!(
        connect(bed.pod(1), to, 5004),
        ConnectOutcome::Unreachable,
        "{}",
        bed.logs()
    );
    wait_stat(sender, "acl_rule_1_hits", 1);
    assert!(stat(sender, "drop_policy") >= 1);
    assert!(stat(sender, "icmp_sent") >= 1);

    // Everything else is allowed (the default), both ways.
    for (from, to) in [(1, 2), (2, 1)] {
        let ping = weft_testbed::ping(bed.pod(from), pod_addr(to, 2), 2).unwrap();
        assert!(ping.all_received(), "pod {from} -> pod {to}: {ping:?}");
    }
    wait_stat(receiver, "acl_default_hits", 1);
    // Denied and rejected packets are counted as their own drop reason, and only those:
    // the SYNs to 5002 (retransmitted) and 5003.
    // (The rule counters are published once a second: wait for them to catch up.)
    let counted = || {
        let dropped = stat(receiver, "drop_policy");
        let hits = stat(receiver, "acl_rule_2_hits") + stat(receiver, "acl_rule_3_hits");
        dropped >= 2 && dropped == hits
    };
    wait_until(
        Duration::from_secs(10),
        "drop_policy = denied + rejected",
        counted,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", receiver.stats().unwrap()));

    let out = receiver.control(&["acl", "list"]).unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(
        lines[0].starts_with("1 allow in tcp from any to any port 5001 hits "),
        "{list}"
    );
    assert!(
        lines[2].starts_with("3 reject in tcp from 100.96.1.0/24 to any port 5003 hits "),
        "{list}"
    );
    assert!(lines[3].starts_with("default allow hits "), "{list}");
}

#[test]
fn udp_backend_rules_allow_deny_and_reject_both_ways() {
    rules_allow_deny_and_reject_both_ways("wacu", Kind::Udp);
}

#[test]
fn vxlan_backend_rules_allow_deny_and_reject_both_ways() {
    rules_allow_deny_and_reject_both_ways("wacv", Kind::Vxlan);
}

/// Receives on `port` in `netns` until the sender closes; prints the byte count.
fn receive(netns: &Netns, port: u16) -> NsChild {
    let script = format!(
        "import socket\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {port})); s.listen(1); print('listening', flush=True)\n\
         c = s.accept()[0]; n = 0\n\
         while True:\n\
         \x20   d = c.recv(65536)\n\
         \x20   if not d: break\n\
         \x20   n += len(d)\n\
         print(n, flush=True)\n"
    );
    let mut child = netns.spawn(&["python3", "-c", &script]).unwrap();
    wait_until(Duration::from_secs(10), "the receiver", || {
        child.stdout().contains("listening") || !child.is_running()
    })
    .unwrap();
    child
}

/// Sends 32 KiB every 5 ms to `to:port` from `netns` until `stop` exists (at most 60 s);
/// prints the byte count.
fn send_until(netns: &Netns, to: Ipv4Addr, port: u16, stop: &Path) -> NsChild {
    let script = format!(
        "import socket, os, time\n\
         s = socket.create_connection(('{to}', {port}), timeout=10)\n\
         chunk = os.urandom(32768); n = 0; end = time.time() + 60\n\
         while not os.path.exists('{}') and time.time() < end:\n\
         \x20   s.sendall(chunk); n += len(chunk); time.sleep(0.005)\n\
         s.close(); print(n, flush=True)\n",
        stop.display()
    );
    netns.spawn(&["python3", "-c", &script]).unwrap()
}

#[test]
fn a_sighup_that_changes_the_rules_keeps_an_allowed_transfer_going() {
    let mut bed = AclBed::new("wacr", Kind::Udp, ["", RECEIVER_RULES]);
    let to = pod_addr(2, 2);
    let dir = weft_testbed::TempDir::new("weft-acl").unwrap();
    let stop = dir.path().join("stop");
    let mut receiver = receive(bed.pod(2), 5001);
    let mut sender = send_until(bed.pod(1), to, 5001, &stop);
    wait_stat(bed.daemon(2), "acl_rule_1_hits", 100);

    // Port 5002 turns from deny to allow; the rule the transfer uses stays as it is.
    let text = std::fs::read_to_string(bed.configs[1].path()).unwrap();
    let changed = text.replacen(
        "action = \"deny\"\ndirection = \"in\"",
        "action = \"allow\"\ndirection = \"in\"",
        1,
    );
    assert_ne!(text, changed);
    std::fs::write(
        bed.configs[1].path(),
        format!("{changed}\n[policy]\ndefault = \"allow\"\n"),
    )
    .unwrap();
    let before = stat(bed.daemon(2), "acl_rule_1_hits");
    bed.daemons[1].process().signal("HUP").unwrap();
    wait_until(Duration::from_secs(10), "the ACL reload", || {
        bed.daemon(2).log().contains("3 acl rule(s)")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
    assert!(sender.is_running(), "the transfer ran through the reload");

    // The transfer goes on after the reload, counted on the same (kept) counter.
    wait_stat(bed.daemon(2), "acl_rule_1_hits", before + 100);
    let _listener = listen(bed.pod(2), &[5002]);
    assert_eq!(
        connect(bed.pod(1), to, 5002),
        ConnectOutcome::Connected,
        "{}",
        bed.logs()
    );

    std::fs::write(&stop, b"").unwrap();
    let status = sender.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "sender: {}", sender.stderr());
    receiver.wait_timeout(Duration::from_secs(30)).unwrap();
    let sent: u64 = sender.stdout().trim().parse().unwrap();
    let received: u64 = receiver.stdout().lines().last().unwrap().parse().unwrap();
    assert!(sent > 0);
    assert_eq!(sent, received, "{}", bed.logs());
    assert_eq!(stat(bed.daemon(2), "drop_policy"), 0, "{}", bed.logs());
}
