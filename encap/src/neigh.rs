//! Answering neighbour resolution: ARP requests (RFC 826) and IPv6 neighbour solicitations
//! (RFC 4861), for this host's own VTEP address ([`answer`]) and, as the kernel vxlan
//! device's `proxy` flag does, for the addresses of a neighbour table ([`proxy`]).
//!
//! In L3 mode weft stands in for the kernel's `flannel.<VNI>` device. A kernel peer that has
//! no permanent neighbour entry for our VTEP address (flanneld programs one, but a restarted
//! or hand-configured peer may not) resolves it the ordinary way, and the request arrives
//! as an inner Ethernet frame. [`answer`] turns such a request into the answer the kernel
//! would have sent, in place, so the caller only has to send the frame back to the peer.
//!
//! What is answered, and how (checked against frames captured from the kernel, see
//! `fixtures/neigh/capture.sh`):
//!
//! - **ARP** (Ethernet/IPv4, operation request) whose target protocol address is `our_ip`,
//!   sent to the broadcast address or to `our_mac`, from a unicast sender other than
//!   `our_mac`. Gratuitous ARP (sender address = target address) is not answered; an ARP
//!   probe (sender address 0.0.0.0, RFC 5227) is, like the kernel does. The reply goes to
//!   the request's sender hardware address: operation reply, sender `our_mac`/`our_ip`,
//!   target = the request's sender. 42 bytes, no padding.
//! - **Neighbour solicitation** validated as RFC 4861 7.1.1 says: IPv6 next header 58 (no
//!   extension headers), hop limit 255, ICMPv6 type 135 code 0, at least 24 bytes, valid
//!   checksum, every option of non-zero length and inside the message, target `our_ip6`,
//!   destination `our_ip6` or its solicited-node multicast address (only the latter when the
//!   source is unspecified, and then without a source link-layer address option). The
//!   frame must be sent to `our_mac` or a multicast address, from a unicast MAC other than
//!   `our_mac`. The advertisement comes from `our_ip6` with hop limit 255, the Override flag
//!   and a target link-layer address option carrying `our_mac`, 86 bytes in all:
//!   - to a specified source: the Solicited flag set, IPv6 destination = the solicitation's
//!     source, Ethernet destination = its source link-layer address option, or the
//!     frame's Ethernet source if it has none;
//!   - to the unspecified source of duplicate address detection: the Solicited flag clear
//!     (RFC 4861 7.2.4), IPv6 destination all-nodes `ff02::1`, Ethernet destination
//!     `33:33:00:00:00:01` (RFC 2464 7), as the kernel does.
//!
//!   The Router flag is never set (the kernel sets it when the device forwards).
//!
//! ## The proxy
//!
//! [`proxy`] answers the same requests for any address its `lookup` knows (the static and
//! learnt entries of a VNI's neighbour table), with the MAC the table gives, as if the
//! owner had answered: the answer's Ethernet source, ARP sender hardware address and target
//! link-layer address option are the owner's MAC, and the advertisement carries the
//! Solicited and Override flags, like the kernel vxlan device's `proxy` (the MAC is the
//! owner's own, not the proxy's, so the RFC 4861 7.2.8 rule for proxies advertising their
//! own MAC, Override clear, does not apply). It differs from [`answer`] in what it leaves
//! alone, so that the owner answers for itself:
//!
//! - **address probes**: an ARP probe (sender 0.0.0.0, RFC 5227) and a duplicate address
//!   detection solicitation (source `::`, RFC 4862 5.4) are never answered. An answer would
//!   tell the prober that the address is taken, whoever probes, the owner included (after a
//!   restart, or moved to another host); flooded as before, they reach the owner, which is
//!   the only one that may defend the address;
//! - requests whose target is unspecified, multicast, broadcast or loopback, and requests
//!   from the owner's MAC itself (Ethernet source or ARP sender), are not answered;
//! - a request sent to a unicast MAC is answered only if that MAC is the owner's.
//!
//! ## Learning
//!
//! [`binding`] reads the IP -> MAC binding a frame announces, for a table learnt from
//! traffic: the sender of an ARP request or reply, or the target of a neighbour
//! advertisement with its target link-layer address option (validated like a
//! solicitation: hop limit 255, code 0, checksum, options). The announced MAC must be the
//! frame's Ethernet source, and the address a unicast one (so probes teach nothing).
//!
//! Nothing else is answered. Requests are hostile input: [`answer`] and [`proxy`] never
//! panic and never read or write outside `buf`; on `None` the buffer is left untouched.

use core::ops::Range;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::arp;
use crate::wire::ethernet::{self, EthernetAddress, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use crate::wire::icmpv6::{self, TYPE_NEIGHBOR_ADVERTISEMENT, TYPE_NEIGHBOR_SOLICITATION};
use crate::wire::ipv6;
use crate::wire::PROTO_ICMPV6;

/// Length of an ARP reply frame: Ethernet header + Ethernet/IPv4 ARP packet.
const ARP_REPLY_LEN: usize = ethernet::HEADER_LEN + arp::PACKET_LEN;
/// Length of a neighbour solicitation or advertisement body: header, reserved/flags, target.
const ND_MESSAGE_LEN: usize = icmpv6::HEADER_LEN + 16;
/// Length of a link-layer address option for Ethernet (type, length 1, six bytes).
const LINK_LAYER_OPTION_LEN: usize = 8;
/// Length of the advertisement frame [`answer`] writes.
const NA_FRAME_LEN: usize =
    ethernet::HEADER_LEN + ipv6::HEADER_LEN + ND_MESSAGE_LEN + LINK_LAYER_OPTION_LEN;
/// Hop limit of every neighbour discovery message.
const ND_HOP_LIMIT: u8 = 255;
/// Neighbour discovery option: source link-layer address.
const OPTION_SOURCE_LINK_LAYER: u8 = 1;
/// Neighbour discovery option: target link-layer address.
const OPTION_TARGET_LINK_LAYER: u8 = 2;
/// Neighbour advertisement flag: the advertisement answers a solicitation.
const FLAG_SOLICITED: u32 = 0x4000_0000;
/// Neighbour advertisement flag: override an existing cache entry.
const FLAG_OVERRIDE: u32 = 0x2000_0000;
/// The all-nodes link-local multicast address `ff02::1`.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The Ethernet address IPv6 multicast to `ff02::1` maps to.
const ALL_NODES_MAC: EthernetAddress = EthernetAddress([0x33, 0x33, 0, 0, 0, 1]);

/// For whom requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answering {
    /// This host's own address: probes and duplicate address detection are answered too.
    Own,
    /// Other hosts' addresses (the proxy): probes and duplicate address detection are not.
    Proxy,
}

