//! A packet decoder built on `weft_encap::wire`: reads a classic pcap capture and prints one
//! line per packet, following the encapsulations weft speaks into the inner packet.
//!
//! ```text
//! cargo run -p weft-examples --bin weft-pcap -- fixtures/vxlan/outer.pcap
//! tcpdump -i u0 -w capture.pcap udp port 8285 ...   # then: weft-pcap capture.pcap
//! ```
//!
//! It decodes Ethernet (with 802.1Q tags), ARP, IPv4, IPv6 (skipping extension headers),
//! UDP, TCP ports and flags, ICMP and ICMPv6 (with the header of the packet an error quotes),
//! VXLAN on UDP port 8472 or 4789 (the inner Ethernet frame decoded the same way, in
//! brackets) and flannel's UDP encapsulation on port 8285 (the inner IP packet, in
//! brackets). For example, a VXLAN-encapsulated ping:
//!
//! ```text
//! 1 1795325382.216014 148 bytes: 02:00:c6:12:00:01 > 02:00:c6:12:00:02, IPv4 198.18.0.1 > 198.18.0.2 ttl 64 len 134, UDP 41986 > 8472 len 114, VXLAN vni 1 [02:00:00:00:01:00 > 02:00:00:00:02:00, IPv4 100.96.1.0 > 100.96.2.0 ttl 64 len 84 DF, ICMP echo request id 32315 seq 1]
//! ```
//!
//! Every header goes through the `new_checked` constructor of its `wire` view before any
//! field is read, so a malformed packet is reported in its line (`IPv4 [invalid: ...]`), never
//! a panic. The file format is checked just as strictly, by the small parser below: the
//! 24-byte global header (magic `a1b2c3d4` for microsecond or `a1b23c4d` for nanosecond
//! timestamps, in either byte order; link type Ethernet, or raw IP), then records of a 16-byte
//! header and the captured bytes. A file that is not pcap, or ends inside a record, or has a
//! record larger than the snapshot length, stops the program with exit status 1 and one
//! line on stderr saying where and why (after the lines of the records before it).

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

use weft_encap::wire::{
    arp, checksum, ethernet, icmpv4, icmpv6, ipv4, ipv6, udp, vxlan, PROTO_HOPOPT, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_IPV6_FRAGMENT, PROTO_IPV6_NONXT, PROTO_IPV6_OPTS, PROTO_IPV6_ROUTE,
    PROTO_TCP, PROTO_UDP,
};

/// `LINKTYPE_ETHERNET`.
const LINKTYPE_ETHERNET: u32 = 1;
/// `LINKTYPE_RAW`: each record is a bare IPv4 or IPv6 packet (a capture on a TUN).
const LINKTYPE_RAW: u32 = 101;
/// `LINKTYPE_IPV4` and `LINKTYPE_IPV6`: raw IP of one version.
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
/// The largest record libpcap writes; a larger captured length is a corrupt file.
const MAX_RECORD: u32 = 262_144;
/// The flannel UDP backend's port.
const FLANNEL_PORT: u16 = 8285;
/// How many encapsulations deep the decoder follows before it stops.
const MAX_DEPTH: usize = 8;

const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// The global header of a classic pcap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileHeader {
    big_endian: bool,
    nanoseconds: bool,
    snaplen: u32,
    link_type: u32,
}

/// One record: its timestamp, its original length and the captured bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record<'a> {
    seconds: u32,
    fraction: u32,
    original_len: u32,
    data: &'a [u8],
}

