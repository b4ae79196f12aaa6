//! The offload glue between a worker and its devices: vnet headers, what a device accepts,
//! and writing what the receive path delivers (coalesced, GSO, or one by one).
//!
//! The pure parts (parsing and emitting `virtio_net_hdr`, splitting super-packets,
//! coalescing segments, checksums) are in [`weft_encap::offload`]; this module decides which
//! of them a device needs and does the writes.
//!
//! ## What a device accepts
//! - A device without a vnet header gets plain packets of at most its MTU: a peer's
//!   unsegmented super-packet (a kernel vxlan sends its TSO frames whole over a veth) is cut
//!   here, and a partial checksum (what the kernel leaves for the receiving side to finish)
//!   is finished here.
//! - A device with a vnet header gets every packet behind one. Packets longer than its MTU
//!   and packets with a partial checksum are written with `NEEDS_CSUM` (and a GSO type), so
//!   the kernel finishes and segments them itself, as it does for its own vxlan.
//! - Coalesced super-packets only go to a device whose GSO writes passed a start-up probe
//!   (some kernels refuse them with `EINVAL`; tailscale found one), and a refusal at runtime
//!   turns them off for the device and writes the packets one by one.
//!
//! Checksums are checked before anything is handed over with `NEEDS_CSUM`: a corrupt
//! segment is dropped (`drop_bad_checksum`), never laundered into a "valid" packet.

use std::io::{self, IoSlice};
use std::ops::Range;

use weft_encap::backend::DeviceLayer;
use weft_encap::offload::coalesce::{Coalescer, Member, MAX_MEMBERS};
use weft_encap::offload::split::split;
use weft_encap::offload::vnet::{
    gso_header_for, maybe_partial, OffloadError, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, VNET_HDR_LEN,
};
use weft_encap::verdict::DropReason;
use weft_encap::wire::checksum::{self, fold};
use weft_encap::wire::{ipv4, PROTO_TCP};

use crate::dataplane::counters::LocalCounters;
use crate::dataplane::device::Device;
use crate::dataplane::engine::MAX_PACKET;

/// The header of a packet that needs nothing from the kernel.
pub(crate) const ZERO_VNET_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// Set (to anything) to make the start-up probe report that the kernel refuses coalesced
/// writes: the end-to-end tests use it to exercise the fallback on kernels that accept them.
pub const FAULT_REFUSE_GSO_WRITE: &str = "WEFT_FAULT_REFUSE_TUN_GSO_WRITE";

/// What one device queue offers and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceOffload {
    /// Every packet read and written has a vnet header.
    pub(crate) vnet: bool,
    /// The kernel may hand over TCP super-packets.
    pub(crate) tso: bool,
    /// The kernel may hand over UDP super-packets.
    pub(crate) uso: bool,
    /// Coalesced (GSO) packets may be written.
    pub(crate) gso_write: bool,
    /// Where the IP header starts in a packet (14 on a TAP, after the Ethernet header).
    pub(crate) l3_offset: usize,
    /// The longest IP packet the device takes without GSO.
    pub(crate) mtu: usize,
}

impl DeviceOffload {
    /// Looks at what `device` was opened with and, where coalesced writes could be used,
    /// probes whether the kernel takes them.
    pub(crate) fn detect<D: Device>(device: &mut D, layer: DeviceLayer, allowed: bool) -> Self {
        let vnet = device.vnet_hdr();
        let flags = device.offload();
        let l3_offset = if layer == DeviceLayer::L2 {
            ETHERNET_HEADER
        } else {
            0
        };
        let gso_write = vnet && allowed && probe_gso_write(device, l3_offset);
        DeviceOffload {
            vnet,
            tso: flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0,
            uso: flags & (libc::TUN_F_USO4 | libc::TUN_F_USO6) != 0,
            gso_write,
            l3_offset,
            mtu: device.mtu().unwrap_or(MAX_PACKET),
        }
    }
}

/// Bytes of the Ethernet header in front of a TAP's IP packets.
const ETHERNET_HEADER: usize = 14;