/// Rewrites an ARP request or a neighbour solicitation for this host's VTEP address into
/// its answer, in place.
///
/// `frame` is the whole Ethernet frame at `buf[start..start + len]`. If it is an ARP request
/// for `our_ip`, or an IPv6 neighbour solicitation for `our_ip6` (see the [module
/// docs](self) for every check), the answer from `our_mac` is written starting at `start`
/// and its range in `buf` is returned. The advertisement (86 bytes) may be longer than the
/// solicitation: it uses the room after the frame in `buf`, and `None` is returned if `buf`
/// is too short for it. In every other case (other addresses, other kinds of frames,
/// malformed or truncated input, a range outside `buf`) the result is `None` and `buf` is
/// not modified. Never panics.
pub fn answer(
    buf: &mut [u8],
    start: usize,
    len: usize,
    our_mac: EthernetAddress,
    our_ip: Option<Ipv4Addr>,
    our_ip6: Option<Ipv6Addr>,
) -> Option<Range<usize>> {
    let mut resolve = |ip: IpAddr| match ip {
        IpAddr::V4(a) if Some(a) == our_ip => Some(our_mac),
        IpAddr::V6(a) if Some(a) == our_ip6 => Some(our_mac),
        _ => None,
    };
    answer_with(buf, start, len, &mut resolve, Answering::Own)
}

/// Rewrites an ARP request or a neighbour solicitation for an address `lookup` knows into
/// the answer its owner would give, in place: the proxy of the kernel vxlan device's
/// `proxy` flag.
///
/// As [`answer`], with the MAC `lookup` returns for the requested address in the place of
/// `our_mac` (a multicast or all-zero one is never advertised), and with the differences
/// the [module docs](self) list: address probes and duplicate address detection
/// are left to the owner. `lookup` is only called for a well-formed request, once.
/// `None` (nothing known, nothing to answer, or no room for the answer) leaves `buf`
/// untouched. Never panics.
pub fn proxy(
    buf: &mut [u8],
    start: usize,
    len: usize,
    mut lookup: impl FnMut(IpAddr) -> Option<EthernetAddress>,
) -> Option<Range<usize>> {
    let mut resolve = |ip: IpAddr| {
        if !is_unicast_ip(ip) {
            return None;
        }
        lookup(ip).filter(|mac| mac.is_unicast() && *mac != EthernetAddress::default())
    };
    answer_with(buf, start, len, &mut resolve, Answering::Proxy)
}

/// The binding `(address, MAC)` a frame announces, for a neighbour table learnt from
/// traffic: the sender of an ARP request or reply, or the target of a neighbour
/// advertisement (see the [module docs](self)). `None` for anything else, and
/// for a binding of a non-unicast address or MAC, or of a MAC that is not the frame's
/// Ethernet source. Never panics.
pub fn binding(frame: &[u8]) -> Option<(IpAddr, EthernetAddress)> {
    let frame = ethernet::Frame::new_checked(frame).ok()?;
    let src = frame.src_addr();
    if !src.is_unicast() || src == EthernetAddress::default() {
        return None;
    }
    let (ip, mac) = match frame.ethertype() {
        ETHERTYPE_ARP => {
            let packet = arp::Packet::new_checked(frame.payload()).ok()?;
            let repr = arp::Repr::parse(&packet).ok()?;
            (
                IpAddr::V4(repr.sender_protocol_addr),
                repr.sender_hardware_addr,
            )
        }
        ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::new_checked(frame.payload()).ok()?;
            if ip.next_header() != PROTO_ICMPV6 || ip.hop_limit() != ND_HOP_LIMIT {
                return None;
            }
            let message = ip.payload();
            let icmp = icmpv6::Packet::new_checked(message).ok()?;
            if icmp.msg_type() != TYPE_NEIGHBOR_ADVERTISEMENT
                || icmp.code() != 0
                || message.len() < ND_MESSAGE_LEN
                || !icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr())
            {
                return None;
            }
            let target = Ipv6Addr::from(<[u8; 16]>::try_from(message.get(8..24)?).ok()?);
            let options = message.get(ND_MESSAGE_LEN..)?;
            let mac = link_layer_option(options, OPTION_TARGET_LINK_LAYER)??;
            (IpAddr::V6(target), mac)
        }
        _ => return None,
    };
    (mac == src && is_unicast_ip(ip)).then_some((ip, mac))
}

/// Whether `ip` may be resolved at all: not unspecified, multicast, broadcast or loopback.
fn is_unicast_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback())
        }
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
    }
}

/// [`answer`] and [`proxy`]: `resolve` gives the MAC that answers for an address.
fn answer_with(
    buf: &mut [u8],
    start: usize,
    len: usize,
    resolve: &mut dyn FnMut(IpAddr) -> Option<EthernetAddress>,
    mode: Answering,
) -> Option<Range<usize>> {
    let end = start.checked_add(len)?;
    let frame = ethernet::Frame::new_checked(buf.get(start..end)?).ok()?;
    if frame.src_addr().is_multicast() {
        return None;
    }
    match frame.ethertype() {
        ETHERTYPE_ARP => {
            let reply = arp_reply(&frame, resolve, mode)?;
            let out = buf.get_mut(start..start.checked_add(ARP_REPLY_LEN)?)?;
            emit_arp_reply(out, &reply);
            Some(start..start + ARP_REPLY_LEN)
        }
        ETHERTYPE_IPV6 => {
            let advert = neighbor_advertisement(&frame, resolve, mode)?;
            let out = buf.get_mut(start..start.checked_add(NA_FRAME_LEN)?)?;
            emit_neighbor_advertisement(out, &advert);
            Some(start..start + NA_FRAME_LEN)
        }
        _ => None,
    }
}

