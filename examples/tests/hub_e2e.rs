//! The hub example changes routes while traffic flows: three hosts on a switch, `weft-hub` on
//! host 1 and a `weft-embed` spoke on hosts 2 and 3 (each sending the whole overlay to the
//! hub). The hub starts with a route to spoke 2 only; routes to spoke 3 are added and removed
//! through its stdin, and pings from the hub (and from spoke 2 through the hub) follow.

use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::time::Duration;

use weft_testbed::{
    overlay_addr, overlay_subnet, underlay_addr, wait_until, Netns, TempDir, Testbed,
};

/// How long a command may take to be answered, or a process to start or stop.
const DEADLINE: Duration = Duration::from_secs(20);

/// `weft-hub` running inside a namespace, its stdin a pipe we hold, its output in files.
/// Killed on drop (the namespace's own drop would end it too).
struct Hub {
    child: Child,
    stdin: Option<ChildStdin>,
    dir: TempDir,
}

impl Hub {
    fn start(netns: &Netns, argv: &[&str]) -> Hub {
        let dir = TempDir::new("weft-hub").expect("a temporary directory");
        let file = |name: &str| std::fs::File::create(dir.path().join(name)).expect(name);
        let mut child = netns
            .command(argv)
            .stdin(Stdio::piped())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .expect("start weft-hub");
        let stdin = child.stdin.take();
        Hub { child, stdin, dir }
    }

    fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        self.output("stdout")
    }

    /// The lines that answer a command (`ok: ...` or `error: ...`).
    fn replies(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .filter(|l| l.starts_with("ok:") || l.starts_with("error:"))
            .map(str::to_owned)
            .collect()
    }

    /// Sends one command line and returns its answer, once it has come.
    fn send(&mut self, line: &str) -> String {
        let before = self.replies().len();
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to the hub's stdin");
        stdin.flush().expect("flush the hub's stdin");
        wait_until(DEADLINE, &format!("the hub to answer {line:?}"), || {
            self.replies().len() > before
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout(),
                self.output("stderr")
            )
        });
        self.replies()[before].clone()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Pings `to` from `netns` twice and returns how many replies came back.
fn ping_replies(netns: &Netns, to: std::net::Ipv4Addr) -> (u32, String) {
    let summary = weft_testbed::ping(netns, to, 2).expect("run ping");
    (summary.received, summary.output)
}

fn assert_reachable(netns: &Netns, to: std::net::Ipv4Addr, what: &str) {
    let summary = weft_testbed::ping(netns, to, 3).expect("run ping");
    assert!(summary.all_received(), "{what}: {summary:?}");
}

fn assert_unreachable(netns: &Netns, to: std::net::Ipv4Addr, what: &str) {
    let (received, output) = ping_replies(netns, to);
    assert_eq!(received, 0, "{what}: {output}");
}