/// Whether `pkt` is an IP packet behind the device's `l3_offset`-byte prefix: always on a
/// TUN; on a TAP, when the Ethernet type is IPv4 or IPv6 and the version field agrees. Frames
/// that are not (ARP, VLAN-tagged, anything else) are written as they are, never parsed as
/// IP at offset 14, merged or given a checksum offload.
pub(crate) fn carries_ip(pkt: &[u8], l3_offset: usize) -> bool {
    if l3_offset != ETHERNET_HEADER {
        return l3_offset == 0;
    }
    let version = pkt.get(ETHERNET_HEADER).map(|b| b >> 4);
    match pkt.get(12..14) {
        Some([0x08, 0x00]) => version == Some(4),
        Some([0x86, 0xdd]) => version == Some(6),
        _ => false,
    }
}

/// Writes a two-segment TCP super-packet from and to 0.0.0.0 with TTL 0 (a martian the
/// stack drops right after the device accepted it) and reports whether the kernel took it.
/// On a TAP (`l3_offset` 14) it goes in an Ethernet frame from and to the all-zero MAC: a
/// bridge drops a frame with an invalid source address, and the TAP's own stack one that is
/// not addressed to it, so nothing is forwarded or flooded.
fn probe_gso_write<D: Device>(device: &mut D, l3_offset: usize) -> bool {
    if std::env::var_os(FAULT_REFUSE_GSO_WRITE).is_some() {
        tracing::info!("{FAULT_REFUSE_GSO_WRITE} is set: treating GSO writes as refused");
        return false;
    }
    const PAYLOAD: usize = 200;
    let mut frame = [0u8; ETHERNET_HEADER + 40 + PAYLOAD];
    let l3_offset = l3_offset.min(ETHERNET_HEADER);
    if l3_offset == ETHERNET_HEADER {
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
    }
    let (prefix, pkt) = frame.split_at_mut(ETHERNET_HEADER);
    let total = pkt.len() as u16;
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut pkt[..]);
        ipv4::Repr {
            src_addr: std::net::Ipv4Addr::UNSPECIFIED,
            dst_addr: std::net::Ipv4Addr::UNSPECIFIED,
            protocol: PROTO_TCP,
            payload_len: 20 + PAYLOAD,
            ttl: 0,
        }
        .emit(&mut ip);
    }
    pkt[20 + 12] = 5 << 4; // data offset
    pkt[20 + 13] = 0x10; // ACK
    let pseudo = checksum::pseudo_header_v4(
        std::net::Ipv4Addr::UNSPECIFIED,
        std::net::Ipv4Addr::UNSPECIFIED,
        PROTO_TCP,
        u32::from(total) - 20,
    );
    pkt[36..38].copy_from_slice(&fold(pseudo).to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: (l3_offset + 40) as u16,
        gso_size: (PAYLOAD / 2) as u16,
        csum_start: (l3_offset + 20) as u16,
        csum_offset: 16,
    }
    .emit();
    let prefix = &prefix[ETHERNET_HEADER - l3_offset..];
    match device.send_vectored(&[IoSlice::new(&hdr), IoSlice::new(prefix), IoSlice::new(pkt)]) {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(
                "the kernel refuses GSO writes to the device ({e}); writing one packet at a time"
            );
            false
        }
        Err(e) => {
            // Not the kernel's verdict on GSO (e.g. the device is down): keep them, a
            // refusal at runtime still turns them off.
            tracing::debug!("GSO write probe inconclusive: {e}");
            true
        }
    }
}

