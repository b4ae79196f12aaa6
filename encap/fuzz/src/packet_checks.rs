//! The properties of the `icmp`, `neigh`, `flannel` and `vxlan` fuzz targets, shared with
//! weft-encap's stable replay test (`encap/src/fuzz_replay.rs` includes this file), so CI
//! runs them without nightly.
//!
//! The including module's parent must have `encap` in scope: the weft-encap crate (`use
//! weft_encap as encap;` in a fuzz target, `use crate as encap;` inside weft-encap).
//! Allocation and panics are fine here: this is the test oracle, not the data path.
//!
//! Each check holds a *reference* of the decision under test, written from the module docs
//! of `icmp.rs`, `neigh.rs`, `flannel.rs` and `vxlan.rs` (routing by a linear longest-prefix
//! match, the rate limits by token buckets of its own), and compares the result with it
//! whole: the same `Option<Range>` or the same `Verdict`. Then the bytes the result points
//! at are checked field by field (valid ICMP errors with correct checksums quoting the
//! offender, ARP replies and neighbour advertisements built byte by byte, encapsulations,
//! TTL decrements that keep the IPv4 checksum valid), and every byte outside them is checked
//! to be untouched.

use core::ops::Range;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use super::encap::backend::{Backend, PacketBuf};
use super::encap::fdb::FdbConfig;
use super::encap::flannel::{FlannelBackend, FlannelConfig};
use super::encap::flowhash;
use super::encap::icmp::{self, IcmpErrorKind, IcmpResponder, IcmpTo};
use super::encap::neigh;
use super::encap::ratelimit::TokenBucket;
use super::encap::table::{Cidr, Route, SubnetTable, TableSpec};
use super::encap::verdict::{DropReason, Verdict};
use super::encap::vxlan::{
    VniConfig, VxlanBackend, VxlanConfig, VxlanMode, NEIGH_ANSWER_BURST, NEIGH_ANSWER_RATE,
};
use super::encap::wire::checksum;
use super::encap::wire::ethernet::EthernetAddress;
use super::encap::wire::{icmpv4, icmpv6, ipv4, ipv6};

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac(b: &[u8]) -> EthernetAddress {
    EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]])
}

fn ip4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn ip6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Reads a fuzz input front to back; past the end every byte is 0.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// ICMP errors
// ---------------------------------------------------------------------------------------

/// Whether `icmp::may_answer` must allow an error about `p` (its docs: RFC 1122 3.2.2,
/// RFC 1812 4.3.2.7, RFC 4443 2.4(e)).
fn expected_may_answer(p: &[u8]) -> bool {
    match p.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(ip) = ipv4::Packet::new_checked(p) else {
                return false;
            };
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            if ip.frag_offset_units() != 0
                || s.is_unspecified()
                || s.is_loopback()
                || s.is_multicast()
                || s.octets()[0] >= 240
                || d.is_multicast()
                || d.is_broadcast()
            {
                return false;
            }
            if ip.protocol() == 1 {
                // Not about an ICMP error, nor a message too short to tell.
                return ip
                    .payload()
                    .first()
                    .is_some_and(|t| !matches!(t, 3 | 4 | 5 | 11 | 12));
            }
            true
        }
        Some(6) => {
            let Ok(ip) = ipv6::Packet::new_checked(p) else {
                return false;
            };
            let s = ip.src_addr();
            if s.is_unspecified() || s.is_multicast() || s.is_loopback() {
                return false;
            }
            let payload = ip.payload();
            match ip.next_header() {
                58 => payload.first().is_some_and(|&t| t >= 128),
                44 => payload.len() >= 8 && rd16(payload, 2) >> 3 == 0,
                _ => true,
            }
        }
        _ => false,
    }
}

/// What `icmp::write_error` must return (its docs): the error's range, or `None`.
fn expected_write_error(
    buf: &[u8],
    start: usize,
    len: usize,
    src: IpAddr,
    kind: IcmpErrorKind,
) -> Option<Range<usize>> {
    let off = buf.get(start..start.checked_add(len)?)?;
    if !expected_may_answer(off) {
        return None;
    }
    match (off[0] >> 4, src) {
        (4, IpAddr::V4(_)) => {
            let first = start.checked_sub(28)?;
            let p = ipv4::Packet::new_checked(off).ok()?;
            Some(first..start + usize::from(p.total_len()).min(576 - 28))
        }
        (6, IpAddr::V6(_)) => {
            let first = start.checked_sub(48)?;
            let p = ipv6::Packet::new_checked(off).ok()?;
            let too_big = matches!(kind, IcmpErrorKind::TooBig { .. });
            if p.dst_addr().is_multicast() && !too_big {
                return None;
            }
            Some(first..start + p.total_len().min(1280 - 48))
        }
        _ => None,
    }
}

/// (type, code, rest of header) of error `kind` over IPv4 (`v6` false) or IPv6.
fn icmp_fields(kind: IcmpErrorKind, v6: bool) -> (u8, u8, u32) {
    match (kind, v6) {
        (IcmpErrorKind::NetUnreachable, false) => (3, 0, 0),
        (IcmpErrorKind::TimeExceeded, false) => (11, 0, 0),
        (IcmpErrorKind::TooBig { mtu }, false) => (3, 4, mtu.min(65535)),
        (IcmpErrorKind::NetUnreachable, true) => (1, 0, 0),
        (IcmpErrorKind::TimeExceeded, true) => (3, 0, 0),
        (IcmpErrorKind::TooBig { mtu }, true) => (2, 0, mtu),
        (IcmpErrorKind::AdminProhibited, false) => (3, 13, 0),
        (IcmpErrorKind::AdminProhibited, true) => (1, 1, 0),
        // The enum is non-exhaustive outside weft-encap (this file is also built in it).
        #[allow(unreachable_patterns)]
        _ => unreachable!("an IcmpErrorKind these checks do not know"),
    }
}

/// Checks that `error` is error `kind` from `src` about `offender` (the offender's bytes as
/// they were before the error was written over its headroom): IP header, ICMP header,
/// both checksums, the quote, the size limit.
fn check_icmp_error(error: &[u8], offender: &[u8], src: IpAddr, kind: IcmpErrorKind) {
    match src {
        IpAddr::V4(src) => {
            let ip = ipv4::Packet::new_checked(error).expect("the error parses as IPv4");
            let off = ipv4::Packet::new_checked(offender).expect("the offender parses");
            assert_eq!(usize::from(ip.total_len()), error.len());
            assert!(error.len() <= 576);
            assert_eq!(ip.header_len(), 20);
            assert!(ip.verify_checksum(), "IPv4 header checksum of the error");
            assert_eq!(
                (ip.protocol(), ip.ttl(), ip.ident(), ip.tos()),
                (1, 64, 0, 0)
            );
            assert!(!ip.dont_frag() && !ip.is_fragment());
            assert_eq!((ip.src_addr(), ip.dst_addr()), (src, off.src_addr()));
            let m = icmpv4::Packet::new_checked(ip.payload()).expect("ICMP header");
            assert!(m.verify_checksum(), "ICMP checksum of the error");
            assert_eq!(
                (m.msg_type(), m.code(), m.rest_of_header()),
                icmp_fields(kind, false)
            );
            let quote = usize::from(off.total_len()).min(548);
            assert_eq!(m.data(), &offender[..quote], "the quote");
        }
        IpAddr::V6(src) => {
            let ip = ipv6::Packet::new_checked(error).expect("the error parses as IPv6");
            let off = ipv6::Packet::new_checked(offender).expect("the offender parses");
            assert_eq!(ip.total_len(), error.len());
            assert!(error.len() <= 1280);
            assert_eq!((ip.next_header(), ip.hop_limit()), (58, 64));
            assert_eq!((ip.traffic_class(), ip.flow_label()), (0, 0));
            assert_eq!((ip.src_addr(), ip.dst_addr()), (src, off.src_addr()));
            let m = icmpv6::Packet::new_checked(ip.payload()).expect("ICMPv6 header");
            assert!(
                m.verify_checksum(&ip.src_addr(), &ip.dst_addr()),
                "ICMPv6 checksum of the error"
            );
            assert_eq!(
                (m.msg_type(), m.code(), m.rest_of_header()),
                icmp_fields(kind, true)
            );
            let quote = off.total_len().min(1232);
            assert_eq!(m.data(), &offender[..quote], "the quote");
        }
    }
    assert!(
        !icmp::may_answer(error),
        "an error weft sent would be answered"
    );
}

