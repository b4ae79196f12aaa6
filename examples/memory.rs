//! Two engines in one process, each on an in-memory device ([`weft::MemoryDevice`]) instead of a
//! TUN, joined by two UDP sockets on the loopback: the program itself plays both kernels,
//! writing IP packets into one device and reading them out of the other.
//!
//! ```text
//! cargo build -p weft-examples --bin weft-memory
//! unshare --user --map-root-user --net sh -c 'ip link set lo up && exec target/debug/weft-memory'
//! ```
//!
//! It needs no TUN device and no privileges, but it does bind two UDP sockets on 127.0.0.1
//! and send a few datagrams between them, so run it in a private network namespace as above
//! (`unshare` makes one, with only a loopback, that goes away with the process); its
//! end-to-end test runs it inside a fresh namespace the same way. It prints what it sends and
//! receives and both engines' counters, and exits 0 if every check passed.
//!
//! What it shows, step by step, checking each one and exiting non-zero if anything differs:
//!
//! 1. An ICMP echo request written into engine A's "kernel" end comes out of engine B's,
//!    byte for byte except the TTL (two lower: each engine counts as a hop, as flanneld
//!    does; the header checksum patched): the flannel UDP encapsulation carries the bare IP
//!    packet as the datagram payload.
//! 2. B's "kernel" answers with an echo reply, which comes out of A's end.
//! 3. A UDP datagram goes A to B with its checksum intact.
//! 4. A packet for a subnet A has no route to is not sent anywhere: A answers it with an ICMP
//!    net unreachable written back into its own device, quoting the packet, and counts it as
//!    `drop_no_route`.
//! 5. Both engines' counters (`engine.stats()`) say so, and are printed.
//!
//! `MemoryDevice::pair` returns the device and a Unix datagram socket for the other side:
//! what that socket sends, the engine reads from the "device"; what the engine writes to the
//! device arrives there. It is how the engine can be driven from tests, simulators or a
//! program of your own without privileges.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use weft::{Engine, MemoryDevice, RouteTable, Stats};
use weft_encap::flannel::FlannelConfig;
use weft_encap::table::Route;
use weft_encap::wire::{icmpv4, ipv4, udp, PROTO_ICMP, PROTO_UDP};

const A_LOCAL: Ipv4Addr = Ipv4Addr::new(100, 96, 1, 0);
const B_LOCAL: Ipv4Addr = Ipv4Addr::new(100, 96, 2, 0);
/// A "pod" behind engine A and one behind engine B.
const A_POD: Ipv4Addr = Ipv4Addr::new(100, 96, 1, 5);
const B_POD: Ipv4Addr = Ipv4Addr::new(100, 96, 2, 7);
/// An address no engine has a route to.
const NOWHERE: Ipv4Addr = Ipv4Addr::new(100, 96, 9, 9);

type Error = Box<dyn std::error::Error>;

/// Fails with `message` unless `condition` holds.
fn check(condition: bool, message: impl Into<String>) -> Result<(), Error> {
    if condition {
        Ok(())
    } else {
        Err(message.into().into())
    }
}

/// An IPv4 packet `src -> dst` of `protocol` around `payload`, TTL 64, header checksummed.
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; ipv4::HEADER_LEN + payload.len()];
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len: payload.len(),
        ttl: 64,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]));
    buf[ipv4::HEADER_LEN..].copy_from_slice(payload);
    buf
}

/// An ICMP echo request or reply (`msg_type`) from `src` to `dst`.
fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, msg_type: u8, ident: u16, seq: u16) -> Vec<u8> {
    let data = b"weft memory example";
    let mut icmp = vec![0u8; icmpv4::HEADER_LEN + data.len()];
    let mut view = icmpv4::Packet::new_unchecked(&mut icmp[..]);
    view.set_msg_type(msg_type);
    view.set_code(0);
    view.set_rest_of_header((u32::from(ident) << 16) | u32::from(seq));
    view.data_mut().copy_from_slice(data);
    view.fill_checksum();
    ipv4_packet(src, dst, PROTO_ICMP, &icmp)
}

/// A UDP datagram `src:sport -> dst:dport` carrying `data`, with its checksum.
fn udp_datagram(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut dgram = vec![0u8; udp::HEADER_LEN + data.len()];
    let repr = udp::Repr {
        src_port: sport,
        dst_port: dport,
        payload_len: data.len(),
    };
    let mut view = udp::Packet::new_unchecked(&mut dgram[..]);
    repr.emit(&mut view);
    view.payload_mut().copy_from_slice(data);
    view.fill_checksum(IpAddr::V4(src), IpAddr::V4(dst));
    ipv4_packet(src, dst, PROTO_UDP, &dgram)
}