/// Reads a 32-bit field at `at` in the file's byte order; `None` if it is not all there.
fn field(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// Parses the global header.
fn parse_header(bytes: &[u8]) -> Result<FileHeader, String> {
    let Some(header) = bytes.get(..GLOBAL_HEADER_LEN) else {
        return Err(format!(
            "not a pcap file: {} bytes, shorter than the {GLOBAL_HEADER_LEN}-byte pcap header",
            bytes.len()
        ));
    };
    let (big_endian, nanoseconds) = match [header[0], header[1], header[2], header[3]] {
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            return Err("this is a pcapng file; only classic pcap is supported \
                 (convert it with `editcap -F pcap IN OUT`)"
                .to_owned())
        }
        [a, b, c, d] => {
            return Err(format!(
                "not a pcap file: magic {a:02x}{b:02x}{c:02x}{d:02x}, expected a1b2c3d4 or \
                 a1b23c4d in either byte order"
            ))
        }
    };
    let read16 = |at: usize| {
        let b = [header[at], header[at + 1]];
        if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let (major, minor) = (read16(4), read16(6));
    if major != 2 {
        return Err(format!(
            "unsupported pcap version {major}.{minor} (expected 2.x)"
        ));
    }
    let snaplen = field(header, 16, big_endian).unwrap_or(0);
    let link_type = field(header, 20, big_endian).unwrap_or(0) & 0x0fff_ffff;
    if ![
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    ]
    .contains(&link_type)
    {
        return Err(format!(
            "link type {link_type} is not supported (Ethernet is 1, raw IP 101)"
        ));
    }
    Ok(FileHeader {
        big_endian,
        nanoseconds,
        snaplen,
        link_type,
    })
}

/// The records of a pcap file, in order; stops after the first error.
struct Records<'a> {
    bytes: &'a [u8],
    header: FileHeader,
    at: usize,
    index: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    fn new(bytes: &'a [u8]) -> Result<Records<'a>, String> {
        Ok(Records {
            header: parse_header(bytes)?,
            bytes,
            at: GLOBAL_HEADER_LEN,
            index: 0,
            failed: false,
        })
    }

    fn next_record(&mut self) -> Result<Record<'a>, String> {
        let (at, number) = (self.at, self.index + 1);
        let left = self.bytes.len() - at;
        let where_ = format!("record {number} at byte {at}");
        if left < RECORD_HEADER_LEN {
            return Err(format!(
                "{where_}: truncated record header ({left} of {RECORD_HEADER_LEN} bytes)"
            ));
        }
        let be = self.header.big_endian;
        let read = |offset| field(self.bytes, at + offset, be).unwrap_or(0);
        let (seconds, fraction, captured, original_len) = (read(0), read(4), read(8), read(12));
        // A record never holds more than the snapshot length (0 in some writers: no limit
        // given) nor more than the largest record libpcap writes.
        let limit = match self.header.snaplen {
            0 => MAX_RECORD,
            snaplen => snaplen.min(MAX_RECORD),
        };
        if captured > limit {
            return Err(format!(
                "{where_}: captured length {captured} is larger than the snapshot length \
                 {} (or the {MAX_RECORD}-byte maximum): a corrupt file",
                self.header.snaplen
            ));
        }
        let start = at + RECORD_HEADER_LEN;
        let captured = captured as usize;
        let Some(data) = self.bytes.get(start..start + captured) else {
            return Err(format!(
                "{where_}: truncated record: its header says {captured} captured bytes, only {} \
                 are left in the file",
                self.bytes.len() - start
            ));
        };
        self.at = start + captured;
        self.index = number;
        Ok(Record {
            seconds,
            fraction,
            original_len,
            data,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at == self.bytes.len() {
            return None;
        }
        let record = self.next_record();
        self.failed = record.is_err();
        Some(record)
    }
}

/// Appends to `line` the decoding of an Ethernet frame.
fn ethernet_frame(frame: &[u8], depth: usize, line: &mut String) {
    let eth = match ethernet::Frame::new_checked(frame) {
        Ok(eth) => eth,
        Err(e) => return line.push_str(&format!("Ethernet [invalid: {e}]")),
    };
    line.push_str(&format!("{} > {}", eth.src_addr(), eth.dst_addr()));
    let mut ethertype = eth.ethertype();
    let mut payload = eth.payload();
    // 802.1Q / 802.1ad tags: TCI then the next ethertype.
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        let Some(tag) = payload.get(..4) else {
            return line.push_str(", VLAN [truncated tag]");
        };
        line.push_str(&format!(
            ", VLAN {}",
            u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff
        ));
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        payload = &payload[4..];
    }
    line.push_str(", ");
    match ethertype {
        ethernet::ETHERTYPE_IPV4 => ipv4_packet(payload, depth, line),
        ethernet::ETHERTYPE_IPV6 => ipv6_packet(payload, depth, line),
        ethernet::ETHERTYPE_ARP => arp_packet(payload, line),
        other => line.push_str(&format!("ethertype 0x{other:04x}, {} bytes", payload.len())),
    }
}

/// Appends the decoding of a bare IP packet of either version.
fn ip_packet(packet: &[u8], depth: usize, line: &mut String) {
    match weft_encap::wire::ip_version(packet) {
        Some(4) => ipv4_packet(packet, depth, line),
        Some(6) => ipv6_packet(packet, depth, line),
        Some(v) => line.push_str(&format!("IP version {v}? [not IPv4 or IPv6]")),
        None => line.push_str("[empty packet]"),
    }
}

fn arp_packet(packet: &[u8], line: &mut String) {
    let repr = arp::Packet::new_checked(packet).and_then(|p| arp::Repr::parse(&p));
    match repr {
        Ok(r) if r.operation == arp::OP_REQUEST => line.push_str(&format!(
            "ARP request who-has {} tell {} ({})",
            r.target_protocol_addr, r.sender_protocol_addr, r.sender_hardware_addr
        )),
        Ok(r) => line.push_str(&format!(
            "ARP reply {} is-at {} (to {})",
            r.sender_protocol_addr, r.sender_hardware_addr, r.target_protocol_addr
        )),
        Err(e) => line.push_str(&format!("ARP [invalid: {e}]")),
    }
}

fn ipv4_packet(packet: &[u8], depth: usize, line: &mut String) {
    let ip = match ipv4::Packet::new_checked(packet) {
        Ok(ip) => ip,
        Err(e) => return line.push_str(&format!("IPv4 [invalid: {e}]")),
    };
    line.push_str(&format!(
        "IPv4 {} > {} ttl {} len {}",
        ip.src_addr(),
        ip.dst_addr(),
        ip.ttl(),
        ip.total_len()
    ));
    if ip.dont_frag() {
        line.push_str(" DF");
    }
    if !ip.verify_checksum() {
        line.push_str(" [bad header checksum]");
    }
    if ip.is_fragment() {
        return line.push_str(&format!(
            ", fragment offset {}{} of protocol {}",
            ip.frag_offset(),
            if ip.more_frags() { " (more)" } else { "" },
            ip.protocol()
        ));
    }
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    transport(ip.protocol(), ip.payload(), src, dst, depth, line);
}

fn ipv6_packet(packet: &[u8], depth: usize, line: &mut String) {
    let ip = match ipv6::Packet::new_checked(packet) {
        Ok(ip) => ip,
        Err(e) => return line.push_str(&format!("IPv6 [invalid: {e}]")),
    };
    line.push_str(&format!(
        "IPv6 {} > {} hlim {} len {}",
        ip.src_addr(),
        ip.dst_addr(),
        ip.hop_limit(),
        ip.payload_len()
    ));
    let (src, dst) = (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()));
    let mut next = ip.next_header();
    let mut payload = ip.payload();
    loop {
        match next {
            PROTO_HOPOPT | PROTO_IPV6_ROUTE | PROTO_IPV6_OPTS => {
                // Next header, length in 8-byte units not counting the first 8.
                let Some(&[following, units]) = payload.get(..2) else {
                    return line.push_str(", [truncated extension header]");
                };
                let len = (usize::from(units) + 1) * 8;
                let Some(rest) = payload.get(len..) else {
                    return line.push_str(", [truncated extension header]");
                };
                line.push_str(&format!(", ext {next}"));
                next = following;
                payload = rest;
            }
            PROTO_IPV6_FRAGMENT => return line.push_str(", fragment"),
            PROTO_IPV6_NONXT => return line.push_str(", no next header"),
            _ => return transport(next, payload, src, dst, depth, line),
        }
    }
}