/// Asserts `now` equals `was` outside `range`.
fn untouched_outside(now: &[u8], was: &[u8], range: &Range<usize>) {
    assert_eq!(now.len(), was.len());
    assert_eq!(
        &now[..range.start],
        &was[..range.start],
        "wrote before the range"
    );
    assert_eq!(
        &now[range.end..],
        &was[range.end..],
        "wrote after the range"
    );
}

/// Fuzz input: `[sel, head, tail, mtu(4), flags, offender...]`: `sel % 3` is the kind (net
/// unreachable, time exceeded, too big with `mtu`), `(sel >> 2) & 3` the source (IPv4 or
/// IPv6, so both families meet both kinds of offender); `head % 80` bytes of headroom and
/// `tail % 16` of tailroom around the offender; `flags & 3` = 2 claims one byte more than
/// the offender, 3 half of it; `flags & 4` starts past the buffer; `flags & 8` answers
/// a peer rather than the device.
///
/// `write_error` returns exactly what its docs say (`expected_write_error`), writes a valid
/// error there and nothing elsewhere, nothing at all on `None`; `may_answer` agrees with
/// its docs; `IcmpResponder::error` gives the same result once per second per direction,
/// counts what it suppressed, and never takes the other direction's budget.
pub fn check_icmp(data: &[u8]) {
    let mut input = Input(data);
    let sel = input.byte();
    let head = usize::from(input.byte() % 80);
    let tail = usize::from(input.byte() % 16);
    let mtu = u32::from_be_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
    let flags = input.byte();
    let offender = input.rest();
    let kind = match sel % 4 {
        0 => IcmpErrorKind::NetUnreachable,
        1 => IcmpErrorKind::TimeExceeded,
        2 => IcmpErrorKind::AdminProhibited,
        _ => IcmpErrorKind::TooBig { mtu },
    };
    let src = [
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(100, 96, 1, 0)),
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
    ][usize::from(sel >> 2) & 3];
    let mut buf = vec![0xa5u8; head];
    buf.extend_from_slice(offender);
    buf.extend(std::iter::repeat_n(0x5a, tail));
    let len = match flags & 3 {
        2 => offender.len() + 1,
        3 => offender.len() / 2,
        _ => offender.len(),
    };
    let start = if flags & 4 != 0 { buf.len() + 1 } else { head };
    let off = buf.get(start..start + len);
    if let Some(off) = off {
        assert_eq!(
            icmp::may_answer(off),
            expected_may_answer(off),
            "may_answer"
        );
    }
    let answerable = off.is_some_and(icmp::may_answer);

    let expected = expected_write_error(&buf, start, len, src, kind);
    let mut b1 = buf.clone();
    let got = icmp::write_error(&mut b1, start, len, src, kind);
    assert_eq!(got, expected, "write_error");
    match &got {
        None => assert_eq!(b1, buf, "write_error changed the buffer and returned None"),
        Some(r) => {
            untouched_outside(&b1, &buf, r);
            check_icmp_error(&b1[r.clone()], &buf[start..start + len], src, kind);
        }
    }

    // The responder: one error per second in each direction.
    let now = u64::from(mtu) * 7;
    let (to, other) = if flags & 8 != 0 {
        (IcmpTo::Peer, IcmpTo::Device)
    } else {
        (IcmpTo::Device, IcmpTo::Peer)
    };
    let mut r = IcmpResponder::new(1, 1);
    let mut b2 = buf.clone();
    assert_eq!(r.error(&mut b2, start, len, src, kind, to, now), got);
    assert_eq!(b2, b1);
    let mut b3 = buf.clone();
    assert_eq!(r.error(&mut b3, start, len, src, kind, to, now), None);
    assert_eq!(b3, buf);
    assert_eq!(r.rate_limited(), u64::from(answerable));
    let mut b4 = buf.clone();
    assert_eq!(r.error(&mut b4, start, len, src, kind, other, now), got);
    assert_eq!(b4, b1);
    let mut b5 = buf.clone();
    assert_eq!(r.error(&mut b5, start, len, src, kind, to, now + 1000), got);
    assert_eq!(b5, b1);
}

/// The ICMP rate limits of an `IcmpResponder`, modelled: one token bucket per direction.
struct IcmpModel {
    device: TokenBucket,
    peer: TokenBucket,
}

impl IcmpModel {
    fn new(rate: u32, burst: u32) -> IcmpModel {
        IcmpModel {
            device: TokenBucket::new(rate, burst),
            peer: TokenBucket::new(rate, burst),
        }
    }

    /// What `IcmpResponder::error` must return: the rules first, then the budget.
    #[allow(clippy::too_many_arguments)]
    fn error(
        &mut self,
        buf: &[u8],
        start: usize,
        len: usize,
        src: IpAddr,
        kind: IcmpErrorKind,
        to: IcmpTo,
        now: u64,
    ) -> Option<Range<usize>> {
        let off = buf.get(start..start.checked_add(len)?)?;
        if !expected_may_answer(off) {
            return None;
        }
        let bucket = if to == IcmpTo::Device {
            &mut self.device
        } else {
            &mut self.peer
        };
        if !bucket.allow(now) {
            return None;
        }
        expected_write_error(buf, start, len, src, kind)
    }
}

// ---------------------------------------------------------------------------------------
// ARP / neighbour discovery
// ---------------------------------------------------------------------------------------

const ALL_NODES_MAC: EthernetAddress = EthernetAddress([0x33, 0x33, 0, 0, 0, 1]);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The one's complement sum of the IPv6 pseudo header and an ICMPv6 `message`.
fn icmpv6_sum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut ph = Vec::with_capacity(40 + message.len());
    ph.extend_from_slice(&src.octets());
    ph.extend_from_slice(&dst.octets());
    ph.extend_from_slice(&(message.len() as u32).to_be_bytes());
    ph.extend_from_slice(&[0, 0, 0, 58]);
    ph.extend_from_slice(message);
    checksum::fold(checksum::sum(&ph, 0))
}

