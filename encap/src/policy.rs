//! The per-packet policy hook: allow, drop or reject each inner packet, on both paths.
//!
//! An embedder (or the daemon's `[[acl]]` rules, [`crate::acl`]) supplies a [`Policy`]; the
//! [`Policed`] wrapper puts it in front of any [`Backend`]. For every packet the backend
//! would carry, the policy sees the inner flow ([`FlowKey`]: addresses, protocol, ports), the
//! [`Direction`], the device and the peer ([`PolicyContext`]) and returns a [`Decision`]:
//!
//! - **egress** (read from the device, about to be sent to a peer): judged after the backend
//!   has chosen the peer, so the policy sees it (`None` for an L2 flood);
//! - **ingress** (received from a peer, about to be written to the device): judged after the
//!   backend has decapsulated and checked it (anti-spoofing, VNI), before it is written.
//!
//! A refused packet is counted as [`DropReason::Policy`]. [`Decision::Reject`] also answers
//! the sender with an ICMP/ICMPv6 "administratively prohibited" error (rate-limited, and
//! only where the ICMP rules allow an error at all): into the device on egress, back through
//! the tunnel on ingress (encapsulated by the backend toward the sender's subnet). The error
//! comes from the refused packet's destination address, which is in the sender's own
//! routing (so the remote peer's anti-spoofing check accepts it).
//!
//! What is not judged: the backend's own answers (ICMP errors, ARP replies), frames that
//! carry no IP packet (ARP, in L2 mode; an IP packet is found behind up to two VLAN tags),
//! and packets the backend drops anyway. What cannot be judged is dropped while a policy
//! judges ([`Policy::judges`]), as `malformed`: an IP header that does not parse, an IPv6
//! extension-header chain that does not end, a TCP/UDP/SCTP header cut before its ports.
//!
//! ## Cost
//! [`Policed`] is generic over the policy, so the call is static (no virtual call per
//! packet) and [`AllowAll`] compiles away entirely ([`Policy::INSPECTS`] is `false`: the
//! packet is not even parsed). Parsing the flow reads a few header bytes and never
//! allocates.
//!
//! ## Super-packets
//! With offloads the engine hands the backend the first segment of a TCP/UDP super-packet
//! and carries the verdict out for every segment of it, so a super-packet is judged once,
//! and a denied one is dropped whole: the segments of one super-packet share their flow.
//! Received datagrams are judged one by one before the engine coalesces them, so a denied
//! one is never merged into a super-packet written to the device.
//!
//! ## Fragments
//! Non-first fragments carry no transport header: their [`FlowKey`] has ports 0 and
//! `fragment` set. A rule about ports does not match them (as with most firewalls).

use core::ops::Range;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::backend::{Backend, DeviceLayer, PacketBuf};
use crate::flowhash::{
    ipv6_upper_layer, transport_ports, ETHERTYPE_QINQ, ETHERTYPE_VLAN, PROTO_IPV6_AH, PROTO_SCTP,
};
use crate::icmp::{IcmpErrorKind, IcmpResponder, IcmpTo};
use crate::table::SubnetTable;
use crate::verdict::{DropReason, Verdict};
use crate::wire::ethernet::{
    EthernetAddress, ETHERTYPE_IPV4, ETHERTYPE_IPV6, HEADER_LEN as ETHERNET_HEADER_LEN,
};
use crate::wire::{PROTO_TCP, PROTO_UDP};

/// Which way a packet goes through weft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read from the local device, going to a peer (out of this host).
    Egress,
    /// Received from a peer, going to the local device (into this host).
    Ingress,
}

impl Direction {
    /// `"out"` or `"in"`, as the `[[acl]]` rules spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Egress => "out",
            Direction::Ingress => "in",
        }
    }
}

/// What the policy says about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// Carry the packet.
    Allow,
    /// Drop it silently (counted as [`DropReason::Policy`]).
    Drop,
    /// Drop it and answer the sender with an ICMP/ICMPv6 administratively-prohibited error.
    Reject,
}

