//! Segmentation and receive offloads: 64 KB super-packets through a TUN/TAP device, as pure
//! functions over byte buffers.
//!
//! A TUN/TAP opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD(TSO, CSUM)` exchanges packets of
//! up to 64 KB behind a 10-byte [`vnet::VnetHdr`]:
//!
//! - **Read side (TSO/USO, [`split()`]).** The kernel hands over one TCP (or UDP) super-packet
//!   with `gso_type`/`gso_size`; weft cuts it into the segments a NIC would have sent:
//!   headers copied and patched per segment (lengths, IPv4 ID, TCP sequence number and
//!   flags), L4 checksum computed in the same pass that copies the payload. The segments
//!   go back to back into one caller buffer, optionally behind a constant encapsulation
//!   prefix (VXLAN + inner Ethernet), which is the shape one `UDP_SEGMENT` send wants.
//!   A non-GSO packet may still carry a partial checksum (`NEEDS_CSUM`), finished by
//!   [`finish_checksum`].
//! - **Write side (GRO, [`Coalescer`]).** Packets received in one batch are grouped: runs
//!   of one TCP flow (or UDP flow, for a device that accepted USO: [`Coalescer::set_udp`])
//!   that the kernel can re-segment exactly become one super-packet written with a single
//!   `writev` of `[vnet hdr][patched headers][payload slices...]`; nothing but headers is
//!   copied. Every segment's checksum is verified before it is merged,
//!   because with `NEEDS_CSUM` the kernel trusts the merged packet.
//! - A packet received whole but larger than the device MTU (a kernel vxlan peer's TSO
//!   frame), or with a partial checksum, is written with the header from
//!   [`gso_header_for`]; [`l4_checksum_state`] tells valid, partial and corrupt apart.
//!
//! Invariants: no I/O, no allocation after construction (`Coalescer::new` is the only
//! one), no panic for any input bytes (fuzzed: see `encap/fuzz`), no length field or vnet
//! `hdr_len` trusted without checking it against the bytes.
//!
//! The rules and the kernel's quirks are in `OFFLOAD.md` (sections 1.2-1.4 and Pitfalls).

pub mod coalesce;
#[cfg(test)]
mod fuzz_replay;
mod ip;
#[cfg(test)]
mod proptests;
pub mod split;
#[cfg(test)]
mod testpkt;
pub mod vnet;

pub use coalesce::{Coalescer, Group, Member};
pub use split::{split, split_layout, Split};
pub use vnet::{
    finish_checksum, gso_header_for, l4_checksum_state, Gso, GsoKind, L4Checksum, OffloadError,
    VnetHdr,
};