/// The answer `neigh::answer` must write for the frame at `buf[start..start + len]` (its
/// module docs, rule by rule), built byte by byte; `None` if it must not answer.
fn expected_neigh_answer(
    buf: &[u8],
    start: usize,
    len: usize,
    our_mac: EthernetAddress,
    our_ip: Option<Ipv4Addr>,
    our_ip6: Option<Ipv6Addr>,
) -> Option<Vec<u8>> {
    let f = buf.get(start..start.checked_add(len)?)?;
    if f.len() < 14 {
        return None;
    }
    let (dst, src) = (mac(&f[0..6]), mac(&f[6..12]));
    if src.is_multicast() || src == our_mac {
        return None;
    }
    let room = buf.len() - start;
    let zero = EthernetAddress::default();
    match rd16(f, 12) {
        0x0806 => {
            let our_ip = our_ip?;
            if !dst.is_broadcast() && dst != our_mac {
                return None;
            }
            let a = &f[14..];
            if a.len() < 28
                || rd16(a, 0) != 1
                || rd16(a, 2) != 0x0800
                || a[4] != 6
                || a[5] != 4
                || rd16(a, 6) != 1
            {
                return None;
            }
            let (sha, spa, tpa) = (mac(&a[8..14]), ip4(&a[14..18]), ip4(&a[24..28]));
            if tpa != our_ip || spa == our_ip {
                return None;
            }
            if sha.is_multicast() || sha == zero || sha == our_mac {
                return None;
            }
            if spa.is_multicast() || spa.is_broadcast() || spa.is_loopback() {
                return None;
            }
            if room < 42 {
                return None;
            }
            let mut out = Vec::with_capacity(42);
            out.extend_from_slice(&sha.0);
            out.extend_from_slice(&our_mac.0);
            out.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
            out.extend_from_slice(&our_mac.0);
            out.extend_from_slice(&our_ip.octets());
            out.extend_from_slice(&sha.0);
            out.extend_from_slice(&spa.octets());
            Some(out)
        }
        0x86dd => {
            let our_ip6 = our_ip6?;
            if !dst.is_multicast() && dst != our_mac {
                return None;
            }
            let p = &f[14..];
            if p.len() < 40 || p[0] >> 4 != 6 {
                return None;
            }
            let plen = usize::from(rd16(p, 4));
            if 40 + plen > p.len() || p[6] != 58 || p[7] != 255 {
                return None;
            }
            let (s, d) = (ip6(&p[8..24]), ip6(&p[24..40]));
            let m = &p[40..40 + plen];
            if m.len() < 24 || m[0] != 135 || m[1] != 0 || icmpv6_sum(&s, &d, m) != 0xffff {
                return None;
            }
            let target = ip6(&m[8..24]);
            if target != our_ip6 || s.is_multicast() || s == our_ip6 {
                return None;
            }
            let unspecified = s.is_unspecified();
            if !(d == solicited_node(&target) || (d == target && !unspecified)) {
                return None;
            }
            let mut opts = &m[24..];
            let mut slla = None;
            while !opts.is_empty() {
                if opts.len() < 2 {
                    return None;
                }
                let l = usize::from(opts[1]) * 8;
                if l == 0 || l > opts.len() {
                    return None;
                }
                if opts[0] == 1 && slla.is_none() {
                    slla = Some(mac(&opts[2..8]));
                }
                opts = &opts[l..];
            }
            let (eth_dst, ip_dst, flags) = if unspecified {
                if slla.is_some() {
                    return None;
                }
                (ALL_NODES_MAC, ALL_NODES, 0x2000_0000u32)
            } else {
                let requester = slla.unwrap_or(src);
                if requester.is_multicast() || requester == our_mac {
                    return None;
                }
                (requester, s, 0x6000_0000)
            };
            if room < 86 {
                return None;
            }
            let mut msg = vec![136u8, 0, 0, 0];
            msg.extend_from_slice(&flags.to_be_bytes());
            msg.extend_from_slice(&our_ip6.octets());
            msg.extend_from_slice(&[2, 1]);
            msg.extend_from_slice(&our_mac.0);
            let c = !icmpv6_sum(&our_ip6, &ip_dst, &msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            let mut out = Vec::with_capacity(86);
            out.extend_from_slice(&eth_dst.0);
            out.extend_from_slice(&our_mac.0);
            out.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
            out.extend_from_slice(&our_ip6.octets());
            out.extend_from_slice(&ip_dst.octets());
            out.extend_from_slice(&msg);
            Some(out)
        }
        _ => None,
    }
}

/// Cross-checks an expected answer with the wire views: an ARP reply, or an IPv6 neighbour
/// advertisement whose ICMPv6 checksum verifies.
fn check_neigh_answer_parses(answer: &[u8], our_mac: EthernetAddress) {
    use super::encap::wire::{arp, ethernet};
    let f = ethernet::Frame::new_checked(answer).unwrap();
    assert_eq!(f.src_addr(), our_mac);
    if f.ethertype() == ethernet::ETHERTYPE_ARP {
        assert_eq!(answer.len(), 42);
        let a = arp::Packet::new_checked(f.payload()).unwrap();
        let r = arp::Repr::parse(&a).unwrap();
        assert_eq!(r.operation, arp::OP_REPLY);
        assert_eq!(r.target_hardware_addr, f.dst_addr());
    } else {
        assert_eq!(answer.len(), 86);
        let ip = ipv6::Packet::new_checked(f.payload()).unwrap();
        assert_eq!(ip.payload_len(), 32);
        let m = icmpv6::Packet::new_checked(ip.payload()).unwrap();
        assert!(m.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(m.msg_type(), icmpv6::TYPE_NEIGHBOR_ADVERTISEMENT);
    }
}

/// The VTEP of the `neigh` target: host B of `fixtures/neigh` (198.18.0.2, fd00:198:18::2,
/// 02:00:c6:12:00:02), so the captured requests are answered.
const NEIGH_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0xc6, 0x12, 0, 0x02]);
const NEIGH_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const NEIGH_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 2);

