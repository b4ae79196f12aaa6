//! The flannel UDP backend: what happens to each packet.
//!
//! Wire format (flanneld's `udp` backend, its C proxy): the UDP payload is the raw inner
//! IPv4 (or, with weft, IPv6) packet, no header of its own; both ends use the same port
//! (8285 by default) as source and destination.
//!
//! [`FlannelBackend::handle_device_packet`] takes a packet read from the TUN device and
//! decides: encapsulate toward a peer, answer with an ICMP error written back into the
//! device, or drop. [`FlannelBackend::handle_datagram`] takes a received datagram and
//! decides: deliver the inner packet to the device, answer the sending peer with an ICMP
//! error through the tunnel, or drop. Both work in place in a caller-owned buffer that keeps
//! at least [`HEADROOM`] bytes in front of the packet, so an ICMP error is built around the
//! quoted packet without copying it.
//!
//! Differences from flanneld, all deliberate:
//! - longest-prefix match instead of a first-match list;
//! - TTL exhaustion is answered with ICMP time exceeded (flanneld: a TODO);
//! - the ICMP errors written into the device use the offender's *destination* as their
//!   source address. flanneld uses the TUN's own address, which the receiving kernel treats
//!   as a martian (a local source arriving on a non-loopback device) and drops, so its
//!   "net unreachable" never reaches the sender;
//! - packets larger than the underlay path allows with DF set (and every IPv6 packet) are
//!   answered with fragmentation needed / packet too big instead of failing in `sendto`;
//! - received datagrams are validated (well-formed IP, known peer, inner source inside that
//!   peer's subnets); flanneld accepts anything from anyone;
//! - generated ICMP errors are rate limited.
//!
//! ## Driving it from your own event loop
//!
//! The engine (`weft::Engine`) runs this backend for you, but nothing here needs it: a
//! caller with its own loop owns the buffers, keeps [`HEADROOM`] bytes free in front of
//! each packet, hands the packet over as a [`PacketBuf`] through the [`Backend`] trait, and
//! carries out the [`Verdict`], whose ranges index into that same buffer. The example
//! below is both ends of the tunnel in one process: host A encapsulates a packet read from
//! its TUN, the datagram payload "crosses the network" (a copy into host B's receive buffer),
//! and host B decapsulates it.
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddr};
//! use std::sync::Arc;
//!
//! use weft_encap::backend::{Backend, PacketBuf};
//! use weft_encap::flannel::{FlannelBackend, FlannelConfig, HEADROOM};
//! use weft_encap::table::{Route, SubnetTable};
//! use weft_encap::verdict::{DropReason, Verdict};
//! use weft_encap::wire::{ipv4, udp, PROTO_ICMP, PROTO_UDP};
//!
//! // Host A (underlay 198.18.0.1) leases 100.96.1.0/24, host B (198.18.0.2) 100.96.2.0/24.
//! let a_underlay: SocketAddr = "198.18.0.1:8285".parse()?;
//! let b_underlay: SocketAddr = "198.18.0.2:8285".parse()?;
//! let route = |subnet: &str, endpoint| Route {
//!     subnet: subnet.parse().unwrap(),
//!     endpoint,
//!     vtep_mac: None,
//! };
//! // Each host's routing snapshot: one table per device; the UDP backend has one device.
//! let tables_a = [Arc::new(SubnetTable::new(1, &[route("100.96.2.0/24", b_underlay)])?)];
//! let tables_b = [Arc::new(SubnetTable::new(1, &[route("100.96.1.0/24", a_underlay)])?)];
//! let mut host_a = FlannelBackend::new(FlannelConfig::default());
//! let mut host_b = FlannelBackend::new(FlannelConfig::default());
//!
//! // A UDP packet from a pod on A (100.96.1.5) to a pod on B (100.96.2.7), as A's TUN
//! // hands it over.
//! let message = b"hello from A";
//! let ip = ipv4::Repr {
//!     src_addr: Ipv4Addr::new(100, 96, 1, 5),
//!     dst_addr: Ipv4Addr::new(100, 96, 2, 7),
//!     protocol: PROTO_UDP,
//!     payload_len: udp::HEADER_LEN + message.len(),
//!     ttl: 64,
//! };
//! let mut packet = vec![0u8; ip.buffer_len() + ip.payload_len];
//! ip.emit(&mut ipv4::Packet::new_unchecked(&mut packet[..]));
//! let dgram = udp::Repr { src_port: 40000, dst_port: 7, payload_len: message.len() };
//! dgram.emit(&mut udp::Packet::new_unchecked(&mut packet[20..]));
//! packet[28..].copy_from_slice(message);
//!
//! // Host A: the packet goes into a buffer owned by the caller, after HEADROOM free bytes
//! // (where ICMP errors are built in place).
//! let mut tx = vec![0u8; HEADROOM + 2048];
//! tx[HEADROOM..HEADROOM + packet.len()].copy_from_slice(&packet);
//! let pkt = PacketBuf::new(&mut tx, HEADROOM, packet.len()).expect("inside the buffer");
//! // `Backend::handle_device_packet` (the trait method, as the engine calls it; the
//! // inherent method of the same name takes a single table and `(buf, start, len)`).
//! let now_ms = 0; // the caller's clock: milliseconds from any fixed start
//! let verdict = Backend::handle_device_packet(&mut host_a, &tables_a, 0, pkt, now_ms);
//! let (dest, datagram) = match verdict {
//!     // `flow: None`: flannel sends from the listening port (8285) to the peer's.
//!     Verdict::SendToPeer { dest, range, flow: None } => (dest, tx[range].to_vec()),
//!     other => panic!("expected SendToPeer, got {other:?}"),
//! };
//! assert_eq!(dest, b_underlay);
//! // flannel's wire format: the datagram payload is the inner packet itself, TTL - 1.
//! assert_eq!(datagram.len(), packet.len());
//! assert_eq!(ipv4::Packet::new_checked(&datagram[..])?.ttl(), 63);
//!
//! // Host B: the datagram payload arrives from A's underlay address (any source port).
//! let mut rx = vec![0u8; HEADROOM + 2048];
//! rx[HEADROOM..HEADROOM + datagram.len()].copy_from_slice(&datagram);
//! let pkt = PacketBuf::new(&mut rx, HEADROOM, datagram.len()).expect("inside the buffer");
//! let verdict = Backend::handle_datagram(&mut host_b, &tables_b, a_underlay, pkt, now_ms);
//! let Verdict::DeliverToDevice { device: 0, range } = verdict else {
//!     panic!("expected DeliverToDevice, got {verdict:?}");
//! };
//! // What B writes into its TUN is A's packet as two routers would have forwarded it:
//! // byte for byte the same but for the TTL (one hop per host) and the header checksum.
//! let mut expected = packet.clone();
//! let mut forwarded = ipv4::Packet::new_unchecked(&mut expected[..]);
//! forwarded.set_ttl(62);
//! forwarded.fill_checksum();
//! assert_eq!(&rx[range.clone()], &expected[..]);
//! assert_eq!(&rx[range.end - message.len()..range.end], message);
//!
//! // No route: the packet is dropped and an ICMP net unreachable is written in place,
//! // partly in the headroom in front of it, to be written back into A's device.
//! let mut lost = packet.clone();
//! let mut header = ipv4::Packet::new_unchecked(&mut lost[..]);
//! header.set_dst_addr(Ipv4Addr::new(100, 96, 9, 9));
//! header.fill_checksum();
//! tx[HEADROOM..HEADROOM + lost.len()].copy_from_slice(&lost);
//! let pkt = PacketBuf::new(&mut tx, HEADROOM, lost.len()).expect("inside the buffer");
//! match Backend::handle_device_packet(&mut host_a, &tables_a, 0, pkt, now_ms) {
//!     Verdict::ReplyToDevice { device: 0, range, cause: DropReason::NoRoute } => {
//!         assert!(range.start < HEADROOM, "the ICMP headers went into the headroom");
//!         let icmp = ipv4::Packet::new_checked(&tx[range])?;
//!         assert_eq!(icmp.protocol(), PROTO_ICMP);
//!         assert_eq!(icmp.dst_addr(), Ipv4Addr::new(100, 96, 1, 5), "back to the sender");
//!     }
//!     // An event loop counts every drop under its reason; `Verdict` may grow variants.
//!     Verdict::Drop(reason) => panic!("dropped without an answer: {}", reason.name()),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::icmp::{self, IcmpErrorKind, IcmpResponder, IcmpTo};
use crate::table::SubnetTable;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::{Backend, PacketBuf};
use crate::verdict::{DropReason, PeerId, Verdict};
use crate::wire::{ipv4, ipv6};