/// Appends the decoding of an IP payload of protocol `protocol`.
fn transport(
    protocol: u8,
    payload: &[u8],
    src: IpAddr,
    dst: IpAddr,
    depth: usize,
    line: &mut String,
) {
    line.push_str(", ");
    match protocol {
        PROTO_UDP => udp_datagram(payload, src, dst, depth, line),
        PROTO_TCP => tcp_segment(payload, line),
        PROTO_ICMP => icmpv4_message(payload, line),
        PROTO_ICMPV6 => match (src, dst) {
            (IpAddr::V6(s), IpAddr::V6(d)) => icmpv6_message(payload, &s, &d, line),
            _ => line.push_str("ICMPv6 over IPv4? [invalid]"),
        },
        other => line.push_str(&format!("protocol {other}, {} bytes", payload.len())),
    }
}

fn udp_datagram(payload: &[u8], src: IpAddr, dst: IpAddr, depth: usize, line: &mut String) {
    let u = match udp::Packet::new_checked(payload) {
        Ok(u) => u,
        Err(e) => return line.push_str(&format!("UDP [invalid: {e}]")),
    };
    line.push_str(&format!(
        "UDP {} > {} len {}",
        u.src_port(),
        u.dst_port(),
        u.len()
    ));
    if !u.verify_checksum(src, dst) {
        line.push_str(if partial_checksum(u.checksum(), u.len(), src, dst) {
            // Captured on the sending host before the NIC (or veth) filled it in.
            " [checksum offloaded]"
        } else {
            " [bad checksum]"
        });
    }
    let inner = u.payload();
    match u.dst_port() {
        vxlan::PORT_LINUX | vxlan::PORT_IANA => {
            let header = match vxlan::Header::new_checked(inner) {
                Ok(h) => h,
                Err(e) => return line.push_str(&format!(", VXLAN [invalid: {e}]")),
            };
            if !header.has_vni_flag() {
                return line.push_str(&format!(
                    ", VXLAN flags 0x{:02x} [no I flag: no VNI]",
                    header.flags()
                ));
            }
            line.push_str(&format!(", VXLAN vni {} ", header.vni()));
            nested(line, depth, |line| {
                ethernet_frame(header.payload(), depth + 1, line)
            });
        }
        FLANNEL_PORT => {
            line.push_str(", flannel ");
            nested(line, depth, |line| ip_packet(inner, depth + 1, line));
        }
        _ => {}
    }
}

