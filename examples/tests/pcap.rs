//! The pcap example decodes every capture under `fixtures/` (one line per record, VXLAN and
//! flannel UDP followed into the inner packet), and refuses broken files with one error line
//! and exit status 1, never a panic. Needs no privileges.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weft_encap::wire::{ethernet, ipv4, udp, EthernetAddress, PROTO_UDP};
use weft_testbed::{Pcap, TempDir};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft-pcap"))
        .arg(path)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run weft-pcap")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes `path`, requires success and no stderr, and returns stdout.
fn decode(path: &Path) -> String {
    let out = run(path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && stderr.is_empty(),
        "{}: {}\n{stderr}",
        path.display(),
        out.status
    );
    stdout
}

/// Every `.pcap` under `dir`, sorted.
fn pcaps(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read fixtures") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "pcap") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A classic little-endian pcap file of `link_type` holding `packets`.
fn pcap_file(link_type: u32, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&262_144u32.to_le_bytes());
    file.extend_from_slice(&link_type.to_le_bytes());
    for (i, packet) in packets.iter().enumerate() {
        let len = u32::try_from(packet.len()).unwrap();
        file.extend_from_slice(&(1_700_000_000 + i as u32).to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(&len.to_le_bytes());
        file.extend_from_slice(&len.to_le_bytes());
        file.extend_from_slice(packet);
    }
    file
}

/// The bytes of a hex fixture (`#` comments, whitespace ignored).
fn hex_fixture(name: &str) -> Vec<u8> {
    let path = workspace().join("fixtures").join(name);
    let digits: Vec<u8> = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .flat_map(|l| l.split('#').next().unwrap_or("").bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn every_fixture_capture_decodes_one_line_per_packet() {
    let files = pcaps(&workspace().join("fixtures"));
    assert!(files.len() >= 10, "found only {files:?}");
    for path in files {
        let stdout = decode(&path);
        let expected = Pcap::parse(&std::fs::read(&path).unwrap())
            .expect("a pcap file")
            .packets
            .len();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), expected, "{}:\n{stdout}", path.display());
        for (i, line) in lines.iter().enumerate() {
            assert!(line.starts_with(&format!("{} ", i + 1)), "{line}");
            assert!(!line.contains("invalid"), "{}: {line}", path.display());
        }
    }
}

#[test]
fn vxlan_capture_shows_the_vni_and_the_inner_ping() {
    let stdout = decode(&workspace().join("fixtures/vxlan/outer.pcap"));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, what) in lines.iter().zip(["echo request", "echo reply"]) {
        assert!(line.contains("UDP ") && line.contains(" > 8472 "), "{line}");
        let (_, inner) = line
            .split_once("VXLAN vni 1 [")
            .unwrap_or_else(|| panic!("no VXLAN VNI in {line}"));
        assert!(inner.contains("IPv4 100.96."), "{line}");
        assert!(inner.contains(&format!("ICMP {what}")), "{line}");
        assert!(inner.ends_with(']'), "{line}");
    }
}

#[test]
fn arp_capture_shows_request_and_reply() {
    let stdout = decode(&workspace().join("fixtures/wire/arp.pcap"));
    assert!(
        stdout.contains("ARP request who-has 198.18.0.2 tell 198.18.0.1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ARP reply 198.18.0.2 is-at 02:00:c6:12:00:02"),
        "{stdout}"
    );
}

#[test]
fn icmp_errors_show_what_they_quote() {
    let stdout = decode(&workspace().join("fixtures/wire/ipv4-net-unreachable.pcap"));
    assert!(
        stdout.contains("ICMP net unreachable, quoting IPv4 198.18.0.1 > 100.96.3.5 ICMP"),
        "{stdout}"
    );
    let stdout = decode(&workspace().join("fixtures/wire/ipv6-packet-too-big.pcap"));
    assert!(
        stdout.contains("ICMPv6 packet too big, MTU 1280"),
        "{stdout}"
    );
    let stdout = decode(&workspace().join("fixtures/wire/ipv6-icmpv6-echo.pcap"));
    assert!(
        stdout.contains("ICMPv6 neighbor solicitation who-has fd00:198:18::2"),
        "{stdout}"
    );
}

