//! # weft-encap: the pure half of weft
//!
//! Everything that decides what happens to a packet, and nothing that does I/O: no sockets,
//! no files, no clock reads (time comes in as an argument). Every function here can be
//! unit-tested with byte vectors and fuzzed.
//!
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
//! - [`backend`]: the [`backend::Backend`] trait the engine drives.
//! - [`verdict`]: the outcome of each of those decisions, and the counted drop reasons.
//! - [`ratelimit`]: the token bucket that bounds the ICMP errors weft generates.
//! - [`policy`]: the per-packet policy hook ([`policy::Policy`], allow / drop / reject on
//!   the inner flow, both directions) and [`policy::Policed`], which puts one in front of
//!   any backend; [`acl`]: ordered `[[acl]]`-style rules as a ready-made policy.
//! - [`offload`]: TSO/USO split and GRO coalesce of 64 KB super-packets, the
//!   `virtio_net_hdr` and partial checksums of a TUN/TAP with offloads.
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
pub mod offload;
pub mod policy;
#[cfg(test)]
mod proptests;
pub mod ratelimit;
pub mod table;
#[cfg(test)]
mod testutil;
pub mod verdict;
pub mod vxlan;
pub mod wire;
