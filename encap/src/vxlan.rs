//! The VXLAN backend (RFC 7348), interoperable with the Linux kernel's vxlan device.
//!
//! One [`VxlanBackend`] serves several VNIs over one UDP port; VNI `i` of
//! [`VxlanConfig::vnis`] is device `i` of the engine and uses routing table `i`.
//!
//! ## L3 mode: what flanneld builds with `flannel.1`
//! The device is a TUN. A packet read from it is routed (longest-prefix match) to a peer,
//! wrapped in an Ethernet header (source: this host's VTEP MAC, destination: the peer's VTEP
//! MAC, ethertype IPv4/IPv6) and a VXLAN header, both written into the headroom in front of
//! the packet, so the payload is never copied. The inner TTL is left alone: the kernel
//! already decremented it when it routed the packet into the device, exactly as it does
//! before handing a packet to its own vxlan device. On receive, the VNI and the destination
//! MAC are checked, the Ethernet header is stripped and the IP packet is written to the TUN.
//! ARP requests and IPv6 neighbour solicitations for this host's VTEP address are answered
//! (the kernel's vxlan device answers them too), so a kernel peer without a permanent
//! neighbour entry still resolves weft's MAC.
//!
//! ## L2 mode: the "vxlan + bridge" setup
//! The device is a TAP, usually enslaved to a bridge. Frames read from it are looked up in
//! the FDB (the static entries of the configuration first, which learning never moves, then
//! the entries learned from received frames, with ageing and a size bound): a known unicast destination goes to its VTEP, everything
//! else (broadcast, multicast, unknown unicast) to every peer of the VNI (head-end
//! replication, like the kernel's all-zero FDB entries).
//!
//! With [`VxlanConfig::proxy`] (the kernel vxlan device's `proxy` flag), an ARP request or
//! IPv6 neighbour solicitation read from the TAP for an address of the VNI's neighbour
//! table (the static entries of the [`SubnetTable`], [`SubnetTable::static_neigh`], then
//! those learnt from received ARP and neighbour advertisements with
//! [`VxlanConfig::neigh_learning`]) is answered back into the TAP
//! ([`Verdict::AnswerToDevice`], see [`neigh::proxy`]) instead of being flooded; a request
//! for an address the table does not know, and address probes, are flooded as before.
//!
//! ## Wire
//! 8-byte header: flags with the I bit (0x08), 24-bit VNI, reserved bits zero on send and
//! ignored on receive. The UDP source port comes from a hash of the inner flow
//! ([`crate::flowhash`]), which the engine maps onto its source-port sockets. Frames without
//! the I flag, for a VNI not served, too short, or whose inner source MAC is this host's own
//! are dropped and counted, each under its own [`DropReason`].
//!
//! ## Driving it from your own event loop
//!
//! The backend is sans-IO: the caller reads a packet into its own buffer behind
//! [`HEADROOM`] free bytes, passes it as a [`PacketBuf`] with the routing snapshots (one
//! [`SubnetTable`] per VNI, in [`VxlanConfig::vnis`] order), and carries out the returned
//! [`Verdict`]; its ranges index into that buffer. In L3 mode the VXLAN header and the inner
//! Ethernet header ([`L3_ENCAP_LEN`] bytes) are written into the headroom, so the datagram is
//! `buf[range]` with `range.start == start - L3_ENCAP_LEN`. The flow hash in the verdict is
//! for the UDP source port (RFC 7348 section 5); the destination is the peer's VXLAN port.
//! Both ends of an L3 tunnel, in one process:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr, SocketAddr};
//! use std::sync::Arc;
//!
//! use weft_encap::backend::{Backend, PacketBuf};
//! use weft_encap::fdb::FdbConfig;
//! use weft_encap::table::{Route, SubnetTable};
//! use weft_encap::verdict::Verdict;
//! use weft_encap::vxlan::{
//!     VniConfig, VxlanBackend, VxlanConfig, VxlanMode, HEADROOM, L3_ENCAP_LEN,
//! };
//! use weft_encap::wire::ethernet::{self, EthernetAddress, ETHERTYPE_IPV4};
//! use weft_encap::wire::{ipv4, udp, vxlan, PROTO_UDP};
//!
//! const VNI: u32 = 1;
//! let mac_a = EthernetAddress([0x02, 0, 0, 0, 0x01, 0]);
//! let mac_b = EthernetAddress([0x02, 0, 0, 0, 0x02, 0]);
//! let a_underlay = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
//! let b_underlay = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
//!
//! // One L3 VNI per host, like flanneld's flannel.1: A leases 100.96.1.0/24, B 100.96.2.0/24.
//! let host = |mac, overlay| {
//!     VxlanBackend::new(VxlanConfig {
//!         vnis: vec![VniConfig {
//!             vni: VNI,
//!             mode: VxlanMode::L3,
//!             vtep_mac: mac,
//!             local_v4: Some(overlay),
//!             local_v6: None,
//!             fdb: FdbConfig::default(),
//!             device: None,
//!         }],
//!         ..VxlanConfig::default() // port 8472, underlay MTU 1500
//!     })
//! };
//! let mut host_a = host(mac_a, Ipv4Addr::new(100, 96, 1, 0));
//! let mut host_b = host(mac_b, Ipv4Addr::new(100, 96, 2, 0));
//! // L3 routes carry the peer's VTEP MAC (flannel publishes it in the lease).
//! let route = |subnet: &str, at: IpAddr, mac| Route {
//!     subnet: subnet.parse().unwrap(),
//!     endpoint: SocketAddr::new(at, vxlan::PORT_LINUX),
//!     vtep_mac: Some(mac),
//! };
//! let a_routes = [route("100.96.2.0/24", b_underlay, mac_b)];
//! let b_routes = [route("100.96.1.0/24", a_underlay, mac_a)];
//! // One table per VNI, in `vnis` order.
//! let tables_a = [Arc::new(SubnetTable::new(1, &a_routes)?)];
//! let tables_b = [Arc::new(SubnetTable::new(1, &b_routes)?)];
//!
//! // A UDP packet from a pod on A to a pod on B, as A's TUN hands it over.
//! let message = b"hello over VXLAN";
//! let ip = ipv4::Repr {
//!     src_addr: Ipv4Addr::new(100, 96, 1, 5),
//!     dst_addr: Ipv4Addr::new(100, 96, 2, 7),
//!     protocol: PROTO_UDP,
//!     payload_len: udp::HEADER_LEN + message.len(),
//!     ttl: 63,
//! };
//! let mut packet = vec![0u8; ip.buffer_len() + ip.payload_len];
//! ip.emit(&mut ipv4::Packet::new_unchecked(&mut packet[..]));
//! let dgram = udp::Repr { src_port: 40000, dst_port: 7, payload_len: message.len() };
//! dgram.emit(&mut udp::Packet::new_unchecked(&mut packet[20..]));
//! packet[28..].copy_from_slice(message);
//!
//! // Host A: encapsulate in place, in the caller's buffer.
//! let mut tx = vec![0u8; HEADROOM + 2048];
//! tx[HEADROOM..HEADROOM + packet.len()].copy_from_slice(&packet);
//! let pkt = PacketBuf::new(&mut tx, HEADROOM, packet.len()).expect("inside the buffer");
//! let now_ms = 0; // the caller's clock
//! let (dest, range, flow) = match host_a.handle_device_packet(&tables_a, 0, pkt, now_ms) {
//!     Verdict::SendToPeer { dest, range, flow } => (dest, range, flow),
//!     other => panic!("expected SendToPeer, got {other:?}"),
//! };
//! assert_eq!(dest, SocketAddr::new(b_underlay, vxlan::PORT_LINUX));
//! assert_eq!(range, HEADROOM - L3_ENCAP_LEN..HEADROOM + packet.len());
//! assert!(flow.is_some(), "a per-flow hash for the UDP source port");
//! let datagram = tx[range].to_vec();
//! // On the wire: VXLAN header (I flag, VNI 1), inner Ethernet A -> B, the packet untouched.
//! let header = vxlan::Header::new_checked(&datagram[..])?;
//! assert_eq!((header.has_vni_flag(), header.vni()), (true, VNI));
//! let frame = ethernet::Frame::new_checked(header.payload())?;
//! assert_eq!((frame.src_addr(), frame.dst_addr()), (mac_a, mac_b));
//! assert_eq!(frame.ethertype(), ETHERTYPE_IPV4);
//! assert_eq!(frame.payload(), &packet[..]);
//!
//! // Host B: the datagram arrives from A's address, from whatever source port A's flow hash
//! // picked (peers are recognised by address).
//! let source = SocketAddr::new(a_underlay, 49_152 + (flow.unwrap() % 16_384) as u16);
//! let mut rx = vec![0u8; HEADROOM + 2048];
//! rx[HEADROOM..HEADROOM + datagram.len()].copy_from_slice(&datagram);
//! let pkt = PacketBuf::new(&mut rx, HEADROOM, datagram.len()).expect("inside the buffer");
//! match host_b.handle_datagram(&tables_b, source, pkt, now_ms) {
//!     Verdict::DeliverToDevice { device, range } => {
//!         assert_eq!(device, 0, "the device of VNI 1");
//!         // Decapsulated: exactly the bytes A's TUN handed over (L3 mode leaves the TTL
//!         // to the kernels, as the kernel's own vxlan device does).
//!         assert_eq!(&rx[range], &packet[..]);
//!     }
//!     Verdict::Drop(reason) => panic!("dropped: {}", reason.name()),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::{Backend, DeviceLayer, PacketBuf};
use crate::fdb::{Fdb, FdbConfig};
use crate::flannel::{never_tunnelled, parse_inner, too_big_mtu};
use crate::flowhash;
use crate::icmp::{IcmpErrorKind, IcmpResponder};
use crate::neigh;
use crate::neigh_cache::NeighCache;
use crate::ratelimit::TokenBucket;
use crate::table::SubnetTable;
use crate::verdict::{DropReason, Verdict};
use crate::wire::ethernet::{self, EthernetAddress, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::vxlan;

/// VXLAN header + inner Ethernet header: what L3 mode prepends.
pub const L3_ENCAP_LEN: usize = vxlan::HEADER_LEN + ethernet::HEADER_LEN;
/// Outer IPv4 + UDP + VXLAN + Ethernet: the device MTU is the underlay MTU minus this (50).
pub const OVERHEAD_V4: usize = 20 + 8 + L3_ENCAP_LEN;
/// The same over an IPv6 underlay (70).
pub const OVERHEAD_V6: usize = 40 + 8 + L3_ENCAP_LEN;
/// Headroom the backend needs in front of each packet (the ICMP errors need the most).
pub const HEADROOM: usize = crate::icmp::HEADROOM;

/// Whether a VNI carries IP packets (TUN, like flannel.1) or Ethernet frames (TAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VxlanMode {
    /// IP packets from a TUN; weft adds and removes the inner Ethernet header.
    L3,
    /// Ethernet frames from a TAP; weft keeps an FDB and floods the unknown.
    L2,
}

