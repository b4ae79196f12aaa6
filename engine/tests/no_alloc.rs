//! No allocation per packet: two engines joined over loopback carry TCP super-packets through
//! the whole offload path (a TSO super-packet read from a device with vnet headers, split
//! into a UDP GSO train, received as a GRO train, coalesced and written back as one
//! super-packet), and the heap is not touched once they run.
//!
//! The devices are in-memory ones with vnet headers ([`MemoryDevice::with_vnet_hdr`]); the
//! UDP sockets are real, on the loopback of a private network namespace. This file holds a
//! single test so that nothing else allocates in the process while it counts. Needs root
//! (a network namespace).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use weft::{Engine, MemoryDevice, RouteTable};
use weft_encap::backend::DeviceLayer;
use weft_encap::flannel::FlannelConfig;
use weft_encap::table::Route;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const MSS: usize = 1432;
const SEGMENTS: usize = 44;
const PAYLOAD: usize = MSS * SEGMENTS;
const VNET: usize = 10;
const HEADERS: usize = 40;

/// A TCP/IPv4 super-packet as a TUN with TSO hands it over: vnet header (TCPV4, gso_size =
/// MSS, NEEDS_CSUM), one IP + TCP header with the total length of the whole packet and the
/// pseudo-header sum in the checksum field, then `PAYLOAD` bytes.
fn super_packet() -> Vec<u8> {
    let mut p = weft_testbed::tcp_super_packet(VNET, MSS, SEGMENTS, 0, true, |i| (i * 7 + 3) as u8);
    p[0] = 1; // NEEDS_CSUM
    p[1] = 1; // GSO_TCPV4
    p[2..4].copy_from_slice(&(HEADERS as u16).to_le_bytes());
    p[4..6].copy_from_slice(&(MSS as u16).to_le_bytes());
    p[6..8].copy_from_slice(&20u16.to_le_bytes());
    p[8..10].copy_from_slice(&16u16.to_le_bytes());
    p
}

/// Sets the TCP sequence number of the super-packet.
fn set_seq(p: &mut [u8], seq: u32) {
    p[VNET + 24..VNET + 28].copy_from_slice(&seq.to_be_bytes());
}

/// Receives from the device's kernel side until `want` payload bytes arrived; returns the
/// writes it took. Allocation-free (no formatting unless it fails).
fn receive_payload(kernel: &UnixDatagram, buf: &mut [u8], want: usize) -> usize {
    let mut got = 0;
    let mut writes = 0;
    while got < want {
        let n = match kernel.recv(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("{got} of {want} payload bytes arrived: {e}"),
        };
        assert!(n > VNET + HEADERS, "a short write of {n} bytes");
        let ip_len = usize::from(u16::from_be_bytes([buf[VNET + 2], buf[VNET + 3]]));
        got += ip_len - HEADERS;
        writes += 1;
    }
    writes
}

#[test]
fn steady_state_traffic_through_the_offload_path_does_not_allocate() {
    weft_testbed::enter_private_netns()
        .expect("a private network namespace: run this test as root (./.ci/run)");

    let socket_a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket_b = UdpSocket::bind("127.0.0.2:0").unwrap();
    let (addr_a, addr_b) = (
        socket_a.local_addr().unwrap(),
        socket_b.local_addr().unwrap(),
    );
    let (dev_a, kernel_a) = MemoryDevice::pair().unwrap();
    let (dev_b, kernel_b) = MemoryDevice::pair().unwrap();
    let route = |subnet: &str, endpoint| Route {
        subnet: subnet.parse().unwrap(),
        endpoint,
        vtep_mac: None,
    };
    let engine = |dev: MemoryDevice, socket, local, route| {
        Engine::builder(dev.with_vnet_hdr(1472).with_layer(DeviceLayer::L3), socket)
            .routes(RouteTable::new([route]).unwrap())
            .flannel(FlannelConfig {
                local_v4: Some(local),
                ..FlannelConfig::default()
            })
            .spawn()
            .unwrap()
    };
    let a = engine(
        dev_a,
        socket_a,
        Ipv4Addr::new(100, 96, 1, 0),
        route("100.96.2.0/24", addr_b),
    );
    let b = engine(
        dev_b,
        socket_b,
        Ipv4Addr::new(100, 96, 2, 0),
        route("100.96.1.0/24", addr_a),
    );
    let status = a.status();
    assert!(status.tun_vnet_hdr && status.tun_gso_write, "{status:?}");
    let mut buf = vec![0u8; 70_000];
    for kernel in [&kernel_a, &kernel_b] {
        kernel
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Each engine's start-up probe of GSO writes (a martian the kernel would drop).
        let n = kernel.recv(&mut buf).expect("the GSO write probe");
        assert_eq!(&buf[VNET + 12..VNET + 20], &[0u8; 8], "probe from 0.0.0.0");
        assert!(n > VNET);
    }

    let mut packet = super_packet();
    let mut seq = 1u32;
    let mut send_one = |seq: &mut u32| {
        set_seq(&mut packet, *seq);
        kernel_a.send(&packet).expect("into A's device");
        *seq = seq.wrapping_add(PAYLOAD as u32);
    };
    // Warm-up: buffers, sockets and the kernel's paths settle.
    for _ in 0..100 {
        send_one(&mut seq);
        receive_payload(&kernel_b, &mut buf, PAYLOAD);
    }
    // What B wrote is one coalesced super-packet per train with the sender's MSS.
    assert_eq!(buf[1], 1, "GSO_TCPV4 on the coalesced write");
    assert_eq!(usize::from(u16::from_le_bytes([buf[4], buf[5]])), MSS);

    let rounds = 1000;
    let region = Region::new(GLOBAL);
    let mut writes = 0;
    for _ in 0..rounds {
        send_one(&mut seq);
        writes += receive_payload(&kernel_b, &mut buf, PAYLOAD);
    }
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{rounds} super-packets ({} segments) carried with {change:?}",
        rounds * SEGMENTS
    );
    assert!(
        writes <= rounds * 4,
        "{writes} device writes for {rounds} super-packets: not coalesced"
    );
    let stats_a = a.stats();
    let stats_b = b.stats();
    assert_eq!(stats_a.get("device_rx_super"), Some(1100), "{stats_a}");
    assert!(stats_a.get("gso_trains").unwrap() >= 1100, "{stats_a}");
    assert!(stats_b.get("coalesced_packets").unwrap() > 0, "{stats_b}");
    assert_eq!(stats_b.get("drop_bad_checksum"), Some(0), "{stats_b}");
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}