/// One line describing an IPv4 packet, decoded with `weft_encap::wire`.
fn describe(packet: &[u8]) -> String {
    let ip = match ipv4::Packet::new_checked(packet) {
        Ok(ip) => ip,
        Err(e) => return format!("not IPv4: {e}"),
    };
    let head = format!("{} > {} ttl {}", ip.src_addr(), ip.dst_addr(), ip.ttl());
    match ip.protocol() {
        PROTO_ICMP => match icmpv4::Packet::new_checked(ip.payload()) {
            Ok(icmp) => format!(
                "{head} ICMP type {} code {}, {} bytes",
                icmp.msg_type(),
                icmp.code(),
                ip.payload().len()
            ),
            Err(e) => format!("{head} ICMP ({e})"),
        },
        PROTO_UDP => match udp::Packet::new_checked(ip.payload()) {
            Ok(u) => format!(
                "{head} UDP {} > {}, {} bytes",
                u.src_port(),
                u.dst_port(),
                u.payload().len()
            ),
            Err(e) => format!("{head} UDP ({e})"),
        },
        other => format!("{head} protocol {other}"),
    }
}

/// Writes `packet` into `into` (a device's kernel end) and returns what comes out of `from`.
fn through(into: &UnixDatagram, from: &UnixDatagram, packet: &[u8]) -> Result<Vec<u8>, Error> {
    into.send(packet)?;
    let mut buf = vec![0u8; 65_536];
    let n = from
        .recv(&mut buf)
        .map_err(|e| format!("waiting for the packet to come out: {e}"))?;
    buf.truncate(n);
    Ok(buf)
}

/// Checks that `got` is `sent` after crossing the tunnel: TTL two lower (one hop per
/// engine), everything else equal, and a valid header checksum.
fn check_forwarded(sent: &[u8], got: &[u8]) -> Result<(), Error> {
    let ip = ipv4::Packet::new_checked(got).map_err(|e| format!("not IPv4: {e}"))?;
    check(got.len() == sent.len(), "the length changed")?;
    check(
        ip.ttl() == 62,
        format!("TTL {} (expected 64 - 2)", ip.ttl()),
    )?;
    check(ip.verify_checksum(), "bad IPv4 header checksum")?;
    check(
        got[ipv4::HEADER_LEN..] == sent[ipv4::HEADER_LEN..],
        "the payload changed",
    )?;
    Ok(())
}

