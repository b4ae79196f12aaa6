//! What happens to a packet: the outcome of every encap/decap decision.
//!
//! A drop is a counted outcome, not an error: every [`DropReason`] has its own counter in the
//! engine, indexed by [`DropReason::index`], and a stable name ([`DropReason::name`]) used by
//! `weft stats` and the metrics.

use core::ops::Range;
use std::net::SocketAddr;

/// Index of a peer in the [`crate::table::SubnetTable`] it was looked up in.
///
/// Peer ids are only meaningful together with the table (snapshot) that produced them.
pub type PeerId = u32;

/// The outcome of handling one packet.
///
/// Ranges index into the caller's buffer: the bytes to send or write are `buf[range]`.
/// `device` is the index of a device of the engine (and of its routing table): the UDP
/// backend has one, the VXLAN backend one per VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Send `buf[range]` as the payload of one UDP datagram to `dest`.
    SendToPeer {
        /// The peer's underlay address and port.
        dest: SocketAddr,
        /// The datagram payload.
        range: Range<usize>,
        /// Hash of the inner flow: picks the UDP source port (RFC 7348 section 5); `None`
        /// sends from the listening socket's own port (flannel's UDP backend).
        flow: Option<u32>,
    },
    /// Send `buf[range]`, a train of datagrams of `segment` bytes each (the last may be
    /// shorter), to `dest`: a TCP/UDP super-packet cut into segments, sent with UDP GSO
    /// where the socket can (one `UDP_SEGMENT` message) and one by one where it cannot.
    SendTrain {
        /// The peer's underlay address and port.
        dest: SocketAddr,
        /// The datagrams, back to back.
        range: Range<usize>,
        /// The size of every datagram but the last.
        segment: usize,
        /// As for [`Verdict::SendToPeer`].
        flow: Option<u32>,
    },
    /// Send `buf[range]` to every flood target of device `device`
    /// ([`crate::table::SubnetTable::flood_peers`]: head-end replication of broadcast,
    /// multicast and unknown unicast in VXLAN L2 mode).
    Flood {
        /// The device (VNI) whose peers receive a copy.
        device: usize,
        /// The datagram payload.
        range: Range<usize>,
        /// As for [`Verdict::SendToPeer`].
        flow: Option<u32>,
    },
    /// Write `buf[range]` to device `device` (a decapsulated packet).
    DeliverToDevice {
        /// The device.
        device: usize,
        /// The packet to write.
        range: Range<usize>,
    },
    /// The packet was dropped for `cause`, and an answer (an ICMP/ICMPv6 error) was written
    /// into the buffer at `range`, to be written into device `device`.
    ReplyToDevice {
        /// The device.
        device: usize,
        /// The answer.
        range: Range<usize>,
        /// Why the original packet was dropped.
        cause: DropReason,
    },
    /// The packet was answered in its place: the answer was written into the buffer at
    /// `range`, to be written into device `device` (the one the packet came from). Nothing
    /// was dropped: the VXLAN L2 ARP/ND proxy answers a request for an address it knows this
    /// way, instead of flooding it.
    AnswerToDevice {
        /// The device.
        device: usize,
        /// The answer (an ARP reply or a neighbour advertisement).
        range: Range<usize>,
    },
    /// The packet was consumed, and an answer was written into the buffer at `range`, to be
    /// sent back to `dest` through the tunnel: an ICMP error (the original was dropped for
    /// `cause`), or an ARP reply / neighbour advertisement (`cause` is `None`).
    ReplyToPeer {
        /// Where the answer goes.
        dest: SocketAddr,
        /// The answer, ready to send (encapsulation included).
        range: Range<usize>,
        /// Why the original packet was dropped, if it was an error.
        cause: Option<DropReason>,
    },
    /// The packet was dropped.
    Drop(DropReason),
}

impl Verdict {
    /// The bytes this verdict sends or writes, if any.
    pub fn range(&self) -> Option<&Range<usize>> {
        match self {
            Verdict::SendToPeer { range, .. }
            | Verdict::SendTrain { range, .. }
            | Verdict::Flood { range, .. }
            | Verdict::DeliverToDevice { range, .. }
            | Verdict::ReplyToDevice { range, .. }
            | Verdict::AnswerToDevice { range, .. }
            | Verdict::ReplyToPeer { range, .. } => Some(range),
            Verdict::Drop(_) => None,
        }
    }