impl Decision {
    /// `"allow"`, `"deny"` or `"reject"`, as the `[[acl]]` rules spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Drop => "deny",
            Decision::Reject => "reject",
        }
    }
}

/// The inner flow of a packet: what a policy judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Inner source address.
    pub src: IpAddr,
    /// Inner destination address.
    pub dst: IpAddr,
    /// IP protocol (IPv6: the upper-layer protocol after the extension headers).
    pub protocol: u8,
    /// TCP/UDP/SCTP source port; 0 for other protocols and for fragments.
    pub src_port: u16,
    /// TCP/UDP/SCTP destination port; 0 for other protocols and for fragments.
    pub dst_port: u16,
    /// The packet is a fragment (IPv4: offset or more-fragments set; IPv6: a fragment
    /// header with an offset or the M flag), so the ports are unknown.
    pub fragment: bool,
}

/// What an inner packet or frame holds, as far as a policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inner {
    /// An IP packet with this flow.
    Ip(FlowKey),
    /// A frame that carries no IP packet (ARP, another ethertype): policies do not judge it.
    NotIp,
    /// Claims to be IP but its header does not parse.
    Malformed,
}

impl FlowKey {
    /// The flow of the IPv4/IPv6 packet `packet`; `None` if its IP header does not parse.
    /// Never panics, never reads past the slice.
    pub fn of_ip(packet: &[u8]) -> Option<FlowKey> {
        match packet.first()? >> 4 {
            4 => {
                let header_len = usize::from(packet[0] & 0x0f) * 4;
                if header_len < 20 || packet.len() < header_len {
                    return None;
                }
                let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                let protocol = packet[9];
                let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
                if !ports_present(packet, header_len, protocol, fragment) {
                    return None;
                }
                Some(FlowKey::new(
                    src.into(),
                    dst.into(),
                    protocol,
                    transport_ports(packet, header_len, protocol, fragment),
                    fragment,
                ))
            }
            6 => {
                if packet.len() < 40 {
                    return None;
                }
                let addr = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&packet[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let (protocol, offset, fragment) = ipv6_upper_layer(packet);
                // A chain of extension headers that does not end (too long, or cut short)
                // hides the protocol: not a flow a policy can judge.
                if is_ipv6_extension(protocol)
                    || offset > packet.len()
                    || !ports_present(packet, offset, protocol, fragment)
                {
                    return None;
                }
                Some(FlowKey::new(
                    addr(8),
                    addr(24),
                    protocol,
                    transport_ports(packet, offset, protocol, fragment),
                    fragment,
                ))
            }
            _ => None,
        }
    }

    /// What the packet (`layer` L3: an IP packet) or Ethernet frame (`layer` L2) holds. A
    /// frame's IP packet is found behind up to two VLAN tags (802.1Q, 802.1ad), so a tag
    /// cannot carry a packet past a policy.
    pub fn of_packet(packet: &[u8], layer: DeviceLayer) -> Inner {
        let ip = match layer {
            DeviceLayer::L2 => {
                let mut offset = 12;
                let ethertype = loop {
                    let Some(field) = packet.get(offset..offset + 2) else {
                        return Inner::Malformed;
                    };
                    let ethertype = u16::from_be_bytes([field[0], field[1]]);
                    if matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ) && offset < 20 {
                        offset += 4;
                        continue;
                    }
                    break ethertype;
                };
                match ethertype {
                    ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => &packet[offset + 2..],
                    ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Inner::Malformed,
                    _ => return Inner::NotIp,
                }
            }
            _ => packet,
        };
        FlowKey::of_ip(ip).map_or(Inner::Malformed, Inner::Ip)
    }