#[test]
fn a_hub_adds_and_removes_spokes_at_runtime() {
    if !weft_testbed::is_root() {
        panic!("this end-to-end test builds network namespaces: run it as root");
    }
    let hub_exe = env!("CARGO_BIN_EXE_weft-hub");
    let spoke_exe = env!("CARGO_BIN_EXE_weft-embed");
    let bed = Testbed::switched("whub", 3).expect("three hosts on a switch");

    // Spokes 2 and 3: the whole overlay goes to the hub.
    let to_hub = format!("100.96.0.0/16={}:8285", underlay_addr(1));
    let mut spokes = Vec::new();
    for me in [2u8, 3] {
        let address = format!("{}/16", overlay_addr(me));
        let listen = format!("{}:8285", underlay_addr(me));
        let argv = [
            spoke_exe,
            "--device",
            "vpn0",
            "--address",
            &address,
            "--listen",
            &listen,
            "--peer",
            &to_hub,
            "--seconds",
            "300",
        ];
        spokes.push(bed.host(me).netns().spawn(&argv).expect("start weft-embed"));
    }

    // The hub on host 1, forwarding between spokes, with a route to spoke 2 only.
    let hub_ns = bed.host(1).netns();
    hub_ns
        .sysctl("net.ipv4.ip_forward", "1")
        .expect("forwarding on the hub");
    let hub_address = format!("{}/16", overlay_addr(1));
    let hub_listen = format!("{}:8285", underlay_addr(1));
    let spoke = |n: u8| format!("{} {}:8285", overlay_subnet(n), underlay_addr(n));
    let first = format!("{}={}:8285", overlay_subnet(2), underlay_addr(2));
    let mut hub = Hub::start(
        hub_ns,
        &[
            hub_exe,
            "--device",
            "vpn0",
            "--address",
            &hub_address,
            "--listen",
            &hub_listen,
            "--peer",
            &first,
        ],
    );
    wait_until(DEADLINE, "the hub to be ready", || {
        hub.stdout().contains("ready:") || !hub.is_running()
    })
    .unwrap();
    assert!(
        hub.is_running(),
        "weft-hub exited: {}",
        hub.output("stderr")
    );
    for me in [2u8, 3] {
        wait_until(DEADLINE, &format!("vpn0 on spoke {me}"), || {
            bed.host(me).netns().has_link("vpn0").unwrap_or(false)
        })
        .unwrap();
    }

    let spoke2 = bed.host(2).netns();
    assert_reachable(hub_ns, overlay_addr(2), "hub -> spoke 2 (initial route)");
    assert_unreachable(hub_ns, overlay_addr(3), "hub -> spoke 3 before its route");
    assert_unreachable(
        spoke2,
        overlay_addr(3),
        "spoke 2 -> spoke 3 before the route",
    );

    // Two routes added in one change (spoke 4 does not exist; its route is harmless).
    let reply = hub.send(&format!("add {}; add {}", spoke(3), spoke(4)));
    assert_eq!(reply, "ok: 2 change(s), 3 route(s)");
    assert_reachable(hub_ns, overlay_addr(3), "hub -> spoke 3 after `add`");
    assert_reachable(
        spoke2,
        overlay_addr(3),
        "spoke 2 -> spoke 3 through the hub",
    );

    let listing = hub.send("routes");
    assert_eq!(listing, "ok: 3 route(s)");
    assert!(
        hub.stdout().contains(&format!(
            "{} via {}:8285",
            overlay_subnet(3),
            underlay_addr(3)
        )),
        "{}",
        hub.stdout()
    );

    // A bad line is refused and changes nothing.
    let refused = hub.send("add 100.96.5.0/24");
    assert!(refused.starts_with("error:"), "{refused}");
    assert_reachable(
        hub_ns,
        overlay_addr(3),
        "hub -> spoke 3 after a refused line",
    );

    let reply = hub.send(&format!(
        "remove {}; remove {}",
        overlay_subnet(3),
        overlay_subnet(4)
    ));
    assert_eq!(reply, "ok: 2 change(s), 1 route(s)");
    assert_unreachable(hub_ns, overlay_addr(3), "hub -> spoke 3 after `remove`");
    assert_unreachable(spoke2, overlay_addr(3), "spoke 2 -> spoke 3 after `remove`");
    assert_reachable(hub_ns, overlay_addr(2), "hub -> spoke 2 all along");

    // The counters saw the packets with no route.
    assert_eq!(hub.send("stats"), "ok: stats");
    let no_route: u64 = hub
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("drop_no_route "))
        .next_back()
        .and_then(|v| v.parse().ok())
        .expect("a drop_no_route counter");
    assert!(no_route >= 2, "drop_no_route {no_route}\n{}", hub.stdout());

    // `quit` stops the hub cleanly and its device goes with it.
    let stdin = hub.stdin.as_mut().expect("stdin is open");
    writeln!(stdin, "quit").unwrap();
    wait_until(DEADLINE, "the hub to exit after `quit`", || {
        !hub.is_running()
    })
    .unwrap();
    let status = hub.child.wait().unwrap();
    assert!(
        status.success(),
        "weft-hub: {status}: {}",
        hub.output("stderr")
    );
    assert!(
        !hub_ns.has_link("vpn0").unwrap(),
        "the device goes with the hub"
    );

    for mut child in spokes {
        assert!(
            child.is_running(),
            "a spoke exited early: {}",
            child.stderr()
        );
        child.terminate(Duration::from_secs(5)).unwrap();
    }
}
