//! Helpers shared by the end-to-end tests: the weft binary under test, a two-host UDP
//! cluster with both daemons running, counter checks and a datagram forger.
//!
//! Every test builds its own topology (unique namespace names), so tests run in parallel.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod flannel;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use weft_testbed::{
    ConfigFile, Netns, Testbed, WeftConfig, WeftDaemon, DEFAULT_DEVICE, UDP_OVERLAY_MTU, UDP_PORT,
};

/// The `weft` binary built for these tests.
pub fn weft_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft"))
}

/// Fails the test with a clear message unless it runs as root.
pub fn require_root() {
    assert!(
        weft_testbed::is_root(),
        "the end-to-end tests create network namespaces and must run as root (run ./.ci/run, \
         or `sudo -E cargo test -p weft`)"
    );
}

/// How long a counter may take to reflect a datagram that was just sent.
pub const COUNTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Hosts 1 and 2 of a testbed, each running `weft run` with the standard UDP configuration
/// and a static route to the other. Dropping it stops the daemons, then removes the namespaces.
pub struct UdpCluster {
    /// The daemon on host 1 (`hostA`).
    pub a: WeftDaemon,
    /// The daemon on host 2 (`hostB`).
    pub b: WeftDaemon,
    /// The configuration files of host 1 and host 2.
    pub configs: [ConfigFile; 2],
    /// The namespaces (dropped last).
    pub bed: Testbed,
}

impl UdpCluster {
    /// Two hosts joined by a veth; with `pods`, pod `.2` behind `cni0` on each.
    pub fn two_hosts(name: &str, pods: bool) -> Self {
        require_root();
        let mut bed = Testbed::two_hosts(name).expect("build the two-host topology");
        if pods {
            bed.add_pod(1, 2, UDP_OVERLAY_MTU)
                .expect("add pod 2 to host 1");
            bed.add_pod(2, 2, UDP_OVERLAY_MTU)
                .expect("add pod 2 to host 2");
        }
        Self::start(bed)
    }

    /// Hosts 1, 2 and 3 on a switch; weft runs on 1 and 2, host 3 is a bystander on the
    /// underlay (198.18.0.3) that no daemon knows.
    pub fn switched_with_stranger(name: &str) -> Self {
        require_root();
        let bed = Testbed::switched(name, 3).expect("build the switched topology");
        Self::start(bed)
    }

    fn start(bed: Testbed) -> Self {
        let configs = [
            WeftConfig::udp(1, &[2])
                .write()
                .expect("write host 1's config"),
            WeftConfig::udp(2, &[1])
                .write()
                .expect("write host 2's config"),
        ];
        let a = start_daemon(&bed, 1, &configs[0]);
        let b = start_daemon(&bed, 2, &configs[1]);
        Self { a, b, configs, bed }
    }

    /// Host `index`'s namespace.
    pub fn host(&self, index: u8) -> &Netns {
        self.bed.host(index).netns()
    }

    /// Both daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- weft log on host 1 ({}) ---\n{}\n--- weft log on host 2 ({}) ---\n{}",
            self.a.netns(),
            self.a.log().trim_end(),
            self.b.netns(),
            self.b.log().trim_end()
        )
    }
}

/// Starts weft on host `index` with `config`, panicking with the daemon's log if it fails.
pub fn start_daemon(bed: &Testbed, index: u8, config: &ConfigFile) -> WeftDaemon {
    WeftDaemon::start(
        weft_exe(),
        bed.host(index).netns(),
        config.path(),
        DEFAULT_DEVICE,
    )
    .unwrap_or_else(|error| panic!("start weft on host {index}: {error}"))
}

/// The counter `name` of `daemon`; panics (showing all counters) if weft does not report it.
pub fn stat(daemon: &WeftDaemon, name: &str) -> u64 {
    let stats = daemon
        .stats()
        .unwrap_or_else(|error| panic!("weft stats in {}: {error}", daemon.netns()));
    stats.get(name).unwrap_or_else(|| {
        panic!(
            "weft stats in {} has no counter {name}; it printed:\n{stats}",
            daemon.netns()
        )
    })
}