    /// Whether the flow has ports: TCP, UDP or SCTP, and not a fragment (for anything else
    /// the ports are 0 and mean "none", which no port range matches).
    pub fn has_ports(&self) -> bool {
        !self.fragment && matches!(self.protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
    }

    fn new(src: IpAddr, dst: IpAddr, protocol: u8, ports: u64, fragment: bool) -> FlowKey {
        FlowKey {
            src,
            dst,
            protocol,
            src_port: (ports >> 16) as u16,
            dst_port: ports as u16,
            fragment,
        }
    }
}

/// Whether a TCP/UDP/SCTP header that should be at `packet[offset..]` has its two ports
/// there (a segment cut before them cannot be judged by its ports).
fn ports_present(packet: &[u8], offset: usize, protocol: u8, fragment: bool) -> bool {
    fragment
        || !matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
        || packet.len() >= offset + 4
}

/// Whether `next_header` is an IPv6 extension header that [`ipv6_upper_layer`] walks.
fn is_ipv6_extension(next_header: u8) -> bool {
    use crate::wire::{PROTO_HOPOPT, PROTO_IPV6_FRAGMENT, PROTO_IPV6_OPTS, PROTO_IPV6_ROUTE};
    matches!(
        next_header,
        PROTO_HOPOPT | PROTO_IPV6_ROUTE | PROTO_IPV6_FRAGMENT | PROTO_IPV6_OPTS | PROTO_IPV6_AH
    )
}

/// Where a packet is going, besides its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyContext {
    /// Which way it goes.
    pub direction: Direction,
    /// The engine's device (VXLAN: the VNI's index) it was read from or is written to.
    pub device: usize,
    /// The peer's underlay address: the one it is sent to (egress) or came from (ingress);
    /// `None` for a frame flooded to every peer (L2 broadcast, unknown unicast).
    pub peer: Option<SocketAddr>,
}

impl PolicyContext {
    /// A context (for tests and benchmarks of a policy).
    pub fn new(direction: Direction, device: usize, peer: Option<SocketAddr>) -> PolicyContext {
        PolicyContext {
            direction,
            device,
            peer,
        }
    }
}

/// A per-packet policy. Each of the engine's workers runs a clone of it (on its own thread),
/// so it may keep per-worker state without locks; `judge` must not block.
///
/// Any `FnMut(&FlowKey, &PolicyContext) -> Decision` closure is a policy:
///
/// ```
/// use weft_encap::policy::{Decision, FlowKey, PolicyContext, Policy};
///
/// let mut web_only = |flow: &FlowKey, _: &PolicyContext| {
///     if flow.protocol == 6 && flow.dst_port == 80 { Decision::Allow } else { Decision::Drop }
/// };
/// let flow = FlowKey::of_ip(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0,
///     100, 96, 1, 2, 100, 96, 2, 3, 0x9c, 0x40, 0, 80]).unwrap();
/// let ctx = PolicyContext::new(weft_encap::policy::Direction::Egress, 0, None);
/// assert_eq!(web_only.judge(&flow, &ctx), Decision::Allow);
/// ```
pub trait Policy: Send + 'static {
    /// `false` for a policy that allows everything without looking: the packet is then not
    /// even parsed. Leave it `true`.
    const INSPECTS: bool = true;

    /// Whether this policy judges packets at the moment (asked for every packet, before it is
    /// parsed): a policy that would allow everything anyway (e.g. an empty rule set) returns
    /// `false` and the packet goes through without being looked at.
    fn judges(&mut self) -> bool {
        true
    }

    /// The decision about one packet.
    fn judge(&mut self, flow: &FlowKey, ctx: &PolicyContext) -> Decision;

    /// Housekeeping (publishing counters, picking up new rules), called at least once a
    /// second by the engine's worker.
    fn on_tick(&mut self, _now_ms: u64) {}
}

/// The policy that allows everything, at no cost: the default of an engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowAll;

impl Policy for AllowAll {
    const INSPECTS: bool = false;

    fn judge(&mut self, _flow: &FlowKey, _ctx: &PolicyContext) -> Decision {
        Decision::Allow
    }
}

impl<F> Policy for F
where
    F: FnMut(&FlowKey, &PolicyContext) -> Decision + Send + 'static,
{
    fn judge(&mut self, flow: &FlowKey, ctx: &PolicyContext) -> Decision {
        self(flow, ctx)
    }
}

/// Default limit of the administratively-prohibited errors a [`Policed`] sends, per second
/// and per direction (the burst is the same).
pub const DEFAULT_REJECT_RATE: u32 = 100;

