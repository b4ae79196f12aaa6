//! # weft-encap: the pure half of weft
//!
//! Everything that decides what happens to a packet, and nothing that does I/O: no sockets,
//! no files, no threads of its own, no clock reads (time comes in as an argument, `now_ms`:
//! milliseconds since any fixed start the caller picks). Every function here can be
//! unit-tested with byte vectors and fuzzed. The `weft` crate's engine drives it, and so can
//! a program with an event loop of its own: the [`flannel`] and [`vxlan`] module docs carry
//! one packet through both ends of a tunnel, and the [`offload`] docs split a TCP
//! super-packet and coalesce it back, all with nothing but this crate.
//!
//! ## Modules
//! - [`wire`]: zero-copy views over IPv4, IPv6, ICMP, ICMPv6, UDP, Ethernet, ARP and VXLAN
//!   headers. Untrusted input always goes through `new_checked`, after which no accessor
//!   can panic.
//! - [`icmp`]: ICMP / ICMPv6 error synthesis, in place, in the headroom in front of the
//!   offending packet.
//! - [`table`]: the routing state, an immutable longest-prefix-match table from overlay
//!   subnets to peers, cheap to rebuild on every control-plane change.
//! - [`flannel`]: the flannel UDP backend: what to do with a packet read from the device
//!   (encapsulate toward a peer, answer with an ICMP error, drop) and with a datagram
//!   received from the underlay (deliver, answer, drop).
//! - [`vxlan`]: the VXLAN backend (RFC 7348), L3 like flanneld's `flannel.1` and L2 like a
//!   vxlan device on a bridge, several VNIs at once; with [`fdb`] (the learned MAC -> VTEP
//!   table of L2 mode, bounded, with ageing), [`neigh`] (answers to ARP requests and IPv6
//!   neighbour solicitations for the VTEP's own address) and [`flowhash`] (the per-flow
//!   source-port entropy of RFC 7348 section 5).
//! - [`backend`]: the [`backend::Backend`] trait the engine drives, and
//!   [`backend::PacketBuf`], the packet-in-a-buffer it is handed.
//! - [`verdict`]: the outcome of each of those decisions, and the counted drop reasons.
//! - [`ratelimit`]: the token bucket that bounds the ICMP errors weft generates.
//! - [`policy`]: a per-packet policy hook that can be put in front of any backend (allow,
//!   drop or reject each inner flow, in both directions); [`acl`]: ordered `[[acl]]`-style
//!   rules as a ready-made policy.
//! - [`offload`]: TSO/USO split and GRO coalesce of 64 KB super-packets, the
//!   `virtio_net_hdr` and partial checksums of a TUN/TAP with offloads.
//!
//! ## Buffers: the caller owns them
//! Nothing here allocates a packet buffer or keeps one. A packet is handed over as a
//! [`backend::PacketBuf`]: a mutable borrow of the caller's *whole* buffer with the packet at
//! `buf[start..start + len]`, the bytes in front of it free **headroom** and the bytes after
//! it free tailroom. The backends work in place, inside that buffer:
//!
//! - encapsulation writes its headers into the headroom and never copies the payload: nothing
//!   for the flannel UDP backend (its datagram is the inner packet itself, TTL - 1), the VXLAN
//!   header and the inner Ethernet header for VXLAN L3 ([`vxlan::L3_ENCAP_LEN`] bytes), the
//!   VXLAN header for VXLAN L2;
//! - decapsulation returns a range inside the received datagram (the inner packet or frame);
//! - an ICMP error is built around the offending packet: its IP and ICMP headers go into the
//!   headroom, the quote stays where it is ([`icmp`]);
//! - an ARP reply or neighbour advertisement overwrites the request it answers, and may use
//!   the tailroom (an advertisement can be longer than the solicitation).
//!
//! Keep at least [`backend::Backend::headroom`] bytes in front of each packet
//! ([`flannel::HEADROOM`] and [`vxlan::HEADROOM`] are 48) and some tailroom; a buffer of the
//! largest datagram plus the headroom is always enough. With less headroom, a packet that
//! would need an ICMP error is dropped without one (VXLAN drops an L3 packet it cannot put
//! its headers in front of as `malformed`); nothing panics.
//!
//! Every range in a [`verdict::Verdict`] indexes into the buffer that was handed over, not
//! into the packet: the bytes to send or write are `buf[range]`, and stay valid until the
//! caller reuses the buffer. A caller that accepts backends it did not write should check a
//! range against its buffer before using it (the engine does, and counts a bad one as
//! `drop_bad_verdict`).
//!
//! ## Verdicts and drop reasons
//! Every decision is a [`verdict::Verdict`]:
//!
//! | verdict | what the caller does |
//! |---|---|
//! | `SendToPeer { dest, range, flow }` | send `buf[range]` as one UDP datagram to `dest`; `flow` is the inner flow's hash to pick a source port by (VXLAN), or `None` to send from the listening socket (flannel) |
//! | `SendTrain { dest, range, segment, flow }` | send `buf[range]` as datagrams of `segment` bytes (the last may be shorter), with UDP GSO where the socket allows |
//! | `Flood { device, range, flow }` | send a copy of `buf[range]` to every [`table::SubnetTable::flood_peers`] of device `device`'s table (VXLAN L2: broadcast, multicast, unknown unicast) |
//! | `DeliverToDevice { device, range }` | write the decapsulated packet or frame `buf[range]` to device `device` |
//! | `ReplyToDevice { device, range, cause }` | the packet was dropped for `cause`; write the ICMP error `buf[range]` into device `device` |
//! | `AnswerToDevice { device, range }` | nothing was dropped: write the answer `buf[range]` (the VXLAN L2 ARP/ND proxy's reply) into device `device` |
//! | `ReplyToPeer { dest, range, cause }` | send the answer `buf[range]` (encapsulation included) to `dest`: an ICMP error about a packet dropped for `Some(cause)`, or an ARP reply / neighbour advertisement (`None`) |
//! | `Drop(reason)` | nothing to send; count `reason` |
//!
//! A drop is an outcome, not an error. Each [`verdict::DropReason`] is one counter: its index
//! is [`verdict::DropReason::index`] (dense, `0..DropReason::COUNT`, so a
//! `[u64; DropReason::COUNT]` holds them all), its stable name [`verdict::DropReason::name`]
//! (`no_route`, `spoofed_source`, ...: the engine reports it as `drop_<name>`), and
//! [`verdict::Verdict::drop_reason`] gives the reason also when an ICMP error took the
//! packet's place. Both enums are `#[non_exhaustive]`: match them with a `_` arm (the engine
//! counts a verdict it does not know as `drop_bad_verdict`); a new drop reason or a new
//! verdict is not a breaking change.
//!
//! ## Threads and shared state
//! A backend value is one worker's state: [`backend::Backend`] is `Send + 'static`, and is
//! called with `&mut self` from one thread at a time. The engine runs one clone per worker
//! thread; clones share what must be shared, and nothing else:
//!
//! - the routing snapshot: a [`table::SubnetTable`] is immutable once built, so it is passed
//!   in as `&[Arc<SubnetTable>]` (one table per device) and shared between any number of
//!   threads; a route change is a new table, swapped in whole (the engine's `RouteTable`
//!   publishes it with `arc-swap`, and each worker reads the current one once per batch);
//! - in VXLAN L2 mode, the learned FDB ([`fdb`]): one mutex per VNI, taken once per L2
//!   frame, so a MAC learnt by one worker is known to all (L3 mode never touches it); the
//!   neighbour entries learnt for the ARP/ND proxy ([`neigh_cache`]) likewise, taken only
//!   for ARP and neighbour discovery frames;
//! - the ICMP rate limit ([`icmp::IcmpResponder`]): its mutex is taken only when an error is
//!   about to be written (after the RFC rules allowed one), never for a packet that is
//!   forwarded, so the configured rate holds for all workers together; the limit on ARP/ND
//!   answers is shared the same way.
//!
//! The flannel UDP backend and VXLAN L3 mode take no lock for a packet they forward.
//!
//! ## Offloads
//! [`offload`] works on its own, on byte buffers. When a caller uses it with a backend, the
//! contract is the engine's ([`backend`] module docs): the backend sees the *first segment*
//! of a TCP/UDP super-packet (its IP length rewritten with
//! [`offload::split::set_ip_len`]), its verdict stands for the whole super-packet, and a
//! packet to a peer becomes a train cut with [`offload::split()`] behind the prefix the
//! backend wrote in front of that first segment.
#![forbid(unsafe_code)]

pub mod acl;
pub mod backend;
pub mod fdb;
pub mod flannel;
pub mod flowhash;
#[cfg(test)]
mod fuzz_replay;
pub mod icmp;
pub mod neigh;
pub mod neigh_cache;
pub mod offload;
pub mod policy;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod proptests;
pub mod ratelimit;
pub mod table;
#[cfg(test)]
mod testutil;
pub mod verdict;
pub mod vxlan;
pub mod wire;