/// One VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VniConfig {
    /// The 24-bit VXLAN network identifier.
    pub vni: u32,
    /// L3 or L2.
    pub mode: VxlanMode,
    /// This host's VTEP MAC: the inner source MAC of what it sends (L3), the TAP's MAC (L2).
    pub vtep_mac: EthernetAddress,
    /// This host's overlay IPv4 address on the VNI (answers ARP for it; source of ICMP).
    pub local_v4: Option<Ipv4Addr>,
    /// This host's overlay IPv6 address on the VNI (answers neighbour solicitations).
    pub local_v6: Option<Ipv6Addr>,
    /// FDB size and ageing (L2).
    pub fdb: FdbConfig,
    /// The name of the device that carries this VNI, if known: the engine then refuses to
    /// start with another device in this VNI's place.
    pub device: Option<String>,
}

/// Settings of the VXLAN backend.
#[derive(Debug, Clone)]
pub struct VxlanConfig {
    /// The VNIs served; VNI `i` is device `i` and routing table `i`.
    pub vnis: Vec<VniConfig>,
    /// The UDP destination port of every VTEP (8472 like Linux and flannel; IANA's is 4789);
    /// learned VTEPs are reached on it whatever source port they used.
    pub port: u16,
    /// The largest datagram payload the underlay carries unfragmented (underlay MTU minus
    /// the outer IP and UDP headers).
    pub max_payload: usize,
    /// Drop datagrams from underlay addresses that are not peers of the VNI.
    pub check_peer: bool,
    /// Drop L3 inner packets whose source is outside the sending peer's subnets.
    pub check_inner_source: bool,
    /// Learn inner source MACs in L2 mode.
    pub learning: bool,
    /// Answer ARP requests and neighbour solicitations read from an L2 device for the
    /// addresses of the VNI's neighbour table into the device, instead of flooding them
    /// (the kernel vxlan device's `proxy`). L3 VNIs ignore it.
    pub proxy: bool,
    /// Learn the neighbour table's IP -> MAC entries from ARP requests and replies and
    /// neighbour advertisements received from peers (L2), bounded and aged with the
    /// VNI's [`VniConfig::fdb`] limits.
    pub neigh_learning: bool,
    /// ICMP errors per second.
    pub icmp_rate: u32,
    /// ICMP errors at once.
    pub icmp_burst: u32,
}

