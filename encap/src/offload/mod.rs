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
//!
//! ## Standalone use: split a super-packet, coalesce it back
//!
//! Nothing here needs the engine: a caller with its own TUN loop can split what it reads
//! and coalesce what it writes. The example builds a TCP/IPv4 super-packet the way a TUN with
//! TSO hands it over (one header for 4,700 payload bytes, an MSS of 1,400, the checksum left
//! partial), cuts it into four segments, checks each is a complete packet with a valid
//! checksum, and coalesces them into one super-packet again: byte for byte the original,
//! with the vnet header a `writev` to the TUN would carry in front of it.
//!
//! ```
//! use std::net::Ipv4Addr;
//!
//! use weft_encap::offload::vnet::{F_NEEDS_CSUM, GSO_TCPV4};
//! use weft_encap::offload::{
//!     l4_checksum_state, split, split_layout, Coalescer, L4Checksum, VnetHdr,
//! };
//! use weft_encap::wire::checksum::{fold, pseudo_header_v4};
//! use weft_encap::wire::{ipv4, PROTO_TCP};
//!
//! const MSS: u16 = 1400;
//! let (src, dst) = (Ipv4Addr::new(100, 96, 1, 5), Ipv4Addr::new(100, 96, 2, 7));
//! let payload: Vec<u8> = (0..4700u32).map(|i| (i * 7 % 251) as u8).collect();
//! let l4_len = 20 + payload.len();
//!
//! // IPv4 header with DF, the length of the whole super-packet.
//! let ip = ipv4::Repr {
//!     src_addr: src,
//!     dst_addr: dst,
//!     protocol: PROTO_TCP,
//!     payload_len: l4_len,
//!     ttl: 64,
//! };
//! let mut sp = vec![0u8; 20 + l4_len];
//! let mut header = ipv4::Packet::new_unchecked(&mut sp[..]);
//! ip.emit(&mut header);
//! header.set_ident(0x1234);
//! header.set_flags_and_frag_offset(true, false, 0);
//! header.fill_checksum();
//! // TCP header: ports, sequence and ACK numbers, data offset 5, ACK|PSH, window; the
//! // checksum field holds the folded pseudo-header sum (partial, as the kernel leaves it).
//! let tcp = &mut sp[20..40];
//! tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
//! tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
//! tcp[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
//! tcp[8..12].copy_from_slice(&77u32.to_be_bytes());
//! tcp[12] = 5 << 4;
//! tcp[13] = 0x18; // ACK | PSH
//! tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
//! let partial = fold(pseudo_header_v4(src, dst, PROTO_TCP, l4_len as u32));
//! tcp[16..18].copy_from_slice(&partial.to_be_bytes());
//! sp[40..].copy_from_slice(&payload);
//! assert_eq!(l4_checksum_state(&sp, 0), L4Checksum::Partial);
//!
//! // What the TUN puts in front of it (a real read starts with these 10 bytes).
//! let read_hdr = VnetHdr {
//!     flags: F_NEEDS_CSUM,
//!     gso_type: GSO_TCPV4,
//!     hdr_len: 40,
//!     gso_size: MSS,
//!     csum_start: 20,
//!     csum_offset: 16,
//! };
//! let gso = VnetHdr::parse(&read_hdr.emit()).unwrap().gso()?.expect("a GSO packet");
//!
//! // Split (l3_offset 0: a TUN, no prefix in front of the IP header).
//! let layout = split_layout(&sp, 0, gso)?;
//! assert_eq!((layout.segments, layout.segment_len), (4, 40 + 1400));
//! let mut out = vec![0u8; layout.total_len]; // a real loop keeps one 128 KB buffer
//! let done = split(&sp, 0, gso, &mut out)?;
//! assert_eq!(done, layout);
//! let segments: Vec<&[u8]> = out.chunks(done.segment_len).collect();
//! assert_eq!(segments.last().unwrap().len(), 40 + 500);
//! for seg in &segments {
//!     let p = ipv4::Packet::new_checked(*seg)?;
//!     assert!(p.verify_checksum());
//!     assert_eq!(usize::from(p.total_len()), seg.len());
//!     assert_eq!(l4_checksum_state(seg, 0), L4Checksum::Valid);
//! }
//!
//! // Coalesce: offer the segments in arrival order; one flow, in sequence, so one group.
//! let mut gro = Coalescer::new(64); // the only allocation; reuse it batch after batch
//! for (id, seg) in segments.iter().enumerate() {
//!     assert!(gro.push(id as u32, seg, 0));
//! }
//! let groups: Vec<_> = gro.groups().collect();
//! assert_eq!(groups.len(), 1);
//! let group = &groups[0];
//! assert!(group.is_merged());
//! assert_eq!((group.hdr.gso_type, group.hdr.gso_size), (GSO_TCPV4, MSS));
//! assert!(group.hdr.needs_csum());
//! // What one writev writes after `group.hdr.emit()`: the patched header, then each
//! // member's payload sliced out of its own packet (nothing but headers is copied).
//! let mut merged = group.header.to_vec();
//! for m in group.members {
//!     merged.extend_from_slice(&segments[m.id as usize][m.range.clone()]);
//! }
//! assert_eq!(merged.len(), group.packet_len());
//! assert!(merged == sp, "the coalesced super-packet is the original one");
//! gro.clear(); // before the next batch
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
