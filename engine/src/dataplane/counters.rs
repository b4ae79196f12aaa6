//! Counters: what went through, and every drop by reason.
//!
//! Workers count into a plain [`LocalCounters`] on the hot path and publish the deltas into
//! the shared atomic [`Counters`] once per loop iteration, so the per-packet cost is a
//! non-atomic add. [`Counters::snapshot`] gives a [`Stats`] value with stable names.

use std::sync::atomic::{AtomicU64, Ordering};

use weft_encap::verdict::DropReason;

macro_rules! counters {
    ($( $(#[$doc:meta])* $field:ident, )*) => {
        /// Per-worker counters, written without atomics; see [`Counters::publish`].
        #[derive(Debug, Clone, Default)]
        pub struct LocalCounters {
            $( $(#[$doc])* pub $field: u64, )*
            /// Dropped packets, indexed by [`DropReason::index`].
            pub drops: [u64; DropReason::COUNT],
        }

        /// The shared counters of one engine.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $field: AtomicU64, )*
            drops: [AtomicU64; DropReason::COUNT],
        }

        impl Counters {
            /// Adds `local` into the shared counters and zeroes it.
            pub fn publish(&self, local: &mut LocalCounters) {
                $(
                    if local.$field != 0 {
                        self.$field.fetch_add(local.$field, Ordering::Relaxed);
                        local.$field = 0;
                    }
                )*
                for (shared, n) in self.drops.iter().zip(local.drops.iter_mut()) {
                    if *n != 0 {
                        shared.fetch_add(*n, Ordering::Relaxed);
                        *n = 0;
                    }
                }
            }

            /// A consistent-enough copy of every counter, with its name.
            pub fn snapshot(&self) -> Stats {
                let mut entries = vec![$( (stringify!($field).to_owned(), self.$field.load(Ordering::Relaxed)), )*];
                for r in DropReason::ALL {
                    entries.push((format!("drop_{}", r.name()), self.drops[r.index()].load(Ordering::Relaxed)));
                }
                Stats { entries }
            }
        }
    };
}

counters! {
    /// Packets read from the device.
    device_rx_packets,
    /// Datagrams sent to peers.
    tx_packets,
    /// Payload bytes of the datagrams sent to peers.
    tx_bytes,
    /// Datagrams received from the underlay.
    udp_rx_packets,
    /// Inner packets delivered to the device.
    rx_packets,
    /// Bytes of the inner packets delivered to the device.
    rx_bytes,
    /// ICMP errors generated (written to the device or sent back to a peer).
    icmp_sent,
    /// ICMP errors suppressed by the rate limit.
    icmp_rate_limited,
    /// ARP replies and neighbour advertisements sent for this host's VTEP address.
    neigh_replies,
    /// ARP requests and neighbour solicitations read from a VXLAN L2 device and answered
    /// into it by the proxy (`[vxlan] proxy`) instead of being flooded.
    neigh_proxied,
    /// Frames flooded to every VTEP of their VNI (VXLAN L2 broadcast, multicast and unknown
    /// unicast), counted once per frame however many copies go out.
    flood_packets,
    /// Batched receive calls (recvmmsg).
    recv_batches,
    /// Batched send calls (sendmmsg).
    send_batches,
    /// Super-packets (TSO/USO, up to 64 KB) read from a device and cut into segments.
    device_rx_super,
    /// Segments cut out of those super-packets.
    device_rx_segments,
    /// UDP GSO trains sent (one `UDP_SEGMENT` message each, several datagrams).
    gso_trains,
    /// Trains a socket refused with `EIO`/`EINVAL`: GSO was turned off for that socket and
    /// the datagrams re-sent one by one.
    gso_fallbacks,
    /// Trains a socket refused with `EMSGSIZE`: re-cut into shorter trains.
    gso_recuts,
    /// Received buffers that held a UDP GRO train of several datagrams.
    gro_trains,
    /// Super-packets written to a device (coalesced segments, or a peer's unsegmented one).
    device_tx_super,
    /// Packets that went into those super-packets (coalesced segments).
    coalesced_packets,
}

impl LocalCounters {
    /// Counts one dropped packet.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
}

/// The counters of every worker of an engine, summed when read.
#[derive(Debug, Clone, Default)]
pub struct EngineCounters {
    workers: Vec<std::sync::Arc<Counters>>,
    gauges: Vec<(String, u64)>,
}

impl EngineCounters {
    /// Counters of these workers, plus fixed `(name, value)` facts about the engine (worker
    /// count, offloads in use) reported with them.
    pub fn new(workers: Vec<std::sync::Arc<Counters>>, gauges: Vec<(String, u64)>) -> Self {
        EngineCounters { workers, gauges }
    }

    /// Each worker's counters on their own, in worker order (without the gauges).
    pub fn per_worker(&self) -> Vec<Stats> {
        self.workers.iter().map(|w| w.snapshot()).collect()
    }

    /// The fixed facts about the engine (worker count, offloads in use).
    pub fn gauges(&self) -> &[(String, u64)] {
        &self.gauges
    }

    /// The sum over all workers, then the gauges.
    pub fn snapshot(&self) -> Stats {
        let mut total: Option<Stats> = None;
        for w in &self.workers {
            let s = w.snapshot();
            match &mut total {
                None => total = Some(s),
                Some(t) => {
                    for (a, b) in t.entries.iter_mut().zip(s.entries) {
                        a.1 += b.1;
                    }
                }
            }
        }
        let mut stats = total.unwrap_or_else(|| Counters::default().snapshot());
        stats.entries.extend(self.gauges.iter().cloned());
        if self.workers.len() > 1 {
            // How the traffic spreads over the workers.
            for (i, w) in self.workers.iter().enumerate() {
                let s = w.snapshot();
                for name in ["device_rx_packets", "udp_rx_packets"] {
                    stats
                        .entries
                        .push((format!("worker{i}_{name}"), s.get(name).unwrap_or(0)));
                }
            }
        }
        stats
    }
}

/// A snapshot of an engine's counters: `(name, value)` pairs in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    entries: Vec<(String, u64)>,
}

impl Stats {
    /// Adds an entry (a control plane's own counter or gauge) after the engine's.
    pub fn push(&mut self, name: &str, value: u64) {
        self.entries.push((name.to_owned(), value));
    }

    /// Every counter, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), *v))
    }

    /// The value of the counter called `name` (e.g. `tx_packets`, `drop_no_route`).
    pub fn get(&self, name: &str) -> Option<u64> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.get(&format!("drop_{}", reason.name())).unwrap_or(0)
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, value) in self.iter() {
            writeln!(f, "{name} {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_moves_deltas() {
        let shared = Counters::default();
        let mut local = LocalCounters {
            tx_packets: 3,
            ..Default::default()
        };
        local.drop(DropReason::NoRoute);
        local.drop(DropReason::NoRoute);
        shared.publish(&mut local);
        assert_eq!(local.tx_packets, 0);
        local.tx_packets = 2;
        shared.publish(&mut local);
        let s = shared.snapshot();
        assert_eq!(s.get("tx_packets"), Some(5));
        assert_eq!(s.drops(DropReason::NoRoute), 2);
        assert_eq!(s.get("drop_no_route"), Some(2));
        assert!(s.to_string().contains("drop_spoofed_source 0\n"));
    }
}