/// The ARP reply to send, with its Ethernet destination, if `frame` is a request to answer.
fn arp_reply(
    frame: &ethernet::Frame<&[u8]>,
    resolve: &mut dyn FnMut(IpAddr) -> Option<EthernetAddress>,
    mode: Answering,
) -> Option<arp::Repr> {
    let packet = arp::Packet::new_checked(frame.payload()).ok()?;
    let request = arp::Repr::parse(&packet).ok()?;
    let sender_mac = request.sender_hardware_addr;
    let sender_ip = request.sender_protocol_addr;
    let target = request.target_protocol_addr;
    let acceptable_sender = sender_mac.is_unicast()
        && sender_mac != EthernetAddress::default()
        && !sender_ip.is_multicast()
        && !sender_ip.is_broadcast()
        && !sender_ip.is_loopback();
    // A probe (RFC 5227) is answered for our own address, as the kernel does; the proxy
    // leaves it to the owner.
    let probe = sender_ip.is_unspecified();
    if request.operation != arp::OP_REQUEST
        || sender_ip == target
        || !acceptable_sender
        || (probe && mode == Answering::Proxy)
    {
        return None;
    }
    let our_mac = resolve(IpAddr::V4(target))?;
    let dst = frame.dst_addr();
    if (!dst.is_broadcast() && dst != our_mac)
        || frame.src_addr() == our_mac
        || sender_mac == our_mac
    {
        return None;
    }
    Some(arp::Repr {
        operation: arp::OP_REPLY,
        sender_hardware_addr: our_mac,
        sender_protocol_addr: target,
        target_hardware_addr: sender_mac,
        target_protocol_addr: sender_ip,
    })
}

/// Writes the reply frame (Ethernet destination = the ARP target) into `out` (42 bytes).
fn emit_arp_reply(out: &mut [u8], reply: &arp::Repr) {
    let (header, packet) = out.split_at_mut(ethernet::HEADER_LEN);
    ethernet::Repr {
        src_addr: reply.sender_hardware_addr,
        dst_addr: reply.target_hardware_addr,
        ethertype: ETHERTYPE_ARP,
    }
    .emit(&mut ethernet::Frame::new_unchecked(header));
    reply.emit(&mut arp::Packet::new_unchecked(packet));
}

/// Everything the advertisement frame needs, read out of the solicitation before the
/// buffer is overwritten.
struct Advertisement {
    eth_dst: EthernetAddress,
    our_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    flags: u32,
}

/// The solicited-node multicast address of `addr`: `ff02::1:ff00:0/104` + its low 24 bits.
fn solicited_node(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    let mut m = [0u8; 16];
    m[0] = 0xff;
    m[1] = 0x02;
    m[11] = 0x01;
    m[12] = 0xff;
    m[13..].copy_from_slice(&o[13..]);
    Ipv6Addr::from(m)
}

/// The advertisement to send if `frame` is a valid solicitation for an address `resolve`
/// knows.
fn neighbor_advertisement(
    frame: &ethernet::Frame<&[u8]>,
    resolve: &mut dyn FnMut(IpAddr) -> Option<EthernetAddress>,
    mode: Answering,
) -> Option<Advertisement> {
    let eth_dst = frame.dst_addr();
    let ip = ipv6::Packet::new_checked(frame.payload()).ok()?;
    if ip.next_header() != PROTO_ICMPV6 || ip.hop_limit() != ND_HOP_LIMIT {
        return None;
    }
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    let message = ip.payload();
    let icmp = icmpv6::Packet::new_checked(message).ok()?;
    if icmp.msg_type() != TYPE_NEIGHBOR_SOLICITATION
        || icmp.code() != 0
        || message.len() < ND_MESSAGE_LEN
        || !icmp.verify_checksum(&src, &dst)
    {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&message[8..24]).ok()?);
    if src.is_multicast() || src == target {
        return None;
    }
    let unspecified = src.is_unspecified();
    // Duplicate address detection: answered for our own address, as the kernel does; the
    // proxy leaves it to the owner (see the module docs).
    if unspecified && mode == Answering::Proxy {
        return None;
    }
    let to_solicited_node = dst == solicited_node(&target);
    if !(to_solicited_node || (dst == target && !unspecified)) {
        return None;
    }
    let source_link_layer =
        link_layer_option(&message[ND_MESSAGE_LEN..], OPTION_SOURCE_LINK_LAYER)?;
    if unspecified && source_link_layer.is_some() {
        return None;
    }
    let our_mac = resolve(IpAddr::V6(target))?;
    if (!eth_dst.is_multicast() && eth_dst != our_mac) || frame.src_addr() == our_mac {
        return None;
    }
    if unspecified {
        return Some(Advertisement {
            eth_dst: ALL_NODES_MAC,
            our_mac,
            src: target,
            dst: ALL_NODES,
            flags: FLAG_OVERRIDE,
        });
    }
    let requester = source_link_layer.unwrap_or(frame.src_addr());
    if requester.is_multicast() || requester == our_mac {
        return None;
    }
    Some(Advertisement {
        eth_dst: requester,
        our_mac,
        src: target,
        dst: src,
        flags: FLAG_SOLICITED | FLAG_OVERRIDE,
    })
}

/// Walks the options of a neighbour discovery message: `None` if one is malformed (zero
/// length, or running past the end), else the link-layer address of the first option of
/// type `kind`, if there is one.
fn link_layer_option(mut options: &[u8], kind: u8) -> Option<Option<EthernetAddress>> {
    let mut found = None;
    while !options.is_empty() {
        let (&this, rest) = options.split_first()?;
        let units = *rest.first()?;
        let len = usize::from(units) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if this == kind && found.is_none() {
            found = Some(EthernetAddress::from_bytes(&options[2..8]));
        }
        options = &options[len..];
    }
    Some(found)
}

