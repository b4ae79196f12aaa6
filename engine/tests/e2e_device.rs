//! End-to-end tests of the device's life around the daemon: a persistent TUN that an
//! operator made beforehand is adopted and left as it was found. All need root.

mod common;

use common::{require_root, weft_exe};
use weft_testbed::{
    overlay_addr, ping, ConfigFile, EngineConfig, Netns, Testbed, WeftConfig, WeftDaemon,
    DEFAULT_DEVICE,
};

/// `ip -o addr show dev flannel0` (without the interface index, which a recreated device
/// does not keep) and `ip -o link show dev flannel0` in `netns`.
fn device_state(netns: &Netns) -> (String, String) {
    let addrs = netns
        .ip(&["-o", "-4", "addr", "show", "dev", DEFAULT_DEVICE])
        .expect("ip addr show")
        .lines()
        .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest).to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let link = netns
        .ip(&["-o", "link", "show", "dev", DEFAULT_DEVICE])
        .expect("ip link show");
    (addrs, link)
}

fn start(bed: &Testbed, host: u8, config: &ConfigFile) -> WeftDaemon {
    WeftDaemon::start(
        weft_exe(),
        bed.host(host).netns(),
        config.path(),
        DEFAULT_DEVICE,
    )
    .unwrap_or_else(|e| panic!("start weft on host {host}: {e}"))
}

fn adopt_and_leave_as_found(multi_queue: bool) {
    require_root();
    let name = if multi_queue { "dev-mq" } else { "dev-sq" };
    let bed = Testbed::two_hosts(name).expect("two hosts");
    let h1 = bed.host(1).netns();
    // The operator's persistent device: down, MTU 1400, an address of its own.
    let mut add = vec!["tuntap", "add", "dev", DEFAULT_DEVICE, "mode", "tun"];
    if multi_queue {
        add.push("multi_queue");
    }
    h1.ip(&add).expect("ip tuntap add");
    h1.ip(&["link", "set", DEFAULT_DEVICE, "mtu", "1400"])
        .unwrap();
    h1.ip(&["addr", "add", "100.96.1.77/32", "dev", DEFAULT_DEVICE])
        .unwrap();
    let found = device_state(h1);

    let config1 = WeftConfig::udp(1, &[2])
        .with_engine(EngineConfig::default().workers(2))
        .write()
        .unwrap();
    let config2 = WeftConfig::udp(2, &[1]).write().unwrap();
    let _b = start(&bed, 2, &config2);
    for round in 1..=2 {
        let mut a = start(&bed, 1, &config1);
        let summary = ping(h1, overlay_addr(2), 2).expect("ping");
        assert!(
            summary.all_received(),
            "round {round}: {summary}\n{}",
            a.log()
        );
        let log = a.log();
        assert!(log.contains("adopting"), "round {round}: {log}");
        let workers = a.stats().unwrap().get("workers");
        assert_eq!(
            workers,
            Some(if multi_queue { 2 } else { 1 }),
            "round {round}: {log}"
        );
        // Stopped: the device stays, as the operator left it.
        let status = a
            .stop(std::time::Duration::from_secs(10))
            .expect("weft stops");
        assert!(status.success(), "round {round}: {status}\n{}", a.log());
        let after = device_state(h1);
        assert_eq!(after.0, found.0, "round {round}: addresses\n{}", a.log());
        assert!(
            after.1.contains("mtu 1400") && !after.1.contains(",UP"),
            "round {round}: {}\n{}",
            after.1,
            a.log()
        );
    }
}

#[test]
fn a_persistent_single_queue_tun_is_adopted_and_left_as_found_twice() {
    adopt_and_leave_as_found(false);
}

#[test]
fn a_persistent_multi_queue_tun_is_adopted_with_every_worker() {
    adopt_and_leave_as_found(true);
}