#[test]
fn flannel_datagrams_show_the_inner_packet() {
    // The captured flannel datagram (IPv4 + UDP 8285 + the inner echo request), as raw IP
    // and behind an Ethernet header. It was captured on the sender, so its UDP checksum is
    // the partial one left for the offload.
    let datagram = hex_fixture("flannel/datagram_v4.hex");
    let mut frame = vec![0u8; ethernet::HEADER_LEN];
    frame.extend_from_slice(&datagram);
    let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
    eth.set_src_addr(EthernetAddress([2, 0, 0xc6, 0x12, 0, 1]));
    eth.set_dst_addr(EthernetAddress([2, 0, 0xc6, 0x12, 0, 2]));
    eth.set_ethertype(ethernet::ETHERTYPE_IPV4);
    let dir = TempDir::new("weft-pcap").unwrap();
    for (link_type, packet) in [(1, frame), (101, datagram)] {
        let path = dir
            .write(
                &format!("flannel-{link_type}.pcap"),
                pcap_file(link_type, &[packet]),
            )
            .unwrap();
        let stdout = decode(&path);
        assert!(
            stdout.contains(
                "UDP 8285 > 8285 len 92 [checksum offloaded], flannel [IPv4 100.96.1.0 > 100.96.2.0 ttl 63 len 84 DF, \
                 ICMP echo request"
            ),
            "{stdout}"
        );
    }
    // A datagram whose inner packet is cut short is reported in its line, not fatal.
    let mut short = vec![0u8; ipv4::HEADER_LEN + udp::HEADER_LEN + 10];
    let ip_len = short.len();
    ipv4::Repr {
        src_addr: "198.18.0.1".parse().unwrap(),
        dst_addr: "198.18.0.2".parse().unwrap(),
        protocol: PROTO_UDP,
        payload_len: ip_len - ipv4::HEADER_LEN,
        ttl: 64,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut short[..]));
    let udp_repr = udp::Repr {
        src_port: 8285,
        dst_port: 8285,
        payload_len: 10,
    };
    udp_repr.emit(&mut udp::Packet::new_unchecked(
        &mut short[ipv4::HEADER_LEN..],
    ));
    short[ipv4::HEADER_LEN + udp::HEADER_LEN] = 0x45;
    let path = dir.write("short.pcap", pcap_file(101, &[short])).unwrap();
    let stdout = decode(&path);
    assert!(stdout.contains("flannel [IPv4 [invalid: "), "{stdout}");
}

/// Runs `weft-pcap` over `bytes` and requires exit status 1 with exactly one error line.
fn assert_refused(dir: &TempDir, name: &str, bytes: &[u8], reason: &str) {
    let path = dir.write(name, bytes).unwrap();
    let out = run(&path);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name}: {}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    assert!(!stderr.contains("backtrace"), "{name}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: one error line, got:\n{stderr}");
    assert!(lines[0].starts_with("weft-pcap: "), "{name}: {stderr}");
    assert!(
        lines[0].contains(reason),
        "{name}: {reason:?} not in {stderr}"
    );
}

#[test]
fn broken_files_are_refused_with_one_error_line() {
    let dir = TempDir::new("weft-pcap").unwrap();
    let good = std::fs::read(workspace().join("fixtures/vxlan/outer.pcap")).unwrap();
    assert_refused(
        &dir,
        "empty.pcap",
        b"",
        "shorter than the 24-byte pcap header",
    );
    assert_refused(&dir, "short.pcap", &good[..10], "shorter than the 24-byte");
    assert_refused(
        &dir,
        "garbage.pcap",
        b"this is not a capture, just some text that is long enough\n",
        "not a pcap file: magic",
    );
    assert_refused(
        &dir,
        "pcapng.pcap",
        &[
            0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0x1c, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1c, 0, 0, 0,
        ],
        "pcapng",
    );
    // Cut inside the second record: the first is printed, then the error.
    let cut = &good[..good.len() - 20];
    assert_refused(&dir, "truncated.pcap", cut, "record 2 at byte");
    let out = run(&dir.path().join("truncated.pcap"));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the first record is printed"
    );
    // Cut inside a record header.
    assert_refused(
        &dir,
        "header-cut.pcap",
        &good[..24 + 7],
        "truncated record header",
    );
    // A captured length far beyond the snapshot length.
    let mut oversized = good.clone();
    oversized[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_refused(
        &dir,
        "oversized.pcap",
        &oversized,
        "captured length 4294967295",
    );
    // An unsupported link type.
    let mut linux_sll = good;
    linux_sll[20..24].copy_from_slice(&113u32.to_le_bytes());
    assert_refused(
        &dir,
        "sll.pcap",
        &linux_sll,
        "link type 113 is not supported",
    );
    // A file that is not there.
    let out = run(&dir.path().join("missing.pcap"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).lines().count(), 1);
}