impl Default for VxlanConfig {
    fn default() -> Self {
        VxlanConfig {
            vnis: Vec::new(),
            port: vxlan::PORT_LINUX,
            max_payload: 1500 - 28,
            check_peer: true,
            check_inner_source: true,
            learning: true,
            proxy: false,
            neigh_learning: false,
            icmp_rate: 100,
            icmp_burst: 50,
        }
    }
}

/// The VXLAN backend's per-worker state: settings, one FDB per VNI, the ICMP limiter.
///
/// Clones (one per worker) share the learned FDBs, so a MAC learnt by one worker is known to
/// all, and the ICMP rate limit. Each FDB sits behind its own mutex, taken once per L2 frame
/// (L3 mode never touches it). The learnt neighbour tables are shared the same way; theirs
/// are taken only for ARP and neighbour discovery frames, with the proxy or learning on.
#[derive(Debug, Clone)]
pub struct VxlanBackend {
    config: VxlanConfig,
    fdbs: Arc<Vec<Mutex<Fdb>>>,
    neigh_caches: Arc<Vec<Mutex<NeighCache>>>,
    icmp: IcmpResponder,
    /// The limit on ARP/ND answers, shared by every clone like the ICMP limit.
    neigh_limiter: Arc<Mutex<TokenBucket>>,
}