/// A backend with a policy in front: see the [module docs](self).
///
/// Clones share their ICMP rate limit (the whole engine's workers together).
#[derive(Debug, Clone)]
pub struct Policed<B, P> {
    inner: B,
    policy: P,
    icmp: IcmpResponder,
}

impl<B: Backend, P: Policy> Policed<B, P> {
    /// `inner` with `policy` in front, rejecting with at most [`DEFAULT_REJECT_RATE`] errors
    /// a second in each direction.
    pub fn new(inner: B, policy: P) -> Policed<B, P> {
        Policed {
            inner,
            policy,
            icmp: IcmpResponder::new(DEFAULT_REJECT_RATE, DEFAULT_REJECT_RATE),
        }
    }

    /// Uses `icmp`'s rate limit for the rejections (e.g. the daemon's `[icmp]` settings).
    pub fn with_icmp(mut self, icmp: IcmpResponder) -> Policed<B, P> {
        self.icmp = icmp;
        self
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    fn layer(&self, device: usize) -> DeviceLayer {
        self.inner.device_layer(device).unwrap_or(DeviceLayer::L3)
    }

    /// The policy's word on `packet`, as a verdict when it is not "carry on".
    fn refusal(&mut self, packet: &[u8], layer: DeviceLayer, ctx: &PolicyContext) -> Refusal {
        match FlowKey::of_packet(packet, layer) {
            Inner::Ip(flow) => match self.policy.judge(&flow, ctx) {
                Decision::Allow => Refusal::None,
                Decision::Reject => Refusal::Reject(flow.dst),
                _ => Refusal::Drop(DropReason::Policy),
            },
            Inner::NotIp => Refusal::None,
            Inner::Malformed => Refusal::Drop(DropReason::Malformed),
        }
    }

    /// Writes an administratively-prohibited error about `buf[offender]` (an IP packet, or
    /// for L2 an Ethernet frame) from `src`, for a sender on side `to`: the error's range,
    /// with an Ethernet header in front for L2 (the offender's MACs swapped).
    #[allow(clippy::too_many_arguments)]
    fn write_rejection(
        &mut self,
        buf: &mut [u8],
        offender: Range<usize>,
        layer: DeviceLayer,
        src: IpAddr,
        to: IcmpTo,
        now_ms: u64,
    ) -> Option<Range<usize>> {
        let kind = IcmpErrorKind::AdminProhibited;
        if layer != DeviceLayer::L2 {
            return self
                .icmp
                .error(buf, offender.start, offender.len(), src, kind, to, now_ms);
        }
        let header = buf.get(offender.start..offender.start + ETHERNET_HEADER_LEN)?;
        let dst_mac = EthernetAddress::from_bytes(&header[0..6]);
        let src_mac = EthernetAddress::from_bytes(&header[6..12]);
        let ethertype = [header[12], header[13]];
        if !dst_mac.is_unicast() {
            return None;
        }
        let ip = offender.start + ETHERNET_HEADER_LEN;
        let error = self.icmp.error(
            buf,
            ip,
            offender.len() - ETHERNET_HEADER_LEN,
            src,
            kind,
            to,
            now_ms,
        )?;
        let frame = error.start.checked_sub(ETHERNET_HEADER_LEN)?;
        let eth = buf.get_mut(frame..error.start)?;
        eth[0..6].copy_from_slice(src_mac.as_bytes());
        eth[6..12].copy_from_slice(dst_mac.as_bytes());
        eth[12..14].copy_from_slice(&ethertype);
        Some(frame..error.end)
    }
}

/// A policy's refusal of a packet.
enum Refusal {
    None,
    Drop(DropReason),
    /// Reject, answering from this address (the refused packet's destination).
    Reject(IpAddr),
}

impl<B: Backend, P: Policy> Backend for Policed<B, P> {
    fn headroom(&self) -> usize {
        if !P::INSPECTS {
            return self.inner.headroom();
        }
        // Room for an ICMP error (and an Ethernet header) in front of a decapsulated packet,
        // and the backend's own headers in front of that.
        self.inner.headroom() + crate::icmp::HEADROOM + ETHERNET_HEADER_LEN
    }