/// Fuzz input: `[cfg, head, tail, frame...]`: `head % 32` bytes before the frame, `tail %
/// 128` after it; `cfg` bit 0 drops the IPv4 address, bit 1 the IPv6 one, bits 6-7 add up to
/// three bytes to the claimed length (tailroom, or past the buffer).
///
/// `neigh::answer` never panics, answers exactly what its docs say with exactly the bytes
/// they describe (`expected_neigh_answer`), starting at the frame, inside the buffer, and
/// writes nothing else (nothing at all on `None`).
pub fn check_neigh(data: &[u8]) {
    let mut input = Input(data);
    let cfg = input.byte();
    let head = usize::from(input.byte() % 32);
    let tail = usize::from(input.byte() % 128);
    let frame = input.rest();
    let our_ip = (cfg & 1 == 0).then_some(NEIGH_IP);
    let our_ip6 = (cfg & 2 == 0).then_some(NEIGH_IP6);
    let len = frame.len() + usize::from(cfg >> 6);
    let mut buf = vec![0xeeu8; head];
    buf.extend_from_slice(frame);
    buf.extend(std::iter::repeat_n(0x77, tail));
    let orig = buf.clone();
    let expected = expected_neigh_answer(&orig, head, len, NEIGH_MAC, our_ip, our_ip6);
    let got = neigh::answer(&mut buf, head, len, NEIGH_MAC, our_ip, our_ip6);
    match (got, expected) {
        (None, None) => assert_eq!(buf, orig, "changed the buffer without answering"),
        (Some(r), Some(bytes)) => {
            assert_eq!(r, head..head + bytes.len());
            assert_eq!(&buf[r.clone()], &bytes[..], "the answer's bytes");
            untouched_outside(&buf, &orig, &r);
            check_neigh_answer_parses(&bytes, NEIGH_MAC);
        }
        (got, expected) => panic!("neigh::answer gave {got:?}, expected {expected:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Shared by the backends
// ---------------------------------------------------------------------------------------

/// The fields of an inner IP packet the decisions use.
struct Ip {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    len: usize,
    df: bool,
    v6: bool,
}

fn parse_ip(b: &[u8]) -> Option<Ip> {
    match b.first()? >> 4 {
        4 => {
            let p = ipv4::Packet::new_checked(b).ok()?;
            Some(Ip {
                src: p.src_addr().into(),
                dst: p.dst_addr().into(),
                ttl: p.ttl(),
                len: p.total_len().into(),
                df: p.dont_frag(),
                v6: false,
            })
        }
        6 => {
            let p = ipv6::Packet::new_checked(b).ok()?;
            Some(Ip {
                src: p.src_addr().into(),
                dst: p.dst_addr().into(),
                ttl: p.hop_limit(),
                len: p.total_len(),
                df: true,
                v6: true,
            })
        }
        _ => None,
    }
}

/// The MTU a too-big error announces for `ip` through a path with room for `room` bytes
/// (IPv4 without DF is sent; IPv6 up to 1280 bytes is sent).
fn too_big(ip: &Ip, room: usize) -> Option<IcmpErrorKind> {
    let mtu = if ip.len <= room {
        return None;
    } else if !ip.v6 {
        if !ip.df {
            return None;
        }
        room
    } else if ip.len <= 1280 {
        return None;
    } else {
        room.max(1280)
    };
    Some(IcmpErrorKind::TooBig {
        mtu: u32::try_from(mtu).unwrap_or(u32::MAX),
    })
}

/// Destinations never reached through a tunnel.
fn never_tunnelled(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_broadcast() || a.is_loopback() || a.octets()[0] == 0,
        IpAddr::V6(a) => a.is_loopback() || a.is_unspecified(),
    }
}

fn in_subnet(c: &Cidr, a: IpAddr) -> bool {
    let len = u32::from(c.prefix_len());
    match (c.addr(), a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n)
        }
        _ => false,
    }
}

/// Longest-prefix match, the linear way.
fn ref_lookup(routes: &[Route], dst: IpAddr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| in_subnet(&r.subnet, dst))
        .max_by_key(|r| r.subnet.prefix_len())
}

/// The endpoint of the peer at underlay address `ip` among `heard` endpoints.
fn ref_peer(heard: &[SocketAddr], ip: IpAddr) -> Option<SocketAddr> {
    heard.iter().copied().find(|e| e.ip() == ip)
}

/// Whether the peer at `endpoint` may use `src` as an inner source.
fn ref_owns(routes: &[Route], endpoint: SocketAddr, src: IpAddr) -> bool {
    routes
        .iter()
        .any(|r| r.endpoint == endpoint && in_subnet(&r.subnet, src))
}

/// How the bytes of the buffer must look after a verdict.
#[derive(Debug)]
enum Check {
    /// Not a byte changed.
    Unchanged,
    /// Anything (a neighbour answer written, then refused by the rate limit).
    Any,
    /// The IP packet at the range is the original with the TTL / hop limit one lower (IPv4:
    /// checksum patched); nothing else changed.
    Ttl(Range<usize>),
    /// A valid ICMP error `kind` from `src` at `range` quoting the offender at `offender`;
    /// nothing else changed.
    Icmp {
        range: Range<usize>,
        offender: Range<usize>,
        src: IpAddr,
        kind: IcmpErrorKind,
    },
    /// Exactly `bytes` at `range`; nothing else changed.
    Bytes { range: Range<usize>, bytes: Vec<u8> },
}

fn apply_check(check: &Check, buf: &[u8], orig: &[u8]) {
    match check {
        Check::Unchanged => assert_eq!(buf, orig, "the buffer changed"),
        Check::Any => {}
        Check::Ttl(r) => {
            untouched_outside(buf, orig, r);
            check_ttl_decrement(&buf[r.clone()], &orig[r.clone()]);
        }
        Check::Icmp {
            range,
            offender,
            src,
            kind,
        } => {
            untouched_outside(buf, orig, range);
            check_icmp_error(&buf[range.clone()], &orig[offender.clone()], *src, *kind);
        }
        Check::Bytes { range, bytes } => {
            untouched_outside(buf, orig, range);
            assert_eq!(&buf[range.clone()], &bytes[..], "the verdict's bytes");
        }
    }
}

/// `now` is `was` (an IP packet with TTL > 1) with its TTL / hop limit lowered by one; an
/// IPv4 checksum that was valid still is, and equals a recomputation if it was the
/// computed one (RFC 1624 eqn. 3).
fn check_ttl_decrement(now: &[u8], was: &[u8]) {
    let ip = parse_ip(was).expect("forwarded packets parse");
    assert_eq!(ip.len, was.len());
    if ip.v6 {
        assert_eq!(now[7], was[7] - 1, "hop limit");
        assert_eq!((&now[..7], &now[8..]), (&was[..7], &was[8..]));
        return;
    }
    assert_eq!(now[8], was[8] - 1, "TTL");
    assert_eq!(
        (&now[..8], now[9], &now[12..]),
        (&was[..8], was[9], &was[12..])
    );
    let hl = usize::from(was[0] & 0x0f) * 4;
    if checksum::checksum(&was[..hl]) == 0 {
        assert_eq!(checksum::checksum(&now[..hl]), 0, "the checksum broke");
        let recomputed = |h: &[u8]| {
            let mut h = h.to_vec();
            h[10..12].fill(0);
            checksum::checksum(&h)
        };
        if recomputed(&was[..hl]) == rd16(was, 10) {
            assert_eq!(
                recomputed(&now[..hl]),
                rd16(now, 10),
                "RFC 1624 != recomputed"
            );
        }
    }
}

/// Every range a verdict carries lies inside the buffer.
fn check_range(v: &Verdict, buf_len: usize) {
    if let Some(r) = v.range() {
        assert!(
            r.start <= r.end && r.end <= buf_len,
            "{v:?} outside a buffer of {buf_len}"
        );
    }
}

/// One packet of a backend input: `[op, aux, len_hi, len_lo, bytes...]`.
///
/// `op`: bit 0 datagram (else device packet); bit 1 backend-specific; bits 2-4 headroom
/// (`HEADS`); bits 5-6 tailroom (`TAILS`); bit 7 backend-specific. `aux`: bits 0-2 the
/// source, bits 3-4 the device, bits 5-7 how far the clock moves first (x 300 ms).
struct Record<'a> {
    op: u8,
    aux: u8,
    pkt: &'a [u8],
}

const HEADS: [usize; 8] = [0, 8, 21, 22, 28, 47, 48, 64];
const TAILS: [usize; 4] = [0, 3, 64, 200];
/// At most this many packets per input.
const MAX_RECORDS: usize = 64;

impl Record<'_> {
    fn read<'a>(input: &mut Input<'a>) -> Record<'a> {
        let op = input.byte();
        let aux = input.byte();
        let len = usize::from(u16::from_be_bytes([input.byte(), input.byte()]));
        Record {
            op,
            aux,
            pkt: input.take(len),
        }
    }

    fn datagram(&self) -> bool {
        self.op & 1 != 0
    }

    fn head(&self) -> usize {
        HEADS[usize::from(self.op >> 2) & 7]
    }

    fn tail(&self) -> usize {
        TAILS[usize::from(self.op >> 5) & 3]
    }

    fn advance_ms(&self) -> u64 {
        u64::from(self.aux >> 5) * 300
    }

    /// `pkt` with the headroom and tailroom around it.
    fn buffer(&self, pkt: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xa5u8; self.head()];
        buf.extend_from_slice(pkt);
        buf.extend(std::iter::repeat_n(0x5a, self.tail()));
        buf
    }
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