/// ARP/ND answers per second, for the whole engine (each answer is a datagram weft sends to
/// a peer in reply to one it received: without a limit, a 1:1 reflector).
pub const NEIGH_ANSWER_RATE: u32 = 100;
/// ARP/ND answers at once.
pub const NEIGH_ANSWER_BURST: u32 = 50;

/// Writes a VXLAN header for `vni` into `buf[at..at + 8]`.
fn write_vxlan_header(buf: &mut [u8], at: usize, vni: u32) {
    let mut header = vxlan::Header::new_unchecked(&mut buf[at..at + vxlan::HEADER_LEN]);
    vxlan::Repr { vni }.emit(&mut header);
}

impl VxlanBackend {
    /// A backend serving `config.vnis`.
    pub fn new(config: VxlanConfig) -> VxlanBackend {
        let fdbs = Arc::new(
            config
                .vnis
                .iter()
                .map(|v| Mutex::new(Fdb::new(v.fdb)))
                .collect(),
        );
        let neigh_caches = Arc::new(
            config
                .vnis
                .iter()
                .map(|v| Mutex::new(NeighCache::new(v.fdb.max_entries, v.fdb.ageing_ms)))
                .collect(),
        );
        let icmp = IcmpResponder::new(config.icmp_rate, config.icmp_burst);
        let neigh_limiter = Arc::new(Mutex::new(TokenBucket::new(
            NEIGH_ANSWER_RATE,
            NEIGH_ANSWER_BURST,
        )));
        VxlanBackend {
            config,
            fdbs,
            neigh_caches,
            icmp,
            neigh_limiter,
        }
    }

    /// The settings.
    pub fn config(&self) -> &VxlanConfig {
        &self.config
    }

