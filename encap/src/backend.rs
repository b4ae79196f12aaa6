//! The interface between the engine and a backend (flannel UDP, VXLAN).
//!
//! A backend is the per-worker, sans-IO decision maker: the engine reads a packet from
//! device `device` or a datagram from the socket into a buffer with headroom, hands it to
//! the backend with the current routing snapshots (one [`SubnetTable`] per device), and
//! carries out the returned [`Verdict`]. The backend never does I/O and never reads a clock.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::table::SubnetTable;
use crate::verdict::Verdict;

/// What the engine calls for every packet.
pub trait Backend: Send + 'static {
    /// Bytes of headroom this backend needs in front of each packet.
    fn headroom(&self) -> usize;

    /// A packet read from device `device` is at `buf[start..start + len]`.
    fn handle_device_packet(
        &mut self,
        tables: &[Arc<SubnetTable>],
        device: usize,
        buf: &mut [u8],
        start: usize,
        len: usize,
        now_ms: u64,
    ) -> Verdict;

    /// A datagram payload received from `source` is at `buf[start..start + len]`.
    fn handle_datagram(
        &mut self,
        tables: &[Arc<SubnetTable>],
        source: SocketAddr,
        buf: &mut [u8],
        start: usize,
        len: usize,
        now_ms: u64,
    ) -> Verdict;

    /// ICMP errors suppressed by the rate limit so far.
    fn icmp_rate_limited(&self) -> u64 {
        0
    }

    /// Periodic housekeeping (e.g. FDB ageing), called at least once a second.
    fn on_tick(&mut self, _now_ms: u64) {}
}