// ---------------------------------------------------------------------------------------
// The flannel UDP backend
// ---------------------------------------------------------------------------------------

/// Host A's routes: LPM with nested IPv4 prefixes, IPv4 and IPv6 subnets on one peer, a
/// peer on an IPv6 underlay. fd00:100:96:3::/64 and 198.18.0.0/16 are unroutable.
fn flannel_routes() -> Vec<Route> {
    [
        ("100.96.2.0/24", "198.18.0.2"),
        ("fd00:100:96:2::/64", "198.18.0.2"),
        ("100.96.2.128/25", "198.18.0.3"),
        ("100.96.0.0/16", "198.18.0.9"),
        ("100.96.4.0/24", "fd00:198:18::4"),
        ("fd00:100:96:4::/64", "fd00:198:18::4"),
    ]
    .iter()
    .map(|(s, e)| Route {
        subnet: s.parse().unwrap(),
        endpoint: sock(e, 8285),
        vtep_mac: None,
    })
    .collect()
}

/// The underlay sources a datagram comes from (`aux & 7`, modulo): every peer and a
/// stranger.
const FLANNEL_SOURCES: [&str; 5] = [
    "198.18.0.2",
    "198.18.0.3",
    "198.18.0.9",
    "fd00:198:18::4",
    "198.18.0.99",
];

struct FlannelRef {
    config: FlannelConfig,
    routes: Vec<Route>,
    heard: Vec<SocketAddr>,
    icmp: IcmpModel,
}

impl FlannelRef {
    #[allow(clippy::too_many_arguments)]
    fn reply_to_device(
        &mut self,
        buf: &[u8],
        start: usize,
        ip: &Ip,
        kind: IcmpErrorKind,
        cause: DropReason,
        now: u64,
    ) -> (Verdict, Check) {
        match self
            .icmp
            .error(buf, start, ip.len, ip.dst, kind, IcmpTo::Device, now)
        {
            Some(range) => (
                Verdict::ReplyToDevice {
                    device: 0,
                    range: range.clone(),
                    cause,
                },
                Check::Icmp {
                    range,
                    offender: start..start + ip.len,
                    src: ip.dst,
                    kind,
                },
            ),
            None => (Verdict::Drop(cause), Check::Unchanged),
        }
    }

    /// `FlannelBackend::handle_device_packet`, from its docs.
    fn device(&mut self, buf: &[u8], start: usize, len: usize, now: u64) -> (Verdict, Check) {
        let drop = |r| (Verdict::Drop(r), Check::Unchanged);
        let Some(end) = start.checked_add(len).filter(|&e| e <= buf.len()) else {
            return drop(DropReason::Malformed);
        };
        let Some(ip) = parse_ip(&buf[start..end]) else {
            return drop(DropReason::Malformed);
        };
        let Some(dest) = ref_lookup(&self.routes, ip.dst).map(|r| r.endpoint) else {
            let kind = IcmpErrorKind::NetUnreachable;
            return self.reply_to_device(buf, start, &ip, kind, DropReason::NoRoute, now);
        };
        if ip.ttl <= 1 {
            let kind = IcmpErrorKind::TimeExceeded;
            return self.reply_to_device(buf, start, &ip, kind, DropReason::TtlExceeded, now);
        }
        if let Some(kind) = too_big(&ip, self.config.max_payload) {
            return self.reply_to_device(buf, start, &ip, kind, DropReason::TooBig, now);
        }
        let range = start..start + ip.len;
        (
            Verdict::SendToPeer {
                dest,
                range: range.clone(),
                flow: None,
            },
            Check::Ttl(range),
        )
    }

    /// `FlannelBackend::handle_datagram`, from its docs.
    fn datagram(
        &mut self,
        buf: &[u8],
        source: IpAddr,
        start: usize,
        len: usize,
        now: u64,
    ) -> (Verdict, Check) {
        let drop = |r| (Verdict::Drop(r), Check::Unchanged);
        let Some(end) = start.checked_add(len).filter(|&e| e <= buf.len()) else {
            return drop(DropReason::Malformed);
        };
        let sender = ref_peer(&self.heard, source);
        if self.config.check_peer && sender.is_none() {
            return drop(DropReason::UnknownPeer);
        }
        let Some(ip) = parse_ip(&buf[start..end]).filter(|ip| ip.len == len) else {
            return drop(DropReason::Malformed);
        };
        if self.config.check_inner_source
            && !sender.is_some_and(|e| ref_owns(&self.routes, e, ip.src))
        {
            return drop(DropReason::SpoofedSource);
        }
        if never_tunnelled(ip.dst) {
            return drop(DropReason::BadDestination);
        }
        if ip.ttl <= 1 {
            let cause = DropReason::TtlExceeded;
            let local = if ip.v6 {
                self.config.local_v6.map(IpAddr::V6)
            } else {
                self.config.local_v4.map(IpAddr::V4)
            };
            let dest = ref_lookup(&self.routes, ip.src)
                .map(|r| r.endpoint)
                .or(sender);
            let (Some(dest), Some(local)) = (dest, local) else {
                return drop(cause);
            };
            let kind = IcmpErrorKind::TimeExceeded;
            return match self
                .icmp
                .error(buf, start, ip.len, local, kind, IcmpTo::Peer, now)
            {
                Some(range) => (
                    Verdict::ReplyToPeer {
                        dest,
                        range: range.clone(),
                        cause: Some(cause),
                    },
                    Check::Icmp {
                        range,
                        offender: start..end,
                        src: local,
                        kind,
                    },
                ),
                None => drop(cause),
            };
        }
        (
            Verdict::DeliverToDevice {
                device: 0,
                range: start..end,
            },
            Check::Ttl(start..end),
        )
    }
}