/// Writes `parts` as one packet, retrying an interrupted call.
pub(crate) fn write_device_raw<D: Device>(
    device: &mut D,
    parts: &[IoSlice<'_>],
) -> io::Result<usize> {
    loop {
        match device.send_vectored(parts) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Writes `parts` as one packet, counting a failure as a drop.
pub(crate) fn write_device<D: Device>(
    device: &mut D,
    local: &mut LocalCounters,
    parts: &[IoSlice<'_>],
) -> bool {
    match write_device_raw(device, parts) {
        Ok(_) => true,
        Err(e) => {
            let len: usize = parts.iter().map(|p| p.len()).sum();
            tracing::debug!("device write of {len} bytes failed: {e}");
            local.drop(DropReason::IoError);
            false
        }
    }
}

/// A device queue as the write functions see it (the worker's slot, whatever its device
/// type).
pub(crate) trait WriteTarget {
    /// What the device takes.
    fn offload(&self) -> &DeviceOffload;
    /// The same, to turn GSO writes off.
    fn offload_mut(&mut self) -> &mut DeviceOffload;
    /// Writes one packet gathered from `parts`.
    fn write(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// A packet the receive path delivers to device `device`: `rx_bufs[buf][range]`.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) device: usize,
    pub(crate) buf: usize,
    pub(crate) range: Range<usize>,
}

/// Writes one delivered packet (whole, an IP packet at `pkt[l3..]`), giving the kernel what
/// it needs: a finished checksum or `NEEDS_CSUM`, and a packet longer than the MTU cut here
/// or handed over with GSO. Counts it.
pub(crate) fn write_single<T: WriteTarget>(
    target: &mut T,
    pkt: &mut [u8],
    local: &mut LocalCounters,
    scratch: &mut [u8],
) {
    let off = *target.offload();
    let len = pkt.len();
    let oversize = len.saturating_sub(off.l3_offset) > off.mtu;
    let mut hdr = VnetHdr::default();
    let ip = carries_ip(pkt, off.l3_offset);
    if ip && (oversize || maybe_partial(pkt, off.l3_offset)) {
        match gso_header_for(pkt, off.l3_offset, off.mtu) {
            Ok(h) => hdr = h,
            Err(OffloadError::BadChecksum) => {
                local.drop(DropReason::BadChecksum);
                return;
            }
            // Not TCP/UDP, or not a packet the kernel could be asked to finish: as it is.
            Err(_) => {}
        }
    }
    if hdr.is_gso() && !(off.vnet && off.gso_write) {
        write_cut(target, pkt, hdr, local, scratch);
        return;
    }
    if hdr.needs_csum() && !off.vnet {
        let (start, offset) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
        if weft_encap::offload::vnet::finish_checksum(pkt, start, offset).is_err() {
            local.drop(DropReason::BadOffload);
            return;
        }
    }
    let emitted = hdr.emit();
    let with_hdr = [IoSlice::new(&emitted), IoSlice::new(pkt)];
    let without = [IoSlice::new(pkt)];
    let parts: &[IoSlice<'_>] = if off.vnet { &with_hdr } else { &without };
    match target.write(parts) {
        Ok(_) => {
            local.rx_packets += 1;
            local.rx_bytes += len as u64;
            if hdr.is_gso() {
                local.device_tx_super += 1;
            }
        }
        Err(e) if hdr.is_gso() && e.raw_os_error() == Some(libc::EINVAL) => {
            refuse_gso_writes(target, local, &e);
            write_cut(target, pkt, hdr, local, scratch);
        }
        Err(e) => {
            tracing::debug!("device write of {len} bytes failed: {e}");
            local.drop(DropReason::IoError);
        }
    }
}

/// Turns coalesced writes off for a device whose kernel refused one.
fn refuse_gso_writes<T: WriteTarget>(target: &mut T, local: &mut LocalCounters, e: &io::Error) {
    tracing::warn!(
        "the kernel refused a GSO write to the device ({e}); writing one packet at a time"
    );
    target.offload_mut().gso_write = false;
    local.gso_fallbacks += 1;
}

/// Cuts a packet longer than the device's MTU into segments (checksums computed) and writes
/// them one by one.
fn write_cut<T: WriteTarget>(
    target: &mut T,
    pkt: &[u8],
    hdr: VnetHdr,
    local: &mut LocalCounters,
    scratch: &mut [u8],
) {
    let off = *target.offload();
    let cut = match hdr.gso() {
        Ok(Some(gso)) => split(pkt, off.l3_offset, gso, scratch),
        _ => Err(OffloadError::Malformed),
    };
    let Ok(cut) = cut else {
        local.drop(DropReason::BadOffload);
        return;
    };
    let mut at = 0;
    while at < cut.total_len {
        let end = (at + cut.segment_len).min(cut.total_len);
        let segment = &scratch[at..end];
        let with_hdr = [IoSlice::new(&ZERO_VNET_HDR), IoSlice::new(segment)];
        let without = [IoSlice::new(segment)];
        let parts: &[IoSlice<'_>] = if off.vnet { &with_hdr } else { &without };
        match target.write(parts) {
            Ok(_) => {
                local.rx_packets += 1;
                local.rx_bytes += segment.len() as u64;
            }
            Err(e) => {
                tracing::debug!("device write of {} bytes failed: {e}", segment.len());
                local.drop(DropReason::IoError);
            }
        }
        at = end;
    }
}

/// Writes what a receive batch delivered to `device`, whose target takes GSO writes: runs of
/// IP packets through `coalescer` (UDP only where the device takes USO), anything else alone,
/// everything in the order it arrived.
pub(crate) fn write_coalesced<T: WriteTarget>(
    target: &mut T,
    device: usize,
    coalescer: &mut Coalescer,
    deliveries: &[Delivery],
    rx_bufs: &mut [Box<[u8]>],
    local: &mut LocalCounters,
    scratch: &mut [u8],
) {
    coalescer.clear();
    coalescer.set_udp(target.offload().uso);
    let l3 = target.offload().l3_offset;
    for (k, del) in deliveries.iter().enumerate() {
        if del.device != device {
            continue;
        }
        let Some(pkt) = rx_bufs.get(del.buf).and_then(|b| b.get(del.range.clone())) else {
            local.drop(DropReason::BadVerdict);
            continue;
        };
        if !carries_ip(pkt, l3) {
            // Not IP behind a TAP's Ethernet header: written alone, after what came before.
            write_groups(target, coalescer, deliveries, rx_bufs, local, scratch);
            coalescer.clear();
            let pkt = &mut rx_bufs[del.buf][del.range.clone()];
            write_single(target, pkt, local, scratch);
            continue;
        }
        if !coalescer.push(k as u32, pkt, l3) {
            write_groups(target, coalescer, deliveries, rx_bufs, local, scratch);
            coalescer.clear();
            let pkt = &rx_bufs[del.buf][del.range.clone()];
            coalescer.push(k as u32, pkt, l3);
        }
    }
    write_groups(target, coalescer, deliveries, rx_bufs, local, scratch);
    coalescer.clear();
}

/// Writes the groups the coalescer made of `deliveries`: a merged group as one super-packet
/// gathered with `writev` (vnet header, the merged headers, every member's payload in place),
/// a single packet with [`write_single`].
pub(crate) fn write_groups<T: WriteTarget>(
    target: &mut T,
    coalescer: &Coalescer,
    deliveries: &[Delivery],
    rx_bufs: &mut [Box<[u8]>],
    local: &mut LocalCounters,
    scratch: &mut [u8],
) {
    for group in coalescer.groups() {
        let packet_of = |id: u32| deliveries.get(id as usize);
        if !group.is_merged() || !target.offload().gso_write {
            write_alone(target, group.members, deliveries, rx_bufs, local, scratch);
            continue;
        }
        let hdr = group.hdr.emit();
        let mut parts = [IoSlice::new(&[]); MAX_MEMBERS + 2];
        parts[0] = IoSlice::new(&hdr);
        parts[1] = IoSlice::new(group.header);
        let mut count = 2;
        let mut bytes = 0u64;
        for member in group.members.iter().take(MAX_MEMBERS) {
            let payload = packet_of(member.id).and_then(|del| {
                let pkt = rx_bufs.get(del.buf)?.get(del.range.clone())?;
                bytes += pkt.len() as u64;
                pkt.get(member.range.clone())
            });
            if let Some(payload) = payload {
                parts[count] = IoSlice::new(payload);
                count += 1;
            }
        }
        if count != group.members.len() + 2 {
            // The coalescer named bytes that are not there: a bug, counted, not written.
            local.drop(DropReason::BadVerdict);
            continue;
        }
        match target.write(&parts[..count]) {
            Ok(_) => {
                local.rx_packets += group.members.len() as u64;
                local.rx_bytes += bytes;
                local.device_tx_super += 1;
                local.coalesced_packets += group.members.len() as u64;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                refuse_gso_writes(target, local, &e);
                write_alone(target, group.members, deliveries, rx_bufs, local, scratch);
            }
            Err(e) => {
                tracing::debug!("device write of a {bytes}-byte super-packet failed: {e}");
                local.drop(DropReason::IoError);
            }
        }
    }
}

/// Writes each of `members` on its own ([`write_single`]).
fn write_alone<T: WriteTarget>(
    target: &mut T,
    members: &[Member],
    deliveries: &[Delivery],
    rx_bufs: &mut [Box<[u8]>],
    local: &mut LocalCounters,
    scratch: &mut [u8],
) {
    for member in members {
        if let Some(del) = deliveries.get(member.id as usize) {
            let pkt = &mut rx_bufs[del.buf][del.range.clone()];
            write_single(target, pkt, local, scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::device::MemoryDevice;

    fn frame(ethertype: [u8; 2], first: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&ethertype);
        f[14] = first;
        f
    }

    #[test]
    fn only_ip_behind_the_ethernet_header_counts_as_ip() {
        assert!(carries_ip(&frame([0x08, 0x00], 0x45), 14));
        assert!(carries_ip(&frame([0x86, 0xdd], 0x60), 14));
        // A version that contradicts the Ethernet type, ARP, a VLAN tag whose priority bits
        // look like an IPv4 version nibble, a frame cut before its type.
        assert!(!carries_ip(&frame([0x08, 0x00], 0x60), 14));
        assert!(!carries_ip(&frame([0x86, 0xdd], 0x45), 14));
        assert!(!carries_ip(&frame([0x08, 0x06], 0x45), 14));
        assert!(!carries_ip(&frame([0x81, 0x00], 0x45), 14));
        assert!(!carries_ip(&[0u8; 13], 14));
        assert!(!carries_ip(&[0u8; 14], 14));
        // A TUN has no prefix: its packets are IP (checked where they are parsed).
        assert!(carries_ip(&[0x45], 0));
    }

    #[test]
    fn the_tap_probe_is_a_gso_frame_between_all_zero_macs() {
        let (device, kernel) = MemoryDevice::pair().unwrap();
        let mut device = device.with_vnet_hdr(1500).with_layer(DeviceLayer::L2);
        let offload = DeviceOffload::detect(&mut device, DeviceLayer::L2, true);
        assert!(offload.gso_write && offload.l3_offset == 14, "{offload:?}");
        let mut buf = [0u8; 2048];
        let n = kernel.recv(&mut buf).expect("the probe");
        let hdr = VnetHdr::parse(&buf[..VNET_HDR_LEN]).unwrap();
        assert_eq!(
            (hdr.gso_type, hdr.hdr_len, hdr.csum_start),
            (GSO_TCPV4, 54, 34)
        );
        let eth = &buf[VNET_HDR_LEN..VNET_HDR_LEN + 14];
        assert_eq!(&eth[..12], &[0u8; 12], "from and to the all-zero MAC");
        assert_eq!(&eth[12..], &[0x08, 0x00]);
        let ip = &buf[VNET_HDR_LEN + 14..n];
        assert_eq!((ip[0], ip[8]), (0x45, 0), "IPv4, TTL 0");
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());

        // A TUN's probe has no Ethernet header.
        let (device, kernel) = MemoryDevice::pair().unwrap();
        let mut device = device.with_vnet_hdr(1500);
        assert!(DeviceOffload::detect(&mut device, DeviceLayer::L3, true).gso_write);
        let n = kernel.recv(&mut buf).expect("the probe");
        let hdr = VnetHdr::parse(&buf[..VNET_HDR_LEN]).unwrap();
        assert_eq!((hdr.hdr_len, hdr.csum_start), (40, 20));
        assert_eq!(buf[VNET_HDR_LEN], 0x45);
        assert_eq!(n, VNET_HDR_LEN + 240);
    }
}