    /// The learned FDB of VNI index `device` (shared by every clone of this backend), locked.
    pub fn fdb(&self, device: usize) -> Option<MutexGuard<'_, Fdb>> {
        self.fdbs
            .get(device)
            .map(|f| f.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The neighbour entries learnt for VNI index `device` (shared by every clone of this
    /// backend; empty unless [`VxlanConfig::neigh_learning`]), locked.
    pub fn neigh_cache(&self, device: usize) -> Option<MutexGuard<'_, NeighCache>> {
        self.neigh_caches
            .get(device)
            .map(|c| c.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The proxy's answer to an ARP request or neighbour solicitation read from L2 device
    /// `device`, written in place, if the VNI's neighbour table knows the address.
    fn proxy_answer(
        &self,
        table: &SubnetTable,
        device: usize,
        buf: &mut [u8],
        start: usize,
        len: usize,
        now_ms: u64,
    ) -> Option<core::ops::Range<usize>> {
        let ethertype = ethernet::Frame::new_checked(buf.get(start..start + len)?)
            .ok()?
            .ethertype();
        if ethertype != ETHERTYPE_ARP && ethertype != ETHERTYPE_IPV6 {
            return None;
        }
        let learning = self.config.neigh_learning;
        neigh::proxy(buf, start, len, |ip| {
            // Static entries first: like static FDB entries, learning never overrides them.
            if let Some(mac) = table.static_neigh(ip) {
                return Some(mac);
            }
            if !learning {
                return None;
            }
            self.neigh_cache(device)?.lookup(ip, now_ms)
        })
    }

    fn device_of_vni(&self, vni: u32) -> Option<usize> {
        self.config.vnis.iter().position(|v| v.vni == vni)
    }

    fn reply_to_device(
        &mut self,
        device: usize,
        buf: &mut [u8],
        offender: core::ops::Range<usize>,
        kind: IcmpErrorKind,
        cause: DropReason,
        now_ms: u64,
    ) -> Verdict {
        // As in the UDP backend: from the unreachable destination, never a local address.
        let src = match parse_inner(&buf[offender.clone()]) {
            Some(inner) => inner.dst,
            None => return Verdict::Drop(cause),
        };
        self.icmp
            .reply_to_device(buf, offender, src, kind, device, cause, now_ms)
    }

    fn l3_out(
        &mut self,
        table: &SubnetTable,
        device: usize,
        buf: &mut [u8],
        start: usize,
        len: usize,
        now_ms: u64,
    ) -> Verdict {
        let Some(inner) = parse_inner(&buf[start..start + len]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let len = inner.len;
        let Some(peer) = table.lookup(inner.dst).and_then(|id| table.peer(id)) else {
            let kind = IcmpErrorKind::NetUnreachable;
            return self.reply_to_device(
                device,
                buf,
                start..start + len,
                kind,
                DropReason::NoRoute,
                now_ms,
            );
        };
        let Some(peer_mac) = peer.vtep_mac else {
            return Verdict::Drop(DropReason::NoVtepMac);
        };
        let dest = peer.endpoint;
        let room = self.config.max_payload.saturating_sub(L3_ENCAP_LEN);
        if let Some(mtu) = too_big_mtu(&inner, room) {
            let kind = IcmpErrorKind::TooBig {
                mtu: u32::try_from(mtu).unwrap_or(u32::MAX),
            };
            return self.reply_to_device(
                device,
                buf,
                start..start + len,
                kind,
                DropReason::TooBig,
                now_ms,
            );
        }
        if start < L3_ENCAP_LEN {
            return Verdict::Drop(DropReason::Malformed);
        }
        let flow = flowhash::flow_hash_ip(&buf[start..start + len]);
        let vc = &self.config.vnis[device];
        let eth_at = start - ethernet::HEADER_LEN;
        let mut frame = ethernet::Frame::new_unchecked(&mut buf[eth_at..start]);
        ethernet::Repr {
            src_addr: vc.vtep_mac,
            dst_addr: peer_mac,
            ethertype: if inner.dst.is_ipv4() {
                ETHERTYPE_IPV4
            } else {
                ETHERTYPE_IPV6
            },
        }
        .emit(&mut frame);
        write_vxlan_header(buf, start - L3_ENCAP_LEN, vc.vni);
        Verdict::SendToPeer {
            dest,
            range: start - L3_ENCAP_LEN..start + len,
            flow: Some(flow),
        }
    }

    fn l2_out(
        &mut self,
        table: &SubnetTable,
        device: usize,
        buf: &mut [u8],
        start: usize,
        len: usize,
        now_ms: u64,
    ) -> Verdict {
        if ethernet::Frame::new_checked(&buf[start..start + len]).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        if self.config.proxy {
            if let Some(range) = self.proxy_answer(table, device, buf, start, len, now_ms) {
                return Verdict::AnswerToDevice { device, range };
            }
        }
        let frame = ethernet::Frame::new_unchecked(&buf[start..start + len]);
        if len + vxlan::HEADER_LEN > self.config.max_payload {
            return Verdict::Drop(DropReason::TooBig);
        }
        if start < vxlan::HEADER_LEN {
            return Verdict::Drop(DropReason::Malformed);
        }
        let dst = frame.dst_addr();
        let flow = flowhash::flow_hash(&buf[start..start + len]);
        write_vxlan_header(buf, start - vxlan::HEADER_LEN, self.config.vnis[device].vni);
        let range = start - vxlan::HEADER_LEN..start + len;
        if dst.is_unicast() {
            // Static entries first: like the kernel's permanent FDB entries, learning never
            // overrides them.
            let fixed = table
                .static_fdb(&dst)
                .and_then(|id| table.peer(id))
                .map(|p| p.endpoint);
            let known = fixed.or_else(|| self.fdb(device).and_then(|mut f| f.lookup(&dst, now_ms)));
            if let Some(dest) = known {
                return Verdict::SendToPeer {
                    dest,
                    range,
                    flow: Some(flow),
                };
            }
        }
        Verdict::Flood {
            device,
            range,
            flow: Some(flow),
        }
    }

    fn l3_in(
        &mut self,
        table: &SubnetTable,
        device: usize,
        source: SocketAddr,
        buf: &mut [u8],
        datagram: core::ops::Range<usize>,
        now_ms: u64,
    ) -> Verdict {
        let (vxlan_at, end) = (datagram.start, datagram.end);
        let vc = &self.config.vnis[device];
        let frame_at = vxlan_at + vxlan::HEADER_LEN;
        let frame = ethernet::Frame::new_unchecked(&buf[frame_at..end]);
        let (dst_mac, ethertype) = (frame.dst_addr(), frame.ethertype());
        let for_us = dst_mac == vc.vtep_mac;
        if ethertype == ETHERTYPE_ARP || ethertype == ETHERTYPE_IPV6 {
            if let Some(answer) = neigh::answer(
                buf,
                frame_at,
                end - frame_at,
                vc.vtep_mac,
                vc.local_v4,
                vc.local_v6,
            ) {
                let allowed = self
                    .neigh_limiter
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .allow(now_ms);
                if !allowed {
                    return Verdict::Drop(DropReason::NeighRateLimited);
                }
                // The answer starts where the frame did: the VXLAN header goes back in front.
                let vni = vc.vni;
                write_vxlan_header(buf, vxlan_at, vni);
                let dest = SocketAddr::new(source.ip(), self.config.port);
                return Verdict::ReplyToPeer {
                    dest,
                    range: vxlan_at..answer.end,
                    cause: None,
                };
            }
        }
        if !for_us {
            return Verdict::Drop(DropReason::WrongDestMac);
        }
        if ethertype != ETHERTYPE_IPV4 && ethertype != ETHERTYPE_IPV6 {
            return Verdict::Drop(DropReason::UnsupportedEthertype);
        }
        let ip_at = frame_at + ethernet::HEADER_LEN;
        let inner = match parse_inner(&buf[ip_at..end]) {
            Some(inner) if (inner.src.is_ipv4()) == (ethertype == ETHERTYPE_IPV4) => inner,
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        if self.config.check_inner_source {
            let sender = table
                .peer_by_endpoint(source.ip())
                .and_then(|id| table.peer(id));
            if !sender.is_some_and(|p| p.owns(inner.src)) {
                return Verdict::Drop(DropReason::SpoofedSource);
            }
        }
        if never_tunnelled(inner.dst) {
            return Verdict::Drop(DropReason::BadDestination);
        }
        // Ethernet padding after the IP packet is not delivered.
        Verdict::DeliverToDevice {
            device,
            range: ip_at..ip_at + inner.len,
        }
    }
}

impl Backend for VxlanBackend {
    fn headroom(&self) -> usize {
        HEADROOM
    }

    fn devices(&self) -> usize {
        self.config.vnis.len()
    }

    fn device_layer(&self, device: usize) -> Option<DeviceLayer> {
        self.config.vnis.get(device).map(|v| match v.mode {
            VxlanMode::L3 => DeviceLayer::L3,
            VxlanMode::L2 => DeviceLayer::L2,
        })
    }

    fn device_name(&self, device: usize) -> Option<&str> {
        self.config.vnis.get(device)?.device.as_deref()
    }

    fn handle_device_packet(
        &mut self,
        tables: &[Arc<SubnetTable>],
        device: usize,
        pkt: PacketBuf<'_>,
        now_ms: u64,
    ) -> Verdict {
        let (buf, start, len) = pkt.into_parts();
        let (Some(vc), Some(table)) = (self.config.vnis.get(device), tables.get(device)) else {
            return Verdict::Drop(DropReason::UnknownVni);
        };
        if start.checked_add(len).is_none_or(|end| end > buf.len()) {
            return Verdict::Drop(DropReason::Malformed);
        }
        match vc.mode {
            VxlanMode::L3 => self.l3_out(table, device, buf, start, len, now_ms),
            VxlanMode::L2 => self.l2_out(table, device, buf, start, len, now_ms),
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
        let Some(end) = start.checked_add(len).filter(|&e| e <= buf.len()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if len < vxlan::HEADER_LEN + ethernet::HEADER_LEN {
            return Verdict::Drop(DropReason::VxlanTooShort);
        }
        let header = vxlan::Header::new_unchecked(&buf[start..end]);
        if !header.has_vni_flag() {
            return Verdict::Drop(DropReason::VxlanNoIFlag);
        }
        let Some(device) = self.device_of_vni(header.vni()) else {
            return Verdict::Drop(DropReason::UnknownVni);
        };
        let Some(table) = tables.get(device) else {
            return Verdict::Drop(DropReason::UnknownVni);
        };
        if self.config.check_peer && table.peer_by_endpoint(source.ip()).is_none() {
            return Verdict::Drop(DropReason::UnknownPeer);
        }
        let frame_at = start + vxlan::HEADER_LEN;
        let src_mac = ethernet::Frame::new_unchecked(&buf[frame_at..end]).src_addr();
        let vc = &self.config.vnis[device];
        if src_mac == vc.vtep_mac {
            return Verdict::Drop(DropReason::OwnSourceMac);
        }
        match vc.mode {
            VxlanMode::L3 => self.l3_in(table, device, source, buf, start..end, now_ms),
            VxlanMode::L2 => {
                if !src_mac.is_unicast() || src_mac == EthernetAddress::default() {
                    return Verdict::Drop(DropReason::Malformed);
                }
                let vtep = SocketAddr::new(source.ip(), self.config.port);
                // A MAC pinned to another VTEP by a static entry does not move (the kernel's
                // vxlan_snoop: "Don't migrate static entries, drop packets").
                let pinned = table.static_fdb(&src_mac).and_then(|id| table.peer(id));
                if pinned.is_some_and(|p| p.endpoint.ip() != source.ip()) {
                    return Verdict::Drop(DropReason::SpoofedSource);
                }
                if self.config.learning && pinned.is_none() {
                    if let Some(mut fdb) = self.fdb(device) {
                        fdb.learn(src_mac, vtep, now_ms);
                    }
                }
                if self.config.neigh_learning {
                    // What the frame announces; a static entry is never shadowed.
                    let announced = neigh::binding(&buf[frame_at..end])
                        .filter(|(ip, _)| table.static_neigh(*ip).is_none());
                    if let Some((ip, mac)) = announced {
                        if let Some(mut cache) = self.neigh_cache(device) {
                            cache.learn(ip, mac, now_ms);
                        }
                    }
                }
                Verdict::DeliverToDevice {
                    device,
                    range: frame_at..end,
                }
            }
        }
    }

    fn icmp_rate_limited(&self) -> u64 {
        self.icmp.rate_limited()
    }

    fn on_tick(&mut self, now_ms: u64) {
        for fdb in self.fdbs.iter() {
            fdb.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .expire(now_ms);
        }
        if self.config.neigh_learning {
            for cache in self.neigh_caches.iter() {
                cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .expire(now_ms);
            }
        }
    }
}

#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod tests;