/// Bytes a caller must keep free in front of each packet (room for an ICMP error's headers).
pub const HEADROOM: usize = icmp::HEADROOM;

/// Outer IPv4 + UDP header bytes: the device MTU is the underlay MTU minus this.
pub const OVERHEAD_V4: usize = 20 + 8;
/// Outer IPv6 + UDP header bytes.
pub const OVERHEAD_V6: usize = 40 + 8;

/// IPv6's minimum link MTU (RFC 8200): a packet-too-big never advertises less.
const IPV6_MIN_MTU: usize = 1280;

/// Settings of the UDP backend.
#[derive(Debug, Clone)]
pub struct FlannelConfig {
    /// This host's overlay IPv4 address (the TUN's address): the source of ICMP errors sent
    /// back through the tunnel.
    pub local_v4: Option<Ipv4Addr>,
    /// This host's overlay IPv6 address, likewise.
    pub local_v6: Option<Ipv6Addr>,
    /// The largest datagram payload the underlay path carries without fragmentation
    /// (underlay MTU minus [`OVERHEAD_V4`] or [`OVERHEAD_V6`]).
    pub max_payload: usize,
    /// Drop datagrams whose outer source IP is not a known peer.
    pub check_peer: bool,
    /// Drop datagrams whose inner source address is outside the sending peer's subnets.
    pub check_inner_source: bool,
    /// ICMP errors per second, on average.
    pub icmp_rate: u32,
    /// ICMP errors that may be sent at once after a quiet period.
    pub icmp_burst: u32,
}