/// Whether `stored` is the partial checksum a sender leaves for checksum offload: the folded
/// sum of the pseudo header alone.
fn partial_checksum(stored: u16, len: u16, src: IpAddr, dst: IpAddr) -> bool {
    let sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, PROTO_UDP, len.into()),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_header_v6(&s, &d, PROTO_UDP, len.into()),
        _ => return false,
    };
    checksum::fold(sum) == stored
}

/// Appends `[inner]`, or a note if the packet nests deeper than [`MAX_DEPTH`].
fn nested(line: &mut String, depth: usize, inner: impl FnOnce(&mut String)) {
    if depth >= MAX_DEPTH {
        return line.push_str("[nested too deep, not decoded]");
    }
    line.push('[');
    inner(line);
    line.push(']');
}

fn tcp_segment(segment: &[u8], line: &mut String) {
    // weft_encap::wire has no TCP view (weft never looks past the ports), so read the fixed
    // header by hand, bounds-checked.
    let Some(h) = segment.get(..20) else {
        return line.push_str("TCP [invalid: truncated header]");
    };
    let port = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let header_len = usize::from(h[12] >> 4) * 4;
    let names = [
        (0x02, "SYN"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x10, "ACK"),
        (0x20, "URG"),
    ];
    let flags: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| h[13] & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    line.push_str(&format!(
        "TCP {} > {} [{}] seq {seq}",
        port(0),
        port(2),
        flags.join(",")
    ));
    match segment.len().checked_sub(header_len) {
        Some(data) if header_len >= 20 => line.push_str(&format!(" data {data}")),
        _ => line.push_str(&format!(" [invalid header length {header_len}]")),
    }
}