/// Waits until `daemon`'s counter `name` reaches `at_least`; panics with all counters if not.
pub fn wait_stat(daemon: &WeftDaemon, name: &str, at_least: u64) {
    let what = format!("{name} >= {at_least} in {}", daemon.netns());
    if let Err(error) =
        weft_testbed::wait_until(COUNTER_TIMEOUT, &what, || stat(daemon, name) >= at_least)
    {
        let stats = daemon.stats().map(|s| s.to_string()).unwrap_or_default();
        panic!("{error}; counters now:\n{stats}\nlog:\n{}", daemon.log());
    }
}

/// A statistics counter of interface `ifname` in `netns`, as the kernel counts it
/// (`/sys/class/net/<ifname>/statistics/<counter>`). For a TUN device, `rx_packets` counts
/// the packets the daemon wrote into it.
pub fn link_counter(netns: &Netns, ifname: &str, counter: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/{counter}");
    let text = netns
        .exec_ok(&["cat", &path])
        .unwrap_or_else(|error| panic!("read {path} in {}: {error}", netns.name()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{path} in {} is not a number: {text:?}", netns.name()))
}

/// What [`send_datagram`] puts in the UDP payload.
pub enum Payload {
    /// A well-formed IPv4 ICMP echo request from `source` to `destination` (checksums right).
    Ipv4Echo {
        /// The inner source address.
        source: Ipv4Addr,
        /// The inner destination address.
        destination: Ipv4Addr,
    },
    /// Bytes that are no IP packet at all (version nibble 15).
    Garbage,
}

/// Builds the payload in Python and sends exactly one UDP datagram from `bind` (ephemeral
/// port) to `destination:8285`.
const FORGE_DATAGRAM: &str = r#"
import socket, struct, sys

bind, destination, port, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

if kind == "ipv4-echo":
    inner_source, inner_destination = sys.argv[5], sys.argv[6]
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x7765, 1) + b"weft end-to-end forged packet"
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0x1234, 0x4000, 64, 1, 0,
        socket.inet_aton(inner_source), socket.inet_aton(inner_destination))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    payload = header + icmp
elif kind == "garbage":
    payload = b"\xff\xfe this is not an IP packet \x00\x01\x02\x03"
else:
    sys.exit("unknown payload kind " + kind)

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((bind, 0))
sent = sock.sendto(payload, (destination, port))
print("sent", sent, "bytes from", sock.getsockname())
"#;

/// Sends one forged datagram from `bind` inside `netns` to `destination:8285`.
pub fn send_datagram(netns: &Netns, bind: Ipv4Addr, destination: Ipv4Addr, payload: Payload) {
    let (bind, destination, port) = (
        bind.to_string(),
        destination.to_string(),
        UDP_PORT.to_string(),
    );
    let mut argv = vec!["python3", "-c", FORGE_DATAGRAM, &bind, &destination, &port];
    let inner: [String; 2];
    match payload {
        Payload::Ipv4Echo {
            source,
            destination,
        } => {
            inner = [source.to_string(), destination.to_string()];
            argv.extend_from_slice(&["ipv4-echo", &inner[0], &inner[1]]);
        }
        Payload::Garbage => argv.push("garbage"),
    }
    netns
        .exec_ok(&argv)
        .unwrap_or_else(|error| panic!("send a forged datagram from {}: {error}", netns.name()));
}

/// A daemon's log and counters.
pub fn daemon_report(label: &str, daemon: &WeftDaemon) -> String {
    let stats = daemon
        .stats()
        .map(|stats| stats.to_string())
        .unwrap_or_else(|error| format!("(no stats: {error})\n"));
    format!(
        "--- weft on {label} ({}): log ---\n{}\n--- counters ---\n{stats}",
        daemon.netns(),
        daemon.log().trim_end()
    )
}