/// Polls `engine`'s counters until `wanted` holds (workers publish them once per loop
/// iteration, right after the batch that changed them), for at most five seconds.
fn stats_when(engine: &Engine, wanted: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = engine.stats();
        if wanted(&stats) || Instant::now() >= deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn engine(
    socket: UdpSocket,
    local: Ipv4Addr,
    peer_subnet: &str,
    peer: SocketAddr,
) -> Result<(Engine, UnixDatagram), Error> {
    let (device, kernel) = MemoryDevice::pair()?;
    kernel.set_read_timeout(Some(Duration::from_secs(5)))?;
    let routes = RouteTable::new([Route {
        subnet: peer_subnet.parse()?,
        endpoint: peer,
        vtep_mac: None,
    }])?;
    let engine = Engine::builder(device, socket)
        .routes(routes)
        .flannel(FlannelConfig {
            local_v4: Some(local),
            ..FlannelConfig::default()
        })
        .spawn()?;
    Ok((engine, kernel))
}

fn run() -> Result<(), Error> {
    let socket_a = UdpSocket::bind("127.0.0.1:0")?;
    let socket_b = UdpSocket::bind("127.0.0.1:0")?;
    let (addr_a, addr_b) = (socket_a.local_addr()?, socket_b.local_addr()?);
    println!("engine A: device 100.96.1.0, underlay {addr_a}, route 100.96.2.0/24 via {addr_b}");
    println!("engine B: device 100.96.2.0, underlay {addr_b}, route 100.96.1.0/24 via {addr_a}");
    let (a, kernel_a) = engine(socket_a, A_LOCAL, "100.96.2.0/24", addr_b)?;
    let (b, kernel_b) = engine(socket_b, B_LOCAL, "100.96.1.0/24", addr_a)?;

    // 1. Echo request, A to B.
    let request = icmp_echo(A_POD, B_POD, icmpv4::TYPE_ECHO_REQUEST, 0x5746, 1);
    let got = through(&kernel_a, &kernel_b, &request)?;
    println!("A -> B: {}", describe(&got));
    check_forwarded(&request, &got)?;

    // 2. Echo reply, B to A.
    let reply = icmp_echo(B_POD, A_POD, icmpv4::TYPE_ECHO_REPLY, 0x5746, 1);
    let got = through(&kernel_b, &kernel_a, &reply)?;
    println!("B -> A: {}", describe(&got));
    check_forwarded(&reply, &got)?;

    // 3. UDP, A to B, checksum intact (the TTL is not part of the pseudo header).
    let datagram = udp_datagram(A_POD, 40000, B_POD, 5353, b"hello through weft");
    let got = through(&kernel_a, &kernel_b, &datagram)?;
    println!("A -> B: {}", describe(&got));
    check_forwarded(&datagram, &got)?;
    let ip = ipv4::Packet::new_checked(&got[..]).map_err(|e| format!("not IPv4: {e}"))?;
    let u = udp::Packet::new_checked(ip.payload()).map_err(|e| format!("not UDP: {e}"))?;
    check(
        u.verify_checksum(IpAddr::V4(A_POD), IpAddr::V4(B_POD)),
        "the UDP checksum no longer verifies",
    )?;

    // 4. No route: A answers into its own device with an ICMP net unreachable.
    let lost = icmp_echo(A_POD, NOWHERE, icmpv4::TYPE_ECHO_REQUEST, 0x5746, 2);
    let got = through(&kernel_a, &kernel_a, &lost)?;
    println!(
        "A -> {NOWHERE}: no route; A's device gets back: {}",
        describe(&got)
    );
    let ip = ipv4::Packet::new_checked(&got[..]).map_err(|e| format!("not IPv4: {e}"))?;
    check(
        ip.verify_checksum(),
        "bad IPv4 header checksum on the ICMP error",
    )?;
    check(ip.protocol() == PROTO_ICMP, "the answer is not ICMP")?;
    check(
        ip.dst_addr() == A_POD,
        "the ICMP error is not addressed to the sender",
    )?;
    let icmp = icmpv4::Packet::new_checked(ip.payload()).map_err(|e| format!("ICMP: {e}"))?;
    check(
        icmp.msg_type() == icmpv4::TYPE_DEST_UNREACHABLE
            && icmp.code() == icmpv4::CODE_NET_UNREACHABLE,
        format!(
            "ICMP type {} code {} (expected 3/0, net unreachable)",
            icmp.msg_type(),
            icmp.code()
        ),
    )?;
    check(icmp.verify_checksum(), "bad ICMP checksum")?;
    check(
        icmp.data().get(..ipv4::HEADER_LEN) == lost.get(..ipv4::HEADER_LEN),
        "the ICMP error does not quote the offending packet's header",
    )?;

    // 5. The counters say the same.
    let stats_a = stats_when(&a, |s| {
        s.get("tx_packets") == Some(2)
            && s.get("rx_packets") == Some(1)
            && s.get("drop_no_route") == Some(1)
    });
    let stats_b = stats_when(&b, |s| {
        s.get("tx_packets") == Some(1) && s.get("rx_packets") == Some(2)
    });
    println!("--- engine A counters ---");
    print!("{stats_a}");
    println!("--- engine B counters ---");
    print!("{stats_b}");
    let expect = |who: &str, stats: &Stats, name: &str, value: u64| {
        let got = stats.get(name).unwrap_or(0);
        check(
            got == value,
            format!("engine {who}: {name} is {got}, expected {value}"),
        )
    };
    expect("A", &stats_a, "device_rx_packets", 3)?;
    expect("A", &stats_a, "tx_packets", 2)?;
    expect("A", &stats_a, "rx_packets", 1)?;
    expect("A", &stats_a, "icmp_sent", 1)?;
    expect("A", &stats_a, "drop_no_route", 1)?;
    expect("B", &stats_b, "device_rx_packets", 1)?;
    expect("B", &stats_b, "udp_rx_packets", 2)?;
    expect("B", &stats_b, "rx_packets", 2)?;
    expect("B", &stats_b, "tx_packets", 1)?;

    a.shutdown()?;
    b.shutdown()?;
    println!("all checks passed");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memory: {e}");
            ExitCode::FAILURE
        }
    }
}