/// A short description of the start of an IP packet an ICMP error quotes (usually cut short,
/// so not a valid packet for `new_checked`).
fn quoted(quote: &[u8]) -> String {
    let proto = |p: u8| match p {
        PROTO_ICMP => "ICMP".to_owned(),
        PROTO_UDP => "UDP".to_owned(),
        PROTO_TCP => "TCP".to_owned(),
        PROTO_ICMPV6 => "ICMPv6".to_owned(),
        other => format!("protocol {other}"),
    };
    match weft_encap::wire::ip_version(quote) {
        Some(4) if quote.len() >= ipv4::HEADER_LEN => {
            let a =
                |at: usize| Ipv4Addr::new(quote[at], quote[at + 1], quote[at + 2], quote[at + 3]);
            format!("IPv4 {} > {} {}", a(12), a(16), proto(quote[9]))
        }
        Some(6) if quote.len() >= ipv6::HEADER_LEN => {
            let a = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&quote[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            format!("IPv6 {} > {} {}", a(8), a(24), proto(quote[6]))
        }
        _ => format!("{} bytes", quote.len()),
    }
}

fn icmpv4_message(payload: &[u8], line: &mut String) {
    let icmp = match icmpv4::Packet::new_checked(payload) {
        Ok(icmp) => icmp,
        Err(e) => return line.push_str(&format!("ICMP [invalid: {e}]")),
    };
    let (t, c) = (icmp.msg_type(), icmp.code());
    let text = match (t, c) {
        (icmpv4::TYPE_ECHO_REQUEST | icmpv4::TYPE_ECHO_REPLY, _) => format!(
            "echo {} id {} seq {}",
            if t == icmpv4::TYPE_ECHO_REQUEST {
                "request"
            } else {
                "reply"
            },
            icmp.echo_ident(),
            icmp.echo_seq()
        ),
        (icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_NET_UNREACHABLE) => "net unreachable".into(),
        (icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_HOST_UNREACHABLE) => "host unreachable".into(),
        (icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_PORT_UNREACHABLE) => "port unreachable".into(),
        (icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_FRAG_NEEDED) => format!(
            "fragmentation needed, next-hop MTU {}",
            icmp.rest_of_header() & 0xffff
        ),
        (icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_ADMIN_PROHIBITED) => {
            "administratively prohibited".into()
        }
        (icmpv4::TYPE_DEST_UNREACHABLE, code) => format!("destination unreachable code {code}"),
        (icmpv4::TYPE_TIME_EXCEEDED, _) => "time exceeded".into(),
        (t, c) => format!("type {t} code {c}"),
    };
    line.push_str(&format!("ICMP {text}"));
    if icmpv4::is_error_type(t) {
        line.push_str(&format!(", quoting {}", quoted(icmp.data())));
    }
    if !icmp.verify_checksum() {
        line.push_str(" [bad checksum]");
    }
}

fn icmpv6_message(payload: &[u8], src: &Ipv6Addr, dst: &Ipv6Addr, line: &mut String) {
    let icmp = match icmpv6::Packet::new_checked(payload) {
        Ok(icmp) => icmp,
        Err(e) => return line.push_str(&format!("ICMPv6 [invalid: {e}]")),
    };
    let (t, c) = (icmp.msg_type(), icmp.code());
    let rest = icmp.rest_of_header();
    let target = || {
        icmp.data()
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map_or("?".to_owned(), |b| Ipv6Addr::from(b).to_string())
    };
    let text = match t {
        icmpv6::TYPE_ECHO_REQUEST => {
            format!("echo request id {} seq {}", rest >> 16, rest & 0xffff)
        }
        icmpv6::TYPE_ECHO_REPLY => format!("echo reply id {} seq {}", rest >> 16, rest & 0xffff),
        icmpv6::TYPE_NEIGHBOR_SOLICITATION => format!("neighbor solicitation who-has {}", target()),
        icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT => format!("neighbor advertisement {}", target()),
        icmpv6::TYPE_ROUTER_SOLICITATION => "router solicitation".into(),
        icmpv6::TYPE_ROUTER_ADVERTISEMENT => "router advertisement".into(),
        icmpv6::TYPE_DEST_UNREACHABLE => match c {
            icmpv6::CODE_NO_ROUTE => "no route to destination".into(),
            icmpv6::CODE_ADMIN_PROHIBITED => "administratively prohibited".into(),
            icmpv6::CODE_ADDRESS_UNREACHABLE => "address unreachable".into(),
            icmpv6::CODE_PORT_UNREACHABLE => "port unreachable".into(),
            code => format!("destination unreachable code {code}"),
        },
        icmpv6::TYPE_PACKET_TOO_BIG => format!("packet too big, MTU {rest}"),
        icmpv6::TYPE_TIME_EXCEEDED => "time exceeded".into(),
        icmpv6::TYPE_PARAMETER_PROBLEM => format!("parameter problem code {c}"),
        t => format!("type {t} code {c}"),
    };
    line.push_str(&format!("ICMPv6 {text}"));
    if icmpv6::is_error_type(t) {
        line.push_str(&format!(", quoting {}", quoted(icmp.data())));
    }
    if !icmp.verify_checksum(src, dst) {
        line.push_str(" [bad checksum]");
    }
}

/// One line for a record (without the newline).
fn record_line(number: usize, header: &FileHeader, record: &Record<'_>) -> String {
    let fraction = if header.nanoseconds {
        format!("{:09}", record.fraction)
    } else {
        format!("{:06}", record.fraction)
    };
    let mut line = format!("{number} {}.{fraction} ", record.seconds);
    if record.data.len() as u64 == u64::from(record.original_len) {
        line.push_str(&format!("{} bytes: ", record.data.len()));
    } else {
        line.push_str(&format!(
            "{} of {} bytes: ",
            record.data.len(),
            record.original_len
        ));
    }
    match header.link_type {
        LINKTYPE_ETHERNET => ethernet_frame(record.data, 0, &mut line),
        _ => ip_packet(record.data, 0, &mut line),
    }
    line
}

/// What went wrong: the file (exit 1) or writing the output.
enum Failure {
    File(String),
    Output(io::Error),
}

/// Prints every record of the pcap file `bytes` to `out`; returns how many there were.
fn decode_file(bytes: &[u8], out: &mut impl Write) -> Result<usize, Failure> {
    let mut records = Records::new(bytes).map_err(Failure::File)?;
    let header = records.header;
    let mut count = 0;
    for record in &mut records {
        let record = record.map_err(Failure::File)?;
        count += 1;
        writeln!(out, "{}", record_line(count, &header, &record)).map_err(Failure::Output)?;
    }
    Ok(count)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag] if flag == "-h" || flag == "--help" => {
            println!("usage: weft-pcap FILE.pcap   (prints one line per packet)");
            return ExitCode::SUCCESS;
        }
        [path] => path,
        _ => {
            eprintln!("usage: weft-pcap FILE.pcap");
            return ExitCode::from(2);
        }
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("weft-pcap: cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = decode_file(&bytes, &mut out);
    let flushed = out.flush();
    match (result, flushed) {
        (Err(Failure::File(e)), _) => {
            eprintln!("weft-pcap: {path}: {e}");
            ExitCode::FAILURE
        }
        // A reader that went away (`weft-pcap f.pcap | head`) is not an error.
        (Err(Failure::Output(e)), _) | (Ok(_), Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        (Err(Failure::Output(e)), _) | (Ok(_), Err(e)) => {
            eprintln!("weft-pcap: writing the output: {e}");
            ExitCode::FAILURE
        }
        (Ok(_), Ok(())) => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn decode(bytes: &[u8]) -> Result<String, String> {
        let mut out = Vec::new();
        match decode_file(bytes, &mut out) {
            Ok(_) => Ok(String::from_utf8(out).expect("the output is UTF-8")),
            Err(Failure::File(e)) => Err(e),
            Err(Failure::Output(e)) => panic!("writing to a Vec: {e}"),
        }
    }

    #[test]
    fn every_byte_order_and_timestamp_precision() {
        let le = fixture("wire/arp.pcap");
        let mut be = le.clone();
        // Swap every 32-bit field of the global header and the record headers, and the two
        // 16-bit version fields.
        be[..4].reverse();
        be[4..6].reverse();
        be[6..8].reverse();
        for at in (8..24).step_by(4) {
            be[at..at + 4].reverse();
        }
        let mut at = 24;
        while at < be.len() {
            let captured = u32::from_le_bytes(le[at + 8..at + 12].try_into().unwrap()) as usize;
            for f in (at..at + 16).step_by(4) {
                be[f..f + 4].reverse();
            }
            at += 16 + captured;
        }
        assert_eq!(decode(&le).unwrap(), decode(&be).unwrap());
        let mut nano = le.clone();
        nano[..4].copy_from_slice(&[0x4d, 0x3c, 0xb2, 0xa1]);
        let text = decode(&nano).unwrap();
        let stamp = text.split_whitespace().nth(1).unwrap();
        assert_eq!(stamp.split('.').nth(1).unwrap().len(), 9, "{text}");
    }

    #[test]
    fn truncations_and_corruptions_are_errors_not_panics() {
        for name in [
            "vxlan/outer.pcap",
            "wire/arp.pcap",
            "wire/ipv6-packet-too-big.pcap",
        ] {
            let bytes = fixture(name);
            let whole = decode(&bytes).unwrap();
            for cut in 0..bytes.len() {
                let _ = decode(&bytes[..cut]);
            }
            // Cut inside the last record: an error naming it.
            let err = decode(&bytes[..bytes.len() - 1]).unwrap_err();
            assert!(err.contains("truncated record"), "{err}");
            for at in 0..bytes.len() {
                for value in [0x00, 0xff, 0x45, 0x60, bytes[at] ^ 0x80] {
                    let mut corrupt = bytes.clone();
                    corrupt[at] = value;
                    let _ = decode(&corrupt);
                }
            }
            assert!(!whole.is_empty());
        }
    }

    #[test]
    fn oversized_records_are_rejected() {
        let mut bytes = fixture("wire/arp.pcap");
        bytes[24 + 8..24 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(err.contains("captured length"), "{err}");
    }
}