impl Default for FlannelConfig {
    fn default() -> Self {
        FlannelConfig {
            local_v4: None,
            local_v6: None,
            max_payload: 1500 - OVERHEAD_V4,
            check_peer: true,
            check_inner_source: true,
            icmp_rate: 100,
            icmp_burst: 50,
        }
    }
}

/// The UDP backend's per-worker state: its settings and the ICMP rate limiter.
#[derive(Debug, Clone)]
pub struct FlannelBackend {
    config: FlannelConfig,
    icmp: IcmpResponder,
}

/// The fields of an inner IP header that the decisions need.
pub(crate) struct Inner {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) ttl: u8,
    pub(crate) len: usize,
    pub(crate) dont_fragment: bool,
}

/// Validates the IP packet in `pkt` (version, header length, total length within `pkt`).
pub(crate) fn parse_inner(pkt: &[u8]) -> Option<Inner> {
    match pkt.first()? >> 4 {
        4 => {
            let p = ipv4::Packet::new_checked(pkt).ok()?;
            Some(Inner {
                src: IpAddr::V4(p.src_addr()),
                dst: IpAddr::V4(p.dst_addr()),
                ttl: p.ttl(),
                len: usize::from(p.total_len()),
                dont_fragment: p.dont_frag(),
            })
        }
        6 => {
            let p = ipv6::Packet::new_checked(pkt).ok()?;
            Some(Inner {
                src: IpAddr::V6(p.src_addr()),
                dst: IpAddr::V6(p.dst_addr()),
                ttl: p.hop_limit(),
                len: p.total_len(),
                dont_fragment: true,
            })
        }
        _ => None,
    }
}

/// Whether `dst` is never reached through a tunnel: a packet from a peer for it is dropped
/// (`bad_destination`) rather than handed to this host's stack.
pub(crate) fn never_tunnelled(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a.is_broadcast() || a.is_loopback() || a.octets()[0] == 0,
        IpAddr::V6(a) => a.is_loopback() || a.is_unspecified(),
    }
}