    /// The drop reason, if this verdict drops the original packet (also when an ICMP error
    /// is sent in its place).
    pub fn drop_reason(&self) -> Option<DropReason> {
        match self {
            Verdict::Drop(r) => Some(*r),
            Verdict::ReplyToDevice { cause, .. } => Some(*cause),
            Verdict::ReplyToPeer { cause, .. } => *cause,
            _ => None,
        }
    }
}

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// Why a packet was dropped. Each reason has its own counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter-index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons (size of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, used for counters and metrics.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// Counter index of this reason, `0..COUNT`.
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// Not a well-formed IPv4/IPv6 packet (version, header length, total length vs. the
    /// bytes actually present).
    Malformed => "malformed",
    /// A datagram from an underlay address that is not a known peer.
    UnknownPeer => "unknown_peer",
    /// The inner source address is outside the subnets of the peer that sent it.
    SpoofedSource => "spoofed_source",
    /// No route for the destination (an ICMP net unreachable may have been sent).
    NoRoute => "no_route",
    /// TTL / hop limit ran out (an ICMP time exceeded may have been sent).
    TtlExceeded => "ttl_exceeded",
    /// Larger than the path allows with DF set, or IPv6 (an ICMP fragmentation needed /
    /// ICMPv6 packet too big may have been sent).
    TooBig => "too_big",
    /// The datagram did not fit the receive buffer (never happens with the default 64 KiB
    /// buffers; counted rather than silently truncated).
    Truncated => "truncated",
    /// A VXLAN datagram shorter than the VXLAN header plus an Ethernet header.
    VxlanTooShort => "vxlan_too_short",
    /// A VXLAN frame without the I flag.
    VxlanNoIFlag => "vxlan_no_i_flag",
    /// A VXLAN frame for a VNI this host does not serve.
    UnknownVni => "unknown_vni",
    /// An inner Ethernet frame whose destination MAC is not ours (L3 mode).
    WrongDestMac => "wrong_dest_mac",
    /// An inner Ethernet frame whose source MAC is our own VTEP MAC.
    OwnSourceMac => "own_source_mac",
    /// An inner Ethernet frame with an ethertype weft does not carry.
    UnsupportedEthertype => "unsupported_ethertype",
    /// An L3-mode route without the peer's VTEP MAC, so no inner Ethernet header can be built.
    NoVtepMac => "no_vtep_mac",
    /// The socket or device refused the packet (buffer full, send error).
    IoError => "io_error",
    /// A verdict the engine could not carry out: a range outside the buffer, a device that
    /// does not exist (a backend bug, counted instead of panicking).
    BadVerdict => "bad_verdict",
    /// A super-packet from the device whose offload metadata (virtio-net header) could not
    /// be honoured: an unknown GSO type, headers that do not parse, too many segments.
    BadOffload => "bad_offload",
    /// An inner TCP/UDP packet whose checksum is wrong (checked before it is merged into a
    /// super-packet or written with checksum offload).
    BadChecksum => "bad_checksum",
    /// An inner packet from a peer for a destination that is never reached through a tunnel
    /// (IPv4 limited broadcast, loopback, 0.0.0.0/8; IPv6 `::` and `::1`).
    BadDestination => "bad_destination",
    /// An ARP request or IPv6 neighbour solicitation left unanswered by the rate limit on
    /// answers (so weft is no 1:1 reflector).
    NeighRateLimited => "neigh_rate_limited",
    /// Refused by the policy hook (an embedder's [`crate::policy::Policy`] or the daemon's
    /// `[[acl]]` rules); an ICMP administratively-prohibited error may have been sent.
    Policy => "policy",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn drop_reason_of_verdicts() {
        assert_eq!(
            Verdict::Drop(DropReason::NoRoute).drop_reason(),
            Some(DropReason::NoRoute)
        );
        let v = Verdict::ReplyToDevice {
            device: 0,
            range: 0..28,
            cause: DropReason::TtlExceeded,
        };
        assert_eq!(v.drop_reason(), Some(DropReason::TtlExceeded));
        assert_eq!(
            Verdict::DeliverToDevice {
                device: 0,
                range: 0..20
            }
            .drop_reason(),
            None
        );
        let arp = Verdict::ReplyToPeer {
            dest: "198.18.0.2:8472".parse().unwrap(),
            range: 0..42,
            cause: None,
        };
        assert_eq!(arp.drop_reason(), None);
        let proxied = Verdict::AnswerToDevice {
            device: 0,
            range: 0..42,
        };
        assert_eq!(proxied.drop_reason(), None);
        assert_eq!(proxied.range(), Some(&(0..42)));
    }
}