/// Fuzz input: `[cfg, records...]` (see `Record`). `cfg`: bit 0 `check_peer`, bit 1
/// `check_inner_source`, bits 2-3 `max_payload` (1472, 1252, 40, 65535), bit 4 no local
/// IPv4 address, bit 5 no local IPv6 address, bit 6 a small ICMP budget (1/s, burst 2; else
/// unlimited). Record `op` bit 1 goes through the `Backend` trait (else the inherent
/// methods), bit 7 claims more bytes than the buffer holds (inherent methods only).
///
/// Both `handle_*` paths give exactly the verdict of the reference (`FlannelRef`), the
/// forwarded packet has its TTL lowered with a valid checksum, every ICMP error is valid
/// and quotes the offender, and nothing else in the buffer changes.
pub fn check_flannel(data: &[u8]) {
    let mut input = Input(data);
    let cfg = input.byte();
    let (rate, burst) = if cfg & 0x40 != 0 {
        (1, 2)
    } else {
        (u32::MAX, u32::MAX)
    };
    let config = FlannelConfig {
        local_v4: (cfg & 0x10 == 0).then(|| Ipv4Addr::new(100, 96, 1, 0)),
        local_v6: (cfg & 0x20 == 0).then(|| "fd00:100:96:1::".parse().unwrap()),
        max_payload: [1472, 1252, 40, 65535][usize::from(cfg >> 2) & 3],
        check_peer: cfg & 1 != 0,
        check_inner_source: cfg & 2 != 0,
        icmp_rate: rate,
        icmp_burst: burst,
    };
    let routes = flannel_routes();
    let table = SubnetTable::new(1, &routes).unwrap();
    let tables = [Arc::new(table.clone())];
    let mut backend = FlannelBackend::new(config.clone());
    let mut reference = FlannelRef {
        heard: routes.iter().map(|r| r.endpoint).collect(),
        config,
        routes,
        icmp: IcmpModel::new(rate, burst),
    };
    let mut now = 1_000u64;
    for _ in 0..MAX_RECORDS {
        if input.is_empty() {
            break;
        }
        let rec = Record::read(&mut input);
        now += rec.advance_ms();
        let mut buf = rec.buffer(rec.pkt);
        let orig = buf.clone();
        let start = rec.head();
        let len = if rec.op & 0x80 != 0 {
            rec.pkt.len() + rec.tail() + 1
        } else {
            rec.pkt.len()
        };
        let source: IpAddr = FLANNEL_SOURCES[usize::from(rec.aux & 7) % FLANNEL_SOURCES.len()]
            .parse()
            .unwrap();
        let via_trait = rec.op & 2 != 0 && start + len <= buf.len();
        let (expected, check) = if rec.datagram() {
            reference.datagram(&orig, source, start, len, now)
        } else {
            reference.device(&orig, start, len, now)
        };
        let got = match (rec.datagram(), via_trait) {
            (false, false) => backend.handle_device_packet(&table, &mut buf, start, len, now),
            (true, false) => backend.handle_datagram(&table, source, &mut buf, start, len, now),
            (false, true) => {
                let pkt = PacketBuf::new(&mut buf, start, len).unwrap();
                Backend::handle_device_packet(&mut backend, &tables, 0, pkt, now)
            }
            (true, true) => {
                let pkt = PacketBuf::new(&mut buf, start, len).unwrap();
                let from = SocketAddr::new(source, 40000 + u16::from(rec.aux));
                Backend::handle_datagram(&mut backend, &tables, from, pkt, now)
            }
        };
        check_range(&got, buf.len());
        assert_eq!(got, expected, "flannel verdict");
        apply_check(&check, &buf, &orig);
        if let Verdict::SendToPeer { range, .. } | Verdict::DeliverToDevice { range, .. } = &got {
            let ip = parse_ip(&buf[range.clone()]).expect("forwarded bytes are an IP packet");
            assert_eq!(ip.len, range.len());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The VXLAN backend
// ---------------------------------------------------------------------------------------

const PORT: u16 = 8472;
const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0]);
const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x02, 0]);
const MAC_D: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x04, 0]);
const MAC_F: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x06, 0]);
const MAC_TAP: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0a, 0]);
/// Pinned behind C by a static FDB entry.
const MAC_STATIC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0c, 0x01]);
/// Pinned behind E, a VTEP known only from its static entry (never heard from).
const MAC_STATIC_E: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x0e, 0x01]);
/// The capacity and ageing of the L2 VNI's learned FDB: small, so both happen.
const FDB_MAX: usize = 4;
const FDB_AGEING_MS: u64 = 1000;

/// The underlay sources a datagram comes from (`aux & 7`, modulo): B from the VXLAN port
/// and from a hashed source port, C, D, E (static FDB only), a stranger, F (IPv6 underlay).
const VX_SOURCES: [&str; 7] = [
    "198.18.0.2:8472",
    "198.18.0.2:40001",
    "198.18.0.3:51000",
    "198.18.0.4:8472",
    "198.18.0.5:8472",
    "198.18.0.99:8472",
    "[fd00:198:18::6]:8472",
];

/// What the L2 device path's wrap writes as the destination MAC (`aux >> 5`, modulo).
const L2_DESTS: [EthernetAddress; 6] = [
    MAC_STATIC,
    MAC_STATIC_E,
    MAC_A,
    MAC_B,
    EthernetAddress::BROADCAST,
    EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
];

/// The VNIs: device 0 is host A in L3 mode (fixtures/vxlan), device 1 an L2 VNI with a
/// small FDB, device 2 an L3 VNI whose VTEP is host B of fixtures/neigh (so the captured
/// ARP requests and solicitations are answered).
fn vxlan_vnis() -> Vec<VniConfig> {
    let l3 = |vni, vtep_mac, v4: &str, v6: &str| VniConfig {
        vni,
        mode: VxlanMode::L3,
        vtep_mac,
        local_v4: Some(v4.parse().unwrap()),
        local_v6: Some(v6.parse().unwrap()),
        // Unused in L3 mode; small, so that making the backend stays cheap.
        fdb: FdbConfig {
            max_entries: 1,
            ageing_ms: 0,
        },
        device: None,
    };
    vec![
        l3(1, MAC_A, "100.96.1.0", "fd00:100:96:1::"),
        VniConfig {
            vni: 2,
            mode: VxlanMode::L2,
            vtep_mac: MAC_TAP,
            local_v4: None,
            local_v6: None,
            fdb: FdbConfig {
                max_entries: FDB_MAX,
                ageing_ms: FDB_AGEING_MS,
            },
            device: None,
        },
        l3(0x12_3456, NEIGH_MAC, "198.18.0.2", "fd00:198:18::2"),
    ]
}

fn vxlan_specs() -> Vec<TableSpec> {
    let route = |s: &str, e: &str, m: Option<EthernetAddress>| Route {
        subnet: s.parse().unwrap(),
        endpoint: sock(e, PORT),
        vtep_mac: m,
    };
    vec![
        TableSpec {
            routes: vec![
                route("100.96.2.0/24", "198.18.0.2", Some(MAC_B)),
                route("fd00:100:96:2::/64", "198.18.0.2", Some(MAC_B)),
                route("100.96.3.0/24", "198.18.0.3", None),
                route("100.96.0.0/16", "198.18.0.4", Some(MAC_D)),
                route("100.96.6.0/24", "fd00:198:18::6", Some(MAC_F)),
            ],
            ..TableSpec::default()
        },
        TableSpec {
            routes: vec![],
            vteps: vec![sock("198.18.0.2", PORT), sock("198.18.0.3", PORT)],
            fdb: vec![
                (MAC_STATIC, sock("198.18.0.3", PORT)),
                (MAC_STATIC_E, sock("198.18.0.5", PORT)),
            ],
        },
        TableSpec {
            routes: vec![route("100.96.9.0/24", "198.18.0.2", Some(MAC_B))],
            ..TableSpec::default()
        },
    ]
}

fn vxlan_header(vni: u32) -> [u8; 8] {
    let b = vni.to_be_bytes();
    [0x08, 0, 0, 0, b[1], b[2], b[3], 0]
}

/// The ethertype for a packet by its first nibble (IPv4, IPv6, else ARP).
fn ethertype_of(pkt: &[u8]) -> u16 {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86dd,
        _ => 0x0806,
    }
}

struct VxlanRef {
    config: VxlanConfig,
    specs: Vec<TableSpec>,
    icmp: IcmpModel,
    neigh: TokenBucket,
}

impl VxlanRef {
    /// The endpoints of device `d`'s table that datagrams are attributed to (routes and
    /// VTEPs, not static FDB entries).
    fn heard(&self, d: usize) -> Vec<SocketAddr> {
        let s = &self.specs[d];
        s.routes
            .iter()
            .map(|r| r.endpoint)
            .chain(s.vteps.iter().copied())
            .collect()
    }

