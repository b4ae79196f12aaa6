//! `[engine] busy_poll_us`: after a packet, a worker keeps polling (and using CPU) for the
//! window it was given, then sleeps again; without a window it sleeps at once.
//!
//! One engine on an in-memory device sends to a plain UDP socket on the loopback of a private
//! network namespace; the process's CPU time (`/proc/self/stat`) is read over fixed windows
//! after a packet. This file holds a single test so that nothing else in the process uses CPU
//! while it measures. Needs root (a network namespace).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use weft::{Engine, MemoryDevice, RouteTable};
use weft_encap::flannel::FlannelConfig;
use weft_encap::table::Route;
use weft_encap::wire::checksum;

/// This process's user + system CPU time so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

/// The CPU time the process uses from now until `until`.
fn cpu_until(until: Instant) -> Duration {
    let before = cpu_time();
    let now = Instant::now();
    // A measurement window, not a wait for an event: the CPU is read at both ends of it.
    if until > now {
        std::thread::sleep(until - now);
    }
    cpu_time().saturating_sub(before)
}

/// A 100-byte UDP/IPv4 packet from 100.96.1.5 to 100.96.2.7.
fn packet() -> Vec<u8> {
    let mut p = vec![0u8; 100];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&100u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[100, 96, 1, 5]);
    p[16..20].copy_from_slice(&[100, 96, 2, 7]);
    let sum = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[24..26].copy_from_slice(&80u16.to_be_bytes());
    p
}

/// An engine polling for `window` after each packet, sending 100.96.2.0/24 to `peer`.
fn engine(window: Duration, peer: SocketAddr) -> (Engine, UnixDatagram) {
    let (device, kernel) = MemoryDevice::pair().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let route = Route {
        subnet: "100.96.2.0/24".parse().unwrap(),
        endpoint: peer,
        vtep_mac: None,
    };
    let engine = Engine::builder(device, socket)
        .routes(RouteTable::new([route]).unwrap())
        .flannel(FlannelConfig {
            local_v4: Some(Ipv4Addr::new(100, 96, 1, 0)),
            ..FlannelConfig::default()
        })
        .busy_poll(window)
        .spawn()
        .unwrap();
    (engine, kernel)
}

/// Sends one packet through the engine and returns when the peer has it.
fn one_packet(kernel: &UnixDatagram, peer: &UdpSocket) {
    kernel.send(&packet()).expect("into the device");
    let mut buf = [0u8; 2048];
    let n = peer.recv(&mut buf).expect("the packet at the peer");
    assert_eq!(n, 100, "the flannel datagram is the inner packet");
}

#[test]
fn a_worker_busy_polls_for_its_window_and_then_sleeps() {
    weft_testbed::enter_private_netns()
        .expect("a private network namespace: run this test as root (./.ci/run)");
    let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let peer_addr = peer.local_addr().unwrap();

    // Without a window: asleep right after the packet (the worker wakes once a second).
    let (quiet, kernel) = engine(Duration::ZERO, peer_addr);
    one_packet(&kernel, &peer);
    let idle = cpu_until(Instant::now() + Duration::from_millis(400));
    assert!(
        idle < Duration::from_millis(60),
        "{idle:?} of CPU in 400 ms without busy polling"
    );
    quiet.shutdown().unwrap();

    // With a 600 ms window: polling right after the packet (it yields to anything else that
    // wants the CPU, and nothing else in this process does)...
    let window = Duration::from_millis(600);
    let (busy, kernel) = engine(window, peer_addr);
    one_packet(&kernel, &peer);
    let start = Instant::now();
    let polling = cpu_until(start + Duration::from_millis(400));
    assert!(
        polling >= Duration::from_millis(100),
        "only {polling:?} of CPU in the first 400 ms of a 600 ms busy-poll window"
    );
    // ...and asleep again once the window has passed: 200 ms slices until one is quiet.
    let deadline = start + window + Duration::from_secs(3);
    loop {
        let slice = cpu_until(Instant::now() + Duration::from_millis(200));
        if slice < Duration::from_millis(30) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {slice:?} of CPU per 200 ms 3 s after a 600 ms busy-poll window ended"
        );
    }
    assert!(
        start.elapsed() >= window,
        "quiet after {:?}, before the 600 ms window ended",
        start.elapsed()
    );
    // And it still carries packets.
    one_packet(&kernel, &peer);
    busy.shutdown().unwrap();
}