    fn devices(&self) -> usize {
        self.inner.devices()
    }

    fn device_layer(&self, device: usize) -> Option<DeviceLayer> {
        self.inner.device_layer(device)
    }

    fn device_name(&self, device: usize) -> Option<&str> {
        self.inner.device_name(device)
    }

    fn handle_device_packet(
        &mut self,
        tables: &[Arc<SubnetTable>],
        device: usize,
        mut pkt: PacketBuf<'_>,
        now_ms: u64,
    ) -> Verdict {
        if !P::INSPECTS || !self.policy.judges() {
            return self.inner.handle_device_packet(tables, device, pkt, now_ms);
        }
        let verdict = self
            .inner
            .handle_device_packet(tables, device, pkt.reborrow(), now_ms);
        let peer = match &verdict {
            Verdict::SendToPeer { dest, .. } | Verdict::SendTrain { dest, .. } => Some(*dest),
            Verdict::Flood { .. } => None,
            _ => return verdict,
        };
        let layer = self.layer(device);
        let ctx = PolicyContext::new(Direction::Egress, device, peer);
        match self.refusal(pkt.packet(), layer, &ctx) {
            Refusal::None => verdict,
            Refusal::Drop(reason) => Verdict::Drop(reason),
            Refusal::Reject(src) => {
                let offender = pkt.range();
                let (buf, _, _) = pkt.into_parts();
                match self.write_rejection(buf, offender, layer, src, IcmpTo::Device, now_ms) {
                    Some(range) => Verdict::ReplyToDevice {
                        device,
                        range,
                        cause: DropReason::Policy,
                    },
                    None => Verdict::Drop(DropReason::Policy),
                }
            }
        }
    }

    fn handle_datagram(
        &mut self,
        tables: &[Arc<SubnetTable>],
        source: SocketAddr,
        mut pkt: PacketBuf<'_>,
        now_ms: u64,
    ) -> Verdict {
        if !P::INSPECTS || !self.policy.judges() {
            return self.inner.handle_datagram(tables, source, pkt, now_ms);
        }
        let verdict = self
            .inner
            .handle_datagram(tables, source, pkt.reborrow(), now_ms);
        let Verdict::DeliverToDevice { device, range } = &verdict else {
            return verdict;
        };
        let (device, range) = (*device, range.clone());
        let (buf, _, _) = pkt.into_parts();
        let Some(packet) = buf.get(range.clone()) else {
            // A range outside the buffer: the engine counts it as a bad verdict.
            return verdict;
        };
        let layer = self.layer(device);
        let ctx = PolicyContext::new(Direction::Ingress, device, Some(source));
        match self.refusal(packet, layer, &ctx) {
            Refusal::None => verdict,
            Refusal::Drop(reason) => Verdict::Drop(reason),
            Refusal::Reject(src) => {
                let Some(error) =
                    self.write_rejection(buf, range, layer, src, IcmpTo::Peer, now_ms)
                else {
                    return Verdict::Drop(DropReason::Policy);
                };
                // The backend encapsulates the error toward the sender's subnet, as if it
                // had been read from the device.
                let Some(answer) = PacketBuf::new(buf, error.start, error.len()) else {
                    return Verdict::Drop(DropReason::Policy);
                };
                match self
                    .inner
                    .handle_device_packet(tables, device, answer, now_ms)
                {
                    Verdict::SendToPeer { dest, range, .. } => Verdict::ReplyToPeer {
                        dest,
                        range,
                        cause: Some(DropReason::Policy),
                    },
                    _ => Verdict::Drop(DropReason::Policy),
                }
            }
        }
    }

    fn icmp_rate_limited(&self) -> u64 {
        self.inner.icmp_rate_limited() + self.icmp.rate_limited()
    }

    fn on_tick(&mut self, now_ms: u64) {
        self.inner.on_tick(now_ms);
        self.policy.on_tick(now_ms);
    }

    fn inspect_target(&self) -> &dyn std::any::Any {
        self.inner.inspect_target()
    }
}
