//! The interface between the engine and a backend (flannel UDP, VXLAN).
//!
//! A backend is the per-worker, sans-IO decision maker: the engine reads a packet from
//! device `device` or a datagram from the socket into a buffer with headroom, hands it to
//! the backend as a [`PacketBuf`] with the current routing snapshots (one [`SubnetTable`] per
//! device), and carries out the returned [`Verdict`]. The backend never does I/O and never
//! reads a clock.
//!
//! ## Contracts the engine checks
//! - Devices: the engine's device `i` must be the backend's device `i`. When it starts, the
//!   engine compares its device count and each device's layer ([`DeviceLayer`]: a TUN for
//!   an L3 device, a TAP for an L2 one) and name, where the backend knows one
//!   ([`Backend::device_name`]), so a mis-ordered device list cannot cross-wire VNIs.
//! - Ranges: every range in a verdict must lie inside the buffer the backend was handed; the
//!   engine checks it and counts a bad one as [`crate::verdict::DropReason::BadVerdict`],
//!   never panicking on it.
//! - Super-packets: with offloads on, the engine hands the backend the *first segment* of a
//!   TCP/UDP super-packet (its IP length rewritten to that segment's) and applies the
//!   verdict to every segment: a packet to a peer becomes a GSO train of equal-size
//!   datagrams, each with the prefix the backend wrote in front of the first one.

use core::ops::Range;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::table::SubnetTable;
use crate::verdict::Verdict;

/// A packet in a caller-owned buffer: the bytes `buffer[start..start + len]`, with
/// `buffer[..start]` free as headroom (where encapsulation headers and ICMP errors are
/// written in place) and `buffer[start + len..]` free as tailroom.
///
/// The bounds are checked once, in [`PacketBuf::new`]; the accessors cannot panic.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    buf: &'a mut [u8],
    start: usize,
    len: usize,
}

impl<'a> PacketBuf<'a> {
    /// The packet `buf[start..start + len]`; `None` if that range is not inside `buf`.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Option<PacketBuf<'a>> {
        let end = start.checked_add(len)?;
        (end <= buf.len()).then_some(PacketBuf { buf, start, len })
    }

    /// Where the packet starts in the buffer (also the headroom in bytes).
    pub fn start(&self) -> usize {
        self.start
    }

    /// The packet's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packet's range in the buffer.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// The length of the whole buffer (headroom, packet and tailroom).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The packet's bytes.
    pub fn packet(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The packet's bytes, writable.
    pub fn packet_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The same packet, borrowed for a shorter time (to hand it on and keep it).
    pub fn reborrow(&mut self) -> PacketBuf<'_> {
        PacketBuf {
            buf: self.buf,
            start: self.start,
            len: self.len,
        }
    }

    /// The whole buffer, its start and the packet's length: what the backends' in-place
    /// code works on.
    pub fn into_parts(self) -> (&'a mut [u8], usize, usize) {
        (self.buf, self.start, self.len)
    }
}

/// What a device carries: IP packets (a TUN) or Ethernet frames (a TAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceLayer {
    /// IP packets (TUN).
    L3,
    /// Ethernet frames (TAP).
    L2,
}

/// What the engine calls for every packet.
pub trait Backend: Send + 'static {
    /// Bytes of headroom this backend needs in front of each packet.
    fn headroom(&self) -> usize;

    /// How many devices this backend serves (the UDP backend one, VXLAN one per VNI).
    fn devices(&self) -> usize {
        1
    }

    /// What device `device` must carry.
    fn device_layer(&self, device: usize) -> Option<DeviceLayer> {
        (device < self.devices()).then_some(DeviceLayer::L3)
    }

    /// The name device `device` must have, if the backend knows it (then the engine refuses
    /// a device with another name).
    fn device_name(&self, _device: usize) -> Option<&str> {
        None
    }

    /// A packet read from device `device`.
    fn handle_device_packet(
        &mut self,
        tables: &[Arc<SubnetTable>],
        device: usize,
        pkt: PacketBuf<'_>,
        now_ms: u64,
    ) -> Verdict;

    /// A datagram payload received from `source`.
    fn handle_datagram(
        &mut self,
        tables: &[Arc<SubnetTable>],
        source: SocketAddr,
        pkt: PacketBuf<'_>,
        now_ms: u64,
    ) -> Verdict;

    /// ICMP errors suppressed by the rate limit so far.
    fn icmp_rate_limited(&self) -> u64 {
        0
    }

    /// Periodic housekeeping (e.g. FDB ageing), called at least once a second.
    fn on_tick(&mut self, _now_ms: u64) {}

    /// What the engine's inspector queries (`weft::dataplane::engine::Inspector`): the
    /// backend itself, or for a wrapper such as [`crate::policy::Policed`], the backend it
    /// wraps.
    fn inspect_target(&self) -> &dyn std::any::Any
    where
        Self: Sized,
    {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_buf_checks_its_bounds_once() {
        let mut bytes = [0u8; 10];
        assert!(PacketBuf::new(&mut bytes, 8, 3).is_none());
        assert!(PacketBuf::new(&mut bytes, usize::MAX, 2).is_none());
        let mut pkt = PacketBuf::new(&mut bytes, 4, 6).unwrap();
        assert_eq!((pkt.start(), pkt.len(), pkt.range()), (4, 6, 4..10));
        pkt.packet_mut()[0] = 7;
        assert_eq!(pkt.packet()[0], 7);
        let (buf, start, len) = pkt.into_parts();
        assert_eq!((buf.len(), start, len), (10, 4, 6));
    }
}