#[test]
fn a_device_deleted_under_the_daemon_is_noticed_and_recreated_with_its_address() {
    require_root();
    let bed = Testbed::two_hosts("dev-del").expect("two hosts");
    let h1 = bed.host(1).netns();
    let config1 = WeftConfig::udp(1, &[2])
        .with_engine(EngineConfig::default().workers(2))
        .write()
        .unwrap();
    let config2 = WeftConfig::udp(2, &[1]).write().unwrap();
    let _b = start(&bed, 2, &config2);
    let a = start(&bed, 1, &config1);
    assert!(ping(h1, overlay_addr(2), 1).unwrap().all_received());
    let (addresses, _) = device_state(h1);

    // An operator (or a script gone wrong) deletes the device.
    h1.ip(&["link", "del", DEFAULT_DEVICE])
        .expect("ip link del");
    weft_testbed::wait_until(
        std::time::Duration::from_secs(10),
        "weft to recreate flannel0",
        || a.log().contains("recreated"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    // One line per event, with the device as a field.
    assert!(
        a.log().lines().any(|l| l.starts_with("weft: error: ")
            && l.contains("was deleted")
            && l.contains("device=flannel0")),
        "{}",
        a.log()
    );
    let (after, link) = device_state(h1);
    assert_eq!(after, addresses, "the same addresses");
    assert!(link.contains(",UP"), "{link}");
    weft_testbed::wait_until(
        std::time::Duration::from_secs(10),
        "traffic through the recreated device",
        || ping(h1, overlay_addr(2), 1).is_ok_and(|s| s.all_received()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    let stats = a.stats().unwrap();
    assert_eq!(stats.get("device_lost"), Some(1), "{stats}");
    assert_eq!(stats.get("device_up"), Some(1), "{stats}");
    // Both workers took their new queue: the device has two queues attached.
    let queues = h1
        .exec_ok(&["ls", &format!("/sys/class/net/{DEFAULT_DEVICE}/queues")])
        .unwrap_or_default();
    assert!(queues.contains("rx-1"), "{queues}");
}

#[test]
fn a_device_that_cannot_be_made_again_stops_the_daemon_with_one_line() {
    require_root();
    let bed = Testbed::two_hosts("dev-gone").expect("two hosts");
    let h1 = bed.host(1).netns();
    weft_testbed::add_bridge(h1, "br0").expect("br0");
    let config = weft_testbed::VxlanConfig::l2(1, "weftl2", "br0", &[2])
        .write()
        .unwrap();
    let mut a = WeftDaemon::start(weft_exe(), h1, config.path(), "weftl2").expect("start weft");
    // The bridge goes first, then the TAP: weft cannot put the TAP back into its bridge.
    h1.ip(&["link", "del", "br0"]).unwrap();
    h1.ip(&["link", "del", "weftl2"]).unwrap();
    let status = a
        .process()
        .wait_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert!(!status.success(), "{status}\n{}", a.log());
    let log = a.log();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("weftl2") && last.contains("cannot be recreated") && last.contains("br0"),
        "{log}"
    );
}

/// Receives one TCP stream on port 5009: prints `bytes N` as it goes, then at the end
/// `done <bytes> <sha256> <longest gap between reads in ms>`.
const RECEIVER: &str = r#"
import hashlib, socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5009)); srv.listen(1); srv.settimeout(60)
conn, _ = srv.accept(); conn.settimeout(30)
h = hashlib.sha256(); n = 0; gap = 0.0; last = time.monotonic(); reported = 0
while True:
    data = conn.recv(65536)
    now = time.monotonic()
    if not data:
        break
    gap = max(gap, now - last); last = now
    h.update(data); n += len(data)
    if n - reported >= 1 << 20:
        print("bytes", n, flush=True); reported = n
print("done", n, h.hexdigest(), int(gap * 1000), flush=True)
"#;

/// Sends `sys.argv[2]` chunks of 64 KiB of seeded pseudo-random data to `sys.argv[1]:5009`,
/// one every 10 ms, then prints `sent <bytes> <sha256>`.
const SENDER: &str = r#"
import hashlib, random, socket, sys, time
rng = random.Random(7); h = hashlib.sha256(); n = 0
s = socket.create_connection((sys.argv[1], 5009), timeout=30)
for _ in range(int(sys.argv[2])):
    chunk = rng.randbytes(65536)
    s.sendall(chunk); h.update(chunk); n += len(chunk)
    time.sleep(0.01)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print("sent", n, h.hexdigest(), flush=True)
"#;

/// Waits until [`RECEIVER`] in `receiver` has said it got at least `bytes`; `context` goes
/// into the failure.
fn wait_received(receiver: &weft_testbed::NsChild, bytes: u64, context: &str) {
    let what = format!("{bytes} bytes to arrive");
    weft_testbed::wait_until(std::time::Duration::from_secs(30), &what, || {
        receiver
            .stdout()
            .lines()
            .filter_map(|l| l.strip_prefix("bytes "))
            .filter_map(|n| n.parse::<u64>().ok())
            .any(|n| n >= bytes)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{context}", receiver.stderr()));
}

#[test]
fn a_restart_with_a_persistent_device_keeps_a_tcp_transfer_alive() {
    require_root();
    let bed = Testbed::two_hosts("dev-rst").expect("two hosts");
    let (h1, h2) = (bed.host(1).netns(), bed.host(2).netns());
    let toml = WeftConfig::udp(1, &[2])
        .with_engine(EngineConfig::default().workers(2))
        .to_toml()
        .replacen("[device]\n", "[device]\npersist = true\n", 1);
    assert!(toml.contains("persist = true"), "{toml}");
    let config1 = ConfigFile::new(&toml).unwrap();
    let config2 = WeftConfig::udp(2, &[1]).write().unwrap();
    let _b = start(&bed, 2, &config2);
    let mut a = start(&bed, 1, &config1);

    let mut receiver = h2.spawn(&["python3", "-c", RECEIVER]).expect("receiver");
    weft_testbed::wait_until(
        std::time::Duration::from_secs(10),
        "the receiver to listen",
        || {
            h2.exec_ok(&["ss", "-H", "-l", "-t", "-n"])
                .is_ok_and(|s| s.contains(":5009"))
        },
    )
    .unwrap();
    // About 40 MiB over about 8 s, through two restarts.
    let dest = overlay_addr(2).to_string();
    let mut sender = h1
        .spawn(&["python3", "-c", SENDER, &dest, "640"])
        .expect("sender");
    wait_received(&receiver, 4 << 20, &sender.stderr());

    // The daemon restarts (an upgrade, say) in the middle of the transfer.
    let status = a.stop(std::time::Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", a.log());
    let kept = h1
        .ip(&["-o", "-4", "addr", "show", "dev", DEFAULT_DEVICE])
        .expect("the device stays");
    assert!(kept.contains("100.96.1.0/16"), "{kept}");
    let mut a2 = start(&bed, 1, &config1);
    assert!(a2.log().contains("adopting"), "{}", a2.log());

    // Later it crashes (SIGKILL: nothing is cleaned up) and is started again.
    wait_received(&receiver, 20 << 20, &a2.log());
    a2.process().signal("KILL").unwrap();
    a2.process()
        .wait_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let a2 = start(&bed, 1, &config1);
    assert!(a2.log().contains("adopting"), "{}", a2.log());

    let finished = |child: &mut weft_testbed::NsChild| !child.is_running();
    weft_testbed::wait_until(
        std::time::Duration::from_secs(60),
        "the transfer to end",
        || finished(&mut sender) && finished(&mut receiver),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", receiver.stdout(), sender.stderr()));
    let sent = sender.stdout();
    let got = receiver.stdout();
    let sent: Vec<&str> = sent
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .unwrap_or_else(|| panic!("sender: {sent}\n{}", sender.stderr()))
        .split(' ')
        .collect();
    let done: Vec<&str> = got
        .lines()
        .find_map(|l| l.strip_prefix("done "))
        .unwrap_or_else(|| panic!("receiver: {got}\n{}", receiver.stderr()))
        .split(' ')
        .collect();
    assert_eq!(
        sent[..2],
        done[..2],
        "bytes and SHA-256 through the restart"
    );
    let gap_ms: u64 = done[2].parse().unwrap();
    println!("restart with a persistent device: the transfer paused for {gap_ms} ms at most");
    assert!(gap_ms < 5_000, "the connection stalled for {gap_ms} ms");
    drop(a2);
    // Leave nothing behind: the persistent device goes with the namespace.
}