/// The MTU to announce in a fragmentation-needed / packet-too-big error if `inner` cannot go
/// out whole through a path with room for `room` bytes, or `None` if it is sent.
///
/// IPv4 without DF is sent (the kernel fragments the outer datagram). IPv6 is never
/// fragmented on the way, but every IPv6 link must carry 1280 bytes (RFC 8200 section 5): a
/// packet of at most 1280 bytes is sent (the outer datagram is fragmented if it must be), a
/// larger one is refused with an MTU of at least 1280.
pub(crate) fn too_big_mtu(inner: &Inner, room: usize) -> Option<usize> {
    if inner.len <= room {
        return None;
    }
    if inner.dst.is_ipv4() {
        inner.dont_fragment.then_some(room)
    } else if inner.len <= IPV6_MIN_MTU {
        None
    } else {
        Some(room.max(IPV6_MIN_MTU))
    }
}

/// Lowers the TTL / hop limit of the (already validated) packet by one.
fn decrement_ttl(pkt: &mut [u8]) {
    if pkt[0] >> 4 == 4 {
        ipv4::Packet::new_unchecked(pkt).decrement_ttl();
    } else {
        let mut p = ipv6::Packet::new_unchecked(pkt);
        let hop = p.hop_limit();
        p.set_hop_limit(hop.saturating_sub(1));
    }
}

impl FlannelBackend {
    /// A backend with these settings and a full ICMP token bucket.
    pub fn new(config: FlannelConfig) -> FlannelBackend {
        let icmp = IcmpResponder::new(config.icmp_rate, config.icmp_burst);
        FlannelBackend { config, icmp }
    }

    /// The settings.
    pub fn config(&self) -> &FlannelConfig {
        &self.config
    }

    fn reply_to_device(
        &mut self,
        buf: &mut [u8],
        offender: core::ops::Range<usize>,
        src: IpAddr,
        kind: IcmpErrorKind,
        cause: DropReason,
        now_ms: u64,
    ) -> Verdict {
        self.icmp
            .reply_to_device(buf, offender, src, kind, 0, cause, now_ms)
    }