    fn static_fdb(&self, d: usize, m: &EthernetAddress) -> Option<SocketAddr> {
        self.specs[d]
            .fdb
            .iter()
            .find(|(x, _)| x == m)
            .map(|(_, e)| *e)
    }

    #[allow(clippy::too_many_arguments)]
    fn reply_to_device(
        &mut self,
        d: usize,
        buf: &[u8],
        start: usize,
        ip: &Ip,
        kind: IcmpErrorKind,
        cause: DropReason,
        now: u64,
    ) -> (Verdict, Check) {
        match self
            .icmp
            .error(buf, start, ip.len, ip.dst, kind, IcmpTo::Device, now)
        {
            Some(range) => (
                Verdict::ReplyToDevice {
                    device: d,
                    range: range.clone(),
                    cause,
                },
                Check::Icmp {
                    range,
                    offender: start..start + ip.len,
                    src: ip.dst,
                    kind,
                },
            ),
            None => (Verdict::Drop(cause), Check::Unchanged),
        }
    }

    /// `handle_device_packet` of device `d` (the module docs: L3 routes and encapsulates,
    /// L2 looks up the FDB, static entries first, and floods the rest). `fdb` is a copy of
    /// the learned FDB of `d` as it is before the call.
    #[allow(clippy::too_many_arguments)]
    fn device(
        &mut self,
        d: usize,
        fdb: Option<super::encap::fdb::Fdb>,
        buf: &[u8],
        start: usize,
        len: usize,
        now: u64,
    ) -> (Verdict, Check) {
        let drop = |r| (Verdict::Drop(r), Check::Unchanged);
        let Some(vc) = self.config.vnis.get(d).cloned() else {
            return drop(DropReason::UnknownVni);
        };
        let pkt = &buf[start..start + len];
        let hdr = vxlan_header(vc.vni);
        if vc.mode == VxlanMode::L3 {
            let Some(ip) = parse_ip(pkt) else {
                return drop(DropReason::Malformed);
            };
            let routes = self.specs[d].routes.clone();
            let Some(route) = ref_lookup(&routes, ip.dst) else {
                let kind = IcmpErrorKind::NetUnreachable;
                return self.reply_to_device(d, buf, start, &ip, kind, DropReason::NoRoute, now);
            };
            let Some(peer_mac) = routes
                .iter()
                .find(|r| r.endpoint == route.endpoint && r.vtep_mac.is_some())
                .and_then(|r| r.vtep_mac)
            else {
                return drop(DropReason::NoVtepMac);
            };
            let room = self.config.max_payload.saturating_sub(22);
            if let Some(kind) = too_big(&ip, room) {
                return self.reply_to_device(d, buf, start, &ip, kind, DropReason::TooBig, now);
            }
            if start < 22 {
                return drop(DropReason::Malformed);
            }
            let inner = &buf[start..start + ip.len];
            let mut bytes = hdr.to_vec();
            bytes.extend_from_slice(&peer_mac.0);
            bytes.extend_from_slice(&vc.vtep_mac.0);
            let et: u16 = if ip.v6 { 0x86dd } else { 0x0800 };
            bytes.extend_from_slice(&et.to_be_bytes());
            bytes.extend_from_slice(inner);
            let range = start - 22..start + ip.len;
            return (
                Verdict::SendToPeer {
                    dest: route.endpoint,
                    range: range.clone(),
                    flow: Some(flowhash::flow_hash_ip(inner)),
                },
                Check::Bytes { range, bytes },
            );
        }
        if len < 14 {
            return drop(DropReason::Malformed);
        }
        if len + 8 > self.config.max_payload {
            return drop(DropReason::TooBig);
        }
        if start < 8 {
            return drop(DropReason::Malformed);
        }
        let dst = mac(pkt);
        let flow = Some(flowhash::flow_hash(pkt));
        let range = start - 8..start + len;
        let check = Check::Bytes {
            range: range.clone(),
            bytes: [&hdr[..], pkt].concat(),
        };
        if dst.is_unicast() {
            let known = self
                .static_fdb(d, &dst)
                .or_else(|| fdb.and_then(|mut f| f.lookup(&dst, now)));
            if let Some(dest) = known {
                return (Verdict::SendToPeer { dest, range, flow }, check);
            }
        }
        (
            Verdict::Flood {
                device: d,
                range,
                flow,
            },
            check,
        )
    }

    /// `handle_datagram` (the module docs: header checks, VNI, peer, own MAC; L3 answers
    /// ARP/ND for the VTEP address, checks the inner packet and delivers it; L2 refuses a
    /// MAC pinned elsewhere, learns and delivers the frame). Also returns what must have
    /// been learned: `(device, MAC, VTEP)`.
    #[allow(clippy::type_complexity)]
    fn datagram(
        &mut self,
        buf: &[u8],
        source: SocketAddr,
        start: usize,
        len: usize,
        now: u64,
    ) -> (Verdict, Check, Option<(usize, EthernetAddress, SocketAddr)>) {
        let drop = |r| (Verdict::Drop(r), Check::Unchanged, None);
        let end = start + len;
        if len < 22 {
            return drop(DropReason::VxlanTooShort);
        }
        let h = &buf[start..end];
        if h[0] & 0x08 == 0 {
            return drop(DropReason::VxlanNoIFlag);
        }
        let vni = (u32::from(h[4]) << 16) | (u32::from(h[5]) << 8) | u32::from(h[6]);
        let Some(d) = self.config.vnis.iter().position(|v| v.vni == vni) else {
            return drop(DropReason::UnknownVni);
        };
        let sender = ref_peer(&self.heard(d), source.ip());
        if self.config.check_peer && sender.is_none() {
            return drop(DropReason::UnknownPeer);
        }
        let vc = self.config.vnis[d].clone();
        let fa = start + 8;
        let f = &buf[fa..end];
        let (dst_mac, src_mac, et) = (mac(&f[0..6]), mac(&f[6..12]), rd16(f, 12));
        if src_mac == vc.vtep_mac {
            return drop(DropReason::OwnSourceMac);
        }
        if vc.mode == VxlanMode::L2 {
            if src_mac.is_multicast() || src_mac == EthernetAddress::default() {
                return drop(DropReason::Malformed);
            }
            let pinned = self.static_fdb(d, &src_mac);
            if pinned.is_some_and(|e| e.ip() != source.ip()) {
                return drop(DropReason::SpoofedSource);
            }
            let vtep = SocketAddr::new(source.ip(), self.config.port);
            let learned = (self.config.learning && pinned.is_none()).then_some((d, src_mac, vtep));
            return (
                Verdict::DeliverToDevice {
                    device: d,
                    range: fa..end,
                },
                Check::Unchanged,
                learned,
            );
        }
        if et == 0x0806 || et == 0x86dd {
            let answer =
                expected_neigh_answer(buf, fa, end - fa, vc.vtep_mac, vc.local_v4, vc.local_v6);
            if let Some(answer) = answer {
                check_neigh_answer_parses(&answer, vc.vtep_mac);
                if !self.neigh.allow(now) {
                    return (
                        Verdict::Drop(DropReason::NeighRateLimited),
                        Check::Any,
                        None,
                    );
                }
                let range = start..fa + answer.len();
                let bytes = [&vxlan_header(vni)[..], &answer].concat();
                return (
                    Verdict::ReplyToPeer {
                        dest: SocketAddr::new(source.ip(), self.config.port),
                        range: range.clone(),
                        cause: None,
                    },
                    Check::Bytes { range, bytes },
                    None,
                );
            }
        }
        if dst_mac != vc.vtep_mac {
            return drop(DropReason::WrongDestMac);
        }
        if et != 0x0800 && et != 0x86dd {
            return drop(DropReason::UnsupportedEthertype);
        }
        let ip_at = fa + 14;
        let Some(ip) = parse_ip(&buf[ip_at..end]).filter(|ip| ip.v6 == (et == 0x86dd)) else {
            return drop(DropReason::Malformed);
        };
        if self.config.check_inner_source
            && !sender.is_some_and(|e| ref_owns(&self.specs[d].routes, e, ip.src))
        {
            return drop(DropReason::SpoofedSource);
        }
        if never_tunnelled(ip.dst) {
            return drop(DropReason::BadDestination);
        }
        (
            Verdict::DeliverToDevice {
                device: d,
                range: ip_at..ip_at + ip.len,
            },
            Check::Unchanged,
            None,
        )
    }
}