/// Writes the advertisement frame into `out` (86 bytes).
fn emit_neighbor_advertisement(out: &mut [u8], advert: &Advertisement) {
    let (header, packet) = out.split_at_mut(ethernet::HEADER_LEN);
    ethernet::Repr {
        src_addr: advert.our_mac,
        dst_addr: advert.eth_dst,
        ethertype: ETHERTYPE_IPV6,
    }
    .emit(&mut ethernet::Frame::new_unchecked(header));
    let (ip_header, message) = packet.split_at_mut(ipv6::HEADER_LEN);
    ipv6::Repr {
        src_addr: advert.src,
        dst_addr: advert.dst,
        next_header: PROTO_ICMPV6,
        payload_len: message.len(),
        hop_limit: ND_HOP_LIMIT,
    }
    .emit(&mut ipv6::Packet::new_unchecked(ip_header));
    let mut icmp = icmpv6::Packet::new_unchecked(message);
    icmp.set_msg_type(TYPE_NEIGHBOR_ADVERTISEMENT);
    icmp.set_code(0);
    icmp.set_rest_of_header(advert.flags);
    let data = icmp.data_mut();
    data[..16].copy_from_slice(&advert.src.octets());
    data[16] = OPTION_TARGET_LINK_LAYER;
    data[17] = 1;
    data[18..24].copy_from_slice(&advert.our_mac.0);
    icmp.fill_checksum(&advert.src, &advert.dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use crate::wire::checksum;

    const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0xc6, 0x12, 0, 0x01]);
    const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0xc6, 0x12, 0, 0x02]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const IP6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1);
    const IP6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 2);

    /// Answers `frame` as host B, with `room` spare bytes after it and `head` before it.
    fn answer_b(frame: &[u8], head: usize, room: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0xeeu8; head + frame.len() + room];
        buf[head..head + frame.len()].copy_from_slice(frame);
        let before = buf.clone();
        match answer(&mut buf, head, frame.len(), MAC_B, Some(IP_B), Some(IP6_B)) {
            Some(r) => {
                assert!(buf[..head].iter().all(|&b| b == 0xee), "wrote before start");
                let tail = r.end.max(head + frame.len());
                assert!(
                    buf[tail..].iter().all(|&b| b == 0xee),
                    "wrote past the answer"
                );
                Some(buf[r].to_vec())
            }
            None => {
                assert_eq!(buf, before, "modified the buffer without answering");
                None
            }
        }
    }

    /// Rewrites the ICMPv6 checksum of an Ethernet+IPv6 frame after an edit.
    fn fix_icmpv6_checksum(frame: &mut [u8]) {
        let ip = ipv6::Packet::new_checked(&frame[14..]).unwrap();
        let (src, dst, end) = (ip.src_addr(), ip.dst_addr(), 14 + ip.total_len());
        icmpv6::Packet::new_checked(&mut frame[54..end])
            .unwrap()
            .fill_checksum(&src, &dst);
    }

    #[test]
    fn arp_reply_equals_the_kernels() {
        let request = fixture("neigh/arp-request.hex");
        let kernel = fixture("neigh/arp-reply.hex");
        let ours = answer_b(&request, 0, 0).expect("answers the captured request");
        assert_eq!(ours.len(), 42);
        let f = ethernet::Frame::new_checked(&ours[..]).unwrap();
        assert_eq!(f.dst_addr(), MAC_A);
        assert_eq!(f.src_addr(), MAC_B);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        let p = arp::Packet::new_checked(f.payload()).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!(p.operation(), arp::OP_REPLY);
        assert_eq!(p.sender_hardware_addr(), MAC_B);
        assert_eq!(p.sender_protocol_addr(), IP_B);
        assert_eq!(p.target_hardware_addr(), MAC_A);
        assert_eq!(p.target_protocol_addr(), IP_A);
        // Every field, Ethernet header included, is the kernel's.
        assert_eq!(ours, kernel);
    }

    #[test]
    fn arp_reply_with_headroom_and_padding() {
        let mut request = fixture("neigh/arp-request.hex");
        request.resize(60, 0); // padded to the Ethernet minimum
        let ours = answer_b(&request, 7, 3).unwrap();
        assert_eq!(ours, fixture("neigh/arp-reply.hex"));
        // Unicast (a kernel re-validating its entry sends to our MAC).
        request[..6].copy_from_slice(&MAC_B.0);
        assert!(answer_b(&request, 0, 0).is_some());
    }

    #[test]
    fn arp_probe_is_answered_to_zero_address() {
        let mut request = fixture("neigh/arp-request.hex");
        request[28..32].fill(0); // RFC 5227 probe: sender protocol address 0.0.0.0
        let ours = answer_b(&request, 0, 0).unwrap();
        let p = arp::Packet::new_checked(&ours[14..]).unwrap();
        assert_eq!(p.target_protocol_addr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(p.target_hardware_addr(), MAC_A);
    }

    #[test]
    fn arp_not_answered() {
        let request = fixture("neigh/arp-request.hex");
        let edit = |at: usize, bytes: &[u8]| {
            let mut r = request.clone();
            r[at..at + bytes.len()].copy_from_slice(bytes);
            r
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("for another address", edit(38, &[198, 18, 0, 3])),
            ("gratuitous", edit(28, &[198, 18, 0, 2])),
            ("a reply", fixture("neigh/arp-reply.hex")),
            ("operation reply", edit(20, &[0, 2])),
            ("RARP", edit(20, &[0, 3])),
            ("not Ethernet", edit(14, &[0, 6])),
            ("not IPv4", edit(16, &[0x86, 0xdd])),
            ("sent to someone else", edit(0, &MAC_A.0)),
            (
                "sent to a multicast group",
                edit(0, &[0x01, 0, 0x5e, 0, 0, 1]),
            ),
            ("from a multicast MAC", edit(6, &[0x01, 0, 0x5e, 0, 0, 1])),
            ("from ourselves", edit(6, &MAC_B.0)),
            (
                "sender hardware multicast",
                edit(22, &[0x01, 0, 0x5e, 0, 0, 1]),
            ),
            ("sender hardware zero", edit(22, &[0; 6])),
            ("sender hardware ours", edit(22, &MAC_B.0)),
            ("sender IP broadcast", edit(28, &[255; 4])),
            ("sender IP multicast", edit(28, &[224, 0, 0, 1])),
            ("sender IP loopback", edit(28, &[127, 0, 0, 1])),
            ("ethertype IPv4", edit(12, &[0x08, 0x00])),
        ];
        for (what, frame) in &cases {
            assert_eq!(answer_b(frame, 0, 64), None, "{what}");
        }
        for n in 0..request.len() {
            assert_eq!(answer_b(&request[..n], 0, 64), None, "truncated to {n}");
        }
        // No IPv4 address configured.
        let mut buf = request.clone();
        assert_eq!(
            answer(&mut buf, 0, request.len(), MAC_B, None, Some(IP6_B)),
            None
        );
    }

    /// Checks a neighbour advertisement frame field by field.
    fn check_advertisement(na: &[u8], eth_dst: EthernetAddress, ip_dst: Ipv6Addr, flags: u32) {
        assert_eq!(na.len(), 86);
        let f = ethernet::Frame::new_checked(na).unwrap();
        assert_eq!(f.dst_addr(), eth_dst);
        assert_eq!(f.src_addr(), MAC_B);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV6);
        let ip = ipv6::Packet::new_checked(f.payload()).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0);
        assert_eq!(ip.flow_label(), 0);
        assert_eq!(ip.payload_len(), 32);
        assert_eq!(ip.next_header(), PROTO_ICMPV6);
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(ip.src_addr(), IP6_B);
        assert_eq!(ip.dst_addr(), ip_dst);
        let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), TYPE_NEIGHBOR_ADVERTISEMENT);
        assert_eq!(icmp.code(), 0);
        assert_eq!(icmp.rest_of_header(), flags);
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        let s = checksum::pseudo_header_v6(&ip.src_addr(), &ip.dst_addr(), PROTO_ICMPV6, 32);
        assert_eq!(checksum::fold(checksum::sum(ip.payload(), s)), 0xffff);
        assert_eq!(&icmp.data()[..16], &IP6_B.octets());
        assert_eq!(&icmp.data()[16..18], &[2, 1]);
        assert_eq!(&icmp.data()[18..24], &MAC_B.0);
    }

    /// Asserts that `ours` and the kernel's advertisement agree on the flags, target and
    /// option (and on everything else, which they do for the captured exchanges).
    fn assert_matches_kernel(ours: &[u8], kernel: &[u8]) {
        assert_eq!(kernel.len(), ours.len());
        let flags = 54 + 4..54 + 8;
        assert_eq!(ours[flags.clone()], kernel[flags], "flags and reserved");
        assert_eq!(ours[62..78], kernel[62..78], "target");
        assert_eq!(
            ours[78..86],
            kernel[78..86],
            "target link-layer address option"
        );
        assert_eq!(ours, kernel, "whole frame");
    }

    #[test]
    fn advertisement_equals_the_kernels() {
        let ns = fixture("neigh/ns.hex");
        let kernel = fixture("neigh/na.hex");
        let ours = answer_b(&ns, 0, 0).expect("answers the captured solicitation");
        check_advertisement(&ours, MAC_A, IP6_A, FLAG_SOLICITED | FLAG_OVERRIDE);
        check_advertisement(&kernel, MAC_A, IP6_A, FLAG_SOLICITED | FLAG_OVERRIDE);
        assert_matches_kernel(&ours, &kernel);
    }

    #[test]
    fn dad_advertisement_equals_the_kernels() {
        let ns = fixture("neigh/ns-dad.hex");
        let kernel = fixture("neigh/na-dad.hex");
        let ours = answer_b(&ns, 0, 0).expect("answers the captured DAD solicitation");
        check_advertisement(&ours, ALL_NODES_MAC, ALL_NODES, FLAG_OVERRIDE);
        check_advertisement(&kernel, ALL_NODES_MAC, ALL_NODES, FLAG_OVERRIDE);
        assert_matches_kernel(&ours, &kernel);
    }

    #[test]
    fn advertisement_needs_room_after_a_short_solicitation() {
        // A unicast solicitation without options (78 bytes) gets an 86-byte answer.
        let mut ns = fixture("neigh/ns.hex");
        ns[..6].copy_from_slice(&MAC_B.0);
        ns[38..54].copy_from_slice(&IP6_B.octets());
        ns[18..20].copy_from_slice(&24u16.to_be_bytes());
        ns.truncate(78);
        fix_icmpv6_checksum(&mut ns);
        for room in 0..8 {
            assert_eq!(answer_b(&ns, 0, room), None, "room {room}");
        }
        let ours = answer_b(&ns, 3, 8).unwrap();
        // No source link-layer option: the answer goes to the Ethernet source.
        check_advertisement(&ours, MAC_A, IP6_A, FLAG_SOLICITED | FLAG_OVERRIDE);
        assert_matches_kernel(&ours, &fixture("neigh/na.hex"));
    }

    #[test]
    fn advertisement_goes_to_the_source_link_layer_address() {
        let mut ns = fixture("neigh/ns.hex");
        let other = EthernetAddress([0x02, 0, 0, 0, 0, 0x99]);
        ns[80..86].copy_from_slice(&other.0);
        fix_icmpv6_checksum(&mut ns);
        let ours = answer_b(&ns, 0, 0).unwrap();
        check_advertisement(&ours, other, IP6_A, FLAG_SOLICITED | FLAG_OVERRIDE);
        // Ethernet padding after the packet is ignored.
        let mut padded = fixture("neigh/ns.hex");
        padded.extend_from_slice(&[0; 10]);
        let ours = answer_b(&padded, 0, 0).unwrap();
        assert_eq!(ours, fixture("neigh/na.hex"));
    }

    #[test]
    fn solicitations_not_answered() {
        let ns = fixture("neigh/ns.hex");
        let dad = fixture("neigh/ns-dad.hex");
        let edit = |base: &[u8], at: usize, bytes: &[u8], fix: bool| {
            let mut r = base.to_vec();
            r[at..at + bytes.len()].copy_from_slice(bytes);
            if fix {
                fix_icmpv6_checksum(&mut r);
            }
            r
        };
        let other6 = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 3).octets();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("hop limit 64", edit(&ns, 21, &[64], false)),
            ("hop limit 254", edit(&ns, 21, &[254], false)),
            ("bad checksum", edit(&ns, 56, &[0, 0], false)),
            ("code 1", edit(&ns, 55, &[1], true)),
            ("an advertisement", fixture("neigh/na.hex")),
            ("for another target", edit(&ns, 62, &other6, true)),
            ("to another unicast address", edit(&ns, 38, &other6, true)),
            ("to all-nodes", edit(&ns, 38, &ALL_NODES.octets(), true)),
            (
                "from a multicast source",
                edit(&ns, 22, &ALL_NODES.octets(), true),
            ),
            ("from our own address", edit(&ns, 22, &IP6_B.octets(), true)),
            ("zero-length option", edit(&ns, 79, &[0], true)),
            ("option past the end", edit(&ns, 79, &[2], true)),
            (
                "multicast link-layer option",
                edit(&ns, 80, &[0x33, 0x33], true),
            ),
            ("our own link-layer option", edit(&ns, 80, &MAC_B.0, true)),
            ("next header UDP", edit(&ns, 20, &[17], false)),
            ("IPv4 version", edit(&ns, 14, &[0x45], false)),
            ("payload length too long", edit(&ns, 18, &[0, 33], false)),
            ("sent to someone else", edit(&ns, 0, &MAC_A.0, false)),
            (
                "from a multicast MAC",
                edit(&ns, 6, &[0x33, 0x33, 0, 0, 0, 1], false),
            ),
            ("from our own MAC", edit(&ns, 6, &MAC_B.0, false)),
            (
                "DAD to our unicast address",
                edit(&dad, 38, &IP6_B.octets(), true),
            ),
            (
                "DAD with a source link-layer option",
                edit(&dad, 78, &[1], true),
            ),
            ("DAD with a zero-length option", edit(&dad, 79, &[0], true)),
        ];
        for (what, frame) in &cases {
            assert_eq!(answer_b(frame, 0, 64), None, "{what}");
        }
        // Message shorter than a solicitation (but a consistent IPv6 packet).
        let mut short = edit(&ns, 18, &[0, 20], false);
        short.truncate(74);
        fix_icmpv6_checksum(&mut short);
        assert_eq!(answer_b(&short, 0, 64), None, "20-byte message");
        for n in 0..ns.len() {
            assert_eq!(answer_b(&ns[..n], 0, 64), None, "truncated to {n}");
        }
        // No IPv6 address configured.
        let mut buf = ns.clone();
        assert_eq!(answer(&mut buf, 0, ns.len(), MAC_B, Some(IP_B), None), None);
    }

    #[test]
    fn ranges_outside_the_buffer() {
        let ns = fixture("neigh/ns.hex");
        let mut buf = ns.clone();
        let n = buf.len();
        assert_eq!(answer(&mut buf, 1, n, MAC_B, Some(IP_B), Some(IP6_B)), None);
        assert_eq!(
            answer(&mut buf, usize::MAX, 2, MAC_B, Some(IP_B), Some(IP6_B)),
            None
        );
        assert_eq!(
            answer(&mut buf, n + 1, 0, MAC_B, Some(IP_B), Some(IP6_B)),
            None
        );
        assert_eq!(answer(&mut [], 0, 0, MAC_B, Some(IP_B), Some(IP6_B)), None);
        assert_eq!(buf, ns);
    }

    #[test]
    fn solicited_node_address() {
        assert_eq!(
            solicited_node(&"fd00:198:18::1:2345:6789".parse().unwrap()),
            "ff02::1:ff45:6789".parse::<Ipv6Addr>().unwrap()
        );
    }

    /// A xorshift64 generator seeded with `x` (not zero): the junk tests' bytes.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn random_junk_never_panics() {
        let seeds = [
            fixture("neigh/arp-request.hex"),
            fixture("neigh/ns.hex"),
            fixture("neigh/ns-dad.hex"),
        ];
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut answered = 0;
        for i in 0..30_000 {
            let r = next();
            let mut frame = if i % 4 == 0 {
                (0..(r % 100) as usize).map(|_| next() as u8).collect()
            } else {
                seeds[(r % 3) as usize].clone()
            };
            // Flip a few bytes, sometimes truncate.
            for _ in 0..(r >> 8) % 4 {
                if !frame.is_empty() {
                    let at = next() as usize % frame.len();
                    frame[at] = next() as u8;
                }
            }
            if (r >> 16) % 5 == 0 {
                frame.truncate(next() as usize % (frame.len() + 1));
            }
            let head = ((r >> 24) % 4) as usize;
            let room = ((r >> 32) % 16) as usize;
            let mut buf = vec![0u8; head + frame.len() + room];
            buf[head..head + frame.len()].copy_from_slice(&frame);
            let len = frame.len().saturating_sub(((r >> 40) % 3) as usize);
            if let Some(out) = answer(&mut buf, head, len, MAC_B, Some(IP_B), Some(IP6_B)) {
                answered += 1;
                assert!(out.end <= buf.len() && out.start == head);
            }
        }
        assert!(
            answered > 0,
            "the seeds with few changes are still answered"
        );
    }

    /// Proxies `frame` with a table that knows `known`, with `room` spare bytes after it;
    /// checks nothing outside the answer is written, and that a `None` leaves the buffer
    /// alone. Returns the answer and the addresses `lookup` was asked for.
    fn proxy_with(
        frame: &[u8],
        room: usize,
        known: &[(IpAddr, EthernetAddress)],
    ) -> (Option<Vec<u8>>, Vec<IpAddr>) {
        let head = 5;
        let mut buf = vec![0xeeu8; head + frame.len() + room];
        buf[head..head + frame.len()].copy_from_slice(frame);
        let before = buf.clone();
        let mut asked = Vec::new();
        let lookup = |ip: IpAddr| {
            asked.push(ip);
            known.iter().find(|(k, _)| *k == ip).map(|(_, m)| *m)
        };
        let got = match proxy(&mut buf, head, frame.len(), lookup) {
            Some(r) => {
                assert_eq!(r.start, head);
                assert!(buf[..head].iter().all(|&b| b == 0xee), "wrote before start");
                let tail = r.end.max(head + frame.len());
                assert!(
                    buf[tail..].iter().all(|&b| b == 0xee),
                    "wrote past the answer"
                );
                Some(buf[r].to_vec())
            }
            None => {
                assert_eq!(buf, before, "modified the buffer without answering");
                None
            }
        };
        (got, asked)
    }

    /// The table of a proxy that knows B's addresses.
    fn knows_b() -> Vec<(IpAddr, EthernetAddress)> {
        vec![(IpAddr::V4(IP_B), MAC_B), (IpAddr::V6(IP6_B), MAC_B)]
    }

    #[test]
    fn proxy_answers_arp_as_the_owner_would() {
        let request = fixture("neigh/arp-request.hex");
        let (ours, asked) = proxy_with(&request, 0, &knows_b());
        let ours = ours.expect("B's address is in the table");
        assert_eq!(asked, [IpAddr::V4(IP_B)], "one lookup, for the target");
        assert_eq!(ours.len(), 42);
        let f = ethernet::Frame::new_checked(&ours[..]).unwrap();
        assert_eq!((f.dst_addr(), f.src_addr()), (MAC_A, MAC_B));
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        let p = arp::Packet::new_checked(f.payload()).unwrap();
        assert_eq!(p.operation(), arp::OP_REPLY);
        assert_eq!(p.sender_hardware_addr(), MAC_B);
        assert_eq!(p.sender_protocol_addr(), IP_B);
        assert_eq!(p.target_hardware_addr(), MAC_A);
        assert_eq!(p.target_protocol_addr(), IP_A);
        // Byte for byte what B's kernel answered itself.
        assert_eq!(ours, fixture("neigh/arp-reply.hex"));
        // Padded to 60 bytes: the reply is still 42.
        let mut padded = request.clone();
        padded.resize(60, 0);
        let (ours, _) = proxy_with(&padded, 0, &knows_b());
        assert_eq!(ours.unwrap(), fixture("neigh/arp-reply.hex"));
        // Unicast to the owner's MAC (a cache entry being revalidated) is answered too.
        let mut unicast = request.clone();
        unicast[..6].copy_from_slice(&MAC_B.0);
        assert!(proxy_with(&unicast, 0, &knows_b()).0.is_some());
    }

    #[test]
    fn proxy_leaves_unknown_addresses_probes_and_owners_alone() {
        let request = fixture("neigh/arp-request.hex");
        let edit = |at: usize, bytes: &[u8]| {
            let mut r = request.clone();
            r[at..at + bytes.len()].copy_from_slice(bytes);
            r
        };
        // An address the table does not know: asked, not answered (the request is flooded).
        let (ours, asked) = proxy_with(&edit(38, &[198, 18, 0, 3]), 64, &knows_b());
        assert_eq!(
            (ours, asked),
            (None, vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3))])
        );
        let (ours, _) = proxy_with(&request, 64, &[]);
        assert_eq!(ours, None, "an empty table answers nothing");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("an ARP probe (RFC 5227)", edit(28, &[0, 0, 0, 0])),
            ("gratuitous", edit(28, &[198, 18, 0, 2])),
            ("a reply", fixture("neigh/arp-reply.hex")),
            ("sent to another unicast MAC", edit(0, &MAC_A.0)),
            ("from the owner's MAC", edit(6, &MAC_B.0)),
            ("sender hardware address the owner's", edit(22, &MAC_B.0)),
            ("from a multicast MAC", edit(6, &[0x01, 0, 0x5e, 0, 0, 1])),
            ("sender hardware zero", edit(22, &[0; 6])),
            ("sender IP broadcast", edit(28, &[255; 4])),
        ];
        for (what, frame) in &cases {
            assert_eq!(proxy_with(frame, 64, &knows_b()).0, None, "{what}");
        }
        // Targets that are never resolved are not even looked up.
        for target in [
            [0, 0, 0, 0],
            [224, 0, 0, 1],
            [255, 255, 255, 255],
            [127, 0, 0, 1],
        ] {
            let frame = edit(38, &target);
            let known = [(IpAddr::V4(Ipv4Addr::from(target)), MAC_B)];
            let (ours, asked) = proxy_with(&frame, 64, &known);
            assert_eq!((ours, asked), (None, vec![]), "target {target:?}");
        }
        // A table entry with a MAC that cannot be anyone's is not advertised.
        for mac in [
            EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]),
            EthernetAddress::default(),
        ] {
            let (ours, _) = proxy_with(&request, 64, &[(IpAddr::V4(IP_B), mac)]);
            assert_eq!(ours, None, "{mac}");
        }
        for n in 0..request.len() {
            assert_eq!(
                proxy_with(&request[..n], 64, &knows_b()).0,
                None,
                "truncated to {n}"
            );
        }
    }

    #[test]
    fn proxy_answers_a_solicitation_with_the_owners_link_layer_address() {
        let ns = fixture("neigh/ns.hex");
        let (ours, asked) = proxy_with(&ns, 0, &knows_b());
        let ours = ours.expect("B's IPv6 address is in the table");
        assert_eq!(asked, [IpAddr::V6(IP6_B)]);
        // From B's address and MAC, to A (its source link-layer option), Solicited and
        // Override, the target link-layer option B's MAC, a valid checksum.
        check_advertisement(&ours, MAC_A, IP6_A, FLAG_SOLICITED | FLAG_OVERRIDE);
        assert_matches_kernel(&ours, &fixture("neigh/na.hex"));
        // A unicast solicitation without options (78 bytes): the 86-byte answer needs the
        // room after it, and without that room nothing is written.
        let mut short = ns.clone();
        short[..6].copy_from_slice(&MAC_B.0);
        short[38..54].copy_from_slice(&IP6_B.octets());
        short[18..20].copy_from_slice(&24u16.to_be_bytes());
        short.truncate(78);
        fix_icmpv6_checksum(&mut short);
        for room in 0..8 {
            assert_eq!(proxy_with(&short, room, &knows_b()).0, None, "room {room}");
        }
        let ours = proxy_with(&short, 8, &knows_b()).0.unwrap();
        check_advertisement(&ours, MAC_A, IP6_A, FLAG_SOLICITED | FLAG_OVERRIDE);
    }

    #[test]
    fn proxy_leaves_duplicate_address_detection_and_bad_solicitations_alone() {
        let ns = fixture("neigh/ns.hex");
        let edit = |base: &[u8], at: usize, bytes: &[u8], fix: bool| {
            let mut r = base.to_vec();
            r[at..at + bytes.len()].copy_from_slice(bytes);
            if fix {
                fix_icmpv6_checksum(&mut r);
            }
            r
        };
        let other6 = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 3);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            // The owner may be the prober: only it may defend its address.
            ("duplicate address detection", fixture("neigh/ns-dad.hex")),
            (
                "for an unknown target",
                edit(&ns, 62, &other6.octets(), true),
            ),
            ("hop limit 64", edit(&ns, 21, &[64], false)),
            ("bad checksum", edit(&ns, 56, &[0, 0], false)),
            ("an advertisement", fixture("neigh/na.hex")),
            ("sent to another unicast MAC", edit(&ns, 0, &MAC_A.0, false)),
            ("from the owner's MAC", edit(&ns, 6, &MAC_B.0, false)),
            (
                "the owner's link-layer option",
                edit(&ns, 80, &MAC_B.0, true),
            ),
            (
                "from the target address",
                edit(&ns, 22, &IP6_B.octets(), true),
            ),
            ("zero-length option", edit(&ns, 79, &[0], true)),
        ];
        for (what, frame) in &cases {
            assert_eq!(proxy_with(frame, 64, &knows_b()).0, None, "{what}");
        }
        // The same DAD probe is answered for this host's own address (the kernel does).
        assert!(answer_b(&fixture("neigh/ns-dad.hex"), 0, 0).is_some());
        for n in 0..ns.len() {
            assert_eq!(
                proxy_with(&ns[..n], 64, &knows_b()).0,
                None,
                "truncated to {n}"
            );
        }
    }

    #[test]
    fn bindings_come_from_arp_and_advertisements_only() {
        let request = fixture("neigh/arp-request.hex");
        assert_eq!(binding(&request), Some((IpAddr::V4(IP_A), MAC_A)));
        assert_eq!(
            binding(&fixture("neigh/arp-reply.hex")),
            Some((IpAddr::V4(IP_B), MAC_B))
        );
        assert_eq!(
            binding(&fixture("neigh/na.hex")),
            Some((IpAddr::V6(IP6_B), MAC_B))
        );
        let edit = |base: &[u8], at: usize, bytes: &[u8]| {
            let mut r = base.to_vec();
            r[at..at + bytes.len()].copy_from_slice(bytes);
            r
        };
        let na = fixture("neigh/na.hex");
        let mut na_other_option = edit(&na, 80, &MAC_A.0);
        fix_icmpv6_checksum(&mut na_other_option);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("an ARP probe", edit(&request, 28, &[0, 0, 0, 0])),
            (
                "sender hardware address not the source",
                edit(&request, 22, &MAC_B.0),
            ),
            ("sender IP multicast", edit(&request, 28, &[224, 0, 0, 1])),
            ("a solicitation", fixture("neigh/ns.hex")),
            (
                "an advertisement with a bad checksum",
                edit(&na, 56, &[0, 0]),
            ),
            ("an advertisement hop limit 64", edit(&na, 21, &[64])),
            ("target option not the source", na_other_option),
            (
                "from a multicast MAC",
                edit(&request, 6, &[0x01, 0, 0x5e, 0, 0, 1]),
            ),
        ];
        for (what, frame) in &cases {
            assert_eq!(binding(frame), None, "{what}");
        }
        for n in 0..na.len() {
            assert_eq!(binding(&na[..n]), None, "truncated to {n}");
        }
    }

    #[test]
    fn proxying_random_junk_never_panics() {
        let seeds = [
            fixture("neigh/arp-request.hex"),
            fixture("neigh/ns.hex"),
            fixture("neigh/na.hex"),
        ];
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let mut answered = 0;
        for _ in 0..20_000 {
            let r = next();
            let mut frame = seeds[(r % 3) as usize].clone();
            for _ in 0..(r >> 8) % 3 {
                let at = next() as usize % frame.len();
                frame[at] = next() as u8;
            }
            if (r >> 16) % 5 == 0 {
                frame.truncate(next() as usize % (frame.len() + 1));
            }
            let room = ((r >> 32) % 12) as usize;
            let mut buf = vec![0u8; frame.len() + room];
            buf[..frame.len()].copy_from_slice(&frame);
            let _ = binding(&frame);
            if let Some(out) = proxy(&mut buf, 0, frame.len(), |_| Some(MAC_B)) {
                answered += 1;
                assert!(out.end <= buf.len() && out.start == 0);
            }
        }
        assert!(
            answered > 0,
            "the seeds with few changes are still answered"
        );
    }
}