    /// Decides what happens to the packet `buf[start..start + len]` read from the device.
    ///
    /// `start` must be at least [`HEADROOM`] for ICMP errors to be possible (with less, the
    /// packet is dropped without an error). On [`Verdict::SendToPeer`] the packet has had
    /// its TTL / hop limit decremented in place.
    pub fn handle_device_packet(
        &mut self,
        table: &SubnetTable,
        buf: &mut [u8],
        start: usize,
        len: usize,
        now_ms: u64,
    ) -> Verdict {
        let Some(end) = start.checked_add(len).filter(|&e| e <= buf.len()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let Some(inner) = parse_inner(&buf[start..end]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let len = inner.len;
        let Some(dest) = table
            .lookup(inner.dst)
            .and_then(|id| table.peer(id))
            .map(|p| p.endpoint)
        else {
            let kind = IcmpErrorKind::NetUnreachable;
            return self.reply_to_device(
                buf,
                start..start + len,
                inner.dst,
                kind,
                DropReason::NoRoute,
                now_ms,
            );
        };
        if inner.ttl <= 1 {
            let kind = IcmpErrorKind::TimeExceeded;
            return self.reply_to_device(
                buf,
                start..start + len,
                inner.dst,
                kind,
                DropReason::TtlExceeded,
                now_ms,
            );
        }
        if let Some(mtu) = too_big_mtu(&inner, self.config.max_payload) {
            let kind = IcmpErrorKind::TooBig {
                mtu: u32::try_from(mtu).unwrap_or(u32::MAX),
            };
            return self.reply_to_device(
                buf,
                start..start + len,
                inner.dst,
                kind,
                DropReason::TooBig,
                now_ms,
            );
        }
        decrement_ttl(&mut buf[start..start + len]);
        Verdict::SendToPeer {
            dest,
            range: start..start + len,
            flow: None,
        }
    }

    /// Decides what happens to the datagram payload `buf[start..start + len]` received from
    /// the underlay address `source`.
    ///
    /// On [`Verdict::DeliverToDevice`] the inner packet has had its TTL / hop limit
    /// decremented in place. A packet whose TTL runs out is answered with ICMP time exceeded
    /// from this host's overlay address, sent back to the peer ([`Verdict::ReplyToPeer`]).
    pub fn handle_datagram(
        &mut self,
        table: &SubnetTable,
        source: IpAddr,
        buf: &mut [u8],
        start: usize,
        len: usize,
        now_ms: u64,
    ) -> Verdict {
        let Some(end) = start.checked_add(len).filter(|&e| e <= buf.len()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let sender = table.peer_by_endpoint(source);
        if self.config.check_peer && sender.is_none() {
            return Verdict::Drop(DropReason::UnknownPeer);
        }
        let inner = match parse_inner(&buf[start..end]) {
            Some(inner) if inner.len == len => inner,
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        if self.config.check_inner_source {
            let owns = sender
                .and_then(|id| table.peer(id))
                .is_some_and(|p| p.owns(inner.src));
            if !owns {
                return Verdict::Drop(DropReason::SpoofedSource);
            }
        }
        if never_tunnelled(inner.dst) {
            return Verdict::Drop(DropReason::BadDestination);
        }
        if inner.ttl <= 1 {
            return self.time_exceeded_to_peer(table, sender, &inner, buf, start, now_ms);
        }
        decrement_ttl(&mut buf[start..end]);
        Verdict::DeliverToDevice {
            device: 0,
            range: start..end,
        }
    }

    fn time_exceeded_to_peer(
        &mut self,
        table: &SubnetTable,
        sender: Option<PeerId>,
        inner: &Inner,
        buf: &mut [u8],
        start: usize,
        now_ms: u64,
    ) -> Verdict {
        let cause = DropReason::TtlExceeded;
        let local = match inner.src {
            IpAddr::V4(_) => self.config.local_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.config.local_v6.map(IpAddr::V6),
        };
        // The error goes to the inner source, through whichever peer owns it.
        let Some(dest) = table
            .lookup(inner.src)
            .or(sender)
            .and_then(|id| table.peer(id))
        else {
            return Verdict::Drop(cause);
        };
        let dest = dest.endpoint;
        let Some(local) = local else {
            return Verdict::Drop(cause);
        };
        match self.icmp.error(
            buf,
            start,
            inner.len,
            local,
            IcmpErrorKind::TimeExceeded,
            IcmpTo::Peer,
            now_ms,
        ) {
            Some(range) => Verdict::ReplyToPeer {
                dest,
                range,
                cause: Some(cause),
            },
            None => Verdict::Drop(cause),
        }
    }
}

impl Backend for FlannelBackend {
    fn headroom(&self) -> usize {
        HEADROOM
    }

    fn handle_device_packet(
        &mut self,
        tables: &[Arc<SubnetTable>],
        _device: usize,
        pkt: PacketBuf<'_>,
        now_ms: u64,
    ) -> Verdict {
        let (buf, start, len) = pkt.into_parts();
        match tables.first() {
            Some(table) => {
                FlannelBackend::handle_device_packet(self, table, buf, start, len, now_ms)
            }
            None => Verdict::Drop(DropReason::NoRoute),
        }
    }

    fn handle_datagram(
        &mut self,
        tables: &[Arc<SubnetTable>],
        source: SocketAddr,
        pkt: PacketBuf<'_>,
        now_ms: u64,
    ) -> Verdict {
        let (buf, start, len) = pkt.into_parts();
        match tables.first() {
            Some(table) => {
                FlannelBackend::handle_datagram(self, table, source.ip(), buf, start, len, now_ms)
            }
            None => Verdict::Drop(DropReason::UnknownPeer),
        }
    }

    fn icmp_rate_limited(&self) -> u64 {
        self.icmp.rate_limited()
    }
}

#[cfg(test)]
mod tests;