/// Fuzz input: `[cfg, records...]` (see `Record`). `cfg`: bit 0 `check_peer`, bit 1
/// `check_inner_source`, bit 2 `learning`, bits 3-4 `max_payload` (1472, 1300, 60, 65535),
/// bit 5 a small ICMP budget (1/s, burst 2; else unlimited). Record `aux` bits 3-4 pick the
/// device (3: none such); `op` bit 1 wraps the packet: a datagram gets the VXLAN header of
/// that device's VNI (and for an L3 VNI an Ethernet header, by `aux >> 5` mostly from B to
/// the VTEP MAC), a frame for the L2 device an Ethernet header to one of `L2_DESTS`; `op`
/// bit 7 runs `on_tick` first.
///
/// Both `handle_*` paths give exactly the verdict of the reference (`VxlanRef`), with
/// exactly the bytes it computes (VXLAN and Ethernet headers in front of the untouched
/// packet, ARP replies and neighbour advertisements), valid ICMP errors, nothing else
/// changed; the learned FDB stays within its bound, never holds a statically pinned MAC,
/// and has learned what it had to.
pub fn check_vxlan(data: &[u8]) {
    let mut input = Input(data);
    let cfg = input.byte();
    let (rate, burst) = if cfg & 0x20 != 0 {
        (1, 2)
    } else {
        (u32::MAX, u32::MAX)
    };
    let config = VxlanConfig {
        vnis: vxlan_vnis(),
        port: PORT,
        max_payload: [1472, 1300, 60, 65535][usize::from(cfg >> 3) & 3],
        check_peer: cfg & 1 != 0,
        check_inner_source: cfg & 2 != 0,
        learning: cfg & 4 != 0,
        proxy: false,
        neigh_learning: false,
        icmp_rate: rate,
        icmp_burst: burst,
    };
    let specs = vxlan_specs();
    let tables: Vec<Arc<SubnetTable>> = specs
        .iter()
        .map(|s| Arc::new(SubnetTable::build(1, s).unwrap()))
        .collect();
    let mut backend = VxlanBackend::new(config.clone());
    assert_eq!(backend.devices(), 3);
    let mut reference = VxlanRef {
        config,
        specs,
        icmp: IcmpModel::new(rate, burst),
        neigh: TokenBucket::new(NEIGH_ANSWER_RATE, NEIGH_ANSWER_BURST),
    };
    let mut now = 1_000u64;
    for _ in 0..MAX_RECORDS {
        if input.is_empty() {
            break;
        }
        let rec = Record::read(&mut input);
        now += rec.advance_ms();
        if rec.op & 0x80 != 0 {
            backend.on_tick(now);
        }
        let d = usize::from(rec.aux >> 3) & 3;
        let source: SocketAddr = VX_SOURCES[usize::from(rec.aux & 7) % VX_SOURCES.len()]
            .parse()
            .unwrap();
        let mut pkt = rec.pkt.to_vec();
        if rec.op & 2 != 0 {
            let vc = reference.config.vnis.get(d);
            if rec.datagram() {
                let mut w = vxlan_header(vc.map_or(99, |v| v.vni)).to_vec();
                if let Some(vc) = vc.filter(|v| v.mode == VxlanMode::L3) {
                    // Mostly from B to the VTEP; now and then from the VTEP's own MAC, a
                    // group address, or to another MAC or the broadcast address.
                    let (dst, src) = match rec.aux >> 5 {
                        3 => (vc.vtep_mac, vc.vtep_mac),
                        5 => (vc.vtep_mac, EthernetAddress([0x01, 0, 0x5e, 0, 0, 1])),
                        6 => (MAC_B, MAC_D),
                        7 => (EthernetAddress::BROADCAST, MAC_B),
                        _ => (vc.vtep_mac, MAC_B),
                    };
                    w.extend_from_slice(&dst.0);
                    w.extend_from_slice(&src.0);
                    w.extend_from_slice(&ethertype_of(&pkt).to_be_bytes());
                }
                pkt = [w, pkt].concat();
            } else if vc.is_some_and(|v| v.mode == VxlanMode::L2) {
                let dst = L2_DESTS[usize::from(rec.aux >> 5) % L2_DESTS.len()];
                let mut w = dst.0.to_vec();
                w.extend_from_slice(&MAC_TAP.0);
                w.extend_from_slice(&ethertype_of(&pkt).to_be_bytes());
                pkt = [w, pkt].concat();
            }
        }
        let mut buf = rec.buffer(&pkt);
        let orig = buf.clone();
        let (start, len) = (rec.head(), pkt.len());
        // The learned FDB as it is before the call (L2 only: L3 never looks at it).
        let fdb_before = (d == 1).then(|| backend.fdb(d).unwrap().clone());
        let pb = PacketBuf::new(&mut buf, start, len).unwrap();
        let (got, expected, check, learned) = if rec.datagram() {
            let (v, c, l) = reference.datagram(&orig, source, start, len, now);
            (backend.handle_datagram(&tables, source, pb, now), v, c, l)
        } else {
            let (v, c) = reference.device(d, fdb_before, &orig, start, len, now);
            (
                backend.handle_device_packet(&tables, d, pb, now),
                v,
                c,
                None,
            )
        };
        check_range(&got, buf.len());
        assert_eq!(got, expected, "vxlan verdict");
        apply_check(&check, &buf, &orig);
        match &got {
            Verdict::DeliverToDevice { device, range } => {
                if reference.config.vnis[*device].mode == VxlanMode::L3 {
                    let ip = parse_ip(&buf[range.clone()]).expect("delivered bytes are IP");
                    assert_eq!(ip.len, range.len());
                } else {
                    assert!(range.len() >= 14, "a delivered frame has its header");
                }
            }
            Verdict::SendToPeer { range, .. } | Verdict::Flood { range, .. } => {
                assert_eq!(
                    &buf[range.start..range.start + 8],
                    &vxlan_header(reference.config.vnis[d].vni)
                );
            }
            _ => {}
        }
        if let Some((ld, m, vtep)) = learned {
            let mut f = backend.fdb(ld).unwrap().clone();
            assert_eq!(f.lookup(&m, now), Some(vtep), "not learned");
        }
        let f = backend.fdb(1).unwrap();
        assert!(f.len() <= FDB_MAX);
        for (m, _, _) in f.entries() {
            assert!(m.is_unicast() && m != EthernetAddress::default());
            assert!(m != MAC_STATIC && m != MAC_STATIC_E, "learned a pinned MAC");
        }
    }
}
